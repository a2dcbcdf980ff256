//! `cargo xtask bench telemetry`: OTLP spans forwarded end to end (workload -> manager ingest ->
//! forwarder -> OTLP sink) with 8 concurrent exporters sending 512-span protobuf batches (the
//! SDK's default batch) for 10 s; ingest latency p50/p99 at that rate, 429s, and how long the
//! forwarder needs to drain after the load stops.
//!
//! Reference from the same run: the same exporters posting the same batches straight to the OTLP
//! sink (a bare receiver that only decodes), the rate a pipeline without the manager would see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::report::{Figure, Floor};

use alien_telemetry::test_sink::OtlpTestSink;
use common::Setup;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

const CLIENTS: usize = 8;
const SPANS_PER_REQUEST: usize = 512;
const RUN: Duration = Duration::from_secs(10);
/// The rate of the latency target.
const TARGET: u64 = 100_000;

fn batch() -> Vec<u8> {
    let attr = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    };
    let spans = (0..SPANS_PER_REQUEST)
        .map(|i| Span {
            trace_id: [7u8; 16].to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: 1u64.to_be_bytes().to_vec(),
            name: format!("GET /api/items/{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_001_000_000,
            attributes: vec![attr("http.method", "GET"), attr("http.route", "/api/items/{id}")],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr("service.name", "bench")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

struct Load {
    spans: u64,
    throttled: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Load {
    fn new(mut latencies: Vec<Duration>, throttled: u64, elapsed: Duration) -> Load {
        latencies.sort();
        Load {
            spans: latencies.len() as u64 * SPANS_PER_REQUEST as u64,
            throttled,
            latencies,
            elapsed,
        }
    }
}

/// `CLIENTS` exporters posting `body` to `url` for [`RUN`].
async fn load(url: String, token: Option<String>, body: Vec<u8>) -> Load {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let throttled = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, token, body, stop, throttled) = (
            client.clone(),
            url.clone(),
            token.clone(),
            bytes::Bytes::from(body.clone()),
            stop.clone(),
            throttled.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut request = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body.clone());
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                response.bytes().await.unwrap();
                match status {
                    200 => latencies.push(t.elapsed()),
                    429 => {
                        throttled.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Load::new(latencies, throttled.load(Ordering::Relaxed), started.elapsed())
}

/// Open loop: one batch every `1 / (rate / SPANS_PER_REQUEST)` s for [`RUN`], whatever the
/// answers take (latency at a given rate, not at saturation).
async fn paced(url: String, token: String, body: Vec<u8>, spans_per_sec: u64) -> Load {
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let body = bytes::Bytes::from(body);
    let every = Duration::from_secs_f64(SPANS_PER_REQUEST as f64 / spans_per_sec as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let throttled = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    while started.elapsed() < RUN {
        tick.tick().await;
        let (client, url, token, body, throttled) =
            (client.clone(), url.clone(), token.clone(), body.clone(), throttled.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let response = client
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            response.bytes().await.unwrap();
            match status {
                200 => Some(t.elapsed()),
                429 => {
                    throttled.fetch_add(1, Ordering::Relaxed);
                    None
                }
                other => panic!("unexpected status {other}"),
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Load::new(latencies, throttled.load(Ordering::Relaxed), started.elapsed())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let body = batch();

    // Reference: straight to the sink.
    let direct = OtlpTestSink::start().await.unwrap();
    direct.keep_requests(false);
    let reference = load(format!("{}/v1/traces", direct.endpoint()), None, body.clone()).await;
    let reference_rate = reference.spans as f64 / reference.elapsed.as_secs_f64();
    drop(direct);

    // The manager, forwarding to a sink.
    let sink = OtlpTestSink::start().await.unwrap();
    sink.keep_requests(false);
    let mut setup = Setup::new().await;
    setup.config.telemetry.otlp_endpoint = Some(sink.endpoint());
    let ingestor_sink = alien_telemetry::build_sink(&alien_server::api::telemetry::settings(
        &setup.config.telemetry,
    ))
    .unwrap();
    let recent = Arc::new(alien_telemetry::RecentLogs::default());
    let ingestor =
        Arc::new(alien_telemetry::Ingestor::new(ingestor_sink).with_recent_logs(recent.clone()));
    setup.serve(setup.builder().telemetry(ingestor, recent)).await;
    let base = setup.base.clone();
    let (_, token) = setup.deployment(&reqwest::Client::new()).await;

    // At the target rate: latency while the sink keeps up.
    let before = sink.counts().spans;
    let at_target = paced(format!("{base}/v1/traces"), token.clone(), body.clone(), TARGET).await;
    let kept_up =
        sink.wait_for(Duration::from_secs(30), |c| c.spans - before >= at_target.spans).await;
    println!(
        "telemetry at {TARGET} spans/s offered (open loop, {SPANS_PER_REQUEST}-span batches): {:.0} spans/s accepted, ingest p50 {:.2} ms p99 {:.2} ms, {} throttled, sink {} (target p99 < 10 ms)",
        at_target.spans as f64 / at_target.elapsed.as_secs_f64(),
        pct(&at_target.latencies, 0.5),
        pct(&at_target.latencies, 0.99),
        at_target.throttled,
        if kept_up.is_ok() { "kept up" } else { "fell behind" },
    );

    // Saturation: as fast as 8 exporters go.
    let before = sink.counts().spans;
    let run = load(format!("{base}/v1/traces"), Some(token), body.clone()).await;
    let forwarded_in_run = sink.counts().spans - before;
    let drained_at = Instant::now();
    let drained = sink.wait_for(Duration::from_secs(60), |c| c.spans - before >= run.spans).await;
    let drain = drained_at.elapsed();
    let rate = run.spans as f64 / run.elapsed.as_secs_f64();
    println!(
        "telemetry at saturation: {CLIENTS} exporters x {SPANS_PER_REQUEST}-span protobuf batches ({:.0} KiB) for {:.0} s",
        body.len() as f64 / 1024.0,
        run.elapsed.as_secs_f64()
    );
    println!(
        "  through the manager: {:.0} spans/s accepted, {:.0} spans/s forwarded during the run, ingest p50 {:.2} ms p99 {:.2} ms, {} throttled (429); drained the rest in {:.2} s{}",
        rate,
        forwarded_in_run as f64 / run.elapsed.as_secs_f64(),
        pct(&run.latencies, 0.5),
        pct(&run.latencies, 0.99),
        run.throttled,
        drain.as_secs_f64(),
        if drained.is_ok() { "" } else { " (NOT all delivered within 60 s)" },
    );
    println!(
        "  reference, straight to the sink: {:.0} spans/s, p50 {:.2} ms p99 {:.2} ms",
        reference_rate,
        pct(&reference.latencies, 0.5),
        pct(&reference.latencies, 0.99)
    );
    println!(
        "  ratio end to end / bare receiver: {:.2} (target >= 100,000 spans/s, p99 < 10 ms)",
        rate / reference_rate
    );
    assert!(drained.is_ok(), "every accepted span must reach the sink");
    Figure::new("telemetry", format!("ingest p99 at {TARGET} spans/s offered"), "ms")
        .lower_is_better()
        .rounds(vec![pct(&at_target.latencies, 0.99)])
        .floor(Floor::Below(10.0))
        .report();
    Figure::new(
        "telemetry",
        format!("spans/s accepted and forwarded, {CLIENTS} exporters at saturation"),
        "spans/s",
    )
    .rounds(vec![rate])
    .against("the same exporters straight to the OTLP sink", vec![reference_rate])
    .report();
}
