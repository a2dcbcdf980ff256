//! The deployment loop against the real SQLite store, with a scripted deployer standing in for a
//! platform (the local platform's deployer is tested against podman on its own): lifecycle,
//! persisted state, errors with their resource, retry, delete, replicas never stepping the same
//! deployment, a release arriving during an update, and a platform without a deployer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alien_core::{
    Deployment, DeploymentError, DeploymentEvent, DeploymentStatus, NewRelease, Platform,
};
use alien_deployer::{DeployRequest, DeploymentLoop, LoopConfig, PlatformDeployer, StepOutcome};
use alien_store::contract::{new_deployment, new_release};
use alien_store::{DeploymentPatch, DeploymentStore, ReleaseStore, Store};
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};
use serde_json::{Value, json};

/// What the scripted deployer saw of one `apply`.
#[derive(Debug, Clone)]
struct Seen {
    deployment: String,
    release: String,
    state: Option<Value>,
    env: BTreeMap<String, BTreeMap<String, String>>,
    credentials: alien_deployer::Credentials,
}

/// Answers `apply` and `destroy` from scripts (then `Done`), records every call, and checks
/// that no deployment is stepped twice at once.
#[derive(Default)]
struct ScriptedDeployer {
    applies: Mutex<VecDeque<StepOutcome>>,
    destroys: Mutex<VecDeque<StepOutcome>>,
    seen: Mutex<Vec<Seen>>,
    in_flight: Mutex<HashSet<String>>,
    overlaps: Mutex<u32>,
    pause: Option<Duration>,
    during_apply: Option<Arc<dyn Fn() -> tokio::task::JoinHandle<()> + Send + Sync>>,
}

impl ScriptedDeployer {
    fn script(self, applies: Vec<StepOutcome>) -> Self {
        *self.applies.lock().unwrap() = applies.into();
        self
    }
}

#[async_trait::async_trait]
impl PlatformDeployer for ScriptedDeployer {
    async fn apply(&self, request: DeployRequest<'_>) -> StepOutcome {
        let id = request.deployment.id.to_string();
        if !self.in_flight.lock().unwrap().insert(id.clone()) {
            *self.overlaps.lock().unwrap() += 1;
        }
        self.seen.lock().unwrap().push(Seen {
            deployment: id.clone(),
            release: request.release_id.to_string(),
            state: request.state.cloned(),
            env: request
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.0.iter().cloned().collect()))
                .collect(),
            credentials: request.credentials.clone(),
        });
        if let Some(pause) = self.pause {
            tokio::time::sleep(pause).await;
        }
        if let Some(hook) = &self.during_apply {
            hook().await.unwrap();
        }
        self.in_flight.lock().unwrap().remove(&id);
        let next = self.applies.lock().unwrap().pop_front();
        next.unwrap_or_else(|| StepOutcome::Done {
            state: json!({"applied": request.release_id.to_string()}),
        })
    }

    async fn destroy(
        &self,
        _: &Deployment,
        _: Option<&Value>,
        _: bool,
        _: &alien_deployer::platform::Credentials,
    ) -> StepOutcome {
        let next = self.destroys.lock().unwrap().pop_front();
        next.unwrap_or(StepOutcome::Done { state: json!({"destroyed": true}) })
    }

    async fn refresh(
        &self,
        _: &Deployment,
        state: Option<&Value>,
        _: &alien_deployer::platform::Credentials,
    ) -> alien_deployer::platform::RefreshReport {
        alien_deployer::platform::RefreshReport { state: state.cloned(), failing: None }
    }
}

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

    fn dyn_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    fn looper(&self, owner: &str, deployer: Arc<ScriptedDeployer>) -> DeploymentLoop {
        let deployers: HashMap<Platform, Arc<dyn PlatformDeployer>> =
            HashMap::from([(Platform::Local, deployer as Arc<dyn PlatformDeployer>)]);
        DeploymentLoop::new(
            self.dyn_store(),
            deployers,
            LoopConfig::new(owner, "http://10.0.2.2:8080"),
        )
    }

    async fn release(&self, platforms: &[Platform]) -> alien_core::Release {
        self.store.create_release(new_release(platforms, "v")).await.unwrap().release
    }

    /// A release whose local stack is the `valid-web.json` fixture (one container, `api`).
    async fn web_release(&self) -> alien_core::Release {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/valid-web.json");
        let value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let stack = alien_core::parse_release_stack(&value).unwrap();
        let release = NewRelease {
            stack: BTreeMap::from([(Platform::Local, stack)]),
            git_metadata: None,
            version: Some("web".into()),
            description: None,
        };
        self.store.create_release(release).await.unwrap().release
    }

    async fn deployments(&self, n: usize, platform: Platform) -> Vec<Deployment> {
        let group = self.store.create_group(&format!("g{n}{platform}"), 1000).await.unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            let new = new_deployment(&group.id, &format!("d{i}"), platform);
            out.push(self.store.create_deployment(new).await.unwrap());
        }
        out
    }

    async fn get(&self, d: &Deployment) -> Option<Deployment> {
        self.store.get_deployment(&d.id).await.unwrap()
    }
}

fn patch(reason: &str) -> DeploymentPatch {
    DeploymentPatch { reason: reason.into(), ..Default::default() }
}

#[tokio::test]
async fn scripted_deployer_pending_deployment_waits_then_runs_its_release() {
    let f = Fixture::new().await;
    let release = f.web_release().await;
    let d = f.deployments(1, Platform::Local).await.remove(0);
    let deployer = Arc::new(ScriptedDeployer::default().script(vec![StepOutcome::Wait {
        state: json!({"replicas": ["starting"]}),
        wait: Duration::ZERO,
    }]));
    let looper = f.looper("m1", deployer.clone());

    assert_eq!(looper.tick().await.unwrap().stepped, 1);
    let after_wait = f.get(&d).await.unwrap();
    assert_eq!(after_wait.status, DeploymentStatus::Provisioning);
    assert_eq!(after_wait.stack_state, Some(json!({"replicas": ["starting"]})), "state saved");

    assert_eq!(looper.tick().await.unwrap().stepped, 1);
    let running = f.get(&d).await.unwrap();
    assert_eq!(running.status, DeploymentStatus::Running);
    assert_eq!(running.current_release_id, Some(release.id.clone()));
    assert_eq!(running.stack_state, Some(json!({"applied": release.id.to_string()})));
    assert_eq!(running.error, None);

    let seen = deployer.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].state, None, "the first step starts from nothing");
    assert_eq!(seen[1].state, Some(json!({"replicas": ["starting"]})), "then from what it saved");
    assert_eq!(seen[1].release, release.id.to_string());
    let env = &seen[0].env["api"];
    assert_eq!(env["ALIEN_DEPLOYMENT_ID"], d.id.to_string());
    assert_eq!(env["ALIEN_COMMANDS_URL"], "http://10.0.2.2:8080/v1");
    assert_eq!(env["ALIEN_COMMANDS_TARGET_RESOURCE_ID"], "api");
    assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://10.0.2.2:8080");
    let token = f.store.deployment_token(&d.id).await.unwrap().unwrap();
    assert_eq!(env["ALIEN_COMMANDS_TOKEN"], token.expose());
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_HEADERS"],
        format!("authorization=Bearer {}", token.expose())
    );

    assert_eq!(looper.tick().await.unwrap().stepped, 0, "a running deployment is not due");
}

#[tokio::test]
async fn scripted_deployer_failure_names_the_resource_and_retry_recovers() {
    let f = Fixture::new().await;
    f.release(&[Platform::Local]).await;
    let d = f.deployments(1, Platform::Local).await.remove(0);
    let error = DeploymentError {
        code: "HEALTH_CHECK_FAILED".into(),
        message: "container api answered 500 on /health".into(),
        resource_id: Some("api".into()),
    };
    let deployer = Arc::new(ScriptedDeployer::default().script(vec![StepOutcome::Failed {
        state: Some(json!({"replicas": ["unhealthy"]})),
        error: error.clone(),
    }]));
    let looper = f.looper("m1", deployer.clone());
    looper.tick().await.unwrap();
    let failed = f.get(&d).await.unwrap();
    assert_eq!(failed.status, DeploymentStatus::ProvisioningFailed);
    assert_eq!(failed.error, Some(error));
    assert_eq!(failed.stack_state, Some(json!({"replicas": ["unhealthy"]})));
    assert_eq!(looper.tick().await.unwrap().stepped, 0, "failed deployments wait for a retry");

    f.store.transition(&d.id, DeploymentEvent::Retry, patch("retry")).await.unwrap();
    assert_eq!(looper.tick().await.unwrap().stepped, 1);
    let running = f.get(&d).await.unwrap();
    assert_eq!(running.status, DeploymentStatus::Running);
    assert_eq!(running.error, None, "the error is cleared");
    let seen = deployer.seen.lock().unwrap().clone();
    assert_eq!(seen[1].state, Some(json!({"replicas": ["unhealthy"]})), "retry resumes from it");
}

#[tokio::test]
async fn scripted_deployer_delete_destroys_then_removes_the_row() {
    let f = Fixture::new().await;
    f.release(&[Platform::Local]).await;
    let d = f.deployments(1, Platform::Local).await.remove(0);
    let deployer = Arc::new(ScriptedDeployer::default());
    deployer
        .destroys
        .lock()
        .unwrap()
        .push_back(StepOutcome::Wait { state: json!({"removing": true}), wait: Duration::ZERO });
    let looper = f.looper("m1", deployer.clone());
    looper.tick().await.unwrap();
    assert_eq!(f.get(&d).await.unwrap().status, DeploymentStatus::Running);
    f.store.transition(&d.id, DeploymentEvent::DeleteRequested, patch("delete")).await.unwrap();
    looper.tick().await.unwrap();
    let deleting = f.get(&d).await.unwrap();
    assert_eq!(deleting.status, DeploymentStatus::Deleting);
    assert_eq!(deleting.stack_state, Some(json!({"removing": true})));
    looper.tick().await.unwrap();
    assert!(f.get(&d).await.is_none(), "deleted: the row is gone");
    let token = f.store.deployment_token(&d.id).await.unwrap();
    assert!(token.is_none(), "and its token with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_step_the_same_deployment() {
    let f = Fixture::new().await;
    f.release(&[Platform::Local]).await;
    let fleet = f.deployments(20, Platform::Local).await;
    let deployer =
        Arc::new(ScriptedDeployer { pause: Some(Duration::from_millis(20)), ..Default::default() });
    let (a, b) = (f.looper("replica-a", deployer.clone()), f.looper("replica-b", deployer.clone()));
    for _ in 0..6 {
        let (x, y) = tokio::join!(a.tick(), b.tick());
        x.unwrap();
        y.unwrap();
    }
    assert_eq!(*deployer.overlaps.lock().unwrap(), 0, "no deployment stepped twice at once");
    let mut applied: Vec<String> =
        deployer.seen.lock().unwrap().iter().map(|s| s.deployment.clone()).collect();
    applied.sort();
    let mut expected: Vec<String> = fleet.iter().map(|d| d.id.to_string()).collect();
    expected.sort();
    assert_eq!(applied, expected, "each deployment applied exactly once");
    for d in &fleet {
        assert_eq!(f.get(d).await.unwrap().status, DeploymentStatus::Running, "{}", d.name);
    }
}

#[tokio::test]
async fn a_release_arriving_during_an_update_leaves_it_update_pending() {
    let f = Fixture::new().await;
    f.release(&[Platform::Local]).await;
    let d = f.deployments(1, Platform::Local).await.remove(0);
    let quiet = Arc::new(ScriptedDeployer::default());
    f.looper("m1", quiet).tick().await.unwrap();
    let v2 = f.release(&[Platform::Local]).await;
    assert_eq!(f.get(&d).await.unwrap().status, DeploymentStatus::UpdatePending);
    let store = f.dyn_store();
    let deployer = Arc::new(ScriptedDeployer {
        during_apply: Some(Arc::new(move || {
            let store = store.clone();
            tokio::spawn(async move {
                store.create_release(new_release(&[Platform::Local], "v3")).await.unwrap();
            })
        })),
        ..Default::default()
    });
    f.looper("m1", deployer).tick().await.unwrap();
    let after = f.get(&d).await.unwrap();
    assert_eq!(after.current_release_id, Some(v2.id), "the update it was applying finished");
    assert_eq!(after.status, DeploymentStatus::UpdatePending, "and the newer release is next");
    assert_ne!(after.desired_release_id, after.current_release_id);
}

/// Hands out fixed AWS credentials for a role, and counts its calls (a stand-in for STS, which
/// the AWS crate brings).
#[derive(Debug, Default)]
struct ScriptedRoleImpersonator {
    calls: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl alien_impersonation::Impersonator for ScriptedRoleImpersonator {
    async fn credentials(
        &self,
        target: &alien_impersonation::ImpersonationTarget,
    ) -> Result<alien_deployer::Credentials, alien_impersonation::ImpersonationError> {
        self.calls.lock().unwrap().push(target.identity().to_string());
        Ok(alien_deployer::Credentials::Aws {
            access_key_id: "ASIATEST".into(),
            secret_access_key: "secret".into(),
            session_token: "token".into(),
            expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        })
    }
}

/// A step on a cloud platform gets the credentials the impersonator minted for the deployment's
/// target; without an impersonation for that cloud, the step fails naming what to configure; a
/// local deployment gets the ambient identity.
#[tokio::test]
async fn steps_get_credentials_minted_for_the_deployments_target() {
    let f = Fixture::new().await;
    f.release(&[Platform::Aws, Platform::Local]).await;
    let group = f.store.create_group("cloud", 10).await.unwrap();
    let mut new = new_deployment(&group.id, "in-aws", Platform::Aws);
    new.target = Some(
        json!({"accountId": "123456789012", "roleArn": "arn:aws:iam::123456789012:role/alien"}),
    );
    let in_aws = f.store.create_deployment(new).await.unwrap();
    let local = f.store.create_deployment(new_deployment(&group.id, "here", Platform::Local)).await;
    let local = local.unwrap();
    let deployer = Arc::new(ScriptedDeployer::default());
    let deployers: HashMap<Platform, Arc<dyn PlatformDeployer>> = HashMap::from([
        (Platform::Aws, deployer.clone() as Arc<dyn PlatformDeployer>),
        (Platform::Local, deployer.clone() as Arc<dyn PlatformDeployer>),
    ]);
    let config = LoopConfig::new("m1", "http://10.0.2.2:8080");

    // No AWS impersonation: the AWS step fails with the binding to add; local runs as itself.
    DeploymentLoop::new(f.dyn_store(), deployers.clone(), config.clone()).tick().await.unwrap();
    let failed = f.get(&in_aws).await.unwrap();
    assert_eq!(failed.status, DeploymentStatus::ProvisioningFailed);
    let error = failed.error.unwrap();
    assert_eq!(error.code, "IMPERSONATION_NOT_CONFIGURED");
    assert!(error.message.contains("[impersonation.aws]"), "{}", error.message);
    let seen = deployer.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "only the local deployment was applied");
    assert_eq!(seen[0].deployment, local.id.to_string());
    assert_eq!(seen[0].credentials, alien_deployer::Credentials::Ambient);

    // With one: the step gets its credentials.
    let retry = DeploymentPatch { retry_requested: Some(true), ..patch("retry") };
    f.store.transition(&in_aws.id, DeploymentEvent::Retry, retry).await.unwrap();
    let sts = Arc::new(ScriptedRoleImpersonator::default());
    let per_cloud = alien_impersonation::PerCloudImpersonator::new()
        .with(alien_impersonation::Cloud::Aws, sts.clone());
    DeploymentLoop::new(f.dyn_store(), deployers, config)
        .with_impersonator(Arc::new(per_cloud))
        .tick()
        .await
        .unwrap();
    let seen = deployer.seen.lock().unwrap().clone();
    let aws = seen.iter().find(|s| s.deployment == in_aws.id.to_string()).unwrap();
    assert!(
        matches!(&aws.credentials, alien_deployer::Credentials::Aws { access_key_id, .. } if access_key_id == "ASIATEST")
    );
    let calls = sts.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].contains("arn:aws:iam::123456789012:role/alien"), "{calls:?}");
    assert_eq!(f.get(&in_aws).await.unwrap().status, DeploymentStatus::Running);
}

#[tokio::test]
async fn a_platform_without_a_deployer_fails_with_a_clear_error() {
    let f = Fixture::new().await;
    f.release(&[Platform::Aws]).await;
    let d = f.deployments(1, Platform::Aws).await.remove(0);
    let looper = f.looper("m1", Arc::new(ScriptedDeployer::default()));
    looper.tick().await.unwrap();
    let failed = f.get(&d).await.unwrap();
    assert_eq!(failed.status, DeploymentStatus::ProvisioningFailed);
    let error = failed.error.unwrap();
    assert_eq!(error.code, "PLATFORM_NOT_SUPPORTED", "the code docs/deployer.md names");
    assert!(error.message.contains("aws"), "{}", error.message);
}

/// A step that asks to be stepped again soon (a rollout waiting for health) is stepped then, not
/// after a whole interval: the loop here ticks once an hour and nothing wakes it.
#[tokio::test]
async fn a_step_waiting_for_health_is_stepped_again_when_it_asked_not_after_the_interval() {
    let f = Fixture::new().await;
    let release = f.web_release().await;
    let d = f.deployments(1, Platform::Local).await.remove(0);
    let waiting = StepOutcome::Wait {
        state: json!({"replicas": ["starting"]}),
        wait: Duration::from_millis(200),
    };
    let deployer = Arc::new(ScriptedDeployer::default().script(vec![waiting.clone(), waiting]));
    let mut config = LoopConfig::new("m1", "http://10.0.2.2:8080");
    config.interval = Duration::from_secs(3600);
    let deployers: HashMap<Platform, Arc<dyn PlatformDeployer>> =
        HashMap::from([(Platform::Local, deployer.clone() as Arc<dyn PlatformDeployer>)]);
    let running = Arc::new(DeploymentLoop::new(f.dyn_store(), deployers, config)).spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let reached = loop {
        let now = f.get(&d).await.unwrap();
        if now.status == DeploymentStatus::Running || std::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.abort();
    assert_eq!(reached.status, DeploymentStatus::Running, "{reached:?}");
    assert_eq!(reached.current_release_id, Some(release.id));
    assert_eq!(deployer.seen.lock().unwrap().len(), 3, "two waits, then done");
}

#[tokio::test]
async fn a_deployment_created_before_any_release_starts_when_one_appears() {
    let f = Fixture::new().await;
    let d = f.deployments(1, Platform::Local).await.remove(0);
    let deployer = Arc::new(ScriptedDeployer::default());
    let looper = f.looper("m1", deployer.clone());
    looper.tick().await.unwrap();
    assert_eq!(f.get(&d).await.unwrap().status, DeploymentStatus::Pending);
    assert!(deployer.seen.lock().unwrap().is_empty(), "nothing to apply yet");
    let release = f.release(&[Platform::Local]).await;
    // The release makes it due at once; the loop's next tick provisions.
    looper.tick().await.unwrap();
    let running = f.get(&d).await.unwrap();
    assert_eq!(running.status, DeploymentStatus::Running);
    assert_eq!(running.current_release_id, Some(release.id));
}

/// A retry of `refresh-failed` applies the running release again: `running` when that heals
/// it, `refresh-failed` again (with the new error) when it does not; the retry flag is spent
/// either way.
#[tokio::test]
async fn scripted_deployer_retry_of_refresh_failed_applies_the_release_again() {
    let f = Fixture::new().await;
    let release = f.release(&[Platform::Local]).await;
    let d = f.deployments(1, Platform::Local).await.remove(0);
    let error = DeploymentError {
        code: "REPLICAS_UNHEALTHY".into(),
        message: "container api: 1 of 2 replicas serving".into(),
        resource_id: Some("api".into()),
    };
    let deployer = Arc::new(ScriptedDeployer::default().script(vec![
        StepOutcome::Done { state: json!({"first": true}) },
        StepOutcome::Wait { state: json!({"healing": 1}), wait: Duration::ZERO },
        StepOutcome::Done { state: json!({"healed": true}) },
        StepOutcome::Failed { state: None, error: error.clone() },
    ]));
    let looper = f.looper("m1", deployer.clone());
    looper.tick().await.unwrap();
    assert_eq!(f.get(&d).await.unwrap().status, DeploymentStatus::Running);

    let failing = DeploymentPatch { error: Some(Some(error.clone())), ..patch("heartbeat") };
    f.store.transition(&d.id, DeploymentEvent::RefreshFailed, failing).await.unwrap();
    let retry = DeploymentPatch { retry_requested: Some(true), ..patch("retry") };
    f.store.transition(&d.id, DeploymentEvent::Retry, retry.clone()).await.unwrap();
    assert_eq!(looper.tick().await.unwrap().stepped, 1, "the retry is the loop's");
    let healing = f.get(&d).await.unwrap();
    assert_eq!(healing.status, DeploymentStatus::Running);
    assert!(healing.retry_requested, "still healing");
    assert_eq!(healing.stack_state, Some(json!({"healing": 1})));
    assert_eq!(looper.tick().await.unwrap().stepped, 1);
    let healed = f.get(&d).await.unwrap();
    assert_eq!(healed.status, DeploymentStatus::Running);
    assert!(!healed.retry_requested, "the retry is spent");
    assert_eq!(healed.error, None);
    assert_eq!(healed.stack_state, Some(json!({"healed": true})));
    assert_eq!(looper.tick().await.unwrap().stepped, 0, "nothing more to do");
    let seen = deployer.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.release == release.id.to_string()), "the running release");

    // A retry that does not heal: refresh-failed again, with the new error.
    let failing = DeploymentPatch { error: Some(Some(error.clone())), ..patch("heartbeat") };
    f.store.transition(&d.id, DeploymentEvent::RefreshFailed, failing).await.unwrap();
    f.store.transition(&d.id, DeploymentEvent::Retry, retry).await.unwrap();
    looper.tick().await.unwrap();
    let still = f.get(&d).await.unwrap();
    assert_eq!(still.status, DeploymentStatus::RefreshFailed);
    assert_eq!(still.error, Some(error));
    assert!(!still.retry_requested);
}

/// A group's rollout policy through the loop: a new release never has more than `batchSize`
/// deployments of the group updating at once, and reaches all of them in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_deployer_rollout_updates_a_group_in_batches() {
    let f = Fixture::new().await;
    f.release(&[Platform::Local]).await;
    let fleet = f.deployments(5, Platform::Local).await;
    let group = fleet[0].deployment_group_id.clone();
    let policy = alien_core::RolloutPolicy {
        batch_size: Some(2),
        batch_delay_secs: None,
        pause_on_failure: None,
    };
    f.store.set_group_rollout(&group, Some(policy)).await.unwrap();
    let store = f.store.clone();
    let max_updating = Arc::new(Mutex::new(0usize));
    let seen_max = max_updating.clone();
    let deployer = Arc::new(ScriptedDeployer {
        pause: Some(Duration::from_millis(5)),
        during_apply: Some(Arc::new(move || {
            let (store, seen_max) = (store.clone(), seen_max.clone());
            tokio::spawn(async move {
                let filter = alien_store::DeploymentFilter {
                    status: Some(DeploymentStatus::Updating),
                    ..Default::default()
                };
                let page = alien_store::PageRequest { limit: 100, cursor: None };
                let updating = store.list_deployments(&filter, &page).await.unwrap().items.len();
                let mut max = seen_max.lock().unwrap();
                *max = (*max).max(updating);
            })
        })),
        ..Default::default()
    });
    let mut config = LoopConfig::new("m1", "http://10.0.2.2:8080");
    config.interval = Duration::ZERO;
    let deployers: HashMap<Platform, Arc<dyn PlatformDeployer>> =
        HashMap::from([(Platform::Local, deployer.clone() as Arc<dyn PlatformDeployer>)]);
    let looper = DeploymentLoop::new(f.dyn_store(), deployers, config);
    // Provisioning is not staged: all five start at once.
    looper.tick().await.unwrap();
    for d in &fleet {
        assert_eq!(f.get(d).await.unwrap().status, DeploymentStatus::Running);
    }
    *max_updating.lock().unwrap() = 0;
    let second = f.release(&[Platform::Local]).await;
    let mut held = 0;
    for _ in 0..20 {
        let report = looper.tick().await.unwrap();
        held += report.held;
        if report.stepped == 0 {
            break;
        }
    }
    assert!(held > 0, "some updates were held back");
    assert!(*max_updating.lock().unwrap() <= 2, "at most a batch of 2 updating at once");
    for d in &fleet {
        let d = f.get(d).await.unwrap();
        assert_eq!(d.status, DeploymentStatus::Running, "{}", d.name);
        assert_eq!(d.current_release_id, Some(second.id.clone()), "{}", d.name);
    }
}
