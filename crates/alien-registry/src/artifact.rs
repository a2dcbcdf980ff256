//! The [`ArtifactRegistry`] seam: where a platform's release images live and the credentials a
//! deployment pulls them with. The embedded registry ([`EmbeddedRegistry`]) serves every platform
//! by default; ECR, GAR and ACR come with the cloud crates. [`ArtifactRegistries`] picks one per
//! platform: the platform's own, else the default.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use alien_core::Platform;
use alien_core::api::PushCredentials;
use alien_core::sync::RegistryCredentials;

/// Why pull credentials could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactRegistryError {
    /// The registry's own service refused or failed (a cloud API call, say).
    #[error("registry {registry}: {message}")]
    Unavailable {
        /// Which registry.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// A repository name the registry does not accept.
    #[error("repository {repository:?}: {message}")]
    InvalidRepository {
        /// The name as given.
        repository: String,
        /// Why it is refused.
        message: String,
    },
}

/// Whom pull credentials are for.
#[derive(Clone, Copy)]
pub struct PullFor<'a> {
    /// The deployment's id.
    pub deployment_id: &'a str,
    /// The deployment's own token: the embedded registry accepts it for the repositories of the
    /// deployment's releases only.
    pub deployment_token: &'a str,
}

impl fmt::Debug for PullFor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullFor")
            .field("deployment_id", &self.deployment_id)
            .field("deployment_token", &"<redacted>")
            .finish()
    }
}

/// Where release images for a platform live.
#[async_trait::async_trait]
pub trait ArtifactRegistry: Send + Sync + fmt::Debug {
    /// What kind of registry this is: `embedded`, `ecr`, `gar`, `acr`.
    fn kind(&self) -> &'static str;
    /// Host (and port) images are pushed to and pulled from, e.g. `registry.example.com:5000`.
    fn host(&self) -> &str;
    /// Repository (prefix) release images are pushed under:
    /// `<host>/<repository_name>/<image>:<tag>`.
    fn repository_name(&self) -> &str;
    /// Whether clients reach it over plain HTTP rather than HTTPS.
    fn plain_http(&self) -> bool {
        false
    }
    /// Credentials that pull the images of `who`'s releases (and nothing of other deployments).
    async fn pull_credentials(
        &self,
        who: PullFor<'_>,
    ) -> Result<RegistryCredentials, ArtifactRegistryError>;
    /// Credentials that push images to `repositories` (names under
    /// [`ArtifactRegistry::repository_name`]), which exist once this returns. `None` (the
    /// default): the registry takes the pushing client's own manager token.
    async fn push_credentials(
        &self,
        _repositories: &[String],
    ) -> Result<Option<PushCredentials>, ArtifactRegistryError> {
        Ok(None)
    }
    /// Lets `account` (the cloud account a push deployment runs in) pull `image` when the image
    /// lives in this registry: for a cloud registry, a repository policy naming the account.
    /// `Ok(false)` (the default): the image is elsewhere, or this registry needs no grant.
    async fn grant_image_pull(
        &self,
        _image: &str,
        _account: &str,
    ) -> Result<bool, ArtifactRegistryError> {
        Ok(false)
    }
}

/// Repository prefix under which the CLI pushes images to the embedded registry.
pub const EMBEDDED_REPOSITORY: &str = "artifacts";

/// The registry at `/v2/` of this manager (or a registry in front of it at `host`): deployments
/// pull with their own token, which reaches their releases' repositories only.
#[derive(Debug, Clone)]
pub struct EmbeddedRegistry {
    host: String,
    plain_http: bool,
}

impl EmbeddedRegistry {
    /// The embedded registry as clients reach it at `host` (host and port, no scheme), over
    /// HTTPS.
    pub fn new(host: impl Into<String>) -> Self {
        Self { host: host.into(), plain_http: false }
    }

    /// Clients reach it over plain HTTP (`true`) rather than HTTPS.
    #[must_use]
    pub fn with_plain_http(mut self, plain_http: bool) -> Self {
        self.plain_http = plain_http;
        self
    }
}

#[async_trait::async_trait]
impl ArtifactRegistry for EmbeddedRegistry {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn repository_name(&self) -> &str {
        EMBEDDED_REPOSITORY
    }

    fn plain_http(&self) -> bool {
        self.plain_http
    }

    async fn pull_credentials(
        &self,
        who: PullFor<'_>,
    ) -> Result<RegistryCredentials, ArtifactRegistryError> {
        Ok(RegistryCredentials {
            host: self.host.clone(),
            username: "deployment".into(),
            password: who.deployment_token.to_owned(),
            plain_http: self.plain_http,
        })
    }
}

/// The registry of each platform: its own, else the default. Cheap to clone (the API state is
/// cloned for every request).
#[derive(Debug, Clone)]
pub struct ArtifactRegistries {
    default: Arc<dyn ArtifactRegistry>,
    per_platform: Arc<HashMap<Platform, Arc<dyn ArtifactRegistry>>>,
}

impl ArtifactRegistries {
    /// Every platform uses `default`.
    pub fn new(default: Arc<dyn ArtifactRegistry>) -> Self {
        Self { default, per_platform: Arc::new(HashMap::new()) }
    }

    /// `platform` uses `registry` instead of the default.
    #[must_use]
    pub fn with_platform(
        mut self,
        platform: Platform,
        registry: Arc<dyn ArtifactRegistry>,
    ) -> Self {
        Arc::make_mut(&mut self.per_platform).insert(platform, registry);
        self
    }

    /// The registry of `platform`.
    pub fn for_platform(&self, platform: Platform) -> &Arc<dyn ArtifactRegistry> {
        self.per_platform.get(&platform).unwrap_or(&self.default)
    }

    /// Every registry host release images may name (for deployers that authenticate to them).
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts = vec![self.default.host().to_owned()];
        for registry in self.per_platform.values() {
            if !hosts.iter().any(|h| h == registry.host()) {
                hosts.push(registry.host().to_owned());
            }
        }
        hosts
    }

    /// The hosts of [`ArtifactRegistries::hosts`] that clients reach over plain HTTP.
    pub fn plain_http_hosts(&self) -> Vec<String> {
        let registries = std::iter::once(&self.default).chain(self.per_platform.values());
        let mut hosts: Vec<String> = Vec::new();
        for registry in registries.filter(|r| r.plain_http()) {
            if !hosts.iter().any(|h| h == registry.host()) {
                hosts.push(registry.host().to_owned());
            }
        }
        hosts
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_embedded_registry_pulls_with_the_deployment_token() {
        let registry = EmbeddedRegistry::new("registry.example.com:5000");
        let who = PullFor { deployment_id: "dep_1", deployment_token: "ax_dep_secret" };
        let creds = registry.pull_credentials(who).await.unwrap();
        assert_eq!(creds.host, "registry.example.com:5000");
        assert_eq!(creds.password, "ax_dep_secret");
        assert!(!creds.plain_http, "HTTPS unless said otherwise");
        let plain = EmbeddedRegistry::new("127.0.0.1:8080").with_plain_http(true);
        assert!(plain.pull_credentials(who).await.unwrap().plain_http);
        assert!(!format!("{who:?}").contains("secret"));
    }

    #[test]
    fn a_platform_uses_its_own_registry_else_the_default() {
        let registries = ArtifactRegistries::new(Arc::new(EmbeddedRegistry::new("a:1")))
            .with_platform(Platform::Aws, Arc::new(EmbeddedRegistry::new("b:2")));
        assert_eq!(registries.for_platform(Platform::Aws).host(), "b:2");
        assert_eq!(registries.for_platform(Platform::Local).host(), "a:1");
        assert_eq!(registries.hosts(), ["a:1", "b:2"]);
        assert!(registries.plain_http_hosts().is_empty());
        let registries = registries.with_platform(
            Platform::Gcp,
            Arc::new(EmbeddedRegistry::new("c:3").with_plain_http(true)),
        );
        assert_eq!(registries.plain_http_hosts(), ["c:3"]);
    }
}
