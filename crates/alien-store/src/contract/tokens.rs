//! Tokens: revocation, expiry, duplicates, last use.

use super::*;

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

    // The only live admin token is not revoked; with another one it is.
    assert!(matches!(
        store.revoke_token(&admin.id).await,
        Err(StoreError::LastAdminToken(id)) if id == admin.id
    ));
    assert!(store.find_token(&admin.raw.hash(), now).await.unwrap().is_some(), "still live");
    let spare = new_token(TokenType::Admin);
    store.create_token(spare.clone()).await.unwrap();
    assert!(store.revoke_token(&admin.id).await.unwrap());
    assert_eq!(store.find_token(&admin.raw.hash(), now).await.unwrap(), None);
    assert_eq!(store.get_token(&admin.id).await.unwrap(), None);
    assert!(!store.revoke_token(&admin.id).await.unwrap());
    assert!(!store.revoke_token(&Id::new(IdKind::Token)).await.unwrap());
    assert_eq!(store.count_tokens(TokenType::Admin).await.unwrap(), 1);
    assert!(matches!(store.revoke_token(&spare.id).await, Err(StoreError::LastAdminToken(_))));
    // An expired admin token opens nothing: it may go.
    let stale = NewToken {
        expires_at: Some(now - chrono::Duration::seconds(1)),
        ..new_token(TokenType::Admin)
    };
    store.create_token(stale.clone()).await.unwrap();
    assert!(store.revoke_token(&stale.id).await.unwrap());
    assert_eq!(store.find_token("not-a-hash", now).await.unwrap(), None);

    let a1 = new_token(TokenType::Admin);
    let a2 = new_token(TokenType::Admin);
    store.create_token(a1.clone()).await.unwrap();
    store.create_token(a2.clone()).await.unwrap();
    assert_eq!(store.count_tokens(TokenType::Admin).await.unwrap(), 3);
    assert!(store.find_token(&a1.raw.hash(), Utc::now()).await.unwrap().is_some());
    assert_eq!(store.revoke_admin_tokens().await.unwrap(), 3, "the offline reset revokes all");
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
