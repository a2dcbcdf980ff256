//! Which records ingest refuses, and the `partialSuccess` message that explains it.
//!
//! Policy: only records every OTLP backend would refuse are removed, so forwarding never fails on
//! them later. Spans need a 16-byte non-zero trace id and an 8-byte non-zero span id (and an
//! 8-byte parent span id when they have one); log records may omit trace and span ids but, when
//! present, they must have those lengths; metrics need a name (their data points are rejected
//! otherwise). Everything else is accepted as sent.

use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::OtlpRequest;
use crate::otlp::data_point_count;

/// Records removed from a request, with the reason shown to the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejection {
    /// How many records were removed.
    pub count: u64,
    /// Why, for `partialSuccess.errorMessage` (empty when nothing was removed).
    pub message: String,
}

fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|b| *b != 0)
}

fn span_is_valid(span: &Span) -> bool {
    valid_id(&span.trace_id, 16)
        && valid_id(&span.span_id, 8)
        && (span.parent_span_id.is_empty() || span.parent_span_id.len() == 8)
}

fn log_is_valid(log: &LogRecord) -> bool {
    (log.trace_id.is_empty() || log.trace_id.len() == 16)
        && (log.span_id.is_empty() || log.span_id.len() == 8)
}

/// Removes the records the policy refuses and drops scope and resource entries left empty by
/// that removal.
pub fn remove_invalid(request: &mut OtlpRequest) -> Rejection {
    match request {
        OtlpRequest::Traces(r) => {
            let mut count = 0u64;
            let mut example = None;
            for rs in &mut r.resource_spans {
                for ss in &mut rs.scope_spans {
                    ss.spans.retain(|s| {
                        let ok = span_is_valid(s);
                        if !ok {
                            count += 1;
                            example.get_or_insert_with(|| s.name.clone());
                        }
                        ok
                    });
                }
            }
            if count > 0 {
                for rs in &mut r.resource_spans {
                    rs.scope_spans.retain(|ss| !ss.spans.is_empty());
                }
                r.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
            }
            rejection(
                count,
                "spans need a 16-byte non-zero traceId and an 8-byte non-zero spanId \
                 (hex-encoded in JSON), and an 8-byte parentSpanId when set",
                example.map(|name| format!("span {name:?}")),
            )
        }
        OtlpRequest::Logs(r) => {
            let mut count = 0u64;
            for rl in &mut r.resource_logs {
                for sl in &mut rl.scope_logs {
                    sl.log_records.retain(|l| {
                        let ok = log_is_valid(l);
                        count += u64::from(!ok);
                        ok
                    });
                }
            }
            if count > 0 {
                for rl in &mut r.resource_logs {
                    rl.scope_logs.retain(|sl| !sl.log_records.is_empty());
                }
                r.resource_logs.retain(|rl| !rl.scope_logs.is_empty());
            }
            rejection(
                count,
                "log records may omit traceId and spanId, but when set they must be 16 and 8 \
                 bytes",
                None,
            )
        }
        OtlpRequest::Metrics(r) => {
            let mut count = 0u64;
            for rm in &mut r.resource_metrics {
                for sm in &mut rm.scope_metrics {
                    sm.metrics.retain(|m| {
                        let ok = !m.name.is_empty();
                        if !ok {
                            count += data_point_count(m) as u64;
                        }
                        ok
                    });
                }
            }
            if count > 0 {
                for rm in &mut r.resource_metrics {
                    rm.scope_metrics.retain(|sm| !sm.metrics.is_empty());
                }
                r.resource_metrics.retain(|rm| !rm.scope_metrics.is_empty());
            }
            rejection(count, "metrics need a name", None)
        }
    }
}

fn rejection(count: u64, rule: &str, example: Option<String>) -> Rejection {
    if count == 0 {
        return Rejection::default();
    }
    let message = match example {
        Some(example) => format!("{count} rejected: {rule} (first: {example})"),
        None => format!("{count} rejected: {rule}"),
    };
    Rejection { count, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn span(name: &str, trace: Vec<u8>, id: Vec<u8>) -> Span {
        Span { name: name.into(), trace_id: trace, span_id: id, ..Default::default() }
    }

    #[test]
    fn spans_with_bad_ids_are_removed_and_named() {
        let mut req = OtlpRequest::Traces(ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![
                            span("ok", vec![1; 16], vec![2; 8]),
                            span("short", vec![1; 8], vec![2; 8]),
                            span("zero", vec![0; 16], vec![2; 8]),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span("noid", vec![1; 16], vec![])],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        });
        let rej = remove_invalid(&mut req);
        assert_eq!(rej.count, 3);
        assert!(rej.message.contains("\"short\""), "{}", rej.message);
        assert_eq!(req.record_count(), 1);
        let OtlpRequest::Traces(t) = req else { panic!("not traces") };
        // The resource left without spans is gone; the other keeps its valid span.
        assert_eq!(t.resource_spans.len(), 1);
    }

    #[test]
    fn valid_requests_are_untouched() {
        let original = OtlpRequest::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        LogRecord::default(),
                        LogRecord {
                            trace_id: vec![1; 16],
                            span_id: vec![1; 8],
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let mut req = original.clone();
        assert_eq!(remove_invalid(&mut req), Rejection::default());
        assert_eq!(req, original);
    }

    #[test]
    fn logs_with_bad_ids_and_unnamed_metrics_are_rejected() {
        let mut logs = OtlpRequest::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        LogRecord::default(),
                        LogRecord { span_id: vec![1; 3], ..Default::default() },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        assert_eq!(remove_invalid(&mut logs).count, 1);
        assert_eq!(logs.record_count(), 1);

        let gauge = |name: &str, points: usize| Metric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint::default(); points],
            })),
            ..Default::default()
        };
        let mut metrics = OtlpRequest::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![gauge("cpu", 2), gauge("", 3)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let rej = remove_invalid(&mut metrics);
        assert_eq!(rej.count, 3);
        assert!(rej.message.contains("name"));
        assert_eq!(metrics.record_count(), 2);
    }
}
