//! Groups and deployments: names, limits, reading back and filtering.

use super::*;

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

/// An event without a status change reads back with the deployment's current status on both
/// sides, newest first; a gone deployment records nothing.
pub async fn events_without_a_status_change_are_recorded(store: &dyn Store) {
    let g = group(store, "ev", 10).await;
    let d = deployment(store, &g.id, "scaled", Platform::Local).await;
    drive_to(store, &d.id, DeploymentStatus::Running).await;
    let detail = json!({"container": "web", "from": 1, "to": 4});
    assert!(store.record_event(&d.id, "autoscale", detail.clone()).await.unwrap());
    let events = store.deployment_events(&d.id, 1).await.unwrap();
    assert_eq!(
        (events[0].from, events[0].to, events[0].reason.as_str(), events[0].detail.as_ref()),
        (Some(DeploymentStatus::Running), DeploymentStatus::Running, "autoscale", Some(&detail))
    );
    let after = store.get_deployment(&d.id).await.unwrap().unwrap();
    assert_eq!(after.status, DeploymentStatus::Running, "no status change");
    let gone = Id::new(alien_core::IdKind::Deployment);
    assert!(!store.record_event(&gone, "autoscale", json!({})).await.unwrap());
}
