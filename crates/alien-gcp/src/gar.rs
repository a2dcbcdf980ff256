//! Artifact Registry as an [`ArtifactRegistry`] (`[artifact-registry.<platform>]`
//! `service = "gar"`).
//!
//! - `repositoryName = projects/{P}/locations/{L}/repositories/{R}`: host `{L}-docker.pkg.dev`,
//!   repository name `{P}/{R}`, so images are `{L}-docker.pkg.dev/{P}/{R}/{image}:{tag}` (a GAR
//!   Docker repository holds any number of images).
//! - Push credentials: Basic `oauth2accesstoken:<token>`, the token of `pushServiceAccountEmail`
//!   minted with IAM Credentials `generateAccessToken` (scope `cloud-platform`) as the manager's
//!   identity; the repository is created on first use (get, create on 404) as that account.
//!   Pull credentials the same with `pullServiceAccountEmail`. Without an account, the manager's
//!   own token is used. Tokens are cached to 80 % of their lifetime, one mint in flight per
//!   account.
//! - [`GarRegistry::grant_pull`]: the Cloud Run service agent of a customer's project
//!   (`service-{number}@serverless-robot-prod.iam.gserviceaccount.com`, the identity that pulls
//!   a Cloud Run revision's image) gets `roles/artifactregistry.reader` on the repository, by an
//!   etag-guarded read-modify-write of its IAM policy that keeps every other binding. A project
//!   id is turned into its number with Resource Manager (as the manager's identity).
//!
//! No token is ever logged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alien_core::api::PushCredentials;
use alien_core::sync::RegistryCredentials;
use alien_registry::{ArtifactRegistry, ArtifactRegistryError, PullFor};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{CLOUD_PLATFORM, TokenSource};
use crate::config::{GcpSettings, Service};
use crate::iam::{generate_access_token, is_service_account_email};
use crate::rest::{Api, ApiError, Operation};

/// The username of Basic credentials that carry an OAuth access token.
pub const OAUTH_USERNAME: &str = "oauth2accesstoken";
/// The role that lets an identity pull images.
pub const READER_ROLE: &str = "roles/artifactregistry.reader";
/// Read-modify-write attempts of a repository policy before giving up.
const POLICY_ATTEMPTS: usize = 5;
/// How long the repository's creation is waited for.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Lifetime asked of minted tokens.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// An Artifact Registry binding.
#[derive(Debug, Clone)]
pub struct GarSettings {
    /// `projects/{P}/locations/{L}/repositories/{R}`.
    pub repository_name: String,
    /// Account whose tokens push (handed to builders); `None`: the manager's own identity. The
    /// repository is created and its policy set as the manager itself.
    pub push_service_account_email: Option<String>,
    /// Account whose tokens pull; `None`: the manager's own identity.
    pub pull_service_account_email: Option<String>,
    /// The manager's identity and endpoints.
    pub gcp: GcpSettings,
}

/// Why a [`GarRegistry`] cannot be made; the message names the setting.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct GarError(String);

/// A token and when it is replaced.
#[derive(Clone)]
struct Cached {
    token: String,
    expires_at: DateTime<Utc>,
    refresh_at: DateTime<Utc>,
}

/// The tokens of one account of the registry (push or pull): minted through IAM Credentials
/// and cached, or the manager's own.
struct Acting {
    email: Option<String>,
    iam: Api,
    own: Arc<dyn TokenSource>,
    /// Held across the mint: one in flight.
    cache: tokio::sync::Mutex<Option<Cached>>,
    mints: Arc<AtomicU64>,
}

impl Acting {
    /// A valid token and when it expires.
    async fn token(&self) -> Result<Cached, ApiError> {
        let mut slot = self.cache.lock().await;
        let now = Utc::now();
        if let Some(cached) = slot.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(cached.clone());
        }
        let (token, expires_at) = match &self.email {
            Some(email) => {
                let scopes = [CLOUD_PLATFORM.to_owned()];
                let minted =
                    generate_access_token(&self.iam, email, &scopes, TOKEN_LIFETIME, &[]).await?;
                self.mints.fetch_add(1, Ordering::Relaxed);
                (minted.access_token, minted.expires_at)
            }
            // The source refreshes its own token; its lifetime is not known here, so clients
            // are told ten minutes.
            None => (self.own.token().await?, now + TimeDelta::minutes(10)),
        };
        let refresh_at = now + (expires_at - now) * 8 / 10;
        let cached = Cached { token, expires_at, refresh_at };
        *slot = Some(cached.clone());
        Ok(cached)
    }
}

#[async_trait::async_trait]
impl TokenSource for Acting {
    async fn token(&self) -> Result<String, ApiError> {
        Acting::token(self).await.map(|c| c.token)
    }
    fn describe(&self) -> String {
        match &self.email {
            Some(email) => format!("tokens of {email}"),
            None => self.own.describe(),
        }
    }
    async fn email(&self) -> Option<String> {
        self.email.clone()
    }
}

/// Artifact Registry: see the module documentation.
pub struct GarRegistry {
    /// `projects/{P}/locations/{L}/repositories/{R}`.
    resource: String,
    project: String,
    location: String,
    repository: String,
    host: String,
    repository_name: String,
    push: Arc<Acting>,
    pull: Arc<Acting>,
    /// Artifact Registry as the manager (repository and policy).
    registry: Api,
    /// Resource Manager as the manager.
    projects: Api,
    numbers: Mutex<HashMap<String, String>>,
    granted: Mutex<HashSet<String>>,
    mints: Arc<AtomicU64>,
}

/// Names the registry; no token.
impl std::fmt::Debug for GarRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarRegistry")
            .field("repository", &self.resource)
            .field("push", &self.push.email)
            .field("pull", &self.pull.email)
            .finish_non_exhaustive()
    }
}

/// Whether `id` is a project id: 6 to 30 of lowercase letters, digits and hyphens, starting
/// with a letter (or a legacy domain-scoped `example.com:project`).
fn is_project_id(id: &str) -> bool {
    let id = id.rsplit_once(':').map_or(id, |(_, p)| p);
    (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_number(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
}

/// Whether an image path component is one Docker accepts.
fn is_image_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.split(['.', '_', '-']).all(|run| {
                    !run.is_empty()
                        && run.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
        })
}

fn account(field: &str, email: Option<&str>) -> Result<Option<String>, GarError> {
    match email {
        None => Ok(None),
        Some(email) if is_service_account_email(email) => Ok(Some(email.to_owned())),
        Some(email) => Err(GarError(format!(
            "{field}: {email:?} is not a service account email \
             (name@project.iam.gserviceaccount.com)"
        ))),
    }
}

/// `projects/{number}` of Resource Manager's answer.
#[derive(Deserialize)]
struct Project {
    name: String,
}

impl GarRegistry {
    /// The registry of `settings`; nothing is called until credentials or a grant are asked.
    pub fn new(settings: &GarSettings) -> Result<GarRegistry, GarError> {
        let resource = settings.repository_name.trim().trim_matches('/').to_owned();
        let parts: Vec<&str> = resource.split('/').collect();
        let ["projects", project, "locations", location, "repositories", repository] =
            parts.as_slice()
        else {
            return Err(GarError(format!(
                "repositoryName: {resource:?} is not projects/{{project}}/locations/{{location}}/repositories/{{repository}}"
            )));
        };
        if !is_project_id(project) {
            return Err(GarError(format!("repositoryName: {project:?} is not a project id")));
        }
        let location_ok = !location.is_empty()
            && location.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !location_ok {
            return Err(GarError(format!("repositoryName: {location:?} is not a location")));
        }
        if !is_image_name(repository) || repository.contains(['/', '.', '_']) {
            return Err(GarError(format!(
                "repositoryName: {repository:?} is not a repository id (lowercase letters, \
                 digits and hyphens)"
            )));
        }
        let push_email =
            account("pushServiceAccountEmail", settings.push_service_account_email.as_deref())?;
        let pull_email =
            account("pullServiceAccountEmail", settings.pull_service_account_email.as_deref())?;
        let iam = Api::new(&settings.gcp, Service::IamCredentials);
        let mints = Arc::new(AtomicU64::new(0));
        let acting = |email: Option<String>| {
            Arc::new(Acting {
                email,
                iam: iam.clone(),
                own: settings.gcp.tokens.clone(),
                cache: tokio::sync::Mutex::new(None),
                mints: mints.clone(),
            })
        };
        let push = acting(push_email);
        let pull = acting(pull_email);
        // The repository and its policy are the manager's own business: push tokens go to
        // builders, and must not be able to change who may read the repository.
        let registry = Api::new(&settings.gcp, Service::ArtifactRegistry);
        Ok(GarRegistry {
            host: format!("{location}-docker.pkg.dev"),
            repository_name: format!("{project}/{repository}"),
            project: (*project).to_owned(),
            location: (*location).to_owned(),
            repository: (*repository).to_owned(),
            resource: resource.clone(),
            push,
            pull,
            registry,
            projects: Api::new(&settings.gcp, Service::ResourceManager),
            numbers: Mutex::new(HashMap::new()),
            granted: Mutex::new(HashSet::new()),
            mints,
        })
    }

    /// How many tokens were minted through IAM Credentials (the rest came from the cache).
    pub fn token_mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// `projects/{P}/locations/{L}/repositories/{R}`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    fn unavailable(&self, message: String) -> ArtifactRegistryError {
        ArtifactRegistryError::Unavailable { registry: self.host.clone(), message }
    }

    /// Whether `image` (`{host}/{P}/{R}/{name}[:tag][@digest]`) is in this registry's
    /// repository.
    pub fn holds(&self, image: &str) -> bool {
        image
            .strip_prefix(&self.host)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.strip_prefix(&self.repository_name))
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
    }

    /// Makes the repository exist (a Docker repository), as the manager.
    pub async fn ensure_repository(&self) -> Result<(), ArtifactRegistryError> {
        let path = format!("/v1/{}", self.resource);
        let found: Result<Value, ApiError> = self
            .registry
            .json("Artifact Registry get repository", reqwest::Method::GET, &path, None)
            .await;
        match found {
            Ok(_) => return Ok(()),
            Err(e) if e.not_found() => {}
            Err(e) => return Err(self.unavailable(e.to_string())),
        }
        let create = format!(
            "/v1/projects/{}/locations/{}/repositories?repositoryId={}",
            self.project, self.location, self.repository
        );
        let body = json!({"format": "DOCKER", "description": "Release images of alien-manager"});
        let what = "Artifact Registry create repository";
        let operation: Operation =
            match self.registry.json(what, reqwest::Method::POST, &create, Some(&body)).await {
                Ok(operation) => operation,
                // Another replica or push created it since we looked.
                Err(e) if e.conflict() => return Ok(()),
                Err(e) => return Err(self.unavailable(e.to_string())),
            };
        let done = self
            .registry
            .wait_operation(what, "v1", operation, CREATE_TIMEOUT)
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        if !done.done {
            return Err(self.unavailable(format!(
                "{what}: {} is still running after {CREATE_TIMEOUT:?}; try again",
                done.name
            )));
        }
        tracing::info!(repository = %self.resource, "Artifact Registry repository created");
        Ok(())
    }

    /// The number of project `project` (an id or already a number).
    async fn project_number(&self, project: &str) -> Result<String, ArtifactRegistryError> {
        if is_number(project) {
            return Ok(project.to_owned());
        }
        if let Some(number) = self.numbers.lock().ok().and_then(|n| n.get(project).cloned()) {
            return Ok(number);
        }
        if !is_project_id(project) {
            return Err(ArtifactRegistryError::InvalidRepository {
                repository: self.resource.clone(),
                message: format!("{project:?} is neither a project id nor a project number"),
            });
        }
        let what = format!("Resource Manager get project {project}");
        let found: Project = self
            .projects
            .json(&what, reqwest::Method::GET, &format!("/v3/projects/{project}"), None)
            .await
            .map_err(|e| {
                self.unavailable(format!(
                    "{e} (the manager's identity needs resourcemanager.projects.get on the \
                     project, or give the deployment's target a projectNumber)"
                ))
            })?;
        let number = found
            .name
            .strip_prefix("projects/")
            .filter(|n| is_number(n))
            .ok_or_else(|| self.unavailable(format!("{what}: a name {:?}", found.name)))?
            .to_owned();
        if let Ok(mut numbers) = self.numbers.lock() {
            numbers.insert(project.to_owned(), number.clone());
        }
        Ok(number)
    }

    /// Lets the Cloud Run service agent of `project` (id or number) pull from the repository:
    /// it joins the `roles/artifactregistry.reader` binding of the repository's policy, every
    /// other binding kept. Idempotent; retried on a concurrent change (stale etag); once
    /// granted by this process it costs nothing.
    pub async fn grant_pull(&self, project: &str) -> Result<(), ArtifactRegistryError> {
        let number = self.project_number(project).await?;
        if self.granted.lock().is_ok_and(|g| g.contains(&number)) {
            return Ok(());
        }
        let member = format!(
            "serviceAccount:service-{number}@serverless-robot-prod.iam.gserviceaccount.com"
        );
        let get = format!("/v1/{}:getIamPolicy", self.resource);
        let set = format!("/v1/{}:setIamPolicy", self.resource);
        let mut last = None;
        for _ in 0..POLICY_ATTEMPTS {
            let policy: Value = self
                .registry
                .json("Artifact Registry getIamPolicy", reqwest::Method::GET, &get, None)
                .await
                .map_err(|e| self.unavailable(e.to_string()))?;
            let Some(updated) = with_member(&policy, READER_ROLE, &member) else {
                last = None;
                break;
            };
            let body = json!({"policy": updated});
            match self
                .registry
                .json::<Value>(
                    "Artifact Registry setIamPolicy",
                    reqwest::Method::POST,
                    &set,
                    Some(&body),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(repository = %self.resource, %member, "Artifact Registry pull granted");
                    last = None;
                    break;
                }
                // Someone changed the policy since we read it: read again.
                Err(e) if e.conflict() || e.status.as_deref() == Some("ABORTED") => last = Some(e),
                Err(e) => return Err(self.unavailable(e.to_string())),
            }
        }
        if let Some(e) = last {
            return Err(self.unavailable(format!("{e} ({POLICY_ATTEMPTS} attempts)")));
        }
        if let Ok(mut granted) = self.granted.lock() {
            granted.insert(number);
        }
        Ok(())
    }
}

/// `policy` with `member` in `role`'s binding (every other binding and member kept), ready
/// for `setIamPolicy` with the etag it was read with; `None` when it is there already.
fn with_member(policy: &Value, role: &str, member: &str) -> Option<Value> {
    let mut bindings: Vec<Value> =
        policy.get("bindings").and_then(Value::as_array).cloned().unwrap_or_default();
    // A conditional binding of the role is someone else's: ours is unconditional.
    let ours = bindings.iter_mut().find(|b| {
        b.get("role").and_then(Value::as_str) == Some(role) && b.get("condition").is_none()
    });
    match ours {
        Some(binding) => {
            let members =
                binding.get("members").and_then(Value::as_array).cloned().unwrap_or_default();
            if members.iter().any(|m| m.as_str() == Some(member)) {
                return None;
            }
            let mut members = members;
            members.push(json!(member));
            binding["members"] = json!(members);
        }
        None => bindings.push(json!({"role": role, "members": [member]})),
    }
    let mut updated = json!({"bindings": bindings});
    for field in ["etag", "version", "auditConfigs"] {
        if let Some(value) = policy.get(field) {
            updated[field] = value.clone();
        }
    }
    Some(updated)
}

#[async_trait::async_trait]
impl ArtifactRegistry for GarRegistry {
    fn kind(&self) -> &'static str {
        "gar"
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn repository_name(&self) -> &str {
        &self.repository_name
    }

    /// A token of the pull account: it reaches whatever that account may read, so the pull
    /// account's roles draw the line between deployments.
    async fn pull_credentials(
        &self,
        _who: PullFor<'_>,
    ) -> Result<RegistryCredentials, ArtifactRegistryError> {
        // Without a pull account the token would be the manager's own: an OAuth token for every
        // API the manager may call (other customers' impersonation included). Never to agents.
        if self.pull.email.is_none() {
            return Err(self.unavailable(
                "no pull account (pullServiceAccountEmail): pull-mode agents get no token of the \
                 manager's own identity; set pullServiceAccountEmail"
                    .to_owned(),
            ));
        }
        let token = self.pull.token().await.map_err(|e| self.unavailable(e.to_string()))?;
        Ok(RegistryCredentials {
            host: self.host.clone(),
            username: OAUTH_USERNAME.into(),
            password: token.token,
            plain_http: false,
        })
    }

    async fn push_credentials(
        &self,
        repositories: &[String],
    ) -> Result<Option<PushCredentials>, ArtifactRegistryError> {
        for name in repositories {
            if !is_image_name(name) {
                return Err(ArtifactRegistryError::InvalidRepository {
                    repository: name.clone(),
                    message: "is not an image name: lowercase letters and digits, joined by \
                              single '.', '_' or '-', in '/'-separated parts"
                        .into(),
                });
            }
        }
        self.ensure_repository().await?;
        let token = self.push.token().await.map_err(|e| self.unavailable(e.to_string()))?;
        Ok(Some(PushCredentials {
            username: OAUTH_USERNAME.into(),
            password: token.token,
            expires_at: token.expires_at,
        }))
    }

    /// `account` is the customer's project (id or number); see [`GarRegistry::grant_pull`].
    async fn grant_image_pull(
        &self,
        image: &str,
        account: &str,
    ) -> Result<bool, ArtifactRegistryError> {
        if !self.holds(image) {
            return Ok(false);
        }
        self.grant_pull(account).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_join_the_role_binding_and_everything_else_stays() {
        let member = "serviceAccount:service-1@serverless-robot-prod.iam.gserviceaccount.com";
        let theirs = json!({"role": "roles/artifactregistry.writer", "members": ["user:a@b.c"]});
        let conditional = json!({"role": READER_ROLE, "members": ["group:g@b.c"],
                                 "condition": {"title": "t", "expression": "true"}});
        let policy = json!({"version": 3, "etag": "BwE=", "bindings": [theirs, conditional]});
        let updated = with_member(&policy, READER_ROLE, member).unwrap_or_default();
        assert_eq!(updated["etag"], "BwE=");
        assert_eq!(updated["version"], 3);
        let bindings = updated["bindings"].as_array().cloned().unwrap_or_default();
        assert_eq!(bindings.len(), 3);
        assert_eq!(bindings[0], theirs);
        assert_eq!(bindings[1], conditional);
        assert_eq!(bindings[2], json!({"role": READER_ROLE, "members": [member]}));
        assert_eq!(with_member(&updated, READER_ROLE, member), None, "idempotent");
        let empty = with_member(&json!({"etag": "ACAB"}), READER_ROLE, member).unwrap_or_default();
        assert_eq!(empty["bindings"], json!([{"role": READER_ROLE, "members": [member]}]));
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        let settings = |name: &str, push: Option<&str>| GarSettings {
            repository_name: name.to_owned(),
            push_service_account_email: push.map(str::to_owned),
            pull_service_account_email: None,
            gcp: GcpSettings {
                tokens: Arc::new(crate::auth::StaticToken::new("t", None)),
                endpoints: Vec::new(),
            },
        };
        let good = "projects/vendor-project/locations/europe-west1/repositories/releases";
        let registry = GarRegistry::new(&settings(good, None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(registry.host(), "europe-west1-docker.pkg.dev");
        assert_eq!(registry.repository_name(), "vendor-project/releases");
        assert!(registry.holds("europe-west1-docker.pkg.dev/vendor-project/releases/api:v1"));
        assert!(!registry.holds("europe-west1-docker.pkg.dev/vendor-project/other/api:v1"));
        assert!(!registry.holds("ghcr.io/acme/api:v1"));
        for bad in [
            "releases",
            "projects/p/locations/l/repositories/r",
            "projects/vendor-project/locations/EU/repositories/r",
        ] {
            let err = GarRegistry::new(&settings(bad, None)).map(|_| ()).unwrap_err().to_string();
            assert!(err.starts_with("repositoryName: "), "{err}");
        }
        let err = GarRegistry::new(&settings(good, Some("nope"))).map(|_| ()).unwrap_err();
        assert!(err.to_string().starts_with("pushServiceAccountEmail: "), "{err}");
    }

    #[test]
    fn image_names() {
        for good in ["api", "acme/api", "a.b_c-d/e"] {
            assert!(is_image_name(good), "{good}");
        }
        for bad in ["", "Api", "a//b", "a-", "a b"] {
            assert!(!is_image_name(bad), "{bad}");
        }
    }
}
