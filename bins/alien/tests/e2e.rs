//! The CLI end to end on the local platform (feature `peer-tests`: podman): `alien release`
//! pushes the hello-app image, `alien deployments create --watch` follows the deployment to
//! `running`, `alien commands invoke --wait` runs a command in its container, `alien logs` shows
//! what it logged, `alien deployments delete --watch` follows it until it is gone. The scenario
//! runs twice: with the manager's store on SQLite and on a PostgreSQL of the test's own.

#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{KEY, Manager, hello_app_layout, isolated_podman};
use serde_json::json;

/// One container of the hello-app image, with a health check and one replica.
fn stack() -> serde_json::Value {
    json!({"id": "hello", "resources": {"web": {"config": {
        "id": "web", "type": "container",
        "code": {"type": "image", "image": "placeholder.example.com/hello-app:latest"},
        "cpu": {"min": "0.25", "desired": "0.5"},
        "memory": {"min": "64Mi", "desired": "128Mi"},
        "ports": [{"port": 8080, "expose": "http"}],
        "replicas": 1,
        "healthCheck": {"path": "/health", "port": 8080, "timeoutSeconds": 1, "failureThreshold": 3},
        "environment": {"HELLO_MESSAGE": "from the cli"},
        "permissions": "execution"
    }, "dependencies": [], "lifecycle": "live"}}})
}

mod release_deploy_invoke_log_and_delete_through_the_cli {
    use alien_store_postgres::peer::PgPeer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::scenario(None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let peer = PgPeer::start().await.unwrap();
        peer.create_database("alien").await.unwrap();
        super::scenario(Some(peer.url_of("alien"))).await;
    }
}

/// The scenario, with the store at `database_url` (SQLite in the state directory without one).
async fn scenario(database_url: Option<String>) {
    assert!(
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("podman").is_file())),
        "podman is not installed (apt-get install -y podman runc slirp4netns)"
    );
    let dir = tempfile::Builder::new().prefix("alien-cli-e2e-").tempdir().unwrap();
    let mut env = isolated_podman(dir.path());
    env.push(("ALIEN_DATABASE__ENCRYPTION_KEY".into(), KEY.into()));
    env.extend(database_url.map(|url| ("ALIEN_DATABASE__URL".to_owned(), url)));
    let manager = Manager::start_with(true, &env);
    let (_copy, layout) = hello_app_layout();
    let stack_file = dir.path().join("stack.json");
    std::fs::write(&stack_file, stack().to_string()).unwrap();

    let group = manager.alien(&["groups", "create", "e2e", "--json"]).json();
    let group = group["id"].as_str().unwrap().to_owned();
    let image = format!("web={}:hello-app:latest", layout.display());
    manager.alien(&["release", "--stack", stack_file.to_str().unwrap(), "--image", &image]).ok();

    let started = Instant::now();
    let created = manager.alien(&[
        "deployments",
        "create",
        "--name",
        "hello",
        "--platform",
        "local",
        "--group",
        &group,
        "--watch",
        "--json",
    ]);
    let deployment: serde_json::Value = serde_json::from_str(created.ok()).unwrap();
    let id = deployment["deployment"]["id"].as_str().unwrap().to_owned();
    assert!(created.stderr.contains(&format!("{id}: running")), "{}", created.stderr);
    eprintln!("running in {:.1}s", started.elapsed().as_secs_f64());
    let shown = manager.alien(&["deployments", "get", &id, "--json"]).json();
    assert_eq!(shown["status"], "running");

    // A command reaches the container and its answer is printed.
    let invoked = manager
        .alien(&["commands", "invoke", &id, "echo", "--params", r#"{"hello":"cli"}"#, "--wait"])
        .ok()
        .to_owned();
    assert!(invoked.contains("SUCCEEDED") && invoked.contains(r#"{"hello":"cli"}"#), "{invoked}");
    let command_id = invoked
        .lines()
        .find_map(|l| l.strip_prefix("command:"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_else(|| panic!("no command id:\n{invoked}"));
    let got = manager.alien(&["commands", "get", &command_id, "--json"]).json();
    assert_eq!(got["state"], "SUCCEEDED");
    // Parameters over the inline limit go through the payload store, and so does the answer.
    let big = format!("{{\"data\":\"{}\"}}", "x".repeat(200_000));
    let params = dir.path().join("params.json");
    std::fs::write(&params, &big).unwrap();
    let at_file = format!("@{}", params.display());
    let invoked = manager
        .alien(&["commands", "invoke", &id, "echo", "--params", &at_file, "--wait"])
        .ok()
        .to_owned();
    assert!(
        invoked.contains("SUCCEEDED") && invoked.contains(&big),
        "{}",
        &invoked[..300.min(invoked.len())]
    );
    // A command the receiver fails: exit 1.
    let failed = manager.alien(&["commands", "invoke", &id, "fail", "--wait"]);
    assert!(failed.fails(1).contains("failed"), "{}", failed.stderr);

    // `alien logs --follow` shows the container's start-up line, then what it logs afterwards.
    let mut follow = common::clean(std::process::Command::new(common::alien_bin()))
        .args(["logs", &id, "--follow"])
        .env("ALIEN_MANAGER_URL", &manager.url)
        .env("ALIEN_API_KEY", &manager.admin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let stdout = follow.stdout.take().unwrap();
        let lines = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }
    let wait_for = |text: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if lines.lock().unwrap().iter().any(|l| l.contains(text)) {
                return;
            }
            let seen = lines.lock().unwrap().join("\n");
            assert!(
                Instant::now() < deadline,
                "`alien logs --follow` never showed {text:?}:\n{seen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for("hello-app started on");
    let url =
        shown["stackState"]["resources"]["web"]["outputs"]["url"].as_str().unwrap().to_owned();
    let page: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(page["message"], "from the cli");
    wait_for("GET / answered: from the cli");
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(!lines.lock().unwrap().iter().any(|l| l.contains(&manager.admin)));

    let deleted = manager.alien(&["deployments", "delete", &id, "--watch"]);
    deleted.ok();
    assert!(deleted.stderr.contains(&format!("{id}: deleted")), "{}", deleted.stderr);
    manager.alien(&["deployments", "get", &id]).fails(1);
}
