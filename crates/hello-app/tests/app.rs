//! The real `hello-app` binary on a free 127.0.0.1 port: what `GET /` and `GET /health` answer
//! under each variable, OTLP log export to a small sink, and a clean stop on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;

/// A running `hello-app`, killed when dropped.
struct App {
    child: Child,
    port: u16,
    output: Arc<Mutex<String>>,
}

impl App {
    /// Starts the binary with only `vars` (and `HOST`/`PORT`) in its environment and waits until
    /// it accepts connections.
    async fn start(vars: &[(&str, &str)]) -> App {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hello-app"));
        cmd.env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start hello-app");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut output = output.lock().unwrap();
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        }
        let mut app = App { child, port, output };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = app.child.try_wait().unwrap() {
                panic!("hello-app exited early ({status}):\n{}", app.output());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return app;
            }
            assert!(Instant::now() < deadline, "hello-app never listened:\n{}", app.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.url(path)).await.expect("request hello-app");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn index(&self) -> serde_json::Value {
        let (status, body) = self.get("/").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Sends SIGTERM and waits for the exit.
    async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let killed =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hello-app still running {within:?} after SIGTERM:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn index_shows_message_and_deployment_and_health_is_ok() {
    let app = App::start(&[
        ("HELLO_MESSAGE", "release two"),
        ("ALIEN_DEPLOYMENT_ID", "dep_test"),
        ("ALIEN_DEPLOYMENT_NAME", "acme"),
        ("HOSTNAME", "replica-1"),
    ])
    .await;
    let index = app.index().await;
    assert_eq!(index["app"], "hello-app");
    assert_eq!(index["message"], "release two");
    assert_eq!(index["deploymentId"], "dep_test");
    assert_eq!(index["deploymentName"], "acme");
    assert_eq!(index["hostname"], "replica-1");
    assert_eq!(index["commands"], false);
    assert_eq!(app.get("/health").await, (200, "ok".to_owned()));
    assert_eq!(app.get("/nothing-here").await.0, 404);
}

#[tokio::test]
async fn defaults_say_hello_without_a_deployment() {
    let app = App::start(&[]).await;
    let index = app.index().await;
    assert_eq!(index["message"], "hello");
    assert_eq!(index["deploymentId"], serde_json::Value::Null);
    assert!(app.output().contains("ALIEN_COMMANDS_URL is not set"), "{}", app.output());
}

#[tokio::test]
async fn fail_health_makes_health_answer_500_but_still_serves() {
    let app = App::start(&[("HELLO_FAIL_HEALTH", "1"), ("HELLO_MESSAGE", "broken")]).await;
    let (status, body) = app.get("/health").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("unhealthy"), "{body}");
    assert_eq!(app.index().await["message"], "broken");
}

#[tokio::test]
async fn a_bad_port_is_a_startup_error_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_hello-app"))
        .env_clear()
        .env("PORT", "eighty")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("PORT: expected a port number"), "{text}");
}

#[tokio::test]
async fn sigterm_stops_it_cleanly() {
    let mut app = App::start(&[]).await;
    assert_eq!(app.get("/health").await.0, 200);
    let status = app.terminate(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}:\n{}", app.output());
    assert!(app.output().contains("hello-app stopped"), "{}", app.output());
}

#[tokio::test]
async fn with_receiver_env_it_runs_the_receiver_and_still_stops_on_sigterm() {
    // Nothing listens at the commands URL: the receiver retries with backoff, HTTP is unaffected.
    let commands_url = format!("http://127.0.0.1:{}/v1", free_port());
    let mut app = App::start(&[
        ("ALIEN_COMMANDS_URL", &commands_url),
        ("ALIEN_COMMANDS_TOKEN", "ax_deploy_test"),
        ("ALIEN_DEPLOYMENT_ID", "dep_test"),
        ("ALIEN_COMMANDS_TARGET_RESOURCE_ID", "hello"),
        ("ALIEN_COMMANDS_TARGET_RESOURCE_TYPE", "container"),
    ])
    .await;
    assert_eq!(app.index().await["commands"], true);
    assert_eq!(app.get("/health").await.0, 200);
    let status = app.terminate(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}:\n{}", app.output());
    let output = app.output();
    assert!(output.contains("command receiver started"), "{output}");
    assert!(output.contains("command receiver stopped"), "{output}");
}

#[tokio::test]
async fn incomplete_receiver_env_is_reported_and_http_still_serves() {
    let app = App::start(&[("ALIEN_COMMANDS_URL", "http://127.0.0.1:9/v1")]).await;
    assert_eq!(app.index().await["commands"], false);
    let output = app.output();
    assert!(output.contains("ALIEN_COMMANDS_TOKEN is not set"), "{output}");
}

/// What an OTLP sink received: (headers, decoded request) per POST.
type Received = Arc<Mutex<Vec<(HeaderMap, ExportLogsServiceRequest)>>>;

/// A minimal OTLP/HTTP logs receiver on 127.0.0.1.
async fn otlp_sink() -> (SocketAddr, Received) {
    async fn logs(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> Vec<u8> {
        let request = ExportLogsServiceRequest::decode(body).expect("a protobuf logs request");
        received.lock().unwrap().push((headers, request));
        Vec::new()
    }
    let received = Received::default();
    let app = axum::Router::new().route("/v1/logs", post(logs)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, received)
}

fn bodies(received: &Received) -> Vec<String> {
    let received = received.lock().unwrap();
    let records = received
        .iter()
        .flat_map(|(_, r)| &r.resource_logs)
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records);
    records
        .filter_map(|r| match r.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn logs_a_record_at_start_and_per_index_request_over_otlp() {
    let (sink, received) = otlp_sink().await;
    let mut app = App::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{sink}/")),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20ax_deploy_x, x-extra = 1"),
        ("HELLO_MESSAGE", "logged"),
    ])
    .await;
    app.index().await;
    app.index().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bodies = bodies(&received);
        let answered = bodies.iter().filter(|b| *b == "GET / answered: logged").count();
        if bodies.iter().any(|b| b.starts_with("hello-app started on")) && answered == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "records so far: {bodies:?}\n{}", app.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let received = received.lock().unwrap();
        let (headers, request) = &received[0];
        assert_eq!(headers["authorization"], "Bearer ax_deploy_x");
        assert_eq!(headers["x-extra"], "1");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        let resource = request.resource_logs[0].resource.as_ref().unwrap();
        assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"));
    }
    assert!(app.terminate(Duration::from_secs(5)).await.success());
}

#[tokio::test]
async fn an_unreachable_otlp_endpoint_is_logged_not_fatal() {
    let app = App::start(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("http://127.0.0.1:{}", free_port()),
    )])
    .await;
    assert_eq!(app.get("/health").await.0, 200);
    app.index().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.output().contains("OTLP log export failed") {
        assert!(Instant::now() < deadline, "{}", app.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.get("/health").await.0, 200);
}

/// The platform-test routes: extra ports serve the same routes, `/call/{id}` reaches a linked
/// container through `ALIEN_<ID>_BINDING` (internalUrl, or `internalPorts` of a port), `/slow`
/// waits, and `/write` writes under `/tmp/` only.
#[tokio::test]
async fn extra_ports_bindings_slow_and_write_routes() {
    let linked = App::start(&[("HELLO_MESSAGE", "worker")]).await;
    let extra = free_port();
    let binding = serde_json::json!({
        "service": "local", "containerName": "worker",
        "internalUrl": format!("http://127.0.0.1:{}", linked.port),
        "internalPorts": {"8080": format!("127.0.0.1:{}", linked.port)}
    })
    .to_string();
    let app = App::start(&[
        ("HELLO_EXTRA_PORTS", &extra.to_string()),
        ("ALIEN_MY_WORKER_BINDING", &binding),
    ])
    .await;
    let on_extra = reqwest::get(format!("http://127.0.0.1:{extra}/health")).await.unwrap();
    assert_eq!(on_extra.text().await.unwrap(), "ok");
    for query in ["", "?port=8080"] {
        let (status, body) = app.get(&format!("/call/my-worker{query}")).await;
        assert_eq!(status, 200, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["body"]["message"], "worker", "{body}");
    }
    let (status, body) = app.get("/call/other").await;
    assert_eq!(status, 400);
    assert!(body.contains("ALIEN_OTHER_BINDING is not set"), "{body}");
    let started = Instant::now();
    assert_eq!(app.get("/slow?ms=300").await, (200, "slow".to_owned()));
    assert!(started.elapsed() >= Duration::from_millis(300));
    let http = reqwest::Client::new();
    let write = |path: &str, bytes: u64| {
        http.post(app.url(&format!("/write?path={path}&bytes={bytes}"))).send()
    };
    let name = format!("/tmp/hello-app-test-{}", std::process::id());
    let ok = write(&name, 1024).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(std::fs::metadata(&name).unwrap().len(), 1024);
    std::fs::remove_file(&name).unwrap();
    for bad in ["/etc/passwd", "/tmp/../etc/x"] {
        assert_eq!(write(bad, 1).await.unwrap().status(), 400, "{bad}");
    }
    assert_eq!(write(&name, (1 << 30) + 1).await.unwrap().status(), 400);
}
