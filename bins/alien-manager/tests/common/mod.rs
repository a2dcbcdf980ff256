//! Running the real `alien-manager` binary in tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test crates

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod cluster;
pub mod database;
#[cfg(feature = "peer-tests")]
pub mod local;
pub mod nginx;
#[cfg(feature = "peer-tests")]
pub mod push;
pub mod tls;

/// One end-to-end scenario on both stores: `async fn name() { ... }` becomes the tests
/// `name::sqlite` and `name::postgres`, each running the body with the managers it starts
/// (through [`Manager`] or [`database::TestDatabase::for_test`]) on that store.
#[macro_export]
macro_rules! store_matrix {
    ($(#[doc = $doc:literal])* async fn $name:ident() $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn scenario() $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::common::database::StoreKind::Sqlite.scope(scenario()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::common::database::StoreKind::Postgres.scope(scenario()).await;
            }
        }
    };
}

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
    stderr: Arc<Mutex<Vec<String>>>,
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
        // `ALIEN_TEST_ECHO_LOGS=1` shows the manager's log in the test output (debugging).
        let echo = std::env::var_os("ALIEN_TEST_ECHO_LOGS").is_some();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[manager] {line}");
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ =
                        tx.send(Ok(rest.split_whitespace().next().unwrap_or_default().to_owned()));
                }
                kept.lock().unwrap().push(line);
            }
            let _ = tx.send(Err(kept.lock().unwrap().join("\n")));
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(log)) => panic!("manager exited before listening:\n{log}"),
            Err(_) => {
                let _ = child.kill();
                panic!("manager did not report its address");
            }
        };
        Self { child, addr, started: t0.elapsed(), stdout: lines, stderr: log }
    }

    /// The manager's log (stderr) so far.
    pub fn log(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Resident memory of the process, in bytes (`VmRSS`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
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

/// `serve` on a free port of 127.0.0.1 with `state` as state directory and extra variables,
/// without the deployment loop (tests that deploy use [`serve_deploying`]): these tests move
/// deployments through the store themselves.
pub fn serve(state: &Path, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = serve_deploying(state, extra_env);
    cmd.arg("--disable-deployment-loop");
    cmd
}

/// `serve` as [`serve`] does, with the deployment loop running.
pub fn serve_deploying(state: &Path, extra_env: &[(&str, &str)]) -> Command {
    serve_deploying_on(state, 0, extra_env)
}

/// [`serve_deploying`] on a given port (a restart where the previous process listened).
pub fn serve_deploying_on(state: &Path, port: u16, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = bin();
    cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--state-dir"])
        .arg(state);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd
}

/// Where API calls go: one manager, or a load balancer in front of several.
pub trait Endpoint {
    /// `http://127.0.0.1:{port}`.
    fn endpoint_url(&self) -> String;
    /// The port on 127.0.0.1.
    fn endpoint_port(&self) -> u16;
}

impl Endpoint for Server {
    fn endpoint_url(&self) -> String {
        self.url()
    }

    fn endpoint_port(&self) -> u16 {
        self.port()
    }
}

impl Endpoint for nginx::Nginx {
    fn endpoint_url(&self) -> String {
        self.url()
    }

    fn endpoint_port(&self) -> u16 {
        self.port
    }
}

/// An API call with a bearer token: status and JSON body (null when not JSON).
pub async fn call(
    server: &impl Endpoint,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.endpoint_url()))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The database key the [`Manager`] fixture runs with, so tests can open its store while it is
/// stopped.
pub const TEST_KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// The real binary on a fresh state directory, with its first-run admin token.
pub struct Manager {
    pub base: String,
    pub admin: String,
    pub state: std::path::PathBuf,
    file: std::path::PathBuf,
    server: Option<Server>,
    /// The store's environment (`ALIEN_DATABASE__URL` on PostgreSQL).
    db_env: Vec<(&'static str, String)>,
    db: database::TestDatabase,
    _dir: tempfile::TempDir,
}

impl Manager {
    pub async fn start() -> Manager {
        Manager::start_configured("").await
    }

    /// Like [`Manager::start`], with `toml` as its configuration file.
    pub async fn start_configured(toml: &str) -> Manager {
        Manager::start_with(toml, &[]).await
    }

    /// Like [`Manager::start_configured`], with extra environment variables.
    pub async fn start_with(toml: &str, env: &[(&str, &str)]) -> Manager {
        Manager::launch(toml, |state| {
            let mut cmd = serve(state, &[("ALIEN_DATABASE__ENCRYPTION_KEY", TEST_KEY)]);
            cmd.envs(env.iter().copied());
            cmd
        })
        .await
    }

    /// Like [`Manager::start_with`], with the deployment loop running.
    pub async fn start_deploying_with(toml: &str, env: &[(&str, &str)]) -> Manager {
        Manager::launch(toml, |state| {
            let mut cmd = serve_deploying(state, &[("ALIEN_DATABASE__ENCRYPTION_KEY", TEST_KEY)]);
            cmd.envs(env.iter().copied());
            cmd
        })
        .await
    }

    /// Like [`Manager::start_configured`], listening on `port` with `BASE_URL`
    /// `http://127.0.0.1:{port}` (for what hands the manager's URL out, such as install scripts).
    pub async fn start_at(toml: &str, port: u16) -> Manager {
        let base_url = format!("http://127.0.0.1:{port}");
        Manager::launch(toml, |state| {
            let env = [("ALIEN_DATABASE__ENCRYPTION_KEY", TEST_KEY), ("BASE_URL", &base_url)];
            let mut cmd = serve_deploying_on(state, port, &env);
            cmd.arg("--disable-deployment-loop");
            cmd
        })
        .await
    }

    /// The binary as `serve` makes it for the state directory, with `toml` as its `-c` file.
    /// On the store of the running scenario (see [`database`]).
    async fn launch(toml: &str, command: impl FnOnce(&Path) -> Command) -> Manager {
        Manager::launch_on(database::TestDatabase::for_test().await, toml, command)
    }

    /// Like [`Manager::start_with`], on `db`.
    pub async fn start_on(db: database::TestDatabase, toml: &str, env: &[(&str, &str)]) -> Manager {
        Manager::launch_on(db, toml, |state| {
            let mut cmd = serve(state, &[("ALIEN_DATABASE__ENCRYPTION_KEY", TEST_KEY)]);
            cmd.envs(env.iter().copied());
            cmd
        })
    }

    /// Like [`Manager::start_deploying_with`], on `db`.
    pub async fn start_deploying_on(
        db: database::TestDatabase,
        toml: &str,
        env: &[(&str, &str)],
    ) -> Manager {
        Manager::launch_on(db, toml, |state| {
            let mut cmd = serve_deploying(state, &[("ALIEN_DATABASE__ENCRYPTION_KEY", TEST_KEY)]);
            cmd.envs(env.iter().copied());
            cmd
        })
    }

    fn launch_on(
        db: database::TestDatabase,
        toml: &str,
        command: impl FnOnce(&Path) -> Command,
    ) -> Manager {
        let db_env = db.env();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let file = dir.path().join("alien-manager.toml");
        std::fs::write(&file, toml).unwrap();
        let mut cmd = command(&state);
        cmd.envs(db_env.iter().map(|(k, v)| (k, v)));
        cmd.arg("-c").arg(&file);
        let server = Server::start(cmd);
        let admin = printed_admin_token(&server).expect("first start prints the admin token");
        Manager {
            base: server.url(),
            admin,
            state,
            file,
            server: Some(server),
            db_env,
            db,
            _dir: dir,
        }
    }

    /// The PostgreSQL URL the manager runs on, if it does (`ALIEN_DATABASE__URL`).
    pub fn database_url(&self) -> Option<String> {
        self.db_env.iter().find(|(k, _)| *k == "ALIEN_DATABASE__URL").map(|(_, v)| v.clone())
    }

    /// The test's store.
    pub fn database(&self) -> &database::TestDatabase {
        &self.db
    }

    /// The running server, handed over (to kill it, say); the state directory stays.
    pub fn take_server(&mut self) -> Server {
        self.server.take().unwrap()
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// Stops the manager (SIGTERM, clean exit), runs `offline` with the state directory, and
    /// starts it again on a new port.
    pub async fn restart_with<F, Fut>(&mut self, offline: F)
    where
        F: FnOnce(std::path::PathBuf) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (status, _) = self.server.take().unwrap().terminate();
        assert!(status.success(), "clean exit: {status}");
        offline(self.state.clone()).await;
        let mut cmd = serve(&self.state, &[("ALIEN_DATABASE__ENCRYPTION_KEY", TEST_KEY)]);
        cmd.envs(self.db_env.iter().map(|(k, v)| (k, v)));
        cmd.arg("-c").arg(&self.file);
        let server = Server::start(cmd);
        self.base = server.url();
        self.server = Some(server);
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// An admin call that must succeed; its body.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method.clone(), path, Some(&self.admin), body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
        body
    }

    /// A deployment group and a token of it.
    pub async fn group(&self, name: &str) -> (String, String) {
        let body = serde_json::json!({ "name": name });
        let group = self.admin(reqwest::Method::POST, "/v1/deployment-groups", Some(body)).await;
        let id = group["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/deployment-groups/{id}/tokens");
        let token = self.admin(reqwest::Method::POST, &path, None).await;
        (id, token["token"].as_str().unwrap().to_owned())
    }

    /// A local deployment in `group`: its id and token.
    pub async fn deployment(&self, group: &str, name: &str) -> (String, String) {
        let body =
            serde_json::json!({"name": name, "platform": "local", "deploymentGroupId": group});
        let created = self.admin(reqwest::Method::POST, "/v1/deployments", Some(body)).await;
        (
            created["deployment"]["id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        )
    }
}

/// A fixture stack of `shared/fixtures`.
pub fn fixture(name: &str) -> Value {
    let dir = match std::env::var_os("ALIEN_FIXTURES_DIR") {
        Some(dir) => dir.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    };
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The store of a stopped manager, opened as the manager opens it (with [`TEST_KEY`]): the
/// SQLite file in its state directory, or PostgreSQL at `url`.
pub enum OfflineStore {
    Sqlite(Box<alien_store_sqlite::SqliteStore>),
    Postgres(alien_store_postgres::PostgresStore),
}

impl OfflineStore {
    pub async fn open(state: &Path, url: Option<&str>) -> OfflineStore {
        let key = alien_store_sqlite::seal::EncryptionKey::from_hex(TEST_KEY).unwrap();
        let sealer = alien_store_sqlite::seal::Sealer::new(key);
        if let Some(url) = url {
            let store = alien_store_postgres::PostgresStore::connect(url, sealer).await.unwrap();
            return OfflineStore::Postgres(store);
        }
        let file = state.join("alien-manager.db");
        OfflineStore::Sqlite(Box::new(
            alien_store_sqlite::SqliteStore::open(&file, sealer).await.unwrap(),
        ))
    }

    pub async fn close(&self) {
        match self {
            OfflineStore::Sqlite(store) => store.close().await,
            OfflineStore::Postgres(store) => store.close().await,
        }
    }
}

impl std::ops::Deref for OfflineStore {
    type Target = dyn alien_store::Store;

    fn deref(&self) -> &Self::Target {
        match self {
            OfflineStore::Sqlite(store) => &**store,
            OfflineStore::Postgres(store) => store,
        }
    }
}

/// A release of `valid-web.json` (one container, `api`), a group `g` and a deployment `d` in it,
/// moved to `running` on that release through the store while the manager is stopped (the
/// deployment loop is its own issue). Returns the deployment id, the group token and the
/// deployment token.
pub async fn running(manager: &mut Manager) -> (String, String, String) {
    let release = serde_json::json!({"stack": {"local": fixture("valid-web.json")}});
    manager.admin(reqwest::Method::POST, "/v1/releases", Some(release)).await;
    running_in(manager, "g").await
}

/// Like [`running`], on the latest release (no new one), in a new group named `group_name`.
pub async fn running_in(manager: &mut Manager, group_name: &str) -> (String, String, String) {
    let (group, group_token) = manager.group(group_name).await;
    let (id, token) = manager.deployment(&group, "d").await;
    let dep = alien_core::Id::parse_any(&id).unwrap();
    let url = manager.database_url();
    manager
        .restart_with(|state| async move {
            let store = OfflineStore::open(&state, url.as_deref()).await;
            let release =
                store.get_deployment(&dep).await.unwrap().unwrap().desired_release_id.unwrap();
            let patch = |r: Option<alien_core::Id>| alien_store::DeploymentPatch {
                current_release_id: r,
                reason: "test".into(),
                ..Default::default()
            };
            store
                .transition(&dep, alien_core::DeploymentEvent::BeginProvisioning, patch(None))
                .await
                .unwrap();
            store
                .transition(&dep, alien_core::DeploymentEvent::StepSucceeded, patch(Some(release)))
                .await
                .unwrap();
            store.close().await;
        })
        .await;
    (id, group_token, token)
}
