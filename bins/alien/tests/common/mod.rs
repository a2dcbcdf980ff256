//! Running the real `alien` binary against the real `alien-manager` binary in tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test crates

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

pub const KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

pub fn alien_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_alien"))
}

pub fn manager_bin() -> PathBuf {
    let manager = alien_bin().with_file_name("alien-manager");
    assert!(
        manager.is_file(),
        "{} is missing: build it with `cargo build -p alien-manager` (cargo xtask test builds every binary)",
        manager.display()
    );
    manager
}

/// `alien` with none of the variables the CLI or the manager read.
pub fn clean(mut cmd: Command) -> Command {
    for (name, _) in std::env::vars() {
        if name.starts_with("ALIEN_")
            || ["PORT", "HOST", "BASE_URL", "RUST_LOG"].contains(&name.as_str())
        {
            cmd.env_remove(name);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// A manager started with `alien serve` on a free port of 127.0.0.1, and its admin token.
pub struct Manager {
    pub child: Child,
    pub url: String,
    pub admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Manager {
    pub fn start() -> Manager {
        Manager::start_with(false, &[])
    }

    /// With the deployment loop when `deploying`, and extra environment variables.
    pub fn start_with(deploying: bool, env: &[(String, String)]) -> Manager {
        manager_bin();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = clean(Command::new(alien_bin()));
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0"]);
        if !deploying {
            cmd.arg("--disable-deployment-loop");
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("ALIEN_DATABASE__ENCRYPTION_KEY", KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let printed = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = printed.clone();
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
                    let addr = rest.split_whitespace().next().unwrap_or_default().to_owned();
                    let _ = tx.send(Ok(addr));
                }
                log.push(line);
            }
            let _ = tx.send(Err(log.join("\n")));
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(log)) => panic!("the manager exited before listening:\n{log}"),
            Err(_) => panic!("the manager did not report its address"),
        };
        let port = addr.rsplit(':').next().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let admin = loop {
            let found = printed
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix("export ALIEN_API_KEY=").map(str::to_owned));
            if let Some(admin) = found {
                break admin;
            }
            assert!(std::time::Instant::now() < deadline, "no admin token printed at first start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Manager { child, url: format!("http://127.0.0.1:{port}"), admin, _dir: dir }
    }

    /// `alien ARGS` with the admin key from the environment.
    pub fn alien(&self, args: &[&str]) -> Run {
        self.alien_as(&self.admin, args)
    }

    /// `alien ARGS` with `key`; fails the test if the key shows up in anything it printed.
    pub fn alien_as(&self, key: &str, args: &[&str]) -> Run {
        let mut cmd = clean(Command::new(alien_bin()));
        cmd.args(args).env("ALIEN_MANAGER_URL", &self.url).env("ALIEN_API_KEY", key);
        let run = Run::of(cmd.stdin(Stdio::null()).output().unwrap(), args);
        for (name, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(!text.contains(key), "alien {args:?} printed the API key on {name}:\n{text}");
        }
        run
    }

    /// A direct API call with the admin token: status and JSON.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `http_requests_total` of the registry's upload requests (POST and PATCH under `/v2`).
    pub async fn registry_uploads(&self) -> u64 {
        let text =
            reqwest::get(format!("{}/metrics", self.url)).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with("http_requests_total{"))
            .filter(|l| l.contains("route=\"/v2"))
            .filter(|l| l.contains("method=\"POST\"") || l.contains("method=\"PATCH\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }
}

/// A finished CLI run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

impl Run {
    pub fn of(output: Output, args: &[&str]) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            args: args.join(" "),
        }
    }

    /// Exit 0; stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "alien {}:\n{}\n{}", self.args, self.stdout, self.stderr);
        &self.stdout
    }

    /// Exit 0; stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("alien {}: not JSON ({e}):\n{}", self.args, self.stdout))
    }

    /// Exit `code`; stderr.
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "alien {}:\n{}\n{}", self.args, self.stdout, self.stderr);
        &self.stderr
    }
}

/// A fixture stack of `shared/fixtures`.
pub fn fixture_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("ALIEN_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    };
    let path = dir.join(name);
    assert!(path.is_file(), "fixture {} is missing", path.display());
    path
}

/// A copy of the OCI layout `cargo xtask image hello-app` writes, taken under the lock the image
/// tests of alien-manager hold while they rebuild it.
pub fn hello_app_layout() -> (tempfile::TempDir, PathBuf) {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let layout = target.join("hello-app/oci");
    assert!(
        layout.join("index.json").is_file(),
        "{} is missing: run `cargo xtask image hello-app` first (cargo xtask test does)",
        layout.display()
    );
    let lock = std::fs::File::create(target.join("hello-app.lock")).unwrap();
    lock.lock().unwrap();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&layout, &copy.path().join("oci"));
    drop(lock);
    let path = copy.path().join("oci");
    (copy, path)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A podman of this test's own: configuration and storage under `dir`, slirp4netns with the
/// host's loopback reachable (the manager listens on 127.0.0.1). The same settings as
/// `alien_local::test_support::isolated_podman`, which this crate does not link (the CLI depends
/// on no server or platform crate; its tests link only the PostgreSQL test peer).
pub fn isolated_podman(dir: &std::path::Path) -> Vec<(String, String)> {
    let podman = dir.join("podman");
    std::fs::create_dir_all(podman.join("tmp")).unwrap();
    let containers = format!(
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         netns = \"slirp4netns\"\n[engine]\nnetwork_cmd_options = [\"allow_host_loopback=true\"]\n\
         runtime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
         tmp_dir = \"{}\"\n",
        podman.join("tmp").display()
    );
    std::fs::write(podman.join("containers.conf"), containers).unwrap();
    let storage = format!(
        "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
        podman.join("run").display(),
        podman.join("root").display()
    );
    std::fs::write(podman.join("storage.conf"), storage).unwrap();
    vec![
        ("CONTAINERS_CONF".to_owned(), podman.join("containers.conf").display().to_string()),
        ("CONTAINERS_STORAGE_CONF".to_owned(), podman.join("storage.conf").display().to_string()),
    ]
}
