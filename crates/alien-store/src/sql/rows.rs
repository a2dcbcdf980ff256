//! The rows every SQL backend reads, with their column lists and their decoding into store types
//! (through [`codec`](crate::codec)): the same tables and column types on every engine, so one
//! `#[derive(sqlx::FromRow)]` serves them all. Column lists are macros (for `concat!` with each
//! backend's placeholders); the statements themselves stay in the backends.

use std::collections::BTreeMap;

use alien_core::{
    Deployment, DeploymentError, DeploymentEventRecord, DeploymentGroup, GitMetadata, Id, Platform,
    Release, Stack, TokenRecord,
};

#[cfg(feature = "seal")]
use crate::DeploymentInputs;
use crate::codec::{
    count, encode_cursor, from_json, id, opt_from_json, opt_id, opt_time, parse, time, token_type,
};
#[cfg(feature = "seal")]
use crate::seal::{Sealer, open_token, open_variables};
use crate::{AuditEntry, NewToken, StoreError, StoreResult};

/// The columns of [`DeploymentRow`], in `deployments`.
#[macro_export]
macro_rules! deployment_columns {
    () => {
        "id, name, platform, deployment_model, deployment_group_id, status, current_release_id, \
         desired_release_id, stack_state, error, retry_requested, region, last_heartbeat_at, \
         next_step_after, created_at, updated_at"
    };
}
pub use crate::deployment_columns;

/// The columns of [`TokenRow`], in `tokens`.
#[macro_export]
macro_rules! token_columns {
    () => {
        "id, token_type, key_hash, key_prefix, deployment_group_id, deployment_id, name, \
         created_at, expires_at, last_used_at"
    };
}
pub use crate::token_columns;

/// The columns of [`ReleaseRow`], in `releases`.
#[macro_export]
macro_rules! release_columns {
    () => {
        "id, stack, git_metadata, version, description, created_at"
    };
}
pub use crate::release_columns;

/// The `SELECT` of [`GroupRow`]: `deployment_groups g` with its deployment count.
#[macro_export]
macro_rules! group_select {
    () => {
        "SELECT g.id, g.name, g.max_deployments, g.rollout, g.created_at, \
         (SELECT COUNT(*) FROM deployments d WHERE d.deployment_group_id = g.id) AS deployment_count \
         FROM deployment_groups g"
    };
}
pub use crate::group_select;

/// The columns of [`EventRow`], in `deployment_events`.
#[macro_export]
macro_rules! event_columns {
    () => {
        "from_status, to_status, reason, detail, at"
    };
}
pub use crate::event_columns;

/// The columns of [`AuditRow`], in `audit_log`.
#[macro_export]
macro_rules! audit_columns {
    () => {
        "id, at, token_id, token_type, action, target_id, status, outcome"
    };
}
pub use crate::audit_columns;

/// A row of `deployments` as listed by `deployment_columns!`.
#[derive(sqlx::FromRow)]
pub struct DeploymentRow {
    id: String,
    name: String,
    platform: String,
    deployment_model: String,
    deployment_group_id: String,
    status: String,
    current_release_id: Option<String>,
    desired_release_id: Option<String>,
    stack_state: Option<String>,
    error: Option<String>,
    retry_requested: bool,
    region: Option<String>,
    last_heartbeat_at: Option<i64>,
    /// With `updated_at` and `id`, the order leases are handed out in.
    next_step_after: i64,
    created_at: i64,
    updated_at: i64,
}

impl DeploymentRow {
    /// The cursor of the deployments list (`d`) after this row.
    pub fn cursor(&self) -> String {
        encode_cursor("d", self.created_at, &self.id)
    }

    /// The deployments of rows just leased, in the order leases are handed out in.
    pub fn into_leased(mut rows: Vec<Self>) -> StoreResult<Vec<Deployment>> {
        rows.sort_by(|a, b| {
            (a.next_step_after, a.updated_at, &a.id).cmp(&(b.next_step_after, b.updated_at, &b.id))
        });
        rows.into_iter().map(DeploymentRow::into_deployment).collect()
    }

    /// The deployment, its columns decoded.
    pub fn into_deployment(self) -> StoreResult<Deployment> {
        Ok(Deployment {
            id: id("deployments.id", &self.id)?,
            name: self.name,
            platform: parse("deployments.platform", &self.platform)?,
            status: parse("deployments.status", &self.status)?,
            deployment_model: parse("deployments.deployment_model", &self.deployment_model)?,
            deployment_group_id: id("deployments.deployment_group_id", &self.deployment_group_id)?,
            current_release_id: opt_id(
                "deployments.current_release_id",
                self.current_release_id.as_deref(),
            )?,
            desired_release_id: opt_id(
                "deployments.desired_release_id",
                self.desired_release_id.as_deref(),
            )?,
            stack_state: opt_from_json("deployments.stack_state", self.stack_state.as_deref())?,
            error: opt_from_json::<DeploymentError>("deployments.error", self.error.as_deref())?,
            retry_requested: self.retry_requested,
            region: self.region,
            last_heartbeat_at: opt_time("deployments.last_heartbeat_at", self.last_heartbeat_at)?,
            created_at: time("deployments.created_at", self.created_at)?,
            updated_at: time("deployments.updated_at", self.updated_at)?,
        })
    }
}

/// A row of `tokens` as listed by `token_columns!`.
#[derive(sqlx::FromRow)]
pub struct TokenRow {
    id: String,
    token_type: String,
    key_hash: String,
    key_prefix: String,
    deployment_group_id: Option<String>,
    deployment_id: Option<String>,
    name: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl TokenRow {
    /// The token's record, its columns decoded.
    pub fn into_record(self) -> StoreResult<TokenRecord> {
        Ok(TokenRecord {
            id: id("tokens.id", &self.id)?,
            token_type: token_type(&self.token_type)?,
            key_prefix: self.key_prefix,
            key_hash: self.key_hash,
            deployment_group_id: opt_id(
                "tokens.deployment_group_id",
                self.deployment_group_id.as_deref(),
            )?,
            deployment_id: opt_id("tokens.deployment_id", self.deployment_id.as_deref())?,
            name: self.name,
            created_at: time("tokens.created_at", self.created_at)?,
            expires_at: opt_time("tokens.expires_at", self.expires_at)?,
            last_used_at: opt_time("tokens.last_used_at", self.last_used_at)?,
        })
    }
}

/// The record of `token` as stored at `now` (never used yet).
pub fn new_token_record(token: &NewToken, now: i64) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: token.id.clone(),
        token_type: token.token_type,
        key_prefix: token.raw.key_prefix(),
        key_hash: token.raw.hash(),
        deployment_group_id: token.deployment_group_id.clone(),
        deployment_id: token.deployment_id.clone(),
        name: token.name.clone(),
        created_at: time("tokens.created_at", now)?,
        expires_at: token
            .expires_at
            .map(|t| time("tokens.expires_at", t.timestamp_millis()))
            .transpose()?,
        last_used_at: None,
    })
}

/// The group just created as `group` named `name` at `created_at` (empty, without a rollout).
pub fn new_group(
    group: Id,
    name: &str,
    max_deployments: u32,
    created_at: i64,
) -> StoreResult<DeploymentGroup> {
    Ok(DeploymentGroup {
        id: group,
        name: name.to_owned(),
        max_deployments,
        deployment_count: 0,
        rollout: None,
        created_at: time("deployment_groups.created_at", created_at)?,
    })
}

/// A row of `releases` as listed by `release_columns!`.
#[derive(sqlx::FromRow)]
pub struct ReleaseRow {
    id: String,
    stack: String,
    git_metadata: Option<String>,
    version: Option<String>,
    description: Option<String>,
    created_at: i64,
}

impl ReleaseRow {
    /// The cursor of the releases list (`r`) after this row.
    pub fn cursor(&self) -> String {
        encode_cursor("r", self.created_at, &self.id)
    }

    /// The release, its columns decoded.
    pub fn into_release(self) -> StoreResult<Release> {
        Ok(Release {
            id: id("releases.id", &self.id)?,
            stack: from_json::<BTreeMap<Platform, Stack>>("releases.stack", &self.stack)?,
            git_metadata: opt_from_json::<GitMetadata>(
                "releases.git_metadata",
                self.git_metadata.as_deref(),
            )?,
            version: self.version,
            description: self.description,
            created_at: time("releases.created_at", self.created_at)?,
        })
    }
}

/// A deployment group as selected by `group_select!`.
#[derive(sqlx::FromRow)]
pub struct GroupRow {
    id: String,
    name: String,
    max_deployments: i64,
    deployment_count: i64,
    rollout: Option<String>,
    created_at: i64,
}

impl GroupRow {
    /// The cursor of the groups list (`g`) after this row.
    pub fn cursor(&self) -> String {
        encode_cursor("g", self.created_at, &self.id)
    }

    /// The group, its columns decoded.
    pub fn into_group(self) -> StoreResult<DeploymentGroup> {
        Ok(DeploymentGroup {
            id: id("deployment_groups.id", &self.id)?,
            name: self.name,
            max_deployments: count("deployment_groups.max_deployments", self.max_deployments)?,
            deployment_count: count("deployment count", self.deployment_count)?,
            rollout: match &self.rollout {
                Some(json) => Some(from_json("deployment_groups.rollout", json)?),
                None => None,
            },
            created_at: time("deployment_groups.created_at", self.created_at)?,
        })
    }
}

/// A row of `deployment_events` as listed by `event_columns!`.
#[derive(sqlx::FromRow)]
pub struct EventRow {
    from_status: Option<String>,
    to_status: String,
    reason: String,
    detail: Option<String>,
    at: i64,
}

impl EventRow {
    /// The event, its columns decoded.
    pub fn into_record(self) -> StoreResult<DeploymentEventRecord> {
        Ok(DeploymentEventRecord {
            from: self
                .from_status
                .as_deref()
                .map(|s| parse("deployment_events.from_status", s))
                .transpose()?,
            to: parse("deployment_events.to_status", &self.to_status)?,
            reason: self.reason,
            detail: opt_from_json("deployment_events.detail", self.detail.as_deref())?,
            at: time("deployment_events.at", self.at)?,
        })
    }
}

/// A row of `audit_log` as listed by `audit_columns!`; `S` is how the engine reads `status`
/// (SQLite's `INTEGER` as `i64`, PostgreSQL's as `i32`).
#[derive(sqlx::FromRow)]
pub struct AuditRow<S = i64> {
    id: i64,
    at: i64,
    token_id: Option<String>,
    token_type: Option<String>,
    action: String,
    target_id: Option<String>,
    status: S,
    outcome: String,
}

impl<S: Into<i64>> AuditRow<S> {
    /// The cursor of the audit log (`a`) after this row.
    pub fn cursor(&self) -> String {
        encode_cursor("a", self.id, "")
    }

    /// The entry, its columns decoded.
    pub fn into_entry(self) -> StoreResult<AuditEntry> {
        let status: i64 = self.status.into();
        Ok(AuditEntry {
            id: self.id,
            at: time("audit_log.at", self.at)?,
            token_id: opt_id("audit_log.token_id", self.token_id.as_deref())?,
            token_type: self.token_type.as_deref().map(token_type).transpose()?,
            action: self.action,
            target_id: self.target_id,
            status: u16::try_from(status).map_err(|_| {
                StoreError::Corrupt(format!("audit_log.status: {status} out of range"))
            })?,
            outcome: self.outcome,
        })
    }
}

/// What a deployment step works with, from the deployment's rows: the release, the variables
/// and the sealed token unsealed, and the target.
#[cfg(feature = "seal")]
pub fn deployment_inputs(
    sealer: &Sealer,
    dep: &str,
    release: Option<ReleaseRow>,
    variables: Vec<(String, String, String)>,
    token: Option<String>,
    target: Option<String>,
) -> StoreResult<DeploymentInputs> {
    Ok(DeploymentInputs {
        release: release.map(ReleaseRow::into_release).transpose()?,
        variables: open_variables(sealer, dep, variables)?,
        token: open_token(sealer, dep, token)?,
        target: opt_from_json("deployments.target", target.as_deref())?,
    })
}

/// The latest release of all, as [`ReleaseRow`].
pub const LATEST_RELEASE: &str = concat!(
    "SELECT ",
    release_columns!(),
    " FROM releases ORDER BY created_at DESC, id DESC LIMIT 1"
);
