//! The `PayloadStore` seam: large command parameters and responses, reached by clients through
//! presigned URLs. Files on local disk behind manager-signed URLs by default; S3, GCS and Azure
//! Blob with the cloud crates. Every implementation runs `payload_contract` (feature `contract-tests`).

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::wire::PresignedRequest;

/// A stream of payload bytes.
pub type PayloadStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Longest payload key (the S3 and GCS object-name limit).
pub const MAX_KEY_LEN: usize = 1024;

/// Longest `/`-separated segment of a payload key (a file name on every filesystem).
pub const MAX_SEGMENT_LEN: usize = 255;

/// Whether `key` is a valid payload key: 1..=1024 bytes of `[A-Za-z0-9-_./]` in `/`-separated
/// segments of 1..=255 bytes that do not start with `.` (so no `.`, `..`, hidden or temporary
/// file names), e.g. `arc/commands/{id}/params`. Every backend enforces this one rule, so a key
/// that works on one store works on all of them and cannot escape a directory.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && key.split('/').all(|segment| {
            !segment.is_empty() && segment.len() <= MAX_SEGMENT_LEN && !segment.starts_with('.')
        })
}

/// [`valid_key`] as a regular expression (for API documents; the length is
/// [`MAX_KEY_LEN`] besides).
pub const KEY_PATTERN: &str =
    "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,254})*$";

/// Why a payload call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The key is not a valid payload key (see [`valid_key`]).
    #[error(
        "invalid payload key {0:?}: expected `/`-separated segments of [A-Za-z0-9-_.], none \
         empty or starting with `.`"
    )]
    InvalidKey(String),
    /// Nothing is stored at the key.
    #[error("no payload at {0}")]
    NotFound(String),
    /// A signed URL that is expired, tampered with or for another key or method.
    #[error("invalid or expired payload URL")]
    BadSignature,
    /// The backend cannot be reached.
    #[error("payload store unavailable: {0}")]
    Unavailable(String),
    /// Any other failure.
    #[error("payload store error: {0}")]
    Backend(String),
}

/// Where large payloads live. Keys are paths like `arc/commands/{id}/params`.
#[async_trait::async_trait]
pub trait PayloadStore: Send + Sync {
    /// A request with which a client uploads the payload at `key`, valid for `expires_in`.
    async fn presign_put(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<PresignedRequest, PayloadError>;
    /// A request with which a client downloads the payload at `key`, valid for `expires_in`.
    async fn presign_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<PresignedRequest, PayloadError>;
    /// Size of the payload at `key`, if present.
    async fn size(&self, key: &str) -> Result<Option<u64>, PayloadError>;
    /// Streams the payload at `key`.
    async fn read(&self, key: &str) -> Result<PayloadStream, PayloadError>;
    /// Stores `body` at `key` atomically (readers see all of it or nothing); returns its size.
    async fn write(&self, key: &str, body: PayloadStream) -> Result<u64, PayloadError>;
    /// Removes the payload at `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), PayloadError>;
    /// Answers when the store serves reads and writes (for `/ready`).
    async fn ping(&self) -> Result<(), PayloadError>;
    /// For stores whose presigned URLs the manager itself serves (`/v1/payloads/{key}`): checks
    /// such a URL's signature. Stores with their own URLs (S3, GCS, Azure) refuse every one.
    fn verify_signed(
        &self,
        method: &str,
        key: &str,
        exp: u64,
        sig: &str,
    ) -> Result<(), PayloadError> {
        let _ = (method, key, exp, sig);
        Err(PayloadError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_keys_are_relative_paths_without_dot_segments() {
        let long_segment = "s".repeat(MAX_SEGMENT_LEN);
        let longest = format!(
            "{long_segment}/{long_segment}/{long_segment}/{}/{}",
            "k".repeat(128),
            "j".repeat(127)
        );
        assert_eq!(longest.len(), MAX_KEY_LEN);
        for key in ["arc/commands/cmd_01/params", "a", "A-Z_a.z/0-9", "a.b/c..d", &longest] {
            assert!(valid_key(key), "{key:?}");
        }
        let too_long = format!("{longest}k");
        let too_long_segment = "s".repeat(MAX_SEGMENT_LEN + 1);
        for key in [
            "",
            ".",
            "..",
            "../a",
            "a/..",
            "a/../b",
            "./a",
            ".hidden",
            "a/.tmp-1",
            "/a",
            "a/",
            "a//b",
            "a\\b",
            "a\0b",
            "a b",
            "caf\u{e9}",
            "a?b",
            "a%2F",
            &too_long,
            &too_long_segment,
        ] {
            assert!(!valid_key(key), "{key:?}");
        }
    }
}
