//! Pagination, the audit log and `ping`.

use super::*;

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
