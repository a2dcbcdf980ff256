use std::collections::BTreeMap;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_proto::tonic::common::v1::any_value;
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::test_sink::OtlpTestSink;
use crate::{OtlpRequest, Signal};

fn config(endpoint: Option<String>) -> TelemetrySettings {
    TelemetrySettings {
        otlp_endpoint: endpoint,
        headers: BTreeMap::from([("x-api-key".into(), "k1".into())]),
        ..TelemetrySettings::default()
    }
}

fn service_name(request: &mut OtlpRequest) -> Vec<String> {
    request
        .resources_mut()
        .into_iter()
        .flat_map(|r| r.attributes.iter())
        .filter(|kv| kv.key == "service.name")
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_tracing_span_and_a_metric_reach_the_endpoint_as_alien_manager() {
    let sink = OtlpTestSink::start().await.unwrap();
    let telemetry = init_self_telemetry(&config(Some(sink.endpoint()))).unwrap().unwrap();
    let subscriber = tracing_subscriber::registry().with(telemetry.layer());
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("deployment_step", deployment = "dep_1");
        let _entered = span.enter();
        tracing::info!("inside the step");
    });
    let counter =
        telemetry.meter_provider().meter("alien-manager").u64_counter("loop_ticks").build();
    counter.add(3, &[]);
    telemetry.shutdown(Duration::from_secs(10)).await.unwrap();

    let counts = sink.counts();
    assert!(counts.spans >= 1 && counts.data_points >= 1, "{counts:?}");
    let requests = sink.requests();
    let traces = requests.iter().find(|r| r.signal == Signal::Traces).unwrap();
    assert!(traces.gzip, "gzip is the default compression");
    assert_eq!(traces.headers["x-api-key"], "k1");
    assert_eq!(traces.headers["content-type"], "application/x-protobuf");
    let mut request = traces.request.clone();
    assert_eq!(service_name(&mut request), ["alien-manager"]);
    let OtlpRequest::Traces(t) = &request else { panic!("not traces") };
    let names: Vec<&str> = t
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.as_str())
        .collect();
    assert!(names.contains(&"deployment_step"), "{names:?}");

    let metrics = requests.iter().find(|r| r.signal == Signal::Metrics).unwrap();
    let mut request = metrics.request.clone();
    assert_eq!(service_name(&mut request), ["alien-manager"]);
}

#[tokio::test]
async fn off_without_endpoint_or_when_self_is_false() {
    assert!(init_self_telemetry(&config(None)).unwrap().is_none());
    let mut off = config(Some("http://127.0.0.1:4318".into()));
    off.self_telemetry = false;
    assert!(init_self_telemetry(&off).unwrap().is_none());
    let bad = config(Some("ftp://127.0.0.1".into()));
    assert!(matches!(init_self_telemetry(&bad), Err(SelfTelemetryError::Config(_))));
}

#[test]
fn outside_a_runtime_it_says_so() {
    let result = init_self_telemetry(&config(Some("http://127.0.0.1:4318".into())));
    assert!(matches!(result, Err(SelfTelemetryError::NoRuntime)), "{result:?}");
}
