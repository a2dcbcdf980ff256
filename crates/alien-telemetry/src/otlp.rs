//! One decoded OTLP export request of any signal, with the operations every stage needs:
//! decode (protobuf or JSON), encode (protobuf), count records, and reach every resource.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::Signal;

/// A decoded `Export{Trace,Logs,Metrics}ServiceRequest`.
#[derive(Debug, Clone, PartialEq)]
pub enum OtlpRequest {
    /// `ExportTraceServiceRequest`.
    Traces(ExportTraceServiceRequest),
    /// `ExportLogsServiceRequest`.
    Logs(ExportLogsServiceRequest),
    /// `ExportMetricsServiceRequest`.
    Metrics(ExportMetricsServiceRequest),
}

/// Why a body is not a valid OTLP message of its signal.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a protobuf encoding of the signal's export request.
    #[error("invalid OTLP protobuf {signal} request: {source}")]
    Protobuf {
        /// The signal whose message was expected.
        signal: Signal,
        /// What prost reported.
        #[source]
        source: prost::DecodeError,
    },
    /// Not an OTLP/JSON encoding of the signal's export request.
    #[error("invalid OTLP/JSON {signal} request: {source}")]
    Json {
        /// The signal whose message was expected.
        signal: Signal,
        /// What serde_json reported (with line and column).
        #[source]
        source: serde_json::Error,
    },
}

impl OtlpRequest {
    /// Decodes a protobuf `Export*ServiceRequest` of `signal`.
    pub fn decode_protobuf(signal: Signal, body: &[u8]) -> Result<Self, DecodeError> {
        let wrap = |source| DecodeError::Protobuf { signal, source };
        Ok(match signal {
            Signal::Traces => Self::Traces(ExportTraceServiceRequest::decode(body).map_err(wrap)?),
            Signal::Logs => Self::Logs(ExportLogsServiceRequest::decode(body).map_err(wrap)?),
            Signal::Metrics => {
                Self::Metrics(ExportMetricsServiceRequest::decode(body).map_err(wrap)?)
            }
        })
    }

    /// Decodes an OTLP/JSON `Export*ServiceRequest` of `signal` (hex trace and span ids,
    /// enums as integers, 64-bit integers as strings or numbers).
    pub fn decode_json(signal: Signal, body: &[u8]) -> Result<Self, DecodeError> {
        let wrap = |source| DecodeError::Json { signal, source };
        Ok(match signal {
            Signal::Traces => Self::Traces(serde_json::from_slice(body).map_err(wrap)?),
            Signal::Logs => Self::Logs(serde_json::from_slice(body).map_err(wrap)?),
            Signal::Metrics => Self::Metrics(serde_json::from_slice(body).map_err(wrap)?),
        })
    }

    /// The signal of the request.
    pub fn signal(&self) -> Signal {
        match self {
            Self::Traces(_) => Signal::Traces,
            Self::Logs(_) => Signal::Logs,
            Self::Metrics(_) => Signal::Metrics,
        }
    }

    /// The protobuf encoding, as forwarded.
    pub fn encode_protobuf(&self) -> Bytes {
        match self {
            Self::Traces(r) => r.encode_to_vec(),
            Self::Logs(r) => r.encode_to_vec(),
            Self::Metrics(r) => r.encode_to_vec(),
        }
        .into()
    }

    /// The number of records: spans, log records or metric data points.
    pub fn record_count(&self) -> u64 {
        let n: usize = match self {
            Self::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum(),
            Self::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len())
                .sum(),
            Self::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(data_point_count)
                .sum(),
        };
        n as u64
    }

    /// Every resource entry's resource, created empty where the request had none.
    pub fn resources_mut(&mut self) -> Vec<&mut Resource> {
        match self {
            Self::Traces(r) => {
                r.resource_spans.iter_mut().map(|e| e.resource.get_or_insert_default()).collect()
            }
            Self::Logs(r) => {
                r.resource_logs.iter_mut().map(|e| e.resource.get_or_insert_default()).collect()
            }
            Self::Metrics(r) => {
                r.resource_metrics.iter_mut().map(|e| e.resource.get_or_insert_default()).collect()
            }
        }
    }
}

/// The number of data points of one metric (zero when it carries no data).
pub fn data_point_count(metric: &Metric) -> usize {
    match &metric.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn spans(n: usize) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span { name: "s".into(), ..Default::default() }; n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn protobuf_round_trip_keeps_every_record() {
        let req = OtlpRequest::Traces(spans(3));
        let bytes = req.encode_protobuf();
        let back = OtlpRequest::decode_protobuf(Signal::Traces, &bytes).unwrap();
        assert_eq!(back, req);
        assert_eq!(back.record_count(), 3);
    }

    #[test]
    fn concatenated_encodings_merge_resource_entries() {
        // The forwarder batches by concatenating encoded requests; protobuf appends repeated
        // fields, so the result must hold both requests' resource entries.
        let a = OtlpRequest::Traces(spans(2)).encode_protobuf();
        let b = OtlpRequest::Traces(spans(5)).encode_protobuf();
        let merged = [a.as_ref(), b.as_ref()].concat();
        let back = OtlpRequest::decode_protobuf(Signal::Traces, &merged).unwrap();
        assert_eq!(back.record_count(), 7);
        let OtlpRequest::Traces(t) = back else { panic!("not traces") };
        assert_eq!(t.resource_spans.len(), 2);
    }

    #[test]
    fn resources_are_created_when_absent() {
        let mut req = OtlpRequest::Traces(spans(1));
        assert_eq!(req.resources_mut().len(), 1);
        let OtlpRequest::Traces(t) = &req else { panic!("not traces") };
        assert!(t.resource_spans[0].resource.is_some());
    }
}
