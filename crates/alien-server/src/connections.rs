//! Accepting connections and bounding what a client can hold, from `[server]`:
//!
//! - `max-connections`: at most that many connections are served at once; past it, new ones wait
//!   in the listen backlog until one closes (logged, at most every 10 s, and counted in
//!   `http_connection_limit_reached_total`);
//! - `header-read-timeout-secs`: a client that does not send a whole request head in time is
//!   disconnected. hyper starts that clock whenever it waits for a request head, so it also
//!   closes a keep-alive connection left idle between requests;
//! - `body-idle-timeout-secs` and `min-body-bytes-per-sec` ([`guard_body`]): a request body that
//!   stalls, or trickles slower than the minimum rate once a grace period has passed, ends the
//!   request (408) and with it the connection's hold.
//!
//! A request being served is never cut by these (a long poll waits as long as the server
//! decides); graceful shutdown stops accepting, closes idle connections and lets requests in
//! flight finish for at most the grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::body::HttpBody as _;
use axum::http::Request;
use futures_util::StreamExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// What a connection may hold, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to send a request head (and the longest idle wait for the next one).
    pub header_read_timeout: Duration,
    /// How request bodies must progress.
    pub bodies: BodyLimits,
}

/// How often the "limit reached" line is logged at most.
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting and lets the requests in flight finish for at most `grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<crate::tls::Reloading>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let reloader = tls.clone().map(crate::tls::Reloading::reload_on_sighup);
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut logged: Option<Instant> = None;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics::counter!("http_connection_limit_reached_total").increment(1);
                if logged.is_none_or(|at| at.elapsed() >= LIMIT_LOG_EVERY) {
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection limit reached ([server] max-connections): new connections wait until one closes"
                    );
                    logged = Some(Instant::now());
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, say: back off a little rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Each request's body is guarded on its way in (a plain map: no boxing per request).
        let bodies = limits.bodies;
        let service = TowerToHyperService::new(
            router.clone().map_request(move |request| guard_body(bodies, request)),
        );
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                // hyper tells HTTP/1 from HTTP/2 by the first bytes, with no clock of its own.
                None if first_bytes(&stream, limits.header_read_timeout).await => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(err) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                }
                None => {}
                // The handshake on the header clock; then the version ALPN chose.
                Some(tls) => {
                    let handshake = tls.acceptor().accept(stream);
                    match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let builder =
                                if h2 { builder.http2_only() } else { builder.http1_only() };
                            let connection = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service);
                            if let Err(err) = watcher.watch(connection.into_owned()).await {
                                tracing::debug!(error = %err, "connection ended with an error");
                            }
                        }
                        Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: finishing in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the grace period; closing them");
    }
}

/// The HTTP/2 connection preface (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client sent enough, within `within`, for the HTTP version to be told (a byte
/// that is not the HTTP/2 preface's, or the whole preface); `false` for a silent or closed
/// connection, which is then dropped.
async fn first_bytes(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 24];
    loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return false,
            Ok(Ok(n)) if n >= H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] => return true,
            // Part of the preface: wait for the rest (peek does not wait for new bytes).
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// How a request body must progress, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Longest wait for the next bytes of a body.
    pub idle: Duration,
    /// Slowest average rate once [`BodyLimits::grace`] has passed (0: none).
    pub min_bytes_per_sec: u64,
    /// How long a body may start slowly.
    pub grace: Duration,
}

/// Why a guarded body ended early.
fn stalled(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, message)
}

/// Wraps the body of a request that carries one so that it ends with a `TimedOut` error when it
/// stalls for [`BodyLimits::idle`] or trickles below [`BodyLimits::min_bytes_per_sec`]; a handler
/// reading it fails with a 4xx. A request without a body passes as it is.
fn guard_body(limits: BodyLimits, request: Request<Incoming>) -> Request<Body> {
    if request.body().is_end_stream() {
        return request.map(Body::new);
    }
    let (parts, body) = request.into_parts();
    let started = Instant::now();
    let state = (Body::new(body).into_data_stream(), 0u64, false);
    let guarded =
        futures_util::stream::unfold(state, move |(mut stream, seen, ended)| async move {
            if ended {
                return None;
            }
            match tokio::time::timeout(limits.idle, stream.next()).await {
                Err(_) => {
                    let message = format!("no body bytes for {} s", limits.idle.as_secs());
                    Some((Err(stalled(message)), (stream, seen, true)))
                }
                Ok(None) => None,
                Ok(Some(Err(err))) => Some((Err(std::io::Error::other(err)), (stream, seen, true))),
                Ok(Some(Ok(chunk))) => {
                    let seen = seen.saturating_add(chunk.len() as u64);
                    let elapsed = started.elapsed();
                    let floor = limits.min_bytes_per_sec.saturating_mul(elapsed.as_secs());
                    if elapsed > limits.grace && seen < floor {
                        let message = format!(
                            "the body came at {} bytes/s, under the minimum of {} bytes/s",
                            seen / elapsed.as_secs().max(1),
                            limits.min_bytes_per_sec
                        );
                        return Some((Err(stalled(message)), (stream, seen, true)));
                    }
                    Some((Ok(chunk), (stream, seen, false)))
                }
            }
        });
    Request::from_parts(parts, Body::from_stream(guarded))
}
