use std::io::Write;
use std::sync::Mutex;

use async_trait::async_trait;
use flate2::write::GzEncoder;
use http::HeaderValue;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::*;
use crate::sink::{ShutdownReport, SinkStats};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Bytes {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap().into()
}

/// Records what it is given; refuses as told.
#[derive(Debug, Default)]
struct RecordingSink {
    exports: Mutex<Vec<EncodedExport>>,
    refuse: Mutex<Option<SinkError>>,
}

#[async_trait]
impl TelemetrySink for RecordingSink {
    fn try_enqueue(&self, export: EncodedExport) -> Result<(), SinkError> {
        if let Some(err) = self.refuse.lock().unwrap().clone() {
            return Err(err);
        }
        self.exports.lock().unwrap().push(export);
        Ok(())
    }
    fn stats(&self, _signal: Signal) -> SinkStats {
        SinkStats::default()
    }
    async fn shutdown(&self, _timeout: Duration) -> ShutdownReport {
        ShutdownReport::default()
    }
}

impl RecordingSink {
    fn forwarded(&self) -> Vec<OtlpRequest> {
        self.exports
            .lock()
            .unwrap()
            .iter()
            .map(|e| OtlpRequest::decode_protobuf(e.signal, &e.payload).unwrap())
            .collect()
    }
}

fn setup() -> (Arc<RecordingSink>, Arc<RecentLogs>, Ingestor) {
    let sink = Arc::new(RecordingSink::default());
    let recent = Arc::new(RecentLogs::default());
    let ingestor = Ingestor::new(sink.clone()).with_recent_logs(recent.clone());
    (sink, recent, ingestor)
}

fn identity() -> DeploymentIdentity {
    DeploymentIdentity {
        deployment_id: "dep_1".into(),
        deployment_name: "prod-eu".into(),
        deployment_group_id: "dg_1".into(),
        platform: "aws".into(),
        release_id: Some("rel_3".into()),
    }
}

fn headers(content_type: &'static str, gzip: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if gzip {
        h.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h
}

const PB: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn gzip(data: &[u8]) -> Bytes {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap().into()
}

fn resource_string(resource: &Resource, key: &str) -> Vec<String> {
    resource
        .attributes
        .iter()
        .filter(|kv| kv.key == key)
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn assert_stamped(resource: &Resource) {
    assert_eq!(resource_string(resource, ATTR_DEPLOYMENT_ID), ["dep_1"]);
    assert_eq!(resource_string(resource, ATTR_DEPLOYMENT_NAME), ["prod-eu"]);
    assert_eq!(resource_string(resource, ATTR_DEPLOYMENT_GROUP_ID), ["dg_1"]);
    assert_eq!(resource_string(resource, ATTR_PLATFORM), ["aws"]);
    assert_eq!(resource_string(resource, ATTR_RELEASE_ID), ["rel_3"]);
}

fn span(name: &str) -> Span {
    Span { name: name.into(), trace_id: vec![1; 16], span_id: vec![2; 8], ..Default::default() }
}

fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: ATTR_DEPLOYMENT_ID.into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("dep_victim".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

#[test]
fn protobuf_traces_are_stamped_counted_and_queued() {
    let (sink, _, ingestor) = setup();
    let body = traces(vec![span("a"), span("b")]).encode_to_vec().into();
    let resp = ingestor.ingest(Signal::Traces, &headers(PB, false), body, &identity()).unwrap();
    assert_eq!((resp.accepted, resp.rejected), (2, 0));
    assert_eq!(resp.content_type, PB);
    let decoded = ExportTraceServiceResponse::decode(resp.body).unwrap();
    assert_eq!(decoded.partial_success, None);
    let exports = sink.exports.lock().unwrap().clone();
    assert_eq!(exports.len(), 1);
    assert_eq!((exports[0].signal, exports[0].records), (Signal::Traces, 2));
    let OtlpRequest::Traces(t) = &sink.forwarded()[0] else { panic!("not traces") };
    assert_stamped(t.resource_spans[0].resource.as_ref().unwrap());
}

#[test]
fn specification_json_examples_decode_with_their_quirks() {
    let (sink, _, ingestor) = setup();
    let h = headers(JSON, false);
    let id = identity();
    let t = ingestor.ingest(Signal::Traces, &h, fixture("trace.json"), &id).unwrap();
    let l = ingestor.ingest(Signal::Logs, &h, fixture("logs.json"), &id).unwrap();
    let m = ingestor.ingest(Signal::Metrics, &h, fixture("metrics.json"), &id).unwrap();
    assert_eq!((t.accepted, l.accepted, m.accepted), (1, 1, 4));
    for resp in [&t, &l, &m] {
        assert_eq!((resp.content_type, &resp.body[..]), (JSON, &b"{}"[..]));
    }
    let forwarded = sink.forwarded();
    let OtlpRequest::Traces(traces) = &forwarded[0] else { panic!("not traces") };
    let rs = &traces.resource_spans[0];
    assert_stamped(rs.resource.as_ref().unwrap());
    assert_eq!(resource_string(rs.resource.as_ref().unwrap(), "service.name"), ["my.service"]);
    let span = &rs.scope_spans[0].spans[0];
    // Hex ids (upper case in the example), int64 as strings, enums as integers.
    assert_eq!(span.trace_id, hex_bytes("5B8EFFF798038103D269B633813FC60C"));
    assert_eq!(span.span_id, hex_bytes("EEE19B7EC3C1B174"));
    assert_eq!(span.parent_span_id, hex_bytes("EEE19B7EC3C1B173"));
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.kind, 2);

    let OtlpRequest::Logs(logs) = &forwarded[1] else { panic!("not logs") };
    let record = &logs.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(record.severity_number, 10);
    let int_attr = record.attributes.iter().find(|kv| kv.key == "int.attribute").unwrap();
    assert_eq!(int_attr.value.as_ref().unwrap().value, Some(any_value::Value::IntValue(10)));

    let OtlpRequest::Metrics(metrics) = &forwarded[2] else { panic!("not metrics") };
    let histogram = &metrics.resource_metrics[0].scope_metrics[0].metrics[2];
    let Some(metric::Data::Histogram(h)) = &histogram.data else { panic!("not a histogram") };
    assert_eq!(h.data_points[0].count, 2);
    assert_eq!(h.data_points[0].bucket_counts, [1, 1]);
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn json_as_javascript_exporters_write_it_decodes() {
    // Numbers where the spec example uses strings, lower-case ids, zero-valued fields written
    // out, and fields this version does not know: all accepted.
    let body = serde_json::json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}],
                          "droppedAttributesCount": 0},
            "scopeSpans": [{
                "scope": {"name": "@opentelemetry/instrumentation-http", "version": "0.52.0"},
                "spans": [{
                    "traceId": "5b8efff798038103d269b633813fc60c",
                    "spanId": "eee19b7ec3c1b174",
                    "name": "GET /",
                    "kind": 3,
                    "startTimeUnixNano": 1544712660000000000u64,
                    "endTimeUnixNano": "1544712661000000000",
                    "attributes": [{"key": "http.status_code", "value": {"intValue": 200}}],
                    "droppedAttributesCount": 0,
                    "events": [{"timeUnixNano": "1544712660500000000", "name": "ev",
                                "attributes": [], "droppedAttributesCount": 0}],
                    "droppedEventsCount": 0,
                    "status": {"code": 0},
                    "links": [],
                    "droppedLinksCount": 0,
                    "someFutureField": {"x": 1}
                }]
            }]
        }]
    });
    let (sink, _, ingestor) = setup();
    let resp = ingestor
        .ingest(
            Signal::Traces,
            &headers(JSON, true),
            gzip(body.to_string().as_bytes()),
            &identity(),
        )
        .unwrap();
    assert_eq!(resp.accepted, 1);
    let OtlpRequest::Traces(t) = &sink.forwarded()[0] else { panic!("not traces") };
    let span = &t.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.kind, 3);
}

#[test]
fn python_sdk_bodies_decode_and_spoofed_identity_is_replaced() {
    let (sink, recent, ingestor) = setup();
    let id = identity();
    let t = ingestor
        .ingest(Signal::Traces, &headers(PB, true), fixture("python-traces.pb.gz"), &id)
        .unwrap();
    let l =
        ingestor.ingest(Signal::Logs, &headers(PB, false), fixture("python-logs.pb"), &id).unwrap();
    let m = ingestor
        .ingest(Signal::Metrics, &headers(PB, false), fixture("python-metrics.pb"), &id)
        .unwrap();
    assert_eq!((t.accepted, l.accepted, m.accepted), (1, 1, 3));
    for request in sink.forwarded() {
        let mut request = request;
        for resource in request.resources_mut() {
            assert_stamped(resource);
            assert_eq!(resource_string(resource, "service.name"), ["py-app"]);
        }
    }
    let page = recent.recent("dep_1", 10);
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].body, "disk almost full");
    assert_eq!(page.records[0].severity_text.as_deref(), Some("WARN"));
    assert_eq!(page.records[0].service_name.as_deref(), Some("py-app"));
}

#[test]
fn invalid_spans_get_partial_success_in_the_request_format() {
    let bad = Span { trace_id: vec![], ..span("no-trace-id") };
    let request = traces(vec![span("ok"), bad]);

    let (sink, _, ingestor) = setup();
    let resp = ingestor
        .ingest(Signal::Traces, &headers(PB, false), request.encode_to_vec().into(), &identity())
        .unwrap();
    assert_eq!((resp.accepted, resp.rejected), (1, 1));
    let partial = ExportTraceServiceResponse::decode(resp.body).unwrap().partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("no-trace-id"), "{}", partial.error_message);
    assert_eq!(sink.forwarded()[0].record_count(), 1);

    let json = serde_json::to_vec(&request).unwrap();
    let resp =
        ingestor.ingest(Signal::Traces, &headers(JSON, false), json.into(), &identity()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1");
}

#[test]
fn a_request_with_only_invalid_records_queues_nothing() {
    let (sink, _, ingestor) = setup();
    let body = traces(vec![Span { span_id: vec![], ..span("x") }]).encode_to_vec().into();
    let resp = ingestor.ingest(Signal::Traces, &headers(PB, false), body, &identity()).unwrap();
    assert_eq!((resp.accepted, resp.rejected), (0, 1));
    assert!(sink.exports.lock().unwrap().is_empty());
}

#[test]
fn malformed_bodies_are_400_with_a_message() {
    let (sink, _, ingestor) = setup();
    let id = identity();
    let err = ingestor
        .ingest(
            Signal::Logs,
            &headers(JSON, false),
            Bytes::from_static(b"{\"resourceLogs\": [ {"),
            &id,
        )
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    let text = err.to_string();
    assert!(text.contains("OTLP/JSON logs") && text.contains("line 1"), "{text}");

    let err = ingestor
        .ingest(Signal::Traces, &headers(PB, false), Bytes::from_static(&[0x0a, 0xff, 0x01]), &id)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert!(err.to_string().contains("protobuf traces"), "{err}");

    let err = ingestor
        .ingest(Signal::Traces, &headers(PB, true), Bytes::from_static(b"not gzip"), &id)
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert!(sink.exports.lock().unwrap().is_empty());
}

#[test]
fn unsupported_type_or_encoding_is_415() {
    let (_, _, ingestor) = setup();
    let id = identity();
    let body = Bytes::from_static(b"{}");
    let err = ingestor.ingest(Signal::Logs, &headers("text/plain", false), body.clone(), &id);
    assert_eq!(err.unwrap_err().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut h = headers(JSON, false);
    h.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("br"));
    let err = ingestor.ingest(Signal::Logs, &h, body, &id).unwrap_err();
    assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(err.to_string().contains("br"));
}

#[test]
fn bodies_past_16_mib_are_413_gzip_bomb_included() {
    let (_, _, ingestor) = setup();
    let id = identity();
    let bomb = gzip(&vec![0u8; MAX_DECOMPRESSED_BYTES + 1]);
    assert!(bomb.len() < 1024 * 1024);
    let err = ingestor.ingest(Signal::Traces, &headers(PB, true), bomb, &id).unwrap_err();
    assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let plain = Bytes::from(vec![0u8; MAX_DECOMPRESSED_BYTES + 1]);
    let err = ingestor.ingest(Signal::Traces, &headers(PB, false), plain, &id).unwrap_err();
    assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn full_queue_is_429_with_retry_after_and_leaves_no_trace() {
    let (sink, recent, ingestor) = setup();
    *sink.refuse.lock().unwrap() =
        Some(SinkError::Full { signal: Signal::Logs, retry_after: Duration::from_secs(3) });
    let err = ingestor
        .ingest(Signal::Logs, &headers(JSON, false), fixture("logs.json"), &identity())
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    // The client will send it again: nothing of it may be kept now.
    assert!(recent.recent("dep_1", 10).records.is_empty());

    *sink.refuse.lock().unwrap() = Some(SinkError::Closed { signal: Signal::Logs });
    let err = ingestor
        .ingest(Signal::Logs, &headers(JSON, false), fixture("logs.json"), &identity())
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(err.retry_after().is_some());
}

#[test]
fn every_error_maps_to_one_status_and_an_otlp_body() {
    let cases = [
        (IngestError::UnsupportedMediaType { content_type: None }, 415, None, 3),
        (IngestError::UnsupportedEncoding { encoding: "br".into() }, 415, None, 3),
        (IngestError::TooLarge { limit: 1 }, 413, None, 8),
        (IngestError::BadGzip("x".into()), 400, None, 3),
        (
            IngestError::Malformed(OtlpRequest::decode_json(Signal::Logs, b"[").unwrap_err()),
            400,
            None,
            3,
        ),
        (
            IngestError::Throttled { signal: Signal::Logs, retry_after: Duration::from_secs(2) },
            429,
            Some(2),
            8,
        ),
        (IngestError::Unavailable { signal: Signal::Logs }, 503, Some(5), 14),
    ];
    for (err, status, retry, code) in cases {
        assert_eq!(err.status().as_u16(), status, "{err}");
        assert_eq!(err.retry_after().map(|d| d.as_secs()), retry, "{err}");
        assert!(!err.hint().is_empty());
        let (body, content_type) = err.otlp_body(&headers(JSON, false));
        assert_eq!(content_type, JSON);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], code, "{err}");
        assert_eq!(v["message"], err.to_string());
        let (_, content_type) = err.otlp_body(&headers(PB, false));
        assert_eq!(content_type, PB);
    }
}

#[test]
fn logs_land_in_the_recent_ring_of_the_sending_deployment() {
    let (_, recent, ingestor) = setup();
    ingestor
        .ingest(Signal::Logs, &headers(JSON, false), fixture("logs.json"), &identity())
        .unwrap();
    let page = recent.recent("dep_1", 100);
    assert_eq!(page.records.len(), 1);
    let r = &page.records[0];
    assert_eq!(r.body, "Example log record");
    assert_eq!(r.timestamp.as_deref(), Some("2018-12-13T14:51:00.300Z"));
    assert_eq!(r.attributes["map.attribute"], serde_json::json!({"some.map.key": "some value"}));
    assert!(recent.recent("dep_2", 100).records.is_empty());
}
