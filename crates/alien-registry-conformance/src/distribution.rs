//! Starts CNCF Distribution (`docker-registry`, Debian's package of `registry:2`) as a peer to
//! compare with: on 127.0.0.1 on a free port, storage in a temporary directory, deletes enabled, no
//! auth, config and log under `target/peers/distribution-<pid>-<port>/`. The process is killed when
//! the [`Distribution`] is dropped. A missing binary is an error that says how to install it.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Target;

/// Environment variable naming the `docker-registry` binary, overriding the `PATH` search.
const BINARY_ENV: &str = "ALIEN_DOCKER_REGISTRY_BIN";
/// How long Distribution gets to answer `GET /v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Port races (another process taking the port between our probe and Distribution's bind) are
/// retried this many times.
const START_ATTEMPTS: usize = 3;

/// A running CNCF Distribution, killed on drop.
pub struct Distribution {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// Where its `config.yml` and `registry.log` are.
    pub log_dir: PathBuf,
    child: Child,
    _storage: tempfile::TempDir,
}

impl Distribution {
    /// The server's process id (benchmarks read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A [`Target`] for this instance: no credentials (it runs without auth), read leniently.
    pub fn target(&self) -> Target {
        Target::new("distribution", self.base_url.clone())
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Distribution and waits until `GET /v2/` answers 200.
pub async fn start_distribution() -> Result<Distribution, String> {
    let binary = distribution_binary()?;
    let mut last_error = String::new();
    for _ in 0..START_ATTEMPTS {
        match start_once(&binary).await {
            Ok(distribution) => return Ok(distribution),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// `docker-registry --version`, e.g. `docker-registry github.com/docker/distribution 2.8.2+ds1`.
pub fn distribution_version() -> Result<String, String> {
    let binary = distribution_binary()?;
    let output = Command::new(&binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", binary.display()))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

async fn start_once(binary: &Path) -> Result<Distribution, String> {
    let port = free_port()?;
    let storage = tempfile::Builder::new()
        .prefix("distribution-storage-")
        .tempdir()
        .map_err(|e| format!("cannot create a storage directory for Distribution: {e}"))?;
    let log_dir = peers_dir().join(format!("distribution-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
    let config_path = log_dir.join("config.yml");
    std::fs::write(&config_path, distribution_config(port, storage.path())?)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let log_path = log_dir.join("registry.log");
    let log = File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err =
        log.try_clone().map_err(|e| format!("cannot reuse {}: {e}", log_path.display()))?;
    let child = Command::new(binary)
        .arg("serve")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let distribution = Distribution {
        base_url: format!("http://127.0.0.1:{port}"),
        log_dir,
        child,
        _storage: storage,
    };
    wait_ready(distribution, &log_path).await
}

/// Polls `GET /v2/` until 200, the process exits, or the timeout passes.
async fn wait_ready(
    mut distribution: Distribution,
    log_path: &Path,
) -> Result<Distribution, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))?;
    let url = format!("{}/v2/", distribution.base_url);
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = distribution.child.try_wait() {
            return Err(format!(
                "Distribution exited during startup ({status}); log {}:\n{}",
                log_path.display(),
                log_tail(log_path)
            ));
        }
        if let Ok(response) = http.get(&url).send().await
            && response.status().as_u16() == 200
        {
            return Ok(distribution);
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(format!(
                "Distribution did not answer GET {url} within {} s; log {}:\n{}",
                READY_TIMEOUT.as_secs(),
                log_path.display(),
                log_tail(log_path)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Distribution's configuration: loopback only, filesystem storage, deletes on, no auth, no
/// redirects, no blob descriptor cache (so a delete is visible at once).
pub fn distribution_config(port: u16, root: &Path) -> Result<String, String> {
    let secret = hex::encode(crate::content::random_bytes(16)?);
    Ok(format!(
        "version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  redirect:
    disable: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
",
        root = root.display()
    ))
}

/// The last lines of the log, for startup failures.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("cannot read the probed port: {e}"))
}

/// `$CARGO_TARGET_DIR/peers`, else the workspace's `target/peers`.
fn peers_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("peers")
}

/// `$ALIEN_DOCKER_REGISTRY_BIN`, else `docker-registry` on `PATH`.
pub fn distribution_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{BINARY_ENV}={} is not a file", path.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("docker-registry"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            "CNCF Distribution is not installed: no `docker-registry` on PATH. Install it with \
             `apt-get install -y docker-registry` (Debian's package of registry:2), or point \
             ALIEN_DOCKER_REGISTRY_BIN at the binary."
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_binds_loopback_and_enables_delete() {
        let text = distribution_config(5999, Path::new("/tmp/x")).unwrap();
        assert!(text.contains("addr: 127.0.0.1:5999"));
        assert!(text.contains("rootdirectory: /tmp/x"));
        assert!(text.contains("delete:\n    enabled: true"));
    }
}
