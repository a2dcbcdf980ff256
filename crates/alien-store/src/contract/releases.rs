//! Releases: immutability, order, marking deployments by the transition table.

use super::*;

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
