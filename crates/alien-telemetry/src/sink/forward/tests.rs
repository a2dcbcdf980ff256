use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::*;
use crate::OtlpRequest;
use crate::ingest::PayloadFormat;
use crate::sink::build_sink;
use crate::test_sink::OtlpTestSink;

const WAIT: Duration = Duration::from_secs(10);

fn tagged_resource(tag: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "tag".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(tag.into())) }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn spans(tag: &str, n: usize) -> EncodedExport {
    let request = OtlpRequest::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: tagged_resource(tag),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    Span {
                        name: format!("{tag}-span"),
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        ..Default::default()
                    };
                    n
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    EncodedExport { signal: Signal::Traces, records: n as u64, payload: request.encode_protobuf() }
}

fn logs(tag: &str, n: usize) -> EncodedExport {
    let request = OtlpRequest::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: tagged_resource(tag),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); n],
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    EncodedExport { signal: Signal::Logs, records: n as u64, payload: request.encode_protobuf() }
}

fn config(sink: &OtlpTestSink) -> ForwarderConfig {
    let mut config = ForwarderConfig::new(sink.endpoint());
    config.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        max_retry_after: Duration::from_secs(5),
    };
    config
}

/// Polls `done` until it holds, failing the test after [`WAIT`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn received(sink: &OtlpTestSink, signal: Signal, records: u64) {
    let result = sink.wait_for(WAIT, |c| c.records(signal) >= records).await;
    let counts =
        result.unwrap_or_else(|c| panic!("timed out waiting for {records} {signal}: {c:?}"));
    assert_eq!(counts.records(signal), records, "more {signal} than sent");
}

#[tokio::test]
async fn requests_are_merged_into_one_gzip_protobuf_post_with_the_configured_headers() {
    let sink = OtlpTestSink::start().await.unwrap();
    let mut config = config(&sink);
    config.headers = header_map([("x-api-key", "s3cret")]).unwrap();
    let forwarder = OtlpHttpSink::start(config).unwrap();
    for i in 0..5 {
        forwarder.try_enqueue(spans(&format!("t{i}"), 2)).unwrap();
    }
    forwarder.try_enqueue(logs("l", 3)).unwrap();
    received(&sink, Signal::Traces, 10).await;
    received(&sink, Signal::Logs, 3).await;

    let requests = sink.requests();
    let traces: Vec<_> = requests.iter().filter(|r| r.signal == Signal::Traces).collect();
    assert_eq!(traces.len(), 1, "five ingested requests, one forwarded request");
    let r = traces[0];
    assert!(r.gzip);
    assert_eq!(r.format, PayloadFormat::Protobuf);
    assert_eq!(r.headers["x-api-key"], "s3cret");
    let OtlpRequest::Traces(t) = &r.request else { panic!("not traces") };
    assert_eq!(t.resource_spans.len(), 5, "each ingested request keeps its resource entry");
    assert!(requests.iter().any(|r| r.signal == Signal::Logs));

    eventually("forwarded counts", || forwarder.stats(Signal::Traces).forwarded == 10).await;
    eventually("released queue", || forwarder.stats(Signal::Traces).queued_bytes == 0).await;
    let stats = forwarder.stats(Signal::Traces);
    assert_eq!((stats.enqueued, stats.dropped, stats.retried, stats.requests), (10, 0, 0, 1));
}

#[tokio::test]
async fn compression_none_sends_plain_protobuf() {
    let sink = OtlpTestSink::start().await.unwrap();
    let mut config = config(&sink);
    config.gzip = false;
    let forwarder = OtlpHttpSink::start(config).unwrap();
    forwarder.try_enqueue(spans("a", 1)).unwrap();
    received(&sink, Signal::Traces, 1).await;
    let r = &sink.requests()[0];
    assert!(!r.gzip);
    assert!(r.headers.get(CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn batches_are_cut_at_the_byte_limit() {
    let sink = OtlpTestSink::start().await.unwrap();
    let mut config = config(&sink);
    let one = spans("x", 4);
    config.batch_max_bytes = one.payload.len() * 3;
    let max = config.batch_max_bytes;
    let forwarder = OtlpHttpSink::start(config).unwrap();
    for _ in 0..7 {
        forwarder.try_enqueue(one.clone()).unwrap();
    }
    received(&sink, Signal::Traces, 28).await;
    let sizes: Vec<usize> =
        sink.requests().iter().map(|r| r.request.encode_protobuf().len()).collect();
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s <= max), "{sizes:?}");
}

#[tokio::test]
async fn every_record_arrives_once_after_the_backend_comes_back() {
    let sink = OtlpTestSink::start().await.unwrap();
    let forwarder = OtlpHttpSink::start(config(&sink)).unwrap();
    sink.down().await;
    for i in 0..20 {
        forwarder.try_enqueue(spans(&i.to_string(), 5)).unwrap();
    }
    eventually("connection failures", || forwarder.stats(Signal::Traces).retried >= 10).await;
    sink.up().await.unwrap();
    received(&sink, Signal::Traces, 100).await;
    eventually("forwarded counts", || forwarder.stats(Signal::Traces).forwarded == 100).await;
    let stats = forwarder.stats(Signal::Traces);
    assert_eq!((stats.dropped, stats.queued_bytes), (0, 0));
    assert_eq!(sink.counts().spans, 100);
}

#[tokio::test]
async fn service_unavailable_is_retried_until_accepted() {
    let sink = OtlpTestSink::start().await.unwrap();
    let forwarder = OtlpHttpSink::start(config(&sink)).unwrap();
    sink.fail_with(503);
    forwarder.try_enqueue(spans("a", 3)).unwrap();
    sink.wait_for(WAIT, |c| c.refused >= 2).await.unwrap();
    sink.succeed();
    received(&sink, Signal::Traces, 3).await;
    eventually("forwarded counts", || forwarder.stats(Signal::Traces).forwarded == 3).await;
    let stats = forwarder.stats(Signal::Traces);
    assert!(stats.retried >= 6, "{stats:?}");
    assert_eq!(stats.dropped, 0);
}

#[tokio::test]
async fn retry_after_of_a_429_is_honoured() {
    let sink = OtlpTestSink::start().await.unwrap();
    let forwarder = OtlpHttpSink::start(config(&sink)).unwrap();
    sink.fail_with_retry_after(429, 1);
    forwarder.try_enqueue(spans("a", 1)).unwrap();
    sink.wait_for(WAIT, |c| c.refused >= 1).await.unwrap();
    sink.succeed();
    received(&sink, Signal::Traces, 1).await;
    let attempts = sink.attempts();
    assert_eq!(attempts.iter().map(|a| a.status).collect::<Vec<_>>(), [429, 200]);
    // The backoff alone would retry within 50 ms.
    let gap = attempts[1].at - attempts[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
}

#[tokio::test]
async fn a_permanent_refusal_is_dropped_and_counted_without_retry() {
    let sink = OtlpTestSink::start().await.unwrap();
    let forwarder = OtlpHttpSink::start(config(&sink)).unwrap();
    sink.fail_with(400);
    forwarder.try_enqueue(spans("a", 4)).unwrap();
    eventually("dropped counts", || forwarder.stats(Signal::Traces).dropped == 4).await;
    // The next batch still goes out, so the refusal did not stop the lane.
    sink.succeed();
    forwarder.try_enqueue(spans("b", 1)).unwrap();
    received(&sink, Signal::Traces, 1).await;
    assert_eq!(sink.attempts().len(), 2);
    assert_eq!(forwarder.stats(Signal::Traces).retried, 0);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_memory_stays_bounded() {
    let sink = OtlpTestSink::start().await.unwrap();
    let mut config = config(&sink);
    config.queue_bytes = 10_000;
    let forwarder = OtlpHttpSink::start(config).unwrap();
    sink.down().await;
    let one = spans("x", 5);
    let mut accepted = 0u64;
    let err = loop {
        match forwarder.try_enqueue(one.clone()) {
            Ok(()) => accepted += 5,
            Err(e) => break e,
        }
        assert!(accepted < 10_000, "the queue never filled");
    };
    let SinkError::Full { signal, retry_after } = err else { panic!("{err:?}") };
    assert_eq!(signal, Signal::Traces);
    assert!(retry_after >= Duration::from_secs(1));
    // The budget is shared: other signals are refused too.
    assert!(matches!(forwarder.try_enqueue(logs("l", 200)), Err(SinkError::Full { .. })));
    let held: u64 = Signal::ALL.iter().map(|s| forwarder.stats(*s).queued_bytes).sum();
    assert!(held <= 10_000, "{held}");

    sink.up().await.unwrap();
    received(&sink, Signal::Traces, accepted).await;
    eventually("released queue", || forwarder.stats(Signal::Traces).queued_bytes == 0).await;
    forwarder.try_enqueue(one).unwrap();
}

#[tokio::test]
async fn shutdown_flushes_at_once_and_then_refuses() {
    let sink = OtlpTestSink::start().await.unwrap();
    let mut config = config(&sink);
    config.batch_linger = Duration::from_secs(60);
    let forwarder = OtlpHttpSink::start(config).unwrap();
    forwarder.try_enqueue(spans("a", 2)).unwrap();
    forwarder.try_enqueue(logs("b", 3)).unwrap();
    let report = forwarder.shutdown(WAIT).await;
    assert_eq!(report, ShutdownReport { dropped: 0, timed_out: false });
    let counts = sink.counts();
    assert_eq!((counts.spans, counts.log_records), (2, 3));
    assert_eq!(
        forwarder.try_enqueue(spans("c", 1)),
        Err(SinkError::Closed { signal: Signal::Traces })
    );
}

#[tokio::test]
async fn shutdown_gives_up_after_its_timeout_and_counts_the_loss() {
    let sink = OtlpTestSink::start().await.unwrap();
    let forwarder = OtlpHttpSink::start(config(&sink)).unwrap();
    sink.down().await;
    for i in 0..3 {
        forwarder.try_enqueue(spans(&i.to_string(), 2)).unwrap();
    }
    let started = Instant::now();
    let report = forwarder.shutdown(Duration::from_millis(300)).await;
    // It ends although the sink never comes back (a generous bound: 300 ms on a quiet machine).
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(report, ShutdownReport { dropped: 6, timed_out: true });
    let stats = forwarder.stats(Signal::Traces);
    assert_eq!((stats.dropped, stats.queued_bytes, stats.forwarded), (6, 0, 0));
}

#[tokio::test]
async fn configuration_builds_the_right_sink() {
    let mut telemetry = crate::TelemetrySettings::default();
    assert!(ForwarderConfig::from_settings(&telemetry).unwrap().is_none());
    let discard = build_sink(&telemetry).unwrap();
    discard.try_enqueue(spans("a", 2)).unwrap();
    assert_eq!(discard.stats(Signal::Traces).discarded, 2);

    telemetry.otlp_endpoint = Some("http://127.0.0.1:4318/".into());
    telemetry.headers = BTreeMap::from([("Authorization".into(), "Bearer x".into())]);
    telemetry.gzip = false;
    telemetry.timeout_secs = 3;
    telemetry.queue_bytes = 1234;
    let forwarder = ForwarderConfig::from_settings(&telemetry).unwrap().unwrap();
    assert!(!forwarder.gzip);
    assert_eq!(forwarder.timeout, Duration::from_secs(3));
    assert_eq!(forwarder.queue_bytes, 1234);
    assert!(forwarder.headers["authorization"].is_sensitive());
    let sink = OtlpHttpSink::start(forwarder).unwrap();
    assert_eq!(sink.shared.lanes[Signal::Metrics.index()].url, "http://127.0.0.1:4318/v1/metrics");

    assert!(base_url("https://otlp.example.com/").is_ok(), "https is forwarded over TLS");
    for bad in ["ftp://x", "not a url", "http://x/?q=1"] {
        telemetry.otlp_endpoint = Some(bad.into());
        let err = build_sink(&telemetry).unwrap_err();
        assert!(matches!(err, SinkBuildError::InvalidEndpoint { .. }), "{bad}: {err}");
    }
    telemetry.otlp_endpoint = Some("http://127.0.0.1:4318".into());
    telemetry.headers = BTreeMap::from([("bad header".into(), "v".into())]);
    let err = build_sink(&telemetry).unwrap_err();
    assert!(err.to_string().contains("bad header"), "{err}");
    telemetry.headers = BTreeMap::from([("x-key".into(), "line\nbreak".into())]);
    let err = build_sink(&telemetry).unwrap_err();
    assert!(!err.to_string().contains("line"), "the value must not be shown: {err}");
}

#[test]
fn backend_partial_success_is_read() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
    let body = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 4,
            error_message: "x".into(),
        }),
    }
    .encode_to_vec();
    assert_eq!(rejected_in(Signal::Traces, &body), 4);
    assert_eq!(rejected_in(Signal::Traces, b""), 0);
    assert_eq!(rejected_in(Signal::Logs, b"{\"partialSuccess\":{}}"), 0);
}
