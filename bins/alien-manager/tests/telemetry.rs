//! OTLP ingest and forwarding against the real binary, with the project's OTLP test sink as the
//! operator's backend: identity stamping, forwarded headers, bad input, a sink that is down for
//! 30 s, a full queue (429 + Retry-After, bounded memory), recent logs, the manager's own spans,
//! and (feature `peer-tests`) the OpenTelemetry Python SDK as the client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::Write as _;
use std::time::Duration;

use alien_telemetry::test_sink::OtlpTestSink;
use alien_telemetry::{OtlpRequest, Signal};
use common::Manager;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use reqwest::Method;
use serde_json::json;

const PROTOBUF: &str = "application/x-protobuf";

fn config(endpoint: &str, extra: &str) -> String {
    format!(
        "[telemetry]\notlp-endpoint = \"{endpoint}\"\nself = false\n{extra}\n[telemetry.headers]\nx-tenant = \"acme\"\n"
    )
}

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..Default::default()
    }
}

/// `n` spans of service `svc`, whose resource claims to be deployment `dep_spoofed`.
fn spans(n: usize, seed: u8) -> Vec<u8> {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![seed.max(1); 16],
            span_id: [(i as u64 + 1).to_be_bytes()].concat(),
            name: format!("op-{i}"),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attr("service.name", "svc"),
                    attr("alien.deployment.id", "dep_spoofed"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn logs(bodies: &[&str]) -> Vec<u8> {
    let records = bodies
        .iter()
        .map(|b| LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            severity_text: "INFO".into(),
            body: Some(AnyValue { value: Some(any_value::Value::StringValue((*b).to_owned())) }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![attr("service.name", "svc")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// POSTs an OTLP body; the status and the `Retry-After` header.
async fn export(
    manager: &Manager,
    path: &str,
    token: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, Option<String>) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", manager.base))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    let response = request.send().await.unwrap();
    let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry)
}

/// A group and a deployment in it: (deployment id, group token, deployment token).
async fn deployment(manager: &Manager, name: &str) -> (String, String, String) {
    let (group, group_token) = manager.group(name).await;
    let (dep, token) = manager.deployment(&group, name).await;
    (dep, group_token, token)
}

fn resource_attrs(request: &OtlpRequest) -> Vec<Vec<(String, String)>> {
    let resources: Vec<Option<&Resource>> = match request {
        OtlpRequest::Traces(t) => t.resource_spans.iter().map(|r| r.resource.as_ref()).collect(),
        OtlpRequest::Logs(l) => l.resource_logs.iter().map(|r| r.resource.as_ref()).collect(),
        OtlpRequest::Metrics(m) => m.resource_metrics.iter().map(|r| r.resource.as_ref()).collect(),
    };
    resources
        .into_iter()
        .map(|r| {
            r.map(|r| {
                r.attributes
                    .iter()
                    .map(|kv| {
                        let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(any_value::Value::StringValue(s)) => s.clone(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), value)
                    })
                    .collect()
            })
            .unwrap_or_default()
        })
        .collect()
}

/// Every resource the sink received carries the deployment's identity, once per key.
fn assert_stamped(sink: &OtlpTestSink, dep: &str, name: &str) {
    let requests = sink.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(
            request.headers.get("x-tenant").map(|v| v.to_str().unwrap()),
            Some("acme"),
            "configured headers are forwarded"
        );
        for attrs in resource_attrs(&request.request) {
            let get = |k: &str| {
                attrs.iter().filter(|(key, _)| key == k).map(|(_, v)| v.clone()).collect::<Vec<_>>()
            };
            assert_eq!(get("alien.deployment.id"), vec![dep.to_owned()], "{attrs:?}");
            assert_eq!(get("alien.deployment.name"), vec![name.to_owned()]);
            assert_eq!(get("alien.platform"), vec!["local".to_owned()]);
            assert_eq!(get("alien.deployment_group.id").len(), 1);
            assert_eq!(
                get("service.name"),
                vec!["svc".to_owned()],
                "the workload's own attributes stay"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stamps_identity_and_refuses_bad_input_and_wrong_tokens() {
    let sink = OtlpTestSink::start().await.unwrap();
    let manager = Manager::start_configured(&config(&sink.endpoint(), "")).await;
    let (dep, group_token, token) = deployment(&manager, "web").await;
    // A spoofed alien.deployment.id is overwritten; gzip and plain both work.
    assert_eq!(export(&manager, "/v1/traces", &token, PROTOBUF, None, spans(5, 1)).await.0, 200);
    assert_eq!(
        export(&manager, "/v1/traces", &token, PROTOBUF, Some("gzip"), gzip(&spans(7, 2))).await.0,
        200
    );
    // OTLP/JSON as the specification encodes it (hex ids, enums as numbers).
    let json_body = json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]}, "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "j", "kind": 2, "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]});
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", manager.base))
        .bearer_auth(&token)
        .json(&json_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let counts = sink.wait_for(Duration::from_secs(20), |c| c.spans >= 13).await.unwrap();
    assert_eq!(counts.spans, 13);
    assert_stamped(&sink, &dep, "web");

    // Bad input: each answered with its status, nothing more forwarded.
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    // (path, content type, content encoding, body, expected status)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case<'_>> = vec![
        ("/v1/traces", "text/plain", None, spans(1, 3), 415),
        ("/v1/traces", PROTOBUF, Some("br"), spans(1, 3), 415),
        ("/v1/traces", PROTOBUF, None, b"\xff\xff\xff not protobuf".to_vec(), 400),
        ("/v1/traces", "application/json", None, b"{\"resourceSpans\": 7}".to_vec(), 400),
        ("/v1/traces", PROTOBUF, Some("gzip"), b"not gzip".to_vec(), 400),
        ("/v1/traces", PROTOBUF, Some("gzip"), bomb, 413),
    ];
    for (path, content_type, encoding, body, want) in cases {
        let (status, _) = export(&manager, path, &token, content_type, encoding, body).await;
        assert_eq!(status, want, "{content_type} {encoding:?}");
    }
    for (who, t) in [("admin", manager.admin.clone()), ("group", group_token.clone())] {
        let (status, _) = export(&manager, "/v1/logs", &t, PROTOBUF, None, logs(&["x"])).await;
        assert_eq!(status, 403, "an {who} token may not send telemetry");
    }
    let unauthenticated = reqwest::Client::new()
        .post(format!("{}/v1/logs", manager.base))
        .header("content-type", PROTOBUF)
        .body(logs(&["x"]))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sink.counts().spans, 13, "refused requests forward nothing");
    assert_eq!(sink.counts().log_records, 0);

    let metrics =
        reqwest::get(format!("{}/metrics", manager.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("telemetry_received_total{signal=\"traces\"} 13"), "{metrics}");
    assert!(metrics.contains("telemetry_forwarded_total{signal=\"traces\"} 13"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_logs_of_a_deployment() {
    let sink = OtlpTestSink::start().await.unwrap();
    let manager = Manager::start_configured(&config(&sink.endpoint(), "")).await;
    let (dep, group_token, token) = deployment(&manager, "web").await;
    let (_, other_group, other_token) = deployment(&manager, "other").await;
    for batch in [["one", "two"], ["three", "four"]] {
        assert_eq!(export(&manager, "/v1/logs", &token, PROTOBUF, None, logs(&batch)).await.0, 200);
    }
    let path = format!("/v1/deployments/{dep}/logs?limit=3");
    for t in [&manager.admin, &group_token, &token] {
        let (status, page) = manager.call(Method::GET, &path, Some(t), None).await;
        assert_eq!(status, 200, "{page}");
        let bodies: Vec<&str> = page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["body"].as_str().unwrap())
            .collect();
        assert_eq!(bodies, ["two", "three", "four"], "the newest, oldest first: {page}");
        assert_eq!(page["records"][0]["severityText"], "INFO");
    }
    for t in [&other_group, &other_token] {
        assert_eq!(manager.call(Method::GET, &path, Some(t), None).await.0, 403);
    }
    let bad = format!("/v1/deployments/{dep}/logs?limit=0");
    assert_eq!(manager.call(Method::GET, &bad, Some(&manager.admin), None).await.0, 400);
    sink.wait_for(Duration::from_secs(20), |c| c.log_records == 4).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_down_for_30_seconds_gets_every_accepted_record_when_it_returns() {
    let sink = OtlpTestSink::start().await.unwrap();
    let manager = Manager::start_configured(&config(&sink.endpoint(), "")).await;
    let (_, _, token) = deployment(&manager, "web").await;
    sink.down().await;
    let started = std::time::Instant::now();
    let mut accepted = 0u64;
    let mut sent = 0u8;
    // At least 30 s of outage and at least 5,000 spans accepted meanwhile, however long a loaded
    // machine takes to send them.
    while started.elapsed() < Duration::from_secs(30) || accepted < 5_000 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "ingest stopped accepting while the sink was down: {accepted} spans in 300 s"
        );
        sent = sent.wrapping_add(1);
        let (status, _) =
            export(&manager, "/v1/traces", &token, PROTOBUF, None, spans(50, sent)).await;
        assert!(status == 200 || status == 429, "{status}");
        if status == 200 {
            accepted += 50;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(accepted >= 5_000, "ingest kept answering while the sink was down: {accepted}");
    assert_eq!(sink.counts().spans, 0, "nothing got through while down");
    sink.up().await.unwrap();
    let counts = sink
        .wait_for(Duration::from_secs(90), |c| c.spans >= accepted)
        .await
        .unwrap_or_else(|c| panic!("accepted {accepted}, delivered {c:?}"));
    assert_eq!(counts.spans, accepted, "every accepted span arrives, none twice");
    eprintln!(
        "sink down 30 s: {accepted} spans accepted, {} delivered after it came back",
        counts.spans
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after_and_memory_stays_bounded() {
    let sink = OtlpTestSink::start().await.unwrap();
    sink.down().await;
    let queue = 4 * 1024 * 1024;
    let manager =
        Manager::start_configured(&config(&sink.endpoint(), &format!("queue-bytes = {queue}")))
            .await;
    let (_, _, token) = deployment(&manager, "web").await;
    // Warm up (allocator, connections), then measure.
    assert_eq!(export(&manager, "/v1/traces", &token, PROTOBUF, None, spans(10, 1)).await.0, 200);
    let before = manager.server().rss_bytes();
    let body = spans(4_000, 2); // ~300 KB a request
    let mut throttled = 0;
    let mut accepted = 0;
    let mut peak = before;
    for _ in 0..400 {
        let (status, retry) =
            export(&manager, "/v1/traces", &token, PROTOBUF, None, body.clone()).await;
        match status {
            200 => accepted += 1,
            429 => {
                throttled += 1;
                let secs: u64 = retry.expect("429 carries Retry-After").parse().unwrap();
                assert!((1..=60).contains(&secs), "Retry-After {secs}");
            }
            other => panic!("unexpected {other}"),
        }
        peak = peak.max(manager.server().rss_bytes());
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    eprintln!(
        "queue-bytes {:.0} MiB, sink down, 400 x {:.0} KiB sent: {accepted} accepted, {throttled} throttled; RSS {:.1} MiB -> peak {:.1} MiB",
        mib(queue),
        body.len() as f64 / 1024.0,
        mib(before),
        mib(peak)
    );
    assert!(throttled > 300, "the queue filled and stayed full: {accepted} accepted");
    assert!(
        peak < before + queue + 48 * 1024 * 1024,
        "RSS bounded by queue-bytes plus a constant: {:.1} -> {:.1} MiB",
        mib(before),
        mib(peak)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_exports_its_own_spans_and_metrics_when_self_is_on() {
    let sink = OtlpTestSink::start().await.unwrap();
    let toml = format!("[telemetry]\notlp-endpoint = \"{}\"\nself = true\n", sink.endpoint());
    // The SDK's metric export interval, shortened from its 60 s default for the test.
    let manager = Manager::start_with(&toml, &[("OTEL_METRIC_EXPORT_INTERVAL", "1000")]).await;
    for _ in 0..5 {
        manager.admin(Method::GET, "/v1/whoami", None).await;
    }
    sink.wait_for(Duration::from_secs(30), |c| c.spans > 0)
        .await
        .expect("the manager's spans arrive");
    let own = sink
        .requests()
        .into_iter()
        .filter(|r| r.signal == Signal::Traces)
        .flat_map(|r| resource_attrs(&r.request))
        .any(|attrs| attrs.contains(&("service.name".to_owned(), "alien-manager".to_owned())));
    assert!(own, "spans carry service.name = alien-manager");
    sink.wait_for(Duration::from_secs(30), |c| c.data_points > 0).await.expect("metrics arrive");
    let names: std::collections::BTreeSet<String> = sink
        .requests()
        .into_iter()
        .filter_map(|r| match r.request {
            OtlpRequest::Metrics(m) => Some(m),
            _ => None,
        })
        .flat_map(|m| m.resource_metrics)
        .flat_map(|r| r.scope_metrics)
        .flat_map(|s| s.metrics)
        .map(|m| m.name)
        .collect();
    assert!(
        names.contains("http_requests_total"),
        "the facade's metrics are exported through the SDK: {names:?}"
    );
}

/// The OpenTelemetry Python SDK (OTLP/HTTP exporter, plain and gzip) as a workload would use it.
#[cfg(feature = "peer-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_exports_spans_and_logs_plain_and_gzip() {
    let sink = OtlpTestSink::start().await.unwrap();
    let mut manager = Manager::start_configured(&config(&sink.endpoint(), "")).await;
    // Running on a release, so all five alien.* attributes are known.
    let (dep, _, token) = common::running(&mut manager).await;
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/venv/bin/python");
    assert!(python.exists(), "{} is missing: run `cargo xtask setup`", python.display());
    let script = r#"
import logging
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

resource = Resource.create({"service.name": "svc", "alien.deployment.id": "dep_spoofed"})
tp = TracerProvider(resource=resource)
tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
tracer = tp.get_tracer("py")
for i in range(3):
    with tracer.start_as_current_span(f"span-{i}"):
        pass
lp = LoggerProvider(resource=resource)
lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter()))
log = logging.getLogger("py")
log.addHandler(LoggingHandler(logger_provider=lp))
log.setLevel(logging.INFO)
log.info("hello from python")
tp.shutdown()
lp.shutdown()
"#;
    for compression in ["none", "gzip"] {
        let out = std::process::Command::new(&python)
            .args(["-c", script])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &manager.base)
            .env("OTEL_EXPORTER_OTLP_HEADERS", format!("authorization=Bearer {token}"))
            .env("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("Failed to export"), "{stderr}");
    }
    let counts = sink
        .wait_for(Duration::from_secs(20), |c| c.spans >= 6 && c.log_records >= 2)
        .await
        .unwrap();
    assert_eq!((counts.spans, counts.log_records), (6, 2));
    assert_stamped(&sink, &dep, "d");
    for request in sink.requests() {
        for attrs in resource_attrs(&request.request) {
            let release: Vec<&(String, String)> =
                attrs.iter().filter(|(k, _)| k == "alien.release.id").collect();
            assert!(
                release.len() == 1 && release[0].1.starts_with("rel_"),
                "alien.release.id: {attrs:?}"
            );
        }
    }
}
