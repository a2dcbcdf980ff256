//! The Terraform module `infra/aws`, checked without a terraform binary (none can be installed
//! here): every `.tf` parses (python-hcl2) and has the module's interface, checkov passes with
//! every skip justified in place, and `config_values` rendered for example inputs is an
//! `alien-manager.toml` that `alien-manager config check` accepts.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn peers_python() -> PathBuf {
    workspace().join("target/peers/venv/bin/python")
}

fn check_py() -> Command {
    let mut cmd = Command::new(peers_python());
    cmd.arg(workspace().join("infra/aws/check.py"));
    cmd
}

fn output(mut cmd: Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (run `cargo xtask setup`)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn every_file_parses_and_every_switch_renders() {
    output(check_py());
}

#[test]
fn checkov_passes_with_every_skip_justified() {
    let mut cmd = Command::new(workspace().join("target/peers/checkov-venv/bin/checkov"));
    cmd.args(["-d"])
        .arg(workspace().join("infra/aws"))
        .args(["--framework", "terraform", "--skip-download", "--compact", "-o", "json"])
        .env("BC_SKIP_MAPPING", "TRUE");
    let report: serde_json::Value = serde_json::from_str(&output(cmd)).unwrap();
    let summary = &report["summary"];
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["passed"].as_u64().unwrap() >= 50, "{summary}");
    for skipped in report["results"]["skipped_checks"].as_array().unwrap() {
        let reason = skipped["check_result"]["suppress_comment"].as_str().unwrap_or_default();
        assert!(reason.len() >= 20, "a skip without a reason: {skipped}");
    }
}

#[test]
fn rendered_config_values_pass_config_check() {
    for switches in [
        &[][..],
        &["--enable-artifact-registry=false"],
        &["--enable-commands-store=false", "--enable-impersonation=false"],
    ] {
        let mut render = check_py();
        render.arg("render").args(switches);
        let toml = output(render);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("alien-manager.toml");
        std::fs::write(&file, &toml).unwrap();
        let out = common::bin()
            .current_dir(dir.path())
            .args(["config", "check", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{switches:?}:\n{toml}\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if switches.is_empty() {
            for key in
                ["commands.kv", "commands.storage", "impersonation.aws", "artifact-registry.aws"]
            {
                assert!(stdout.contains(key), "{key} in:\n{stdout}");
            }
        }
    }
}
