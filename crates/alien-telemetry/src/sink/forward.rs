//! The forwarder: per-signal byte-bounded queues, batching, gzip, retries, and a bounded flush
//! at shutdown.
//!
//! Memory: every queued byte (waiting or in flight) is reserved from one budget of
//! `queue-bytes` shared by the three signals; a request that does not fit is refused at once
//! (ingest answers 429). An export larger than the whole budget is still taken when the budget
//! is empty, so the bound is `queue-bytes` plus one request (16 MiB at most) plus one compressed
//! batch per signal in flight.
//!
//! Delivery: one worker per signal sends one batch at a time (up to 512 KiB of concatenated
//! requests, or whatever arrived within 200 ms of the oldest one) to `{endpoint}/v1/{signal}`.
//! Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and jitter,
//! honouring `Retry-After`, for as long as it takes: data is only dropped when the backend
//! refuses it for good (other 4xx, or `partialSuccess` rejections) or when shutdown runs out of
//! time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::TelemetrySettings;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::retry::{RetryPolicy, is_retryable, parse_retry_after};
use super::{EncodedExport, ShutdownReport, SinkBuildError, SinkError, SinkStats, TelemetrySink};
use crate::{Signal, stats};

/// Largest response body read from the backend (only `partialSuccess` is of interest).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Settings of [`OtlpHttpSink`].
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// OTLP/HTTP base URL; signals go to `{endpoint}/v1/{signal}`.
    pub endpoint: String,
    /// Headers sent with every request (authentication).
    pub headers: HeaderMap,
    /// Compress request bodies with gzip.
    pub gzip: bool,
    /// Time limit of one request.
    pub timeout: Duration,
    /// Bytes the three queues may hold together.
    pub queue_bytes: usize,
    /// Largest batch (concatenated requests) per HTTP request.
    pub batch_max_bytes: usize,
    /// How long the oldest waiting request may wait for a batch to fill.
    pub batch_linger: Duration,
    /// Backoff between retries.
    pub retry: RetryPolicy,
}

impl ForwarderConfig {
    /// Defaults for `endpoint`: gzip, 10 s timeout, 64 MiB queue, 512 KiB or 200 ms batches.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            headers: HeaderMap::new(),
            gzip: true,
            timeout: Duration::from_secs(10),
            queue_bytes: 64 * 1024 * 1024,
            batch_max_bytes: 512 * 1024,
            batch_linger: Duration::from_millis(200),
            retry: RetryPolicy::default(),
        }
    }

    /// The forwarder of `config`, or `None` without an `otlp_endpoint`.
    pub fn from_settings(config: &TelemetrySettings) -> Result<Option<Self>, SinkBuildError> {
        let Some(endpoint) = config.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty())
        else {
            return Ok(None);
        };
        let mut forwarder = ForwarderConfig::new(endpoint.trim());
        forwarder.headers =
            header_map(config.headers.iter().map(|(name, value)| (name.as_str(), value.as_str())))?;
        forwarder.gzip = config.gzip;
        forwarder.timeout = Duration::from_secs(config.timeout_secs.max(1));
        forwarder.queue_bytes = usize::try_from(config.queue_bytes).unwrap_or(usize::MAX);
        Ok(Some(forwarder))
    }
}

/// Builds a header map from configured pairs, marking every value sensitive.
pub(crate) fn header_map<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<HeaderMap, SinkBuildError> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let invalid = |reason: String| SinkBuildError::InvalidHeader { name: name.into(), reason };
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let mut value = HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
        value.set_sensitive(true);
        map.append(header, value);
    }
    Ok(map)
}

/// Validates an OTLP base URL and returns it without a trailing slash.
pub(crate) fn base_url(endpoint: &str) -> Result<String, SinkBuildError> {
    let invalid = |reason: &str| SinkBuildError::InvalidEndpoint {
        endpoint: endpoint.into(),
        reason: reason.into(),
    };
    let url = reqwest::Url::parse(endpoint).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base URL takes no query or fragment"));
    }
    Ok(endpoint.trim_end_matches('/').to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Shutdown started: send everything now, no lingering.
    Draining,
    /// Shutdown timed out (or the sink was dropped): drop what is left.
    Aborted,
}

#[derive(Debug)]
struct Queued {
    payload: Bytes,
    records: u64,
    at: Instant,
}

#[derive(Debug, Default)]
struct LaneState {
    items: VecDeque<Queued>,
    /// Bytes waiting in `items`.
    waiting_bytes: usize,
    /// Bytes waiting plus bytes of the batch in flight.
    held_bytes: usize,
    /// When the worker retries next, while it is backing off.
    retry_at: Option<Instant>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Counters {
    enqueued: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    retried: AtomicU64,
    requests: AtomicU64,
}

#[derive(Debug)]
struct Lane {
    signal: Signal,
    url: String,
    state: Mutex<LaneState>,
    wake: Notify,
    counters: Counters,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct Shared {
    config: ForwarderConfig,
    client: reqwest::Client,
    lanes: [Lane; 3],
    used_bytes: AtomicUsize,
    phase: watch::Sender<Phase>,
}

/// Forwards telemetry to an OTLP/HTTP backend; see the module documentation for its guarantees.
#[derive(Debug)]
pub struct OtlpHttpSink {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl OtlpHttpSink {
    /// Validates `config` and starts one worker per signal on the current Tokio runtime.
    pub fn start(config: ForwarderConfig) -> Result<Self, SinkBuildError> {
        let base = base_url(&config.endpoint)?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("alien-manager/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let lane = |signal: Signal| Lane {
            signal,
            url: format!("{base}{}", signal.path()),
            state: Mutex::new(LaneState::default()),
            wake: Notify::new(),
            counters: Counters::default(),
        };
        let (phase, _) = watch::channel(Phase::Running);
        let shared = Arc::new(Shared {
            config,
            client,
            lanes: Signal::ALL.map(lane),
            used_bytes: AtomicUsize::new(0),
            phase,
        });
        for signal in Signal::ALL {
            stats::queue_bytes(signal, 0);
        }
        let workers = Signal::ALL
            .into_iter()
            .map(|signal| tokio::spawn(run_lane(Arc::clone(&shared), signal)))
            .collect();
        Ok(Self { shared, workers: Mutex::new(workers) })
    }

    /// The suggested client delay when the queue is full: the time to the worker's next retry
    /// when it is backing off, else one second.
    fn retry_hint(state: &LaneState) -> Duration {
        let wait = state.retry_at.map(|at| at.saturating_duration_since(Instant::now()));
        let secs = wait.map_or(1, |w| w.as_secs() + u64::from(w.subsec_nanos() > 0));
        Duration::from_secs(secs.clamp(1, 60))
    }
}

impl Drop for OtlpHttpSink {
    fn drop(&mut self) {
        // Without a shutdown the workers stop at once; what they held is counted as dropped.
        self.shared.phase.send_replace(Phase::Aborted);
    }
}

#[async_trait]
impl TelemetrySink for OtlpHttpSink {
    fn try_enqueue(&self, export: EncodedExport) -> Result<(), SinkError> {
        let signal = export.signal;
        let lane = &self.shared.lanes[signal.index()];
        let size = export.payload.len();
        let cap = self.shared.config.queue_bytes;
        let mut state = lane.lock();
        if state.closed {
            return Err(SinkError::Closed { signal });
        }
        let reserved =
            self.shared.used_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used.saturating_add(size) <= cap).then_some(used + size)
            });
        if reserved.is_err() {
            return Err(SinkError::Full { signal, retry_after: Self::retry_hint(&state) });
        }
        let was_empty = state.items.is_empty();
        let batch = self.shared.config.batch_max_bytes;
        let crossed = state.waiting_bytes < batch && state.waiting_bytes + size >= batch;
        state.items.push_back(Queued {
            payload: export.payload,
            records: export.records,
            at: Instant::now(),
        });
        state.waiting_bytes += size;
        state.held_bytes += size;
        stats::queue_bytes(signal, state.held_bytes);
        drop(state);
        lane.counters.enqueued.fetch_add(export.records, Ordering::Relaxed);
        if was_empty || crossed {
            lane.wake.notify_one();
        }
        Ok(())
    }

    fn stats(&self, signal: Signal) -> SinkStats {
        let lane = &self.shared.lanes[signal.index()];
        let c = &lane.counters;
        SinkStats {
            queued_bytes: lane.lock().held_bytes as u64,
            enqueued: c.enqueued.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            discarded: 0,
            requests: c.requests.load(Ordering::Relaxed),
        }
    }

    async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let dropped_before: u64 =
            self.shared.lanes.iter().map(|l| l.counters.dropped.load(Ordering::Relaxed)).sum();
        for lane in &self.shared.lanes {
            lane.lock().closed = true;
        }
        self.shared.phase.send_if_modified(|p| {
            let running = *p == Phase::Running;
            if running {
                *p = Phase::Draining;
            }
            running
        });
        let mut workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        for worker in &mut workers {
            if tokio::time::timeout_at(deadline, worker).await.is_err() {
                timed_out = true;
                break;
            }
        }
        if timed_out {
            self.shared.phase.send_replace(Phase::Aborted);
            for worker in workers {
                // A finished or aborted worker: either way nothing is left to wait for.
                let _ = worker.await;
            }
        }
        let dropped_after: u64 =
            self.shared.lanes.iter().map(|l| l.counters.dropped.load(Ordering::Relaxed)).sum();
        ShutdownReport { dropped: dropped_after - dropped_before, timed_out }
    }
}

/// A batch taken from a lane: concatenated requests.
struct Batch {
    payload: Bytes,
    records: u64,
}

async fn run_lane(shared: Arc<Shared>, signal: Signal) {
    let lane = &shared.lanes[signal.index()];
    let mut phase = shared.phase.subscribe();
    while let Some(batch) = next_batch(&shared, lane, &mut phase).await {
        let size = batch.payload.len();
        deliver(&shared, lane, batch, &mut phase).await;
        release(&shared, lane, size);
    }
    // Aborted, or drained to the end: anything still here is lost.
    let left: Vec<Queued> = {
        let mut state = lane.lock();
        state.waiting_bytes = 0;
        state.items.drain(..).collect()
    };
    let (bytes, records) =
        left.iter().fold((0, 0), |(b, r), q| (b + q.payload.len(), r + q.records));
    if records > 0 {
        tracing::warn!(%signal, records, "telemetry forwarder stopped with records still queued; they are dropped");
        lane.counters.dropped.fetch_add(records, Ordering::Relaxed);
        stats::dropped(signal, records);
    }
    release(&shared, lane, bytes);
}

fn release(shared: &Shared, lane: &Lane, bytes: usize) {
    shared.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
    let mut state = lane.lock();
    state.held_bytes -= bytes;
    stats::queue_bytes(lane.signal, state.held_bytes);
}

/// Waits until a batch is due (full, lingered long enough, or draining) and takes it; `None`
/// when the lane must stop.
async fn next_batch(
    shared: &Shared,
    lane: &Lane,
    phase: &mut watch::Receiver<Phase>,
) -> Option<Batch> {
    let max = shared.config.batch_max_bytes;
    loop {
        let current = *phase.borrow_and_update();
        if current == Phase::Aborted {
            return None;
        }
        let due = {
            let mut state = lane.lock();
            match state.items.front() {
                None if current == Phase::Draining => return None,
                None => None,
                Some(first) => {
                    let due = first.at + shared.config.batch_linger;
                    if current == Phase::Draining
                        || state.waiting_bytes >= max
                        || Instant::now() >= due
                    {
                        return Some(take_batch(&mut state, max));
                    }
                    Some(due)
                }
            }
        };
        tokio::select! {
            _ = lane.wake.notified() => {}
            _ = sleep_until_some(due) => {}
            changed = phase.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn take_batch(state: &mut LaneState, max: usize) -> Batch {
    let mut size = 0;
    let mut count = 0;
    for item in &state.items {
        if count > 0 && size + item.payload.len() > max {
            break;
        }
        size += item.payload.len();
        count += 1;
    }
    let mut records = 0;
    let payload = if count == 1 {
        state.items.pop_front().map(|q| {
            records = q.records;
            q.payload
        })
    } else {
        let mut buf = BytesMut::with_capacity(size);
        for q in state.items.drain(..count) {
            records += q.records;
            buf.extend_from_slice(&q.payload);
        }
        Some(buf.freeze())
    }
    .unwrap_or_default();
    state.waiting_bytes -= payload.len();
    Batch { payload, records }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

/// The result of one HTTP attempt.
enum Attempt {
    /// 2xx; `rejected` records refused in `partialSuccess`.
    Delivered { rejected: u64 },
    /// The backend will never take this batch.
    Refused(String),
    /// Try again later.
    Retry { retry_after: Option<Duration>, reason: String },
}

async fn deliver(shared: &Shared, lane: &Lane, batch: Batch, phase: &mut watch::Receiver<Phase>) {
    let signal = lane.signal;
    let records = batch.records;
    let (body, gzipped) = if shared.config.gzip {
        let raw = batch.payload.clone();
        match tokio::task::spawn_blocking(move || gzip(&raw)).await {
            Ok(Ok(compressed)) => (Bytes::from(compressed), true),
            _ => (batch.payload, false),
        }
    } else {
        (batch.payload, false)
    };
    let mut attempt: u32 = 0;
    loop {
        let outcome = tokio::select! {
            outcome = send_once(shared, lane, body.clone(), gzipped) => outcome,
            _ = aborted(phase) => None,
        };
        let outcome = match outcome {
            Some(outcome) => outcome,
            None => break,
        };
        match outcome {
            Attempt::Delivered { rejected } => {
                let rejected = rejected.min(records);
                lane.counters.forwarded.fetch_add(records - rejected, Ordering::Relaxed);
                stats::forwarded(signal, records - rejected);
                if rejected > 0 {
                    tracing::warn!(%signal, rejected, "the OTLP backend rejected part of a batch");
                    lane.counters.dropped.fetch_add(rejected, Ordering::Relaxed);
                    stats::dropped(signal, rejected);
                }
                lane.lock().retry_at = None;
                return;
            }
            Attempt::Refused(reason) => {
                tracing::error!(%signal, records, %reason, "the OTLP backend refused a batch; it is dropped");
                lane.counters.dropped.fetch_add(records, Ordering::Relaxed);
                stats::dropped(signal, records);
                lane.lock().retry_at = None;
                return;
            }
            Attempt::Retry { retry_after, reason } => {
                let delay = shared.config.retry.delay(attempt, retry_after);
                tracing::warn!(%signal, records, attempt, ?delay, %reason, "forwarding telemetry failed; retrying");
                lane.lock().retry_at = Some(Instant::now() + delay);
                lane.counters.retried.fetch_add(records, Ordering::Relaxed);
                stats::retried(signal, records);
                attempt = attempt.saturating_add(1);
                let waited = tokio::select! {
                    _ = tokio::time::sleep(delay) => true,
                    _ = aborted(phase) => false,
                };
                if !waited {
                    break;
                }
            }
        }
    }
    // Shutdown ran out of time while this batch was being sent.
    lane.counters.dropped.fetch_add(records, Ordering::Relaxed);
    stats::dropped(signal, records);
}

/// Resolves when the phase becomes `Aborted` (or the sink is gone).
async fn aborted(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p == Phase::Aborted).await;
}

async fn send_once(shared: &Shared, lane: &Lane, body: Bytes, gzipped: bool) -> Option<Attempt> {
    lane.counters.requests.fetch_add(1, Ordering::Relaxed);
    let mut request = shared
        .client
        .post(&lane.url)
        .headers(shared.config.headers.clone())
        .header(CONTENT_TYPE, "application/x-protobuf");
    if gzipped {
        request = request.header(CONTENT_ENCODING, "gzip");
    }
    let response = match request.body(body).send().await {
        Ok(response) => response,
        Err(e) if e.is_builder() => return Some(Attempt::Refused(e.to_string())),
        Err(e) => return Some(Attempt::Retry { retry_after: None, reason: error_chain(&e) }),
    };
    let status = response.status();
    if status.is_success() {
        let body = read_limited(response).await;
        return Some(Attempt::Delivered { rejected: rejected_in(lane.signal, &body) });
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let reason = format!("{} answered {status}", lane.url);
    Some(if is_retryable(status) {
        Attempt::Retry { retry_after, reason }
    } else {
        Attempt::Refused(reason)
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn read_limited(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Vec::new();
        }
        body.extend_from_slice(&chunk);
    }
    body
}

/// Records the backend rejected according to a protobuf `Export*ServiceResponse` (zero when the
/// body is empty or not protobuf).
fn rejected_in(signal: Signal, body: &[u8]) -> u64 {
    let n = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_spans),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_log_records),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_data_points),
    };
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests;
