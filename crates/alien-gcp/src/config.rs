//! Where every Google API of this crate is reached, and as whom.
//!
//! Endpoints come from the variables Google's own tools read:
//! - `FIRESTORE_EMULATOR_HOST` and `STORAGE_EMULATOR_HOST` (`host:port` or a URL), as the
//!   client libraries do: with one set, that service is an emulator and is called without a token;
//! - `CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>` (a base URL), as `gcloud` does, for the services
//!   without an emulator (`RUN`, `IAMCREDENTIALS`, `ARTIFACTREGISTRY`, `SECRETMANAGER`,
//!   `CLOUDRESOURCEMANAGER`): the tests point them at contract stubs.
//!
//! A binding's own `endpointUrl` wins over the environment.

use std::sync::Arc;

use crate::auth::{TokenSource, ambient_token_source};

/// The Google APIs this crate calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Firestore (commands KV).
    Firestore,
    /// Cloud Storage (payloads, registry blobs).
    Storage,
    /// Cloud Run Admin API v2.
    Run,
    /// IAM Service Account Credentials API.
    IamCredentials,
    /// Artifact Registry API.
    ArtifactRegistry,
    /// Secret Manager API.
    SecretManager,
    /// Resource Manager API (project numbers).
    ResourceManager,
}

impl Service {
    /// The production base URL.
    pub fn default_base(self) -> &'static str {
        match self {
            Service::Firestore => "https://firestore.googleapis.com",
            Service::Storage => "https://storage.googleapis.com",
            Service::Run => "https://run.googleapis.com",
            Service::IamCredentials => "https://iamcredentials.googleapis.com",
            Service::ArtifactRegistry => "https://artifactregistry.googleapis.com",
            Service::SecretManager => "https://secretmanager.googleapis.com",
            Service::ResourceManager => "https://cloudresourcemanager.googleapis.com",
        }
    }

    /// The environment variable that overrides the endpoint, and whether it names an emulator
    /// (called without a token).
    pub fn override_variable(self) -> (&'static str, bool) {
        match self {
            Service::Firestore => ("FIRESTORE_EMULATOR_HOST", true),
            Service::Storage => ("STORAGE_EMULATOR_HOST", true),
            Service::Run => ("CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN", false),
            Service::IamCredentials => ("CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS", false),
            Service::ArtifactRegistry => {
                ("CLOUDSDK_API_ENDPOINT_OVERRIDES_ARTIFACTREGISTRY", false)
            }
            Service::SecretManager => ("CLOUDSDK_API_ENDPOINT_OVERRIDES_SECRETMANAGER", false),
            Service::ResourceManager => {
                ("CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER", false)
            }
        }
    }
}

/// `host:port` or a URL as a base URL without a trailing slash (`http://` when no scheme).
pub fn base_url(value: &str) -> String {
    let value = value.trim().trim_end_matches('/');
    if value.starts_with("http://") || value.starts_with("https://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    }
}

/// Where one service is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL without a trailing slash, e.g. `https://run.googleapis.com`.
    pub base: String,
    /// An emulator: no token is sent.
    pub emulator: bool,
}

impl Endpoint {
    /// `service`'s endpoint: `explicit` (a binding's `endpointUrl`; an emulator for Firestore
    /// and Storage), else its override variable, else production.
    pub fn resolve(service: Service, explicit: Option<&str>) -> Endpoint {
        let (variable, is_emulator) = service.override_variable();
        if let Some(explicit) = explicit.filter(|e| !e.trim().is_empty()) {
            return Endpoint { base: base_url(explicit), emulator: is_emulator };
        }
        match std::env::var(variable) {
            Ok(value) if !value.trim().is_empty() => {
                Endpoint { base: base_url(&value), emulator: is_emulator }
            }
            _ => Endpoint { base: service.default_base().to_owned(), emulator: false },
        }
    }
}

/// How this crate reaches Google: the manager's own token source (used for every call that is
/// not made with a deployment's impersonated token) and endpoint overrides.
#[derive(Clone)]
pub struct GcpSettings {
    /// The manager's own identity.
    pub tokens: Arc<dyn TokenSource>,
    /// Endpoint overrides by service (a binding's `endpointUrl`), ahead of the environment.
    pub endpoints: Vec<(Service, String)>,
}

impl std::fmt::Debug for GcpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpSettings")
            .field("tokens", &self.tokens.describe())
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl GcpSettings {
    /// The environment's identity (`ambient_token_source`), no override.
    pub fn from_env() -> GcpSettings {
        GcpSettings { tokens: ambient_token_source(), endpoints: Vec::new() }
    }

    /// With `service` at `url` (ignored when `None`).
    pub fn with_endpoint(mut self, service: Service, url: Option<&str>) -> GcpSettings {
        if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
            self.endpoints.retain(|(s, _)| *s != service);
            self.endpoints.push((service, url.to_owned()));
        }
        self
    }

    /// Where `service` is reached.
    pub fn endpoint(&self, service: Service) -> Endpoint {
        let explicit = self.endpoints.iter().find(|(s, _)| *s == service).map(|(_, u)| u.as_str());
        Endpoint::resolve(service, explicit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_hosts_may_be_host_port_or_urls() {
        assert_eq!(base_url("127.0.0.1:8681"), "http://127.0.0.1:8681");
        assert_eq!(base_url("http://127.0.0.1:9023/"), "http://127.0.0.1:9023");
        assert_eq!(base_url("https://stub.example"), "https://stub.example");
    }

    #[test]
    fn an_explicit_endpoint_of_firestore_is_an_emulator_and_production_is_not() {
        let e = Endpoint::resolve(Service::Firestore, Some("127.0.0.1:1"));
        assert_eq!(e, Endpoint { base: "http://127.0.0.1:1".into(), emulator: true });
        let run = Endpoint::resolve(Service::Run, Some("http://127.0.0.1:2"));
        assert!(!run.emulator);
    }
}
