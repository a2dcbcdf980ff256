//! Starts PostgreSQL (Debian's, `spec/testing.md`) as a test peer: a data directory of its own
//! under the system temporary directory, on a free 127.0.0.1 port, stopped and removed on drop.
//!
//! The first start of a process tree runs `initdb` once into `target/peers/postgres-template-<v>`
//! (under a file lock, so parallel tests wait for one another); every peer starts from a copy,
//! which takes a fraction of a second. PostgreSQL refuses to run as root: as root, the copy is
//! handed to `nobody` and the server started through `setpriv`. The superuser is `alien`, with
//! `trust` authentication on loopback only. Missing binaries are an error that says to run
//! `cargo xtask setup`; never a skip.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged account the server runs as when the tests run as root.
const NOBODY: u32 = 65534;

/// A running PostgreSQL, stopped and removed on drop.
pub struct PgPeer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its server log.
    pub log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for PgPeer {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT): no checkpoint, the data directory is thrown away.
        let _ = Command::new("kill").args(["-QUIT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// The directory of Debian's server binaries (`/usr/lib/postgresql/<major>/bin`, the newest).
pub fn bindir() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file()).then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL's server (/usr/lib/postgresql/<version>/bin/postgres) is missing: run \
         `cargo xtask setup` (it installs Debian's postgresql)"
            .to_owned()
    })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn run(what: &str, command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `program` as the account the server runs as.
fn as_server_user(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", &NOBODY.to_string(), "--regid", &NOBODY.to_string()])
            .args(["--clear-groups", "--"])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Gives `dir` (recursively) to the server's account when running as root.
fn hand_over(dir: &Path) -> Result<(), String> {
    if running_as_root() {
        run("chown", Command::new("chown").arg("-R").arg(format!("{NOBODY}:{NOBODY}")).arg(dir))?;
    }
    Ok(())
}

/// The initialized template data directory, made once.
fn template(bindir: &Path) -> Result<PathBuf, String> {
    let version = bindir
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("x")
        .to_owned();
    let peers = workspace().join("target/peers");
    std::fs::create_dir_all(&peers).map_err(|e| format!("{}: {e}", peers.display()))?;
    let template = peers.join(format!("postgres-template-{version}"));
    let lock_path = peers.join(format!("postgres-template-{version}.lock"));
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    if template.join("PG_VERSION").is_file() {
        return Ok(template);
    }
    // initdb runs as the server's account, in a directory it owns, then the result is moved.
    let scratch = tempfile::Builder::new()
        .prefix("alien-pg-initdb-")
        .tempdir()
        .map_err(|e| format!("a temporary directory: {e}"))?;
    let data = scratch.path().join("data");
    hand_over(scratch.path())?;
    run(
        "initdb",
        as_server_user(&bindir.join("initdb")).args(["-D"]).arg(&data).args([
            "-U",
            "alien",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]),
    )?;
    let _ = std::fs::remove_dir_all(&template);
    run("copy the template", Command::new("cp").arg("-a").arg(&data).arg(&template))?;
    Ok(template)
}

impl PgPeer {
    /// PostgreSQL, ready for connections as `alien` on database `postgres`.
    pub async fn start() -> Result<PgPeer, String> {
        let bindir = bindir()?;
        let template = tokio::task::spawn_blocking({
            let bindir = bindir.clone();
            move || template(&bindir)
        })
        .await
        .map_err(|e| format!("initdb: {e}"))??;
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("alien-pg-")
                .tempdir()
                .map_err(|e| format!("a temporary directory: {e}"))?;
            let data = dir.path().join("data");
            run("copy the template", Command::new("cp").arg("-a").arg(&template).arg(&data))?;
            hand_over(dir.path())?;
            let port = free_port()?;
            let log = dir.path().join("postgres.log");
            let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
            let child = as_server_user(&bindir.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start postgres: {e}"))?;
            let mut peer = PgPeer { port, log, child, _dir: dir };
            match peer.wait_ready().await {
                Ok(()) => return Ok(peer),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        use sqlx::Connection as _;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("postgres exited ({status}): {}", self.log_tail()));
            }
            if let Ok(conn) = sqlx::PgConnection::connect(&self.url()).await {
                let _ = conn.close().await;
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "postgres did not accept connections in 30 s: {}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's process id (its backends are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The URL of database `postgres` as the superuser.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `database` as the superuser.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://alien@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates database `name` (letters, digits and `_`).
    pub async fn create_database(&self, name: &str) -> Result<(), String> {
        use sqlx::Connection as _;
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("{name:?} is not a plain database name"));
        }
        let mut conn = sqlx::PgConnection::connect(&self.url()).await.map_err(|e| e.to_string())?;
        // The name was checked above: letters, digits and `_` only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        let _ = conn.close().await;
        Ok(())
    }

    /// The end of the server log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }
}
