//! Leases of the deployment loop and external drivers, rollouts, heartbeats.

use super::*;

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

/// A steady heartbeat is recorded only while the pull deployment is exactly as reported (running
/// its desired release with that platform state, no error, no retry asked): anything else writes
/// nothing. Many at once (a store may group-commit them) each get their own answer.
pub async fn steady_heartbeats_need_the_exact_reported_state(store: &dyn Store) {
    let g = group(store, "steady", 100).await;
    let state = json!({"resources": {"api": {"status": "running", "replicas": [1, 2]}}});
    let mut ids = Vec::new();
    for name in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"] {
        let mut new = new_deployment(&g.id, name, Platform::Local);
        new.deployment_model = DeploymentModel::Pull;
        let d = store.create_deployment(new).await.unwrap();
        drive_to(store, &d.id, DeploymentStatus::Running).await;
        ids.push(d.id);
    }
    let release = store.create_release(new_release(&[Platform::Local], "1")).await.unwrap();
    let release = release.release.id;
    for id in &ids {
        drive_to(store, id, DeploymentStatus::Running).await;
        let report = DeploymentPatch {
            current_release_id: Some(release.clone()),
            stack_state: Some(state.clone()),
            error: Some(None),
            ..patch("sync")
        };
        store.record_report(id, DeploymentStatus::Running, report).await.unwrap().unwrap();
    }
    let steady = SteadyReport {
        platform: Platform::Local,
        release: release.clone(),
        stack_state: serde_json::to_string(&state).unwrap(),
    };
    let at = millis(Utc::now());
    let before = store.get_deployment(&ids[0]).await.unwrap().unwrap();
    assert!(store.record_steady_heartbeat(&ids[0], &steady, at).await.unwrap());
    let after = store.get_deployment(&ids[0]).await.unwrap().unwrap();
    assert_eq!(after.last_heartbeat_at, Some(at));
    assert_eq!(after, Deployment { last_heartbeat_at: Some(at), ..before }, "only the heartbeat");
    // The same report again (a store may know it steady by now and write its time a little
    // later): the time is seen at once and the agent is not silent.
    let again = at + chrono::Duration::seconds(1);
    assert!(store.record_steady_heartbeat(&ids[0], &steady, again).await.unwrap());
    let seen = store.get_deployment(&ids[0]).await.unwrap().unwrap();
    assert_eq!(seen.last_heartbeat_at, Some(again));
    let silent = store.silent_pull_deployments(again, 100).await.unwrap();
    assert!(!silent.contains(&ids[0]), "{silent:?}");

    // Anything that differs writes nothing.
    let later = at + chrono::Duration::seconds(5);
    let other_state = SteadyReport { stack_state: "{\"other\":1}".into(), ..steady.clone() };
    let other_release = SteadyReport { release: Id::new(IdKind::Release), ..steady.clone() };
    let other_platform = SteadyReport { platform: Platform::Aws, ..steady.clone() };
    for differs in [&other_state, &other_release, &other_platform] {
        assert!(!store.record_steady_heartbeat(&ids[0], differs, later).await.unwrap());
    }
    assert!(
        !store.record_steady_heartbeat(&Id::new(IdKind::Deployment), &steady, later).await.unwrap()
    );
    let retry = DeploymentPatch { retry_requested: Some(true), ..patch("retry") };
    store.record_report(&ids[1], DeploymentStatus::Running, retry).await.unwrap().unwrap();
    assert!(!store.record_steady_heartbeat(&ids[1], &steady, later).await.unwrap(), "retry asked");
    let push = deployment(store, &g.id, "pushed", Platform::Local).await;
    assert!(!store.record_steady_heartbeat(&push.id, &steady, later).await.unwrap(), "push");
    assert_eq!(
        store.get_deployment(&ids[0]).await.unwrap().unwrap().last_heartbeat_at,
        Some(again)
    );

    // Many at once, one of them twice with different states: each gets its own answer.
    let calls = ids[2..].iter().map(|id| (id, &steady)).chain([(&ids[2], &other_state)]);
    let answers = futures_util::future::join_all(
        calls.map(|(id, report)| store.record_steady_heartbeat(id, report, later)),
    )
    .await;
    let answers: Vec<bool> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers.iter().filter(|a| **a).count(), ids.len() - 2, "{answers:?}");
    assert!(!answers.last().unwrap(), "the differing report of a deployment also sent steady");
    for id in &ids[2..] {
        let d = store.get_deployment(id).await.unwrap().unwrap();
        assert_eq!(d.last_heartbeat_at, Some(later));
    }

    // A new release makes them update-pending: no longer steady.
    store.create_release(new_release(&[Platform::Local], "2")).await.unwrap();
    assert!(!store.record_steady_heartbeat(&ids[3], &steady, later).await.unwrap());
}
