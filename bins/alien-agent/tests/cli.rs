//! The agent's command line: usage errors exit 2 with a message naming what is wrong, before
//! anything is written or any engine is needed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

fn agent(state: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_alien-agent"))
        .env_remove("ALIEN_AGENT_TOKEN")
        .env_remove("ALIEN_MANAGER_URL")
        .env_remove("ALIEN_AGENT_STATE_DIR")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_names_every_option() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent(dir.path(), &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--manager-url", "--token", "--name", "--state-dir", "--interval", "--engine"] {
        assert!(help.contains(option), "{option} in:\n{help}");
    }
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Nothing to register with on a first start.
    let out = agent(&state, &["--manager-url", "http://127.0.0.1:9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--token is required"), "{stderr}");
    // An admin token is not an agent's.
    let admin = format!("ax_admin_{}", "0".repeat(40));
    let out = agent(&state, &["--manager-url", "http://127.0.0.1:9", "--token", &admin]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("admin token is not for agents"), "{stderr}");
    // A group token needs a name.
    let group = format!("ax_dg_{}", "0".repeat(40));
    let out = agent(&state, &["--manager-url", "http://127.0.0.1:9", "--token", &group]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--name is required"), "{stderr}");
    // Out-of-range interval: clap says which flag.
    let out = agent(&state, &["--manager-url", "http://127.0.0.1:9", "--interval", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--interval"), "{stderr}");
    assert!(!state.join("deployment.token").exists(), "nothing registered");
}
