//! The heartbeat loop against the real SQLite store: silent agents make their deployment stale,
//! and the next sync brings it back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use alien_core::{DeploymentEvent, DeploymentModel, DeploymentStatus, Platform};
use alien_deployer::HeartbeatLoop;
use alien_store::contract::new_deployment;
use alien_store::seal::{EncryptionKey, Sealer};
use alien_store::sqlite::SqliteStore;
use alien_store::{DeploymentPatch, DeploymentStore, Store};
use chrono::Utc;

#[tokio::test]
async fn silent_agents_go_stale_and_come_back_on_their_next_sync() {
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(EncryptionKey::generate().unwrap());
    let store = Arc::new(SqliteStore::open(&dir.path().join("m.db"), sealer).await.unwrap());
    let group = store.create_group("edge", 10).await.unwrap();
    let mut ids = Vec::new();
    for name in ["silent", "syncing"] {
        let mut new = new_deployment(&group.id, name, Platform::Local);
        new.deployment_model = DeploymentModel::Pull;
        ids.push(store.create_deployment(new).await.unwrap().id);
    }
    let interval = Duration::from_secs(10);
    let now = Utc::now() + chrono::Duration::seconds(60);
    // "syncing" synced 5 s before `now`; "silent" never did (created over 30 s before `now`).
    store.record_heartbeat(&ids[1], now - chrono::Duration::seconds(5)).await.unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let heartbeat = HeartbeatLoop::new(dyn_store, interval);
    assert_eq!(heartbeat.mark_silent_agents(now).await.unwrap(), 1);
    let silent = store.get_deployment(&ids[0]).await.unwrap().unwrap();
    assert_eq!(silent.status, DeploymentStatus::Stale);
    let syncing = store.get_deployment(&ids[1]).await.unwrap().unwrap();
    assert_eq!(syncing.status, DeploymentStatus::Pending, "a recent sync keeps it as it was");
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
