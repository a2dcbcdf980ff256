//! The command engine: create, upload-complete, lease (with long poll), release, respond, status,
//! and the reaper that expires deadlines and redelivers leases that ran out.
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
use alien_core::{Id, IdKind};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::sync::Notify;

use crate::kv::{BatchOutcome, Kv, KvError, KvWrite, PutCondition};
use crate::payload::{PayloadError, PayloadStore};
use crate::signing::{UrlSigner, unix};

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

/// Finds the container a command runs in (the server implements it with the store).
#[async_trait::async_trait]
pub trait TargetDirectory: Send + Sync {
    /// The target for `deployment`: the container `resource` names, or the only container of the
    /// deployment's current release. `DeploymentNotFound`, or `Conflict` when it is not running,
    /// the resource is unknown, or several containers make the target ambiguous.
    async fn resolve_target(
        &self,
        deployment: &str,
        resource: Option<&str>,
    ) -> Result<CommandTarget, CommandError>;
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
    directory: Arc<dyn TargetDirectory>,
    signer: UrlSigner,
    base_url: String,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    claiming: Mutex<HashSet<String>>,
    recent: RecentMeta,
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
        directory: Arc<dyn TargetDirectory>,
        signer: UrlSigner,
        base_url: String,
    ) -> Self {
        Self {
            kv,
            payloads,
            directory,
            signer,
            base_url: base_url.trim_end_matches('/').to_owned(),
            wakers: Mutex::new(HashMap::new()),
            claiming: Mutex::new(HashSet::new()),
            recent: RecentMeta::default(),
        }
    }

    fn waker(&self, deployment: &str, resource: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        wakers.entry(format!("{deployment}:{resource}")).or_default().clone()
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
    }

    /// Creates a command (`POST /v1/commands`).
    #[tracing::instrument(name = "command.create", skip_all, fields(deployment = %request.deployment_id, command = %request.command))]
    pub async fn create(
        &self,
        request: CreateCommandRequest,
    ) -> Result<CreateCommandResponse, CommandError> {
        if request.command.is_empty()
            || request.command.contains(':')
            || request.command.len() > 256
        {
            return Err(CommandError::Invalid {
                field: "command",
                message: "must be 1..=256 characters without ':'".into(),
            });
        }
        let deadline_ns = match &request.deadline {
            Some(text) => {
                let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
                    CommandError::Invalid {
                        field: "deadline",
                        message: format!("expected RFC 3339: {e}"),
                    }
                })?;
                let ns = u128::try_from(t.timestamp_nanos_opt().unwrap_or(i64::MAX)).unwrap_or(0);
                if ns <= now_ns() {
                    return Err(CommandError::Invalid {
                        field: "deadline",
                        message: "must be in the future".into(),
                    });
                }
                Some(ns)
            }
            None => None,
        };
        let inline = match &request.params {
            BodySpec::Inline { inline_base64 } => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(inline_base64)
                    .map_err(|e| CommandError::Invalid {
                        field: "params.inlineBase64",
                        message: format!("not base64: {e}"),
                    })?;
                if decoded.len() as u64 > MAX_INLINE_PARAMS {
                    return Err(CommandError::TooLarge(decoded.len() as u64));
                }
                Some((inline_base64.clone(), decoded))
            }
            BodySpec::Storage { .. } => None,
        };
        let target = self
            .directory
            .resolve_target(&request.deployment_id, request.target_resource_id.as_deref())
            .await?;
        let id = Id::new(IdKind::Command).to_string();
        let idempotency = if let Some(key) = &request.idempotency_key {
            let hash = hex::encode(sha2::Sha256::digest(
                format!(
                    "{}\n{}\n{}\n{key}",
                    request.deployment_id, target.resource_id, request.command
                )
                .as_bytes(),
            ));
            let idem = format!("idem:{hash}");
            if let Some(replayed) = self.replay(&idem).await? {
                return Ok(replayed);
            }
            Some(idem)
        } else {
            None
        };
        let mut writes = Vec::new();
        if let Some(idem) = &idempotency {
            writes.push(KvWrite::Put {
                key: idem.clone(),
                value: id.as_bytes().to_vec(),
                condition: PutCondition::IfAbsent,
                ttl: Some(IDEMPOTENCY_TTL),
            });
        }
        let (params, state, upload) = match inline {
            Some((b64, _)) if b64.len() <= META_INLINE_LIMIT => {
                (ParamsAt::Meta { base64: b64 }, CommandState::Pending, None)
            }
            Some((b64, _)) if b64.len() <= KV_INLINE_LIMIT => {
                writes.push(KvWrite::put(format!("cmd:{id}:params"), b64.into_bytes()));
                (ParamsAt::Kv, CommandState::Pending, None)
            }
            Some((_, decoded)) => {
                let size = decoded.len() as u64;
                let body =
                    futures_util::stream::once(async move { Ok(bytes::Bytes::from(decoded)) });
                self.payloads.write(&params_payload(&id), Box::pin(body)).await?;
                (ParamsAt::Payload { size }, CommandState::Pending, None)
            }
            None => {
                let put = self.payloads.presign_put(&params_payload(&id), UPLOAD_URL_TTL).await?;
                let expires_at = put.expiration.clone();
                (
                    ParamsAt::Payload { size: 0 },
                    CommandState::PendingUpload,
                    Some(StorageUpload { put_request: put, expires_at }),
                )
            }
        };
        let meta = Meta {
            id: id.clone(),
            deployment_id: request.deployment_id.clone(),
            target,
            command: request.command,
            state,
            attempt: 1,
            deadline_ns,
            params,
            response: None,
            created_ns: now_ns(),
            completed_ns: None,
            lease_id: None,
            lease_expires_ns: None,
        };
        writes.push(KvWrite::Put {
            key: meta_key(&id),
            value: encode(&meta)?,
            condition: PutCondition::IfAbsent,
            ttl: None,
        });
        let meta_index = writes.len() - 1;
        if let Some(deadline) = deadline_ns {
            writes.push(KvWrite::put(format!("deadline:{deadline:030}:{id}"), Vec::new()));
        }
        if state == CommandState::Pending {
            writes.push(queue_entry(&meta));
        }
        // One atomic batch: a crash leaves either the whole command (queued) or nothing.
        match self.kv.write_batch(writes).await? {
            BatchOutcome::Applied(versions) => {
                self.recent.remember(&meta, versions.get(meta_index).copied().flatten());
            }
            BatchOutcome::ConditionFailed(_) => {
                // Another create with the same idempotency key won the race.
                if let Some(idem) = &idempotency
                    && let Some(replayed) = self.replay(idem).await?
                {
                    return Ok(replayed);
                }
                return Err(CommandError::Conflict(format!(
                    "command {id} could not be created; retry"
                )));
            }
        }
        if state == CommandState::Pending {
            self.wake(&meta);
        }
        count("created");
        Ok(CreateCommandResponse {
            command_id: id,
            state,
            next: if upload.is_some() { NextStep::Upload } else { NextStep::Poll },
            storage_upload: upload,
            inline_allowed_up_to: MAX_INLINE_PARAMS,
        })
    }

    /// The command an idempotency key already created, as `create` answers it.
    async fn replay(&self, idem: &str) -> Result<Option<CreateCommandResponse>, CommandError> {
        let Some(first) = self.kv.get(idem).await? else { return Ok(None) };
        let first = String::from_utf8_lossy(&first.value).into_owned();
        let Some((meta, _)) = self.read_meta(&first).await? else { return Ok(None) };
        count("replayed");
        Ok(Some(CreateCommandResponse {
            command_id: meta.id,
            state: meta.state,
            storage_upload: None,
            inline_allowed_up_to: MAX_INLINE_PARAMS,
            next: if meta.state == CommandState::PendingUpload {
                NextStep::Upload
            } else {
                NextStep::Poll
            },
        }))
    }

    /// The deployment a command belongs to (for authorization), if it exists.
    pub async fn deployment_of(&self, id: &str) -> Result<Option<String>, CommandError> {
        Ok(self.read_meta(id).await?.map(|(m, _)| m.deployment_id))
    }

    /// Parameters were uploaded (`POST /v1/commands/{id}/upload-complete`).
    pub async fn upload_complete(&self, id: &str, size: u64) -> Result<CommandState, CommandError> {
        let stored = self.payloads.size(&params_payload(id)).await?;
        if stored != Some(size) {
            return Err(CommandError::Invalid {
                field: "size",
                message: format!(
                    "the upload holds {} bytes, not {size}",
                    stored.map_or("no".into(), |s| s.to_string())
                ),
            });
        }
        let moved = self
            .update(id, |m| {
                let state = m.state.next(CommandEvent::UploadComplete)?;
                let next = Meta { state, params: ParamsAt::Payload { size }, ..m.clone() };
                let queued = queue_entry(&next);
                Some((next, vec![queued]))
            })
            .await?;
        match moved {
            Some(meta) => {
                self.wake(&meta);
                Ok(meta.state)
            }
            None => {
                let (meta, _) = self
                    .read_meta(id)
                    .await?
                    .ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
                if meta.state == CommandState::PendingUpload {
                    Err(CommandError::Conflict(format!("command {id} cannot complete its upload")))
                } else {
                    Err(CommandError::Conflict(format!(
                        "command {id} is {}, not PENDING_UPLOAD",
                        meta.state
                    )))
                }
            }
        }
    }

    /// Leases commands for a receiver (`POST /v1/commands/leases`), waiting up to `waitSeconds`.
    #[tracing::instrument(name = "command.lease", skip_all, fields(deployment = %request.deployment_id, resource = %request.target.resource_id))]
    pub async fn lease(&self, request: &LeaseRequest) -> Result<LeaseResponse, CommandError> {
        let max = request.max_leases.unwrap_or(1);
        if !(1..=100).contains(&max) {
            return Err(CommandError::Invalid {
                field: "maxLeases",
                message: "must be 1..=100".into(),
            });
        }
        let lease_seconds = request.lease_seconds.unwrap_or(60);
        if !(1..=3600).contains(&lease_seconds) {
            return Err(CommandError::Invalid {
                field: "leaseSeconds",
                message: "must be 1..=3600".into(),
            });
        }
        let wait = Duration::from_secs(request.wait_seconds.unwrap_or(0));
        if wait > MAX_WAIT {
            return Err(CommandError::Invalid {
                field: "waitSeconds",
                message: "must be 0..=30".into(),
            });
        }
        let until = tokio::time::Instant::now() + wait;
        let waker = self.waker(&request.deployment_id, &request.target.resource_id);
        loop {
            // Register interest before looking, so a command enqueued meanwhile wakes us.
            let notified = waker.notified();
            tokio::pin!(notified);
            // Registered now, so a command enqueued while we look wakes this poll.
            notified.as_mut().enable();
            let leases = self.try_lease(request, max, lease_seconds).await?;
            let now = tokio::time::Instant::now();
            if !leases.is_empty() || now >= until {
                return Ok(LeaseResponse { leases });
            }
            let _ = tokio::time::timeout((until - now).min(POLL_EVERY), notified).await;
        }
    }

    async fn try_lease(
        &self,
        request: &LeaseRequest,
        max: u32,
        lease_seconds: u64,
    ) -> Result<Vec<Lease>, CommandError> {
        let prefix = pending_prefix(&request.deployment_id, &request.target.resource_id);
        let mut leases = Vec::new();
        let mut after: Option<String> = None;
        while leases.len() < max as usize {
            let batch = self.kv.scan(&prefix, after.as_deref(), (max as usize * 2).max(8)).await?;
            if batch.is_empty() {
                break;
            }
            after = batch.last().map(|e| e.key.clone());
            // Claim up to the missing number of entries, then lease them concurrently: their
            // writes share the KV's group commits instead of queueing one after another.
            let mut claimed = Vec::new();
            for entry in batch {
                if leases.len() + claimed.len() >= max as usize {
                    break;
                }
                let Some(id) = entry.key.rsplit(':').next().map(str::to_owned) else { continue };
                // Another poll of this replica is claiming it: skip instead of racing.
                if let Some(claim) = Claim::take(&self.claiming, &id) {
                    claimed.push((entry.key, claim));
                }
            }
            let attempts =
                claimed.iter().map(|(key, claim)| self.lease_one(key, &claim.id, lease_seconds));
            for leased in futures_util::future::join_all(attempts).await {
                leases.extend(leased?);
            }
        }
        Ok(leases)
    }

    /// Leases the command behind queue entry `key`, if it is still leasable.
    async fn lease_one(
        &self,
        key: &str,
        id: &str,
        lease_seconds: u64,
    ) -> Result<Option<Lease>, CommandError> {
        let lease_id = format!("lease_{id}.{}", uuid::Uuid::new_v4().simple());
        let expires_ns = now_ns() + u128::from(lease_seconds) * 1_000_000_000;
        let mut seen = None;
        let leased = match self
            .update(id, |m| {
                seen = Some(m.state);
                let state = m.state.next(CommandEvent::Lease)?;
                let writes = vec![
                    // Leased by us: the entry leaves the queue with the same write.
                    KvWrite::delete(key),
                    KvWrite::put(format!("leased:{expires_ns:030}:{}", m.id), Vec::new()),
                ];
                let next = Meta {
                    state,
                    lease_id: Some(lease_id.clone()),
                    lease_expires_ns: Some(expires_ns),
                    ..m.clone()
                };
                Some((next, writes))
            })
            .await
        {
            Ok(leased) => leased,
            Err(CommandError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // Gone for good (ended, or waiting for an upload): the stale entry leaves the queue.
        // Leased by another receiver: that receiver removed it.
        if leased.is_none() && seen != Some(CommandState::Dispatched) {
            self.kv.delete(key, None).await?;
        }
        let Some(meta) = leased else { return Ok(None) };
        count("leased");
        Ok(Some(Lease {
            lease_id,
            lease_expires_at: rfc3339(expires_ns),
            command_id: meta.id.clone(),
            attempt: meta.attempt,
            envelope: self.envelope(&meta).await?,
        }))
    }

    async fn envelope(&self, meta: &Meta) -> Result<Envelope, CommandError> {
        let params = match &meta.params {
            ParamsAt::Meta { base64 } => BodySpec::Inline { inline_base64: base64.clone() },
            ParamsAt::Kv => {
                let stored = self.kv.get(&format!("cmd:{}:params", meta.id)).await?;
                BodySpec::Inline {
                    inline_base64: stored
                        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
                        .unwrap_or_default(),
                }
            }
            ParamsAt::Payload { size } => BodySpec::Storage {
                size: *size,
                storage_get_request: Some(
                    self.payloads.presign_get(&params_payload(&meta.id), UPLOAD_URL_TTL).await?,
                ),
                storage_put_used: None,
            },
        };
        let (expires, token) = self.signer.sign_until(SystemTime::now(), RESPONSE_URL_TTL, |e| {
            format!("commands.v1:{}:{e}", meta.id)
        });
        Ok(Envelope {
            protocol: PROTOCOL.to_owned(),
            deployment_id: meta.deployment_id.clone(),
            target: meta.target.clone(),
            command_id: meta.id.clone(),
            attempt: meta.attempt,
            deadline: meta.deadline_ns.map(rfc3339),
            command: meta.command.clone(),
            params,
            response_handling: ResponseHandling {
                max_inline_bytes: MAX_INLINE_RESPONSE,
                submit_response_url: format!(
                    "{}/v1/commands/{}/response?response_token={token}&expires={expires}",
                    self.base_url, meta.id
                ),
                storage_upload_request: self
                    .payloads
                    .presign_put(&response_payload(&meta.id), RESPONSE_URL_TTL)
                    .await?,
            },
        })
    }

    /// Whether a presigned response URL's token is valid for command `id`.
    pub fn verify_response_token(&self, id: &str, token: &str, expires: u64) -> bool {
        self.signer.verify_until(
            SystemTime::now(),
            expires,
            token,
            &format!("commands.v1:{id}:{expires}"),
        )
    }

    /// The command a lease is for (for authorization), if the lease is held: lease ids are
    /// `lease_{commandId}.{random}`, and the command must still hold exactly that lease.
    pub async fn command_of_lease(&self, lease_id: &str) -> Result<Option<String>, CommandError> {
        let Some((id, _)) = lease_id.strip_prefix("lease_").and_then(|l| l.split_once('.')) else {
            return Ok(None);
        };
        Ok(self
            .read_meta(id)
            .await?
            .filter(|(meta, _)| meta.lease_id.as_deref() == Some(lease_id))
            .map(|(meta, _)| meta.id))
    }

    /// Gives a leased command back (`POST /v1/commands/leases/{leaseId}/release`).
    pub async fn release(&self, lease_id: &str) -> Result<(), CommandError> {
        let id = self
            .command_of_lease(lease_id)
            .await?
            .ok_or_else(|| CommandError::LeaseNotFound(lease_id.to_owned()))?;
        let released = self
            .update(&id, |m| {
                if m.lease_id.as_deref() != Some(lease_id) {
                    return None;
                }
                let state = m.state.next(CommandEvent::Release)?;
                let next = Meta { state, lease_id: None, lease_expires_ns: None, ..m.clone() };
                let mut writes = lease_cleanup(m);
                writes.push(queue_entry(&next));
                Some((next, writes))
            })
            .await?;
        let meta = released.ok_or_else(|| CommandError::LeaseNotFound(lease_id.to_owned()))?;
        self.wake(&meta);
        count("released");
        Ok(())
    }

    /// Records a receiver's response (`PUT /v1/commands/{id}/response`). A response for a
    /// command that already ended is ignored: the first one is kept.
    #[tracing::instrument(name = "command.respond", skip_all, fields(command = %id))]
    pub async fn respond(
        &self,
        id: &str,
        response: CommandResponse,
    ) -> Result<CommandState, CommandError> {
        if let CommandResponse::Success { response: body } = &response {
            match body {
                BodySpec::Inline { inline_base64 } => {
                    let len = base64::engine::general_purpose::STANDARD
                        .decode(inline_base64)
                        .map_err(|e| CommandError::Invalid {
                            field: "response.inlineBase64",
                            message: format!("not base64: {e}"),
                        })?
                        .len() as u64;
                    if len > MAX_INLINE_RESPONSE {
                        return Err(CommandError::Invalid {
                            field: "response",
                            message: format!(
                                "inline responses are limited to {MAX_INLINE_RESPONSE} bytes; upload it (storageUploadRequest)"
                            ),
                        });
                    }
                }
                BodySpec::Storage { size, .. } => {
                    let stored = self.payloads.size(&response_payload(id)).await?;
                    if stored != Some(*size) {
                        return Err(CommandError::Invalid {
                            field: "response.size",
                            message: format!(
                                "the uploaded response holds {} bytes, not {size}",
                                stored.map_or("no".into(), |s| s.to_string())
                            ),
                        });
                    }
                }
            }
        }
        let event = match response {
            CommandResponse::Success { .. } => CommandEvent::Succeed,
            CommandResponse::Error { .. } => CommandEvent::Fail,
        };
        let stored = StoredResponse { response };
        let done = self
            .update(id, |m| {
                let state = m.state.next(event)?;
                let next = Meta {
                    state,
                    response: Some(stored.clone()),
                    completed_ns: Some(now_ns()),
                    ..m.clone()
                };
                Some((next, lease_cleanup(m)))
            })
            .await?;
        match done {
            Some(meta) => {
                count(if meta.state == CommandState::Succeeded { "succeeded" } else { "failed" });
                observe_done(&meta);
                Ok(meta.state)
            }
            None => {
                let (meta, _) = self
                    .read_meta(id)
                    .await?
                    .ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
                if meta.state.is_terminal() {
                    count("duplicate_response");
                    Ok(meta.state)
                } else {
                    Err(CommandError::Conflict(format!(
                        "command {id} is {} and cannot take a response",
                        meta.state
                    )))
                }
            }
        }
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

    async fn expire(&self, id: &str) -> Result<Option<Meta>, CommandError> {
        let expired = self
            .update(id, |m| {
                let state = m.state.next(CommandEvent::DeadlinePassed)?;
                let next = Meta {
                    state,
                    completed_ns: Some(now_ns()),
                    lease_id: None,
                    lease_expires_ns: None,
                    ..m.clone()
                };
                Some((next, lease_cleanup(m)))
            })
            .await?;
        if let Some(meta) = &expired {
            count("expired");
            observe_done(meta);
        }
        Ok(expired)
    }

    /// One reaper pass: expires commands past their deadline and redelivers commands whose lease
    /// ran out (attempt + 1). Returns how many commands it moved.
    #[tracing::instrument(name = "command.reap", skip_all, level = "debug")]
    pub async fn reap(&self) -> Result<u64, CommandError> {
        let now = now_ns();
        let mut moved = 0;
        for entry in self.kv.scan("deadline:", None, 1000).await? {
            let mut parts = entry.key.splitn(3, ':').skip(1);
            let (Some(at), Some(id)) = (parts.next(), parts.next()) else { continue };
            if at.parse::<u128>().unwrap_or(u128::MAX) > now {
                break;
            }
            match self.expire(id).await {
                Ok(Some(_)) => moved += 1,
                Ok(None) | Err(CommandError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            self.kv.delete(&entry.key, None).await?;
        }
        for entry in self.kv.scan("leased:", None, 1000).await? {
            let mut parts = entry.key.splitn(3, ':').skip(1);
            let (Some(at), Some(id)) = (parts.next(), parts.next()) else { continue };
            if at.parse::<u128>().unwrap_or(u128::MAX) > now {
                break;
            }
            let redelivered = match self
                .update(id, |m| {
                    if m.lease_expires_ns.is_none_or(|e| e > now) {
                        return None;
                    }
                    let state = m.state.next(CommandEvent::LeaseExpired)?;
                    let next = Meta {
                        state,
                        attempt: m.attempt + 1,
                        lease_id: None,
                        lease_expires_ns: None,
                        ..m.clone()
                    };
                    let mut writes = lease_cleanup(m);
                    writes.push(queue_entry(&next));
                    Some((next, writes))
                })
                .await
            {
                Ok(r) => r,
                Err(CommandError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if let Some(meta) = redelivered {
                self.wake(&meta);
                count("redelivered");
                moved += 1;
            } else {
                self.kv.delete(&entry.key, None).await?;
            }
        }
        Ok(moved)
    }

    /// Runs [`reap`](Self::reap) every `every` until the task is aborted.
    pub fn spawn_reaper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(err) = engine.reap().await {
                    tracing::warn!(error = %err, "command reaper pass failed");
                }
            }
        })
    }

    /// A command's parameters as bytes (admin `GET /v1/commands/{id}/payload`).
    pub async fn params(&self, id: &str) -> Result<crate::payload::PayloadStream, CommandError> {
        let (meta, _) =
            self.read_meta(id).await?.ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
        match meta.params {
            ParamsAt::Meta { .. } | ParamsAt::Kv => {
                let b64 = match meta.params {
                    ParamsAt::Meta { base64 } => base64.into_bytes(),
                    _ => {
                        let stored = self.kv.get(&format!("cmd:{id}:params")).await?;
                        stored.map(|e| e.value).unwrap_or_default()
                    }
                };
                let bytes =
                    base64::engine::general_purpose::STANDARD.decode(&b64).map_err(|e| {
                        CommandError::Unavailable(format!("corrupt params of {id}: {e}"))
                    })?;
                Ok(Box::pin(futures_util::stream::once(
                    async move { Ok(bytes::Bytes::from(bytes)) },
                )))
            }
            ParamsAt::Payload { .. } => Ok(self.payloads.read(&params_payload(id)).await?),
        }
    }

    /// Uploads the parameters of a `PENDING_UPLOAD` command directly (admin
    /// `PUT /v1/commands/{id}/payload`); `upload-complete` follows as with a presigned upload.
    pub async fn put_params(
        &self,
        id: &str,
        body: crate::payload::PayloadStream,
    ) -> Result<u64, CommandError> {
        let (meta, _) =
            self.read_meta(id).await?.ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
        if meta.state != CommandState::PendingUpload {
            return Err(CommandError::Conflict(format!(
                "command {id} is {}, not PENDING_UPLOAD",
                meta.state
            )));
        }
        Ok(self.payloads.write(&params_payload(id), body).await?)
    }

    /// Seconds since the epoch, for callers that sign URLs.
    pub fn unix_now() -> u64 {
        unix(SystemTime::now())
    }
}
