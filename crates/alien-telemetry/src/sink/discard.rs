//! The sink used without an OTLP endpoint: counts and drops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{EncodedExport, ShutdownReport, SinkError, SinkStats, TelemetrySink};
use crate::{Signal, stats};

/// Counts every export and drops it (metric `telemetry_discarded_total`).
#[derive(Debug, Default)]
pub struct DiscardSink {
    records: [AtomicU64; 3],
    closed: AtomicBool,
}

#[async_trait]
impl TelemetrySink for DiscardSink {
    fn try_enqueue(&self, export: EncodedExport) -> Result<(), SinkError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SinkError::Closed { signal: export.signal });
        }
        self.records[export.signal.index()].fetch_add(export.records, Ordering::Relaxed);
        stats::discarded(export.signal, export.records);
        Ok(())
    }

    fn stats(&self, signal: Signal) -> SinkStats {
        let n = self.records[signal.index()].load(Ordering::Relaxed);
        SinkStats { enqueued: n, discarded: n, ..SinkStats::default() }
    }

    async fn shutdown(&self, _timeout: Duration) -> ShutdownReport {
        self.closed.store(true, Ordering::Release);
        ShutdownReport::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn counts_per_signal_and_refuses_after_shutdown() {
        let sink = DiscardSink::default();
        let export = |signal, records| EncodedExport { signal, records, payload: Bytes::new() };
        sink.try_enqueue(export(Signal::Logs, 3)).unwrap();
        sink.try_enqueue(export(Signal::Logs, 4)).unwrap();
        sink.try_enqueue(export(Signal::Traces, 1)).unwrap();
        assert_eq!(sink.stats(Signal::Logs).discarded, 7);
        assert_eq!(sink.stats(Signal::Traces).discarded, 1);
        assert_eq!(sink.stats(Signal::Metrics).discarded, 0);
        sink.shutdown(Duration::from_secs(1)).await;
        assert_eq!(
            sink.try_enqueue(export(Signal::Logs, 1)),
            Err(SinkError::Closed { signal: Signal::Logs })
        );
    }
}
