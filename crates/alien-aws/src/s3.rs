//! Command payloads in an S3 bucket ([`S3PayloadStore`]): receivers and callers upload and
//! download through SigV4 presigned URLs, path-style so that endpoints such as moto and MinIO
//! work; the manager itself writes and reads with the SDK. Writes are atomic as S3 makes them:
//! one `PutObject` for small bodies, a multipart upload (aborted on any failure) for large ones,
//! so a reader sees the old object or the whole new one.

use std::time::Duration;

use alien_commands::payload::valid_key;
use alien_commands::{PayloadError, PayloadStore, PayloadStream};
use alien_core::command::wire::{HttpBackend, PresignedOperation, PresignedRequest};
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::config::AwsSettings;
use crate::error::{AwsFailure, classify};

/// Part size of multipart uploads (S3's minimum is 5 MiB, except for the last part).
const PART: usize = 8 * 1024 * 1024;

/// An S3 client for `sdk`: path-style addressing, and checksums only where S3 requires them (a
/// presigned PUT must not carry a checksum of an empty body).
pub fn s3_client(sdk: &SdkConfig) -> Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    Client::from_conf(config)
}

/// Command payloads in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3PayloadStore {
    client: Client,
    bucket: String,
}

impl S3PayloadStore {
    /// The store in `bucket`, reached with `settings` (no call is made: [`PayloadStore::ping`]
    /// checks the bucket).
    pub async fn connect(bucket: &str, settings: &AwsSettings) -> S3PayloadStore {
        let sdk = settings.load().await;
        S3PayloadStore::with_client(s3_client(&sdk), bucket)
    }

    /// The store in `bucket` through `client` (made with [`s3_client`]).
    pub fn with_client(client: Client, bucket: &str) -> S3PayloadStore {
        S3PayloadStore { client, bucket: bucket.to_owned() }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket (for tests and first runs against an emulator).
    pub async fn create_bucket(&self) -> Result<(), PayloadError> {
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| payload_error(&classify("S3 CreateBucket", &e)))?;
        Ok(())
    }

    async fn presign(
        &self,
        key: &str,
        expires_in: Duration,
        operation: PresignedOperation,
    ) -> Result<PresignedRequest, PayloadError> {
        check_key(key)?;
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| PayloadError::Backend(format!("presigning for {expires_in:?}: {e}")))?;
        let failed = |e: String| PayloadError::Backend(format!("presigning {key}: {e}"));
        let presigned = match operation {
            PresignedOperation::Put => self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .presigned(config)
                .await
                .map_err(|e| failed(e.to_string()))?,
            PresignedOperation::Get => self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .presigned(config)
                .await
                .map_err(|e| failed(e.to_string()))?,
        };
        let expiration = chrono::Utc::now()
            + chrono::TimeDelta::from_std(expires_in).unwrap_or(chrono::TimeDelta::MAX);
        Ok(PresignedRequest {
            backend: HttpBackend {
                backend_type: "http".into(),
                url: presigned.uri().to_owned(),
                method: presigned.method().to_owned(),
                headers: presigned
                    .headers()
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect(),
            },
            expiration: expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            operation,
        })
    }

    async fn put_whole(&self, key: &str, body: Bytes) -> Result<(), PayloadError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| payload_error(&classify("S3 PutObject", &e)))?;
        Ok(())
    }

    /// Uploads the rest of `body` after `first` as parts of multipart upload `upload`.
    async fn put_parts(
        &self,
        key: &str,
        upload: &str,
        first: Bytes,
        body: &mut PayloadStream,
    ) -> Result<u64, PayloadError> {
        let mut parts = Vec::new();
        let mut size = first.len() as u64;
        let mut pending = BytesMut::from(first.as_ref());
        let mut ended = false;
        loop {
            while !ended && pending.len() < PART {
                match body.next().await {
                    Some(chunk) => {
                        let chunk = chunk.map_err(|e| {
                            PayloadError::Backend(format!("reading the body of {key}: {e}"))
                        })?;
                        size += chunk.len() as u64;
                        pending.extend_from_slice(&chunk);
                    }
                    None => ended = true,
                }
            }
            if pending.is_empty() {
                break;
            }
            let part = pending.split_to(pending.len().min(PART)).freeze();
            let number = i32::try_from(parts.len() + 1)
                .map_err(|_| PayloadError::Backend(format!("{key}: too many parts")))?;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload)
                .part_number(number)
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(|e| payload_error(&classify("S3 UploadPart", &e)))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| payload_error(&classify("S3 CompleteMultipartUpload", &e)))?;
        Ok(size)
    }
}

fn check_key(key: &str) -> Result<(), PayloadError> {
    if valid_key(key) { Ok(()) } else { Err(PayloadError::InvalidKey(key.to_owned())) }
}

fn payload_error(failure: &AwsFailure) -> PayloadError {
    if failure.transient {
        PayloadError::Unavailable(failure.message.clone())
    } else {
        PayloadError::Backend(failure.message.clone())
    }
}

#[async_trait::async_trait]
impl PayloadStore for S3PayloadStore {
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
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => {
                Ok(Some(out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)))
            }
            Err(SdkError::ServiceError(e)) if matches!(e.err(), HeadObjectError::NotFound(_)) => {
                Ok(None)
            }
            Err(err) => Err(payload_error(&classify("S3 HeadObject", &err))),
        }
    }

    async fn read(&self, key: &str) -> Result<PayloadStream, PayloadError> {
        check_key(key)?;
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if matches!(e.err(), GetObjectError::NoSuchKey(_)) => {
                return Err(PayloadError::NotFound(key.to_owned()));
            }
            Err(err) => return Err(payload_error(&classify("S3 GetObject", &err))),
        };
        let stream = futures_util::stream::unfold(out.body, |mut body| async move {
            body.next()
                .await
                .map(|chunk| (chunk.map_err(|e| std::io::Error::other(e.to_string())), body))
        });
        Ok(stream.boxed())
    }

    async fn write(&self, key: &str, mut body: PayloadStream) -> Result<u64, PayloadError> {
        check_key(key)?;
        let mut first = BytesMut::new();
        while first.len() < PART {
            match body.next().await {
                Some(chunk) => first.extend_from_slice(&chunk.map_err(|e| {
                    PayloadError::Backend(format!("reading the body of {key}: {e}"))
                })?),
                None => {
                    let size = first.len() as u64;
                    self.put_whole(key, first.freeze()).await?;
                    return Ok(size);
                }
            }
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| payload_error(&classify("S3 CreateMultipartUpload", &e)))?;
        let upload = created
            .upload_id()
            .ok_or_else(|| PayloadError::Backend("S3 CreateMultipartUpload: no upload id".into()))?
            .to_owned();
        match self.put_parts(key, &upload, first.freeze(), &mut body).await {
            Ok(size) => Ok(size),
            Err(err) => {
                let aborted = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload)
                    .send()
                    .await;
                if let Err(abort) = aborted {
                    tracing::warn!(key, error = %classify("S3 AbortMultipartUpload", &abort).message,
                        "a failed payload upload was not aborted; the bucket's lifecycle rule removes it");
                }
                Err(err)
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), PayloadError> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| payload_error(&classify("S3 DeleteObject", &e)))?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), PayloadError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(err) => {
                let failure = classify("S3 HeadBucket", &err);
                let missing = matches!(&err, SdkError::ServiceError(e)
                    if matches!(e.err(), aws_sdk_s3::operation::head_bucket::HeadBucketError::NotFound(_)))
                    || err.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                if missing {
                    Err(PayloadError::Unavailable(format!(
                        "S3 bucket {} does not exist (or this identity cannot see it): create it \
                         (infra/aws) or fix [commands] storage bucketName/region",
                        self.bucket
                    )))
                } else {
                    Err(payload_error(&failure))
                }
            }
        }
    }
}
