//! The embedded registry's access rules (`spec/api.md` matrix, `spec/registry.md` "Auth"): manager
//! tokens as Bearer or as the Basic password; push for admin and group tokens; pull for admins,
//! and for a deployment token only from the repositories its current or desired release names.

use std::collections::BTreeSet;
use std::sync::Arc;

use alien_config::{ArtifactRegistryBinding, ManagerConfig};
use alien_core::{Platform, Release};
use alien_registry::{Access, ArtifactRegistries, EmbeddedRegistry, RegistryAccess, RegistryError};
use alien_store::Store;
use axum::http::HeaderMap;

use crate::auth::{Authenticator, presented_token};
use crate::policy::{Action, Scope, Target};

/// The embedded registry as each platform's `[artifact-registry.*]` `local` binding names it:
/// at its `registryUrl` (the registry as clients reach it, e.g. through a proxy in front of the
/// manager) when set, else at the public host of the base URL. A platform without a `local`
/// binding of its own uses `default`'s.
pub fn local_artifact_registries(config: &ManagerConfig) -> ArtifactRegistries {
    let bindings = &config.artifact_registry;
    let embedded = |binding: Option<&ArtifactRegistryBinding>| {
        let (host, plain_http) = match binding {
            Some(ArtifactRegistryBinding::Local { registry_url: Some(url), .. }) => {
                let url = url.trim_end_matches('/');
                let host = url.split_once("://").map_or(url, |(_, rest)| rest).to_owned();
                (host, url.starts_with("http://"))
            }
            _ => (
                config.server.public_host(),
                config.server.effective_base_url().starts_with("http://"),
            ),
        };
        Arc::new(EmbeddedRegistry::new(host).with_plain_http(plain_http))
    };
    let mut registries = ArtifactRegistries::new(embedded(bindings.default.as_ref()));
    for (platform, binding) in [
        (Platform::Aws, &bindings.aws),
        (Platform::Gcp, &bindings.gcp),
        (Platform::Azure, &bindings.azure),
    ] {
        if let Some(binding @ ArtifactRegistryBinding::Local { .. }) = binding {
            registries = registries.with_platform(platform, embedded(Some(binding)));
        }
    }
    registries
}

/// [`RegistryAccess`] by manager tokens.
pub struct TokenRegistryAccess {
    auth: Authenticator,
    store: Arc<dyn Store>,
    authz: Arc<dyn crate::policy::Authz>,
}

impl TokenRegistryAccess {
    /// Access decided by `authz` for the tokens in `store`.
    pub fn new(
        auth: Authenticator,
        store: Arc<dyn Store>,
        authz: Arc<dyn crate::policy::Authz>,
    ) -> Self {
        Self { auth, store, authz }
    }

    /// Repositories named by the images of a deployment's current and desired releases.
    async fn deployment_repositories(
        &self,
        deployment: &alien_core::Id,
    ) -> Result<BTreeSet<String>, RegistryError> {
        let Some(deployment) =
            self.store.get_deployment(deployment).await.map_err(RegistryError::internal)?
        else {
            return Ok(BTreeSet::new());
        };
        let mut repos = BTreeSet::new();
        for release in
            [&deployment.current_release_id, &deployment.desired_release_id].into_iter().flatten()
        {
            if let Some(release) =
                self.store.get_release(release).await.map_err(RegistryError::internal)?
            {
                repos.extend(release_repositories(&release, deployment.platform));
            }
        }
        Ok(repos)
    }
}

/// The repository paths of every image a release's stack for `platform` runs.
pub fn release_repositories(release: &Release, platform: alien_core::Platform) -> BTreeSet<String> {
    release
        .stack
        .get(&platform)
        .map(|stack| {
            stack.containers().filter_map(|(_, c)| c.image()).filter_map(image_repository).collect()
        })
        .unwrap_or_default()
}

/// `localhost:8080/acme/api:v1` -> `acme/api`; `ghcr.io/a/b@sha256:..` -> `a/b`; `busybox:1` -> `busybox`.
pub fn image_repository(image: &str) -> Option<String> {
    let without_digest = image.split('@').next()?;
    let mut parts: Vec<&str> = without_digest.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            parts.remove(0);
        }
    }
    let last = parts.pop()?;
    let name = last.split(':').next()?;
    parts.push(name);
    let repo = parts.join("/");
    (!repo.is_empty()).then_some(repo)
}

#[async_trait::async_trait]
impl RegistryAccess for TokenRegistryAccess {
    async fn check(&self, headers: &HeaderMap, access: Access<'_>) -> Result<(), RegistryError> {
        let raw = presented_token(headers).ok_or_else(RegistryError::unauthorized)?;
        let subject = self
            .auth
            .subject_of(&raw)
            .await
            .map_err(|e| RegistryError::internal(e.message))?
            .ok_or_else(RegistryError::unauthorized)?;
        let denied = |what: &str| {
            RegistryError::denied(format!("a {} token may not {what}", subject.token_type))
        };
        match access {
            Access::Base => Ok(()),
            Access::Push(_) | Access::Delete(_) => self
                .authz
                .authorize(&subject, Action::RegistryPush, Target::none())
                .map(drop)
                .map_err(|_| denied("push to the registry")),
            Access::Catalog => self
                .authz
                .authorize(&subject, Action::RegistryCatalog, Target::none())
                .map(drop)
                .map_err(|_| denied("list repositories")),
            Access::Probe(repo) => {
                if self.authz.authorize(&subject, Action::RegistryPush, Target::none()).is_ok() {
                    return Ok(());
                }
                self.check_pull(&subject, repo).await
            }
            Access::Pull(repo) => self.check_pull(&subject, repo).await,
        }
    }
}

impl TokenRegistryAccess {
    async fn check_pull(
        &self,
        subject: &crate::auth::Subject,
        repo: &alien_registry::RepoName,
    ) -> Result<(), RegistryError> {
        let denied = |what: &str| {
            RegistryError::denied(format!("a {} token may not {what}", subject.token_type))
        };
        let scope = self
            .authz
            .authorize(subject, Action::RegistryPull, Target::none())
            .map_err(|_| denied("pull from the registry"))?;
        match scope {
            Scope::All => Ok(()),
            // A deployment pulls only the repositories its releases name.
            Scope::Deployment(deployment) => {
                if self.deployment_repositories(&deployment).await?.contains(repo.as_str()) {
                    Ok(())
                } else {
                    Err(denied(&format!("pull {repo}: its release does not name it")))
                }
            }
            Scope::Group(_) => Err(denied("pull from the registry")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::image_repository;

    #[test]
    fn image_references_name_their_repository() {
        for (image, repo) in [
            ("localhost:8080/acme/api:v1", "acme/api"),
            ("127.0.0.1:5000/x", "x"),
            ("ghcr.io/acme/db:v2", "acme/db"),
            ("busybox:1", "busybox"),
            ("library/nginx", "library/nginx"),
            ("reg.example/a/b/c@sha256:abc", "a/b/c"),
        ] {
            assert_eq!(image_repository(image).as_deref(), Some(repo), "{image}");
        }
    }
}
