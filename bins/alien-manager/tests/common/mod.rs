//! Running the real `alien-manager` binary in tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test crates

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary with a clean environment for the variables it reads.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alien-manager"));
    for var in ["PORT", "HOST", "BASE_URL", "OTLP_ENDPOINT", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    for (name, _) in std::env::vars() {
        if name.starts_with("ALIEN_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A free port on 127.0.0.1 (released before use; fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running manager; its address is read from its log, its stdout is kept.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub started: Duration,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(mut cmd: Command) -> Self {
        let t0 = Instant::now();
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ =
                        tx.send(Ok(rest.split_whitespace().next().unwrap_or_default().to_owned()));
                }
                log.push(line);
            }
            let _ = tx.send(Err(log.join("\n")));
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(log)) => panic!("manager exited before listening:\n{log}"),
            Err(_) => {
                let _ = child.kill();
                panic!("manager did not report its address");
            }
        };
        Self { child, addr, started: t0.elapsed(), stdout: lines }
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status and how long it took.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        self.signal("-TERM")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.signal("-KILL");
    }

    fn signal(&mut self, signal: &str) -> (std::process::ExitStatus, Duration) {
        let t0 = Instant::now();
        let ok =
            Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, t0.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("manager did not exit after {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin token printed on first start (`export ALIEN_API_KEY=...`). It is printed before the
/// manager logs its address, so a short wait for the pipe is enough.
pub fn printed_admin_token(server: &Server) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let lines = server.stdout();
        if let Some(token) = lines.iter().find_map(|l| l.strip_prefix("export ALIEN_API_KEY=")) {
            return Some(token.to_owned());
        }
        if Instant::now() > deadline || lines.len() >= 4 {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `serve` on a free port of 127.0.0.1 with `state` as state directory and extra variables.
pub fn serve(state: &Path, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = bin();
    cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--state-dir"]).arg(state);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd
}

/// An API call with a bearer token: status and JSON body (null when not JSON).
pub async fn call(
    server: &Server,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.url()))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
