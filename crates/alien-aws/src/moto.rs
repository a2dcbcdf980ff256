//! Starts moto (the AWS emulator, `spec/testing.md`) as a test peer: `xtask/peers/moto_serial.py`
//! (moto_server with every request serialized, since stock moto loses writes under concurrent
//! transactions; `docs/research/aws-moto`) run by the peers' virtualenv on 127.0.0.1 on a free
//! port, log under `target/peers/moto-<pid>-<port>/`, killed on drop. A missing virtualenv or
//! moto is an error that says to run `cargo xtask setup`; never a skip.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::AwsSettings;

/// The account moto's default credentials act in.
pub const ACCOUNT: &str = "123456789012";
/// The region the tests use.
pub const REGION: &str = "us-east-1";

/// A running moto server, killed on drop.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Its log.
    pub log: PathBuf,
    child: Child,
}

impl Drop for Moto {
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

/// The peers' Python (`target/peers/venv`, made by `cargo xtask setup`).
pub fn python() -> PathBuf {
    workspace().join("target/peers/venv/bin/python")
}

/// The environment of a process that talks to moto: test credentials, the region, no profile
/// files and no instance metadata service (so nothing of the developer's AWS setup leaks in).
pub fn aws_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ("AWS_ENDPOINT_URL", url.into()),
    ]
}

impl Moto {
    /// Starts moto and waits until `GET /moto-api/` answers.
    pub async fn start() -> Result<Moto, String> {
        let python = python();
        if !python.exists() {
            return Err(format!(
                "{} is missing: run `cargo xtask setup` (it installs moto[server])",
                python.display()
            ));
        }
        let script = workspace().join("xtask/peers/moto_serial.py");
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let dir = peers_dir().join(format!("moto-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let log = dir.join("moto.log");
            let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
            let child = Command::new(&python)
                .arg(&script)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env_remove("AWS_PROFILE")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
            let mut moto = Moto { url: format!("http://127.0.0.1:{port}"), log, child };
            match moto.wait_ready().await {
                Ok(()) => return Ok(moto),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("moto exited during startup ({status}): {}", self.log_tail()));
            }
            if let Ok(r) = http.get(format!("{}/moto-api/", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("moto did not answer within 60 s: {}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The end of moto's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("{}:\n{}", self.log.display(), lines[lines.len().saturating_sub(30)..].join("\n"))
    }

    /// Settings that reach this moto, with its test credentials.
    pub fn settings(&self) -> AwsSettings {
        let mut settings = AwsSettings::new(Some(REGION), Some(&self.url));
        settings.credentials = Some(test_credentials());
        settings
    }

    /// Sets (or with `None` unsets) environment variables of the moto process that it reads
    /// when a service is created (`MOTO_ECS_SERVICE_RUNNING`, `MOTO_ECS_SERVICE_FAILED_TASKS`).
    pub async fn set_env(&self, vars: &[(&str, Option<&str>)]) -> Result<(), String> {
        let body: serde_json::Map<String, serde_json::Value> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map_or(serde_json::Value::Null, |v| v.into())))
            .collect();
        self.post("/_alien/env", serde_json::Value::Object(body)).await
    }

    /// Edits an ECS service in place (`rolloutState`, `runningCount`, `failedTasks`,
    /// `syncDeployment`...): how a test finishes or fails a rollout moto never runs.
    pub async fn patch_ecs_service(&self, patch: serde_json::Value) -> Result<(), String> {
        self.post("/_alien/ecs-service", patch).await
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<(), String> {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "POST {path}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ))
        }
    }
}

/// The credentials moto's default account answers to.
pub fn test_credentials() -> aws_credential_types::provider::SharedCredentialsProvider {
    aws_credential_types::provider::SharedCredentialsProvider::new(
        aws_credential_types::Credentials::new("testing", "testing", None, None, "moto"),
    )
}

/// A name unique in this process and run, for a fresh table or bucket per test
/// (`[a-z0-9-]`, at most 40 characters).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{prefix}-{}-{}-{nanos:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}
