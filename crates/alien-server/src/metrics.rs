//! Prometheus metrics: HTTP requests by route and status, a latency histogram, process metrics.
//!
//! Metrics are recorded through the `metrics` facade, so layer crates count their own events
//! without knowing about Prometheus; the recorder is installed once per process.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Name of the request counter.
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// Name of the latency histogram.
pub const HTTP_DURATION: &str = "http_request_duration_seconds";

static REGISTRY: OnceLock<MetricsRegistry> = OnceLock::new();

/// The process-wide Prometheus recorder and its process-metrics collector.
#[derive(Clone)]
pub struct MetricsRegistry {
    handle: PrometheusHandle,
    process: &'static metrics_process::Collector,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRegistry")
    }
}

impl MetricsRegistry {
    /// The process-wide registry, installing the recorder on first use. When another recorder
    /// is already installed (an embedder's), a detached recorder is used for `/metrics`.
    pub fn global() -> Self {
        Self::install(None)
    }

    /// Like [`global`](Self::global), and on first use also feeds `also` (the OpenTelemetry
    /// export of the manager's own metrics, say) with everything recorded. Call it before the
    /// manager is built; later calls return the registry installed first.
    pub fn install(also: Option<Box<dyn metrics::Recorder + Sync>>) -> Self {
        REGISTRY
            .get_or_init(|| {
                let builder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Full(HTTP_DURATION.to_owned()),
                        &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                    )
                    .unwrap_or_else(|_| PrometheusBuilder::new());
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                let installed = match also {
                    Some(also) => metrics::set_global_recorder(
                        metrics_util::layers::FanoutBuilder::default()
                            .add_recorder(recorder)
                            .add_recorder(also)
                            .build(),
                    )
                    .is_ok(),
                    None => metrics::set_global_recorder(recorder).is_ok(),
                };
                if !installed {
                    tracing::warn!("a metrics recorder was already installed; /metrics shows process metrics only");
                }
                let process: &'static metrics_process::Collector =
                    Box::leak(Box::new(metrics_process::Collector::default()));
                process.describe();
                metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route and status.");
                metrics::describe_histogram!(HTTP_DURATION, metrics::Unit::Seconds, "HTTP request latency by method and route.");
                MetricsRegistry { handle, process }
            })
            .clone()
    }

    /// The Prometheus text exposition, with fresh process metrics.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }
}

/// Middleware: counts every request by method, matched route and status, and times it.
pub async fn track_http(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
    // The route template, not the raw path, keeps label cardinality bounded.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}
