//! OTLP/HTTP log export: a record at start and one per `GET /`, queued, batched by a background
//! task and POSTed as protobuf to `{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/logs` (or to
//! `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` as given) with the headers of `OTEL_EXPORTER_OTLP_HEADERS`.
//! An export that fails is logged and dropped, never retried and never fatal; a record that does
//! not fit the queue is dropped too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Records waiting for export; beyond this, new ones are dropped.
const QUEUE: usize = 4096;
/// Most records in one export request.
const BATCH: usize = 512;
/// Whole-request timeout of an export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how logs are exported.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The full logs URL, e.g. `http://10.0.2.2:8080/v1/logs`.
    pub url: String,
    /// Headers sent with every export (`authorization` among them, under the manager).
    pub headers: HeaderMap,
    /// Resource attributes: `service.name`, `service.version`, `service.instance.id`.
    pub resource: Vec<KeyValue>,
}

impl ExportConfig {
    /// Reads the `OTEL_EXPORTER_OTLP_*` variables: `Ok(None)` when no endpoint is set. Header
    /// entries that cannot be used are returned as warnings (the rest still apply).
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(Self, Vec<String>)>, String> {
        let set = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let (var, url) =
            match (set("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"), set("OTEL_EXPORTER_OTLP_ENDPOINT")) {
                (Some(url), _) => ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", url),
                (None, Some(base)) => (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("{}/v1/logs", base.trim_end_matches('/')),
                ),
                (None, None) => return Ok(None),
            };
        if !url.starts_with("http://") {
            return Err(format!(
                "{var}: hello-app exports over plain http only (no TLS in this build); got {url:?}"
            ));
        }
        let (headers, warnings) =
            parse_headers(&set("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or_default());
        let mut resource = vec![
            string_attribute(
                "service.name",
                set("OTEL_SERVICE_NAME").unwrap_or_else(|| "hello-app".to_owned()),
            ),
            string_attribute("service.version", env!("CARGO_PKG_VERSION")),
        ];
        if let Some(hostname) = set("HOSTNAME") {
            resource.push(string_attribute("service.instance.id", hostname));
        }
        Ok(Some((Self { url, headers, resource }, warnings)))
    }
}

/// Parses `k=v,k2=v2` (the `OTEL_EXPORTER_OTLP_HEADERS` format: keys and values trimmed,
/// values percent-decoded). Returns the usable headers and a warning per unusable entry.
pub fn parse_headers(text: &str) -> (HeaderMap, Vec<String>) {
    let mut headers = HeaderMap::new();
    let mut warnings = Vec::new();
    for (n, entry) in text.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        // Warnings never show a value: it is usually a token.
        let Some((key, value)) = entry.split_once('=') else {
            warnings.push(format!(
                "OTEL_EXPORTER_OTLP_HEADERS: entry {} has no '=' (expected key=value); ignored",
                n + 1
            ));
            continue;
        };
        let key = key.trim();
        let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
        match (HeaderName::try_from(key), HeaderValue::try_from(value.as_ref())) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => warnings.push(format!(
                "OTEL_EXPORTER_OTLP_HEADERS: header {key:?} ignored: not a valid HTTP header name and value"
            )),
        }
    }
    (headers, warnings)
}

fn string_attribute(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(string_value(value)), ..Default::default() }
}

fn string_value(value: impl Into<String>) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(value.into())) }
}

/// Where the app puts log records; cheap to clone.
#[derive(Debug, Clone)]
pub struct LogSink {
    queue: mpsc::Sender<LogRecord>,
}

impl LogSink {
    /// Queues an INFO record with this body and these attributes, stamped now.
    pub fn emit(&self, body: impl Into<String>, attributes: &[(&str, &str)]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let record = LogRecord {
            time_unix_nano: now,
            observed_time_unix_nano: now,
            severity_number: SeverityNumber::Info as i32,
            severity_text: "INFO".to_owned(),
            body: Some(string_value(body)),
            attributes: attributes.iter().map(|(k, v)| string_attribute(k, *v)).collect(),
            ..Default::default()
        };
        if self.queue.try_send(record).is_err() {
            tracing::warn!("OTLP log queue full or closed; record dropped");
        }
    }
}

/// Starts the exporter. It stops once every [`LogSink`] clone is dropped and the queue is
/// exported, so awaiting the handle after dropping the sinks flushes.
pub fn start(config: ExportConfig, client: reqwest::Client) -> (LogSink, JoinHandle<()>) {
    let (queue, mut records) = mpsc::channel(QUEUE);
    let task = tokio::spawn(async move {
        tracing::info!(url = %config.url, "exporting logs over OTLP/HTTP");
        while let Some(first) = records.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match records.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            export(&client, &config, batch).await;
        }
    });
    (LogSink { queue }, task)
}

/// The request carrying `records` under the app's resource and scope.
pub fn request(resource: &[KeyValue], records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: resource.to_vec(), ..Default::default() }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "hello-app".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One POST; failures are logged.
async fn export(client: &reqwest::Client, config: &ExportConfig, records: Vec<LogRecord>) {
    let count = records.len();
    let body = request(&config.resource, records).encode_to_vec();
    let sent = client
        .post(&config.url)
        .headers(config.headers.clone())
        .header(CONTENT_TYPE, "application/x-protobuf")
        .timeout(EXPORT_TIMEOUT)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => {
            tracing::debug!(count, "log records exported");
        }
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let text: String = text.chars().take(300).collect();
            tracing::warn!(count, %status, body = %text, url = %config.url, "OTLP log export refused; records dropped");
        }
        Err(err) => {
            tracing::warn!(count, error = %error_chain(&err), url = %config.url, "OTLP log export failed; records dropped");
        }
    }
}

/// An error and its causes, `: `-separated (reqwest's top-level message hides the cause).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Option<(ExportConfig, Vec<String>)>, String> {
        ExportConfig::from_vars(|name| {
            vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn no_endpoint_no_export() {
        assert!(config(&[("OTEL_EXPORTER_OTLP_HEADERS", "a=b")]).unwrap().is_none());
    }

    #[test]
    fn the_logs_path_is_appended_to_the_base_endpoint() {
        let (c, _) =
            config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://10.0.2.2:8080/")]).unwrap().unwrap();
        assert_eq!(c.url, "http://10.0.2.2:8080/v1/logs");
        let (c, _) = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://b:2/custom"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.url, "http://b:2/custom");
    }

    #[test]
    fn https_is_refused_with_a_reason() {
        let err = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://x")]).unwrap_err();
        assert!(err.contains("plain http only"), "{err}");
    }

    #[test]
    fn resource_names_the_service_and_replica() {
        let (c, _) = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"), ("HOSTNAME", "r1")])
            .unwrap()
            .unwrap();
        let keys: Vec<_> = c.resource.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["service.name", "service.version", "service.instance.id"]);
        assert_eq!(c.resource[0].value, Some(string_value("hello-app")));
    }

    #[test]
    fn headers_are_trimmed_and_percent_decoded() {
        let (headers, warnings) =
            parse_headers(" authorization = Bearer%20ax_deploy_1 ,x-tenant=a%2Cb,,");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(headers["authorization"], "Bearer ax_deploy_1");
        assert_eq!(headers["x-tenant"], "a,b");
        let (headers, _) = parse_headers("authorization=Bearer ax_deploy_1");
        assert_eq!(headers["authorization"], "Bearer ax_deploy_1");
    }

    #[test]
    fn unusable_header_entries_are_skipped_with_a_warning_that_hides_values() {
        let (headers, warnings) = parse_headers("secret,bad key=1,ok=2,x=line%0Abreak");
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["ok"], "2");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings.iter().all(|w| !w.contains("secret") && !w.contains("line")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_record_round_trips_through_protobuf() {
        let (sink, mut queue) = {
            let (queue, records) = mpsc::channel(4);
            (LogSink { queue }, records)
        };
        sink.emit("GET /", &[("url.path", "/")]);
        let record = queue.try_recv().unwrap();
        assert!(record.time_unix_nano > 0);
        let bytes =
            request(&[string_attribute("service.name", "hello-app")], vec![record]).encode_to_vec();
        let decoded = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
        let logs = &decoded.resource_logs[0];
        let record = &logs.scope_logs[0].log_records[0];
        assert_eq!(record.body, Some(string_value("GET /")));
        assert_eq!(record.severity_number, SeverityNumber::Info as i32);
        assert_eq!(record.attributes, vec![string_attribute("url.path", "/")]);
        assert_eq!(logs.scope_logs[0].scope.as_ref().unwrap().name, "hello-app");
    }
}
