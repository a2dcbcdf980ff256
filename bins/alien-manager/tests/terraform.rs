//! The Terraform modules `infra/aws`, `infra/gcp` and `infra/azure`, checked without a terraform
//! binary (none can be installed here): every `.tf` parses (python-hcl2) and has the module's
//! interface, checkov passes with every skip justified in place, and `config_values` rendered for
//! example inputs is an `alien-manager.toml` that `alien-manager config check` accepts.
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

/// `infra/<module>/check.py`.
fn check_py(module: &str) -> Command {
    let mut cmd = Command::new(peers_python());
    cmd.arg(workspace().join("infra").join(module).join("check.py"));
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

/// checkov on `infra/<module>`: nothing fails, at least `min_passed` checks pass, and every
/// skip carries its reason.
fn checkov_passes(module: &str, min_passed: u64) {
    let mut cmd = Command::new(workspace().join("target/peers/checkov-venv/bin/checkov"));
    cmd.args(["-d"])
        .arg(workspace().join("infra").join(module))
        .args(["--framework", "terraform", "--skip-download", "--compact", "-o", "json"])
        .env("BC_SKIP_MAPPING", "TRUE");
    let report: serde_json::Value = serde_json::from_str(&output(cmd)).unwrap();
    let summary = &report["summary"];
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(summary["passed"].as_u64().unwrap() >= min_passed, "{summary}");
    for skipped in report["results"]["skipped_checks"].as_array().unwrap() {
        let reason = skipped["check_result"]["suppress_comment"].as_str().unwrap_or_default();
        assert!(reason.len() >= 20, "a skip without a reason: {skipped}");
    }
}

/// `config_values` of `infra/<module>` rendered for some switch combinations passes
/// `config check`; with every switch on, its output names every key in `sections`.
fn rendered_config_values_pass_config_check(module: &str, sections: &[&str]) {
    for switches in [
        &[][..],
        &["--enable-artifact-registry=false"],
        &["--enable-commands-store=false", "--enable-impersonation=false"],
    ] {
        let mut render = check_py(module);
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
            "{module} {switches:?}:\n{toml}\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if switches.is_empty() {
            for &key in sections {
                assert!(stdout.contains(key), "{key} in:\n{stdout}");
            }
        }
    }
}

#[test]
fn aws_every_file_parses_and_every_switch_renders() {
    output(check_py("aws"));
}

#[test]
fn aws_checkov_passes_with_every_skip_justified() {
    checkov_passes("aws", 50);
}

#[test]
fn aws_rendered_config_values_pass_config_check() {
    rendered_config_values_pass_config_check(
        "aws",
        &["commands.kv", "commands.storage", "impersonation.aws", "artifact-registry.aws"],
    );
}

#[test]
fn gcp_every_file_parses_and_every_switch_renders() {
    output(check_py("gcp"));
}

/// checkov has far fewer GCP checks than AWS ones: 12 apply to this module.
#[test]
fn gcp_checkov_passes_with_every_skip_justified() {
    checkov_passes("gcp", 10);
}

/// Needs a build with the GCP backends (`gar`, `firestore`, `gcs`, `gcpserviceaccount`);
/// without them `config check` refuses each binding as not available in this build.
#[test]
fn gcp_rendered_config_values_pass_config_check() {
    rendered_config_values_pass_config_check(
        "gcp",
        &["commands.kv", "commands.storage", "impersonation.gcp", "artifact-registry.gcp"],
    );
}

#[test]
fn azure_every_file_parses_and_every_switch_renders() {
    output(check_py("azure"));
}

/// 13 checkov checks pass on this module; 14 are skipped in place, each with its reason.
#[test]
fn azure_checkov_passes_with_every_skip_justified() {
    checkov_passes("azure", 10);
}

/// Needs a build with the Azure backends (`acr`, `tablestorage`, `blob`,
/// `azuremanagedidentity`); without them `config check` refuses each binding as not available
/// in this build. The module renders `subscriptionId` on the bindings that need one.
#[test]
fn azure_rendered_config_values_pass_config_check() {
    rendered_config_values_pass_config_check(
        "azure",
        &["commands.kv", "commands.storage", "impersonation.azure", "artifact-registry.azure"],
    );
}
