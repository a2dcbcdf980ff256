//! The embedded registry's blobs in an S3 bucket: object_store's `AmazonS3` under the registry's
//! [`alien_registry::ObjectBlobStore`], with the credentials of the SDK's default chain and an HTTP
//! connector over the same hyper 1 + rustls/ring stack as the SDK clients (object_store's own
//! `aws` feature would bring reqwest 0.13 and aws-lc, a second TLS stack and a C build).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alien_registry::ObjectBlobStore;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector as HyperHttp;
use hyper_util::rt::TokioExecutor;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest,
    HttpRequestBody, HttpResponse, HttpResponseBody, HttpService,
};
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

/// object_store's HTTP connector over hyper-util's pooled client with rustls (ring, OS roots).
#[derive(Debug, Clone, Copy)]
struct HyperConnector;

impl HttpConnector for HyperConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let mut http = HyperHttp::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_nodelay(true);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(tls);
        Ok(HttpClient::new(HyperService { client }))
    }
}

#[derive(Debug, Clone)]
struct HyperService {
    client: HyperClient<hyper_rustls::HttpsConnector<HyperHttp>, HttpRequestBody>,
}

#[async_trait::async_trait]
impl HttpService for HyperService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = self.client.request(request).await.map_err(|e| {
            let kind = if e.is_connect() { HttpErrorKind::Connect } else { HttpErrorKind::Request };
            HttpError::new(kind, e)
        })?;
        let (parts, body) = response.into_parts();
        let body = body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}
