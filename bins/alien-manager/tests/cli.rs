//! The real `alien-manager` binary: start on defaults, flag/env/file precedence for the port,
//! `--init`, `config check`, configuration errors (exit 2 before binding), SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::Instant;

use common::{Manager, Server, bin, free_port};

async fn get_health(port: u16) -> reqwest::Response {
    reqwest::get(format!("http://127.0.0.1:{port}/health")).await.unwrap()
}

/// `serve` in an empty directory runs on its embedded defaults: 0.0.0.0:8080 (as `config check`
/// there reports them), the state directory `.alien-manager` (0700), `/health` answering, and
/// exit 0 on SIGTERM. The server itself is started with only the port changed (0: a free one), so
/// the test never depends on 8080 being free; timings are printed, not asserted (the start-up
/// time is not a property a loaded machine can check).
#[tokio::test]
async fn serve_on_embedded_defaults_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().current_dir(dir.path()).args(["config", "check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for default in ["server.port = 8080", "server.host = \"0.0.0.0\""] {
        assert!(
            stdout.lines().any(|l| l.starts_with(default) && l.ends_with("# default")),
            "{default}:\n{stdout}"
        );
    }
    assert!(!dir.path().join(".alien-manager").exists(), "config check creates nothing");

    let mut cmd = bin();
    cmd.current_dir(dir.path()).arg("serve").env("PORT", "0");
    let t0 = Instant::now();
    let server = Server::start(cmd);
    assert!(server.addr.starts_with("0.0.0.0:"), "{}", server.addr);
    let response = get_health(server.port()).await;
    assert_eq!(response.status(), 200);
    eprintln!("healthy after {:?} (reported after {:?})", t0.elapsed(), server.started);
    let state = dir.path().join(".alien-manager");
    assert!(state.is_dir(), "state dir created");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    }
    let (status, took) = server.terminate();
    assert_eq!(status.code(), Some(0));
    eprintln!("exited {took:?} after SIGTERM");
}

#[tokio::test]
async fn port_precedence_flag_over_env_over_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let file = dir.path().join("f.toml");
    std::fs::write(&file, format!("[server]\nhost = \"127.0.0.1\"\nport = {file_port}\n")).unwrap();
    let state = dir.path().join("state");
    let run = |env: bool, flag: bool| {
        let mut cmd = bin();
        cmd.current_dir(dir.path())
            .arg("serve")
            .arg("-c")
            .arg(&file)
            .arg("--state-dir")
            .arg(&state);
        if env {
            cmd.env("PORT", env_port.to_string());
        }
        if flag {
            cmd.arg("--port").arg(flag_port.to_string());
        }
        Server::start(cmd)
    };
    for (env, flag, expected) in
        [(true, true, flag_port), (true, false, env_port), (false, false, file_port)]
    {
        let server = run(env, flag);
        assert_eq!(server.port(), expected, "env={env} flag={flag}");
        assert_eq!(get_health(expected).await.status(), 200);
        let (status, _) = server.terminate();
        assert!(status.success());
    }
}

#[test]
fn config_errors_exit_2_before_binding_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.toml");
    let port = free_port();
    std::fs::write(&file, format!("[server]\nprot = 1\nport = {port}\n")).unwrap();
    let state = dir.path().join("state");
    let out = bin()
        .current_dir(dir.path())
        .args(["serve", "-c"])
        .arg(&file)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prot"), "{stderr}");
    assert!(stderr.contains("f.toml"), "{stderr}");
    assert!(!state.exists(), "nothing created before exiting");
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "port never bound");

    let out = bin().current_dir(dir.path()).env("PORT", "abc").arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT"));

    let out = bin().current_dir(dir.path()).args(["serve", "-c", "missing.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

/// A backend binding is checked before anything happens, by `config check` and by `serve` alike:
/// a missing required field, and a service this build does not have, both exit 2 naming the
/// key; the state directory is not created and nothing (no admin token) is printed on stdout.
#[test]
fn backend_bindings_are_checked_before_anything_is_created() {
    let mut cases =
        vec![("[commands]\nkv = { service = \"dynamodb\" }\n", "commands.kv.tableName")];
    // Services of the AWS backends, refused by a build without them.
    let aws: &[(&str, &str)] = &[
        (
            "[commands]\nkv = { service = \"dynamodb\", tableName = \"t\", region = \"us-east-1\" }\n",
            "commands.kv.service",
        ),
        (
            "[commands]\nstorage = { service = \"s3\", bucketName = \"b\" }\n",
            "commands.storage.service",
        ),
        (
            "[artifact-registry.aws]\nservice = \"ecr\"\nrepositoryPrefix = \"p\"\n",
            "artifact-registry.aws.service",
        ),
        (
            "[impersonation.aws]\nservice = \"awsiam\"\nroleName = \"r\"\nroleArn = \"arn:aws:iam::123456789012:role/r\"\n",
            "impersonation.aws.service",
        ),
    ];
    if !cfg!(feature = "aws") {
        cases.extend_from_slice(aws);
    }
    // Services of the GCP backends, refused by a build without them.
    let gcp: &[(&str, &str)] = &[
        (
            "[artifact-registry.gcp]\nservice = \"gar\"\nrepositoryName = \"projects/p/locations/l/repositories/r\"\n",
            "artifact-registry.gcp.service",
        ),
        (
            "[commands]\nkv = { service = \"firestore\", projectId = \"p\", databaseId = \"(default)\", collectionName = \"c\" }\n",
            "commands.kv.service",
        ),
        (
            "[commands]\nstorage = { service = \"gcs\", bucketName = \"b\" }\n",
            "commands.storage.service",
        ),
        (
            "[impersonation.gcp]\nservice = \"gcpserviceaccount\"\nemail = \"m@p.iam.gserviceaccount.com\"\n",
            "impersonation.gcp.service",
        ),
    ];
    if !cfg!(feature = "gcp") {
        cases.extend_from_slice(gcp);
    }
    // Services of the Azure backends, refused by a build without them; with them, identifiers
    // that are not GUIDs and resource groups whose subscription is unknown (no
    // AZURE_SUBSCRIPTION_ID, no subscriptionId, no [impersonation.azure] resourceId) are.
    let acr = "[artifact-registry.azure]\nservice = \"acr\"\nregistryName = \"myregistry\"\nresourceGroupName = \"g\"\n";
    let table = "[commands]\nkv = { service = \"tablestorage\", resourceGroupName = \"g\", accountName = \"a\", tableName = \"t\" }\n";
    let azure: &[(&str, &str)] = &[
        (acr, "artifact-registry.azure.service"),
        (table, "commands.kv.service"),
        (
            "[commands]\nstorage = { service = \"blob\", accountName = \"a\", containerName = \"c\" }\n",
            "commands.storage.service",
        ),
        (
            "[impersonation.azure]\nservice = \"azuremanagedidentity\"\nclientId = \"11111111-1111-1111-1111-111111111111\"\n",
            "impersonation.azure.service",
        ),
    ];
    let with_azure: &[(&str, &str)] = &[
        (acr, "artifact-registry.azure.resourceGroupName"),
        (table, "commands.kv.resourceGroupName"),
        (
            "[commands]\nkv = { service = \"tablestorage\", resourceGroupName = \"g\", accountName = \"a\", tableName = \"t\", subscriptionId = \"11111111-1111-1111-1111-111111111111\", endpointUrl = \"http://127.0.0.1:10002\" }\n",
            "commands.kv.subscriptionId",
        ),
        (
            "[impersonation.azure]\nservice = \"azuremanagedidentity\"\nclientId = \"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\"\n",
            "impersonation.azure.clientId",
        ),
        (
            "[impersonation.azure]\nservice = \"azuremanagedidentity\"\nclientId = \"11111111-1111-1111-1111-111111111111\"\nresourceId = \"/subscriptions/.../providers/Microsoft.ManagedIdentity/...\"\n",
            "impersonation.azure.resourceId",
        ),
    ];
    cases.extend_from_slice(if cfg!(feature = "azure") { with_azure } else { azure });
    for (text, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, text).unwrap();
        let state = dir.path().join("state");
        for args in [&["config", "check", "-c"][..], &["serve", "--port", "0", "-c"][..]] {
            let out = bin()
                .current_dir(dir.path())
                .env("ALIEN_DATABASE__STATE_DIR", &state)
                .env_remove("AZURE_SUBSCRIPTION_ID")
                .env_remove("AZURE_STORAGE_USE_EMULATOR")
                .args(args)
                .arg(&file)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {text}: {stderr}");
            assert!(stderr.contains(key), "{args:?} {text}: {stderr}");
            assert!(stderr.contains("f.toml"), "{args:?} {text}: {stderr}");
            assert!(
                out.stdout.is_empty(),
                "{args:?} {text}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(!state.exists(), "{args:?} {text}: the state directory was created");
        }
    }
}

/// `[artifact-registry.default] registryUrl` is the registry host clients are told to push to
/// (and, for each platform without a registry of its own, what deployments pull from); without
/// it, the manager's own public host.
#[tokio::test]
async fn the_configured_registry_url_is_the_one_handed_out() {
    let manager = Manager::start_configured(
        "[artifact-registry.default]\nservice = \"local\"\nregistryUrl = \"registry.example.com:5000\"\n",
    )
    .await;
    for platform in ["local", "aws"] {
        let config = manager
            .admin(reqwest::Method::GET, &format!("/v1/build-config?platform={platform}"), None)
            .await;
        assert_eq!(config["registry"], "registry.example.com:5000", "{platform}: {config}");
        assert_eq!(config["repositoryName"], "artifacts");
    }
    // An agent is told to pull its release from there too.
    let (_, group_token) = manager.group("edge").await;
    let init = serde_json::json!({"name": "site-1"});
    let (status, agent) = manager
        .call(reqwest::Method::POST, "/v1/initialize", Some(&group_token), Some(init.clone()))
        .await;
    assert_eq!(status, 201, "{agent}");
    let body = serde_json::json!({"stack": {"local": common::fixture("valid-web.json")}});
    manager.admin(reqwest::Method::POST, "/v1/releases", Some(body)).await;
    let sync = serde_json::json!({"deploymentId": agent["deploymentId"]});
    let token = agent["token"].as_str().unwrap();
    let (status, synced) =
        manager.call(reqwest::Method::POST, "/v1/sync", Some(token), Some(sync)).await;
    assert_eq!(status, 200, "{synced}");
    assert_eq!(synced["target"]["config"]["registry"]["host"], "registry.example.com:5000");
    assert_eq!(synced["target"]["config"]["registry"]["plainHttp"], false, "HTTPS by default");
    // Written with http://, it is plain HTTP for agents too.
    let http = Manager::start_configured(
        "[artifact-registry.default]\nservice = \"local\"\nregistryUrl = \"http://registry.example.com:5000\"\n",
    )
    .await;
    let (_, group_token) = http.group("edge").await;
    let (_, agent) =
        http.call(reqwest::Method::POST, "/v1/initialize", Some(&group_token), Some(init)).await;
    let body = serde_json::json!({"stack": {"local": common::fixture("valid-web.json")}});
    http.admin(reqwest::Method::POST, "/v1/releases", Some(body)).await;
    let sync = serde_json::json!({"deploymentId": agent["deploymentId"]});
    let token = agent["token"].as_str().unwrap();
    let (status, synced) =
        http.call(reqwest::Method::POST, "/v1/sync", Some(token), Some(sync)).await;
    assert_eq!(status, 200, "{synced}");
    let registry = &synced["target"]["config"]["registry"];
    assert_eq!(
        (&registry["host"], &registry["plainHttp"]),
        (&"registry.example.com:5000".into(), &true.into())
    );
    let plain = Manager::start().await;
    let config = plain.admin(reqwest::Method::GET, "/v1/build-config?platform=local", None).await;
    let port = plain.server().port();
    assert_eq!(config["registry"], format!("localhost:{port}"), "{config}");
}

#[test]
fn init_prints_a_template_that_config_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().current_dir(dir.path()).args(["serve", "--init"]).output().unwrap();
    assert!(out.status.success());
    let template = String::from_utf8(out.stdout).unwrap();
    assert!(template.contains("[server]") && template.contains("port = 8080"));
    let file = dir.path().join("printed.toml");
    std::fs::write(&file, &template).unwrap();
    let out =
        bin().current_dir(dir.path()).args(["config", "check", "-c"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("server.port = 8080"), "{stdout}");
    assert!(stdout.contains("# file"), "{stdout}");
    // `alien-manager --init` without the subcommand works too (serve is the default).
    let out = bin().current_dir(dir.path()).arg("--init").output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), template);
}

#[test]
fn init_output_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alien-manager.toml");
    let init = |force: bool| {
        let mut cmd = bin();
        cmd.current_dir(dir.path()).args(["serve", "--init", "--output"]).arg(&file);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    assert!(init(false).status.success());
    std::fs::write(&file, "# mine\n").unwrap();
    let out = init(false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    assert!(init(true).status.success());
    assert!(std::fs::read_to_string(&file).unwrap().contains("[server]"));
}

#[test]
fn config_check_shows_sources_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let key = "a1".repeat(32);
    write(
        dir.path(),
        "alien-manager.toml",
        &format!("[server]\nport = 9100\n[database]\nencryption-key = \"{key}\"\n"),
    );
    let out = bin()
        .current_dir(dir.path())
        .env("HOST", "127.0.0.1")
        .env("ALIEN_TELEMETRY__HEADERS__AUTHORIZATION", "Bearer hunter2")
        .args(["config", "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key}:\n{stdout}"))
            .to_owned()
    };
    assert!(line("server.port").ends_with("# file"), "{stdout}");
    assert!(line("server.host").ends_with("# env"), "{stdout}");
    assert!(line("server.deployment-interval-secs").ends_with("# default"), "{stdout}");
    assert!(line("database.encryption-key").contains("<redacted>"));
    assert!(!stdout.contains(&key) && !stdout.contains("hunter2"), "{stdout}");
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}
