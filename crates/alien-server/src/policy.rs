//! Who may do what: the policy of `spec/api.md` ("Tokens and auth") as one table.
//!
//! Every handler names its [`Action`] and the group/deployment it touches and asks the [`Authz`]
//! of its state; the default, [`PolicyTable`], looks the action up in [`POLICY`] and answers
//! `FORBIDDEN` otherwise. An allowed call gets the [`Scope`] it may see, which list queries filter
//! on. Nothing else in the server decides access, so the table and its test are the whole story;
//! an embedder replaces it by giving `ManagerBuilder` another [`Authz`].

use alien_core::{ApiError, ErrorCode, Id, TokenType};

use crate::auth::Subject;

/// Everything a caller can ask to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `POST /v1/releases`.
    CreateRelease,
    /// `GET /v1/releases...`.
    ReadRelease,
    /// `POST /v1/deployment-groups`, `POST /v1/deployment-groups/{id}/tokens`.
    ManageGroups,
    /// `GET /v1/deployment-groups...`.
    ReadGroup,
    /// `POST /v1/deployments`.
    CreateDeployment,
    /// `GET /v1/deployments/{id}`, `/info`, `/events`.
    ReadDeployment,
    /// `GET /v1/deployments`.
    ListDeployments,
    /// `POST /v1/deployments/{id}/retry|redeploy`.
    OperateDeployment,
    /// `POST /v1/deployments/{id}/delete`.
    DeleteDeployment,
    /// `POST /v1/sync`, `/v1/initialize`.
    Sync,
    /// `POST /v1/sync/acquire|reconcile|renew|release`: an external driver leasing push
    /// deployments. Deployment tokens may not: they are handed to the containers themselves.
    DriveDeployments,
    /// `POST /v1/commands`.
    CreateCommand,
    /// Leasing and responding to commands.
    HandleCommand,
    /// `GET /v1/commands/{id}`.
    ReadCommand,
    /// `POST /v1/logs|traces|metrics`.
    IngestTelemetry,
    /// Pushing to the registry (and `GET /v1/build-config`, which says where to push).
    RegistryPush,
    /// Pulling from the registry (deployment tokens: only their release's repositories).
    RegistryPull,
    /// `GET /v1/tokens`, `DELETE /v1/tokens/{id}`.
    ManageTokens,
    /// `GET /v1/audit`.
    ReadAudit,
    /// `GET /v1/whoami`.
    WhoAmI,
    /// `GET /v2/_catalog`: listing every repository of the registry.
    RegistryCatalog,
    /// `GET|PUT /v1/commands/{id}/payload`: reading and uploading a command's parameters.
    ManageCommandPayloads,
    /// `POST /v1/credentials/mint`: short-lived cloud credentials for a deployment's target.
    MintCredentials,
    /// Giving a deployment a cloud `target` (the account or identity the manager impersonates
    /// into): only the vendor, never a token a customer environment holds, or one customer could
    /// point a deployment at another's account and mint its credentials.
    SetDeploymentTarget,
}

/// How far a kind of token reaches for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Never.
    No,
    /// Always, whatever the target.
    Yes,
    /// Only targets in the token's own group.
    OwnGroup,
    /// Only the token's own deployment.
    Itself,
}

use Access::{Itself, No, OwnGroup, Yes};

/// The policy: `(action, admin, deployment-group token, deployment token)`.
pub const POLICY: [(Action, Access, Access, Access); 24] = [
    (Action::CreateRelease, Yes, No, No),
    // A deployment token reads its own deployment's releases only (the handlers filter).
    (Action::ReadRelease, Yes, Yes, Itself),
    (Action::ManageGroups, Yes, No, No),
    (Action::ReadGroup, Yes, OwnGroup, No),
    (Action::CreateDeployment, Yes, OwnGroup, No),
    (Action::ReadDeployment, Yes, OwnGroup, Itself),
    (Action::ListDeployments, Yes, OwnGroup, No),
    (Action::OperateDeployment, Yes, OwnGroup, Itself),
    (Action::DeleteDeployment, Yes, No, No),
    (Action::Sync, Yes, OwnGroup, Itself),
    (Action::DriveDeployments, Yes, OwnGroup, No),
    (Action::CreateCommand, Yes, OwnGroup, No),
    (Action::HandleCommand, Yes, OwnGroup, Itself),
    (Action::ReadCommand, Yes, OwnGroup, Itself),
    (Action::IngestTelemetry, No, No, Itself),
    // Group tokens are held by customer environments: one that could push could overwrite the
    // images other customers deploy (registry.md).
    (Action::RegistryPush, Yes, No, No),
    (Action::RegistryPull, Yes, No, Itself),
    (Action::ManageTokens, Yes, No, No),
    (Action::ReadAudit, Yes, No, No),
    (Action::WhoAmI, Yes, Yes, Yes),
    (Action::RegistryCatalog, Yes, No, No),
    (Action::ManageCommandPayloads, Yes, No, No),
    (Action::MintCredentials, Yes, No, Itself),
    (Action::SetDeploymentTarget, Yes, No, No),
];

/// What an action touches: the group and/or deployment, when it has one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    /// The group of the target.
    pub group: Option<&'a Id>,
    /// The deployment targeted.
    pub deployment: Option<&'a Id>,
}

impl<'a> Target<'a> {
    /// No particular target (creating a release, listing tokens...).
    pub fn none() -> Self {
        Self::default()
    }

    /// A group.
    pub fn group(group: &'a Id) -> Self {
        Self { group: Some(group), deployment: None }
    }

    /// A deployment in a group.
    pub fn deployment(deployment: &'a Id, group: &'a Id) -> Self {
        Self { group: Some(group), deployment: Some(deployment) }
    }
}

/// The access a token kind has for an action.
pub fn access(action: Action, kind: TokenType) -> Access {
    POLICY.iter().find(|(a, ..)| *a == action).map_or(
        No,
        |(_, admin, group, deployment)| match kind {
            TokenType::Admin => *admin,
            TokenType::DeploymentGroup => *group,
            TokenType::Deployment => *deployment,
        },
    )
}

/// What an allowed caller may see: list queries filter on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    All,
    /// One deployment group and what is in it.
    Group(Id),
    /// One deployment.
    Deployment(Id),
}

impl Scope {
    /// The group a list may show: `requested` within the scope (a group scope lists its own
    /// group, and refuses another one with 403), or nothing in particular for [`Scope::All`].
    pub fn group_filter(&self, requested: Option<Id>) -> Result<Option<Id>, ApiError> {
        match self {
            Scope::All => Ok(requested),
            Scope::Group(own) => match requested {
                Some(other) if other != *own => Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "a deployment-group token sees its own group only",
                )),
                _ => Ok(Some(own.clone())),
            },
            Scope::Deployment(_) => {
                Err(ApiError::new(ErrorCode::Forbidden, "a deployment token sees itself only"))
            }
        }
    }
}

/// Decides access. The server asks it for every call; [`PolicyTable`] is the policy of the API
/// document, and an embedder may give `ManagerBuilder` its own.
pub trait Authz: Send + Sync {
    /// `Ok` with what the caller may see when `subject` may do `action` on `target`, else 403
    /// `FORBIDDEN` saying what was refused.
    fn authorize(
        &self,
        subject: &Subject,
        action: Action,
        target: Target<'_>,
    ) -> Result<Scope, ApiError>;
}

/// The policy of `spec/api.md` as the table [`POLICY`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyTable;

impl Authz for PolicyTable {
    fn authorize(
        &self,
        subject: &Subject,
        action: Action,
        target: Target<'_>,
    ) -> Result<Scope, ApiError> {
        authorize(subject, action, target)
    }
}

/// [`POLICY`] applied: `Ok` with the caller's [`Scope`] when `subject` may do `action` on
/// `target`, else 403 `FORBIDDEN`.
pub fn authorize(subject: &Subject, action: Action, target: Target<'_>) -> Result<Scope, ApiError> {
    let scope = match access(action, subject.token_type) {
        Yes => Some(Scope::All),
        No => None,
        OwnGroup => match (target.group, &subject.deployment_group_id) {
            (Some(group), Some(own)) => (group == own).then(|| Scope::Group(own.clone())),
            // No particular target: the result is scoped to the own group.
            (None, Some(own)) => Some(Scope::Group(own.clone())),
            _ => None,
        },
        Itself => match (target.deployment, &subject.deployment_id) {
            (Some(deployment), Some(own)) => {
                (deployment == own).then(|| Scope::Deployment(own.clone()))
            }
            (None, Some(own)) => target.group.is_none().then(|| Scope::Deployment(own.clone())),
            _ => None,
        },
    };
    scope.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Forbidden,
            format!("a {} token may not {}", subject.token_type, describe(action)),
        )
    })
}

fn describe(action: Action) -> &'static str {
    match action {
        Action::CreateRelease => "create releases",
        Action::ReadRelease => "read releases",
        Action::ManageGroups => "manage deployment groups",
        Action::ReadGroup => "read this deployment group",
        Action::CreateDeployment => "create deployments in this group",
        Action::ReadDeployment => "read this deployment",
        Action::ListDeployments => "list deployments",
        Action::OperateDeployment => "retry or redeploy this deployment",
        Action::DeleteDeployment => "delete deployments",
        Action::Sync => "sync this deployment",
        Action::DriveDeployments => "lease deployments as an external driver",
        Action::CreateCommand => "create commands for this deployment",
        Action::HandleCommand => "handle commands of this deployment",
        Action::ReadCommand => "read this command",
        Action::IngestTelemetry => "send telemetry",
        Action::RegistryPush => "push to the registry",
        Action::RegistryPull => "pull this repository",
        Action::ManageTokens => "manage tokens",
        Action::ReadAudit => "read the audit log",
        Action::WhoAmI => "ask who it is",
        Action::RegistryCatalog => "list the registry's repositories",
        Action::ManageCommandPayloads => "read or upload command parameters",
        Action::MintCredentials => "mint credentials for this deployment",
        Action::SetDeploymentTarget => "set a deployment's cloud target",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(kind: TokenType, group: Option<&Id>, deployment: Option<&Id>) -> Subject {
        Subject {
            token_id: Id::new(alien_core::IdKind::Token),
            token_type: kind,
            deployment_group_id: group.cloned(),
            deployment_id: deployment.cloned(),
        }
    }

    #[test]
    fn every_action_appears_once() {
        for (i, (a, ..)) in POLICY.iter().enumerate() {
            assert!(POLICY[i + 1..].iter().all(|(b, ..)| b != a), "{a:?} twice");
        }
    }

    #[test]
    fn scoped_access_checks_group_and_deployment() {
        let g1 = Id::new(alien_core::IdKind::DeploymentGroup);
        let g2 = Id::new(alien_core::IdKind::DeploymentGroup);
        let d1 = Id::new(alien_core::IdKind::Deployment);
        let d2 = Id::new(alien_core::IdKind::Deployment);
        let group = subject(TokenType::DeploymentGroup, Some(&g1), None);
        assert!(authorize(&group, Action::ReadDeployment, Target::deployment(&d1, &g1)).is_ok());
        assert!(authorize(&group, Action::ReadDeployment, Target::deployment(&d2, &g2)).is_err());
        let dep = subject(TokenType::Deployment, Some(&g1), Some(&d1));
        assert!(authorize(&dep, Action::ReadDeployment, Target::deployment(&d1, &g1)).is_ok());
        assert!(authorize(&dep, Action::ReadDeployment, Target::deployment(&d2, &g1)).is_err());
        assert!(authorize(&dep, Action::ReadGroup, Target::group(&g1)).is_err());
        let admin = subject(TokenType::Admin, None, None);
        assert!(authorize(&admin, Action::DeleteDeployment, Target::deployment(&d2, &g2)).is_ok());
        assert!(authorize(&admin, Action::IngestTelemetry, Target::none()).is_err());
        let err = authorize(&dep, Action::CreateRelease, Target::none()).unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
    }

    #[test]
    fn an_allowed_call_gets_the_scope_of_its_token() {
        let g1 = Id::new(alien_core::IdKind::DeploymentGroup);
        let g2 = Id::new(alien_core::IdKind::DeploymentGroup);
        let d1 = Id::new(alien_core::IdKind::Deployment);
        let admin = subject(TokenType::Admin, None, None);
        let group = subject(TokenType::DeploymentGroup, Some(&g1), None);
        let dep = subject(TokenType::Deployment, Some(&g1), Some(&d1));
        assert_eq!(authorize(&admin, Action::ListDeployments, Target::none()), Ok(Scope::All));
        assert_eq!(
            authorize(&group, Action::ListDeployments, Target::none()),
            Ok(Scope::Group(g1.clone()))
        );
        assert_eq!(
            authorize(&dep, Action::ReadDeployment, Target::deployment(&d1, &g1)),
            Ok(Scope::Deployment(d1.clone()))
        );
        let scope = Scope::Group(g1.clone());
        assert_eq!(scope.group_filter(None), Ok(Some(g1.clone())));
        assert_eq!(scope.group_filter(Some(g1.clone())), Ok(Some(g1.clone())));
        assert_eq!(scope.group_filter(Some(g2.clone())).unwrap_err().code, ErrorCode::Forbidden);
        assert_eq!(Scope::All.group_filter(Some(g2.clone())), Ok(Some(g2)));
        assert!(Scope::Deployment(d1).group_filter(None).is_err());
    }
}
