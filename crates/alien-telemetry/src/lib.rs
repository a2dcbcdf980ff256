//! OpenTelemetry for alien-manager: OTLP/HTTP ingest from deployments, forwarding to the
//! operator's backend, a recent-logs ring per deployment, and the manager's own traces and metrics.
//!
//! Owns the OTLP decoding and the identity enrichment ([`ingest`]: every resource is stamped with
//! the sending deployment's `alien.*` attributes, so one deployment cannot pose as another), the
//! [`TelemetrySink`] seam with its forwarder ([`OtlpHttpSink`]: bounded byte queues, batching,
//! retries, 429 backpressure instead of memory growth) and [`DiscardSink`], the [`RecentLogs`]
//! ring, and the manager's OpenTelemetry SDK setup ([`selfobs`]). It never authenticates callers,
//! never touches the database and never blocks ingest on the network: the server authenticates
//! the deployment token, builds a [`DeploymentIdentity`] and calls [`Ingestor::ingest`]; the
//! binary builds the sink from [`TelemetrySettings`] (its `[telemetry]` section) with [`build_sink`].
//! With the `test-sink` feature, [`test_sink`] provides a real OTLP/HTTP receiver for tests.

pub mod ingest;
pub mod otlp;
pub mod recent;
pub mod selfobs;
pub mod settings;
pub mod signal;
pub mod sink;
pub mod stats;
#[cfg(feature = "test-sink")]
pub mod test_sink;

pub use ingest::{
    DeploymentIdentity, IngestError, IngestResponse, Ingestor, MAX_DECOMPRESSED_BYTES,
    PayloadFormat,
};
pub use otlp::OtlpRequest;
pub use recent::{RecentLogRecord, RecentLogs, RecentLogsPage};
pub use selfobs::{OtelRecorder, SelfTelemetry, SelfTelemetryError, init_self_telemetry};
pub use settings::TelemetrySettings;
pub use signal::Signal;
pub use sink::{
    DiscardSink, EncodedExport, ForwarderConfig, OtlpHttpSink, RetryPolicy, ShutdownReport,
    SinkBuildError, SinkError, SinkStats, TelemetrySink, build_sink,
};
