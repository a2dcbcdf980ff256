//! The contract suite of [`Store`]: one public async function per behaviour, each taking an empty
//! store and panicking on a violation, so that every backend runs the same suite and a failure
//! names the behaviour (alien-store-sqlite's `tests/sqlite_contract.rs` runs it against SQLite).
//! Behind the `contract-tests` feature, which backends enable in their dev-dependencies.
//!
//! The functions use only the traits; they assume nothing about the backend beyond an empty store
//! and timestamps kept to the millisecond. Status paths are found from
//! `DeploymentStatus::transition` itself, so the suite follows the transition table as it evolves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test suite: a broken expectation is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use alien_core::{
    Deployment, DeploymentError, DeploymentEvent, DeploymentGroup, DeploymentModel,
    DeploymentStatus, EnvironmentVariable, Id, IdKind, NewRelease, Platform, RawToken,
    RolloutPolicy, Stack, TokenType, VariableType,
};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::{
    BeginUpdate, DeploymentFilter, DeploymentPatch, NewAuditEntry, NewDeployment, NewToken,
    PageRequest, Store, StoreError,
};

// ---- fixtures ----

/// A minimal stack (no resources) with id `id`.
pub fn stack(id: &str) -> Stack {
    Stack {
        id: id.to_owned(),
        resources: BTreeMap::new(),
        permissions: None,
        supported_platforms: None,
    }
}

/// A release with a minimal stack for each of `platforms`.
pub fn new_release(platforms: &[Platform], version: &str) -> NewRelease {
    NewRelease {
        stack: platforms.iter().map(|p| (*p, stack(&format!("{version}-{p}")))).collect(),
        git_metadata: None,
        version: Some(version.to_owned()),
        description: None,
    }
}

/// A token to store, of `kind`.
pub fn new_token(kind: TokenType) -> NewToken {
    NewToken {
        id: Id::new(IdKind::Token),
        raw: RawToken::generate(kind).unwrap(),
        token_type: kind,
        deployment_group_id: None,
        deployment_id: None,
        name: None,
        expires_at: None,
    }
}

/// A deployment named `name` in `group` on `platform` (its default model), with its token.
pub fn new_deployment(group: &Id, name: &str, platform: Platform) -> NewDeployment {
    let id = Id::new(IdKind::Deployment);
    let mut token = new_token(TokenType::Deployment);
    token.deployment_group_id = Some(group.clone());
    token.deployment_id = Some(id.clone());
    NewDeployment {
        id,
        name: name.to_owned(),
        platform,
        deployment_model: platform.default_model(),
        deployment_group_id: group.clone(),
        environment_variables: Vec::new(),
        stack_settings: None,
        region: None,
        target: None,
        token,
    }
}

fn patch(reason: &str) -> DeploymentPatch {
    DeploymentPatch { reason: reason.to_owned(), ..DeploymentPatch::default() }
}

fn millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap()
}

async fn group(store: &dyn Store, name: &str, max: u32) -> DeploymentGroup {
    store.create_group(name, max).await.unwrap()
}

async fn deployment(store: &dyn Store, group: &Id, name: &str, platform: Platform) -> Deployment {
    store.create_deployment(new_deployment(group, name, platform)).await.unwrap()
}

/// The shortest list of events taking `from` to `to` under `DeploymentStatus::transition`.
pub fn path_to(from: DeploymentStatus, to: DeploymentStatus) -> Vec<DeploymentEvent> {
    let mut seen = HashSet::from([from]);
    let mut queue = VecDeque::from([(from, Vec::new())]);
    while let Some((status, path)) = queue.pop_front() {
        if status == to {
            return path;
        }
        for event in DeploymentEvent::all() {
            if let Ok(next) = status.transition(event)
                && seen.insert(next)
            {
                let mut longer = path.clone();
                longer.push(event);
                queue.push_back((next, longer));
            }
        }
    }
    panic!("no path from {from} to {to}");
}

/// Moves a deployment to `to` through the store, one transition at a time.
pub async fn drive_to(store: &dyn Store, id: &Id, to: DeploymentStatus) -> Deployment {
    let from = store.get_deployment(id).await.unwrap().unwrap().status;
    let mut last = None;
    for event in path_to(from, to) {
        last = Some(store.transition(id, event, patch("test")).await.unwrap());
    }
    let reached = match last {
        Some(d) => d,
        None => store.get_deployment(id).await.unwrap().unwrap(),
    };
    assert_eq!(reached.status, to);
    reached
}

// ---- releases ----

/// Releases read back exactly as created, newest first, with `latest` per platform.
pub async fn releases_are_immutable_and_listed_newest_first(store: &dyn Store) {
    assert_eq!(store.latest_release(None).await.unwrap(), None);
    let mut created = Vec::new();
    for (i, platforms) in
        [vec![Platform::Local], vec![Platform::Aws, Platform::Local], vec![Platform::Aws]]
            .into_iter()
            .enumerate()
    {
        let mut release = new_release(&platforms, &format!("v{i}"));
        release.description = Some(format!("release {i}"));
        release.git_metadata = Some(alien_core::GitMetadata {
            commit_sha: Some("abc123".into()),
            commit_ref: Some("main".into()),
            commit_message: None,
        });
        let stored = store.create_release(release.clone()).await.unwrap().release;
        assert!(stored.id.is(IdKind::Release));
        assert_eq!(stored.stack, release.stack);
        assert_eq!(stored.version, release.version);
        assert_eq!(stored.git_metadata, release.git_metadata);
        assert_eq!(store.get_release(&stored.id).await.unwrap().as_ref(), Some(&stored));
        created.push(stored);
    }
    for pair in created.windows(2) {
        assert!(pair[0].created_at < pair[1].created_at, "creation times strictly increase");
    }
    let listed = store.list_releases(&PageRequest::default()).await.unwrap();
    let expected: Vec<_> = created.iter().rev().cloned().collect();
    assert_eq!(listed.items, expected);
    assert_eq!(listed.next_cursor, None);
    assert_eq!(store.latest_release(None).await.unwrap().as_ref(), Some(&created[2]));
    assert_eq!(
        store.latest_release(Some(Platform::Aws)).await.unwrap().as_ref(),
        Some(&created[2])
    );
    assert_eq!(
        store.latest_release(Some(Platform::Local)).await.unwrap().as_ref(),
        Some(&created[1])
    );
    assert_eq!(store.latest_release(Some(Platform::Gcp)).await.unwrap(), None);
    assert_eq!(store.get_release(&Id::new(IdKind::Release)).await.unwrap(), None);
}

/// A release moves every deployment of its platforms as `transition(NewDesiredRelease)` says,
/// for every status, and leaves other platforms and the delete path alone.
pub async fn release_marks_deployments_by_transition_table(store: &dyn Store) {
    let g = group(store, "fleet", 1000).await;
    let mut on_local = Vec::new();
    for (i, status) in DeploymentStatus::ALL.into_iter().enumerate() {
        let d = deployment(store, &g.id, &format!("local-{i}"), Platform::Local).await;
        on_local.push(drive_to(store, &d.id, status).await);
    }
    let other = deployment(store, &g.id, "aws-running", Platform::Aws).await;
    let other = drive_to(store, &other.id, DeploymentStatus::Running).await;

    let created = store.create_release(new_release(&[Platform::Local], "v1")).await.unwrap();
    let release = created.release.id;
    let mut expected_marked = 0;
    for before in &on_local {
        let after = store.get_deployment(&before.id).await.unwrap().unwrap();
        let events = store.deployment_events(&before.id, 1).await.unwrap();
        match before.status.transition(DeploymentEvent::NewDesiredRelease) {
            Ok(next) if !before.status.is_deleting() => {
                expected_marked += 1;
                assert_eq!(after.status, next, "{} + new-desired-release", before.status);
                assert_eq!(after.desired_release_id.as_ref(), Some(&release), "{}", before.status);
                assert_eq!(events[0].reason, "release", "{}", before.status);
                assert_eq!(events[0].from, Some(before.status));
                assert_eq!(events[0].to, next);
                assert_eq!(events[0].detail, Some(json!({ "releaseId": release })));
            }
            _ => {
                assert_eq!(&after, before, "{} must be left alone", before.status);
                assert_ne!(events[0].reason, "release");
            }
        }
    }
    assert_eq!(created.marked, expected_marked);
    assert_eq!(store.get_deployment(&other.id).await.unwrap().unwrap(), other);

    // The spec's named cases, spelled out.
    let status_of = |s: DeploymentStatus| on_local.iter().position(|d| d.status == s).unwrap();
    for (from, to) in [
        (DeploymentStatus::Running, DeploymentStatus::UpdatePending),
        (DeploymentStatus::UpdateFailed, DeploymentStatus::UpdatePending),
        (DeploymentStatus::RefreshFailed, DeploymentStatus::UpdatePending),
        (DeploymentStatus::ProvisioningFailed, DeploymentStatus::Pending),
        (DeploymentStatus::Pending, DeploymentStatus::Pending),
        (DeploymentStatus::DeletePending, DeploymentStatus::DeletePending),
    ] {
        let id = &on_local[status_of(from)].id;
        assert_eq!(store.get_deployment(id).await.unwrap().unwrap().status, to, "{from}");
    }
}

// ---- groups and deployments ----

/// Group names are unique; a group reports how many deployments it holds.
pub async fn groups_have_unique_names_and_counts(store: &dyn Store) {
    let g = group(store, "team-a", 5).await;
    assert!(g.id.is(IdKind::DeploymentGroup));
    assert_eq!((g.max_deployments, g.deployment_count), (5, 0));
    let err = store.create_group("team-a", 9).await.unwrap_err();
    assert!(matches!(&err, StoreError::GroupNameConflict { name } if name == "team-a"), "{err}");
    deployment(store, &g.id, "one", Platform::Local).await;
    deployment(store, &g.id, "two", Platform::Aws).await;
    let read = store.get_group(&g.id).await.unwrap().unwrap();
    assert_eq!(
        (read.name.as_str(), read.deployment_count, read.created_at),
        ("team-a", 2, g.created_at)
    );
    assert_eq!(store.get_group(&Id::new(IdKind::DeploymentGroup)).await.unwrap(), None);
}

/// A name is taken once per group; a refused creation writes nothing (not even its token).
pub async fn create_deployment_enforces_unique_names(store: &dyn Store) {
    let a = group(store, "a", 10).await;
    let b = group(store, "b", 10).await;
    deployment(store, &a.id, "web", Platform::Local).await;
    let clash = new_deployment(&a.id, "web", Platform::Aws);
    let clash_hash = clash.token.raw.hash();
    let err = store.create_deployment(clash.clone()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NameConflict { name, group } if name == "web" && *group == a.id),
        "{err}"
    );
    assert_eq!(store.get_deployment(&clash.id).await.unwrap(), None);
    assert_eq!(store.find_token(&clash_hash, Utc::now()).await.unwrap(), None);
    assert_eq!(store.get_group(&a.id).await.unwrap().unwrap().deployment_count, 1);
    deployment(store, &b.id, "web", Platform::Local).await;
}

/// A group never holds more than `maxDeployments`; deleting frees a place.
pub async fn max_deployments_enforced(store: &dyn Store) {
    let g = group(store, "small", 2).await;
    let first = deployment(store, &g.id, "one", Platform::Local).await;
    deployment(store, &g.id, "two", Platform::Local).await;
    let err =
        store.create_deployment(new_deployment(&g.id, "three", Platform::Local)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::MaxDeploymentsReached { group, max: 2 } if *group == g.id),
        "{err}"
    );
    assert_eq!(store.get_group(&g.id).await.unwrap().unwrap().deployment_count, 2);
    assert!(store.delete_deployment(&first.id).await.unwrap());
    deployment(store, &g.id, "three", Platform::Local).await;
}

/// Creating in a group that does not exist is NotFound.
pub async fn create_deployment_needs_an_existing_group(store: &dyn Store) {
    let missing = Id::new(IdKind::DeploymentGroup);
    let err =
        store.create_deployment(new_deployment(&missing, "x", Platform::Local)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { entity: crate::Entity::DeploymentGroup, .. }),
        "{err}"
    );
}

/// A new deployment is pending, with the latest release having a stack for its platform.
pub async fn desired_release_is_latest_for_platform(store: &dyn Store) {
    let g = group(store, "g", 100).await;
    let early = deployment(store, &g.id, "early", Platform::Local).await;
    assert_eq!(early.status, DeploymentStatus::Pending);
    assert_eq!((early.desired_release_id, early.current_release_id), (None, None));
    assert_eq!(early.deployment_model, DeploymentModel::Push);
    assert!(!early.retry_requested);

    store.create_release(new_release(&[Platform::Aws], "aws-only")).await.unwrap();
    assert_eq!(deployment(store, &g.id, "local-1", Platform::Local).await.desired_release_id, None);
    let both =
        store.create_release(new_release(&[Platform::Aws, Platform::Local], "both")).await.unwrap();
    let aws = store.create_release(new_release(&[Platform::Aws], "aws-2")).await.unwrap();
    let local = deployment(store, &g.id, "local-2", Platform::Local).await;
    assert_eq!(local.desired_release_id, Some(both.release.id.clone()));
    assert_eq!(local.status, DeploymentStatus::Pending);
    let on_aws = deployment(store, &g.id, "aws-1", Platform::Aws).await;
    assert_eq!(on_aws.desired_release_id, Some(aws.release.id));
    // The pending deployment created before any release got one when it appeared.
    let early = store.get_deployment(&early.id).await.unwrap().unwrap();
    assert_eq!(early.desired_release_id, Some(both.release.id));
    assert_eq!(early.status, DeploymentStatus::Pending);
}

/// Every field of a deployment reads back; `list_deployments` filters exactly.
pub async fn deployments_read_back_and_filter(store: &dyn Store) {
    let a = group(store, "a", 100).await;
    let b = group(store, "b", 100).await;
    let mut new = new_deployment(&a.id, "full", Platform::Local);
    new.deployment_model = DeploymentModel::Pull;
    new.region = Some("eu-west-1".into());
    new.stack_settings = Some(json!({"network": {"mode": "host"}}));
    new.target = Some(json!({"host": "box-1"}));
    let created = store.create_deployment(new.clone()).await.unwrap();
    assert_eq!(created.id, new.id);
    assert_eq!(created.name, "full");
    assert_eq!(created.deployment_model, DeploymentModel::Pull);
    assert_eq!(created.deployment_group_id, a.id);
    assert_eq!(created.region.as_deref(), Some("eu-west-1"));
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(store.get_deployment(&new.id).await.unwrap().as_ref(), Some(&created));
    let events = store.deployment_events(&new.id, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].from, events[0].to, events[0].reason.as_str()),
        (None, DeploymentStatus::Pending, "created")
    );

    let aws_in_b = deployment(store, &b.id, "full", Platform::Aws).await;
    let running = deployment(store, &b.id, "run", Platform::Local).await;
    drive_to(store, &running.id, DeploymentStatus::Running).await;
    let ids =
        |page: crate::Page<Deployment>| page.items.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let all = &PageRequest::default();
    let by =
        |f: DeploymentFilter| async move { ids(store.list_deployments(&f, all).await.unwrap()) };
    assert_eq!(
        by(DeploymentFilter::default()).await,
        [new.id.clone(), aws_in_b.id.clone(), running.id.clone()]
    );
    assert_eq!(
        by(DeploymentFilter { deployment_group_id: Some(b.id.clone()), ..Default::default() })
            .await,
        [aws_in_b.id.clone(), running.id.clone()]
    );
    assert_eq!(
        by(DeploymentFilter { status: Some(DeploymentStatus::Running), ..Default::default() })
            .await,
        vec![running.id.clone()]
    );
    assert_eq!(
        by(DeploymentFilter { platform: Some(Platform::Aws), ..Default::default() }).await,
        vec![aws_in_b.id.clone()]
    );
    assert_eq!(
        by(DeploymentFilter { name: Some("full".into()), ..Default::default() }).await,
        [new.id.clone(), aws_in_b.id.clone()]
    );
    assert_eq!(
        by(DeploymentFilter {
            deployment_group_id: Some(a.id.clone()),
            name: Some("full".into()),
            platform: Some(Platform::Local),
            status: Some(DeploymentStatus::Pending),
        })
        .await,
        vec![new.id.clone()]
    );
    assert!(
        by(DeploymentFilter { name: Some("nope".into()), ..Default::default() }).await.is_empty()
    );
}

// ---- transitions ----

/// A transition applies the event and the patch, and records the change.
pub async fn transition_applies_event_and_patch(store: &dyn Store) {
    let g = group(store, "g", 10).await;
    let r1 = store.create_release(new_release(&[Platform::Local], "v1")).await.unwrap().release;
    let d = deployment(store, &g.id, "web", Platform::Local).await;
    let heartbeat = Utc::now();
    let error = DeploymentError {
        code: "IMAGE_PULL".into(),
        message: "no such image".into(),
        resource_id: Some("api".into()),
    };

    let provisioning =
        store.transition(&d.id, DeploymentEvent::BeginProvisioning, patch("step")).await.unwrap();
    assert_eq!(provisioning.status, DeploymentStatus::Provisioning);
    assert!(provisioning.updated_at >= d.updated_at);
    let failed = store
        .transition(
            &d.id,
            DeploymentEvent::StepFailed,
            DeploymentPatch {
                error: Some(Some(error.clone())),
                stack_state: Some(json!({"api": {"replicas": 0}})),
                reason: "step".into(),
                detail: Some(json!({"attempt": 1})),
                ..DeploymentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, DeploymentStatus::ProvisioningFailed);
    assert_eq!(failed.error.as_ref(), Some(&error));
    assert_eq!(failed.stack_state, Some(json!({"api": {"replicas": 0}})));

    let retried = store
        .transition(
            &d.id,
            DeploymentEvent::Retry,
            DeploymentPatch { retry_requested: Some(true), ..patch("retry") },
        )
        .await
        .unwrap();
    assert_eq!(retried.status, DeploymentStatus::Provisioning);
    assert!(retried.retry_requested);
    assert_eq!(retried.error.as_ref(), Some(&error), "an unset patch field is left alone");

    let running = store
        .transition(
            &d.id,
            DeploymentEvent::StepSucceeded,
            DeploymentPatch {
                current_release_id: Some(r1.id.clone()),
                error: Some(None),
                retry_requested: Some(false),
                last_heartbeat_at: Some(heartbeat),
                ..patch("step")
            },
        )
        .await
        .unwrap();
    assert_eq!(running.status, DeploymentStatus::Running);
    assert_eq!(running.current_release_id.as_ref(), Some(&r1.id));
    assert_eq!(running.desired_release_id.as_ref(), Some(&r1.id));
    assert_eq!(running.error, None);
    assert!(!running.retry_requested);
    assert_eq!(running.last_heartbeat_at, Some(millis(heartbeat)));
    assert_eq!(running.stack_state, Some(json!({"api": {"replicas": 0}})));
    assert_eq!(store.get_deployment(&d.id).await.unwrap().as_ref(), Some(&running));

    let events = store.deployment_events(&d.id, 50).await.unwrap();
    let steps: Vec<_> = events.iter().map(|e| (e.from, e.to, e.reason.as_str())).collect();
    use DeploymentStatus as S;
    assert_eq!(
        steps,
        [
            (Some(S::Provisioning), S::Running, "step"),
            (Some(S::ProvisioningFailed), S::Provisioning, "retry"),
            (Some(S::Provisioning), S::ProvisioningFailed, "step"),
            (Some(S::Pending), S::Provisioning, "step"),
            (None, S::Pending, "created"),
        ]
    );
    assert_eq!(events[2].detail, Some(json!({"attempt": 1})));
    assert_eq!(store.deployment_events(&d.id, 2).await.unwrap(), events[..2]);

    // A heartbeat that changes nothing is not an event.
    store
        .transition(
            &d.id,
            DeploymentEvent::RefreshHealthy,
            DeploymentPatch { last_heartbeat_at: Some(Utc::now()), ..patch("refresh") },
        )
        .await
        .unwrap();
    assert_eq!(store.deployment_events(&d.id, 50).await.unwrap().len(), events.len());

    let missing = Id::new(IdKind::Deployment);
    let err = store.transition(&missing, DeploymentEvent::Retry, patch("retry")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { entity: crate::Entity::Deployment, .. }),
        "{err}"
    );
}

/// Of concurrent callers applying the same event, exactly one wins.
pub async fn transition_is_conditional(store: &dyn Store) {
    let g = group(store, "g", 10).await;
    let d = deployment(store, &g.id, "web", Platform::Local).await;
    let go = || store.transition(&d.id, DeploymentEvent::BeginProvisioning, patch("step"));
    let (a, b, c, e) = tokio::join!(go(), go(), go(), go());
    let results = [a, b, c, e];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    for result in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(result, StoreError::InvalidTransition(_) | StoreError::Conflict(_)),
            "{result}"
        );
    }
    let after = store.get_deployment(&d.id).await.unwrap().unwrap();
    assert_eq!(after.status, DeploymentStatus::Provisioning);
    assert_eq!(store.deployment_events(&d.id, 50).await.unwrap().len(), 2);
}

/// An event the status refuses is an error and changes nothing.
pub async fn invalid_transition_writes_nothing(store: &dyn Store) {
    let g = group(store, "g", 10).await;
    let d = deployment(store, &g.id, "web", Platform::Local).await;
    let running = drive_to(store, &d.id, DeploymentStatus::Running).await;
    let events = store.deployment_events(&d.id, 50).await.unwrap();
    let err = store
        .transition(
            &d.id,
            DeploymentEvent::Retry,
            DeploymentPatch {
                error: Some(Some(DeploymentError {
                    code: "X".into(),
                    message: "x".into(),
                    resource_id: None,
                })),
                retry_requested: Some(true),
                ..patch("retry")
            },
        )
        .await
        .unwrap_err();
    let StoreError::InvalidTransition(refused) = &err else { panic!("{err}") };
    assert_eq!((refused.from, refused.event), (DeploymentStatus::Running, DeploymentEvent::Retry));
    assert_eq!(store.get_deployment(&d.id).await.unwrap().as_ref(), Some(&running));
    assert_eq!(store.deployment_events(&d.id, 50).await.unwrap(), events);
}

/// Deleting removes the deployment with its variables and events and revokes its tokens.
pub async fn delete_revokes_tokens(store: &dyn Store) {
    let g = group(store, "g", 10).await;
    let mut new = new_deployment(&g.id, "web", Platform::Local);
    new.environment_variables = vec![EnvironmentVariable {
        name: "K".into(),
        value: "v".into(),
        var_type: VariableType::Secret,
    }];
    let hash = new.token.raw.hash();
    let d = store.create_deployment(new.clone()).await.unwrap();
    let kept = deployment(store, &g.id, "other", Platform::Local).await;
    let mut extra = new_token(TokenType::Deployment);
    extra.deployment_id = Some(d.id.clone());
    extra.deployment_group_id = Some(g.id.clone());
    let extra = store.create_token(extra).await.unwrap();
    assert!(store.find_token(&hash, Utc::now()).await.unwrap().is_some());

    assert!(store.delete_deployment(&d.id).await.unwrap());
    assert_eq!(store.get_deployment(&d.id).await.unwrap(), None);
    assert_eq!(store.find_token(&hash, Utc::now()).await.unwrap(), None);
    assert_eq!(store.get_token(&new.token.id).await.unwrap(), None);
    assert_eq!(store.get_token(&extra.id).await.unwrap(), None);
    assert_eq!(store.deployment_token(&d.id).await.unwrap(), None);
    assert!(matches!(store.deployment_environment(&d.id).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.deployment_events(&d.id, 10).await, Err(StoreError::NotFound { .. })));
    assert!(!store.delete_deployment(&d.id).await.unwrap());
    assert!(matches!(
        store.transition(&d.id, DeploymentEvent::DeleteRequested, patch("delete")).await,
        Err(StoreError::NotFound { entity: crate::Entity::Deployment, .. })
    ));
    // The others are untouched and the name is free again.
    assert!(store.get_deployment(&kept.id).await.unwrap().is_some());
    assert_eq!(store.count_tokens(TokenType::Deployment).await.unwrap(), 1);
    deployment(store, &g.id, "web", Platform::Local).await;
}

/// Secret values and the raw token come back unsealed only through the injection calls.
pub async fn secrets_are_returned_unsealed_to_injection_only(store: &dyn Store) {
    let g = group(store, "g", 10).await;
    let mut new = new_deployment(&g.id, "web", Platform::Local);
    new.environment_variables = vec![
        EnvironmentVariable {
            name: "LOG_LEVEL".into(),
            value: "debug".into(),
            var_type: VariableType::Plain,
        },
        EnvironmentVariable {
            name: "DB_PASSWORD".into(),
            value: "hunter2-sekrit".into(),
            var_type: VariableType::Secret,
        },
        EnvironmentVariable {
            name: "EMPTY".into(),
            value: String::new(),
            var_type: VariableType::Secret,
        },
    ];
    let created = store.create_deployment(new.clone()).await.unwrap();
    assert_eq!(store.deployment_environment(&new.id).await.unwrap(), new.environment_variables);
    assert_eq!(store.deployment_token(&new.id).await.unwrap(), Some(new.token.raw.clone()));
    let raw = new.token.raw.expose().to_owned();
    for shown in [
        serde_json::to_string(&created).unwrap(),
        serde_json::to_string(&store.get_deployment(&new.id).await.unwrap()).unwrap(),
        serde_json::to_string(
            &store
                .list_deployments(&DeploymentFilter::default(), &PageRequest::default())
                .await
                .unwrap(),
        )
        .unwrap(),
        serde_json::to_string(&store.list_tokens().await.unwrap()).unwrap(),
        format!("{:?}", store.list_tokens().await.unwrap()),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(&raw[12..]), "{shown}");
    }
    let record = store.find_token(&new.token.raw.hash(), Utc::now()).await.unwrap().unwrap();
    assert_eq!(record.token_type, TokenType::Deployment);
    assert_eq!(record.deployment_id.as_ref(), Some(&new.id));
    assert_eq!(record.deployment_group_id.as_ref(), Some(&g.id));
    assert_eq!(record.key_prefix, new.token.raw.key_prefix());
    let none = deployment(store, &g.id, "bare", Platform::Local).await;
    assert!(store.deployment_environment(&none.id).await.unwrap().is_empty());
    let missing = Id::new(IdKind::Deployment);
    assert_eq!(store.deployment_token(&missing).await.unwrap(), None);
    assert!(matches!(
        store.deployment_environment(&missing).await,
        Err(StoreError::NotFound { entity: crate::Entity::Deployment, .. })
    ));
}

// ---- leases ----

async fn due_fleet(store: &dyn Store, n: usize) -> BTreeSet<Id> {
    let g = group(store, "fleet", 10_000).await;
    store.create_release(new_release(&[Platform::Local], "v1")).await.unwrap();
    let mut ids = BTreeSet::new();
    for i in 0..n {
        ids.insert(deployment(store, &g.id, &format!("d-{i}"), Platform::Local).await.id);
    }
    ids
}

const STALE: Duration = Duration::from_secs(300);

/// Concurrent acquirers never get the same deployment, and together get every due one.
pub async fn acquire_due_never_double_leases(store: &dyn Store) {
    let due = due_fleet(store, 24).await;
    let now = Utc::now();
    let acquire = |owner: &'static str| store.acquire_due(owner, now, 3, STALE);
    let mut seen: BTreeMap<Id, &str> = BTreeMap::new();
    loop {
        let (a, b, c, d) = tokio::join!(acquire("a"), acquire("b"), acquire("c"), acquire("d"));
        let mut got = 0;
        for (owner, leased) in [("a", a), ("b", b), ("c", c), ("d", d)] {
            let leased = leased.unwrap();
            assert!(leased.len() <= 3);
            for deployment in leased {
                got += 1;
                if let Some(first) = seen.insert(deployment.id.clone(), owner) {
                    panic!("{} leased by {first} and {owner}", deployment.id);
                }
            }
        }
        if got == 0 {
            break;
        }
    }
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), due);
}

/// Only push deployments with work to do and a passed `nextStepAfter` are due.
pub async fn acquire_due_selects_only_work(store: &dyn Store) {
    use DeploymentStatus as S;
    let g = group(store, "g", 100).await;
    store.create_release(new_release(&[Platform::Local], "v1")).await.unwrap();
    let without_release = deployment(store, &g.id, "no-release", Platform::Aws).await;
    assert_eq!(without_release.desired_release_id, None);
    let mut pull = new_deployment(&g.id, "pull", Platform::Local);
    pull.deployment_model = DeploymentModel::Pull;
    let pull = store.create_deployment(pull).await.unwrap();
    assert!(pull.desired_release_id.is_some());

    let mut expected = BTreeSet::new();
    let mut by_status = BTreeMap::new();
    for (i, status) in DeploymentStatus::ALL.into_iter().enumerate() {
        let d = deployment(store, &g.id, &format!("s-{i}"), Platform::Local).await;
        drive_to(store, &d.id, status).await;
        if matches!(
            status,
            S::Pending
                | S::Provisioning
                | S::UpdatePending
                | S::Updating
                | S::DeletePending
                | S::Deleting
        ) {
            expected.insert(d.id.clone());
        }
        by_status.insert(status.as_str(), d.id);
    }
    // A deployment in a status the loop leaves alone is due once a retry is asked for.
    let flagged = store
        .transition(
            &by_status["refresh-failed"],
            DeploymentEvent::RefreshFailed,
            DeploymentPatch { retry_requested: Some(true), ..patch("retry") },
        )
        .await
        .unwrap();
    assert!(flagged.retry_requested);
    expected.insert(flagged.id.clone());

    let now = Utc::now();
    let leased = store.acquire_due("w", now, 1000, STALE).await.unwrap();
    assert_eq!(leased.iter().map(|d| d.id.clone()).collect::<BTreeSet<_>>(), expected);

    // Released with a delay: not due before its time, due after.
    let later = by_status["updating"].clone();
    assert!(
        store.release_lease(&later, "w", Some(now + chrono::Duration::seconds(30))).await.unwrap()
    );
    assert!(store.acquire_due("x", now, 1000, STALE).await.unwrap().is_empty());
    let after =
        store.acquire_due("x", now + chrono::Duration::seconds(31), 1000, STALE).await.unwrap();
    assert_eq!(after.iter().map(|d| &d.id).collect::<Vec<_>>(), [&later]);
    assert!(store.acquire_due("y", now, 0, STALE).await.unwrap().is_empty());
}

/// A filter narrows what is acquired (group, platforms, named deployments, all together) without
/// ever widening it: pull deployments and deployments leased by others stay out, and empty lists
/// match nothing.
pub async fn acquire_due_matching_honours_filters(store: &dyn Store) {
    use crate::AcquireFilter;
    let a = group(store, "a", 100).await;
    let b = group(store, "b", 100).await;
    store.create_release(new_release(&[Platform::Local, Platform::Aws], "v1")).await.unwrap();
    let a_local = deployment(store, &a.id, "local", Platform::Local).await.id;
    let a_aws = deployment(store, &a.id, "aws", Platform::Aws).await.id;
    let b_local = deployment(store, &b.id, "local", Platform::Local).await.id;
    let mut pull = new_deployment(&a.id, "pull", Platform::Local);
    pull.deployment_model = DeploymentModel::Pull;
    let pull = store.create_deployment(pull).await.unwrap().id;
    let now = Utc::now();
    let ids = |leased: Vec<Deployment>| leased.into_iter().map(|d| d.id).collect::<BTreeSet<_>>();
    let acquire = |owner: &'static str, filter: AcquireFilter| async move {
        ids(store.acquire_due_matching(owner, now, 100, STALE, &filter).await.unwrap())
    };
    let release_all = |owner: &'static str, leased: BTreeSet<Id>| async move {
        for id in leased {
            assert!(store.release_lease(&id, owner, None).await.unwrap());
        }
    };

    let cases = [
        (
            AcquireFilter { deployment_group_id: Some(b.id.clone()), ..Default::default() },
            BTreeSet::from([b_local.clone()]),
        ),
        (
            AcquireFilter { platforms: Some(vec![Platform::Aws]), ..Default::default() },
            BTreeSet::from([a_aws.clone()]),
        ),
        (
            AcquireFilter {
                deployment_group_id: Some(a.id.clone()),
                platforms: Some(vec![Platform::Local, Platform::Gcp]),
                ..Default::default()
            },
            BTreeSet::from([a_local.clone()]),
        ),
        (
            AcquireFilter {
                deployment_ids: Some(vec![a_local.clone(), b_local.clone(), pull.clone()]),
                ..Default::default()
            },
            BTreeSet::from([a_local.clone(), b_local.clone()]),
        ),
        (
            AcquireFilter {
                deployment_group_id: Some(a.id.clone()),
                deployment_ids: Some(vec![b_local.clone()]),
                platforms: Some(vec![Platform::Local]),
            },
            BTreeSet::new(),
        ),
        (AcquireFilter { deployment_ids: Some(Vec::new()), ..Default::default() }, BTreeSet::new()),
        (AcquireFilter { platforms: Some(Vec::new()), ..Default::default() }, BTreeSet::new()),
        (
            AcquireFilter::default(),
            BTreeSet::from([a_local.clone(), a_aws.clone(), b_local.clone()]),
        ),
    ];
    for (filter, expected) in cases {
        let leased = acquire("s", filter.clone()).await;
        assert_eq!(leased, expected, "{filter:?}");
        release_all("s", leased).await;
    }

    // What one owner holds, another's filter does not reach; the rest stays acquirable.
    let held = acquire(
        "s",
        AcquireFilter { platforms: Some(vec![Platform::Local]), ..Default::default() },
    )
    .await;
    assert_eq!(held, BTreeSet::from([a_local.clone(), b_local.clone()]));
    let named = AcquireFilter { deployment_ids: Some(vec![a_local.clone()]), ..Default::default() };
    assert!(acquire("t", named).await.is_empty());
    assert_eq!(acquire("t", AcquireFilter::default()).await, BTreeSet::from([a_aws.clone()]));
    // `limit` still applies.
    release_all("s", held).await;
    release_all("t", BTreeSet::from([a_aws.clone()])).await;
    let group_a = AcquireFilter { deployment_group_id: Some(a.id.clone()), ..Default::default() };
    let one = store.acquire_due_matching("u", now, 1, STALE, &group_a).await.unwrap();
    assert_eq!(one.len(), 1);
    assert!([&a_local, &a_aws].contains(&&one[0].id), "{:?}", one[0].id);
}

/// A lease older than `stale_after` is taken over; its old owner can no longer renew it.
pub async fn stale_leases_are_reacquired(store: &dyn Store) {
    let due = due_fleet(store, 1).await;
    let id = due.first().unwrap().clone();
    let t0 = Utc::now();
    assert_eq!(store.acquire_due("a", t0, 10, STALE).await.unwrap().len(), 1);
    let minute = chrono::Duration::seconds(60);
    assert!(store.acquire_due("b", t0 + minute, 10, STALE).await.unwrap().is_empty());
    assert!(store.renew_lease(&id, "a", t0 + minute * 4).await.unwrap());
    // Renewed at t0+4m: still held at t0+6m, stale after t0+9m.
    assert!(store.acquire_due("b", t0 + minute * 6, 10, STALE).await.unwrap().is_empty());
    let taken = store.acquire_due("b", t0 + minute * 10, 10, STALE).await.unwrap();
    assert_eq!(taken.iter().map(|d| &d.id).collect::<Vec<_>>(), [&id]);
    assert!(!store.renew_lease(&id, "a", t0 + minute * 10).await.unwrap());
    assert!(!store.release_lease(&id, "a", None).await.unwrap());
    assert!(store.renew_lease(&id, "b", t0 + minute * 11).await.unwrap());
}

/// A group's rollout policy: at most `batchSize` updates at once, the next batch after the
/// delay, paused while one failed; a deployment-targeted redeploy is never held; without a
/// policy every update begins at once.
pub async fn rollout_policy_gates_updates(store: &dyn Store) {
    use DeploymentStatus as S;
    let g = group(store, "staged", 10).await;
    let policy = RolloutPolicy {
        batch_size: Some(2),
        batch_delay_secs: Some(60),
        pause_on_failure: Some(true),
    };
    let updated = store.set_group_rollout(&g.id, Some(policy)).await.unwrap();
    assert_eq!(updated.rollout, Some(policy));
    assert_eq!(store.get_group(&g.id).await.unwrap().unwrap().rollout, Some(policy));
    let mut ids = Vec::new();
    for name in ["d1", "d2", "d3", "d4"] {
        ids.push(deployment(store, &g.id, name, Platform::Local).await.id);
    }
    let free = group(store, "free", 10).await;
    let unstaged = deployment(store, &free.id, "u", Platform::Local).await.id;
    for id in ids.iter().chain([&unstaged]) {
        drive_to(store, id, S::UpdatePending).await;
    }
    let now = Utc::now();
    let begin = |id: &Id, at: DateTime<Utc>| {
        let id = id.clone();
        async move { store.begin_update(&id, at, patch("step")).await }
    };
    let begun =
        |outcome: BeginUpdate| matches!(outcome, BeginUpdate::Begun(d) if d.status == S::Updating);
    assert!(begun(begin(&unstaged, now).await.unwrap()), "no policy: at once");
    assert!(begun(begin(&ids[0], now).await.unwrap()));
    // The first finishes before the second begins: the batch of 2 is not over yet (no delay).
    store.transition(&ids[0], DeploymentEvent::StepSucceeded, patch("done")).await.unwrap();
    assert!(begun(begin(&ids[1], now).await.unwrap()), "same batch");
    assert!(
        matches!(begin(&ids[2], now).await.unwrap(), BeginUpdate::Held { until: None, .. }),
        "the batch of 2 is full"
    );
    // The other fails: the rollout pauses.
    store.transition(&ids[1], DeploymentEvent::StepFailed, patch("failed")).await.unwrap();
    let BeginUpdate::Held { reason, .. } = begin(&ids[2], now).await.unwrap() else {
        panic!("paused on failure");
    };
    assert!(reason.contains("paused"), "{reason}");
    assert_eq!(store.get_deployment(&ids[2]).await.unwrap().unwrap().status, S::UpdatePending);
    // A deployment-targeted redeploy goes ahead anyway.
    let targeted = DeploymentPatch { retry_requested: Some(true), ..patch("redeploy") };
    store.transition(&ids[3], DeploymentEvent::Redeploy, targeted).await.unwrap();
    assert!(begun(begin(&ids[3], now).await.unwrap()), "a rollback is not held back");
    store.transition(&ids[3], DeploymentEvent::StepSucceeded, patch("done")).await.unwrap();
    // The failed one is retried and succeeds: the batch is over; the next waits for the delay.
    store.transition(&ids[1], DeploymentEvent::Retry, patch("retry")).await.unwrap();
    store.transition(&ids[1], DeploymentEvent::StepSucceeded, patch("done")).await.unwrap();
    let later = Utc::now();
    let BeginUpdate::Held { until: Some(until), .. } = begin(&ids[2], later).await.unwrap() else {
        panic!("the delay holds the next batch");
    };
    assert!(until > later + chrono::Duration::seconds(50), "{until} vs {later}");
    assert!(begun(begin(&ids[2], until + chrono::Duration::seconds(1)).await.unwrap()));
    // Removing the policy: no gate.
    store.set_group_rollout(&g.id, None).await.unwrap();
    assert_eq!(store.get_group(&g.id).await.unwrap().unwrap().rollout, None);
    assert!(matches!(
        store.set_group_rollout(&Id::new(IdKind::DeploymentGroup), None).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// A report of the status a deployment already has updates it in place, without an event; a
/// deployment in another status (or gone) is left alone.
pub async fn reports_of_an_unchanged_status_are_recorded_in_place(store: &dyn Store) {
    let g = group(store, "reports", 10).await;
    let d = deployment(store, &g.id, "r", Platform::Local).await;
    drive_to(store, &d.id, DeploymentStatus::Running).await;
    let events = store.deployment_events(&d.id, 100).await.unwrap().len();
    let at = millis(Utc::now());
    let report = DeploymentPatch {
        stack_state: Some(json!({"replicas": 2})),
        error: Some(None),
        last_heartbeat_at: Some(at),
        ..patch("sync")
    };
    let recorded = store
        .record_report(&d.id, DeploymentStatus::Running, report.clone())
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(recorded.status, DeploymentStatus::Running);
    assert_eq!(recorded.stack_state, Some(json!({"replicas": 2})));
    assert_eq!(recorded.last_heartbeat_at, Some(at));
    assert_eq!(store.get_deployment(&d.id).await.unwrap().unwrap(), recorded);
    assert_eq!(store.deployment_events(&d.id, 100).await.unwrap().len(), events, "no event");
    // A transition decided on an older read is refused when the status moved on.
    let expecting = DeploymentPatch {
        expect_status: Some(DeploymentStatus::Updating),
        ..patch("decided on an old read")
    };
    assert!(matches!(
        store.transition(&d.id, DeploymentEvent::RefreshFailed, expecting).await,
        Err(StoreError::Conflict(_))
    ));
    let stale = DeploymentPatch { stack_state: Some(json!({"stale": true})), ..report.clone() };
    assert!(store.record_report(&d.id, DeploymentStatus::Updating, stale).await.unwrap().is_none());
    assert_eq!(store.get_deployment(&d.id).await.unwrap().unwrap(), recorded, "unchanged");
    let gone = Id::new(IdKind::Deployment);
    assert!(store.record_report(&gone, DeploymentStatus::Running, report).await.unwrap().is_none());
}

/// A restarted owner releases the leases it held (without waiting for them to go stale);
/// nobody else's are touched.
pub async fn leases_of_a_restarted_owner_are_released(store: &dyn Store) {
    due_fleet(store, 3).await;
    let now = Utc::now();
    assert_eq!(store.acquire_due("a", now, 2, STALE).await.unwrap().len(), 2);
    assert_eq!(store.acquire_due("b", now, 2, STALE).await.unwrap().len(), 1);
    assert!(store.acquire_due("c", now, 10, STALE).await.unwrap().is_empty());
    assert_eq!(store.release_leases_of("a").await.unwrap(), 2);
    assert_eq!(store.release_leases_of("a").await.unwrap(), 0);
    assert_eq!(store.acquire_due("c", now, 10, STALE).await.unwrap().len(), 2, "a's, not b's");
}

/// Only the owner renews or releases; a released deployment is due again.
pub async fn renew_and_release_only_by_owner(store: &dyn Store) {
    let due = due_fleet(store, 1).await;
    let id = due.first().unwrap().clone();
    let now = Utc::now();
    assert_eq!(store.acquire_due("a", now, 10, STALE).await.unwrap().len(), 1);
    assert!(!store.renew_lease(&id, "b", now).await.unwrap());
    assert!(!store.release_lease(&id, "b", None).await.unwrap());
    assert!(store.acquire_due("b", now, 10, STALE).await.unwrap().is_empty());
    assert!(store.renew_lease(&id, "a", now).await.unwrap());
    assert!(store.release_lease(&id, "a", None).await.unwrap());
    assert!(!store.release_lease(&id, "a", None).await.unwrap());
    assert!(!store.renew_lease(&id, "a", now).await.unwrap());
    assert_eq!(store.acquire_due("b", now, 10, STALE).await.unwrap().len(), 1);
    let missing = Id::new(IdKind::Deployment);
    assert!(!store.renew_lease(&missing, "a", now).await.unwrap());
}

/// Progress is saved only by the lease holder, and leaves the status alone.
pub async fn progress_is_saved_only_by_the_lease_holder(store: &dyn Store) {
    let due = due_fleet(store, 1).await;
    let id = due.first().unwrap().clone();
    let before = store.get_deployment(&id).await.unwrap().unwrap();
    let state = serde_json::json!({"replicas": [{"name": "api-1", "ready": false}]});
    assert!(!store.save_progress(&id, "a", &state).await.unwrap(), "not leased: refused");
    assert_eq!(store.acquire_due("a", Utc::now(), 10, STALE).await.unwrap().len(), 1);
    assert!(!store.save_progress(&id, "b", &state).await.unwrap(), "another owner: refused");
    assert_eq!(store.get_deployment(&id).await.unwrap().unwrap().stack_state, before.stack_state);
    assert!(store.save_progress(&id, "a", &state).await.unwrap());
    let after = store.get_deployment(&id).await.unwrap().unwrap();
    assert_eq!(after.stack_state, Some(state));
    assert_eq!(after.status, before.status, "the status does not change");
    let missing = Id::new(IdKind::Deployment);
    assert!(!store.save_progress(&missing, "a", &serde_json::json!({})).await.unwrap());
}

/// A heartbeat is recorded without touching the status.
pub async fn heartbeats_are_recorded(store: &dyn Store) {
    let g = group(store, "hb", 10).await;
    let d = deployment(store, &g.id, "hb", Platform::Local).await;
    let at = millis(Utc::now());
    assert!(store.record_heartbeat(&d.id, at).await.unwrap());
    let after = store.get_deployment(&d.id).await.unwrap().unwrap();
    assert_eq!(after.last_heartbeat_at, Some(at));
    assert_eq!(after.status, d.status);
    assert!(!store.record_heartbeat(&Id::new(IdKind::Deployment), at).await.unwrap());
}

/// Pull deployments that stopped syncing are found; push ones, stale ones and those that
/// synced recently are not.
pub async fn silent_agents_are_found(store: &dyn Store) {
    let g = group(store, "agents", 10).await;
    let mut pull = new_deployment(&g.id, "quiet", Platform::Local);
    pull.deployment_model = DeploymentModel::Pull;
    let quiet = store.create_deployment(pull).await.unwrap();
    let mut pull = new_deployment(&g.id, "chatty", Platform::Local);
    pull.deployment_model = DeploymentModel::Pull;
    let chatty = store.create_deployment(pull).await.unwrap();
    deployment(store, &g.id, "pushed", Platform::Local).await;
    let later = Utc::now() + chrono::Duration::seconds(60);
    store.record_heartbeat(&chatty.id, later + chrono::Duration::seconds(1)).await.unwrap();
    let silent = store.silent_pull_deployments(later, 100).await.unwrap();
    assert_eq!(silent, vec![quiet.id.clone()], "only the pull deployment that never synced");
    store.transition(&quiet.id, DeploymentEvent::HeartbeatMissed, patch("stale")).await.unwrap();
    assert!(store.silent_pull_deployments(later, 100).await.unwrap().is_empty(), "stale already");
}

// ---- tokens ----

/// Revoked and expired tokens are not found; revocation is immediate.
pub async fn tokens_revoked_and_expired_are_not_found(store: &dyn Store) {
    let now = Utc::now();
    let admin = new_token(TokenType::Admin);
    let stored =
        store.create_token(NewToken { name: Some("ci".into()), ..admin.clone() }).await.unwrap();
    assert_eq!(stored.key_hash, admin.raw.hash());
    assert_eq!(stored.name.as_deref(), Some("ci"));
    assert_eq!(store.find_token(&admin.raw.hash(), now).await.unwrap().as_ref(), Some(&stored));
    assert_eq!(store.get_token(&admin.id).await.unwrap().as_ref(), Some(&stored));

    let expiring = NewToken {
        expires_at: Some(now + chrono::Duration::hours(1)),
        ..new_token(TokenType::DeploymentGroup)
    };
    let expiring_record = store.create_token(expiring.clone()).await.unwrap();
    assert_eq!(expiring_record.expires_at, Some(millis(now + chrono::Duration::hours(1))));
    assert!(store.find_token(&expiring.raw.hash(), now).await.unwrap().is_some());
    assert_eq!(
        store.find_token(&expiring.raw.hash(), now + chrono::Duration::hours(2)).await.unwrap(),
        None
    );
    let expired = NewToken {
        expires_at: Some(now - chrono::Duration::seconds(1)),
        ..new_token(TokenType::DeploymentGroup)
    };
    store.create_token(expired.clone()).await.unwrap();
    assert_eq!(store.find_token(&expired.raw.hash(), Utc::now()).await.unwrap(), None);
    let live: BTreeSet<_> = store.list_tokens().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(live, BTreeSet::from([admin.id.clone(), expiring.id.clone()]));
    assert_eq!(store.count_tokens(TokenType::DeploymentGroup).await.unwrap(), 1);

    assert!(store.revoke_token(&admin.id).await.unwrap());
    assert_eq!(store.find_token(&admin.raw.hash(), now).await.unwrap(), None);
    assert_eq!(store.get_token(&admin.id).await.unwrap(), None);
    assert!(!store.revoke_token(&admin.id).await.unwrap());
    assert!(!store.revoke_token(&Id::new(IdKind::Token)).await.unwrap());
    assert_eq!(store.count_tokens(TokenType::Admin).await.unwrap(), 0);
    assert_eq!(store.find_token("not-a-hash", now).await.unwrap(), None);

    let a1 = new_token(TokenType::Admin);
    let a2 = new_token(TokenType::Admin);
    store.create_token(a1.clone()).await.unwrap();
    store.create_token(a2.clone()).await.unwrap();
    assert_eq!(store.count_tokens(TokenType::Admin).await.unwrap(), 2);
    assert!(store.find_token(&a1.raw.hash(), Utc::now()).await.unwrap().is_some());
    assert_eq!(store.revoke_admin_tokens().await.unwrap(), 2);
    assert_eq!(store.count_tokens(TokenType::Admin).await.unwrap(), 0);
    assert_eq!(store.find_token(&a1.raw.hash(), Utc::now()).await.unwrap(), None, "at once");
    assert!(store.find_token(&a1.raw.hash(), now).await.unwrap().is_none());
    assert!(store.find_token(&expiring.raw.hash(), now).await.unwrap().is_some());
}

/// The same raw token cannot be stored twice.
pub async fn duplicate_tokens_conflict(store: &dyn Store) {
    let token = new_token(TokenType::Admin);
    store.create_token(token.clone()).await.unwrap();
    let again = NewToken { id: Id::new(IdKind::Token), ..token };
    assert!(matches!(store.create_token(again).await, Err(StoreError::Conflict(_))));
}

/// Token use is recorded in batches and never moves backwards.
pub async fn token_use_is_recorded(store: &dyn Store) {
    let a = new_token(TokenType::Admin);
    let b = new_token(TokenType::DeploymentGroup);
    store.create_token(a.clone()).await.unwrap();
    store.create_token(b.clone()).await.unwrap();
    assert_eq!(store.get_token(&a.id).await.unwrap().unwrap().last_used_at, None);
    let t1 = Utc::now();
    let t2 = t1 + chrono::Duration::seconds(5);
    store
        .record_token_use(&[(a.id.clone(), t1), (b.id.clone(), t2), (Id::new(IdKind::Token), t2)])
        .await
        .unwrap();
    store.record_token_use(&[]).await.unwrap();
    assert_eq!(store.get_token(&a.id).await.unwrap().unwrap().last_used_at, Some(millis(t1)));
    assert_eq!(store.get_token(&b.id).await.unwrap().unwrap().last_used_at, Some(millis(t2)));
    store.record_token_use(&[(a.id.clone(), t2), (b.id.clone(), t1)]).await.unwrap();
    assert_eq!(store.get_token(&a.id).await.unwrap().unwrap().last_used_at, Some(millis(t2)));
    assert_eq!(store.get_token(&b.id).await.unwrap().unwrap().last_used_at, Some(millis(t2)));
}

// ---- pagination and audit ----

/// Every list pages through every item once, in order, even while items are added, and refuses
/// cursors it did not hand out.
pub async fn pagination_is_stable_and_complete(store: &dyn Store) {
    let mut groups = Vec::new();
    for i in 0..7 {
        groups.push(group(store, &format!("g{i}"), 100).await.id);
    }
    let mut walked = Vec::new();
    let mut page = PageRequest { limit: 3, cursor: None };
    let mut sizes = Vec::new();
    loop {
        let got = store.list_groups(&page).await.unwrap();
        sizes.push(got.items.len());
        walked.extend(got.items.into_iter().map(|g| g.id));
        if walked.len() == 3 {
            // Added mid-walk: appears at the end, nothing is repeated or skipped.
            groups.push(group(store, "late", 100).await.id);
        }
        match got.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(walked, groups);
    assert_eq!(sizes, [3, 3, 2]);

    let mut releases = Vec::new();
    for i in 0..5 {
        releases.push(
            store
                .create_release(new_release(&[Platform::Local], &format!("v{i}")))
                .await
                .unwrap()
                .release
                .id,
        );
    }
    releases.reverse();
    let first = store.list_releases(&PageRequest { limit: 2, cursor: None }).await.unwrap();
    store.create_release(new_release(&[Platform::Local], "newer")).await.unwrap();
    let mut walked: Vec<Id> = first.items.into_iter().map(|r| r.id).collect();
    let mut cursor = first.next_cursor;
    while let Some(c) = cursor {
        let got = store.list_releases(&PageRequest { limit: 2, cursor: Some(c) }).await.unwrap();
        walked.extend(got.items.into_iter().map(|r| r.id));
        cursor = got.next_cursor;
    }
    assert_eq!(walked, releases, "newest first, the newer release not repeated mid-walk");

    let g = &groups[0];
    let mut deployments = Vec::new();
    for i in 0..5 {
        deployments.push(deployment(store, g, &format!("d{i}"), Platform::Local).await.id);
    }
    deployment(store, &groups[1], "elsewhere", Platform::Local).await;
    let filter = DeploymentFilter { deployment_group_id: Some(g.clone()), ..Default::default() };
    let mut walked = Vec::new();
    let mut cursor = None;
    loop {
        let got = store.list_deployments(&filter, &PageRequest { limit: 2, cursor }).await.unwrap();
        walked.extend(got.items.into_iter().map(|d| d.id));
        match got.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(walked, deployments);
    // An exactly full last page has no next cursor.
    let exact =
        store.list_deployments(&filter, &PageRequest { limit: 5, cursor: None }).await.unwrap();
    assert_eq!((exact.items.len(), exact.next_cursor), (5, None));

    let groups_cursor = store
        .list_groups(&PageRequest { limit: 1, cursor: None })
        .await
        .unwrap()
        .next_cursor
        .unwrap();
    for bad in ["garbage", "", "%%%", groups_cursor.as_str()] {
        let bad = PageRequest { limit: 2, cursor: Some(bad.to_owned()) };
        assert!(matches!(store.list_releases(&bad).await, Err(StoreError::BadCursor(_))));
        assert!(matches!(store.list_audit(&bad).await, Err(StoreError::BadCursor(_))));
        assert!(matches!(
            store.list_deployments(&filter, &bad).await,
            Err(StoreError::BadCursor(_))
        ));
    }
    // (Its HTTP answer, 400 BAD_REQUEST, is tested with the error mapping in alien-server.)
    let err = store
        .list_groups(&PageRequest { limit: 2, cursor: Some("garbage".into()) })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BadCursor(_)), "{err}");
}

/// Concurrent appends (committed in groups by the SQLite store) each return once their entry is
/// stored: all of them are there, none twice.
pub async fn concurrent_audit_appends_are_all_kept(store: &dyn Store) {
    // More than one statement's rows wait while the first flush runs.
    const N: usize = 1100;
    let appends = (0..N).map(|i| {
        store.append_audit(NewAuditEntry {
            at: Utc::now(),
            token_id: None,
            token_type: None,
            action: format!("POST /v1/concurrent/{i}"),
            target_id: None,
            status: 200,
            outcome: "success".into(),
        })
    });
    for result in futures_util::future::join_all(appends).await {
        result.unwrap();
    }
    let first = store.list_audit(&PageRequest { limit: 1000, cursor: None }).await.unwrap();
    let rest = store.list_audit(&PageRequest { limit: 1000, cursor: first.next_cursor }).await;
    let items: Vec<_> = first.items.into_iter().chain(rest.unwrap().items).collect();
    let actions: BTreeSet<String> = items.iter().map(|e| e.action.clone()).collect();
    assert_eq!(items.len(), N);
    assert_eq!(actions.len(), N, "each entry once");
}

/// The audit log reads back newest first, every field kept.
pub async fn audit_is_newest_first(store: &dyn Store) {
    assert!(store.list_audit(&PageRequest::default()).await.unwrap().items.is_empty());
    let start = Utc::now();
    let token = Id::new(IdKind::Token);
    for i in 0..5u16 {
        store
            .append_audit(NewAuditEntry {
                at: start + chrono::Duration::milliseconds(i.into()),
                token_id: (i % 2 == 0).then(|| token.clone()),
                token_type: (i % 2 == 0).then_some(TokenType::Admin),
                action: format!("POST /v1/thing/{i}"),
                target_id: Some(format!("target-{i}")),
                status: 200 + i,
                outcome: if i == 4 { "CONFLICT".into() } else { "success".into() },
            })
            .await
            .unwrap();
    }
    let first = store.list_audit(&PageRequest { limit: 3, cursor: None }).await.unwrap();
    let rest = store
        .list_audit(&PageRequest { limit: 3, cursor: first.next_cursor.clone() })
        .await
        .unwrap();
    assert_eq!(rest.next_cursor, None);
    let all: Vec<_> = first.items.into_iter().chain(rest.items).collect();
    let actions: Vec<_> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "POST /v1/thing/4",
            "POST /v1/thing/3",
            "POST /v1/thing/2",
            "POST /v1/thing/1",
            "POST /v1/thing/0"
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    let newest = &all[0];
    assert_eq!(newest.at, millis(start + chrono::Duration::milliseconds(4)));
    assert_eq!(
        (newest.token_id.as_ref(), newest.token_type),
        (Some(&token), Some(TokenType::Admin))
    );
    assert_eq!(
        (newest.status, newest.outcome.as_str(), newest.target_id.as_deref()),
        (204, "CONFLICT", Some("target-4"))
    );
    assert_eq!((all[1].token_id.as_ref(), all[1].token_type), (None, None));
}

/// A deployment's `target` reads back as it was given; none is `None`; an unknown deployment is
/// `NotFound`.
pub async fn deployment_targets_read_back_as_given(store: &dyn Store) {
    let g = group(store, "targets", 5).await;
    let mut new = new_deployment(&g.id, "aws-one", Platform::Aws);
    let target = serde_json::json!({"accountId": "123456789012", "roleArn": "arn:aws:iam::123456789012:role/r"});
    new.target = Some(target.clone());
    let with = store.create_deployment(new).await.unwrap();
    let without = deployment(store, &g.id, "local-one", Platform::Local).await;
    assert_eq!(store.deployment_target(&with.id).await.unwrap(), Some(target));
    assert_eq!(store.deployment_target(&without.id).await.unwrap(), None);
    let unknown = Id::new(IdKind::Deployment);
    assert!(matches!(
        store.deployment_target(&unknown).await,
        Err(StoreError::NotFound { entity: crate::Entity::Deployment, .. })
    ));
}

/// A healthy store answers `ping`.
pub async fn ping_answers(store: &dyn Store) {
    store.ping().await.unwrap();
}
