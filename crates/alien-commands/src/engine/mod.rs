//! The command engine: create, upload-complete, lease (with long poll), release, respond, status,
//! and the reaper that expires deadlines and redelivers leases that ran out.
//!
//! One module per operation: `create` (creation and parameters), `lease`, `respond` and
//! `reaper`; this one holds the engine, its keys and the versioned metadata update they share.
//!
//! Everything lives in the [`Kv`] (so the engine scales out with a shared KV) under the keys of
//! `spec/commands.md`: `cmd:{id}` (metadata, updated only by versioned writes, so two replicas
//! never both move a command), `cmd:{id}:params`, `idem:{hash}`,
//! `target:{dep}:{rid}:pending:{nanos}:{id}` (the queue, oldest first), `deadline:{nanos}:{id}`
//! and `leased:{nanos}:{id}` (lease expiries). Lease ids are `lease_{id}.{random}`, checked
//! against the metadata, so no key maps them. Large payloads go to the
//! [`PayloadStore`] under `arc/commands/{id}/params|response`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alien_core::command::wire::{
    BodySpec, CommandResponse, CommandStatusResponse, CommandTarget, CreateCommandRequest,
    CreateCommandResponse, Envelope, Lease, LeaseRequest, LeaseResponse, NextStep, PROTOCOL,
    ResponseHandling, StorageUpload,
};
use alien_core::command::{CommandEvent, CommandState};
use alien_core::signal::{Signal, Signals};
use alien_core::{Id, IdKind};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::sync::Notify;

use crate::kv::{BatchOutcome, Kv, KvError, KvWrite, PutCondition};
use crate::payload::{PayloadError, PayloadStore};
use crate::signing::{UrlSigner, unix};

mod create;
mod lease;
mod quota;
mod reaper;
mod respond;

use quota::{Charged, done_entry};
pub use quota::{DEFAULT_DEPLOYMENT_QUOTA_BYTES, DEFAULT_RETENTION};

/// Largest inline parameters (decoded bytes).
pub const MAX_INLINE_PARAMS: u64 = 150_000;
/// Largest inline response a receiver may submit (decoded bytes); larger ones go to storage.
pub const MAX_INLINE_RESPONSE: u64 = 12 * 1024;
/// Inline parameters up to this many base64 characters stay in the KV; larger ones are moved to
/// the payload store (KV values are at most 24 KiB).
const KV_INLINE_LIMIT: usize = 16 * 1024;
/// Inline parameters up to this many base64 characters stay inside the command's metadata.
const META_INLINE_LIMIT: usize = 2 * 1024;
/// How long idempotency keys are remembered.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Validity of upload URLs for parameters.
const UPLOAD_URL_TTL: Duration = Duration::from_secs(60 * 60);
/// Validity of response URLs.
const RESPONSE_URL_TTL: Duration = Duration::from_secs(2 * 60 * 60);
/// Longest long poll.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a long poll also looks at the KV (other replicas may have enqueued).
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Retries of a versioned metadata update that lost a race.
const CAS_RETRIES: usize = 16;

/// What a lease request asks for, checked ([`CommandEngine::check_lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseBounds {
    /// Most commands to lease (1..=100).
    pub max: u32,
    /// Lease length in seconds (1..=3600).
    pub lease_seconds: u64,
    /// How long to wait for a command (at most [`MAX_WAIT`]).
    pub wait: Duration,
}

/// Why a command call failed; the server maps each to its API error.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad input, naming the field.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Inline parameters above the limit.
    #[error("inline params of {0} bytes exceed {MAX_INLINE_PARAMS}; upload them (mode storage)")]
    TooLarge(u64),
    /// A payload (uploaded params or response) above what it may hold: its declared size, or
    /// the manager's `[commands] max-payload-bytes`.
    #[error("{what} exceeds its limit of {max} bytes")]
    PayloadTooLarge {
        /// Which payload (and its declared size, when that is what is too large).
        what: String,
        /// The limit.
        max: u64,
    },
    /// Storing the payload would take the deployment's stored payload bytes past
    /// `[commands] deployment-quota-bytes`.
    #[error(
        "deployment {deployment} stores {used} bytes of command payloads; {adding} more would \
         exceed its quota of {quota} bytes"
    )]
    QuotaExceeded {
        /// The deployment.
        deployment: String,
        /// What it stores now.
        used: u64,
        /// What the refused payload would add.
        adding: u64,
        /// The quota.
        quota: u64,
    },
    /// The command does not exist.
    #[error("command {0} not found")]
    NotFound(String),
    /// The deployment does not exist.
    #[error("deployment {0} not found")]
    DeploymentNotFound(String),
    /// The request conflicts with the command's or deployment's state.
    #[error("{0}")]
    Conflict(String),
    /// A lease id that is unknown or no longer held.
    #[error("lease {0} is unknown or expired")]
    LeaseNotFound(String),
    /// The KV or payload store failed.
    #[error("commands backend unavailable: {0}")]
    Unavailable(String),
}

impl From<KvError> for CommandError {
    fn from(e: KvError) -> Self {
        CommandError::Unavailable(e.to_string())
    }
}

impl From<PayloadError> for CommandError {
    fn from(e: PayloadError) -> Self {
        CommandError::Unavailable(e.to_string())
    }
}

/// Where a command's parameters are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "at")]
enum ParamsAt {
    /// Small parameters ride in the metadata itself (one read serves a lease).
    Meta {
        /// The base64.
        base64: String,
    },
    /// `cmd:{id}:params` holds the base64.
    Kv,
    /// `arc/commands/{id}/params` holds the bytes.
    Payload { size: u64 },
}

/// Where a stored response's body is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredResponse {
    response: CommandResponse,
}

/// The command's metadata at `cmd:{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    id: String,
    deployment_id: String,
    target: CommandTarget,
    command: String,
    state: CommandState,
    attempt: u32,
    deadline_ns: Option<u128>,
    params: ParamsAt,
    response: Option<StoredResponse>,
    created_ns: u128,
    completed_ns: Option<u128>,
    lease_id: Option<String>,
    lease_expires_ns: Option<u128>,
    /// Payload bytes charged to the deployment's quota (absent in commands of older versions).
    #[serde(default)]
    charged: Charged,
}

/// Counts of what the engine did, for `/metrics`.
fn count(event: &'static str) {
    metrics::counter!("commands_total", "event" => event).increment(1);
}

/// Time from creation to the end, by final state, for `/metrics`.
fn observe_done(meta: &Meta) {
    if let Some(done) = meta.completed_ns {
        let secs = done.saturating_sub(meta.created_ns) as f64 / 1e9;
        metrics::histogram!("command_duration_seconds", "state" => meta.state.as_str())
            .record(secs);
    }
}

/// The engine.
pub struct CommandEngine {
    kv: Arc<dyn Kv>,
    payloads: Arc<dyn PayloadStore>,
    max_payload_bytes: u64,
    quota_bytes: u64,
    retention: Duration,
    signer: UrlSigner,
    base_url: String,
    wakers: Arc<Wakers>,
    signals: Option<Arc<dyn Signals>>,
    claiming: Mutex<HashSet<String>>,
    recent: RecentMeta,
}

/// The long polls' wake-ups, one per target (`deployment:resource`).
#[derive(Default)]
struct Wakers(Mutex<HashMap<String, Arc<Notify>>>);

impl Wakers {
    fn get(&self, deployment: &str, resource: &str) -> Arc<Notify> {
        let mut wakers = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        wakers.entry(format!("{deployment}:{resource}")).or_default().clone()
    }
}

/// Commands this replica wrote last, with the version written: the first guess of a versioned
/// update, saving a read per step. Bounded; ended commands are forgotten.
#[derive(Default)]
struct RecentMeta(Mutex<HashMap<String, (Meta, u64)>>);

/// Commands [`RecentMeta`] holds at most (it starts over when full).
const RECENT_META: usize = 16_384;

impl RecentMeta {
    fn get(&self, id: &str) -> Option<(Meta, u64)> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned()
    }

    fn remember(&self, meta: &Meta, version: Option<u64>) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match version {
            Some(version) if !meta.state.is_terminal() => {
                if map.len() >= RECENT_META {
                    map.clear();
                }
                map.insert(meta.id.clone(), (meta.clone(), version));
            }
            _ => {
                map.remove(&meta.id);
            }
        }
    }
}

/// A command id this replica is trying to lease; dropped, it is free again.
struct Claim<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl<'a> Claim<'a> {
    fn take(set: &'a Mutex<HashSet<String>>, id: &str) -> Option<Claim<'a>> {
        let mut held = set.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.insert(id.to_owned()).then(|| Claim { set, id: id.to_owned() })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
    }
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn rfc3339(ns: u128) -> String {
    let secs = i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX);
    let nanos = u32::try_from(ns % 1_000_000_000).unwrap_or(0);
    chrono::DateTime::from_timestamp(secs, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn meta_key(id: &str) -> String {
    format!("cmd:{id}")
}

fn pending_prefix(deployment: &str, resource: &str) -> String {
    format!("target:{deployment}:{resource}:pending:")
}

/// Largest uploaded payload (params or response) by default: `[commands] max-payload-bytes`.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 256 * 1024 * 1024;

/// What an upload to a payload key may hold at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimit {
    /// Bytes.
    pub max: u64,
    /// What sets `max`.
    pub by: LimitBy,
}

/// What sets an [`UploadLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitBy {
    /// The size the command declared for its params.
    Declared,
    /// The manager's `[commands] max-payload-bytes`.
    MaxPayload,
    /// The room left in the deployment's quota.
    Quota,
}

/// The command and the part (`params`, `response`) a payload key belongs to.
fn payload_of(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix("arc/commands/")?.split_once('/')
}

fn params_payload(id: &str) -> String {
    format!("arc/commands/{id}/params")
}

fn response_payload(id: &str) -> String {
    format!("arc/commands/{id}/response")
}

fn encode(meta: &Meta) -> Result<Vec<u8>, CommandError> {
    serde_json::to_vec(meta).map_err(|e| CommandError::Unavailable(e.to_string()))
}

/// The write that puts a command at the end of its target's queue.
fn queue_entry(meta: &Meta) -> KvWrite {
    KvWrite::put(
        format!(
            "{}{:030}:{}",
            pending_prefix(&meta.deployment_id, &meta.target.resource_id),
            now_ns(),
            meta.id
        ),
        Vec::new(),
    )
}

/// The write that forgets the lease `meta` holds (its `leased:` expiry entry).
fn lease_cleanup(meta: &Meta) -> Vec<KvWrite> {
    meta.lease_expires_ns
        .map(|expires| KvWrite::delete(format!("leased:{expires:030}:{}", meta.id)))
        .into_iter()
        .collect()
}

impl CommandEngine {
    /// An engine over the given seams. `base_url` is the manager's public URL (for response URLs).
    pub fn new(
        kv: Arc<dyn Kv>,
        payloads: Arc<dyn PayloadStore>,
        signer: UrlSigner,
        base_url: String,
    ) -> Self {
        Self {
            kv,
            payloads,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            quota_bytes: DEFAULT_DEPLOYMENT_QUOTA_BYTES,
            retention: DEFAULT_RETENTION,
            signer,
            base_url: base_url.trim_end_matches('/').to_owned(),
            wakers: Arc::default(),
            signals: None,
            claiming: Mutex::new(HashSet::new()),
            recent: RecentMeta::default(),
        }
    }

    /// Tells the other replicas through `signals` when a command is queued, and wakes this
    /// replica's receivers when they tell it: a receiver long-polling here gets a command
    /// created elsewhere at once, not at its next look at the queue.
    #[must_use]
    pub fn with_signals(mut self, signals: Arc<dyn Signals>) -> Self {
        let wakers = self.wakers.clone();
        signals.subscribe(Arc::new(move |signal| {
            if let Signal::CommandQueued { deployment, resource } = signal {
                wakers.get(deployment, resource).notify_one();
            }
        }));
        self.signals = Some(signals);
        self
    }

    /// Uploaded payloads (params, responses) may hold at most `max` bytes
    /// ([`DEFAULT_MAX_PAYLOAD_BYTES`] unless set).
    #[must_use]
    pub fn with_max_payload_bytes(mut self, max: u64) -> Self {
        self.max_payload_bytes = max;
        self
    }

    /// The most an upload to payload `key` may hold, and the command it belongs to: a
    /// command's params, the size it declared while it waits for them (nothing otherwise:
    /// `Conflict`); a response, while the command has not ended, the manager's limit or the room
    /// left in the deployment's quota, whichever is less. A key of no command is `NotFound`.
    pub async fn upload_limit(&self, key: &str) -> Result<UploadLimit, CommandError> {
        let unknown = || CommandError::NotFound(key.to_owned());
        let (id, what) = payload_of(key).ok_or_else(unknown)?;
        let (meta, _) = self.read_meta(id).await?.ok_or_else(unknown)?;
        match what {
            "params" => match (meta.state, meta.params) {
                (CommandState::PendingUpload, ParamsAt::Payload { size }) => {
                    Ok(UploadLimit { max: size, by: LimitBy::Declared })
                }
                (state, _) => Err(CommandError::Conflict(format!(
                    "command {id} is {state}: its params are not being uploaded"
                ))),
            },
            "response" if meta.state.is_terminal() => Err(CommandError::Conflict(format!(
                "command {id} is {}: its response can no longer change",
                meta.state
            ))),
            "response" => {
                let room = self.room(&meta.deployment_id, meta.charged.response).await?;
                Ok(if room < self.max_payload_bytes {
                    UploadLimit { max: room, by: LimitBy::Quota }
                } else {
                    UploadLimit { max: self.max_payload_bytes, by: LimitBy::MaxPayload }
                })
            }
            _ => Err(unknown()),
        }
    }

    /// Writes `body` to payload `key` (`what` names it in errors), stopping at the first byte past
    /// `limit` with [`CommandError::PayloadTooLarge`]; nothing of a stopped upload is kept.
    pub(super) async fn write_limited(
        &self,
        key: &str,
        what: &str,
        body: crate::payload::PayloadStream,
        limit: u64,
    ) -> Result<u64, CommandError> {
        use futures_util::StreamExt as _;
        let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = over.clone();
        let mut seen = 0u64;
        let limited = body
            .map(move |chunk| {
                let chunk = chunk?;
                seen = seen.saturating_add(chunk.len() as u64);
                if seen > limit {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(std::io::Error::other(format!("more than {limit} bytes")));
                }
                Ok(chunk)
            })
            .boxed();
        match self.payloads.write(key, limited).await {
            Ok(size) => Ok(size),
            Err(_) if over.load(std::sync::atomic::Ordering::Relaxed) => {
                Err(CommandError::PayloadTooLarge { what: what.to_owned(), max: limit })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Stores an upload to payload `key` (a manager-signed URL's PUT) within its
    /// [`Self::upload_limit`], charging a response to the deployment's quota; its size.
    pub async fn upload(
        &self,
        key: &str,
        body: crate::payload::PayloadStream,
    ) -> Result<u64, CommandError> {
        let limit = self.upload_limit(key).await?;
        let (id, part) = payload_of(key).ok_or_else(|| CommandError::NotFound(key.to_owned()))?;
        let what = match limit.by {
            LimitBy::Declared => "the params upload (its declared size)",
            LimitBy::MaxPayload | LimitBy::Quota => "the upload",
        };
        let size = match self.write_limited(key, what, body, limit.max).await {
            Err(CommandError::PayloadTooLarge { .. }) if limit.by == LimitBy::Quota => {
                let deployment = self.deployment_of(id).await?.unwrap_or_default();
                let used = self.usage(&deployment).await?.bytes;
                return Err(self.over_quota(&deployment, used, limit.max + 1));
            }
            other => other?,
        };
        if part == "response" {
            self.charge_response(id, size).await?;
        }
        Ok(size)
    }

    fn waker(&self, deployment: &str, resource: &str) -> Arc<Notify> {
        self.wakers.get(deployment, resource)
    }

    async fn read_meta(&self, id: &str) -> Result<Option<(Meta, u64)>, CommandError> {
        if Id::parse(IdKind::Command, id).is_err() {
            return Ok(None);
        }
        match self.kv.get(&meta_key(id)).await? {
            Some(entry) => {
                let meta = serde_json::from_slice(&entry.value)
                    .map_err(|e| CommandError::Unavailable(format!("corrupt command {id}: {e}")))?;
                Ok(Some((meta, entry.version)))
            }
            None => Ok(None),
        }
    }

    /// Applies `change` to the command's metadata with a versioned write, retrying on races.
    /// `change` returns `None` to leave the command alone, or the new metadata with the
    /// unconditional writes that go with it (queue entries, lease keys): they are written in the
    /// same atomic batch, so a crash never leaves a command moved without them.
    async fn update<F>(&self, id: &str, mut change: F) -> Result<Option<Meta>, CommandError>
    where
        F: FnMut(&Meta) -> Option<(Meta, Vec<KvWrite>)> + Send,
    {
        // The metadata this replica wrote last is the first guess; a stale guess costs one
        // failed versioned write, then the KV is read.
        let mut guess = self.recent.get(id);
        for _ in 0..CAS_RETRIES {
            let guessed = guess.is_some();
            let (meta, version) = match guess.take() {
                Some(known) => known,
                None => self
                    .read_meta(id)
                    .await?
                    .ok_or_else(|| CommandError::NotFound(id.to_owned()))?,
            };
            let Some((next, extra)) = change(&meta) else {
                if guessed {
                    continue; // decide on the stored metadata, not on the guess
                }
                return Ok(None);
            };
            let mut writes = vec![KvWrite::Put {
                key: meta_key(id),
                value: encode(&next)?,
                condition: PutCondition::IfVersion(version),
                ttl: None,
            }];
            writes.extend(extra);
            if next.state.is_terminal() && !meta.state.is_terminal() {
                writes.push(done_entry(next.completed_ns.unwrap_or_else(now_ns), id));
            }
            if let BatchOutcome::Applied(versions) = self.kv.write_batch(writes).await? {
                self.recent.remember(&next, versions.first().copied().flatten());
                return Ok(Some(next));
            }
        }
        Err(CommandError::Conflict(format!("command {id} is changing too often; retry")))
    }

    /// Wakes one receiver waiting on the command's target (a stored permit makes a later poll
    /// look at once).
    fn wake(&self, meta: &Meta) {
        self.waker(&meta.deployment_id, &meta.target.resource_id).notify_one();
        if let Some(signals) = &self.signals {
            signals.publish(Signal::CommandQueued {
                deployment: meta.deployment_id.clone(),
                resource: meta.target.resource_id.clone(),
            });
        }
    }

    /// The deployment a command belongs to (for authorization), if it exists. A command's
    /// deployment never changes, so the metadata this replica wrote last answers without a
    /// read.
    pub async fn deployment_of(&self, id: &str) -> Result<Option<String>, CommandError> {
        if let Some((meta, _)) = self.recent.get(id) {
            return Ok(Some(meta.deployment_id));
        }
        Ok(self.read_meta(id).await?.map(|(m, _)| m.deployment_id))
    }

    /// A command's status (`GET /v1/commands/{id}`); a passed deadline is enforced on read.
    pub async fn status(&self, id: &str) -> Result<CommandStatusResponse, CommandError> {
        let (mut meta, _) =
            self.read_meta(id).await?.ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
        if !meta.state.is_terminal()
            && meta.deadline_ns.is_some_and(|d| d <= now_ns())
            && let Some(expired) = self.expire(id).await?
        {
            meta = expired;
        }
        let response = match meta.response.map(|s| s.response) {
            Some(CommandResponse::Success { response: BodySpec::Storage { size, .. } }) => {
                Some(CommandResponse::Success {
                    response: BodySpec::Storage {
                        size,
                        storage_get_request: Some(
                            self.payloads
                                .presign_get(&response_payload(id), RESPONSE_URL_TTL)
                                .await?,
                        ),
                        storage_put_used: None,
                    },
                })
            }
            other => other,
        };
        Ok(CommandStatusResponse {
            command_id: meta.id,
            state: meta.state,
            attempt: meta.attempt,
            target: meta.target,
            response,
            created_at: rfc3339(meta.created_ns),
            completed_at: meta.completed_ns.map(rfc3339),
        })
    }

    /// Seconds since the epoch, for callers that sign URLs.
    pub fn unix_now() -> u64 {
        unix(SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lease_request(max: Option<u32>, lease: Option<u64>, wait: Option<u64>) -> LeaseRequest {
        LeaseRequest {
            deployment_id: "dep_1".into(),
            target: CommandTarget { resource_id: "api".into(), resource_type: "container".into() },
            max_leases: max,
            lease_seconds: lease,
            wait_seconds: wait,
        }
    }

    #[test]
    fn lease_bounds_have_defaults_and_limits() {
        let bounds = CommandEngine::check_lease(&lease_request(None, None, None)).unwrap();
        assert_eq!(bounds, LeaseBounds { max: 1, lease_seconds: 60, wait: Duration::ZERO });
        let most = CommandEngine::check_lease(&lease_request(Some(100), Some(3600), Some(30)));
        assert_eq!(most.unwrap().wait, MAX_WAIT);
        for (request, field) in [
            (lease_request(Some(0), None, None), "maxLeases"),
            (lease_request(Some(101), None, None), "maxLeases"),
            (lease_request(None, Some(0), None), "leaseSeconds"),
            (lease_request(None, Some(3601), None), "leaseSeconds"),
            (lease_request(None, None, Some(31)), "waitSeconds"),
            (lease_request(None, None, Some(u64::MAX)), "waitSeconds"),
        ] {
            match CommandEngine::check_lease(&request) {
                Err(CommandError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{request:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn inline_responses_are_base64_within_the_limit() {
        let inline = |text: String| CommandResponse::Success {
            response: BodySpec::Inline { inline_base64: text },
        };
        let b64 = |n: u64| base64::engine::general_purpose::STANDARD.encode(vec![0u8; n as usize]);
        assert!(CommandEngine::check_response(&inline(b64(MAX_INLINE_RESPONSE))).is_ok());
        assert!(CommandEngine::check_response(&inline(b64(MAX_INLINE_RESPONSE + 1))).is_err());
        assert!(CommandEngine::check_response(&inline("not base64!".into())).is_err());
        let stored = CommandResponse::Success {
            response: BodySpec::Storage {
                size: 1 << 40,
                storage_get_request: None,
                storage_put_used: None,
            },
        };
        assert!(CommandEngine::check_response(&stored).is_ok(), "checked against the store later");
        let failed =
            CommandResponse::Error { code: "X".into(), message: "m".into(), details: None };
        assert!(CommandEngine::check_response(&failed).is_ok());
    }
}
