//! A real OTLP/HTTP receiver for tests (feature `test-sink`): listens on 127.0.0.1 on a random
//! port, accepts protobuf or JSON, gzip or not, records every request's headers and decoded body,
//! and can be told to fail (`fail_with`), throttle (`fail_with_retry_after`) or go away and come
//! back on the same port (`down` / `up`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::ingest::{MAX_DECOMPRESSED_BYTES, PayloadFormat, decode_request, response};
use crate::{OtlpRequest, Signal};

/// One request the sink accepted.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The signal (from the path).
    pub signal: Signal,
    /// The request headers.
    pub headers: HeaderMap,
    /// Protobuf or JSON.
    pub format: PayloadFormat,
    /// Whether the body was gzip-encoded.
    pub gzip: bool,
    /// The decoded body.
    pub request: OtlpRequest,
    /// Records in it.
    pub records: u64,
}

/// One request the sink saw, accepted or not.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// The signal (from the path).
    pub signal: Signal,
    /// The status answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

/// Totals of what the sink accepted and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceivedCounts {
    /// Spans in accepted requests.
    pub spans: u64,
    /// Log records in accepted requests.
    pub log_records: u64,
    /// Metric data points in accepted requests.
    pub data_points: u64,
    /// Accepted requests.
    pub requests: u64,
    /// Requests answered with an error status.
    pub refused: u64,
}

impl ReceivedCounts {
    /// Records of `signal` accepted.
    pub fn records(&self, signal: Signal) -> u64 {
        match signal {
            Signal::Traces => self.spans,
            Signal::Logs => self.log_records,
            Signal::Metrics => self.data_points,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Succeed,
    Fail { status: StatusCode, retry_after: Option<u64> },
}

#[derive(Debug)]
struct Inner {
    behaviour: Behaviour,
    requests: Vec<ReceivedRequest>,
    keep_requests: bool,
    attempts: Vec<Attempt>,
    counts: ReceivedCounts,
}

#[derive(Debug)]
struct State {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The test receiver. Dropping it stops the server.
#[derive(Debug)]
pub struct OtlpTestSink {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl OtlpTestSink {
    /// Starts listening on 127.0.0.1 on a free port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            inner: Mutex::new(Inner {
                behaviour: Behaviour::Succeed,
                requests: Vec::new(),
                keep_requests: true,
                attempts: Vec::new(),
                counts: ReceivedCounts::default(),
            }),
            changed: Notify::new(),
        });
        let server = tokio::spawn(serve(listener, Arc::clone(&state)));
        Ok(Self { addr, state, server: tokio::sync::Mutex::new(Some(server)) })
    }

    /// Whether accepted requests are kept for [`requests`](Self::requests) (default yes);
    /// benchmarks turn it off so the sink only counts.
    pub fn keep_requests(&self, keep: bool) {
        self.state.lock().keep_requests = keep;
    }

    /// The base URL to configure as `otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers every further request with `status` (and records nothing).
    pub fn fail_with(&self, status: u16) {
        self.set(Behaviour::Fail { status: status_code(status), retry_after: None });
    }

    /// Answers every further request with `status` and `Retry-After: secs`.
    pub fn fail_with_retry_after(&self, status: u16, secs: u64) {
        self.set(Behaviour::Fail { status: status_code(status), retry_after: Some(secs) });
    }

    /// Accepts requests again.
    pub fn succeed(&self) {
        self.set(Behaviour::Succeed);
    }

    fn set(&self, behaviour: Behaviour) {
        self.state.lock().behaviour = behaviour;
    }

    /// Stops listening and closes every open connection; connecting is refused until `up`.
    pub async fn down(&self) {
        let mut server = self.server.lock().await;
        if let Some(handle) = server.take() {
            handle.abort();
            // The accept loop (and with it the listener and the connections) is gone once the
            // aborted task has been awaited.
            let _ = handle.await;
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) -> std::io::Result<()> {
        let mut server = self.server.lock().await;
        if server.is_none() {
            let listener = bind(self.addr)?;
            *server = Some(tokio::spawn(serve(listener, Arc::clone(&self.state))));
        }
        Ok(())
    }

    /// Every accepted request, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.state.lock().requests.clone()
    }

    /// Every request seen, accepted or refused, oldest first.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.state.lock().attempts.clone()
    }

    /// Totals so far.
    pub fn counts(&self) -> ReceivedCounts {
        self.state.lock().counts
    }

    /// Waits until `done` holds for the totals, up to `timeout`; returns the totals, or `Err`
    /// with the last totals on timeout.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&ReceivedCounts) -> bool,
    ) -> Result<ReceivedCounts, ReceivedCounts> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let counts = self.counts();
            if done(&counts) {
                return Ok(counts);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.counts());
            }
        }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // Rebinding the same port right after `down` must not wait for TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&state), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(signal) = Signal::from_path(req.uri().path()) else {
        return Ok(reply(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found")));
    };
    if req.method() != Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", Bytes::new()));
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", e.to_string().into())),
    };
    let at = Instant::now();
    let behaviour = state.lock().behaviour;
    let response = match behaviour {
        Behaviour::Fail { status, retry_after } => {
            let mut response = reply(status, "text/plain", Bytes::from_static(b"told to fail"));
            if let Some(secs) = retry_after {
                response.headers_mut().insert(RETRY_AFTER, secs.into());
            }
            response
        }
        Behaviour::Succeed => {
            let gzip = parts
                .headers
                .get(CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            match decode_request(signal, &parts.headers, body, MAX_DECOMPRESSED_BYTES) {
                Ok((request, format)) => {
                    let records = request.record_count();
                    let mut inner = state.lock();
                    inner.counts.requests += 1;
                    match signal {
                        Signal::Traces => inner.counts.spans += records,
                        Signal::Logs => inner.counts.log_records += records,
                        Signal::Metrics => inner.counts.data_points += records,
                    }
                    if inner.keep_requests {
                        inner.requests.push(ReceivedRequest {
                            signal,
                            headers: parts.headers.clone(),
                            format,
                            gzip,
                            request,
                            records,
                        });
                    }
                    let body = response::export_response(signal, format, 0, "");
                    reply(StatusCode::OK, format.content_type(), body)
                }
                Err(e) => {
                    let (body, content_type) = e.otlp_body(&parts.headers);
                    reply(e.status(), content_type, body)
                }
            }
        }
    };
    {
        let mut inner = state.lock();
        let status = response.status().as_u16();
        if !response.status().is_success() {
            inner.counts.refused += 1;
        }
        inner.attempts.push(Attempt { signal, status, at });
    }
    state.changed.notify_waiters();
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OtlpRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    async fn post(
        client: &reqwest::Client,
        sink: &OtlpTestSink,
    ) -> reqwest::Result<reqwest::Response> {
        let body = OtlpRequest::Traces(ExportTraceServiceRequest::default()).encode_protobuf();
        client
            .post(format!("{}/v1/traces", sink.endpoint()))
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await
    }

    #[tokio::test]
    async fn down_refuses_connections_and_up_serves_the_same_port() {
        let sink = OtlpTestSink::start().await.unwrap();
        let client = reqwest::Client::new();
        assert_eq!(post(&client, &sink).await.unwrap().status(), 200);
        // The pooled keep-alive connection must not survive `down`.
        sink.down().await;
        assert!(post(&client, &sink).await.is_err());
        assert!(tokio::net::TcpStream::connect(sink.addr()).await.is_err());
        sink.up().await.unwrap();
        assert_eq!(post(&client, &sink).await.unwrap().status(), 200);
        assert_eq!(sink.counts().requests, 2);
    }

    #[tokio::test]
    async fn failure_modes_answer_as_told() {
        let sink = OtlpTestSink::start().await.unwrap();
        let client = reqwest::Client::new();
        sink.fail_with_retry_after(429, 3);
        let r = post(&client, &sink).await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[RETRY_AFTER], "3");
        sink.fail_with(503);
        assert_eq!(post(&client, &sink).await.unwrap().status(), 503);
        sink.succeed();
        assert_eq!(post(&client, &sink).await.unwrap().status(), 200);
        let counts = sink.counts();
        assert_eq!((counts.requests, counts.refused), (1, 2));
        let statuses: Vec<u16> = sink.attempts().iter().map(|a| a.status).collect();
        assert_eq!(statuses, [429, 503, 200]);
    }
}
