//! Runs the store contract suite (`alien_store::contract`) against a fresh SQLite store per
//! behaviour, so that a failure names the behaviour that broke.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_store::contract;
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};

async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(EncryptionKey::generate().unwrap());
    let store = SqliteStore::open(&dir.path().join("alien-manager.db"), sealer).await.unwrap();
    (dir, store)
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_dir, store) = fresh().await;
                contract::$name(&store).await;
                store.close().await;
            }
        )*
    };
}

contract_tests!(
    releases_are_immutable_and_listed_newest_first,
    release_marks_deployments_by_transition_table,
    groups_have_unique_names_and_counts,
    create_deployment_enforces_unique_names,
    max_deployments_enforced,
    create_deployment_needs_an_existing_group,
    desired_release_is_latest_for_platform,
    deployments_read_back_and_filter,
    transition_applies_event_and_patch,
    transition_is_conditional,
    invalid_transition_writes_nothing,
    delete_revokes_tokens,
    secrets_are_returned_unsealed_to_injection_only,
    deployment_inputs_match_the_single_reads,
    acquire_due_never_double_leases,
    acquire_due_selects_only_work,
    acquire_due_matching_honours_filters,
    stale_leases_are_reacquired,
    leases_of_a_restarted_owner_are_released,
    rollout_policy_gates_updates,
    reports_of_an_unchanged_status_are_recorded_in_place,
    renew_and_release_only_by_owner,
    progress_is_saved_only_by_the_lease_holder,
    heartbeats_are_recorded,
    silent_agents_are_found,
    tokens_revoked_and_expired_are_not_found,
    duplicate_tokens_conflict,
    token_use_is_recorded,
    pagination_is_stable_and_complete,
    audit_is_newest_first,
    concurrent_audit_appends_are_all_kept,
    deployment_targets_read_back_as_given,
    ping_answers,
);
