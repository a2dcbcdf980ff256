//! The telemetry pipeline's metrics, named once. All record counts are in records (spans, log
//! records, data points), labelled `signal`; they go through the `metrics` facade, so whichever
//! recorder the binary installs (Prometheus on `/metrics`) exposes them.

use crate::Signal;

/// Records accepted at ingest (decoded, enriched and queued).
pub const RECEIVED_TOTAL: &str = "telemetry_received_total";
/// Records the backend acknowledged.
pub const FORWARDED_TOTAL: &str = "telemetry_forwarded_total";
/// Records lost: refused by the backend for good, or still queued when shutdown ran out of time.
pub const DROPPED_TOTAL: &str = "telemetry_dropped_total";
/// Records sent again after a retryable failure (one count per record per retry).
pub const RETRIED_TOTAL: &str = "telemetry_retried_total";
/// Records refused at ingest as invalid (reported to the client as `partialSuccess`).
pub const REJECTED_TOTAL: &str = "telemetry_rejected_total";
/// Records refused at ingest with 429 because the forward queue was full.
pub const THROTTLED_TOTAL: &str = "telemetry_throttled_total";
/// Records counted and dropped because no OTLP endpoint is configured.
pub const DISCARDED_TOTAL: &str = "telemetry_discarded_total";
/// Bytes held by the forward queue (waiting and in flight).
pub const QUEUE_BYTES: &str = "telemetry_queue_bytes";

fn count(name: &'static str, signal: Signal, records: u64) {
    if records > 0 {
        metrics::counter!(name, "signal" => signal.as_str()).increment(records);
    }
}

/// Counts records accepted at ingest.
pub fn received(signal: Signal, records: u64) {
    count(RECEIVED_TOTAL, signal, records);
}

/// Counts records the backend acknowledged.
pub fn forwarded(signal: Signal, records: u64) {
    count(FORWARDED_TOTAL, signal, records);
}

/// Counts records lost.
pub fn dropped(signal: Signal, records: u64) {
    count(DROPPED_TOTAL, signal, records);
}

/// Counts records about to be sent again.
pub fn retried(signal: Signal, records: u64) {
    count(RETRIED_TOTAL, signal, records);
}

/// Counts records rejected as invalid at ingest.
pub fn rejected(signal: Signal, records: u64) {
    count(REJECTED_TOTAL, signal, records);
}

/// Counts records refused with 429 at ingest.
pub fn throttled(signal: Signal, records: u64) {
    count(THROTTLED_TOTAL, signal, records);
}

/// Counts records dropped for want of an endpoint.
pub fn discarded(signal: Signal, records: u64) {
    count(DISCARDED_TOTAL, signal, records);
}

/// Sets the queue gauge of a signal.
pub fn queue_bytes(signal: Signal, bytes: usize) {
    metrics::gauge!(QUEUE_BYTES, "signal" => signal.as_str()).set(bytes as f64);
}
