//! What to become: an [`Identity`] (a role, a service account, a managed identity, or the
//! manager's own) and how long the credentials should last. This module holds the rules for
//! both: the STS session name, the duration clamp, and how a deployment's `target` JSON
//! (`spec/clouds.md` "Impersonation in the deployment flow") becomes an identity.

use std::fmt;
use std::time::Duration;

use alien_core::Platform;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ImpersonationError;

/// Shortest credential lifetime that may be requested (15 minutes, the STS minimum).
pub const MIN_DURATION: Duration = Duration::from_secs(900);
/// Longest credential lifetime that may be requested (one hour, the role-chaining maximum).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Lifetime requested when the caller does not say.
pub const DEFAULT_DURATION: Duration = MAX_DURATION;

/// The OAuth scope used for GCP targets unless the caller asks for others.
pub const GCP_CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The lifetime to request: `requested` in whole seconds clamped to
/// [[`MIN_DURATION`], [`MAX_DURATION`]] (the rule of `POST /v1/credentials/mint`), or
/// [`DEFAULT_DURATION`] when nothing was requested.
pub fn clamp_duration(requested: Option<Duration>) -> Duration {
    match requested {
        Some(requested) => {
            Duration::from_secs(requested.as_secs()).clamp(MIN_DURATION, MAX_DURATION)
        }
        None => DEFAULT_DURATION,
    }
}

/// A cloud an identity lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Amazon Web Services.
    Aws,
    /// Google Cloud.
    Gcp,
    /// Microsoft Azure.
    Azure,
}

impl Cloud {
    /// Every cloud, in documentation order.
    pub const ALL: [Cloud; 3] = [Cloud::Aws, Cloud::Gcp, Cloud::Azure];

    /// The name used in configuration (`[impersonation.aws]`) and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
        }
    }

    /// The cloud of a platform; `None` for platforms that are not a cloud (local, kubernetes).
    pub fn of_platform(platform: Platform) -> Option<Cloud> {
        match platform {
            Platform::Aws => Some(Cloud::Aws),
            Platform::Gcp => Some(Cloud::Gcp),
            Platform::Azure => Some(Cloud::Azure),
            Platform::Kubernetes | Platform::Local => None,
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An STS role session name: `alien-<purpose>-<id>`, at most [`SessionName::MAX_LEN`] characters
/// of `[A-Za-z0-9_+=,.@-]` (what `AssumeRole` accepts). It shows in the customer's CloudTrail,
/// so it says why the manager assumed the role and for which deployment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionName(String);

impl SessionName {
    /// Longest session name STS accepts.
    pub const MAX_LEN: usize = 64;

    const PREFIX: &'static str = "alien-";

    /// `alien-<purpose>-<id>`: characters STS refuses become `-`; when too long, `purpose` is
    /// shortened first so the id (the useful part in an audit log) survives, then the end is cut.
    pub fn new(purpose: &str, id: &str) -> SessionName {
        let purpose = sanitize(purpose);
        let id = sanitize(id);
        // "alien-" + purpose + "-" + id
        let fixed = Self::PREFIX.len() + 1 + id.len();
        let purpose_budget = Self::MAX_LEN.saturating_sub(fixed).max(1);
        let purpose: String = purpose.chars().take(purpose_budget).collect();
        let mut name = format!("{}{purpose}-{id}", Self::PREFIX);
        // Sanitized names are ASCII, so a byte index is a character boundary.
        name.truncate(Self::MAX_LEN);
        SessionName(name)
    }

    /// The name as sent to STS.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether STS accepts `c` in a role session name (`[\w+=,.@-]`).
fn session_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

fn sanitize(part: &str) -> String {
    part.chars().map(|c| if session_char(c) { c } else { '-' }).collect()
}

/// Who to become.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An IAM role assumed with STS `AssumeRole`.
    Aws {
        /// `arn:<partition>:iam::<account>:role/<name>`.
        role_arn: String,
        /// The external id the role's trust policy requires, if any.
        external_id: Option<String>,
        /// The role session name (shows in the customer's CloudTrail).
        session_name: SessionName,
    },
    /// A service account impersonated through IAM Credentials `generateAccessToken`.
    Gcp {
        /// The service account's email.
        service_account_email: String,
        /// OAuth scopes of the token (at least one).
        scopes: Vec<String>,
    },
    /// An Azure identity (managed identity or federated workload identity).
    Azure {
        /// The identity's client (application) id.
        client_id: String,
        /// The tenant the token is for; the identity's home tenant when `None`.
        tenant_id: Option<String>,
        /// The subscription the credentials are used in, when known.
        subscription_id: Option<String>,
    },
    /// The manager's own identity: use the credentials of its environment.
    Ambient,
}

impl Identity {
    /// The cloud this identity lives in; `None` for [`Identity::Ambient`].
    pub fn cloud(&self) -> Option<Cloud> {
        match self {
            Identity::Aws { .. } => Some(Cloud::Aws),
            Identity::Gcp { .. } => Some(Cloud::Gcp),
            Identity::Azure { .. } => Some(Cloud::Azure),
            Identity::Ambient => None,
        }
    }
}

/// Names the identity for logs and error messages; holds nothing secret.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Aws { role_arn, session_name, .. } => {
                write!(f, "AWS role {role_arn} (session {session_name})")
            }
            Identity::Gcp { service_account_email, .. } => {
                write!(f, "GCP service account {service_account_email}")
            }
            Identity::Azure { client_id, .. } => write!(f, "Azure identity {client_id}"),
            Identity::Ambient => f.write_str("the manager's own identity"),
        }
    }
}

/// What to become and for how long: the argument of [`crate::Impersonator::credentials`].
///
/// The duration is always within [[`MIN_DURATION`], [`MAX_DURATION`]] ([`clamp_duration`]).
/// Providers may grant less (an Azure token's lifetime is Azure's choice), never more on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImpersonationTarget {
    identity: Identity,
    duration: Duration,
}

impl ImpersonationTarget {
    /// `identity` for `requested` (clamped with [`clamp_duration`]).
    pub fn new(identity: Identity, requested: Option<Duration>) -> ImpersonationTarget {
        ImpersonationTarget { identity, duration: clamp_duration(requested) }
    }

    /// The manager's own identity, for the default duration.
    pub fn ambient() -> ImpersonationTarget {
        ImpersonationTarget::new(Identity::Ambient, None)
    }

    /// Who to become.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// How long the credentials should last (already clamped).
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The target of a deployment on `platform` from its `target` JSON:
    /// `{accountId, roleArn, externalId?}` on aws, `{projectId, serviceAccountEmail}` on gcp,
    /// `{subscriptionId, tenantId, clientId}` on azure (other fields are ignored).
    ///
    /// [`Identity::Ambient`] when the platform is not a cloud (local, kubernetes) or the
    /// deployment has no target (single-account mode: it runs where the manager's own
    /// credentials reach). `session_name` names the AWS session; GCP tokens get
    /// [`GCP_CLOUD_PLATFORM_SCOPE`]. A missing or malformed field is an
    /// [`ImpersonationError::InvalidTarget`] naming it (`target.roleArn`).
    pub fn from_deployment_target(
        platform: Platform,
        target: Option<&Value>,
        session_name: SessionName,
        duration: Option<Duration>,
    ) -> Result<ImpersonationTarget, ImpersonationError> {
        let Some(cloud) = Cloud::of_platform(platform) else {
            return Ok(ImpersonationTarget::new(Identity::Ambient, duration));
        };
        let fields = match target {
            None | Some(Value::Null) => {
                return Ok(ImpersonationTarget::new(Identity::Ambient, duration));
            }
            Some(Value::Object(fields)) => fields,
            Some(_) => {
                return Err(invalid("target", format!("must be an object: {}", shape(cloud))));
            }
        };
        let identity = match cloud {
            Cloud::Aws => aws_identity(fields, session_name)?,
            Cloud::Gcp => gcp_identity(fields)?,
            Cloud::Azure => azure_identity(fields)?,
        };
        Ok(ImpersonationTarget::new(identity, duration))
    }
}

/// The documented shape of a cloud's `target`, for error messages.
fn shape(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => "aws targets are {\"accountId\", \"roleArn\", \"externalId\"?}",
        Cloud::Gcp => "gcp targets are {\"projectId\", \"serviceAccountEmail\"}",
        Cloud::Azure => "azure targets are {\"subscriptionId\", \"tenantId\", \"clientId\"}",
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ImpersonationError {
    ImpersonationError::InvalidTarget { field: field.to_owned(), message: message.into() }
}

/// The non-empty string at `target.<name>`, `None` when absent or null.
fn optional_string<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ImpersonationError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) if !value.trim().is_empty() => Ok(Some(value)),
        Some(Value::String(_)) => Err(invalid(&format!("target.{name}"), "must not be empty")),
        Some(_) => Err(invalid(&format!("target.{name}"), "must be a string")),
    }
}

/// The non-empty string at `target.<name>`.
fn required_string<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
    cloud: Cloud,
) -> Result<&'a str, ImpersonationError> {
    optional_string(fields, name)?
        .ok_or_else(|| invalid(&format!("target.{name}"), format!("is missing; {}", shape(cloud))))
}

fn aws_identity(
    fields: &Map<String, Value>,
    session_name: SessionName,
) -> Result<Identity, ImpersonationError> {
    let role_arn = required_string(fields, "roleArn", Cloud::Aws)?;
    let arn_account = role_arn_account(role_arn).ok_or_else(|| {
        invalid(
            "target.roleArn",
            format!(
                "must be an IAM role ARN such as arn:aws:iam::123456789012:role/alien-deployer, \
                 got {role_arn:?}"
            ),
        )
    })?;
    let account_id = required_string(fields, "accountId", Cloud::Aws)?;
    if !is_account_id(account_id) {
        return Err(invalid("target.accountId", "must be a 12-digit AWS account id"));
    }
    if account_id != arn_account {
        return Err(invalid(
            "target.accountId",
            format!(
                "is {account_id} but target.roleArn is a role of account {arn_account}; \
                 make them name the same account"
            ),
        ));
    }
    let external_id = optional_string(fields, "externalId")?;
    if let Some(external_id) = external_id
        && !is_external_id(external_id)
    {
        // The value is not echoed: it is the customer's confused-deputy guard.
        return Err(invalid(
            "target.externalId",
            "must be 2..=1224 characters of letters, digits and _+=,.@:/-",
        ));
    }
    Ok(Identity::Aws {
        role_arn: role_arn.to_owned(),
        external_id: external_id.map(str::to_owned),
        session_name,
    })
}

/// The account of `arn:<partition>:iam::<account>:role/<path/name>`, if `arn` is one.
fn role_arn_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (scheme, partition, service, region, account, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let role_name = resource.strip_prefix("role/")?;
    let valid = scheme == "arn"
        && !partition.is_empty()
        && service == "iam"
        && region.is_empty()
        && is_account_id(account)
        && !role_name.is_empty()
        && !role_name.ends_with('/');
    valid.then_some(account)
}

fn is_account_id(value: &str) -> bool {
    value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit())
}

/// STS `ExternalId`: 2..=1224 of `[\w+=,.@:/-]`.
fn is_external_id(value: &str) -> bool {
    (2..=1224).contains(&value.len())
        && value.chars().all(|c| session_char(c) || matches!(c, ':' | '/'))
}

fn gcp_identity(fields: &Map<String, Value>) -> Result<Identity, ImpersonationError> {
    required_string(fields, "projectId", Cloud::Gcp)?;
    let email = required_string(fields, "serviceAccountEmail", Cloud::Gcp)?;
    let looks_like_email = email
        .split_once('@')
        .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
        && !email.contains(char::is_whitespace);
    if !looks_like_email {
        return Err(invalid(
            "target.serviceAccountEmail",
            format!(
                "must be a service account email such as \
                 alien-deployer@my-project.iam.gserviceaccount.com, got {email:?}"
            ),
        ));
    }
    Ok(Identity::Gcp {
        service_account_email: email.to_owned(),
        scopes: vec![GCP_CLOUD_PLATFORM_SCOPE.to_owned()],
    })
}

fn azure_identity(fields: &Map<String, Value>) -> Result<Identity, ImpersonationError> {
    let subscription_id = required_string(fields, "subscriptionId", Cloud::Azure)?;
    if !is_guid(subscription_id) {
        return Err(invalid(
            "target.subscriptionId",
            format!(
                "must be a GUID such as 00000000-0000-0000-0000-000000000000, got {subscription_id:?}"
            ),
        ));
    }
    let tenant_id = required_string(fields, "tenantId", Cloud::Azure)?;
    let client_id = required_string(fields, "clientId", Cloud::Azure)?;
    if !is_guid(client_id) {
        return Err(invalid(
            "target.clientId",
            format!(
                "must be a GUID such as 00000000-0000-0000-0000-000000000000, got {client_id:?}"
            ),
        ));
    }
    Ok(Identity::Azure {
        client_id: client_id.to_owned(),
        tenant_id: Some(tenant_id.to_owned()),
        subscription_id: Some(subscription_id.to_owned()),
    })
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex digits.
fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn session() -> SessionName {
        SessionName::new("deploy", "dep_0123456789abcdefghijklmnopqr")
    }

    fn parse(platform: Platform, target: Value) -> Result<ImpersonationTarget, ImpersonationError> {
        ImpersonationTarget::from_deployment_target(platform, Some(&target), session(), None)
    }

    /// The field an InvalidTarget error names.
    fn field_of(result: Result<ImpersonationTarget, ImpersonationError>) -> String {
        match result {
            Err(ImpersonationError::InvalidTarget { field, .. }) => field,
            other => panic!("expected InvalidTarget, got {other:?}"),
        }
    }

    const ROLE: &str = "arn:aws:iam::123456789012:role/alien-deployer";
    const GUID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    #[test]
    fn duration_is_clamped_to_the_mint_range() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(clamp_duration(None), Duration::from_secs(3600), "default: one hour");
        assert_eq!(clamp_duration(secs(0)), MIN_DURATION);
        assert_eq!(clamp_duration(secs(899)), MIN_DURATION);
        assert_eq!(clamp_duration(secs(900)), Duration::from_secs(900));
        assert_eq!(clamp_duration(secs(1800)), Duration::from_secs(1800));
        assert_eq!(clamp_duration(secs(3600)), Duration::from_secs(3600));
        assert_eq!(clamp_duration(secs(3601)), MAX_DURATION);
        assert_eq!(clamp_duration(secs(u64::MAX)), MAX_DURATION);
        assert_eq!(
            clamp_duration(Some(Duration::from_millis(1_000_999))),
            Duration::from_secs(1000),
            "whole seconds"
        );
        let target = ImpersonationTarget::new(Identity::Ambient, secs(10));
        assert_eq!(target.duration(), MIN_DURATION, "a target's duration is always clamped");
    }

    #[test]
    fn session_name_is_alien_purpose_id() {
        let name = SessionName::new("deploy", "dep_0123456789abcdefghijklmnopqr");
        assert_eq!(name.as_str(), "alien-deploy-dep_0123456789abcdefghijklmnopqr");
        assert_eq!(name.to_string(), name.as_str());
    }

    #[test]
    fn session_name_replaces_characters_sts_refuses() {
        let name = SessionName::new("mint creds/π", "dep:1 2#x+=,.@_-");
        assert_eq!(name.as_str(), "alien-mint-creds---dep-1-2-x+=,.@_-");
        assert!(name.as_str().chars().all(session_char));
    }

    #[test]
    fn session_name_is_at_most_64_characters_and_keeps_the_id() {
        let id = "dep_0123456789abcdefghijklmnopqr";
        let name = SessionName::new(&"p".repeat(100), id);
        assert_eq!(name.as_str().len(), SessionName::MAX_LEN);
        assert!(name.as_str().starts_with("alien-p"));
        assert!(name.as_str().ends_with(&format!("-{id}")), "the id survives: {name}");

        let long_id = "i".repeat(100);
        let name = SessionName::new("deploy", &long_id);
        assert_eq!(name.as_str().len(), SessionName::MAX_LEN);
        assert!(name.as_str().starts_with("alien-d-iii"), "{name}");

        let name = SessionName::new("ü".repeat(80).as_str(), "é");
        assert!(name.as_str().len() <= SessionName::MAX_LEN);
        assert!(name.as_str().chars().all(session_char));

        let exact = SessionName::new("x", &"i".repeat(64 - "alien-x-".len()));
        assert_eq!(exact.as_str().len(), 64, "a name of exactly 64 is not cut");
        assert!(exact.as_str().starts_with("alien-x-i"));
    }

    #[test]
    fn aws_target_parses_role_account_and_external_id() {
        let target = parse(
            Platform::Aws,
            json!({"accountId": "123456789012", "roleArn": ROLE, "externalId": "ext-42", "region": "eu-west-1"}),
        )
        .unwrap();
        assert_eq!(
            target.identity(),
            &Identity::Aws {
                role_arn: ROLE.to_owned(),
                external_id: Some("ext-42".to_owned()),
                session_name: session(),
            }
        );
        assert_eq!(target.duration(), DEFAULT_DURATION);

        let no_external = parse(
            Platform::Aws,
            json!({"accountId": "123456789012", "roleArn": "arn:aws-cn:iam::123456789012:role/path/r"}),
        )
        .unwrap();
        assert!(matches!(no_external.identity(), Identity::Aws { external_id: None, .. }));
    }

    #[test]
    fn aws_target_errors_name_the_field() {
        let account = "123456789012";
        let cases = [
            (json!({"accountId": account}), "target.roleArn"),
            (json!({"roleArn": ROLE}), "target.accountId"),
            (json!({"accountId": account, "roleArn": ""}), "target.roleArn"),
            (json!({"accountId": account, "roleArn": 7}), "target.roleArn"),
            (
                json!({"accountId": account, "roleArn": "arn:aws:iam::123456789012:user/u"}),
                "target.roleArn",
            ),
            (json!({"accountId": account, "roleArn": "arn:aws:s3:::bucket"}), "target.roleArn"),
            (
                json!({"accountId": account, "roleArn": "arn:aws:iam::12345:role/r"}),
                "target.roleArn",
            ),
            (json!({"accountId": "12345", "roleArn": ROLE}), "target.accountId"),
            (json!({"accountId": "210987654321", "roleArn": ROLE}), "target.accountId"),
            (
                json!({"accountId": account, "roleArn": ROLE, "externalId": "x"}),
                "target.externalId",
            ),
            (
                json!({"accountId": account, "roleArn": ROLE, "externalId": "a b"}),
                "target.externalId",
            ),
            (json!({"accountId": account, "roleArn": ROLE, "externalId": 42}), "target.externalId"),
            (json!("arn:aws:iam::123456789012:role/r"), "target"),
        ];
        for (target, field) in cases {
            assert_eq!(field_of(parse(Platform::Aws, target.clone())), field, "{target}");
        }
    }

    #[test]
    fn target_errors_say_what_is_expected() {
        let error = parse(Platform::Aws, json!({"accountId": "123456789012"})).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("target.roleArn"), "{message}");
        assert!(message.contains("is missing"), "{message}");
        assert!(message.contains("\"accountId\", \"roleArn\""), "{message}");

        let error = parse(
            Platform::Aws,
            json!({"accountId": "123456789012", "roleArn": ROLE, "externalId": "bad value!"}),
        )
        .unwrap_err();
        assert!(!error.to_string().contains("bad value!"), "the external id is not echoed");
    }

    #[test]
    fn gcp_target_parses_and_names_missing_fields() {
        let email = "alien@customer.iam.gserviceaccount.com";
        let target =
            parse(Platform::Gcp, json!({"projectId": "customer", "serviceAccountEmail": email}))
                .unwrap();
        assert_eq!(
            target.identity(),
            &Identity::Gcp {
                service_account_email: email.to_owned(),
                scopes: vec![GCP_CLOUD_PLATFORM_SCOPE.to_owned()],
            }
        );
        let cases = [
            (json!({"serviceAccountEmail": email}), "target.projectId"),
            (json!({"projectId": "customer"}), "target.serviceAccountEmail"),
            (
                json!({"projectId": "customer", "serviceAccountEmail": "alien"}),
                "target.serviceAccountEmail",
            ),
            (json!({"projectId": "  ", "serviceAccountEmail": email}), "target.projectId"),
            (json!(["customer"]), "target"),
        ];
        for (target, field) in cases {
            assert_eq!(field_of(parse(Platform::Gcp, target.clone())), field, "{target}");
        }
    }

    #[test]
    fn azure_target_parses_and_names_missing_fields() {
        let target = parse(
            Platform::Azure,
            json!({"subscriptionId": GUID, "tenantId": "contoso.onmicrosoft.com", "clientId": GUID}),
        )
        .unwrap();
        assert_eq!(
            target.identity(),
            &Identity::Azure {
                client_id: GUID.to_owned(),
                tenant_id: Some("contoso.onmicrosoft.com".to_owned()),
                subscription_id: Some(GUID.to_owned()),
            }
        );
        let cases = [
            (json!({"tenantId": GUID, "clientId": GUID}), "target.subscriptionId"),
            (json!({"subscriptionId": GUID, "clientId": GUID}), "target.tenantId"),
            (json!({"subscriptionId": GUID, "tenantId": GUID}), "target.clientId"),
            (
                json!({"subscriptionId": "sub", "tenantId": GUID, "clientId": GUID}),
                "target.subscriptionId",
            ),
            (
                json!({"subscriptionId": GUID, "tenantId": GUID, "clientId": "0f8fad5b"}),
                "target.clientId",
            ),
            (json!(true), "target"),
        ];
        for (target, field) in cases {
            assert_eq!(field_of(parse(Platform::Azure, target.clone())), field, "{target}");
        }
    }

    #[test]
    fn no_target_or_no_cloud_means_the_ambient_identity() {
        for platform in [Platform::Aws, Platform::Gcp, Platform::Azure] {
            let none = ImpersonationTarget::from_deployment_target(platform, None, session(), None);
            assert_eq!(none.unwrap().identity(), &Identity::Ambient, "{platform} without target");
            let null = parse(platform, Value::Null).unwrap();
            assert_eq!(null.identity(), &Identity::Ambient, "{platform} with a null target");
        }
        for platform in [Platform::Local, Platform::Kubernetes] {
            // Whatever the target says: there is no cloud to impersonate into.
            let target = parse(platform, json!({"roleArn": "nonsense"})).unwrap();
            assert_eq!(target.identity(), &Identity::Ambient, "{platform}");
        }
    }

    #[test]
    fn the_requested_duration_reaches_the_target() {
        let target = ImpersonationTarget::from_deployment_target(
            Platform::Aws,
            Some(&json!({"accountId": "123456789012", "roleArn": ROLE})),
            session(),
            Some(Duration::from_secs(100_000)),
        )
        .unwrap();
        assert_eq!(target.duration(), MAX_DURATION);
    }

    #[test]
    fn clouds_of_platforms() {
        let clouds: Vec<Option<Cloud>> =
            Platform::ALL.into_iter().map(Cloud::of_platform).collect();
        assert_eq!(clouds, [Some(Cloud::Aws), Some(Cloud::Gcp), Some(Cloud::Azure), None, None]);
        let names: Vec<String> = Cloud::ALL.iter().map(Cloud::to_string).collect();
        assert_eq!(names, ["aws", "gcp", "azure"], "the names of the [impersonation.*] sections");
    }
}
