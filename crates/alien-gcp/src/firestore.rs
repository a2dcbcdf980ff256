//! The commands [`Kv`] on Firestore (`spec/clouds.md`), over its REST API.
//!
//! Layout: one document per key, `{collection}/k{key}` (the `k` keeps keys such as `..` and
//! `__x__` valid document ids and preserves byte order), with `value` (bytes) and, for keys
//! that expire, `expiresAt` (timestamp: the field of the collection's TTL policy, so Firestore
//! deletes expired documents eventually). Firestore keeps expired documents until it gets round
//! to it (and the emulator never does), so every read, scan and condition here treats
//! `expiresAt <= now` as absent itself.
//!
//! A version is the document's `updateTime` in microseconds since the epoch: Firestore raises it
//! on every write that changes the document (each write carries a fresh `writeId`, so every
//! write does) and never hands out a past one, across deletes too.
//!
//! Conditional writes (versions, batches, deletes that must say whether anything was there) run
//! in a transaction that first reads the documents: Firestore locks what a transaction read, so
//! the conditions checked on those reads still hold at commit (the emulator loses updates under
//! bare `updateTime` preconditions, `docs/research/gcp-emulators`). The commit carries the same
//! preconditions as well. A transaction that loses a lock (`ABORTED`) is tried again.
//! Reads use `batchGet`, never `GET` on a document path: a key's `:` would read as a custom
//! method there.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alien_commands::kv::{check_batch, valid_key};
use alien_commands::{BatchOutcome, Kv, KvEntry, KvError, KvWrite, PutCondition};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::config::{GcpSettings, Service};
use crate::rest::{Api, ApiError};

/// How often a transaction is tried again after losing a lock to a concurrent one.
const ABORT_RETRIES: usize = 12;

/// Where the KV lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirestoreLocation {
    /// The project id.
    pub project_id: String,
    /// The database id, e.g. `(default)`.
    pub database_id: String,
    /// The collection of the KV's documents.
    pub collection: String,
}

/// Lock stripes of one process's transactions.
const STRIPES: usize = 64;

/// The commands KV on a Firestore collection.
#[derive(Debug, Clone)]
pub struct FirestoreKv {
    api: Api,
    location: FirestoreLocation,
    /// `projects/{p}/databases/{d}/documents`.
    root: String,
    /// Transactions of this process on the same keys queue here instead of in Firestore:
    /// Firestore's read locks make racing transactions wait for each other until its lock
    /// timeout (seconds) and abort; across processes that still happens, and is retried.
    stripes: std::sync::Arc<Vec<tokio::sync::Mutex<()>>>,
}

/// The lock stripe of `key` (FNV-1a).
fn stripe(key: &str) -> usize {
    usize::try_from(alien_commands::kv::fnv1a(key) % STRIPES as u64).unwrap_or(0)
}

/// A document as read: its fields and version.
struct Doc {
    value: Vec<u8>,
    version: u64,
    expires_at: Option<SystemTime>,
}

impl Doc {
    fn live(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// What a transactional attempt decided.
enum Attempt<T> {
    Done(T),
    /// Lost a lock or a race: read again.
    Retry(ApiError),
}

impl FirestoreKv {
    /// The KV at `location`, reached with `settings` (an `endpointUrl` or
    /// `FIRESTORE_EMULATOR_HOST` means the emulator). No call is made: [`Kv::ping`] checks.
    pub fn new(location: FirestoreLocation, settings: &GcpSettings) -> FirestoreKv {
        let api = Api::new(settings, Service::Firestore);
        let root = format!(
            "projects/{}/databases/{}/documents",
            location.project_id, location.database_id
        );
        let stripes = (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        FirestoreKv { api, location, root, stripes: std::sync::Arc::new(stripes) }
    }

    /// Where it lives.
    pub fn location(&self) -> &FirestoreLocation {
        &self.location
    }

    /// The document name of `key`.
    pub fn document_name(&self, key: &str) -> String {
        format!("{}/{}/k{key}", self.root, self.location.collection)
    }

    fn key_of(&self, name: &str) -> Option<String> {
        let prefix = format!("{}/{}/k", self.root, self.location.collection);
        name.strip_prefix(&prefix).map(str::to_owned)
    }

    fn path(&self, method: &str) -> String {
        format!("/v1/{}:{method}", self.root)
    }

    fn describe(&self) -> String {
        format!(
            "Firestore collection `{}` of projects/{}/databases/{}",
            self.location.collection, self.location.project_id, self.location.database_id
        )
    }

    fn error(&self, err: ApiError) -> KvError {
        let message = format!("{} ({}): {}", err.what, self.describe(), err.message);
        if err.transient() { KvError::Unavailable(message) } else { KvError::Backend(message) }
    }

    async fn call(&self, what: &str, method: &str, body: &Value) -> Result<Value, ApiError> {
        self.api.json(what, Method::POST, &self.path(method), Some(body)).await
    }

    /// Reads `keys` (in a transaction when given): the documents found, by key.
    async fn read(
        &self,
        keys: &[&str],
        transaction: Option<&str>,
    ) -> Result<HashMap<String, Doc>, ApiError> {
        let names: Vec<String> = keys.iter().map(|k| self.document_name(k)).collect();
        let mut body = json!({ "documents": names });
        if let Some(transaction) = transaction {
            body["transaction"] = transaction.into();
        }
        let answer = self.call("Firestore batchGet", "batchGet", &body).await?;
        let items = answer.as_array().cloned().unwrap_or_default();
        let mut found = HashMap::new();
        for item in items {
            if let Some(document) = item.get("found") {
                let (name, doc) = parse_document(document).ok_or_else(|| {
                    ApiError::decode("Firestore batchGet", "a malformed document")
                })?;
                if let Some(key) = self.key_of(&name) {
                    found.insert(key, doc);
                }
            }
        }
        Ok(found)
    }

    async fn begin(&self) -> Result<String, ApiError> {
        let answer =
            self.call("Firestore beginTransaction", "beginTransaction", &json!({})).await?;
        answer
            .get("transaction")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::decode("Firestore beginTransaction", "no transaction"))
    }

    /// Releases a transaction's locks; failures only delay others until the lock times out.
    async fn rollback(&self, transaction: &str) {
        let body = json!({ "transaction": transaction });
        if let Err(err) = self.call("Firestore rollback", "rollback", &body).await {
            tracing::debug!(error = %err, "Firestore rollback failed");
        }
    }

    /// Commits `writes` (in `transaction` when given): the `updateTime` of each write, `None`
    /// for deletes.
    async fn commit(
        &self,
        writes: Vec<Value>,
        transaction: Option<&str>,
    ) -> Result<Vec<Option<u64>>, ApiError> {
        let mut body = json!({ "writes": writes });
        if let Some(transaction) = transaction {
            body["transaction"] = transaction.into();
        }
        let answer = self.call("Firestore commit", "commit", &body).await?;
        let results = answer.get("writeResults").and_then(Value::as_array).cloned();
        Ok(results
            .unwrap_or_default()
            .iter()
            .map(|r| r.get("updateTime").and_then(Value::as_str).and_then(micros))
            .collect())
    }

    fn put_write(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Value {
        // Firestore keeps `updateTime` when a write leaves the document as it was; a fresh
        // `writeId` makes every write a change, so every write gets a new version.
        let write_id = uuid::Uuid::new_v4().simple().to_string();
        let mut fields = json!({
            "value": { "bytesValue": STANDARD.encode(value) },
            "writeId": { "stringValue": write_id },
        });
        if let Some(ttl) = ttl {
            let at = DateTime::<Utc>::from(SystemTime::now() + ttl);
            fields["expiresAt"] =
                json!({ "timestampValue": at.to_rfc3339_opts(SecondsFormat::Micros, true) });
        }
        json!({ "update": { "name": self.document_name(key), "fields": fields } })
    }

    /// One transactional attempt at `writes`: read them, check their conditions, commit. With
    /// the outcome, whether each key was live before.
    async fn attempt(
        &self,
        writes: &[KvWrite],
    ) -> Result<Attempt<(BatchOutcome, Vec<bool>)>, ApiError> {
        let keys: Vec<&str> = writes.iter().map(KvWrite::key).collect();
        let transaction = self.begin().await?;
        let docs = match self.read(&keys, Some(&transaction)).await {
            Ok(docs) => docs,
            Err(err) => {
                self.rollback(&transaction).await;
                return if err.conflict() { Ok(Attempt::Retry(err)) } else { Err(err) };
            }
        };
        let now = SystemTime::now();
        let mut commit = Vec::with_capacity(writes.len());
        let mut was_live = Vec::with_capacity(writes.len());
        for (index, write) in writes.iter().enumerate() {
            let current = docs.get(write.key());
            let live = current.filter(|d| d.live(now));
            was_live.push(live.is_some());
            let holds = match write {
                KvWrite::Put { condition: PutCondition::Always, .. } => true,
                KvWrite::Put { condition: PutCondition::IfAbsent, .. } => live.is_none(),
                KvWrite::Put { condition: PutCondition::IfVersion(v), .. }
                | KvWrite::Delete { version: Some(v), .. } => live.is_some_and(|d| d.version == *v),
                KvWrite::Delete { version: None, .. } => true,
            };
            if !holds {
                self.rollback(&transaction).await;
                return Ok(Attempt::Done((BatchOutcome::ConditionFailed(index), was_live)));
            }
            // The state read is the state committed over.
            let precondition = match current {
                Some(doc) => json!({ "updateTime": timestamp(doc.version) }),
                None => json!({ "exists": false }),
            };
            let mut op = match write {
                KvWrite::Put { key, value, ttl, .. } => self.put_write(key, value, *ttl),
                KvWrite::Delete { key, .. } => json!({ "delete": self.document_name(key) }),
            };
            if current.is_some() || matches!(write, KvWrite::Put { .. }) {
                op["currentDocument"] = precondition;
            }
            commit.push(op);
        }
        match self.commit(commit, Some(&transaction)).await {
            Ok(versions) => {
                let versions = writes
                    .iter()
                    .zip(versions.into_iter().chain(std::iter::repeat(None)))
                    .map(|(w, v)| if matches!(w, KvWrite::Put { .. }) { v } else { None })
                    .collect::<Vec<_>>();
                if writes
                    .iter()
                    .zip(&versions)
                    .any(|(w, v)| matches!(w, KvWrite::Put { .. }) && v.is_none())
                {
                    return Err(ApiError::decode(
                        "Firestore commit",
                        "a put without an updateTime",
                    ));
                }
                Ok(Attempt::Done((BatchOutcome::Applied(versions), was_live)))
            }
            // Lost the lock (ABORTED), or the documents changed between read and commit
            // (a precondition failed): read again.
            Err(err)
                if err.conflict() || err.http_status == Some(400) && precondition_failed(&err) =>
            {
                self.rollback(&transaction).await;
                Ok(Attempt::Retry(err))
            }
            Err(err) => {
                self.rollback(&transaction).await;
                Err(err)
            }
        }
    }

    /// `writes` in a transaction, tried again while it loses locks; with the outcome, whether
    /// each key was live before.
    async fn transact(&self, writes: &[KvWrite]) -> Result<(BatchOutcome, Vec<bool>), KvError> {
        // Stripes in ascending order: two batches never wait for each other in a cycle.
        let mut stripes: Vec<usize> = writes.iter().map(|w| stripe(w.key())).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for index in stripes {
            if let Some(lock) = self.stripes.get(index) {
                guards.push(lock.lock().await);
            }
        }
        let mut last = None;
        for attempt in 0..ABORT_RETRIES {
            match self.attempt(writes).await.map_err(|e| self.error(e))? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Retry(err) => last = Some(err),
            }
            backoff(attempt).await;
        }
        let detail = last.map(|e| e.message).unwrap_or_default();
        Err(KvError::Unavailable(format!(
            "{}: a transaction lost {ABORT_RETRIES} times to concurrent writers: {detail}",
            self.describe()
        )))
    }

    /// Runs one `__name__` range query: documents after `from` (inclusive when `inclusive`)
    /// and before `to`, in name order, at most `limit`.
    async fn query(
        &self,
        from: &str,
        inclusive: bool,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, Doc)>, ApiError> {
        let bound = |op: &str, key: &str| {
            json!({ "fieldFilter": {
                "field": { "fieldPath": "__name__" }, "op": op,
                "value": { "referenceValue": self.document_name(key) } } })
        };
        let lower = bound(if inclusive { "GREATER_THAN_OR_EQUAL" } else { "GREATER_THAN" }, from);
        let body = json!({ "structuredQuery": {
            "from": [{ "collectionId": self.location.collection }],
            "where": { "compositeFilter": { "op": "AND", "filters": [lower, bound("LESS_THAN", to)] } },
            "orderBy": [{ "field": { "fieldPath": "__name__" }, "direction": "ASCENDING" }],
            "limit": limit,
        } });
        let answer = self.call("Firestore runQuery", "runQuery", &body).await?;
        let mut out = Vec::new();
        for item in answer.as_array().cloned().unwrap_or_default() {
            let Some(document) = item.get("document") else { continue };
            let (name, doc) = parse_document(document)
                .ok_or_else(|| ApiError::decode("Firestore runQuery", "a malformed document"))?;
            if let Some(key) = self.key_of(&name) {
                out.push((key, doc));
            }
        }
        Ok(out)
    }
}

/// Whether a 400 is a failed precondition (the documents changed since they were read).
fn precondition_failed(err: &ApiError) -> bool {
    err.status.as_deref() == Some("FAILED_PRECONDITION")
}

/// `name` and the fields of a document resource.
fn parse_document(document: &Value) -> Option<(String, Doc)> {
    let name = document.get("name")?.as_str()?.to_owned();
    let version = micros(document.get("updateTime")?.as_str()?)?;
    let fields = document.get("fields");
    let value = match fields.and_then(|f| f.get("value")).and_then(|v| v.get("bytesValue")) {
        Some(Value::String(b64)) => STANDARD.decode(b64).ok()?,
        _ => Vec::new(),
    };
    let expires_at = fields
        .and_then(|f| f.get("expiresAt"))
        .and_then(|v| v.get("timestampValue"))
        .and_then(Value::as_str)
        .and_then(micros)
        .map(|us| UNIX_EPOCH + Duration::from_micros(us));
    Some((name, Doc { value, version, expires_at }))
}

/// An RFC 3339 timestamp as microseconds since the epoch.
fn micros(timestamp: &str) -> Option<u64> {
    let at = DateTime::parse_from_rfc3339(timestamp).ok()?;
    u64::try_from(at.timestamp_micros()).ok()
}

/// Microseconds since the epoch as the RFC 3339 form Firestore compares (6 digits).
fn timestamp(micros: u64) -> String {
    let at = DateTime::<Utc>::from_timestamp_micros(i64::try_from(micros).unwrap_or(i64::MAX))
        .unwrap_or_default();
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn backoff(attempt: usize) {
    // Jitter from the clock's sub-second digits: racers must not retry in lockstep.
    let jitter = u64::from(
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_micros() % 20,
    );
    let millis = (5u64 << attempt.min(5)) + jitter;
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

fn entry(key: String, doc: Doc) -> KvEntry {
    KvEntry { key, value: doc.value, version: doc.version, expires_at: doc.expires_at }
}

#[async_trait::async_trait]
impl Kv for FirestoreKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        if !valid_key(key) {
            return Err(KvError::InvalidKey(key.to_owned()));
        }
        let mut docs = self.read(&[key], None).await.map_err(|e| self.error(e))?;
        let now = SystemTime::now();
        Ok(docs.remove(key).filter(|d| d.live(now)).map(|d| entry(key.to_owned(), d)))
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        condition: PutCondition,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, KvError> {
        let write = KvWrite::Put { key: key.to_owned(), value: value.to_vec(), condition, ttl };
        check_batch(std::slice::from_ref(&write))?;
        // The common cases in one commit: an unconditional put, and a create of a key that
        // was never there (an expired document makes it fail: then the transaction decides).
        let precondition = match condition {
            PutCondition::Always => None,
            PutCondition::IfAbsent => Some(json!({ "exists": false })),
            PutCondition::IfVersion(_) => {
                return match self.transact(&[write]).await?.0 {
                    BatchOutcome::Applied(v) => Ok(v.into_iter().next().flatten()),
                    BatchOutcome::ConditionFailed(_) => Ok(None),
                };
            }
        };
        let mut op = self.put_write(key, value, ttl);
        if let Some(precondition) = precondition {
            op["currentDocument"] = precondition;
        }
        match self.commit(vec![op], None).await {
            Ok(versions) => {
                versions.into_iter().next().flatten().map(Some).ok_or_else(|| {
                    self.error(ApiError::decode("Firestore commit", "no updateTime"))
                })
            }
            Err(err) if condition == PutCondition::IfAbsent && err.conflict() => {
                match self.transact(&[write]).await?.0 {
                    BatchOutcome::Applied(v) => Ok(v.into_iter().next().flatten()),
                    BatchOutcome::ConditionFailed(_) => Ok(None),
                }
            }
            Err(err) => Err(self.error(err)),
        }
    }

    async fn delete(&self, key: &str, version: Option<u64>) -> Result<bool, KvError> {
        if !valid_key(key) {
            return Err(KvError::InvalidKey(key.to_owned()));
        }
        let write = KvWrite::Delete { key: key.to_owned(), version };
        match self.transact(&[write]).await? {
            (BatchOutcome::Applied(_), was_live) => Ok(was_live.first().copied().unwrap_or(false)),
            (BatchOutcome::ConditionFailed(_), _) => Ok(false),
        }
    }

    async fn write_batch(&self, writes: Vec<KvWrite>) -> Result<BatchOutcome, KvError> {
        check_batch(&writes)?;
        if writes.is_empty() {
            return Ok(BatchOutcome::Applied(Vec::new()));
        }
        Ok(self.transact(&writes).await?.0)
    }

    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        alien_commands::kv::check_scan(prefix, after)?;
        // `~` sorts after every key character, so `prefix~` bounds the keys under `prefix`.
        let end = format!("{prefix}~");
        let (mut from, mut inclusive) = match after {
            Some(after) if after >= prefix => (after.to_owned(), false),
            _ => (prefix.to_owned(), true),
        };
        let mut out = Vec::new();
        let now = SystemTime::now();
        while out.len() < limit {
            let want = (limit - out.len()).clamp(1, 300);
            let page = self.query(&from, inclusive, &end, want).await.map_err(|e| self.error(e))?;
            let full = page.len() == want;
            for (key, doc) in page {
                from.clone_from(&key);
                inclusive = false;
                if doc.live(now) && key.starts_with(prefix) {
                    out.push(entry(key, doc));
                }
            }
            if !full {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn ping(&self) -> Result<(), KvError> {
        self.query("ping", true, "ping", 1).await.map(|_| ()).map_err(|e| {
            let mut err = self.error(e);
            if let KvError::Backend(message) = &mut err {
                message.push_str(
                    " (does the database exist, and may the manager use it: roles/datastore.user?)",
                );
            }
            err
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_update_times_in_microseconds_both_ways() {
        let us = micros("2026-12-06T16:01:22.974470Z").unwrap_or_default();
        assert_eq!(us, 1_796_572_882_974_470);
        assert_eq!(timestamp(us), "2026-12-06T16:01:22.974470Z");
    }

    #[test]
    fn documents_are_k_prefixed_keys_of_the_collection() {
        let kv = FirestoreKv::new(
            FirestoreLocation {
                project_id: "p".into(),
                database_id: "(default)".into(),
                collection: "commands".into(),
            },
            &GcpSettings::from_env().with_endpoint(Service::Firestore, Some("127.0.0.1:1")),
        );
        let name = kv.document_name("__x__");
        assert_eq!(name, "projects/p/databases/(default)/documents/commands/k__x__");
        assert_eq!(kv.key_of(&name).as_deref(), Some("__x__"));
    }
}
