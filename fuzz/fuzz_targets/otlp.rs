//! OTLP/HTTP ingest as `POST /v1/traces|logs|metrics` runs it: `Ingestor::ingest`, so the content
//! type, gzip inflation within the body limit, protobuf or OTLP/JSON decoding, the removal of
//! invalid records, the identity stamp, the re-encoding and the recent-logs ring all run.
//!
//! Input: the first byte picks the signal (low two bits), the format (bit 2: JSON) and gzip
//! (bit 3); the rest is the body. The body limit is 1 MiB instead of 16 (the same code, less time
//! per gzip bomb).
//!
//! Invariant: what is queued for forwarding decodes as the signal's protobuf with the number of
//! records counted, every resource stamped with the sender's deployment id.

#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use alien_telemetry::ingest::ATTR_DEPLOYMENT_ID;
use alien_telemetry::{
    DeploymentIdentity, EncodedExport, Ingestor, OtlpRequest, RecentLogs, ShutdownReport, Signal,
    SinkError, SinkStats, TelemetrySink,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

/// Checks each export instead of forwarding it.
#[derive(Debug)]
struct CheckingSink;

#[async_trait::async_trait]
impl TelemetrySink for CheckingSink {
    fn try_enqueue(&self, export: EncodedExport) -> Result<(), SinkError> {
        let mut decoded = OtlpRequest::decode_protobuf(export.signal, &export.payload)
            .expect("a queued export decodes");
        assert_eq!(decoded.record_count(), export.records, "records counted as queued");
        for resource in decoded.resources_mut() {
            let stamped = resource.attributes.iter().filter(|kv| kv.key == ATTR_DEPLOYMENT_ID);
            assert_eq!(stamped.count(), 1, "one deployment id on every resource");
        }
        Ok(())
    }

    fn stats(&self, _signal: Signal) -> SinkStats {
        SinkStats::default()
    }

    async fn shutdown(&self, _timeout: Duration) -> ShutdownReport {
        ShutdownReport::default()
    }
}

const DEPLOYMENT: &str = "dep_fuzz";

static RECENT: LazyLock<Arc<RecentLogs>> = LazyLock::new(|| Arc::new(RecentLogs::new(64, 1 << 20)));

static INGESTOR: LazyLock<Ingestor> = LazyLock::new(|| {
    Ingestor::new(Arc::new(CheckingSink))
        .with_recent_logs(Arc::clone(&RECENT))
        .with_body_limit(1 << 20)
});

static IDENTITY: LazyLock<DeploymentIdentity> = LazyLock::new(|| DeploymentIdentity {
    deployment_id: DEPLOYMENT.into(),
    deployment_name: "fuzz".into(),
    deployment_group_id: "dg_fuzz".into(),
    platform: "local".into(),
    release_id: Some("rel_fuzz".into()),
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let signal = match selector & 3 {
        0 => Signal::Traces,
        1 => Signal::Logs,
        _ => Signal::Metrics,
    };
    let content_type =
        if selector & 4 == 0 { "application/x-protobuf" } else { "application/json" };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if selector & 8 != 0 {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    match INGESTOR.ingest(signal, &headers, Bytes::copy_from_slice(body), &IDENTITY) {
        Ok(response) => {
            if signal == Signal::Logs && response.accepted > 0 {
                let _ = RECENT.recent(DEPLOYMENT, 10);
            }
        }
        Err(err) => {
            let _ = err.otlp_body(&headers);
        }
    }
});
