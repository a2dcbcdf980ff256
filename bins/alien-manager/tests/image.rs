//! The manager's container image against podman: the `Dockerfile` built offline and the OCI
//! layout of `cargo xtask image manager`, run the two ways the self-hosting guide shows (a named
//! volume on `/data` with `BASE_URL`; plus a config file mounted at `/app/alien-manager.toml`).

#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use common::local::{podman_env, workspace_root, xtask_static};
use serde_json::{Value, json};

const IMAGE: &str = "localhost/alien-manager:test";
const UID: u32 = 10001;

struct Podman {
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("image-test-")
            .tempdir_in(workspace_root().join("target"))
            .unwrap();
        Podman { env: podman_env(dir.path()), _dir: dir }
    }

    fn output(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs podman; its stdout, failing the test when podman fails.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn logs(&self, name: &str) -> String {
        let out = self.output(&["logs", name]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(&["rm", "-af", "-t", "0"]);
        let _ = self.output(&["volume", "prune", "-f"]);
    }
}

/// Polls `url` until it answers 200; the time it took.
async fn until_ok(url: &str, podman: &Podman, name: &str) -> Duration {
    let t0 = Instant::now();
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{url} did not answer; logs:\n{}",
            podman.logs(name)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn get(base: &str, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The uid the container's main process runs as, read from the host's `/proc`.
fn process_uid(podman: &Podman, name: &str) -> u32 {
    let pid = podman.ok(&["inspect", "--format", "{{.State.Pid}}", name]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap() // effective uid
}

/// The compressed size of the image in an OCI layout: its manifest's layers and config.
fn compressed_size(layout: &Path) -> u64 {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob =
        |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(manifest_digest)).unwrap()).unwrap();
    let mut size = manifest["config"]["size"].as_u64().unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        size += layer["size"].as_u64().unwrap();
    }
    size
}

fn image_dir() -> PathBuf {
    // podman names an image pulled from `oci:PATH` after PATH: no `..` in it.
    std::fs::canonicalize(workspace_root().join("target/images/alien-manager")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_the_guide_says_keeps_its_data_and_reads_its_config() {
    xtask_static(&["image", "manager"]);
    let podman = Podman::new();
    let root = workspace_root();
    // docker build / podman build, offline: the Dockerfile at the root, the repository as context.
    let t0 = Instant::now();
    podman.ok(&[
        "build",
        "--format",
        "docker",
        "--pull=never",
        "-t",
        IMAGE,
        "-f",
        root.join("Dockerfile").to_str().unwrap(),
        root.to_str().unwrap(),
    ]);
    eprintln!("podman build: {:.1}s", t0.elapsed().as_secs_f64());

    // The guide's first form: a named volume on /data and BASE_URL.
    podman.ok(&["volume", "create", "alien-data"]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "m1",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "-v",
        "alien-data:/data",
        "-e",
        &format!("BASE_URL={base}"),
        IMAGE,
    ]);
    until_ok(&format!("{base}/health"), &podman, "m1").await;
    let to_health = t0.elapsed();
    eprintln!("podman run to /health answering: {} ms", to_health.as_millis());
    until_ok(&format!("{base}/ready"), &podman, "m1").await;
    let logs = podman.logs("m1");
    let admin = logs
        .lines()
        .find_map(|l| l.strip_prefix("export ALIEN_API_KEY="))
        .unwrap_or_else(|| panic!("the admin token is in the logs:\n{logs}"))
        .to_owned();
    assert!(logs.contains(&format!("export ALIEN_MANAGER_URL={base}")), "{logs}");
    let (status, me) = get(&base, "/v1/whoami", &admin).await;
    assert_eq!(status, 200, "{me}");
    let stack = serde_json::from_str::<Value>(
        &std::fs::read_to_string(root.join("../shared/fixtures/valid-web.json")).unwrap(),
    )
    .unwrap();
    let release = reqwest::Client::new()
        .post(format!("{base}/v1/releases"))
        .bearer_auth(&admin)
        .json(&json!({"stack": {"local": stack}}))
        .send()
        .await
        .unwrap();
    assert_eq!(release.status().as_u16(), 201);
    let release: Value = release.json().await.unwrap();
    let release_id = release["id"].as_str().unwrap().to_owned();
    assert_eq!(process_uid(&podman, "m1"), UID, "the manager runs as its own user");
    // The image's own health check (the binary's `health`, no shell, no curl).
    podman.ok(&["healthcheck", "run", "m1"]);
    // SIGTERM: a clean exit within the shutdown timeout.
    let t0 = Instant::now();
    podman.ok(&["stop", "-t", "30", "m1"]);
    let stopped = t0.elapsed();
    assert_eq!(podman.ok(&["inspect", "--format", "{{.State.ExitCode}}", "m1"]), "0");
    assert!(stopped < Duration::from_secs(15), "stopped in {stopped:?}");
    assert!(podman.logs("m1").contains("alien-manager stopped"));

    // The second form: the same volume, and a config file at /app/alien-manager.toml whose port
    // is the one published (so /health answering proves the file was read).
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("alien-manager.toml");
    std::fs::write(&config, "[server]\nport = 9191\n").unwrap();
    let port2 = free_port();
    let base2 = format!("http://127.0.0.1:{port2}");
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "m2",
        "-p",
        &format!("127.0.0.1:{port2}:9191"),
        "-v",
        "alien-data:/data",
        "-v",
        &format!("{}:/app/alien-manager.toml:ro", config.display()),
        "-e",
        &format!("BASE_URL={base2}"),
        IMAGE,
    ]);
    until_ok(&format!("{base2}/health"), &podman, "m2").await;
    let logs = podman.logs("m2");
    assert!(!logs.contains("ALIEN_API_KEY="), "no new admin token on a restart:\n{logs}");
    let (status, _) = get(&base2, "/v1/whoami", &admin).await;
    assert_eq!(status, 200, "the admin token of the first run still works");
    let (status, kept) = get(&base2, &format!("/v1/releases/{release_id}"), &admin).await;
    assert_eq!(status, 200, "the release is still there: {kept}");
    // The health check reads the same file, so it probes port 9191.
    podman.ok(&["healthcheck", "run", "m2"]);
    podman.ok(&["stop", "-t", "30", "m2"]);

    // A /data the manager's user cannot write: one clear line, exit 1, no panic.
    let unwritable = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        unwritable.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = podman.output(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data", unwritable.path().display()),
        IMAGE,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(/data) is not writable by this process (uid 10001)"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("alien-manager:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");

    // The OCI layout of the same tree: loaded without a registry, it runs the same way.
    let layout = image_dir().join("oci");
    let size = compressed_size(&layout);
    eprintln!("image size (compressed layers + config): {:.1} MiB", size as f64 / 1048576.0);
    assert!(size < 25 << 20, "the image is {size} bytes compressed");
    let pulled =
        podman.ok(&["pull", "-q", &format!("oci:{}:alien-manager:latest", layout.display())]);
    let image_id = pulled.lines().last().unwrap().to_owned();
    let port3 = free_port();
    let base3 = format!("http://127.0.0.1:{port3}");
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "m3",
        "-p",
        &format!("127.0.0.1:{port3}:8080"),
        "-v",
        "fresh:/data",
        &image_id,
    ]);
    until_ok(&format!("{base3}/ready"), &podman, "m3").await;
    assert_eq!(process_uid(&podman, "m3"), UID);
    assert!(podman.logs("m3").contains("export ALIEN_API_KEY="));
}
