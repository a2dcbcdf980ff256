//! Where ingested telemetry goes: the [`TelemetrySink`] seam, [`DiscardSink`] (no endpoint) and
//! [`OtlpHttpSink`] (the forwarder).

mod discard;
mod forward;
mod retry;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::TelemetrySettings;
use async_trait::async_trait;
use bytes::Bytes;

pub use discard::DiscardSink;
pub use forward::{ForwarderConfig, OtlpHttpSink};
pub(crate) use forward::{base_url, header_map};
pub use retry::{RetryPolicy, is_retryable, parse_retry_after};

use crate::Signal;

/// One ingested request, ready to forward: a protobuf `Export*ServiceRequest`. Encoded requests
/// of a signal can be concatenated into one valid request (protobuf appends repeated fields),
/// which is how the forwarder batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedExport {
    /// The signal.
    pub signal: Signal,
    /// Records (spans, log records, data points) in the request.
    pub records: u64,
    /// The protobuf encoding.
    pub payload: Bytes,
}

/// Why a sink refused an export; it never waits for room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The queue has no room; ingest answers 429 with `Retry-After`.
    #[error("the {signal} forward queue is full; retry in {}s", retry_after.as_secs())]
    Full {
        /// The signal.
        signal: Signal,
        /// A suggested delay, in whole seconds (at least one).
        retry_after: Duration,
    },
    /// The sink is shutting down.
    #[error("the {signal} forwarder is shut down")]
    Closed {
        /// The signal.
        signal: Signal,
    },
}

/// Figures of one signal of a sink, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Bytes held (waiting or in flight).
    pub queued_bytes: u64,
    /// Records accepted by `try_enqueue`.
    pub enqueued: u64,
    /// Records the backend acknowledged.
    pub forwarded: u64,
    /// Records lost (refused by the backend for good, or abandoned at shutdown).
    pub dropped: u64,
    /// Records re-sent after retryable failures (per retry).
    pub retried: u64,
    /// Records counted and dropped because there is no backend.
    pub discarded: u64,
    /// HTTP requests sent to the backend (attempts, retries included).
    pub requests: u64,
}

/// What shutdown achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Records still queued when the timeout ended, and so lost.
    pub dropped: u64,
    /// Whether the timeout ended before the queue was flushed.
    pub timed_out: bool,
}

/// The destination of ingested telemetry. Object-safe: the server holds an
/// `Arc<dyn TelemetrySink>`.
#[async_trait]
pub trait TelemetrySink: Debug + Send + Sync + 'static {
    /// Takes an export or refuses at once; never blocks and never waits for the network.
    fn try_enqueue(&self, export: EncodedExport) -> Result<(), SinkError>;

    /// Figures of `signal`.
    fn stats(&self, signal: Signal) -> SinkStats;

    /// Refuses new exports, delivers what is queued within `timeout`, then stops; records left
    /// when the timeout ends are dropped and counted.
    async fn shutdown(&self, timeout: Duration) -> ShutdownReport;
}

/// Why the sink could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum SinkBuildError {
    /// `otlp-endpoint` is not a usable http URL.
    #[error("telemetry.otlp-endpoint {endpoint:?} is invalid: {reason}")]
    InvalidEndpoint {
        /// The configured value.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// A `headers` entry is not a valid HTTP header.
    #[error("telemetry.headers: {name:?} is not a valid HTTP header: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// What is wrong (the value is never shown).
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("telemetry forwarder HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The sink the configuration asks for: [`OtlpHttpSink`] with an `otlp-endpoint`, otherwise
/// [`DiscardSink`]. Must run inside a Tokio runtime (the forwarder spawns its workers).
pub fn build_sink(config: &TelemetrySettings) -> Result<Arc<dyn TelemetrySink>, SinkBuildError> {
    Ok(match ForwarderConfig::from_settings(config)? {
        Some(forwarder) => Arc::new(OtlpHttpSink::start(forwarder)?),
        None => Arc::new(DiscardSink::default()),
    })
}
