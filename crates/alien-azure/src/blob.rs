//! Blob Storage through object_store's `MicrosoftAzure` (`azure-base` + `ring`, over
//! [`alien_registry::cloud_http::HyperConnector`]): command payloads behind SAS URLs
//! ([`BlobPayloadStore`]) and the embedded registry's blobs ([`blob_blob_store`]).
//!
//! A SAS URL is a service SAS signed with the account key (object_store's `Signer`), scoped to
//! one blob, one permission (read, or create and write) and the expiry asked. A receiver `PUT`s
//! with `x-ms-blob-type: BlockBlob`, the one header it must send (it is in the presigned
//! request's headers). Writes are atomic as Blob Storage makes them: one `Put Blob`, or blocks
//! committed with one `Put Block List`, so a reader sees the old blob or the whole new one.

use std::sync::Arc;
use std::time::Duration;

use alien_commands::payload::valid_key;
use alien_commands::{PayloadError, PayloadStore, PayloadStream};
use alien_core::command::wire::{HttpBackend, PresignedOperation, PresignedRequest};
use alien_registry::ObjectBlobStore;
use alien_registry::cloud_http::HyperConnector;
use bytes::BytesMut;
use futures_util::StreamExt;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::storage::{StorageAccount, StorageService};

/// Part size of multipart (block) uploads.
const PART: usize = 8 * 1024 * 1024;

/// The container `container` of storage account `account` (at `endpoint_url` when given) as an
/// object store. No call is made.
pub fn blob_container(
    account: &str,
    container: &str,
    endpoint_url: Option<&str>,
) -> Result<MicrosoftAzure, String> {
    let resolved = StorageAccount::resolve(StorageService::Blob, account, endpoint_url)?;
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account(account)
        .with_container_name(container)
        .with_http_connector(HyperConnector);
    if resolved.base != format!("https://{account}.blob.core.windows.net") {
        builder = builder
            .with_endpoint(resolved.base.clone())
            .with_allow_http(resolved.base.starts_with("http://"));
    }
    match std::env::var("AZURE_STORAGE_ACCOUNT_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .or_else(|| resolved.key.is_some().then(|| crate::storage::EMULATOR_KEY.to_owned()))
    {
        Some(key) => builder = builder.with_access_key(key),
        // The environment's Entra ID identity (`Storage Blob Data Contributor`, and `Storage
        // Blob Delegator` for the user delegation key that signs SAS URLs without an account
        // key), the same chain as every other Azure call of the manager.
        None => {
            let tokens = crate::entra::ambient_token_source(crate::table::STORAGE_RESOURCE);
            builder = builder.with_credentials(Arc::new(EntraCredentials(tokens)));
        }
    }
    builder.build().map_err(|e| format!("Blob container {container} of {account}: {e}"))
}

/// object_store's credential provider over an Entra ID token source.
struct EntraCredentials(Arc<dyn crate::entra::TokenSource>);

impl std::fmt::Debug for EntraCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EntraCredentials").field(&self.0.describe()).finish()
    }
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for EntraCredentials {
    type Credential = object_store::azure::AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        let token = self.0.token().await.map_err(|e| object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: format!("getting a storage token ({}): {e}", self.0.describe()).into(),
        })?;
        Ok(Arc::new(object_store::azure::AzureCredential::BearerToken(token.secret().to_owned())))
    }
}

/// The registry's blob store in a container (no call is made yet).
pub fn blob_blob_store(
    account: &str,
    container: &str,
    endpoint_url: Option<&str>,
) -> Result<ObjectBlobStore, String> {
    Ok(ObjectBlobStore::new(Arc::new(blob_container(account, container, endpoint_url)?)))
}

/// Command payloads in a Blob container.
#[derive(Debug, Clone)]
pub struct BlobPayloadStore {
    store: Arc<MicrosoftAzure>,
    container: String,
    account: String,
}

impl BlobPayloadStore {
    /// The store in `container` of `account` (no call is made: [`PayloadStore::ping`] checks).
    pub fn new(
        account: &str,
        container: &str,
        endpoint_url: Option<&str>,
    ) -> Result<BlobPayloadStore, String> {
        Ok(BlobPayloadStore {
            store: Arc::new(blob_container(account, container, endpoint_url)?),
            container: container.to_owned(),
            account: account.to_owned(),
        })
    }

    fn describe(&self) -> String {
        format!("Blob container {} of storage account {}", self.container, self.account)
    }

    fn error(&self, what: &str, err: &object_store::Error) -> PayloadError {
        let message = format!("{} {what}: {err}", self.describe());
        match err {
            object_store::Error::Generic { .. } => PayloadError::Unavailable(message),
            _ => PayloadError::Backend(message),
        }
    }

    async fn presign(
        &self,
        key: &str,
        expires_in: Duration,
        operation: PresignedOperation,
    ) -> Result<PresignedRequest, PayloadError> {
        check_key(key)?;
        let (method, headers) = match operation {
            PresignedOperation::Put => (
                http::Method::PUT,
                [("x-ms-blob-type".to_owned(), "BlockBlob".to_owned())].into_iter().collect(),
            ),
            PresignedOperation::Get => (http::Method::GET, Default::default()),
        };
        let url = self
            .store
            .signed_url(method.clone(), &Path::from(key), expires_in)
            .await
            .map_err(|e| self.error("signing a URL", &e))?;
        let expiration = chrono::Utc::now()
            + chrono::TimeDelta::from_std(expires_in).unwrap_or(chrono::TimeDelta::MAX);
        Ok(PresignedRequest {
            backend: HttpBackend {
                backend_type: "http".into(),
                url: url.to_string(),
                method: method.to_string(),
                headers,
            },
            expiration: expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            operation,
        })
    }
}

fn check_key(key: &str) -> Result<(), PayloadError> {
    if valid_key(key) { Ok(()) } else { Err(PayloadError::InvalidKey(key.to_owned())) }
}

#[async_trait::async_trait]
impl PayloadStore for BlobPayloadStore {
    async fn presign_put(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<PresignedRequest, PayloadError> {
        self.presign(key, expires_in, PresignedOperation::Put).await
    }

    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<PresignedRequest, PayloadError> {
        self.presign(key, expires_in, PresignedOperation::Get).await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, PayloadError> {
        check_key(key)?;
        match self.store.head(&Path::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", &e)),
        }
    }

    async fn read(&self, key: &str) -> Result<PayloadStream, PayloadError> {
        check_key(key)?;
        match self.store.get(&Path::from(key)).await {
            Ok(result) => {
                Ok(result.into_stream().map(|c| c.map_err(std::io::Error::other)).boxed())
            }
            Err(object_store::Error::NotFound { .. }) => {
                Err(PayloadError::NotFound(key.to_owned()))
            }
            Err(e) => Err(self.error("get", &e)),
        }
    }

    async fn write(&self, key: &str, mut body: PayloadStream) -> Result<u64, PayloadError> {
        check_key(key)?;
        let path = Path::from(key);
        let read_error =
            |e: std::io::Error| PayloadError::Backend(format!("reading the body of {key}: {e}"));
        let mut first = BytesMut::new();
        while first.len() < PART {
            match body.next().await {
                Some(chunk) => first.extend_from_slice(&chunk.map_err(read_error)?),
                None => {
                    let size = first.len() as u64;
                    self.store
                        .put(&path, PutPayload::from(first.freeze()))
                        .await
                        .map_err(|e| self.error("put", &e))?;
                    return Ok(size);
                }
            }
        }
        let upload = self.store.put_multipart(&path).await.map_err(|e| self.error("put", &e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut size = first.len() as u64;
        writer.write(&first);
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    size += chunk.len() as u64;
                    writer.wait_for_capacity(4).await.map_err(|e| self.error("put", &e))?;
                    writer.write(&chunk);
                }
                Err(e) => {
                    // Uncommitted blocks are never seen, and expire after a week.
                    let _ = writer.abort().await;
                    return Err(read_error(e));
                }
            }
        }
        writer.finish().await.map_err(|e| self.error("put", &e))?;
        Ok(size)
    }

    async fn delete(&self, key: &str) -> Result<(), PayloadError> {
        check_key(key)?;
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", &e)),
        }
    }

    async fn ping(&self) -> Result<(), PayloadError> {
        let mut list = self.store.list(None);
        match list.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("ContainerNotFound") || text.contains("404") {
                    Err(PayloadError::Unavailable(format!(
                        "{} does not exist (or this identity cannot see it): create it \
                         (infra/azure) or fix [commands] storage containerName/accountName",
                        self.describe()
                    )))
                } else {
                    Err(self.error("list", &e))
                }
            }
        }
    }
}
