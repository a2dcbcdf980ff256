//! The real `alien` binary against the real `alien-manager` binary on 127.0.0.1.
//!
//! `alien` is this package's binary (`CARGO_BIN_EXE_alien`); `alien-manager` is found beside it in
//! the same target directory (`cargo xtask test`, `cargo nextest run --workspace` and
//! `cargo build` build every binary of the workspace there). The manager is started through
//! `alien serve`, so every test also runs that path. Every CLI run is checked for the API key in
//! its output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::Command;

use common::{Manager, Run, alien_bin, clean, fixture_path, hello_app_layout, manager_bin};
use serde_json::{Value, json};

#[tokio::test]
async fn whoami_and_status_with_the_first_run_admin_token() {
    let manager = Manager::start();
    let text = manager.alien(&["whoami"]).ok().to_owned();
    assert!(text.contains("workspace-admin"), "{text}");
    assert!(text.contains(&manager.url), "{text}");
    // --json prints the API's own answer.
    let (_, api) = manager.api(reqwest::Method::GET, "/v1/whoami", None).await;
    assert_eq!(manager.alien(&["whoami", "--json"]).json(), api);

    let text = manager.alien(&["status"]).ok().to_owned();
    for expected in [env!("CARGO_PKG_VERSION"), "healthy", "local (pull)", "artifacts (embedded)"] {
        assert!(text.contains(expected), "{expected}:\n{text}");
    }
    let status = manager.alien(&["status", "--json"]).json();
    assert_eq!(status["health"]["version"], env!("CARGO_PKG_VERSION"));
    let (_, platforms) = manager.api(reqwest::Method::GET, "/v1/platforms", None).await;
    assert_eq!(status["platforms"], platforms);
    assert_eq!(status["deployments"]["total"], 0);
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let manager = Manager::start();
    for args in [
        &["bogus"][..],
        &["deployments", "get"],
        &["logs", "dep_x", "--limit", "0"],
        &["completions", "powershell"],
        &["release", "--stack", "/nonexistent/stack.json"],
        &["deployments", "create", "--name", "a", "--platform", "mars"],
        &["commands", "invoke", "dep_x", "run", "--params", "{not json"],
    ] {
        let stderr = manager.alien(args).fails(2).to_owned();
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
    }
    let stack = fixture_path("valid-web.json");
    let stack = stack.to_str().unwrap();
    let stderr =
        manager.alien(&["release", "--stack", stack, "--image", "web=/tmp"]).fails(2).to_owned();
    assert!(stderr.contains("no container \"web\""), "{stderr}");
    // Without a manager URL there is nothing to call.
    let mut cmd = clean(Command::new(alien_bin()));
    let run = Run::of(cmd.arg("whoami").output().unwrap(), &["whoami"]);
    assert!(run.fails(2).contains("ALIEN_MANAGER_URL"), "{}", run.stderr);
    // Help is not an error.
    assert!(manager.alien(&["--help"]).ok().contains("deployments"));
}

#[tokio::test]
async fn refusals_exit_1_with_the_managers_code_message_and_hint() {
    let manager = Manager::start();
    // No group exists yet: the manager refuses with a hint.
    let stderr = manager
        .alien(&["deployments", "create", "--name", "a", "--platform", "local"])
        .fails(1)
        .to_owned();
    assert!(stderr.contains("CONFLICT (409): no deployment group exists yet"), "{stderr}");
    assert!(stderr.contains("hint: create one with POST /v1/deployment-groups"), "{stderr}");
    // Validation errors list each violation.
    let stderr = manager.alien(&["groups", "create", "Not_A_Name"]).fails(1).to_owned();
    assert!(stderr.contains("VALIDATION_FAILED (400)"), "{stderr}");
    assert!(stderr.contains("  name: "), "{stderr}");
    // An unknown command.
    let stderr = manager.alien(&["commands", "get", "cmd_unknown"]).fails(1).to_owned();
    assert!(stderr.contains("COMMAND_NOT_FOUND (404)"), "{stderr}");
    // A malformed id is the manager's to refuse, and still exit 1.
    let stderr = manager.alien(&["deployments", "get", "Not_An_Id"]).fails(1).to_owned();
    assert!(stderr.contains("(400)"), "{stderr}");
    // A key the manager does not know: 401, and the key is still not printed.
    let bogus = format!("ax_admin_{}", "0".repeat(40));
    let stderr = manager.alien_as(&bogus, &["whoami"]).fails(1).to_owned();
    assert!(stderr.contains("UNAUTHORIZED (401)"), "{stderr}");
    // A manager that is not there.
    let mut cmd = clean(Command::new(alien_bin()));
    cmd.args(["whoami", "--manager-url", "http://127.0.0.1:9", "--api-key", &manager.admin]);
    let run = Run::of(cmd.output().unwrap(), &["whoami"]);
    assert!(
        run.fails(1).contains("cannot reach the manager at http://127.0.0.1:9"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&manager.admin) && !run.stdout.contains(&manager.admin));
}

#[tokio::test]
async fn groups_create_list_get_and_mint_tokens() {
    let manager = Manager::start();
    let group = manager.alien(&["groups", "create", "edge", "--json"]).json();
    let id = group["id"].as_str().unwrap().to_owned();
    let (_, api) =
        manager.api(reqwest::Method::GET, &format!("/v1/deployment-groups/{id}"), None).await;
    assert_eq!(group, api);
    assert_eq!(manager.alien(&["groups", "get", &id, "--json"]).json(), api);
    let listed = manager.alien(&["groups", "list", "--json"]).json();
    assert_eq!(listed["items"], json!([api]));
    let table = manager.alien(&["groups", "list"]).ok().to_owned();
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID ") && header.contains("NAME") && header.contains("DEPLOYMENTS"),
        "{table}"
    );
    assert!(table.lines().nth(1).unwrap().contains(&id) && table.contains("edge"), "{table}");

    // A token: printed alone; it registers an agent.
    let token = manager.alien(&["groups", "token", &id]).ok().trim().to_owned();
    assert!(token.starts_with("ax_dg_"), "{token}");
    let (status, who) = {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/whoami", manager.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    assert_eq!(who["scope"]["deploymentGroupId"], id.as_str());
    // --install: the one-line install command with a fresh token.
    let line = manager
        .alien(&["groups", "token", &id, "--install", "--name", "site-1"])
        .ok()
        .trim()
        .to_owned();
    let prefix = format!("curl -fsSL {}/install/agent.sh | sh -s -- --token ax_dg_", manager.url);
    assert!(line.starts_with(&prefix) && line.ends_with(" --name site-1"), "{line}");
    assert_eq!(line.lines().count(), 1);
    let created = manager.alien(&["groups", "token", &id, "--label", "ci", "--json"]).json();
    assert_eq!(created["deploymentGroupId"], id.as_str());
    assert!(created["token"].as_str().unwrap().starts_with("ax_dg_"));
}

#[tokio::test]
async fn deployments_create_list_get_and_act() {
    let manager = Manager::start();
    let group = manager.alien(&["groups", "create", "g", "--json"]).json();
    let group = group["id"].as_str().unwrap().to_owned();
    let created = manager
        .alien(&[
            "deployments",
            "create",
            "--name",
            "d1",
            "--platform",
            "local",
            "--group",
            &group,
            "--env",
            "A=1",
            "--json",
        ])
        .json();
    let id = created["deployment"]["id"].as_str().unwrap().to_owned();
    assert!(created["token"].as_str().unwrap().starts_with("ax_deploy_"), "{created}");
    let (_, api) = manager.api(reqwest::Method::GET, &format!("/v1/deployments/{id}"), None).await;
    assert_eq!(manager.alien(&["deployments", "get", &id, "--json"]).json(), api);
    let (_, listed_api) = manager.api(reqwest::Method::GET, "/v1/deployments", None).await;
    let listed = manager.alien(&["deployments", "list", "--json"]).json();
    assert_eq!(listed, listed_api);
    assert_eq!(listed["items"][0]["id"], id.as_str());
    let filtered = manager.alien(&["deployments", "list", "--status", "running", "--json"]).json();
    assert_eq!(filtered["items"], json!([]));
    let table = manager.alien(&["deployments", "list"]).ok().to_owned();
    assert!(table.contains(&id) && table.contains("pending") && table.contains("never"), "{table}");
    let shown = manager.alien(&["deployments", "get", &id]).ok().to_owned();
    assert!(
        shown.contains("status:") && shown.contains("pending") && shown.contains(&group),
        "{shown}"
    );
    // Retrying what did not fail is refused by the manager.
    let stderr = manager.alien(&["deployments", "retry", &id]).fails(1).to_owned();
    assert!(stderr.contains("(409)"), "{stderr}");
    // Logs: none yet.
    let logs = manager.alien(&["logs", &id, "--json"]).json();
    assert_eq!(logs, json!({"deploymentId": id, "records": []}));
    // Forget it: gone.
    let deleted = manager.alien(&["deployments", "delete", &id, "--forget", "--json"]).json();
    assert_eq!(deleted["action"], "forget");
    let stderr = manager.alien(&["deployments", "get", &id]).fails(1).to_owned();
    assert!(stderr.contains("DEPLOYMENT_NOT_FOUND (404)"), "{stderr}");
}

#[tokio::test]
async fn tokens_list_and_revoke() {
    let manager = Manager::start();
    let group = manager.alien(&["groups", "create", "g", "--json"]).json();
    let group = group["id"].as_str().unwrap().to_owned();
    let minted = manager.alien(&["groups", "token", &group, "--label", "edge", "--json"]).json();
    let token_id = minted["id"].as_str().unwrap().to_owned();
    let listed = manager.alien(&["tokens", "list", "--json"]).json();
    let (_, api) = manager.api(reqwest::Method::GET, "/v1/tokens", None).await;
    assert_eq!(listed, api);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
    let table = manager.alien(&["tokens", "list"]).ok().to_owned();
    assert!(
        table.contains(&token_id) && table.contains("edge") && table.contains("deployment-group"),
        "{table}"
    );
    assert!(
        !table.contains(minted["token"].as_str().unwrap()),
        "a raw token in the list:\n{table}"
    );
    assert!(manager.alien(&["tokens", "revoke", &token_id]).ok().contains("revoked"));
    let listed = manager.alien(&["tokens", "list", "--json"]).json();
    assert!(listed["items"].as_array().unwrap().iter().all(|t| t["id"] != token_id.as_str()));
    let stderr = manager.alien(&["tokens", "revoke", &token_id]).fails(1).to_owned();
    assert!(stderr.contains("TOKEN_NOT_FOUND (404)"), "{stderr}");
}

/// `(pushed, skipped)` from the summary line of `resource`.
fn blob_counts(stderr: &str, resource: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("{resource}: ")) && l.contains("blobs pushed"))
        .unwrap_or_else(|| panic!("no summary for {resource}:\n{stderr}"));
    let numbers: Vec<u64> = line.split(['(', ',', ' ']).filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1])
}

#[tokio::test]
async fn release_pushes_the_image_once_and_points_the_stack_at_its_digest() {
    let (_copy, layout) = hello_app_layout();
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(
            layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let blobs = 1 + manifest["layers"].as_array().unwrap().len() as u64;

    let manager = Manager::start();
    let group = manager.alien(&["groups", "create", "g", "--json"]).json();
    let group = group["id"].as_str().unwrap().to_owned();
    manager
        .alien(&["deployments", "create", "--name", "d", "--platform", "local", "--group", &group])
        .ok();
    let stack = fixture_path("valid-web.json");
    let image = format!("api={}:hello-app:latest", layout.display());
    let args =
        ["release", "--stack", stack.to_str().unwrap(), "--image", &image, "--platforms", "local"];

    let before = manager.registry_uploads().await;
    let first = manager.alien(&args);
    let text = first.ok().to_owned();
    assert_eq!(blob_counts(&first.stderr, "api"), (blobs, 0), "{}", first.stderr);
    let release_id = text
        .lines()
        .find_map(|l| l.strip_prefix("release "))
        .unwrap_or_else(|| panic!("no release id:\n{text}"))
        .to_owned();
    assert!(text.contains("1 deployment will update to it"), "{text}");
    assert!(manager.registry_uploads().await > before, "the first release uploaded nothing");

    // The release names the pushed digest in the manager's registry.
    let release = manager.alien(&["releases", "get", &release_id, "--json"]).json();
    let port = manager.url.rsplit(':').next().unwrap();
    let pushed = format!("localhost:{port}/artifacts/api@{digest}");
    assert_eq!(
        release["stack"]["local"]["resources"]["api"]["config"]["code"],
        json!({"type": "image", "image": pushed})
    );
    let (status, _) = manager
        .api(reqwest::Method::GET, &format!("/v2/artifacts/api/manifests/{digest}"), None)
        .await;
    assert_eq!(status, 200);
    let (_, api) =
        manager.api(reqwest::Method::GET, &format!("/v1/releases/{release_id}"), None).await;
    assert_eq!(release, api);

    // Again: every blob is skipped and the registry receives no upload.
    let before = manager.registry_uploads().await;
    let args_json: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let second = manager.alien(&args_json);
    let again = second.json();
    assert_eq!(blob_counts(&second.stderr, "api"), (0, blobs), "{}", second.stderr);
    assert_eq!(manager.registry_uploads().await, before, "blobs were uploaded again");
    assert_ne!(again["id"], release_id.as_str());
    assert_eq!(
        again["stack"]["local"]["resources"]["api"]["config"]["code"]["image"],
        pushed.as_str()
    );

    let listed = manager.alien(&["releases", "list", "--json"]).json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let table = manager.alien(&["releases", "get", &release_id]).ok().to_owned();
    assert!(table.contains(&pushed), "{table}");
}

#[tokio::test]
async fn a_release_keeps_remote_images_as_they_are() {
    let manager = Manager::start();
    let stack = fixture_path("valid-stateful-gpu.json");
    let release = manager.alien(&["release", "--stack", stack.to_str().unwrap(), "--json"]).json();
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&stack).unwrap()).unwrap();
    let image = &original["resources"]["vector-reader"]["config"]["code"];
    assert_eq!(release["stack"]["local"]["resources"]["vector-reader"]["config"]["code"], *image);
    let text = manager.alien(&["release", "--stack", stack.to_str().unwrap()]).ok().to_owned();
    assert!(text.contains("0 deployments will update to it"), "{text}");
}

#[test]
fn completions_print_a_script() {
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef alien"), ("fish", "complete -c alien")]
    {
        let mut cmd = clean(Command::new(alien_bin()));
        let run =
            Run::of(cmd.args(["completions", shell]).output().unwrap(), &["completions", shell]);
        let script = run.ok();
        assert!(script.contains(marker) && script.contains("deployments"), "{shell}:\n{script}");
    }
}

#[test]
fn serve_runs_the_manager_binary_or_says_it_is_missing() {
    manager_bin();
    let mut cmd = clean(Command::new(alien_bin()));
    let run = Run::of(cmd.args(["serve", "--init"]).output().unwrap(), &["serve", "--init"]);
    assert!(run.ok().contains("[server]"), "{}", run.stdout);
    // A lone alien with an empty PATH.
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("alien");
    std::fs::copy(alien_bin(), &lone).unwrap();
    let mut cmd = clean(Command::new(&lone));
    let run = Run::of(cmd.args(["serve"]).env("PATH", "").output().unwrap(), &["serve"]);
    let stderr = run.fails(1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("alien-manager was not found"), "{stderr}");
}

#[tokio::test]
async fn deployments_and_groups_are_named_by_id_or_name() {
    let manager = Manager::start();
    let first = manager.alien(&["groups", "create", "first", "--json"]).json();
    let second = manager.alien(&["groups", "create", "second", "--json"]).json();
    let create = |group: &str, name: &str| {
        manager
            .alien(&[
                "deployments",
                "create",
                "--name",
                name,
                "--platform",
                "local",
                "--group",
                group,
                "--json",
            ])
            .json()
    };
    // --group by name.
    let only = create("first", "only-here");
    assert_eq!(only["deployment"]["deploymentGroupId"], first["id"]);
    let shown = manager.alien(&["deployments", "get", "only-here", "--json"]).json();
    assert_eq!(shown["id"], only["deployment"]["id"]);
    let group = manager.alien(&["groups", "get", "second", "--json"]).json();
    assert_eq!(group["id"], second["id"]);
    let listed = manager.alien(&["deployments", "list", "--group", "first", "--json"]).json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    // The same name in two groups: refused as ambiguous (2), naming both ids.
    let twin = create("first", "twin");
    let other = create(second["id"].as_str().unwrap(), "twin");
    let stderr = manager.alien(&["deployments", "get", "twin"]).fails(2).to_owned();
    for id in [&twin, &other] {
        assert!(stderr.contains(id["deployment"]["id"].as_str().unwrap()), "{stderr}");
    }
    // An id still works, and a name nobody has is exit 1.
    let by_id = twin["deployment"]["id"].as_str().unwrap();
    manager.alien(&["deployments", "get", by_id]).ok();
    let stderr = manager.alien(&["deployments", "get", "nobody"]).fails(1).to_owned();
    assert!(stderr.contains("no deployment is named \"nobody\""), "{stderr}");
    let stderr = manager.alien(&["groups", "get", "nobody"]).fails(1).to_owned();
    assert!(stderr.contains("no deployment group is named"), "{stderr}");
}
