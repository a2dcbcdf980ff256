//! Starts the GCP emulators (`spec/testing.md`) as test peers, each on a free 127.0.0.1 port with
//! its log under `target/peers/<name>-<pid>-<port>/`, killed on drop:
//! - the Firestore emulator: its jar run directly by `java` (the SDK's wrapper script does not
//!   exec java, so killing it would leave the JVM); the jar comes with the machine image
//!   (`/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/`, or
//!   `ALIEN_FIRESTORE_EMULATOR_JAR`);
//! - gcp-storage-emulator, in memory, from the peers' virtualenv (`cargo xtask setup`).
//!
//! Something missing is an error that says what to install; never a skip.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{GcpSettings, Service};

/// The Firestore emulator's jar on this machine image.
pub const FIRESTORE_JAR: &str =
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar";

/// A running emulator, killed on drop.
pub struct Emulator {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its log.
    pub log: PathBuf,
    child: Child,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn peers_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("peers"),
        None => workspace().join("target/peers"),
    }
}

/// A unique name for a test's project, bucket or collection: `{prefix}-{pid}-{n}`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

impl Emulator {
    /// The Firestore emulator, ready (`GET /` answers).
    pub async fn firestore() -> Result<Emulator, String> {
        let jar = std::env::var_os("ALIEN_FIRESTORE_EMULATOR_JAR")
            .map_or_else(|| PathBuf::from(FIRESTORE_JAR), PathBuf::from);
        if !jar.exists() {
            return Err(format!(
                "the Firestore emulator is missing ({}): install the Google Cloud CLI's \
                 `google-cloud-cli-firestore-emulator` package, or set ALIEN_FIRESTORE_EMULATOR_JAR",
                jar.display()
            ));
        }
        Emulator::start("firestore", "/", |port| {
            let mut cmd = Command::new("java");
            cmd.arg("-Xmx512m")
                .arg("-cp")
                .arg(&jar)
                .arg("com.google.cloud.datastore.emulator.firestore.CloudFirestore")
                .args(["start", "--host", "127.0.0.1", "--port", &port.to_string()]);
            cmd
        })
        .await
    }

    /// gcp-storage-emulator in memory, ready (`GET /` answers).
    pub async fn storage() -> Result<Emulator, String> {
        let program = workspace().join("target/peers/venv/bin/gcp-storage-emulator");
        if !program.exists() {
            return Err(format!(
                "{} is missing: run `cargo xtask setup` (it installs gcp-storage-emulator)",
                program.display()
            ));
        }
        Emulator::start("gcs", "/", |port| {
            let mut cmd = Command::new(&program);
            cmd.args(["start", "--host", "127.0.0.1", "--port", &port.to_string(), "--in-memory"]);
            cmd
        })
        .await
    }

    async fn start(
        name: &str,
        ready_path: &str,
        command: impl Fn(u16) -> Command,
    ) -> Result<Emulator, String> {
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let dir = peers_dir().join(format!("{name}-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let log = dir.join(format!("{name}.log"));
            let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
            let child = command(port)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start the {name} emulator: {e}"))?;
            let mut emulator = Emulator { url: format!("http://127.0.0.1:{port}"), log, child };
            match emulator.wait_ready(name, ready_path).await {
                Ok(()) => return Ok(emulator),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn wait_ready(&mut self, name: &str, path: &str) -> Result<(), String> {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the {name} emulator exited ({status}): {}", self.log_tail()));
            }
            if let Ok(r) = http.get(format!("{}{path}", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "the {name} emulator did not answer within 60 s: {}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    /// Settings that reach this emulator as `service` and nothing of the developer's Google
    /// setup (no token is sent to an emulator), signing URLs with [`test_key`].
    pub fn settings(&self, service: Service) -> GcpSettings {
        GcpSettings { tokens: test_key(), endpoints: Vec::new() }
            .with_endpoint(service, Some(&self.url))
    }
}

/// The throwaway service-account key of the V4 golden vector
/// (`docs/research/gcp-emulators/scripts/v4_vector.json`): it signs the tests' URLs.
pub fn test_key() -> std::sync::Arc<crate::auth::ServiceAccountKey> {
    std::sync::Arc::new(test_key_with_token_uri(None))
}

/// [`test_key`] exchanging its JWTs at `token_uri` (a contract stub's token endpoint).
pub fn test_key_with_token_uri(token_uri: Option<String>) -> crate::auth::ServiceAccountKey {
    let text = include_str!("../../../docs/research/gcp-emulators/scripts/v4_vector.json");
    let vector: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let email = vector["client_email"].as_str().unwrap_or_default().to_owned();
    let pem = vector["private_key_pem"].as_str().unwrap_or_default();
    match crate::auth::ServiceAccountKey::new(email, pem, Some("test-key".into()), token_uri) {
        Ok(key) => key,
        Err(err) => panic!("the test key in v4_vector.json: {err}"),
    }
}

/// The test key as a credentials JSON file (`GOOGLE_APPLICATION_CREDENTIALS`) at `path`.
pub fn write_test_credentials(path: &Path, token_uri: &str) -> std::io::Result<()> {
    let text = include_str!("../../../docs/research/gcp-emulators/scripts/v4_vector.json");
    let vector: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let file = serde_json::json!({
        "type": "service_account",
        "client_email": vector["client_email"],
        "private_key": vector["private_key_pem"],
        "private_key_id": "test-key",
        "token_uri": token_uri,
    });
    std::fs::write(path, file.to_string())
}

impl Emulator {
    /// `GET /wipe` (gcp-storage-emulator): every bucket and object gone.
    pub async fn wipe(&self) -> Result<(), String> {
        reqwest::get(format!("{}/wipe", self.url)).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
