//! Persistent state of alien-manager behind traits: releases, deployment groups, deployments
//! (with leases for the deployment loop), tokens and the audit log.
//!
//! Owns the store traits ([`ReleaseStore`], [`DeploymentStore`], [`TokenStore`], [`AuditLog`],
//! together [`Store`]), their types and [`StoreError`], and their contract suite (`contract`,
//! behind the `contract-tests` feature) that every backend runs unchanged; [`private_fs`] creates
//! the private files and directories of any backend; `codec` (column encoding, cursors, pages)
//! and `sql` (SQL fragments generated from the domain rules, the rows every backend reads and
//! the update behind a status change; feature `sql`) are shared by the SQL backends, and
//! `seal` (feature `seal`) seals their sensitive columns. The implementations live in their own crates
//! (`alien-store-sqlite`), so this crate links no database (`sql` derives sqlx's `FromRow` only). It never decides policy (who may do
//! what) or HTTP shapes: the server does. Rules about statuses come from
//! `alien_core::DeploymentStatus::transition`, which a backend applies atomically.

use std::time::Duration;

use alien_core::{
    Deployment, DeploymentError, DeploymentEvent, DeploymentEventRecord, DeploymentGroup,
    DeploymentModel, DeploymentStatus, EnvironmentVariable, Id, IdKind, NewRelease, Platform,
    RawToken, Release, RolloutPolicy, TokenRecord, TokenType,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "sql")]
pub mod codec;
#[cfg(feature = "contract-tests")]
pub mod contract;
pub mod private_fs;
#[cfg(feature = "seal")]
pub mod seal;
#[cfg(feature = "sql")]
pub mod sql;
#[cfg(feature = "sql")]
pub mod token_cache;

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a store row is, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// A deployment.
    Deployment,
    /// A deployment group.
    DeploymentGroup,
    /// A release.
    Release,
    /// A token.
    Token,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Deployment => "deployment",
            Entity::DeploymentGroup => "deployment group",
            Entity::Release => "release",
            Entity::Token => "token",
        })
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named row does not exist.
    #[error("{entity} {id} not found")]
    NotFound {
        /// What was looked for.
        entity: Entity,
        /// The id looked for.
        id: String,
    },
    /// A deployment with this name exists in the group.
    #[error("a deployment named {name:?} already exists in group {group}")]
    NameConflict {
        /// The name.
        name: String,
        /// The group.
        group: Id,
    },
    /// A deployment group with this name exists.
    #[error("a deployment group named {name:?} already exists")]
    GroupNameConflict {
        /// The name.
        name: String,
    },
    /// The group is full.
    #[error("deployment group {group} already holds its maximum of {max} deployments")]
    MaxDeploymentsReached {
        /// The group.
        group: Id,
        /// Its limit.
        max: u32,
    },
    /// The event does not apply to the deployment's current status.
    #[error("{0}")]
    InvalidTransition(#[from] alien_core::status::TransitionError),
    /// A conditional update lost a race (the row changed meanwhile).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The deployment is being stepped by someone else.
    #[error("deployment {0} is locked by another worker")]
    Locked(Id),
    /// Revoking this token would leave no live admin token (every admin call would be refused
    /// until an offline reset).
    #[error("token {0} is the last live admin token; revoking it would lock every admin out")]
    LastAdminToken(Id),
    /// The configured encryption key does not open the sealed data.
    #[error("the encryption key does not open the existing data: {0}")]
    WrongKey(String),
    /// The database is locked, read-only or unreachable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A pagination cursor that this list did not hand out.
    #[error("invalid cursor: {0}")]
    BadCursor(String),
    /// Stored data cannot be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
}

/// The outcome of [`DeploymentStore::begin_update`].
#[derive(Debug, Clone, PartialEq)]
pub enum BeginUpdate {
    /// The deployment is `updating` now.
    Begun(Box<Deployment>),
    /// The group's rollout holds it back.
    Held {
        /// When it may start (`None`: when another deployment of the group finishes or is
        /// retried).
        until: Option<DateTime<Utc>>,
        /// Why, for logs.
        reason: String,
    },
}

/// A page request: at most `limit` items after the opaque `cursor`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageRequest {
    /// Items per page (the store clamps to 1..=MAX_PAGE; 0 means the default).
    pub limit: u32,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

/// Most digits of a cursor's position (milliseconds or a sequence number; 15 digits reach the
/// year 33658).
const CURSOR_DIGITS: usize = 15;

/// A position in a list, handed out as a page's `nextCursor`: `<millis>.<id>`, the creation time
/// and id of the page's last item (in the audit log, `<sequence>`). Transparent on purpose: any
/// well-formed position is a valid cursor (the next page starts after it), so the API document
/// states the format ([`cursor_pattern`]), and a made-up cursor only moves within what the
/// caller may list anyway.
pub fn encode_cursor(position: i64, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{position}.{id}"),
        None => position.to_string(),
    }
}

/// The position of `cursor` in a list of `kind` ids (the audit log: `None`), or
/// [`StoreError::BadCursor`].
pub fn decode_cursor(cursor: &str, kind: Option<IdKind>) -> StoreResult<(i64, Option<Id>)> {
    let bad = || {
        StoreError::BadCursor(format!(
            "{cursor:.64} is not a cursor of this list (expected {})",
            cursor_pattern(kind)
        ))
    };
    let (position, id) = match (kind, cursor.split_once('.')) {
        (Some(kind), Some((position, id))) => {
            (position, Some(Id::parse(kind, id).map_err(|_| bad())?))
        }
        (None, None) => (cursor, None),
        _ => return Err(bad()),
    };
    if position.is_empty()
        || position.len() > CURSOR_DIGITS
        || !position.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    Ok((position.parse().map_err(|_| bad())?, id))
}

/// The format of a cursor of a list of `kind` ids (the audit log: `None`), as a regular
/// expression for the API document.
pub fn cursor_pattern(kind: Option<IdKind>) -> String {
    match kind {
        Some(kind) => {
            format!("^[0-9]{{1,{CURSOR_DIGITS}}}\\.{}", kind.pattern().trim_start_matches('^'))
        }
        None => format!("^[0-9]{{1,{CURSOR_DIGITS}}}$"),
    }
}

/// Default page size.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page size.
pub const MAX_PAGE: u32 = 1000;

impl PageRequest {
    /// The limit clamped to 1..=MAX_PAGE (0 means DEFAULT_PAGE).
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        }
    }
}

pub use alien_core::api::Page;

/// A token to store: the raw value is hashed (and sealed too when `keep_sealed`).
#[derive(Debug, Clone)]
pub struct NewToken {
    /// `tok_...` id.
    pub id: Id,
    /// The raw token.
    pub raw: RawToken,
    /// Kind (must match the raw prefix).
    pub token_type: TokenType,
    /// Group of a group token, or of a deployment token's deployment.
    pub deployment_group_id: Option<Id>,
    /// Deployment of a deployment token.
    pub deployment_id: Option<Id>,
    /// Optional label.
    pub name: Option<String>,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Token minting: the one place a token of each kind is made (a fresh random value of the kind's
/// format, a fresh `tok_...` id), so its scope (group, deployment) is always set the same way.
impl NewToken {
    /// An admin token, named `admin`: `raw` when given (a configured seed), else a fresh one.
    pub fn admin(raw: Option<RawToken>) -> Result<NewToken, getrandom::Error> {
        let raw = match raw {
            Some(raw) => raw,
            None => RawToken::generate(TokenType::Admin)?,
        };
        Ok(Self::scoped(raw, TokenType::Admin, None, None, Some("admin".to_owned())))
    }

    /// A token of the deployment group `group`, with an optional label.
    pub fn for_group(group: &Id, name: Option<String>) -> Result<NewToken, getrandom::Error> {
        let raw = RawToken::generate(TokenType::DeploymentGroup)?;
        Ok(Self::scoped(raw, TokenType::DeploymentGroup, Some(group.clone()), None, name))
    }

    /// The token of the deployment `deployment` in `group` (stored with the deployment).
    pub fn for_deployment(deployment: &Id, group: &Id) -> Result<NewToken, getrandom::Error> {
        let raw = RawToken::generate(TokenType::Deployment)?;
        let (group, deployment) = (Some(group.clone()), Some(deployment.clone()));
        Ok(Self::scoped(raw, TokenType::Deployment, group, deployment, None))
    }

    fn scoped(
        raw: RawToken,
        token_type: TokenType,
        deployment_group_id: Option<Id>,
        deployment_id: Option<Id>,
        name: Option<String>,
    ) -> NewToken {
        NewToken {
            id: Id::new(alien_core::IdKind::Token),
            raw,
            token_type,
            deployment_group_id,
            deployment_id,
            name,
            expires_at: None,
        }
    }
}

/// A deployment to create. The store sets status `pending`, picks the desired release (the latest
/// release with a stack for the platform) and enforces name uniqueness and `maxDeployments`, all
/// in one transaction together with the deployment's token.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// `dep_...` id.
    pub id: Id,
    /// Name (validated by the caller).
    pub name: String,
    /// Platform.
    pub platform: Platform,
    /// Model (validated against the platform by the caller).
    pub deployment_model: DeploymentModel,
    /// Group (exists; checked by the store).
    pub deployment_group_id: Id,
    /// Variables; `secret` values are sealed.
    pub environment_variables: Vec<EnvironmentVariable>,
    /// Stored as given.
    pub stack_settings: Option<Value>,
    /// Region.
    pub region: Option<String>,
    /// Stored as given.
    pub target: Option<Value>,
    /// The deployment's token (its raw value is sealed for injection into containers).
    pub token: NewToken,
}

/// Filters of `GET /v1/deployments`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentFilter {
    /// Only this group.
    pub deployment_group_id: Option<Id>,
    /// Only this status.
    pub status: Option<DeploymentStatus>,
    /// Only this platform.
    pub platform: Option<Platform>,
    /// Only this exact name.
    pub name: Option<String>,
}

/// How long a deployment lease lasts without a renewal: after it, another owner may take the
/// deployment over (its holder is presumed dead).
pub const LEASE_STALE_AFTER: Duration = Duration::from_secs(5 * 60);

/// Prefix of the lease owners of external drivers' sessions; the deployment loop's owners never
/// start with it.
pub const SESSION_OWNER_PREFIX: &str = "session:";

/// Which due deployments [`DeploymentStore::acquire_due_matching`] may lease; `None` does not
/// restrict, an empty list matches nothing. The default takes every due deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcquireFilter {
    /// Only deployments of this group.
    pub deployment_group_id: Option<Id>,
    /// Only these deployments.
    pub deployment_ids: Option<Vec<Id>>,
    /// Only deployments on these platforms.
    pub platforms: Option<Vec<Platform>>,
}

impl AcquireFilter {
    /// Whether the filter can match nothing at all (an empty id or platform list).
    pub fn is_void(&self) -> bool {
        self.deployment_ids.as_ref().is_some_and(Vec::is_empty)
            || self.platforms.as_ref().is_some_and(Vec::is_empty)
    }
}

/// What an agent reports when nothing changed since its last sync (most syncs): its pull
/// deployment is `running` `release`, which is also the desired one, with no error, no retry
/// requested, on `platform`, with exactly `stack_state` (as JSON text, compared as written).
/// See [`DeploymentStore::record_steady_heartbeat`].
#[derive(Debug, Clone, PartialEq)]
pub struct SteadyReport {
    /// The platform it reports.
    pub platform: Platform,
    /// The release it runs.
    pub release: Id,
    /// Its platform state, serialized.
    pub stack_state: String,
}

/// Field changes applied together with a status transition. `None` leaves a field unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentPatch {
    /// New desired release.
    pub desired_release_id: Option<Id>,
    /// New current release.
    pub current_release_id: Option<Id>,
    /// New platform state.
    pub stack_state: Option<Value>,
    /// `Some(None)` clears the error; `Some(Some(e))` records one.
    pub error: Option<Option<DeploymentError>>,
    /// Sets or clears the retry request.
    pub retry_requested: Option<bool>,
    /// Records a heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Why (recorded in the deployment's events: `retry`, `redeploy`, `delete`, `step`...).
    pub reason: String,
    /// Extra detail recorded with the event.
    pub detail: Option<Value>,
    /// Apply only if the deployment is still in this status (`Conflict` otherwise): for callers
    /// that decided on an earlier read.
    pub expect_status: Option<DeploymentStatus>,
}

/// The result of creating a release.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedRelease {
    /// The stored release.
    pub release: Release,
    /// How many deployments got it as their desired release.
    pub marked: u64,
}

/// Everything a step on a deployment works with besides the deployment itself, read together
/// ([`DeploymentStore::deployment_inputs`]).
#[derive(Debug, Clone)]
pub struct DeploymentInputs {
    /// The release asked for (the deployment's desired release as the caller read it); `None`
    /// when none was asked for or it does not exist.
    pub release: Option<Release>,
    /// The deployment's variables, secret values unsealed (for injection only).
    pub variables: Vec<EnvironmentVariable>,
    /// The deployment's raw token, unsealed (for injection only).
    pub token: Option<RawToken>,
    /// The deployment's platform `target` as it was given, if any.
    pub target: Option<Value>,
}

/// One audited API call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Sequence number (increasing).
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Token that made the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<Id>,
    /// Kind of that token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<TokenType>,
    /// What was done, e.g. `POST /v1/releases`.
    pub action: String,
    /// The id acted on or created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// HTTP status of the outcome.
    pub status: u16,
    /// `success` or the error code.
    pub outcome: String,
}

/// An audit entry to append (the store assigns `id` and keeps `at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Token that made the call.
    pub token_id: Option<Id>,
    /// Kind of that token.
    pub token_type: Option<TokenType>,
    /// What was done.
    pub action: String,
    /// The id acted on or created.
    pub target_id: Option<String>,
    /// HTTP status.
    pub status: u16,
    /// `success` or the error code.
    pub outcome: String,
}

/// Immutable releases.
#[async_trait::async_trait]
pub trait ReleaseStore: Send + Sync {
    /// Stores a release and, in the same transaction, gives every deployment of a platform in it
    /// the release as desired release, moving its status as `DeploymentEvent::NewDesiredRelease`
    /// says (`running`, `update-failed`, `refresh-failed` -> `update-pending`, ...). Deployments
    /// in the delete path are left alone.
    async fn create_release(&self, release: NewRelease) -> StoreResult<CreatedRelease>;
    /// One release.
    async fn get_release(&self, id: &Id) -> StoreResult<Option<Release>>;
    /// The newest release, or the newest with a stack for `platform`.
    async fn latest_release(&self, platform: Option<Platform>) -> StoreResult<Option<Release>>;
    /// Releases, newest first.
    async fn list_releases(&self, page: &PageRequest) -> StoreResult<Page<Release>>;
    /// The newest release whose stack for `platform` has the id `stack_id`. The default reads
    /// the releases newest first until it finds one; a store may answer from an index.
    async fn latest_release_of_stack(
        &self,
        platform: Platform,
        stack_id: &str,
    ) -> StoreResult<Option<Release>> {
        let mut page = PageRequest { limit: MAX_PAGE, cursor: None };
        loop {
            let found = self.list_releases(&page).await?;
            let same_stack = |r: &Release| r.stack.get(&platform).is_some_and(|s| s.id == stack_id);
            if let Some(release) = found.items.into_iter().find(same_stack) {
                return Ok(Some(release));
            }
            match found.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => return Ok(None),
            }
        }
    }
}

/// Rule 8 of the Container API for a release about to be stored: for each of its stacks, what
/// it changes against the newest stored release of the same stack id on the same platform that a
/// deployment cannot take (`stateful`, the ports, the persistent mount path of a container).
/// Paths are `stack.<platform>.resources.<id>.config.<field>`; empty when the release may be
/// stored.
pub async fn update_incompatibilities(
    store: &dyn ReleaseStore,
    release: &NewRelease,
) -> StoreResult<Vec<alien_core::FieldViolation>> {
    let mut violations = Vec::new();
    for (platform, stack) in &release.stack {
        let Some(previous) = store.latest_release_of_stack(*platform, &stack.id).await? else {
            continue;
        };
        let Some(old) = previous.stack.get(platform) else { continue };
        for mut violation in alien_core::stack::check_update_compatible(old, stack) {
            violation.path = format!("stack.{platform}.{}", violation.path);
            violations.push(violation);
        }
    }
    Ok(violations)
}

/// Deployment groups and deployments, with leases for the deployment loop.
#[async_trait::async_trait]
pub trait DeploymentStore: Send + Sync {
    /// Creates a group; names are unique.
    async fn create_group(&self, name: &str, max_deployments: u32) -> StoreResult<DeploymentGroup>;
    /// One group, with its deployment count.
    async fn get_group(&self, id: &Id) -> StoreResult<Option<DeploymentGroup>>;
    /// Groups, oldest first.
    async fn list_groups(&self, page: &PageRequest) -> StoreResult<Page<DeploymentGroup>>;

    /// Creates a deployment and its token atomically (see [`NewDeployment`]).
    async fn create_deployment(&self, new: NewDeployment) -> StoreResult<Deployment>;
    /// One deployment.
    async fn get_deployment(&self, id: &Id) -> StoreResult<Option<Deployment>>;
    /// Deployments matching `filter`, oldest first.
    async fn list_deployments(
        &self,
        filter: &DeploymentFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Deployment>>;
    /// A deployment's variables with secret values unsealed (for injection only).
    async fn deployment_environment(&self, id: &Id) -> StoreResult<Vec<EnvironmentVariable>>;
    /// A deployment's raw token, unsealed (for injection only).
    async fn deployment_token(&self, id: &Id) -> StoreResult<Option<RawToken>>;
    /// A deployment's platform `target` as it was given (`{accountId, roleArn}`...), `None`
    /// without one; `NotFound` for an unknown deployment.
    async fn deployment_target(&self, id: &Id) -> StoreResult<Option<Value>>;
    /// What a step on the deployment works with, in one read (one transaction, one connection):
    /// `release` (its desired release as the caller read it), its variables and token unsealed,
    /// and its target; the same values [`ReleaseStore::get_release`],
    /// [`DeploymentStore::deployment_environment`], [`DeploymentStore::deployment_token`] and
    /// [`DeploymentStore::deployment_target`] give one by one. `NotFound` for an unknown
    /// deployment.
    async fn deployment_inputs(
        &self,
        id: &Id,
        release: Option<&Id>,
    ) -> StoreResult<DeploymentInputs>;
    /// Applies `event` to the deployment's current status (`DeploymentStatus::transition`) and
    /// `patch`, conditionally on the status not having changed meanwhile; records the change in
    /// the deployment's events.
    async fn transition(
        &self,
        id: &Id,
        event: DeploymentEvent,
        patch: DeploymentPatch,
    ) -> StoreResult<Deployment>;
    /// Applies `patch` (release, state, error, retry flag, heartbeat; not the desired release)
    /// to a deployment that is still in `status`, without a status change or an event: an
    /// agent's report of the status it already has (most syncs). `None` when the deployment is
    /// gone or no longer in `status` (use [`DeploymentStore::transition`] then).
    async fn record_report(
        &self,
        id: &Id,
        status: DeploymentStatus,
        patch: DeploymentPatch,
    ) -> StoreResult<Option<Deployment>>;
    /// Moves an `update-pending` deployment to `updating` (with `patch`) when its group's rollout
    /// policy lets it start at `now`; otherwise says why it is held and until when. A deployment
    /// with `retryRequested` (a deployment-targeted redeploy or retry) is never held.
    async fn begin_update(
        &self,
        id: &Id,
        now: DateTime<Utc>,
        patch: DeploymentPatch,
    ) -> StoreResult<BeginUpdate>;
    /// Sets (or with `None` removes) a group's rollout policy.
    async fn set_group_rollout(
        &self,
        group: &Id,
        rollout: Option<RolloutPolicy>,
    ) -> StoreResult<DeploymentGroup>;
    /// Removes the deployment, its variables and events, and revokes its tokens. `false` if absent.
    async fn delete_deployment(&self, id: &Id) -> StoreResult<bool>;
    /// Records an event that changes no status (an autoscaling step, say) in the deployment's
    /// events, `from` and `to` its current status; `false` when the deployment is gone.
    async fn record_event(&self, id: &Id, reason: &str, detail: Value) -> StoreResult<bool>;
    /// The deployment's recent status changes (and [`DeploymentStore::record_event`]'s events),
    /// newest first.
    async fn deployment_events(
        &self,
        id: &Id,
        limit: u32,
    ) -> StoreResult<Vec<DeploymentEventRecord>>;

    /// Leases up to `limit` push-mode deployments that have work to do (a status the loop acts
    /// on, `nextStepAfter` passed) and are not leased, or whose lease is older than `stale_after`.
    /// Acquisition is a conditional update: two callers never get the same deployment. `owner`
    /// names the worker; owners starting with [`SESSION_OWNER_PREFIX`] are reserved for the
    /// sessions of external drivers (the server's lease API), so no replica takes their names.
    async fn acquire_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        stale_after: Duration,
    ) -> StoreResult<Vec<Deployment>> {
        self.acquire_due_matching(owner, now, limit, stale_after, &AcquireFilter::default()).await
    }
    /// [`DeploymentStore::acquire_due`], restricted to the due deployments `filter` selects
    /// (external drivers acquire their group's, their platforms', or named deployments).
    async fn acquire_due_matching(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: u32,
        stale_after: Duration,
        filter: &AcquireFilter,
    ) -> StoreResult<Vec<Deployment>>;
    /// Ends every lease `owner` holds; how many. A replica restarted under the same owner name
    /// calls it first: its leases died with the process, and need not wait to go stale.
    async fn release_leases_of(&self, owner: &str) -> StoreResult<u64>;
    /// Extends `owner`'s lease; `false` if it no longer holds it.
    async fn renew_lease(&self, id: &Id, owner: &str, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Pull deployments whose agent has not synced since `silent_since` (never synced: created
    /// before it), in a status an agent drives (not stale, not being deleted), at most `limit`.
    async fn silent_pull_deployments(
        &self,
        silent_since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Id>>;
    /// Records that the deployment's agent synced at `at` (its heartbeat) without a status
    /// change; `false` if the deployment does not exist.
    async fn record_heartbeat(&self, id: &Id, at: DateTime<Utc>) -> StoreResult<bool>;
    /// The heartbeat of an agent whose report changes nothing: records `at` as the deployment's
    /// last heartbeat only if the deployment is a pull deployment exactly in the state `report`
    /// describes, in one conditional write; `false` (and nothing written) when it is not, or is
    /// gone: then the report goes the full way ([`DeploymentStore::record_report`],
    /// [`DeploymentStore::transition`]). The check is exact for this process's writes. The
    /// heartbeat time may be written after it returns, within a second (a store may batch
    /// heartbeat times; a crash loses at most that second of them, never a status or a state):
    /// until then [`DeploymentStore::get_deployment`] shows it and
    /// [`DeploymentStore::silent_pull_deployments`] counts it.
    async fn record_steady_heartbeat(
        &self,
        id: &Id,
        report: &SteadyReport,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records the platform state of a step that made progress without finishing (the status
    /// does not change), only while `owner` holds the lease; `false` if it does not.
    async fn save_progress(&self, id: &Id, owner: &str, stack_state: &Value) -> StoreResult<bool>;
    /// Ends `owner`'s lease, setting when the deployment is next due; `false` if not held.
    async fn release_lease(
        &self,
        id: &Id,
        owner: &str,
        next_step_after: Option<DateTime<Utc>>,
    ) -> StoreResult<bool>;
}

/// API tokens.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a token (hash and prefix only; the raw value is never stored in clear).
    async fn create_token(&self, token: NewToken) -> StoreResult<TokenRecord>;
    /// The live (not revoked, not expired) token with this SHA-256 hex hash.
    async fn find_token(&self, hash: &str, now: DateTime<Utc>) -> StoreResult<Option<TokenRecord>>;
    /// One token by id (revoked ones excluded).
    async fn get_token(&self, id: &Id) -> StoreResult<Option<TokenRecord>>;
    /// Every live token.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
    /// Revokes a token; `false` if unknown or already revoked. The last live admin token is
    /// never revoked ([`StoreError::LastAdminToken`]): the check and the write are one atomic
    /// step, so two concurrent revocations cannot both pass it.
    async fn revoke_token(&self, id: &Id) -> StoreResult<bool>;
    /// Revokes every admin token; returns how many.
    async fn revoke_admin_tokens(&self) -> StoreResult<u64>;
    /// Live tokens of a kind.
    async fn count_tokens(&self, kind: TokenType) -> StoreResult<u64>;
    /// Records when tokens were last used (batched by the caller).
    async fn record_token_use(&self, uses: &[(Id, DateTime<Utc>)]) -> StoreResult<()>;
}

/// The audit log of mutating API calls.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends one entry.
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<()>;
    /// Entries, newest first.
    async fn list_audit(&self, page: &PageRequest) -> StoreResult<Page<AuditEntry>>;
}

/// Everything the manager stores.
#[async_trait::async_trait]
pub trait Store: ReleaseStore + DeploymentStore + TokenStore + AuditLog {
    /// Answers when the store can serve reads and writes (for `/ready`).
    async fn ping(&self) -> StoreResult<()>;
}
