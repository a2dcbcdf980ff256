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
        /// The bytes, canonical standard base64 (params: at most 150,000 bytes; responses:
        /// 12 KiB).
        #[serde(rename = "inlineBase64")]
        #[schema(
            pattern = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$",
            max_length = 200000
        )]
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

/// The container a command runs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandTarget {
    /// Resource id (the container's id in the stack, a DNS label).
    #[schema(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", max_length = 63)]
    pub resource_id: String,
    /// Resource type (`container`).
    pub resource_type: String,
}

/// `POST /v1/commands` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCommandRequest {
    /// The deployment to run it on.
    pub deployment_id: String,
    /// Command name: 1..=256 characters, no `:`.
    #[schema(pattern = "^[^:]{1,256}$")]
    pub command: String,
    /// Parameters.
    pub params: BodySpec,
    /// When it expires if not done (RFC 3339); one already passed creates it expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub deadline: Option<String>,
    /// Same key within 24 h returns the first command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The container; optional when the release has exactly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", max_length = 63)]
    pub target_resource_id: Option<String>,
}

/// Where to upload large parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageUpload {
    /// The upload request.
    pub put_request: PresignedRequest,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// What to do after creating a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NextStep {
    /// Upload the parameters, then call `upload-complete`.
    Upload,
    /// Poll the status.
    Poll,
}

/// `POST /v1/commands` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateCommandResponse {
    /// The command.
    pub command_id: String,
    /// Its state.
    pub state: super::CommandState,
    /// For `next: upload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_upload: Option<StorageUpload>,
    /// Largest inline parameters accepted.
    pub inline_allowed_up_to: u64,
    /// What the caller does next.
    pub next: NextStep,
}

/// `POST /v1/commands/{id}/upload-complete` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadComplete {
    /// Size of the uploaded parameters.
    pub size: u64,
}

/// A receiver's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum CommandResponse {
    /// It worked.
    Success {
        /// The result.
        response: BodySpec,
    },
    /// It failed.
    Error {
        /// Machine-readable code (`UNKNOWN_COMMAND`, `HANDLER_ERROR`, `HANDLER_TIMEOUT`, ...).
        code: String,
        /// Human-readable message.
        message: String,
        /// Extra detail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Object>)]
        details: Option<serde_json::Value>,
    },
}

/// `GET /v1/commands/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandStatusResponse {
    /// The command.
    pub command_id: String,
    /// Its state.
    pub state: super::CommandState,
    /// Delivery attempt (1 for the first).
    pub attempt: u32,
    /// Where it runs.
    pub target: CommandTarget,
    /// The response, once terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<CommandResponse>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

/// `POST /v1/commands/leases` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseRequest {
    /// The deployment.
    pub deployment_id: String,
    /// The receiver's container.
    pub target: CommandTarget,
    /// Most commands to lease (1..=100, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_leases: Option<u32>,
    /// Lease length in seconds (1..=3600, default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600)]
    pub lease_seconds: Option<u64>,
    /// Long poll: wait up to this many seconds for a command (0..=30, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 30)]
    pub wait_seconds: Option<u64>,
}

/// How a receiver answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseHandling {
    /// Largest inline response.
    pub max_inline_bytes: u64,
    /// Presigned URL to PUT the response to (no token needed).
    pub submit_response_url: String,
    /// Where to upload a response larger than `maxInlineBytes`.
    pub storage_upload_request: PresignedRequest,
}

/// What a receiver gets for each leased command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Always `arc.v1`.
    pub protocol: String,
    /// The deployment.
    pub deployment_id: String,
    /// The container.
    pub target: CommandTarget,
    /// The command.
    pub command_id: String,
    /// Delivery attempt.
    pub attempt: u32,
    /// Deadline (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Command name.
    pub command: String,
    /// Parameters.
    pub params: BodySpec,
    /// How to answer.
    pub response_handling: ResponseHandling,
}

/// One leased command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// `lease_<uuid>`.
    pub lease_id: String,
    /// When the lease ends (RFC 3339).
    pub lease_expires_at: String,
    /// The command.
    pub command_id: String,
    /// Delivery attempt.
    pub attempt: u32,
    /// The command itself.
    pub envelope: Envelope,
}

/// `POST /v1/commands/leases` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseResponse {
    /// Leased commands (possibly none).
    pub leases: Vec<Lease>,
}
