//! OTLP/HTTP ingest: decode a deployment's request, stamp its identity, refuse invalid records,
//! queue it for forwarding and answer with the OTLP response.
//!
//! Framework-neutral: [`Ingestor::ingest`] takes the request headers and body and returns the
//! response body and content type, or an [`IngestError`] that knows its HTTP status. Decoding is
//! CPU work (about 1 ms per 100 KB); it never waits on the network.

mod body;
mod enrich;
pub(crate) mod response;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

pub use body::PayloadFormat;
pub use enrich::{
    ATTR_DEPLOYMENT_GROUP_ID, ATTR_DEPLOYMENT_ID, ATTR_DEPLOYMENT_NAME, ATTR_PLATFORM,
    ATTR_RELEASE_ID, DeploymentIdentity, RESERVED_KEYS, stamp_identity,
};
pub use validate::{Rejection, remove_invalid};

use crate::otlp::DecodeError;
use crate::sink::{EncodedExport, SinkError, TelemetrySink};
use crate::{OtlpRequest, RecentLogs, Signal, stats};

/// Largest accepted body once decompressed (and largest accepted compressed body).
pub const MAX_DECOMPRESSED_BYTES: usize = 16 * 1024 * 1024;

/// Why an ingest request was refused; [`IngestError::status`] is the HTTP status to answer.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// `Content-Type` is neither `application/x-protobuf` nor `application/json` (415).
    #[error("unsupported content type {}; OTLP/HTTP takes application/x-protobuf or application/json", content_type.as_deref().unwrap_or("(none)"))]
    UnsupportedMediaType {
        /// The content type the request had, if any.
        content_type: Option<String>,
    },
    /// `Content-Encoding` is neither gzip nor identity (415).
    #[error("unsupported content encoding {encoding:?}; send gzip or no encoding")]
    UnsupportedEncoding {
        /// The encoding the request named.
        encoding: String,
    },
    /// The body, compressed or decompressed, exceeds the limit (413).
    #[error("request body exceeds {limit} bytes once decompressed; send smaller batches")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body claims gzip but does not inflate (400).
    #[error("invalid gzip body: {0}")]
    BadGzip(String),
    /// The body is not a valid OTLP message of the signal (400).
    #[error(transparent)]
    Malformed(#[from] DecodeError),
    /// The forward queue is full; the client should retry later (429 with `Retry-After`).
    #[error("the {signal} forward queue is full; retry in {}s", retry_after.as_secs())]
    Throttled {
        /// The signal whose queue is full.
        signal: Signal,
        /// When to retry (whole seconds, at least one).
        retry_after: Duration,
    },
    /// The forwarder is shutting down (503).
    #[error("the {signal} forwarder is shutting down")]
    Unavailable {
        /// The signal refused.
        signal: Signal,
    },
}

impl IngestError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::UnsupportedMediaType { .. } | IngestError::UnsupportedEncoding { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BadGzip(_) | IngestError::Malformed(_) => StatusCode::BAD_REQUEST,
            IngestError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `Retry-After` to send, in whole seconds (only for 429 and 503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::Throttled { retry_after, .. } => Some(*retry_after),
            IngestError::Unavailable { .. } => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    /// What the sender can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            IngestError::UnsupportedMediaType { .. } => {
                "configure the OTLP exporter for http/protobuf or http/json"
            }
            IngestError::UnsupportedEncoding { .. } => {
                "set the exporter's compression to gzip or none"
            }
            IngestError::TooLarge { .. } => {
                "lower the exporter's batch size (max export batch size)"
            }
            IngestError::BadGzip(_) | IngestError::Malformed(_) => {
                "send an Export*ServiceRequest as the OTLP specification encodes it"
            }
            IngestError::Throttled { .. } | IngestError::Unavailable { .. } => {
                "retry after the Retry-After delay; OTLP exporters do this on their own"
            }
        }
    }

    /// The OTLP error body (`google.rpc.Status`) in the request's format (JSON when the request's
    /// own format is unusable), and its content type.
    pub fn otlp_body(&self, request_headers: &HeaderMap) -> (Bytes, &'static str) {
        let format = PayloadFormat::from_headers(request_headers).unwrap_or(PayloadFormat::Json);
        // gRPC codes: INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE.
        let code = match self.status() {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE => 8,
            StatusCode::SERVICE_UNAVAILABLE => 14,
            _ => 3,
        };
        (response::status_body(format, code, &self.to_string()), format.content_type())
    }
}

/// A successful ingest: the response to send (status 200) and what happened to the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestResponse {
    /// The `Export*ServiceResponse`, in the request's format.
    pub body: Bytes,
    /// Its content type.
    pub content_type: &'static str,
    /// Records queued for forwarding.
    pub accepted: u64,
    /// Records refused as invalid (reported in `partialSuccess`).
    pub rejected: u64,
}

/// Decodes an OTLP/HTTP request body of `signal` (content type, gzip, size limit, protobuf or
/// JSON), without enrichment. Ingest uses it, and so does the test sink.
pub fn decode_request(
    signal: Signal,
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
) -> Result<(OtlpRequest, PayloadFormat), IngestError> {
    let format = PayloadFormat::from_headers(headers)?;
    let encoding = body::ContentEncoding::from_headers(headers)?;
    let raw = body::decoded_body(body, encoding, limit)?;
    let request = match format {
        PayloadFormat::Protobuf => OtlpRequest::decode_protobuf(signal, &raw)?,
        PayloadFormat::Json => OtlpRequest::decode_json(signal, &raw)?,
    };
    Ok((request, format))
}

/// The ingest pipeline: decode, validate, stamp identity, queue, remember recent logs.
#[derive(Debug, Clone)]
pub struct Ingestor {
    sink: Arc<dyn TelemetrySink>,
    recent: Option<Arc<RecentLogs>>,
    limit: usize,
}

impl Ingestor {
    /// An ingestor that queues into `sink`.
    pub fn new(sink: Arc<dyn TelemetrySink>) -> Self {
        Self { sink, recent: None, limit: MAX_DECOMPRESSED_BYTES }
    }

    /// Also keeps the last log records of each deployment in `recent`.
    pub fn with_recent_logs(mut self, recent: Arc<RecentLogs>) -> Self {
        self.recent = Some(recent);
        self
    }

    /// Changes the body limit (default [`MAX_DECOMPRESSED_BYTES`]).
    pub fn with_body_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The sink this ingestor queues into.
    pub fn sink(&self) -> &Arc<dyn TelemetrySink> {
        &self.sink
    }

    /// Ingests one OTLP/HTTP request of `signal` sent by `identity`.
    ///
    /// Nothing is queued unless the whole request is: a full queue refuses the request (429), and
    /// the client's retry sends it again.
    pub fn ingest(
        &self,
        signal: Signal,
        headers: &HeaderMap,
        body: Bytes,
        identity: &DeploymentIdentity,
    ) -> Result<IngestResponse, IngestError> {
        let (mut request, format) = decode_request(signal, headers, body, self.limit)?;
        let rejection = remove_invalid(&mut request);
        stats::rejected(signal, rejection.count);
        stamp_identity(&mut request, identity);
        let accepted = request.record_count();
        if accepted > 0 {
            let export =
                EncodedExport { signal, records: accepted, payload: request.encode_protobuf() };
            match self.sink.try_enqueue(export) {
                Ok(()) => {}
                Err(SinkError::Full { retry_after, .. }) => {
                    stats::throttled(signal, accepted);
                    return Err(IngestError::Throttled { signal, retry_after });
                }
                Err(SinkError::Closed { .. }) => return Err(IngestError::Unavailable { signal }),
            }
            stats::received(signal, accepted);
            if let (Some(recent), OtlpRequest::Logs(logs)) = (&self.recent, &request) {
                recent.record(&identity.deployment_id, logs);
            }
        }
        Ok(IngestResponse {
            body: response::export_response(signal, format, rejection.count, &rejection.message),
            content_type: format.content_type(),
            accepted,
            rejected: rejection.count,
        })
    }
}

#[cfg(test)]
mod tests;
