//! How every AWS client of this crate is made: one [`AwsSettings`] (region, endpoint override)
//! becomes an [`aws_config::SdkConfig`] over one HTTP client (hyper 1 + rustls with ring, the OS
//! roots), the credentials of the environment's default chain (environment variables, web
//! identity, the ECS container endpoint, the instance metadata service), or the short-lived
//! credentials an impersonation minted ([`with_credentials`]).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use alien_impersonation::Credentials;

/// Where and how to reach AWS: the region (else the environment's `AWS_REGION` /
/// `AWS_DEFAULT_REGION`, else the profile's) and an endpoint override for every service
/// (an emulator such as moto, a compatible service; else `AWS_ENDPOINT_URL` if set).
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// The region, e.g. `us-east-1`.
    pub region: Option<String>,
    /// Endpoint of every service, e.g. `http://127.0.0.1:5000`.
    pub endpoint_url: Option<String>,
    /// Credentials to use instead of the default chain (tests against an emulator).
    pub credentials: Option<SharedCredentialsProvider>,
}

impl AwsSettings {
    /// Settings for `region` (when given) and `endpoint_url` (when given).
    pub fn new(region: Option<&str>, endpoint_url: Option<&str>) -> AwsSettings {
        AwsSettings {
            region: region.filter(|r| !r.is_empty()).map(str::to_owned),
            endpoint_url: endpoint_url.filter(|e| !e.is_empty()).map(str::to_owned),
            credentials: None,
        }
    }

    /// The SDK configuration: these settings over the environment's, with the default
    /// credential chain. No network call is made until a client uses it.
    pub async fn load(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client());
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint_url {
            loader = loader.endpoint_url(endpoint.clone());
        }
        if let Some(credentials) = &self.credentials {
            loader = loader.credentials_provider(credentials.clone());
        }
        loader.load().await
    }
}

/// The one HTTP client of every AWS SDK client in the process (a pool per client is cheap, a
/// TLS configuration per client is not).
fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    static CLIENT: OnceLock<aws_sdk_s3::config::SharedHttpClient> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                .build_https()
        })
        .clone()
}

/// `sdk` acting with `credentials`: AWS credentials an impersonation minted replace the
/// environment's; [`Credentials::Ambient`] keeps them. `None` for credentials of another cloud.
pub fn with_credentials(sdk: &SdkConfig, credentials: &Credentials) -> Option<SdkConfig> {
    match credentials {
        Credentials::Ambient => Some(sdk.clone()),
        Credentials::Aws { access_key_id, secret_access_key, session_token, expires_at } => {
            let expiry = SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(expires_at.timestamp()).unwrap_or(0));
            let credentials = aws_credential_types::Credentials::new(
                access_key_id,
                secret_access_key,
                Some(session_token.clone()),
                Some(expiry),
                "alien-impersonation",
            );
            Some(
                sdk.to_builder()
                    .credentials_provider(SharedCredentialsProvider::new(credentials))
                    .build(),
            )
        }
        Credentials::Gcp { .. } | Credentials::Azure { .. } => None,
    }
}
