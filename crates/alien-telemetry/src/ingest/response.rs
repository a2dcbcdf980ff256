//! OTLP/HTTP response bodies: `Export*ServiceResponse` on success, `google.rpc.Status` on error,
//! each in the format of the request.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use super::PayloadFormat;
use crate::Signal;

/// The success body for `signal`, with `partialSuccess` when `rejected > 0`.
pub(crate) fn export_response(
    signal: Signal,
    format: PayloadFormat,
    rejected: u64,
    message: &str,
) -> Bytes {
    let rejected_i64 = i64::try_from(rejected).unwrap_or(i64::MAX);
    let partial = rejected > 0;
    match format {
        PayloadFormat::Protobuf => match signal {
            Signal::Traces => ExportTraceServiceResponse {
                partial_success: partial.then(|| ExportTracePartialSuccess {
                    rejected_spans: rejected_i64,
                    error_message: message.to_owned(),
                }),
            }
            .encode_to_vec(),
            Signal::Logs => ExportLogsServiceResponse {
                partial_success: partial.then(|| ExportLogsPartialSuccess {
                    rejected_log_records: rejected_i64,
                    error_message: message.to_owned(),
                }),
            }
            .encode_to_vec(),
            Signal::Metrics => ExportMetricsServiceResponse {
                partial_success: partial.then(|| ExportMetricsPartialSuccess {
                    rejected_data_points: rejected_i64,
                    error_message: message.to_owned(),
                }),
            }
            .encode_to_vec(),
        }
        .into(),
        PayloadFormat::Json => {
            // Written by hand: the proto3 JSON mapping wants int64 as a string and an absent
            // partialSuccess rather than `null`.
            let value = if partial {
                let field = match signal {
                    Signal::Traces => "rejectedSpans",
                    Signal::Logs => "rejectedLogRecords",
                    Signal::Metrics => "rejectedDataPoints",
                };
                serde_json::json!({
                    "partialSuccess": { field: rejected.to_string(), "errorMessage": message }
                })
            } else {
                serde_json::json!({})
            };
            Bytes::from(value.to_string())
        }
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP servers send with an error status.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The error body: a `google.rpc.Status` with gRPC `code` and `message`.
pub(crate) fn status_body(format: PayloadFormat, code: i32, message: &str) -> Bytes {
    match format {
        PayloadFormat::Protobuf => {
            RpcStatus { code, message: message.to_owned() }.encode_to_vec().into()
        }
        PayloadFormat::Json => {
            Bytes::from(serde_json::json!({ "code": code, "message": message }).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_success_is_an_empty_message() {
        for signal in Signal::ALL {
            assert!(export_response(signal, PayloadFormat::Protobuf, 0, "").is_empty());
            assert_eq!(&export_response(signal, PayloadFormat::Json, 0, "")[..], b"{}");
        }
    }

    #[test]
    fn partial_success_in_both_formats() {
        let pb = export_response(Signal::Logs, PayloadFormat::Protobuf, 2, "bad ids");
        let decoded = ExportLogsServiceResponse::decode(pb).unwrap();
        let ps = decoded.partial_success.unwrap();
        assert_eq!((ps.rejected_log_records, ps.error_message.as_str()), (2, "bad ids"));

        let json = export_response(Signal::Metrics, PayloadFormat::Json, 3, "no name");
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["partialSuccess"]["rejectedDataPoints"], "3");
        assert_eq!(v["partialSuccess"]["errorMessage"], "no name");
    }

    #[test]
    fn status_body_decodes() {
        let pb = status_body(PayloadFormat::Protobuf, 8, "queue full");
        let st = RpcStatus::decode(pb).unwrap();
        assert_eq!((st.code, st.message.as_str()), (8, "queue full"));
        let json: serde_json::Value =
            serde_json::from_slice(&status_body(PayloadFormat::Json, 3, "bad")).unwrap();
        assert_eq!(json, serde_json::json!({"code": 3, "message": "bad"}));
    }
}
