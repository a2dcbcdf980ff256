//! The stable front of an exposed container on 127.0.0.1, which the container's `url` points at.
//!
//! Replicas come and go during a rolling update (each gets its own host port from the engine);
//! the front's port does not, so the url keeps answering. It runs inside the deployer's process:
//! its port is written into the state and into every replica's `alien.url-port` label, and the
//! next `apply` or `refresh` after a restart binds it again (a new port, and so a new url, only
//! when something else took it meanwhile). A replica is taken out of the rotation before it is
//! stopped.
//!
//! - An `http` port gets an HTTP/1.1 reverse proxy, as a cloud load balancer would put in front
//!   of it: clients keep their connections to the front, and each request goes to one healthy
//!   replica in turn over a connection of its own. A replica being replaced therefore never
//!   closes a client's keep-alive connection under a request the client is sending. A replica
//!   that refuses the connection is skipped; a request without a body is sent to the next
//!   replica when one fails before answering. Upgrades (WebSocket) are passed through; the
//!   replica sees `X-Forwarded-For` and `X-Forwarded-Proto`.
//! - A `tcp` port gets a TCP forwarder: each connection goes to one healthy replica in turn and
//!   stays with it until it closes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a front speaks: the `expose` kind of the container's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// An HTTP/1.1 reverse proxy, one replica per request.
    Http,
    /// A TCP forwarder, one replica per connection.
    Tcp,
}

impl Protocol {
    /// The protocol of an `expose` kind (`http` or `tcp`); anything but `tcp` is HTTP.
    pub fn of(kind: Option<&str>) -> Self {
        if kind == Some("tcp") { Self::Tcp } else { Self::Http }
    }
}

/// The fronts of one deployer, by `<deployment>/<container>/<port>`.
#[derive(Default)]
pub struct Fronts {
    fronts: Mutex<HashMap<String, Front>>,
}

struct Front {
    port: u16,
    backends: Backends,
    task: JoinHandle<()>,
}

/// What a front's task reads for each new connection: the protocol, the host ports it sends
/// to, and the round-robin position over them.
#[derive(Clone)]
struct Backends {
    protocol: Arc<RwLock<Protocol>>,
    ports: Arc<RwLock<Vec<u16>>>,
    next: Arc<AtomicUsize>,
    /// Load measured at an HTTP front, for autoscaling.
    load: Arc<Load>,
}

/// Requests in flight at an HTTP front now, and how long the recent ones took.
#[derive(Default)]
pub struct Load {
    in_flight: AtomicUsize,
    /// (answered at, milliseconds to the response's head), oldest first.
    latencies: Mutex<std::collections::VecDeque<(std::time::Instant, f64)>>,
}

/// How far back [`Load::p95_ms`] looks.
const LATENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

impl Load {
    /// Requests received and not yet answered (to the head of the response).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The 95th percentile of the latencies of the last 30 s, if any request was answered.
    pub fn p95_ms(&self) -> Option<f64> {
        let mut latencies =
            self.latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        while latencies.front().is_some_and(|(at, _)| now.duration_since(*at) > LATENCY_WINDOW) {
            latencies.pop_front();
        }
        let mut values: Vec<f64> = latencies.iter().map(|(_, ms)| *ms).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = ((values.len() as f64) * 0.95).ceil() as usize;
        values.get(rank.saturating_sub(1)).copied()
    }

    fn record(&self, took: std::time::Duration) {
        let mut latencies =
            self.latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        latencies.push_back((std::time::Instant::now(), took.as_secs_f64() * 1000.0));
        // Bounded whatever the rate: the newest 4096 are plenty for a percentile.
        while latencies.len() > 4096 {
            latencies.pop_front();
        }
    }
}

/// Counts one request in flight until dropped.
struct InFlight<'a>(&'a Load);

impl<'a> InFlight<'a> {
    fn start(load: &'a Load) -> Self {
        load.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(load)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Backends {
    /// The current ports, rotated so that each call starts at the next one.
    fn rotation(&self) -> Vec<u16> {
        let mut ports =
            self.ports.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if !ports.is_empty() {
            let first = self.next.fetch_add(1, Ordering::Relaxed) % ports.len();
            ports.rotate_left(first);
        }
        ports
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fronts {
    /// The port of `key`'s front, binding one (on `preferred` when given and free) if there is
    /// none. An existing front speaks `protocol` from its next connection on. Needs a Tokio
    /// runtime.
    pub fn ensure(
        &self,
        key: &str,
        preferred: Option<u16>,
        protocol: Protocol,
    ) -> std::io::Result<u16> {
        let mut fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(front) = fronts.get(key) {
            *front.backends.protocol.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                protocol;
            return Ok(front.port);
        }
        let bind = |port: u16| {
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        };
        // A front closed a moment ago (its task aborted, the listener not yet dropped) holds
        // the port briefly: try the preferred port a few times.
        let rebind = |port: u16| {
            let mut result = bind(port);
            for _ in 0..10 {
                match &result {
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        result = bind(port);
                    }
                    _ => break,
                }
            }
            result
        };
        let listener = match preferred.map(rebind) {
            Some(Ok(listener)) => listener,
            Some(Err(e)) => {
                tracing::warn!(
                    key,
                    port = preferred,
                    "cannot bind the front's port again ({e}); its url changes"
                );
                bind(0)?
            }
            None => bind(0)?,
        };
        let port = listener.local_addr()?.port();
        let backends = Backends {
            protocol: Arc::new(RwLock::new(protocol)),
            ports: Arc::default(),
            next: Arc::default(),
            load: Arc::default(),
        };
        let task = tokio::spawn(serve(listener, backends.clone()));
        fronts.insert(key.to_owned(), Front { port, backends, task });
        Ok(port)
    }

    /// Replaces the host ports `key`'s front forwards to (no-op without a front).
    pub fn set_backends(&self, key: &str, ports: Vec<u16>) {
        let fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(front) = fronts.get(key) {
            *front.backends.ports.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                ports;
        }
    }

    /// The host ports `key`'s front forwards to now.
    pub fn backends(&self, key: &str) -> Vec<u16> {
        let fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fronts
            .get(key)
            .map(|f| {
                f.backends.ports.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
            })
            .unwrap_or_default()
    }

    /// The load measured at `key`'s front (requests in flight, latencies), if it has one.
    pub fn load(&self, key: &str) -> Option<Arc<Load>> {
        let fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fronts.get(key).map(|f| f.backends.load.clone())
    }

    /// Closes the fronts whose keys start with `prefix` and are not in `keep`.
    pub fn close_others(&self, prefix: &str, keep: &[String]) {
        let mut fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fronts.retain(|key, _| !key.starts_with(prefix) || keep.contains(key));
    }

    /// Closes every front of `deployment` (keys `<deployment>/...`).
    pub fn close_deployment(&self, deployment: &str) {
        let prefix = format!("{deployment}/");
        let mut fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fronts.retain(|key, _| !key.starts_with(&prefix));
    }
}

/// Accepts until aborted, each connection served as the front's protocol is now.
async fn serve(listener: TcpListener, backends: Backends) {
    loop {
        let (inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = inbound.set_nodelay(true);
        let protocol = *backends.protocol.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match protocol {
            Protocol::Tcp => {
                tokio::spawn(forward(inbound, backends.rotation()));
            }
            Protocol::Http => {
                tokio::spawn(serve_http(inbound, peer, backends.clone()));
            }
        }
    }
}

async fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Connects `inbound` to the first of `ports` that accepts.
async fn forward(mut inbound: TcpStream, ports: Vec<u16>) {
    for port in ports {
        if let Ok(mut outbound) = connect(port).await {
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            return;
        }
    }
}

type FrontBody = Either<Incoming, Full<Bytes>>;

/// Serves one client connection, each request through [`proxy`].
async fn serve_http(inbound: TcpStream, peer: SocketAddr, backends: Backends) {
    let service = hyper::service::service_fn(move |request| {
        let backends = backends.clone();
        async move {
            let started = std::time::Instant::now();
            let counted = InFlight::start(&backends.load);
            let response = proxy(request, &backends, peer).await;
            drop(counted);
            backends.load.record(started.elapsed());
            Ok::<_, Infallible>(response)
        }
    });
    // A client that stays silent is closed after the header timeout (hyper's 30 s).
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(inbound), service)
        .with_upgrades()
        .await;
}

/// Headers that belong to one connection (RFC 9110, 7.6.1), never passed on.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
];

/// Removes the hop-by-hop headers, and those the `Connection` header names; keeps
/// `Connection: upgrade` and `Upgrade` when `upgrading`. `Transfer-Encoding` goes too: hyper
/// frames each message itself.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let upgrade = headers.remove(header::UPGRADE);
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
    if let (true, Some(upgrade)) = (upgrading, upgrade) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

fn bad_gateway(message: &str) -> Response<FrontBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!("{message}\n")))));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Sends `request` to one replica in turn and answers with its response.
async fn proxy(
    mut request: Request<Incoming>,
    backends: &Backends,
    peer: SocketAddr,
) -> Response<FrontBody> {
    let ports = backends.rotation();
    if ports.is_empty() {
        return bad_gateway("no replica of this container is serving");
    }
    let upgrading = request.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers, upgrading);
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    // Without a body, the request can be sent again to the next replica.
    let resendable = body.is_end_stream();
    let mut body = Some(body);
    let mut last_error = String::from("no replica accepted the connection");
    for port in ports {
        let Ok(stream) = connect(port).await else { continue };
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(handshake) => handshake,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
        tokio::spawn(connection.with_upgrades());
        let outbound_body = if resendable {
            Either::Right(Empty::<Bytes>::new())
        } else {
            match body.take() {
                Some(body) => Either::Left(body),
                None => break,
            }
        };
        let mut outbound = Request::new(outbound_body);
        *outbound.method_mut() = parts.method.clone();
        *outbound.headers_mut() = headers.clone();
        match target.parse() {
            Ok(uri) => *outbound.uri_mut() = uri,
            Err(_) => return bad_gateway("the request target cannot be forwarded"),
        }
        match sender.send_request(outbound).await {
            Ok(response) => return respond(response, client_upgrade),
            Err(e) if resendable => last_error = e.to_string(),
            Err(e) => return bad_gateway(&format!("the replica failed to answer: {e}")),
        }
    }
    bad_gateway(&format!("no replica answered: {last_error}"))
}

/// The replica's response as the client's; on `101 Switching Protocols`, both upgraded
/// connections are joined.
fn respond(
    mut response: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<FrontBody> {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client)) = (switching, client_upgrade) {
        let replica = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(replica)) = tokio::join!(client, replica) {
                let (mut client, mut replica) = (TokioIo::new(client), TokioIo::new(replica));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut replica).await;
            }
        });
    }
    strip_hop_by_hop(response.headers_mut(), switching);
    response.map(Either::Left)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn echo_name(name: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                s.write_all(name.as_bytes()).await.unwrap();
            }
        });
        port
    }

    async fn read_via(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Reads one request's head (up to the blank line) from `s`.
    async fn read_head(s: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    /// A replica that answers one request per connection with `name`, then closes the
    /// connection without having said so (as a replica does when it stops with idle keep-alive
    /// connections open).
    async fn one_answer_then_close(name: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    read_head(&mut s).await;
                    let answer =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}", name.len());
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        port
    }

    /// A replica that answers `<name> <method> <x-forwarded-for> <body>`.
    async fn http_echo(name: &'static str) -> u16 {
        use http_body_util::BodyExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(move |r: Request<Incoming>| async move {
                    let method = r.method().to_string();
                    let from = r.headers().get("x-forwarded-for").cloned();
                    let from = from.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-");
                    let from = from.to_owned();
                    let body = r.into_body().collect().await?.to_bytes();
                    let text = format!("{name} {method} {from} {}", String::from_utf8_lossy(&body));
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(text))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), service),
                );
            }
        });
        port
    }

    #[tokio::test]
    async fn a_tcp_front_keeps_its_port_and_rotates_over_current_backends() {
        let (a, b) = (echo_name("a").await, echo_name("b").await);
        let fronts = Fronts::default();
        let port = fronts.ensure("dep/api", None, Protocol::Tcp).unwrap();
        let again = fronts.ensure("dep/api", Some(1), Protocol::Tcp).unwrap();
        assert_eq!(again, port, "an existing front stays");
        fronts.set_backends("dep/api", vec![a, b]);
        let mut seen = vec![read_via(port).await, read_via(port).await];
        seen.sort();
        assert_eq!(seen, ["a", "b"]);
        fronts.set_backends("dep/api", vec![b]);
        assert_eq!(read_via(port).await, "b");
        assert_eq!(fronts.backends("dep/api"), vec![b]);

        // Closed, then bound again on the same port (as after a restart).
        let other = fronts.ensure("dep-2/api", None, Protocol::Tcp).unwrap();
        fronts.close_deployment("dep");
        let kept = fronts.ensure("dep-2/api", None, Protocol::Tcp).unwrap();
        assert_eq!(kept, other, "another deployment's stays");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(fronts.ensure("dep/api", Some(port), Protocol::Tcp).unwrap(), port);
        fronts.set_backends("dep/api", vec![a]);
        assert_eq!(read_via(port).await, "a");
    }

    #[tokio::test]
    async fn an_http_front_keeps_the_client_connection_when_replicas_close_theirs() {
        let (a, b) = (one_answer_then_close("a").await, one_answer_then_close("b").await);
        let fronts = Fronts::default();
        let port = fronts.ensure("dep/web", None, Protocol::Http).unwrap();
        fronts.set_backends("dep/web", vec![a, b]);
        // Requests one after another on one client connection: each replica closes its own
        // connection after answering, the client's stays open and every request is answered
        // (a TCP forwarder closes the client's connection with the replica's).
        let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..20 {
            client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
            let head = read_head(&mut client).await;
            assert!(head.starts_with("HTTP/1.1 200"), "answered on the same connection: {head}");
            let mut name = [0u8; 1];
            client.read_exact(&mut name).await.unwrap();
            seen.push(name[0]);
        }
        assert!(seen.contains(&b'a') && seen.contains(&b'b'), "both replicas served: {seen:?}");

        // A keep-alive client polling while the replicas change under it sees no failure.
        let http = reqwest::Client::new();
        for i in 0..200 {
            if i == 100 {
                fronts.set_backends("dep/web", vec![b]);
            }
            let r = http.get(format!("http://127.0.0.1:{port}/")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let text = r.text().await.unwrap();
            assert!(i < 100 || text == "b", "a replica out of the rotation got a request");
        }
    }

    #[tokio::test]
    async fn an_http_front_forwards_bodies_skips_refusing_replicas_and_says_502_without_any() {
        let a = http_echo("a").await;
        // A port nothing listens on: a replica that went away.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let fronts = Fronts::default();
        let port = fronts.ensure("dep/web", None, Protocol::Http).unwrap();
        let url = format!("http://127.0.0.1:{port}/echo?x=1");
        let http = reqwest::Client::new();

        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 502, "no replica in the rotation");
        assert!(r.text().await.unwrap().contains("no replica"));

        fronts.set_backends("dep/web", vec![gone, a]);
        for _ in 0..4 {
            let r = http.post(&url).body("payload").send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), "a POST 127.0.0.1 payload");
        }
        let r = http.get(&url).header("x-forwarded-for", "10.0.0.9").send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "a GET 10.0.0.9, 127.0.0.1 ");

        fronts.set_backends("dep/web", vec![gone]);
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 502, "the only replica refuses connections");

        // The same key as a tcp front: the same port, forwarding connections now.
        assert_eq!(fronts.ensure("dep/web", None, Protocol::Tcp).unwrap(), port);
        let b = echo_name("b").await;
        fronts.set_backends("dep/web", vec![b]);
        assert_eq!(read_via(port).await, "b");
    }

    #[tokio::test]
    async fn an_http_front_passes_upgrades_through() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let replica = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let head = read_head(&mut s).await.to_ascii_lowercase();
            assert!(head.contains("upgrade: echo"), "{head}");
            s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let fronts = Fronts::default();
        let port = fronts.ensure("dep/ws", None, Protocol::Http).unwrap();
        fronts.set_backends("dep/ws", vec![replica]);
        let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        client
            .write_all(
                b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
        let head = read_head(&mut client).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    /// A replica that answers each request after `delay`.
    async fn slow_replica(delay: std::time::Duration) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(move |_r: Request<Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from("slow"))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), service),
                );
            }
        });
        port
    }

    #[tokio::test]
    async fn an_http_front_counts_requests_in_flight_and_their_latency() {
        let fronts = Fronts::default();
        let port = fronts.ensure("d/web/8080", None, Protocol::Http).unwrap();
        fronts.set_backends(
            "d/web/8080",
            vec![slow_replica(std::time::Duration::from_millis(400)).await],
        );
        let load = fronts.load("d/web/8080").unwrap();
        assert_eq!((load.in_flight(), load.p95_ms()), (0, None));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let requests: Vec<_> = (0..3)
            .map(|_| {
                let http = http.clone();
                tokio::spawn(async move {
                    http.get(format!("http://127.0.0.1:{port}/")).send().await.unwrap().status()
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(load.in_flight(), 3, "three requests wait on the replica");
        for r in requests {
            assert_eq!(r.await.unwrap(), 200);
        }
        assert_eq!(load.in_flight(), 0);
        let p95 = load.p95_ms().unwrap();
        assert!((380.0..5000.0).contains(&p95), "{p95}");
    }
}
