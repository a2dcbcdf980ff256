//! The embedded registry's blobs in an S3 bucket: object_store's `AmazonS3` under the registry's
//! [`alien_registry::ObjectBlobStore`], with the credentials of the SDK's default chain and an HTTP
//! connector over the same hyper 1 + rustls/ring stack as the SDK clients (object_store's own
//! `aws` feature would bring reqwest 0.13 and aws-lc, a second TLS stack and a C build).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alien_registry::ObjectBlobStore;
use alien_registry::cloud_http::HyperConnector;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::{CredentialProvider, ObjectStore};

use crate::config::AwsSettings;

/// Where the registry's blobs go: a bucket, in a region, maybe at an endpoint override.
#[derive(Debug, Clone)]
pub struct S3BlobSettings {
    /// The bucket.
    pub bucket: String,
    /// Region and endpoint.
    pub aws: AwsSettings,
}

/// The object store of the registry's bucket (no call is made yet).
pub async fn s3_object_store(settings: &S3BlobSettings) -> Result<Arc<dyn ObjectStore>, String> {
    let sdk = settings.aws.load().await;
    let region = sdk
        .region()
        .map(ToString::to_string)
        .ok_or_else(|| "no AWS region: set region or AWS_REGION".to_owned())?;
    let provider = sdk.credentials_provider().ok_or_else(|| {
        "no AWS credentials provider: set AWS credentials in the environment".to_owned()
    })?;
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&settings.bucket)
        .with_region(region)
        .with_credentials(Arc::new(SdkCredentials::new(provider)))
        .with_http_connector(HyperConnector)
        .with_virtual_hosted_style_request(false);
    if let Some(endpoint) = &settings.aws.endpoint_url {
        builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
    }
    let store = builder.build().map_err(|e| format!("S3 bucket {}: {e}", settings.bucket))?;
    Ok(Arc::new(store))
}

/// The registry's blob store in the bucket.
pub async fn s3_blob_store(settings: &S3BlobSettings) -> Result<ObjectBlobStore, String> {
    Ok(ObjectBlobStore::new(s3_object_store(settings).await?))
}

/// The SDK's credential chain for object_store, each credential reused until five minutes
/// before it expires.
#[derive(Debug)]
struct SdkCredentials {
    provider: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl SdkCredentials {
    fn new(provider: SharedCredentialsProvider) -> SdkCredentials {
        SdkCredentials { provider, cached: tokio::sync::Mutex::new(None) }
    }
}

#[async_trait::async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|at| SystemTime::now() + Duration::from_secs(300) < at);
            if fresh {
                return Ok(credential.clone());
            }
        }
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        let credential = Arc::new(AwsCredential {
            key_id: credentials.access_key_id().to_owned(),
            secret_key: credentials.secret_access_key().to_owned(),
            token: credentials.session_token().map(str::to_owned),
        });
        *cached = Some((credential.clone(), credentials.expiry()));
        Ok(credential)
    }
}
