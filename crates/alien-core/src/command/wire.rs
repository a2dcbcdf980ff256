//! The `arc.v1` wire types (`spec/commands.md`), camelCase as the public Alien format writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The protocol name.
pub const PROTOCOL: &str = "arc.v1";

/// An HTTP request a client makes itself (to upload or download a payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresignedRequest {
    /// How to make the request.
    pub backend: HttpBackend,
    /// When the URL stops working (RFC 3339).
    pub expiration: String,
    /// What it does.
    pub operation: PresignedOperation,
}

/// The HTTP part of a [`PresignedRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackend {
    /// Always `http`.
    #[serde(rename = "type")]
    pub backend_type: String,
    /// The URL.
    pub url: String,
    /// `PUT` or `GET`.
    pub method: String,
    /// Headers to send.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Upload or download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PresignedOperation {
    /// Upload.
    Put,
    /// Download.
    Get,
}

/// Command parameters or a response body: inline, or in the payload store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum BodySpec {
    /// Carried in the JSON, base64.
    Inline {
        /// The bytes, standard base64.
        #[serde(rename = "inlineBase64")]
        inline_base64: String,
    },
    /// In the payload store.
    Storage {
        /// Size in bytes.
        size: u64,
        /// Where to download it (in status and envelopes).
        #[serde(rename = "storageGetRequest", default, skip_serializing_if = "Option::is_none")]
        storage_get_request: Option<PresignedRequest>,
        /// Set by a responder that uploaded the body with the given PUT request.
        #[serde(rename = "storagePutUsed", default, skip_serializing_if = "Option::is_none")]
        storage_put_used: Option<bool>,
    },
}
