//! The last log records of each deployment, kept in memory for
//! `GET /v1/deployments/{id}/logs?limit=` (`alien logs` without an external backend).
//!
//! Bounds: at most [`RecentLogs::per_deployment`] records per deployment (1,000 by default), each
//! record cut to a few KiB (body [`MAX_BODY_BYTES`], [`MAX_ATTRIBUTES`] attributes of at most
//! [`MAX_VALUE_BYTES`] each), and a total memory budget (64 MiB by default) across deployments:
//! past it, the deployments that logged least recently are forgotten whole. Nothing survives a
//! restart.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use alien_core::api::{RecentLogRecord, RecentLogsPage};
use base64::Engine;
use chrono::{DateTime, SecondsFormat};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{Map, Value};

/// Longest body kept, in bytes of its JSON text; longer bodies are cut and marked.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Most attributes kept per record.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute value kept, in bytes of its JSON text.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Bookkeeping charged per record on top of its text.
const RECORD_OVERHEAD: usize = 256;

#[derive(Debug, Default)]
struct Ring {
    records: VecDeque<(RecentLogRecord, usize)>,
    bytes: usize,
    /// Position in `Inner::by_age`.
    last_write: u64,
}

#[derive(Debug, Default)]
struct Inner {
    rings: HashMap<String, Ring>,
    /// Deployments by last write, least recent first.
    by_age: BTreeMap<u64, String>,
    next_write: u64,
    bytes: usize,
}

/// Recent log records per deployment; see the module documentation for its bounds.
#[derive(Debug)]
pub struct RecentLogs {
    inner: Mutex<Inner>,
    per_deployment: usize,
    max_bytes: usize,
}

impl Default for RecentLogs {
    fn default() -> Self {
        Self::new(1000, 64 * 1024 * 1024)
    }
}

impl RecentLogs {
    /// Keeps `per_deployment` records per deployment within `max_bytes` in total.
    pub fn new(per_deployment: usize, max_bytes: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), per_deployment, max_bytes }
    }

    /// Records kept per deployment.
    pub fn per_deployment(&self) -> usize {
        self.per_deployment
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends the log records of an (already enriched) request to `deployment_id`'s ring.
    pub fn record(&self, deployment_id: &str, request: &ExportLogsServiceRequest) {
        let total: usize = request
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum();
        // Only the last `per_deployment` records of a request can survive; convert only those.
        let mut skip = total.saturating_sub(self.per_deployment);
        let mut converted = Vec::with_capacity(total - skip);
        for rl in &request.resource_logs {
            let service =
                rl.resource.as_ref().and_then(|r| string_attr(&r.attributes, "service.name"));
            for sl in &rl.scope_logs {
                for log in &sl.log_records {
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    let record = convert(log, service.clone());
                    let size = approximate_size(&record);
                    converted.push((record, size));
                }
            }
        }
        if converted.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let write = inner.next_write;
        inner.next_write += 1;
        let ring = inner.rings.entry(deployment_id.to_owned()).or_default();
        inner.by_age.remove(&ring.last_write);
        ring.last_write = write;
        inner.by_age.insert(write, deployment_id.to_owned());
        for (record, size) in converted {
            ring.bytes += size;
            inner.bytes += size;
            ring.records.push_back((record, size));
        }
        while ring.records.len() > self.per_deployment {
            if let Some((_, size)) = ring.records.pop_front() {
                ring.bytes -= size;
                inner.bytes -= size;
            }
        }
        // Over budget: forget the deployments that logged least recently, never the one that
        // just wrote (its ring alone stays within per_deployment * max record size).
        while inner.bytes > self.max_bytes {
            let Some((&age, _)) = inner.by_age.first_key_value() else { break };
            if age == write {
                break;
            }
            if let Some(id) = inner.by_age.remove(&age)
                && let Some(ring) = inner.rings.remove(&id)
            {
                inner.bytes -= ring.bytes;
            }
        }
    }

    /// The last `limit` records of `deployment_id` (capped at the ring size), oldest first;
    /// empty for a deployment with no recent logs.
    pub fn recent(&self, deployment_id: &str, limit: usize) -> RecentLogsPage {
        let inner = self.lock();
        let records = inner
            .rings
            .get(deployment_id)
            .map(|ring| {
                let skip = ring.records.len().saturating_sub(limit);
                ring.records.iter().skip(skip).map(|(r, _)| r.clone()).collect()
            })
            .unwrap_or_default();
        RecentLogsPage { deployment_id: deployment_id.to_owned(), records }
    }

    /// Forgets a deployment's records (when it is deleted).
    pub fn forget(&self, deployment_id: &str) {
        let mut inner = self.lock();
        if let Some(ring) = inner.rings.remove(deployment_id) {
            inner.bytes -= ring.bytes;
            inner.by_age.remove(&ring.last_write);
        }
    }

    /// Bytes charged to the rings (an estimate of their memory).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

fn rfc3339(unix_nanos: u64) -> Option<String> {
    if unix_nanos == 0 {
        return None;
    }
    let secs = i64::try_from(unix_nanos / 1_000_000_000).ok()?;
    let nanos = u32::try_from(unix_nanos % 1_000_000_000).ok()?;
    DateTime::from_timestamp(secs, nanos).map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn hex_id(id: &[u8]) -> Option<String> {
    (!id.is_empty()).then(|| id.iter().map(|b| format!("{b:02x}")).collect())
}

fn convert(log: &LogRecord, service_name: Option<String>) -> RecentLogRecord {
    let timestamp = rfc3339(log.time_unix_nano).or_else(|| rfc3339(log.observed_time_unix_nano));
    let body = log.body.as_ref().map_or(Value::Null, json_value);
    let mut attributes = Map::new();
    for kv in log.attributes.iter().take(MAX_ATTRIBUTES) {
        let value = kv.value.as_ref().map_or(Value::Null, json_value);
        attributes.insert(truncate(&kv.key, MAX_VALUE_BYTES), cap(value, MAX_VALUE_BYTES));
    }
    RecentLogRecord {
        timestamp,
        severity_text: (!log.severity_text.is_empty()).then(|| log.severity_text.clone()),
        severity_number: (log.severity_number != 0).then_some(log.severity_number),
        body: cap(body, MAX_BODY_BYTES),
        attributes,
        service_name,
        trace_id: hex_id(&log.trace_id),
        span_id: hex_id(&log.span_id),
    }
}

/// The JSON form of an OTLP value: strings, numbers and booleans as such, arrays and maps as
/// JSON arrays and objects, bytes as base64.
pub fn json_value(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(json_value).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json_value)))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[truncated]", &text[..end])
}

/// Keeps a value under `max` bytes of JSON: a long string is cut, a large structure becomes its
/// cut JSON text.
fn cap(value: Value, max: usize) -> Value {
    match value {
        Value::String(s) => Value::String(truncate(&s, max)),
        Value::Array(_) | Value::Object(_) => {
            let text = value.to_string();
            if text.len() <= max { value } else { Value::String(truncate(&text, max)) }
        }
        other => other,
    }
}

fn approximate_size(record: &RecentLogRecord) -> usize {
    let json = |v: &Value| match v {
        Value::String(s) => s.len(),
        other => other.to_string().len(),
    };
    RECORD_OVERHEAD
        + record.timestamp.as_ref().map_or(0, String::len)
        + record.severity_text.as_ref().map_or(0, String::len)
        + json(&record.body)
        + record.attributes.iter().map(|(k, v)| k.len() + json(v) + 32).sum::<usize>()
        + record.service_name.as_ref().map_or(0, String::len)
        + 64
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::KeyValueList;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn text(s: &str) -> AnyValue {
        AnyValue { value: Some(any_value::Value::StringValue(s.into())) }
    }

    fn request(bodies: impl IntoIterator<Item = String>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(text("api")),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: bodies
                        .into_iter()
                        .map(|b| LogRecord { body: Some(text(&b)), ..Default::default() })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn bodies(page: &RecentLogsPage) -> Vec<String> {
        page.records.iter().map(|r| r.body.as_str().unwrap_or_default().to_owned()).collect()
    }

    #[test]
    fn keeps_the_last_records_per_deployment_oldest_first() {
        let logs = RecentLogs::new(5, usize::MAX);
        logs.record("dep_a", &request((0..3).map(|i| format!("a{i}"))));
        logs.record("dep_a", &request((3..8).map(|i| format!("a{i}"))));
        logs.record("dep_b", &request(["b0".to_owned()]));
        assert_eq!(bodies(&logs.recent("dep_a", 100)), ["a3", "a4", "a5", "a6", "a7"]);
        assert_eq!(bodies(&logs.recent("dep_a", 2)), ["a6", "a7"]);
        assert_eq!(bodies(&logs.recent("dep_b", 10)), ["b0"]);
        assert!(logs.recent("dep_none", 10).records.is_empty());
        logs.forget("dep_a");
        assert!(logs.recent("dep_a", 10).records.is_empty());
    }

    #[test]
    fn default_ring_holds_one_thousand() {
        let logs = RecentLogs::default();
        logs.record("d", &request((0..1500).map(|i| i.to_string())));
        let page = logs.recent("d", 5000);
        assert_eq!(page.records.len(), 1000);
        assert_eq!(page.records[0].body, "500");
    }

    #[test]
    fn memory_budget_forgets_least_recently_written_deployments() {
        let big = "x".repeat(4000);
        let logs = RecentLogs::new(1000, 100 * 1024);
        logs.record("old", &request(vec![big.clone(); 10]));
        logs.record("mid", &request(vec![big.clone(); 10]));
        logs.record("old", &request(vec![big.clone(); 1])); // old is now the most recent writer
        logs.record("new", &request(vec![big.clone(); 10]));
        assert!(logs.bytes() <= 100 * 1024, "{}", logs.bytes());
        assert!(logs.recent("mid", 1000).records.is_empty());
        assert_eq!(logs.recent("new", 1000).records.len(), 10);
    }

    #[test]
    fn records_render_as_json_friendly_values() {
        let log = LogRecord {
            time_unix_nano: 1_544_712_660_300_000_000,
            severity_number: 17,
            severity_text: "ERROR".into(),
            trace_id: vec![0xab; 16],
            span_id: vec![],
            body: Some(AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "msg".into(),
                        value: Some(text("boom")),
                        ..Default::default()
                    }],
                })),
            }),
            attributes: vec![
                KeyValue {
                    key: "n".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::IntValue(7)) }),
                    ..Default::default()
                },
                KeyValue {
                    key: "long".into(),
                    value: Some(text(&"y".repeat(5000))),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let r = convert(&log, Some("api".into()));
        assert_eq!(r.timestamp.as_deref(), Some("2018-12-13T14:51:00.300Z"));
        assert_eq!(r.severity_number, Some(17));
        assert_eq!(r.body, serde_json::json!({"msg": "boom"}));
        assert_eq!(r.attributes["n"], 7);
        assert!(r.attributes["long"].as_str().unwrap().len() < MAX_VALUE_BYTES + 20);
        assert_eq!(r.trace_id.as_deref(), Some("abababababababababababababababab"));
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("spanId").is_none());
        assert_eq!(json["serviceName"], "api");
        assert_eq!(json["severityText"], "ERROR");
    }
}
