//! Starts Azurite (`spec/testing.md`) as a test peer: `target/peers/node_modules/.bin/azurite`
//! (`cargo xtask setup` installs it from npm), always with `--disableTelemetry`, in memory, its
//! Blob and Table services on free 127.0.0.1 ports, log under `target/peers/azurite-<pid>-<port>/`,
//! killed on drop. Missing is an error that says to run `cargo xtask setup`; never a skip.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Azurite, killed on drop.
pub struct Azurite {
    /// The Blob service, `http://127.0.0.1:<port>`.
    pub blob_url: String,
    /// The Table service, `http://127.0.0.1:<port>`.
    pub table_url: String,
    /// Its log.
    pub log: PathBuf,
    child: Child,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A unique name for a test's table or container: `{prefix}{pid}x{n}` (letters and digits, as
/// table names require).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

impl Azurite {
    /// Azurite, ready (its Blob and Table ports accept connections).
    pub async fn start() -> Result<Azurite, String> {
        Azurite::launch(None).await
    }

    /// Azurite over HTTPS (`cert` and `key`, PEM files) with Entra ID tokens accepted
    /// (`--oauth basic`: audience, issuer and lifetime checked, not the signature) and, beside
    /// the development account, the storage accounts `accounts` (`name:base64key;...`, its
    /// `AZURITE_ACCOUNTS`). URLs are `https://127.0.0.1:<port>`.
    pub async fn start_oauth(cert: &Path, key: &Path, accounts: &str) -> Result<Azurite, String> {
        Azurite::launch(Some((cert, key, accounts))).await
    }

    async fn launch(oauth: Option<(&Path, &Path, &str)>) -> Result<Azurite, String> {
        let program = workspace().join("target/peers/node_modules/.bin/azurite");
        if !program.exists() {
            return Err(format!(
                "{} is missing: run `cargo xtask setup` (it installs azurite from npm)",
                program.display()
            ));
        }
        let mut last = String::new();
        for _ in 0..3 {
            let (blob, queue, table) = (free_port()?, free_port()?, free_port()?);
            let dir = workspace()
                .join("target/peers")
                .join(format!("azurite-{}-{blob}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let log = dir.join("azurite.log");
            let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
            let mut command = Command::new(&program);
            if let Some((cert, key, accounts)) = oauth {
                command.args(["--oauth", "basic", "--cert"]).arg(cert).arg("--key").arg(key);
                command.env("AZURITE_ACCOUNTS", accounts);
            }
            let child = command
                .args(["--silent", "--inMemoryPersistence", "--disableTelemetry"])
                .args(["--skipApiVersionCheck", "--loose"])
                .args(["--blobHost", "127.0.0.1", "--blobPort", &blob.to_string()])
                .args(["--queueHost", "127.0.0.1", "--queuePort", &queue.to_string()])
                .args(["--tableHost", "127.0.0.1", "--tablePort", &table.to_string()])
                // Its debug log and any file it writes go here; data stays in memory.
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start azurite: {e}"))?;
            let scheme = if oauth.is_some() { "https" } else { "http" };
            let mut azurite = Azurite {
                blob_url: format!("{scheme}://127.0.0.1:{blob}"),
                table_url: format!("{scheme}://127.0.0.1:{table}"),
                log,
                child,
            };
            match azurite.wait_ready(&[blob, table]).await {
                Ok(()) => return Ok(azurite),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn wait_ready(&mut self, ports: &[u16]) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("azurite exited ({status}): {}", self.log_tail()));
            }
            let mut up = true;
            for port in ports {
                up &= tokio::net::TcpStream::connect(("127.0.0.1", *port)).await.is_ok();
            }
            if up {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("azurite did not listen within 60 s: {}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}

/// Creates Blob container `container` of the development account at `blob_url` (Shared Key;
/// a container that exists is fine).
pub async fn create_container(blob_url: &str, container: &str) -> Result<(), String> {
    use crate::storage::{EMULATOR_ACCOUNT, StorageAccount, StorageService};
    let account = StorageAccount::resolve(StorageService::Blob, EMULATOR_ACCOUNT, Some(blob_url))?;
    create_container_in(&account, &reqwest::Client::new(), container).await
}

/// Creates Blob container `container` of `account` (whose key signs the request) with
/// `client`; a container that exists is fine.
pub async fn create_container_in(
    account: &crate::storage::StorageAccount,
    client: &reqwest::Client,
    container: &str,
) -> Result<(), String> {
    use crate::storage::ms_date;
    let date = ms_date(chrono::Utc::now());
    let version = "2021-08-06";
    let path = format!("/{container}");
    let auth = account
        .blob_authorization(
            "PUT",
            &path,
            &[("restype", "container")],
            &[("x-ms-date", &date), ("x-ms-version", version)],
        )
        .ok_or("no account key")?;
    let response = client
        .put(format!("{}{path}?restype=container", account.base))
        .header("x-ms-date", &date)
        .header("x-ms-version", version)
        .header("Authorization", auth)
        .header("Content-Length", "0")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        201 | 409 => Ok(()),
        status => Err(format!(
            "create container {container}: {status} {}",
            response.text().await.unwrap_or_default()
        )),
    }
}

/// Creates table `table` of `account` (whose key signs the request) with `client`; a table
/// that exists is fine.
pub async fn create_table_in(
    account: &crate::storage::StorageAccount,
    client: &reqwest::Client,
    table: &str,
) -> Result<(), String> {
    let date = crate::storage::ms_date(chrono::Utc::now());
    let auth = account.table_authorization("/Tables", &date).ok_or("no account key")?;
    let response = client
        .post(format!("{}/Tables", account.base))
        .header("x-ms-date", &date)
        .header("x-ms-version", "2019-02-02")
        .header("Accept", "application/json;odata=nometadata")
        .header("Authorization", auth)
        .json(&serde_json::json!({"TableName": table}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        201 | 204 | 409 => Ok(()),
        status => Err(format!(
            "create table {table}: {status} {}",
            response.text().await.unwrap_or_default()
        )),
    }
}
