//! The lifecycle rules every driver shares (`alien_deployer::lifecycle`), against the real SQLite
//! store and without HTTP: settling a finished deletion and a newer release, the rollout gate,
//! the target, agents' and drivers' reports, and the outcome of the loop's steps.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use alien_core::sync::{AgentState, ReleaseRef};
use alien_core::{
    Deployment, DeploymentError, DeploymentEvent, DeploymentModel, DeploymentStatus as S, Platform,
    RolloutPolicy,
};
use alien_deployer::StepOutcome;
use alien_deployer::lifecycle::{self, Advanced, AfterStep, DriverReport, NoTarget};
use alien_store::contract::{new_deployment, new_release};
use alien_store::{DeploymentPatch, DeploymentStore, ReleaseStore, Store, StoreError};
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};
use serde_json::json;

struct Fixture {
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::new(EncryptionKey::generate().unwrap());
        let store = Arc::new(SqliteStore::open(&dir.path().join("m.db"), sealer).await.unwrap());
        Fixture { store, _dir: dir }
    }

    fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    async fn deployments(&self, n: usize, model: DeploymentModel) -> Vec<Deployment> {
        let group = self.store.create_group("g", 100).await.unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            let mut new = new_deployment(&group.id, &format!("d{i}"), Platform::Local);
            new.deployment_model = model;
            out.push(self.store.create_deployment(new).await.unwrap());
        }
        out
    }

    async fn release(&self) -> alien_core::Id {
        self.store.create_release(new_release(&[Platform::Local], "v")).await.unwrap().release.id
    }

    async fn walk(&self, d: &Deployment, events: &[DeploymentEvent]) -> Deployment {
        let mut now = d.clone();
        for event in events {
            let patch = DeploymentPatch { reason: "test".into(), ..Default::default() };
            now = self.store.transition(&d.id, *event, patch).await.unwrap();
        }
        now
    }

    /// `running` on its desired release.
    async fn running(&self, d: &Deployment) -> Deployment {
        let d = self.store.get_deployment(&d.id).await.unwrap().unwrap();
        let mut now = self.walk(&d, &[DeploymentEvent::BeginProvisioning]).await;
        let done = DeploymentPatch {
            current_release_id: now.desired_release_id.clone(),
            reason: "test".into(),
            ..Default::default()
        };
        now = self.store.transition(&d.id, DeploymentEvent::StepSucceeded, done).await.unwrap();
        assert_eq!(now.status, S::Running);
        now
    }

    async fn get(&self, d: &Deployment) -> Option<Deployment> {
        self.store.get_deployment(&d.id).await.unwrap()
    }
}

fn report(status: S, release: Option<&alien_core::Id>) -> AgentState {
    AgentState {
        status,
        platform: Platform::Local,
        current_release: release.map(|r| ReleaseRef { release_id: r.clone() }),
        stack_state: Some(json!({"at": status.to_string()})),
        error: None,
    }
}

#[tokio::test]
async fn a_newer_release_sends_a_running_deployment_back_through_the_rollout() {
    let f = Fixture::new().await;
    f.release().await;
    let [d] = f.deployments(1, DeploymentModel::Pull).await.try_into().unwrap();
    let running = f.running(&d).await;
    // Nothing newer: settled as it is.
    assert_eq!(lifecycle::settle(f.store(), running.clone()).await.unwrap().status, S::Running);
    // A release arrived while it was silent (its row still says running on the old one).
    let newer = f.release().await;
    let pending = f.get(&d).await.unwrap();
    assert_eq!(pending.desired_release_id.as_ref(), Some(&newer));
    // The store marks it on release; walk it back to running on the older one (as a heartbeat
    // of a silent agent leaves it) to test the rule.
    assert_eq!(pending.status, S::UpdatePending);
    f.walk(&pending, &[DeploymentEvent::BeginUpdate]).await;
    let done = DeploymentPatch {
        current_release_id: running.current_release_id.clone(),
        reason: "test".into(),
        ..Default::default()
    };
    let behind = f.store.transition(&d.id, DeploymentEvent::StepSucceeded, done).await.unwrap();
    assert_eq!(behind.status, S::Running);
    let settled = lifecycle::settle(f.store(), behind.clone()).await.unwrap();
    assert_eq!(settled.status, S::UpdatePending);
    // No rollout policy: advancing begins the update at once.
    let Advanced::Ready(updating) = lifecycle::advance(f.store(), settled, "t").await.unwrap()
    else {
        panic!("held without a policy");
    };
    assert_eq!(updating.status, S::Updating);
}

#[tokio::test]
async fn the_rollout_holds_an_update_beyond_its_batch() {
    let f = Fixture::new().await;
    f.release().await;
    let ds = f.deployments(2, DeploymentModel::Pull).await;
    for d in &ds {
        f.running(d).await;
    }
    let group = ds[0].deployment_group_id.clone();
    let policy =
        RolloutPolicy { batch_size: Some(1), batch_delay_secs: None, pause_on_failure: None };
    f.store.set_group_rollout(&group, Some(policy)).await.unwrap();
    f.release().await;
    let first = f.get(&ds[0]).await.unwrap();
    let second = f.get(&ds[1]).await.unwrap();
    assert_eq!((first.status, second.status), (S::UpdatePending, S::UpdatePending));
    assert!(matches!(
        lifecycle::advance(f.store(), first, "t").await.unwrap(),
        Advanced::Ready(Deployment { status: S::Updating, .. })
    ));
    let held = lifecycle::advance(f.store(), second, "t").await.unwrap();
    let Advanced::Held { deployment, reason, .. } = held else { panic!("not held: {held:?}") };
    assert_eq!(deployment.status, S::UpdatePending);
    assert!(reason.contains("batch of 1"), "{reason}");
}

#[tokio::test]
async fn the_target_is_the_desired_stack_with_the_deployments_secrets() {
    let f = Fixture::new().await;
    let [d] = f.deployments(1, DeploymentModel::Push).await.try_into().unwrap();
    assert_eq!(lifecycle::target(f.store(), &d).await.unwrap().unwrap_err(), NoTarget::NoRelease);
    assert!(lifecycle::has_nothing_to_apply(&d));
    let release = f.release().await;
    let d = f.get(&d).await.unwrap();
    let target = lifecycle::target(f.store(), &d).await.unwrap().unwrap();
    assert_eq!(target.release_id, release);
    assert_eq!(target.stack.id, "v-local");
    assert!(target.token.expose().starts_with("ax_"), "the deployment's own token");
    assert_eq!(target.platform_target, None, "a local deployment has no platform target");
    assert_eq!(
        f.store.deployment_token(&d.id).await.unwrap().unwrap().expose(),
        target.token.expose()
    );
    assert!(!lifecycle::has_nothing_to_apply(&d));
    let running = f.running(&d).await;
    assert!(lifecycle::has_nothing_to_apply(&running));
    // A release without a stack for the platform.
    f.store.create_release(new_release(&[Platform::Aws], "aws")).await.unwrap();
    let mut other = running.clone();
    other.desired_release_id =
        Some(f.store.latest_release(Some(Platform::Aws)).await.unwrap().unwrap().id);
    let none = lifecycle::target(f.store(), &other).await.unwrap().unwrap_err();
    assert!(matches!(none, NoTarget::NoStack { .. }));
    assert_eq!(none.error(&other).code, "NO_STACK_FOR_PLATFORM");
}

#[tokio::test]
async fn an_agents_report_moves_records_or_is_refused() {
    let f = Fixture::new().await;
    let release = f.release().await;
    let [d] = f.deployments(1, DeploymentModel::Pull).await.try_into().unwrap();
    // Working on it, then running it.
    let moved = lifecycle::record_agent_report(f.store(), &d, &report(S::Provisioning, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.status, S::Provisioning);
    let running = report(S::Running, Some(&release));
    let moved = lifecycle::record_agent_report(f.store(), &moved, &running).await.unwrap().unwrap();
    assert_eq!((moved.status, moved.current_release_id.as_ref()), (S::Running, Some(&release)));
    assert!(moved.last_heartbeat_at.is_some());
    // Decided on a stale read: nothing written, read again.
    let stale = lifecycle::record_agent_report(f.store(), &d, &report(S::Updating, None)).await;
    assert!(matches!(stale, Ok(None)), "{stale:?}");
    // A status the deployment cannot take is refused by the transition table.
    let refused =
        lifecycle::record_agent_report(f.store(), &moved, &report(S::Deleted, None)).await;
    assert!(matches!(refused, Err(StoreError::InvalidTransition(_))), "{refused:?}");
    // While update-pending, a report of running (the old release) is a heartbeat with state.
    let newer = f.release().await;
    let pending = f.get(&d).await.unwrap();
    assert_eq!(pending.status, S::UpdatePending);
    let lagging = lifecycle::record_agent_report(f.store(), &pending, &running).await.unwrap();
    let lagging = lagging.unwrap();
    assert_eq!(lagging.status, S::UpdatePending);
    assert_eq!(lagging.desired_release_id.as_ref(), Some(&newer));
    // A finished deletion removes the row.
    let deleting = f.walk(&lagging, &[DeploymentEvent::DeleteRequested]).await;
    let deleting = lifecycle::record_agent_report(f.store(), &deleting, &report(S::Deleting, None))
        .await
        .unwrap()
        .unwrap();
    let deleted = lifecycle::record_agent_report(f.store(), &deleting, &report(S::Deleted, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.status, S::Deleted);
    assert!(f.get(&d).await.is_none(), "the row is gone");
}

#[tokio::test]
async fn a_drivers_report_needs_its_lease_and_records_progress_within_a_step() {
    let f = Fixture::new().await;
    let release = f.release().await;
    let [d] = f.deployments(1, DeploymentModel::Push).await.try_into().unwrap();
    let owner = "driver:s1";
    let leased = f.store.acquire_due(owner, chrono::Utc::now(), 1, Duration::from_secs(300)).await;
    let leased = leased.unwrap();
    assert_eq!(leased.len(), 1);
    let provisioning = f.walk(&d, &[DeploymentEvent::BeginProvisioning]).await;
    // Progress within a step: the state only.
    let progress = report(S::Provisioning, None);
    let recorded = lifecycle::record_driver_report(
        f.store(),
        &provisioning,
        owner,
        progress.clone(),
        json!({}),
    )
    .await
    .unwrap();
    let DriverReport::Recorded(now) = recorded else { panic!("lease lost") };
    assert_eq!(
        (now.status, now.stack_state),
        (S::Provisioning, Some(json!({"at": "provisioning"})))
    );
    // Another session holds no lease: nothing recorded.
    let lost =
        lifecycle::record_driver_report(f.store(), &provisioning, "driver:s2", progress, json!({}))
            .await
            .unwrap();
    assert_eq!(lost, DriverReport::LeaseLost);
    // Reaching running settles, with the release.
    let done = report(S::Running, Some(&release));
    let DriverReport::Recorded(running) =
        lifecycle::record_driver_report(f.store(), &provisioning, owner, done, json!({}))
            .await
            .unwrap()
    else {
        panic!("lease lost")
    };
    assert_eq!((running.status, running.current_release_id), (S::Running, Some(release)));
}

#[tokio::test]
async fn the_outcome_of_a_step_moves_the_deployment_on() {
    let f = Fixture::new().await;
    let release = f.release().await;
    let [a, b] = f.deployments(2, DeploymentModel::Push).await.try_into().unwrap();
    let owner = "loop";
    f.store.acquire_due(owner, chrono::Utc::now(), 2, Duration::from_secs(300)).await.unwrap();
    let a = f.walk(&a, &[DeploymentEvent::BeginProvisioning]).await;
    // Wait: the state is saved, nothing moves.
    let wait = StepOutcome::Wait { state: json!({"replicas": 1}), wait: Duration::from_secs(2) };
    let after = lifecycle::record_outcome(f.store(), owner, &a, Some(&release), wait).await;
    assert_eq!(after.unwrap(), AfterStep::Wait(Duration::from_secs(2)));
    let now = f.get(&a).await.unwrap();
    assert_eq!(
        (now.status, now.stack_state.clone()),
        (S::Provisioning, Some(json!({"replicas": 1})))
    );
    // Done while a newer release arrived: running on the applied one, then update-pending.
    let newer = f.release().await;
    let done = StepOutcome::Done { state: json!({"replicas": 2}) };
    let after = lifecycle::record_outcome(f.store(), owner, &now, Some(&release), done).await;
    assert_eq!(after.unwrap(), AfterStep::Finished);
    let now = f.get(&a).await.unwrap();
    assert_eq!(now.status, S::UpdatePending);
    assert_eq!((now.current_release_id, now.desired_release_id), (Some(release), Some(newer)));
    // Failed: the `*-failed` status with the error and its resource.
    let b = f.walk(&b, &[DeploymentEvent::BeginProvisioning]).await;
    let error = DeploymentError {
        code: "HEALTH_CHECK_FAILED".into(),
        message: "m".into(),
        resource_id: Some("api".into()),
    };
    let failed = StepOutcome::Failed { state: None, error: error.clone() };
    lifecycle::record_outcome(f.store(), owner, &b, None, failed).await.unwrap();
    let now = f.get(&b).await.unwrap();
    assert_eq!((now.status, now.error.clone()), (S::ProvisioningFailed, Some(error)));
    // A finished destroy removes the row.
    let deleting =
        f.walk(&now, &[DeploymentEvent::DeleteRequested, DeploymentEvent::BeginDelete]).await;
    assert_eq!(deleting.status, S::Deleting);
    let done = StepOutcome::Done { state: json!({}) };
    lifecycle::record_outcome(f.store(), owner, &deleting, None, done).await.unwrap();
    assert!(f.get(&b).await.is_none(), "the row is gone");
}
