//! Command payloads in a GCS bucket ([`GcsPayloadStore`]): receivers and callers upload and
//! download through V4 signed URLs (only `host` signed, so they send no header of their own);
//! the manager itself writes and reads over the JSON API. Writes are atomic as GCS makes them:
//! one upload for small bodies, a resumable upload for large ones, whose object appears with
//! its last chunk, so a reader sees the old object or the whole new one.

use std::time::Duration;

use alien_commands::payload::valid_key;
use alien_commands::{PayloadError, PayloadStore, PayloadStream};
use alien_core::command::wire::{HttpBackend, PresignedOperation, PresignedRequest};
use futures_util::StreamExt;

use crate::config::GcpSettings;
use crate::gcs::{GcsClient, UrlSigner};
use crate::rest::ApiError;

/// Command payloads in a GCS bucket.
#[derive(Debug, Clone)]
pub struct GcsPayloadStore {
    client: GcsClient,
    signer: UrlSigner,
}

impl GcsPayloadStore {
    /// The store in `bucket`, reached and signed for with `settings` (no call is made:
    /// [`PayloadStore::ping`] checks the bucket).
    pub fn new(bucket: &str, settings: &GcpSettings) -> GcsPayloadStore {
        GcsPayloadStore {
            client: GcsClient::new(settings, bucket),
            signer: UrlSigner::new(settings),
        }
    }

    /// The bucket's client.
    pub fn client(&self) -> &GcsClient {
        &self.client
    }

    async fn presign(
        &self,
        key: &str,
        expires_in: Duration,
        operation: PresignedOperation,
    ) -> Result<PresignedRequest, PayloadError> {
        check_key(key)?;
        let method = match operation {
            PresignedOperation::Put => "PUT",
            PresignedOperation::Get => "GET",
        };
        let url = self
            .signer
            .sign(method, self.client.bucket(), key, expires_in)
            .await
            .map_err(|e| payload_error(&e))?;
        let expiration = chrono::Utc::now()
            + chrono::TimeDelta::from_std(expires_in).unwrap_or(chrono::TimeDelta::MAX);
        Ok(PresignedRequest {
            backend: HttpBackend {
                backend_type: "http".into(),
                url,
                method: method.to_owned(),
                headers: Default::default(),
            },
            expiration: expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            operation,
        })
    }
}

fn check_key(key: &str) -> Result<(), PayloadError> {
    if valid_key(key) { Ok(()) } else { Err(PayloadError::InvalidKey(key.to_owned())) }
}

fn payload_error(err: &ApiError) -> PayloadError {
    if err.transient() {
        PayloadError::Unavailable(err.to_string())
    } else {
        PayloadError::Backend(err.to_string())
    }
}

#[async_trait::async_trait]
impl PayloadStore for GcsPayloadStore {
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
        let info = self.client.metadata(key).await.map_err(|e| payload_error(&e))?;
        Ok(info.map(|i| i.size))
    }

    async fn read(&self, key: &str) -> Result<PayloadStream, PayloadError> {
        check_key(key)?;
        let response = self
            .client
            .download(key, None)
            .await
            .map_err(|e| payload_error(&e))?
            .ok_or_else(|| PayloadError::NotFound(key.to_owned()))?;
        Ok(response.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)).boxed())
    }

    async fn write(&self, key: &str, body: PayloadStream) -> Result<u64, PayloadError> {
        check_key(key)?;
        match self.client.upload_stream(key, body).await.map_err(|e| payload_error(&e))? {
            Ok(info) => Ok(info.size),
            Err(err) => Err(PayloadError::Backend(format!("reading the body of {key}: {err}"))),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), PayloadError> {
        check_key(key)?;
        self.client.delete(key).await.map(|_| ()).map_err(|e| payload_error(&e))
    }

    async fn ping(&self) -> Result<(), PayloadError> {
        self.client.ping().await.map_err(|err| {
            if err.not_found() {
                PayloadError::Unavailable(format!(
                    "GCS bucket {} does not exist (or this identity cannot see it): create it \
                     (infra/gcp) or fix [commands] storage bucketName",
                    self.client.bucket()
                ))
            } else {
                payload_error(&err)
            }
        })
    }
}
