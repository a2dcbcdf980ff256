//! The manager's own traces and metrics, exported with the OpenTelemetry SDK over OTLP/HTTP
//! protobuf to the configured endpoint, as `service.name = alien-manager`.
//!
//! The SDK exports from its own threads; HTTP goes through the workspace's reqwest client,
//! spawned on the Tokio runtime that called [`init_self_telemetry`], so no second HTTP stack
//! (nor reqwest 0.13) enters the build.

use std::collections::HashMap;
use std::time::Duration;

use crate::TelemetrySettings;
use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

use crate::sink::{base_url, header_map};

/// Largest response body read from the backend.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// `service.name` of the manager's own telemetry.
pub const SERVICE_NAME: &str = "alien-manager";

/// Why the manager's own telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum SelfTelemetryError {
    /// The endpoint or headers are invalid (same rules as the forwarder).
    #[error(transparent)]
    Config(#[from] crate::SinkBuildError),
    /// Called outside a Tokio runtime.
    #[error("the manager's own telemetry must start inside the Tokio runtime")]
    NoRuntime,
    /// The OTLP exporter could not be built.
    #[error("building the OTLP {signal} exporter: {reason}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// What the SDK reported.
        reason: String,
    },
    /// Flushing at shutdown failed.
    #[error("flushing the manager's own telemetry: {0}")]
    Shutdown(String),
}

/// The running SDK providers; flush them with [`SelfTelemetry::shutdown`].
#[derive(Debug)]
pub struct SelfTelemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

/// Starts exporting the manager's spans and metrics when `[telemetry]` has an endpoint and
/// `self = true`; `Ok(None)` otherwise. Must be called inside the Tokio runtime.
pub fn init_self_telemetry(
    config: &TelemetrySettings,
) -> Result<Option<SelfTelemetry>, SelfTelemetryError> {
    let Some(endpoint) = config.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty()) else {
        return Ok(None);
    };
    if !config.self_telemetry {
        return Ok(None);
    }
    let base = base_url(endpoint.trim())?;
    // Validates names and values the same way as the forwarder does.
    header_map(config.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let headers: HashMap<String, String> =
        config.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let runtime =
        tokio::runtime::Handle::try_current().map_err(|_| SelfTelemetryError::NoRuntime)?;
    let timeout = Duration::from_secs(config.timeout_secs.max(1));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("alien-manager/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(crate::SinkBuildError::from)?;
    let http = RuntimeHttpClient { client, runtime };
    let compression = config.gzip.then_some(opentelemetry_otlp::Compression::Gzip);

    let mut spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http.clone())
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{base}/v1/traces"))
        .with_timeout(timeout)
        .with_headers(headers.clone());
    let mut metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(http)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{base}/v1/metrics"))
        .with_timeout(timeout)
        .with_headers(headers);
    if let Some(c) = compression {
        spans = spans.with_compression(c);
        metrics = metrics.with_compression(c);
    }
    let span_exporter = spans
        .build()
        .map_err(|e| SelfTelemetryError::Exporter { signal: "traces", reason: e.to_string() })?;
    let metric_exporter = metrics
        .build()
        .map_err(|e| SelfTelemetryError::Exporter { signal: "metrics", reason: e.to_string() })?;

    let resource = Resource::builder().with_service_name(SERVICE_NAME).build();
    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(span_exporter)
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_periodic_exporter(metric_exporter)
        .build();
    Ok(Some(SelfTelemetry { tracer_provider, meter_provider }))
}

impl SelfTelemetry {
    /// A `tracing` layer that turns the manager's spans into OpenTelemetry spans; add it to the
    /// subscriber next to the fmt layer.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer().with_tracer(self.tracer_provider.tracer(SERVICE_NAME))
    }

    /// A `metrics` recorder feeding this meter provider: install it next to the Prometheus
    /// recorder (a fan-out) so the facade's counters, gauges and histograms are exported too.
    pub fn metrics_recorder(&self) -> OtelRecorder {
        use opentelemetry::metrics::MeterProvider as _;
        OtelRecorder::new(self.meter_provider.meter(SERVICE_NAME))
    }

    /// The meter provider, for the manager's own OpenTelemetry instruments.
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.meter_provider
    }

    /// The tracer provider.
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// Makes both providers the process-wide OpenTelemetry globals.
    pub fn set_global(&self) {
        opentelemetry::global::set_tracer_provider(self.tracer_provider.clone());
        opentelemetry::global::set_meter_provider(self.meter_provider.clone());
    }

    /// Exports what is buffered and stops, within `timeout` per provider. Runs the SDK's
    /// blocking shutdown on a blocking thread so the runtime stays free to send the requests.
    pub async fn shutdown(self, timeout: Duration) -> Result<(), SelfTelemetryError> {
        let Self { tracer_provider, meter_provider } = self;
        tokio::task::spawn_blocking(move || {
            let traces = tracer_provider.shutdown_with_timeout(timeout);
            let metrics = meter_provider.shutdown_with_timeout(timeout);
            match (traces, metrics) {
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), _) | (_, Err(e)) => Err(SelfTelemetryError::Shutdown(e.to_string())),
            }
        })
        .await
        .map_err(|e| SelfTelemetryError::Shutdown(e.to_string()))?
    }
}

/// reqwest 0.12 for the SDK's exporters: the SDK calls from its own threads, so every request
/// runs as a task on the manager's runtime and the caller only awaits its result.
#[derive(Debug, Clone)]
struct RuntimeHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for RuntimeHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let mut builder = Response::builder().status(response.status());
            if let Some(headers) = builder.headers_mut() {
                *headers = response.headers().clone();
            }
            let mut response = response;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err("OTLP response body larger than 4 MiB".into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, HttpError>(builder.body(Bytes::from(body))?)
        });
        task.await?
    }
}

#[cfg(test)]
mod tests;

mod recorder;
pub use recorder::OtelRecorder;
