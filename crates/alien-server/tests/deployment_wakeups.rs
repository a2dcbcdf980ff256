//! The deployment loop inside the manager: API calls that give deployments work wake it at once
//! (its interval here is an hour, so only a wake-up can explain a step). A scripted deployer
//! stands in for the platform (the local platform's deployer is tested against podman).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alien_config::ManagerConfig;
use alien_core::{Deployment, Platform};
use alien_deployer::platform::RefreshReport;
use alien_deployer::{DeployRequest, DeploymentLoop, LoopConfig, PlatformDeployer, StepOutcome};
use alien_server::ManagerBuilder;
use alien_store::Store;
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};
use serde_json::{Value, json};

/// Reaches every target in one step.
struct ScriptedInstantDeployer;

#[async_trait::async_trait]
impl PlatformDeployer for ScriptedInstantDeployer {
    async fn apply(&self, request: DeployRequest<'_>) -> StepOutcome {
        StepOutcome::Done { state: json!({"release": request.release_id.to_string()}) }
    }

    async fn destroy(
        &self,
        _: &Deployment,
        _: Option<&Value>,
        _: bool,
        _: &alien_deployer::platform::Credentials,
    ) -> StepOutcome {
        StepOutcome::Done { state: json!({}) }
    }

    async fn refresh(
        &self,
        _: &Deployment,
        state: Option<&Value>,
        _: &alien_deployer::platform::Credentials,
    ) -> RefreshReport {
        RefreshReport { state: state.cloned(), failing: None }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_deployments_releases_and_deletes_wake_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(EncryptionKey::generate().unwrap());
    let store = Arc::new(SqliteStore::open(&dir.path().join("m.db"), sealer).await.unwrap());
    let admin = alien_server::bootstrap::first_run_admin(store.as_ref(), None)
        .await
        .unwrap()
        .unwrap()
        .expose()
        .to_owned();
    let dyn_store: Arc<dyn Store> = store.clone();
    let mut loop_config = LoopConfig::new("test", "http://127.0.0.1:1");
    loop_config.interval = Duration::from_secs(3600);
    let deployers: HashMap<Platform, Arc<dyn PlatformDeployer>> =
        HashMap::from([(Platform::Local, Arc::new(ScriptedInstantDeployer) as Arc<_>)]);
    let deployment_loop = Arc::new(DeploymentLoop::new(dyn_store.clone(), deployers, loop_config));
    let mut config = ManagerConfig::default();
    config.server.host = "127.0.0.1".into();
    config.server.port = 0;
    let bound = ManagerBuilder::new(config)
        .store(dyn_store)
        .deployment_loop(deployment_loop)
        .build()
        .bind()
        .await
        .unwrap();
    let base = format!("http://{}", bound.local_addr());
    tokio::spawn(bound.serve(std::future::pending()));
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = client.request(method, format!("{base}{path}")).bearer_auth(&admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // The platforms endpoint names the loop's deployer (push) next to the agents' platform.
    let (status, platforms) = call(reqwest::Method::GET, "/v1/platforms", None).await;
    assert_eq!(status, 200, "{platforms}");
    assert_eq!(platforms["details"][0]["push"], "a platform deployer", "{platforms}");
    assert_eq!(platforms["details"][0]["pull"], true, "{platforms}");
    // The deployment's status; `gone` once it is 404 DEPLOYMENT_NOT_FOUND (a removed row). Any
    // other answer fails the test: a 401 or a 500 is not a deployment that went away.
    let status_of = |dep: String| {
        let call = &call;
        async move {
            let (code, body) =
                call(reqwest::Method::GET, &format!("/v1/deployments/{dep}"), None).await;
            match code {
                200 => body["status"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no status: {body}"))
                    .to_owned(),
                404 if body["code"] == "DEPLOYMENT_NOT_FOUND" => "gone".to_owned(),
                _ => panic!("GET /v1/deployments/{dep}: {code} {body}"),
            }
        }
    };
    let wait_for = |dep: String, want: &'static str| {
        let status_of = &status_of;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let status = status_of(dep.clone()).await;
                if status == want {
                    return;
                }
                assert!(Instant::now() < deadline, "{dep}: still {status}, wanted {want}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let (_, group) =
        call(reqwest::Method::POST, "/v1/deployment-groups", Some(json!({"name": "g"}))).await;
    let body = json!({"name": "d", "platform": "local", "deploymentGroupId": group["id"]});
    let (status, created) = call(reqwest::Method::POST, "/v1/deployments", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status_of(dep.clone()).await, "pending", "no release yet: nothing to do");

    let fixture: Value =
        serde_json::from_str(include_str!("../../../../shared/fixtures/valid-web.json")).unwrap();
    let release = json!({"stack": {"local": fixture}});
    assert_eq!(call(reqwest::Method::POST, "/v1/releases", Some(release.clone())).await.0, 201);
    wait_for(dep.clone(), "running").await;
    // A second release: update-pending, woken, running on it.
    let (_, second) = call(reqwest::Method::POST, "/v1/releases", Some(release)).await;
    wait_for(dep.clone(), "running").await;
    let (_, info) = call(reqwest::Method::GET, &format!("/v1/deployments/{dep}"), None).await;
    assert_eq!(info["currentReleaseId"], second["id"], "{info}");
    // Delete with cleanup: destroyed and removed at once.
    let path = format!("/v1/deployments/{dep}/delete");
    let (status, r) = call(reqwest::Method::POST, &path, Some(json!({"action": "cleanup"}))).await;
    assert_eq!(status, 202, "{r}");
    wait_for(dep, "gone").await;
}
