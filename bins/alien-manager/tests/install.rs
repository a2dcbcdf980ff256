//! Agent installation from `[server] releases-url`: `GET /install/agent.sh` piped to sh
//! downloads the agent `cargo xtask dist` built from a plain HTTP server (Python's
//! `http.server`), checks its SHA-256, installs it into a prefix and starts it, and the agent
//! registers with the manager. A tampered or missing binary installs nothing.

#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::local::{podman_env, workspace_root, xtask_static};
use common::{Manager, free_port};
use reqwest::Method;

/// `python3 -m http.server` on 127.0.0.1 serving `dir`, stopped on drop.
struct Releases {
    child: Child,
    url: String,
}

impl Releases {
    fn serve(dir: &Path) -> Releases {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the releases server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Releases { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Releases {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The guide's one line, `curl -fsSL {manager}/install/agent.sh | sh -s -- ARGS`, spawned.
fn install(manager: &str, args: &[&str], env: &[(String, String)], log: &Path) -> Child {
    let line = format!("curl -fsSL {manager}/install/agent.sh | sh -s -- {}", args.join(" "));
    Command::new("sh")
        .args(["-c", &line])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("ALIEN_AGENT_TOKEN")
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap()
}

/// Runs [`install`] to its end: exit code and stderr.
fn install_to_end(manager: &str, args: &[&str], log: &Path) -> (Option<i32>, String) {
    let mut child = install(manager, args, &[], log);
    let status = child.wait().unwrap();
    (status.code(), std::fs::read_to_string(log.with_extension("err")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_script_installs_a_checked_agent_that_registers() {
    for tool in ["curl", "python3", "sha256sum", "tar"] {
        assert!(common::local::on_path(tool), "{tool} is not installed");
    }
    xtask_static(&["dist"]);
    let dir = tempfile::Builder::new()
        .prefix("install-test-")
        .tempdir_in(workspace_root().join("target"))
        .unwrap();
    // A copy of `target/dist`, so that tampering with it touches nobody else.
    let releases_dir = dir.path().join("releases");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(workspace_root().join("target/dist"))
        .arg(&releases_dir)
        .status()
        .unwrap();
    assert!(copied.success());
    let releases = Releases::serve(&releases_dir);
    let manager =
        Manager::start_at(&format!("[server]\nreleases-url = \"{}\"\n", releases.url), free_port())
            .await;

    // The script: no auth, a shell script naming this manager and its version.
    let response = reqwest::get(format!("{}/install/agent.sh", manager.base)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/x-shellscript; charset=utf-8"
    );
    let script = response.text().await.unwrap();
    assert!(script.starts_with("#!/bin/sh\n"));
    assert!(script.contains(&format!("manager_url='{}'", manager.base)), "{script}");
    assert!(script.contains(&format!("releases_url='{}'", releases.url)), "{script}");

    let (group, group_token) = manager.group("edge").await;
    let prefix = dir.path().join("prefix");
    let state = dir.path().join("agent-state");
    let env = podman_env(dir.path());
    let mut agent = install(
        &manager.base,
        &[
            "--token",
            &group_token,
            "--name",
            "store-1",
            "--prefix",
            prefix.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &env,
        &dir.path().join("agent.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let registered = loop {
        let (status, listed) = manager
            .call(
                Method::GET,
                &format!("/v1/deployments?deploymentGroupId={group}"),
                Some(&manager.admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "{listed}");
        if let Some(d) = listed["items"].as_array().unwrap().first() {
            break d.clone();
        }
        if let Some(status) = agent.try_wait().unwrap() {
            panic!(
                "the script ended ({status}) before the agent registered:\n{}",
                std::fs::read_to_string(dir.path().join("agent.err")).unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not register:\n{}",
            std::fs::read_to_string(dir.path().join("agent.err")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(registered["name"], "store-1");
    assert_eq!(registered["platform"], "local");
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = Command::new("pkill").args(["-f", prefix.to_str().unwrap()]).status();
    let installed = prefix.join("bin/alien-agent");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let err = std::fs::read_to_string(dir.path().join("agent.err")).unwrap();
    assert!(!err.contains(&group_token), "the token is never printed:\n{err}");

    // A tampered archive: refused, nothing installed.
    let archive = releases_dir.join(format!(
        "alien-agent/{}/alien-agent-x86_64-unknown-linux-gnu.tar.gz",
        env!("CARGO_PKG_VERSION")
    ));
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&archive, &bytes).unwrap();
    let prefix2 = dir.path().join("prefix2");
    let (code, err) = install_to_end(
        &manager.base,
        &["--token", &group_token, "--name", "store-2", "--prefix", prefix2.to_str().unwrap()],
        &dir.path().join("tampered.log"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!prefix2.exists(), "nothing installed");

    // No build for this version: refused, nothing installed.
    std::fs::remove_file(&archive).unwrap();
    let (code, err) = install_to_end(
        &manager.base,
        &["--token", &group_token, "--name", "store-2", "--prefix", prefix2.to_str().unwrap()],
        &dir.path().join("missing.log"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot download alien-agent"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!prefix2.exists(), "nothing installed");

    // A machine without curl or wget, or without a SHA-256 tool: one line naming what is
    // missing, nothing installed.
    let script_file = dir.path().join("agent.sh");
    std::fs::write(&script_file, &script).unwrap();
    for (kept, missing) in [
        (&["uname", "id"][..], "neither curl nor wget"),
        (&["uname", "id", "curl"][..], "neither sha256sum nor shasum"),
    ] {
        let bin = tempfile::tempdir().unwrap();
        for tool in kept {
            let found =
                Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
            let path = String::from_utf8(found.stdout).unwrap();
            std::os::unix::fs::symlink(path.trim(), bin.path().join(tool)).unwrap();
        }
        let out = Command::new("/bin/sh")
            .arg(&script_file)
            .args(["--token", &group_token, "--name", "store-3"])
            .args(["--prefix", prefix2.to_str().unwrap()])
            .env("PATH", bin.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(missing), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!prefix2.exists(), "nothing installed");
    }

    // Usage: a group token without a name.
    let (code, err) = install_to_end(
        &manager.base,
        &["--token", &group_token, "--prefix", prefix2.to_str().unwrap()],
        &dir.path().join("usage.log"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--name is required"), "{err}");
}
