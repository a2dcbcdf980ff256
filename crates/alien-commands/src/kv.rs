//! The `Kv` seam: the key-value store behind command state (leases, idempotency keys, pending
//! queues, deadlines). SQLite on local disk by default; DynamoDB, Firestore and Table Storage with
//! the cloud crates. Every implementation runs the contract suite in `kv_contract` (feature `contract-tests`).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest key.
pub const MAX_KEY_LEN: usize = 512;
/// Largest value (larger payloads go to the [`crate::PayloadStore`]).
pub const MAX_VALUE_LEN: usize = 24 * 1024;

/// FNV-1a (64 bits) of a key: how the cloud KVs spread keys over partitions or lock stripes
/// (stable across processes and versions, unlike `std`'s hasher).
pub fn fnv1a(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Whether `key` is a valid KV key: 1..=512 of `[A-Za-z0-9-_:.]`.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'))
}

/// `key` when it is a valid KV key ([`valid_key`]), else [`KvError::InvalidKey`].
pub fn check_key(key: &str) -> Result<(), KvError> {
    if valid_key(key) { Ok(()) } else { Err(KvError::InvalidKey(key.to_owned())) }
}

/// The arguments of [`Kv::scan`] checked: `prefix` and `after` (when given) valid keys.
pub fn check_scan(prefix: &str, after: Option<&str>) -> Result<(), KvError> {
    check_key(prefix)?;
    after.map_or(Ok(()), check_key)
}

/// Whether the condition of `write` holds for a key whose live version is `live` (`None`:
/// absent or expired).
pub fn condition_holds(write: &KvWrite, live: Option<u64>) -> bool {
    match write {
        KvWrite::Put { condition: PutCondition::Always, .. }
        | KvWrite::Delete { version: None, .. } => true,
        KvWrite::Put { condition: PutCondition::IfAbsent, .. } => live.is_none(),
        KvWrite::Put { condition: PutCondition::IfVersion(v), .. }
        | KvWrite::Delete { version: Some(v), .. } => live == Some(*v),
    }
}

/// What happened to one write of a batch a SQL KV applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Written at this version.
    Put(u64),
    /// Deleted (`true`) or nothing was there.
    Deleted(bool),
}

/// A batch a SQL KV applied: every write done, or the index of the first failed condition.
pub type Applied = Result<Vec<Done>, usize>;

/// [`Kv::put`]'s answer for the one-write batch `applied` of `key`.
pub fn put_outcome(key: &str, applied: Applied) -> Result<Option<u64>, KvError> {
    match applied {
        Ok(done) => match done.first() {
            Some(Done::Put(version)) => Ok(Some(*version)),
            _ => Err(KvError::Backend(format!("writing KV key {key}: no version returned"))),
        },
        Err(_) => Ok(None),
    }
}

/// [`Kv::delete`]'s answer for the one-write batch `applied`.
pub fn delete_outcome(applied: &Applied) -> bool {
    matches!(applied.as_ref().map(|done| done.first()), Ok(Some(Done::Deleted(true))))
}

/// [`Kv::write_batch`]'s answer for `applied`.
pub fn batch_outcome(applied: Applied) -> BatchOutcome {
    match applied {
        Ok(done) => BatchOutcome::Applied(
            done.into_iter()
                .map(|d| match d {
                    Done::Put(version) => Some(version),
                    Done::Deleted(_) => None,
                })
                .collect(),
        ),
        Err(index) => BatchOutcome::ConditionFailed(index),
    }
}

/// A [`KvEntry`] from a SQL row: the version as stored (`BIGINT`), the expiry in unix
/// milliseconds. A negative version or an expiry that is not a time is a backend error naming
/// the key.
pub fn entry_from_row(
    key: String,
    value: Vec<u8>,
    version: i64,
    expires_at_ms: Option<i64>,
) -> Result<KvEntry, KvError> {
    let version = u64::try_from(version)
        .map_err(|_| KvError::Backend(format!("KV key {key}: version {version} is negative")))?;
    let expires_at = match expires_at_ms {
        None => None,
        Some(ms) => Some(
            u64::try_from(ms)
                .ok()
                .and_then(|ms| {
                    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms))
                })
                .ok_or_else(|| {
                    KvError::Backend(format!("KV key {key}: expires_at {ms} is not a time"))
                })?,
        ),
    };
    Ok(KvEntry { key, value, version, expires_at })
}

/// The smallest string above every key that starts with `prefix`, for range scans: the prefix
/// with its last character incremented (valid keys are ASCII up to `z`, so the result is ASCII
/// too). [`KvError::InvalidKey`] for an empty prefix.
pub fn prefix_upper_bound(prefix: &str) -> Result<String, KvError> {
    let mut bytes = prefix.as_bytes().to_vec();
    let next = bytes.pop().and_then(|last| last.checked_add(1)).filter(u8::is_ascii);
    let Some(next) = next else { return Err(KvError::InvalidKey(prefix.to_owned())) };
    bytes.push(next);
    String::from_utf8(bytes).map_err(|_| KvError::InvalidKey(prefix.to_owned()))
}

/// A key's value, version and expiry after the batches a SQL KV applies in one transaction.
pub type FinalEntry<'a> = (&'a [u8], i64, Option<i64>);

/// Applies `writes`, whose conditions hold, at `now` to `live` (the live versions by key) and to
/// `finals` (each written key's final state, `None` when deleted), each put taking its version
/// from `next_version`; what each write did.
pub fn apply_writes<'a, K, E>(
    writes: &'a [KvWrite],
    now: i64,
    live: &mut HashMap<K, i64>,
    finals: &mut HashMap<&'a str, Option<FinalEntry<'a>>>,
    mut next_version: impl FnMut() -> Result<i64, E>,
) -> Result<Vec<Done>, E>
where
    K: From<&'a str> + Borrow<str> + Eq + Hash,
{
    let mut done = Vec::with_capacity(writes.len());
    for write in writes {
        match write {
            KvWrite::Put { key, value, ttl, .. } => {
                let version = next_version()?;
                let expires_at = ttl.map(|ttl| now.saturating_add(duration_millis(ttl)));
                live.insert(K::from(key.as_str()), version);
                finals.insert(key, Some((value.as_slice(), version, expires_at)));
                done.push(Done::Put(u64::try_from(version).unwrap_or(0)));
            }
            KvWrite::Delete { key, .. } => {
                let was_live = live.remove(key.as_str()).is_some();
                finals.insert(key, None);
                done.push(Done::Deleted(was_live));
            }
        }
    }
    Ok(done)
}

/// The current time in Unix milliseconds, as the SQL KVs store expiries (0 before 1970).
pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, duration_millis)
}

/// `d` in milliseconds, saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A KV row as the SQL KVs select it: key, value, version and expiry (Unix milliseconds).
pub type SqlRow = (String, Vec<u8>, i64, Option<i64>);

/// The entries of SQL rows ([`entry_from_row`] each).
pub fn entries_from_rows(rows: Vec<SqlRow>) -> Result<Vec<KvEntry>, KvError> {
    rows.into_iter()
        .map(|(k, v, version, expires)| entry_from_row(k, v, version, expires))
        .collect()
}

/// The one write of [`Kv::put`], its key and the size of its value checked.
pub fn put_write(
    key: &str,
    value: &[u8],
    condition: PutCondition,
    ttl: Option<Duration>,
) -> Result<KvWrite, KvError> {
    check_key(key)?;
    if value.len() > MAX_VALUE_LEN {
        return Err(KvError::ValueTooLarge { size: value.len(), max: MAX_VALUE_LEN });
    }
    Ok(KvWrite::Put { key: key.to_owned(), value: value.to_vec(), condition, ttl })
}

/// The keys a SQL KV's [`Kv::scan`] reads: from `lower` (itself excluded when `after`) up to
/// `upper` (excluded), at most `limit` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRange<'a> {
    /// The first key, or the key after which the range starts.
    pub lower: &'a str,
    /// Whether `lower` is the `after` key of the scan (excluded) rather than its prefix.
    pub after: bool,
    /// The bound above every key with the prefix ([`prefix_upper_bound`]).
    pub upper: String,
    /// Most rows.
    pub limit: i64,
}

/// The arguments of [`Kv::scan`] checked ([`check_scan`]) and turned into a [`ScanRange`];
/// `None` when `limit` is 0 (nothing to read).
pub fn scan_range<'a>(
    prefix: &'a str,
    after: Option<&'a str>,
    limit: usize,
) -> Result<Option<ScanRange<'a>>, KvError> {
    check_scan(prefix, after)?;
    if limit == 0 {
        return Ok(None);
    }
    let upper = prefix_upper_bound(prefix)?;
    let (lower, after) = match after {
        Some(after) if after >= prefix => (after, true),
        _ => (prefix, false),
    };
    Ok(Some(ScanRange { lower, after, upper, limit: i64::try_from(limit).unwrap_or(i64::MAX) }))
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Version (at least 1): higher after every write of the key, and never a version the key
    /// had before, even across a delete or an expiry, so a stale holder's versioned write or
    /// delete fails.
    pub version: u64,
    /// When the entry stops existing, if ever.
    pub expires_at: Option<SystemTime>,
}

/// When a put may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition {
    /// Always.
    Always,
    /// Only if the key does not exist (or has expired).
    IfAbsent,
    /// Only if the key exists at this version.
    IfVersion(u64),
}

/// Most writes in one [`Kv::write_batch`].
pub const MAX_BATCH: usize = 25;

/// One write of a [`Kv::write_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    /// Writes `value` at `key` if `condition` holds; `ttl` makes the entry expire.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// When it may happen.
        condition: PutCondition,
        /// Expiry, if any.
        ttl: Option<Duration>,
    },
    /// Deletes `key`. With a version, the key must exist at that version (else the batch fails);
    /// without one, deleting a missing key is not a failure.
    Delete {
        /// The key.
        key: String,
        /// The version it must have.
        version: Option<u64>,
    },
}

impl KvWrite {
    /// An unconditional put without expiry.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> KvWrite {
        KvWrite::Put {
            key: key.into(),
            value: value.into(),
            condition: PutCondition::Always,
            ttl: None,
        }
    }

    /// An unconditional delete.
    pub fn delete(key: impl Into<String>) -> KvWrite {
        KvWrite::Delete { key: key.into(), version: None }
    }

    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            KvWrite::Put { key, .. } | KvWrite::Delete { key, .. } => key,
        }
    }
}

/// What a [`Kv::write_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every condition held and every write happened: the new version of each put, `None` for
    /// each delete, in the order of the writes.
    Applied(Vec<Option<u64>>),
    /// The condition of the write at this index failed; nothing was written.
    ConditionFailed(usize),
}

/// Checks what every implementation must refuse in a batch: more than [`MAX_BATCH`] writes, the
/// same key twice, invalid keys, oversize values.
pub fn check_batch(writes: &[KvWrite]) -> Result<(), KvError> {
    if writes.len() > MAX_BATCH {
        return Err(KvError::InvalidBatch(format!(
            "{} writes; at most {MAX_BATCH} per batch",
            writes.len()
        )));
    }
    let mut keys = std::collections::HashSet::new();
    for write in writes {
        if !valid_key(write.key()) {
            return Err(KvError::InvalidKey(write.key().to_owned()));
        }
        if !keys.insert(write.key()) {
            return Err(KvError::InvalidBatch(format!("key {} is written twice", write.key())));
        }
        if let KvWrite::Put { value, .. } = write
            && value.len() > MAX_VALUE_LEN
        {
            return Err(KvError::ValueTooLarge { size: value.len(), max: MAX_VALUE_LEN });
        }
    }
    Ok(())
}

/// Why a KV call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The key has characters outside `[A-Za-z0-9-_:.]` or is too long or empty.
    #[error("invalid KV key {0:?}: expected 1..=512 of [A-Za-z0-9-_:.]")]
    InvalidKey(String),
    /// The value is larger than [`MAX_VALUE_LEN`].
    #[error("KV value of {size} bytes is larger than {max}")]
    ValueTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A batch the store refuses: too many writes or a key twice.
    #[error("invalid KV batch: {0}")]
    InvalidBatch(String),
    /// The backend cannot be reached or is busy.
    #[error("KV unavailable: {0}")]
    Unavailable(String),
    /// Any other backend failure.
    #[error("KV error: {0}")]
    Backend(String),
}

/// A key-value store with conditional writes, TTLs and ordered prefix scans.
#[async_trait::async_trait]
pub trait Kv: Send + Sync {
    /// The live (unexpired) entry at `key`.
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError>;
    /// Writes `value` at `key` if `condition` holds; `Ok(Some(version))` when written,
    /// `Ok(None)` when the condition failed. `ttl` makes the entry expire.
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        condition: PutCondition,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, KvError>;
    /// Deletes `key`, only at `version` when given; `true` when something was deleted.
    async fn delete(&self, key: &str, version: Option<u64>) -> Result<bool, KvError>;
    /// Applies `writes` atomically: all of them when every condition holds, none otherwise.
    /// Conditions are evaluated against the state before the batch. At most [`MAX_BATCH`]
    /// writes, each key at most once ([`check_batch`]).
    async fn write_batch(&self, writes: Vec<KvWrite>) -> Result<BatchOutcome, KvError>;
    /// Live entries whose key starts with `prefix` and sorts after `after`, in key (byte) order,
    /// at most `limit`. `prefix` and `after` follow the key rule (so the prefix is not empty).
    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError>;
    /// Answers when the store serves reads and writes (for `/ready`).
    async fn ping(&self) -> Result<(), KvError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bound_increments_the_last_character() {
        assert_eq!(prefix_upper_bound("cmd:").unwrap(), "cmd;");
        assert_eq!(prefix_upper_bound("a.z").unwrap(), "a.{");
        assert!(prefix_upper_bound("").is_err());
        assert!(check_key("a:b").is_ok() && check_key("a b").is_err());
    }
}
