//! The contract suite of [`Store`]: one public async function per behaviour, each taking an empty
//! store and panicking on a violation, so that every backend runs the same suite and a failure
//! names the behaviour (alien-store-sqlite's `tests/sqlite_contract.rs` runs it against SQLite,
//! through [`store_contract_tests!`](crate::store_contract_tests)).
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
    PageRequest, SteadyReport, Store, StoreError,
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

/// Generates one `#[tokio::test]` per behaviour of the suite, each on a fresh store: `$fresh` is
/// an async function returning a guard (kept to the end of the test) and the store, whose async
/// `close` ends the test.
#[macro_export]
macro_rules! store_contract_tests {
    ($fresh:path) => {
        $crate::store_contract_tests!(@each $fresh;
        releases_are_immutable_and_listed_newest_first,
        release_marks_deployments_by_transition_table,
        groups_have_unique_names_and_counts,
        create_deployment_enforces_unique_names,
        max_deployments_enforced,
        create_deployment_needs_an_existing_group,
        desired_release_is_latest_for_platform,
        deployments_read_back_and_filter,
        events_without_a_status_change_are_recorded,
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
        steady_heartbeats_need_the_exact_reported_state,
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
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = $fresh().await;
                $crate::contract::$name(&store).await;
                store.close().await;
            }
        )*
    };
}

mod audit;
mod deployments;
mod leases;
mod releases;
mod tokens;
mod transitions;

pub use audit::*;
pub use deployments::*;
pub use leases::*;
pub use releases::*;
pub use tokens::*;
pub use transitions::*;
