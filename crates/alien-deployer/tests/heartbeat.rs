//! The heartbeat loop against the real SQLite store: silent agents make their deployment stale,
//! and the next sync brings it back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use alien_core::{DeploymentEvent, DeploymentModel, DeploymentStatus, Platform};
use alien_deployer::HeartbeatLoop;
use alien_store::contract::new_deployment;
use alien_store::{DeploymentPatch, DeploymentStore, Store};
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};
use chrono::Utc;

/// Stale after exactly 3 missed heartbeat intervals: an agent silent for 2.9 intervals stays,
/// one silent for 3.1 intervals (or that never synced since long enough) goes stale, once.
#[tokio::test]
async fn silent_agents_go_stale_and_come_back_on_their_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(EncryptionKey::generate().unwrap());
    let store = Arc::new(SqliteStore::open(&dir.path().join("m.db"), sealer).await.unwrap());
    let group = store.create_group("edge", 10).await.unwrap();
    let mut ids = Vec::new();
    for name in ["silent", "syncing", "just-inside", "just-outside"] {
        let mut new = new_deployment(&group.id, name, Platform::Local);
        new.deployment_model = DeploymentModel::Pull;
        ids.push(store.create_deployment(new).await.unwrap().id);
    }
    let interval = Duration::from_secs(10);
    let now = Utc::now() + chrono::Duration::seconds(60);
    let ago = |millis: i64| now - chrono::Duration::milliseconds(millis);
    // "silent" never synced (created over 30 s before `now`); "syncing" synced 5 s before it;
    // the last two 2.9 and 3.1 intervals before it.
    store.record_heartbeat(&ids[1], ago(5_000)).await.unwrap();
    store.record_heartbeat(&ids[2], ago(29_000)).await.unwrap();
    store.record_heartbeat(&ids[3], ago(31_000)).await.unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let heartbeat = HeartbeatLoop::new(dyn_store, interval);
    assert_eq!(heartbeat.mark_silent_agents(now).await.unwrap(), 2);
    let status = |i: usize| {
        let (store, id) = (store.clone(), ids[i].clone());
        async move { store.get_deployment(&id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(0).await, DeploymentStatus::Stale, "never synced");
    assert_eq!(status(1).await, DeploymentStatus::Pending, "a recent sync keeps it as it was");
    assert_eq!(status(2).await, DeploymentStatus::Pending, "2.9 intervals of silence");
    assert_eq!(status(3).await, DeploymentStatus::Stale, "3.1 intervals of silence");
    assert_eq!(heartbeat.mark_silent_agents(now).await.unwrap(), 0, "stale once");

    // Its agent syncs again, reporting what it runs: back from stale.
    let report = DeploymentPatch {
        last_heartbeat_at: Some(Utc::now()),
        reason: "sync".into(),
        ..Default::default()
    };
    let back = store
        .transition(&ids[0], DeploymentEvent::AgentReported(DeploymentStatus::Running), report)
        .await
        .unwrap();
    assert_eq!(back.status, DeploymentStatus::Running);
}

/// Answers `refresh` with the failure set in `failing` (a stand-in for a platform; the local
/// platform's refresh runs against podman in the end-to-end tests).
#[derive(Default)]
struct ScriptedRefresh {
    failing: std::sync::Mutex<Option<alien_core::DeploymentError>>,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl alien_deployer::PlatformDeployer for ScriptedRefresh {
    async fn apply(&self, _: alien_deployer::DeployRequest<'_>) -> alien_deployer::StepOutcome {
        panic!("the heartbeat never applies");
    }

    async fn destroy(
        &self,
        _: &alien_core::Deployment,
        _: Option<&serde_json::Value>,
        _: bool,
        _: &alien_deployer::platform::Credentials,
    ) -> alien_deployer::StepOutcome {
        panic!("the heartbeat never destroys");
    }

    async fn refresh(
        &self,
        deployment: &alien_core::Deployment,
        _: Option<&serde_json::Value>,
        _: &alien_deployer::platform::Credentials,
    ) -> alien_deployer::platform::RefreshReport {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        alien_deployer::platform::RefreshReport {
            state: Some(serde_json::json!({"refreshed": deployment.id.to_string()})),
            failing: self.failing.lock().unwrap().clone(),
        }
    }
}

#[tokio::test]
async fn scripted_refresh_failing_resources_make_refresh_failed_and_a_healthy_refresh_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(EncryptionKey::generate().unwrap());
    let store = Arc::new(SqliteStore::open(&dir.path().join("m.db"), sealer).await.unwrap());
    let dyn_store: Arc<dyn Store> = store.clone();
    let group = store.create_group("push", 10).await.unwrap();
    let running =
        store.create_deployment(new_deployment(&group.id, "web", Platform::Local)).await.unwrap();
    alien_store::contract::drive_to(store.as_ref(), &running.id, DeploymentStatus::Running).await;
    // Neither a pull deployment nor a push one in another status is refreshed.
    let mut pull = new_deployment(&group.id, "agent", Platform::Local);
    pull.deployment_model = DeploymentModel::Pull;
    let pull = store.create_deployment(pull).await.unwrap();
    alien_store::contract::drive_to(store.as_ref(), &pull.id, DeploymentStatus::Running).await;
    store.create_deployment(new_deployment(&group.id, "pending", Platform::Local)).await.unwrap();

    let platform = Arc::new(ScriptedRefresh::default());
    let deployers: std::collections::HashMap<Platform, Arc<dyn alien_deployer::PlatformDeployer>> =
        std::collections::HashMap::from([(
            Platform::Local,
            platform.clone() as Arc<dyn alien_deployer::PlatformDeployer>,
        )]);
    let heartbeat =
        HeartbeatLoop::new(dyn_store, Duration::from_secs(10)).with_deployers(deployers);

    let now = Utc::now();
    let pass = heartbeat.refresh_push(now).await.unwrap();
    assert_eq!((pass.refreshed, pass.failing, pass.recovered), (1, 0, 0), "{pass:?}");
    let healthy = store.get_deployment(&running.id).await.unwrap().unwrap();
    assert_eq!(healthy.status, DeploymentStatus::Running);
    assert_eq!(
        healthy.last_heartbeat_at.map(|t| t.timestamp_millis()),
        Some(now.timestamp_millis())
    );
    assert_eq!(healthy.stack_state.unwrap()["refreshed"], running.id.as_str(), "state recorded");

    *platform.failing.lock().unwrap() = Some(alien_core::DeploymentError {
        code: "REPLICAS_UNHEALTHY".into(),
        message: "container web: 1 of 2 replicas serving".into(),
        resource_id: Some("web".into()),
    });
    let pass = heartbeat.refresh_push(Utc::now()).await.unwrap();
    assert_eq!((pass.refreshed, pass.failing), (1, 1), "{pass:?}");
    let failed = store.get_deployment(&running.id).await.unwrap().unwrap();
    assert_eq!(failed.status, DeploymentStatus::RefreshFailed);
    assert_eq!(failed.error.as_ref().unwrap().resource_id.as_deref(), Some("web"));
    // Still failing: refreshed again, stays refresh-failed.
    let pass = heartbeat.refresh_push(Utc::now()).await.unwrap();
    assert_eq!((pass.refreshed, pass.failing), (1, 1), "{pass:?}");

    *platform.failing.lock().unwrap() = None;
    let pass = heartbeat.refresh_push(Utc::now()).await.unwrap();
    assert_eq!((pass.refreshed, pass.recovered), (1, 1), "{pass:?}");
    let back = store.get_deployment(&running.id).await.unwrap().unwrap();
    assert_eq!(back.status, DeploymentStatus::Running);
    assert!(back.error.is_none(), "the error is cleared: {:?}", back.error);
    assert_eq!(platform.calls.load(std::sync::atomic::Ordering::SeqCst), 4, "one refresh a pass");
    let events = store.deployment_events(&running.id, 10).await.unwrap();
    assert_eq!(events[0].to, DeploymentStatus::Running);
    assert_eq!(events[1].to, DeploymentStatus::RefreshFailed);
}
