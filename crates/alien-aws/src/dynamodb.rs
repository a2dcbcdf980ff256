//! The commands [`Kv`] on a DynamoDB table (`spec/clouds.md`): partition key `pk` =
//! `bucket_{fnv1a(key) % 16}`, sort key `sk` = the key, `value` (B), `version` (N), `ttl` (N,
//! epoch seconds: the table's TTL attribute, so DynamoDB deletes expired items eventually) and
//! `expms` (N, epoch milliseconds: the exact expiry). DynamoDB returns expired items until it
//! gets round to deleting them (days later), so every read, scan and condition here treats
//! `expms <= now` as absent itself.
//!
//! Versions are `max(previous + 1, microseconds since the epoch)`: unique across a delete or an
//! expiry as long as the clocks of the writers do not go back by more than the time between two
//! writes of a key. A put whose version would not be above the stored one (a writer with a
//! slower clock) is retried with `stored + 1`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alien_commands::kv::{MAX_BATCH, check_batch, valid_key};
use alien_commands::{BatchOutcome, Kv, KvEntry, KvError, KvWrite, PutCondition};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem,
};

use crate::config::AwsSettings;
use crate::error::{AwsFailure, classify};

/// Number of partition buckets keys are spread over.
pub const BUCKETS: u64 = 16;

/// How often a write is tried again when a concurrent transaction holds its item
/// (`TransactionConflict`, which DynamoDB reports instead of waiting).
const CONFLICT_RETRIES: usize = 8;

/// The partition a key lives in: `bucket_{fnv1a64(key) % 16}`.
pub fn bucket(key: &str) -> String {
    format!("bucket_{}", alien_commands::kv::fnv1a(key) % BUCKETS)
}

/// The commands KV on a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoKv {
    client: Client,
    table: String,
}

impl DynamoKv {
    /// The KV on `table`, reached with `settings` (no call is made: [`Kv::ping`] checks the table).
    pub async fn connect(table: &str, settings: &AwsSettings) -> DynamoKv {
        let sdk = settings.load().await;
        DynamoKv::with_client(Client::new(&sdk), table)
    }

    /// The KV on `table` through `client`.
    pub fn with_client(client: Client, table: &str) -> DynamoKv {
        DynamoKv { client, table: table.to_owned() }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table with this crate's layout (on-demand capacity, TTL on `ttl`), as the
    /// Terraform module does; for tests and first runs against an emulator.
    pub async fn create_table(&self) -> Result<(), KvError> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
            TimeToLiveSpecification,
        };
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| KvError::Backend(e.to_string()))
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| KvError::Backend(e.to_string()))
        };
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .send()
            .await
            .map_err(|e| kv_error(&classify("DynamoDB CreateTable", &e)))?;
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("ttl")
            .build()
            .map_err(|e| KvError::Backend(e.to_string()))?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| kv_error(&classify("DynamoDB UpdateTimeToLive", &e)))?;
        Ok(())
    }

    fn key_attrs(key: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(bucket(key))),
            ("sk".to_owned(), AttributeValue::S(key.to_owned())),
        ])
    }

    fn item(
        key: &str,
        value: &[u8],
        version: u64,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> HashMap<String, AttributeValue> {
        let mut item = Self::key_attrs(key);
        item.insert("value".into(), AttributeValue::B(Blob::new(value)));
        item.insert("version".into(), AttributeValue::N(version.to_string()));
        if let Some(ttl) = ttl {
            let expires = millis(now + ttl);
            // Whole seconds, rounded up: DynamoDB never deletes an item before it expires.
            item.insert("ttl".into(), AttributeValue::N(expires.div_ceil(1000).to_string()));
            item.insert("expms".into(), AttributeValue::N(expires.to_string()));
        }
        item
    }
}

/// The put condition of each [`PutCondition`] (names `#v`, `#e`; values `:now`, `:new`, `:v`).
///
/// - `Always`: absent, expired, or stored below the new version.
/// - `IfAbsent`: absent, or expired and stored below the new version.
/// - `IfVersion(v)`: live at `v`.
fn put_condition(condition: PutCondition) -> &'static str {
    match condition {
        PutCondition::Always => "attribute_not_exists(pk) OR #e <= :now OR #v < :new",
        PutCondition::IfAbsent => "attribute_not_exists(pk) OR (#e <= :now AND #v < :new)",
        PutCondition::IfVersion(_) => "#v = :v AND (attribute_not_exists(#e) OR #e > :now)",
    }
}

/// The condition of a delete at a version.
const DELETE_AT_VERSION: &str = "#v = :v AND (attribute_not_exists(#e) OR #e > :now)";

fn names(condition: &str) -> HashMap<String, String> {
    let mut names = HashMap::from([("#v".to_owned(), "version".to_owned())]);
    if condition.contains("#e") {
        names.insert("#e".to_owned(), "expms".to_owned());
    }
    names
}

fn num(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn millis(at: SystemTime) -> u64 {
    u64::try_from(at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// A version above `floor` and above every version this process handed out, from the clock.
fn next_version(floor: u64) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now =
        u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros())
            .unwrap_or(u64::MAX / 2);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1).max(floor + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

fn attr_u64(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// Whether a stored item is past its expiry at `now_ms`.
fn expired(item: &HashMap<String, AttributeValue>, now_ms: u64) -> bool {
    attr_u64(item, "expms").is_some_and(|e| e <= now_ms)
}

/// The entry of a stored item; `None` when it is expired or malformed.
fn entry(item: &HashMap<String, AttributeValue>, now_ms: u64) -> Option<KvEntry> {
    if expired(item, now_ms) {
        return None;
    }
    let key = match item.get("sk") {
        Some(AttributeValue::S(key)) => key.clone(),
        _ => return None,
    };
    let value = match item.get("value") {
        Some(AttributeValue::B(blob)) => blob.clone().into_inner(),
        _ => return None,
    };
    Some(KvEntry {
        key,
        value,
        version: attr_u64(item, "version")?,
        expires_at: attr_u64(item, "expms").map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
    })
}

fn kv_error(failure: &AwsFailure) -> KvError {
    if failure.transient {
        KvError::Unavailable(failure.message.clone())
    } else {
        KvError::Backend(failure.message.clone())
    }
}

/// One write of a batch as a transaction item, with the version it writes.
fn transact_item(
    table: &str,
    write: &KvWrite,
    floor: u64,
    now: SystemTime,
) -> Result<(TransactWriteItem, Option<u64>), KvError> {
    let build = |e: aws_sdk_dynamodb::error::BuildError| KvError::Backend(e.to_string());
    let now_ms = millis(now);
    match write {
        KvWrite::Put { key, value, condition, ttl } => {
            let floor = match condition {
                PutCondition::IfVersion(v) => floor.max(*v),
                _ => floor,
            };
            let version = next_version(floor);
            let expression = put_condition(*condition);
            let mut values = HashMap::from([(":now".to_owned(), num(now_ms))]);
            match condition {
                PutCondition::IfVersion(v) => {
                    values.insert(":v".into(), num(*v));
                }
                _ => {
                    values.insert(":new".into(), num(version));
                }
            }
            let put = Put::builder()
                .table_name(table)
                .set_item(Some(DynamoKv::item(key, value, version, *ttl, now)))
                .condition_expression(expression)
                .set_expression_attribute_names(Some(names(expression)))
                .set_expression_attribute_values(Some(values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(build)?;
            Ok((TransactWriteItem::builder().put(put).build(), Some(version)))
        }
        KvWrite::Delete { key, version } => {
            let mut delete =
                Delete::builder().table_name(table).set_key(Some(DynamoKv::key_attrs(key)));
            if let Some(v) = version {
                delete = delete
                    .condition_expression(DELETE_AT_VERSION)
                    .set_expression_attribute_names(Some(names(DELETE_AT_VERSION)))
                    .expression_attribute_values(":v", num(*v))
                    .expression_attribute_values(":now", num(now_ms));
            }
            Ok((TransactWriteItem::builder().delete(delete.build().map_err(build)?).build(), None))
        }
    }
}

/// Why a transaction was cancelled.
enum Cancelled {
    /// The condition of the write at this index failed; the stored item, if it was returned.
    Condition(usize, Option<HashMap<String, AttributeValue>>),
    /// Another transaction held an item: try again.
    Conflict,
}

fn cancellation(
    err: &SdkError<TransactWriteItemsError, impl std::fmt::Debug>,
) -> Option<Cancelled> {
    let SdkError::ServiceError(service) = err else { return None };
    match service.err() {
        TransactWriteItemsError::TransactionCanceledException(e) => {
            let reasons = e.cancellation_reasons();
            if let Some(i) = reasons.iter().position(|r| r.code() == Some("ConditionalCheckFailed"))
            {
                return Some(Cancelled::Condition(i, reasons[i].item().cloned()));
            }
            reasons
                .iter()
                .any(|r| r.code() == Some("TransactionConflict"))
                .then_some(Cancelled::Conflict)
        }
        TransactWriteItemsError::TransactionInProgressException(_) => Some(Cancelled::Conflict),
        _ => None,
    }
}

async fn backoff(attempt: usize) {
    let millis = 10u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

#[async_trait::async_trait]
impl Kv for DynamoKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        if !valid_key(key) {
            return Err(KvError::InvalidKey(key.to_owned()));
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_attrs(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| kv_error(&classify("DynamoDB GetItem", &e)))?;
        Ok(out.item().and_then(|item| entry(item, millis(SystemTime::now()))))
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        condition: PutCondition,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, KvError> {
        check_batch(&[KvWrite::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            condition,
            ttl,
        }])?;
        let mut floor = 0;
        for attempt in 0..CONFLICT_RETRIES {
            let now = SystemTime::now();
            let now_ms = millis(now);
            let expression = put_condition(condition);
            let version = next_version(match condition {
                PutCondition::IfVersion(v) => floor.max(v),
                _ => floor,
            });
            let mut request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(Self::item(key, value, version, ttl, now)))
                .condition_expression(expression)
                .set_expression_attribute_names(Some(names(expression)))
                .expression_attribute_values(":now", num(now_ms))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            request = match condition {
                PutCondition::IfVersion(v) => request.expression_attribute_values(":v", num(v)),
                _ => request.expression_attribute_values(":new", num(version)),
            };
            match request.send().await {
                Ok(_) => return Ok(Some(version)),
                Err(SdkError::ServiceError(service))
                    if matches!(
                        service.err(),
                        PutItemError::ConditionalCheckFailedException(_)
                    ) =>
                {
                    let PutItemError::ConditionalCheckFailedException(failed) = service.err()
                    else {
                        unreachable!("matched above")
                    };
                    let stored = failed.item();
                    // Refused only because the stored version is not below ours (a writer
                    // with a faster clock): go again above it, unless the condition itself
                    // failed.
                    let live = stored.is_some_and(|item| !expired(item, now_ms));
                    let retry = match condition {
                        PutCondition::Always => true,
                        PutCondition::IfAbsent => !live,
                        PutCondition::IfVersion(_) => false,
                    };
                    match stored.and_then(|item| attr_u64(item, "version")) {
                        Some(stored) if retry => floor = stored,
                        _ => return Ok(None),
                    }
                }
                Err(err) => {
                    let failure = classify("DynamoDB PutItem", &err);
                    if failure.code.as_deref() == Some("TransactionConflictException") {
                        backoff(attempt).await;
                        continue;
                    }
                    return Err(kv_error(&failure));
                }
            }
        }
        Err(KvError::Unavailable(format!("DynamoDB PutItem on {key}: kept conflicting")))
    }

    async fn delete(&self, key: &str, version: Option<u64>) -> Result<bool, KvError> {
        if !valid_key(key) {
            return Err(KvError::InvalidKey(key.to_owned()));
        }
        let now_ms = millis(SystemTime::now());
        let mut request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_attrs(key)))
            .return_values(ReturnValue::AllOld);
        if let Some(v) = version {
            request = request
                .condition_expression(DELETE_AT_VERSION)
                .set_expression_attribute_names(Some(names(DELETE_AT_VERSION)))
                .expression_attribute_values(":v", num(v))
                .expression_attribute_values(":now", num(now_ms));
        }
        match request.send().await {
            Ok(out) => Ok(out.attributes().is_some_and(|old| !expired(old, now_ms))),
            Err(err) => {
                let failure = classify("DynamoDB DeleteItem", &err);
                if failure.code.as_deref() == Some("ConditionalCheckFailedException") {
                    Ok(false)
                } else {
                    Err(kv_error(&failure))
                }
            }
        }
    }

    async fn write_batch(&self, writes: Vec<KvWrite>) -> Result<BatchOutcome, KvError> {
        check_batch(&writes)?;
        if writes.is_empty() {
            return Ok(BatchOutcome::Applied(Vec::new()));
        }
        debug_assert!(writes.len() <= MAX_BATCH);
        let mut floors = vec![0u64; writes.len()];
        for attempt in 0..CONFLICT_RETRIES * 2 {
            let now = SystemTime::now();
            let mut items = Vec::with_capacity(writes.len());
            let mut versions = Vec::with_capacity(writes.len());
            for (write, floor) in writes.iter().zip(&floors) {
                let (item, version) = transact_item(&self.table, write, *floor, now)?;
                items.push(item);
                versions.push(version);
            }
            let result =
                self.client.transact_write_items().set_transact_items(Some(items)).send().await;
            let err = match result {
                Ok(_) => return Ok(BatchOutcome::Applied(versions)),
                Err(err) => err,
            };
            match cancellation(&err) {
                Some(Cancelled::Condition(i, stored)) => {
                    let now_ms = millis(now);
                    let live = stored.as_ref().is_some_and(|item| !expired(item, now_ms));
                    let retry = match &writes[i] {
                        KvWrite::Put { condition: PutCondition::Always, .. } => true,
                        KvWrite::Put { condition: PutCondition::IfAbsent, .. } => !live,
                        _ => false,
                    };
                    match stored.as_ref().and_then(|item| attr_u64(item, "version")) {
                        Some(stored) if retry => floors[i] = stored,
                        _ => return Ok(BatchOutcome::ConditionFailed(i)),
                    }
                }
                Some(Cancelled::Conflict) => backoff(attempt).await,
                None => return Err(kv_error(&classify("DynamoDB TransactWriteItems", &err))),
            }
        }
        Err(KvError::Unavailable("DynamoDB TransactWriteItems: kept conflicting".into()))
    }

    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        alien_commands::kv::check_scan(prefix, after)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lower = match after {
            Some(after) if after > prefix => after.to_owned(),
            _ => prefix.to_owned(),
        };
        // '~' sorts above every key character, so this bounds the keys starting with prefix.
        let upper = format!("{prefix}~");
        if lower > upper {
            return Ok(Vec::new());
        }
        let now_ms = millis(SystemTime::now());
        let queries = (0..BUCKETS).map(|b| {
            self.scan_bucket(format!("bucket_{b}"), prefix, after, &lower, &upper, limit, now_ms)
        });
        let mut entries: Vec<KvEntry> = Vec::new();
        for found in futures_util::future::join_all(queries).await {
            entries.extend(found?);
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.truncate(limit);
        Ok(entries)
    }

    async fn ping(&self) -> Result<(), KvError> {
        match self.client.describe_table().table_name(&self.table).send().await {
            Ok(_) => Ok(()),
            Err(err) => {
                let failure = classify("DynamoDB DescribeTable", &err);
                if failure.code.as_deref() == Some("ResourceNotFoundException") {
                    Err(KvError::Unavailable(format!(
                        "DynamoDB table {} does not exist (or this identity cannot see it): \
                         create it (infra/aws) or fix [commands] kv tableName/region",
                        self.table
                    )))
                } else {
                    Err(kv_error(&failure))
                }
            }
        }
    }
}

impl DynamoKv {
    /// Up to `limit` live entries of one bucket in `[lower, upper]`, excluding `after`.
    #[allow(clippy::too_many_arguments)] // one query's bounds, spelled out
    async fn scan_bucket(
        &self,
        pk: String,
        prefix: &str,
        after: Option<&str>,
        lower: &str,
        upper: &str,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<KvEntry>, KvError> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = i32::try_from(limit.saturating_add(1).min(1000)).unwrap_or(1000);
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .expression_attribute_values(":lo", AttributeValue::S(lower.to_owned()))
                .expression_attribute_values(":hi", AttributeValue::S(upper.to_owned()))
                .limit(page)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| kv_error(&classify("DynamoDB Query", &e)))?;
            for item in out.items() {
                if let Some(entry) = entry(item, now_ms)
                    && entry.key.starts_with(prefix)
                    && after.is_none_or(|after| entry.key.as_str() > after)
                {
                    found.push(entry);
                }
            }
            match out.last_evaluated_key() {
                Some(key) if found.len() < limit => start = Some(key.clone()),
                _ => return Ok(found),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_fnv1a_mod_16() {
        // FNV-1a 64 of "" is the offset basis; of "a" a published test vector.
        assert_eq!(bucket(""), format!("bucket_{}", 0xcbf2_9ce4_8422_2325u64 % 16));
        assert_eq!(bucket("a"), format!("bucket_{}", 0xaf63_dc4c_8601_ec8cu64 % 16));
        let spread: std::collections::HashSet<String> =
            (0..200).map(|i| bucket(&format!("cmd:{i}"))).collect();
        assert_eq!(spread.len(), 16, "keys reach every bucket");
    }

    #[test]
    fn versions_rise_above_the_floor_and_each_other() {
        let a = next_version(0);
        let b = next_version(0);
        assert!(b > a);
        let high = u64::MAX / 4;
        assert_eq!(next_version(high), high + 1);
        assert!(next_version(0) > high + 1, "never below a version already handed out");
    }

    #[test]
    fn expired_items_read_as_absent() {
        let now = SystemTime::now();
        let item = DynamoKv::item("k", b"v", 7, Some(Duration::from_secs(1)), now);
        let now_ms = millis(now);
        let live = entry(&item, now_ms).unwrap();
        assert_eq!((live.key.as_str(), live.value.as_slice(), live.version), ("k", &b"v"[..], 7));
        assert_eq!(live.expires_at, Some(UNIX_EPOCH + Duration::from_millis(now_ms + 1000)));
        assert!(entry(&item, now_ms + 1000).is_none());
        let AttributeValue::N(ttl) = &item["ttl"] else { panic!() };
        assert_eq!(ttl.parse::<u64>().unwrap(), (now_ms + 1000).div_ceil(1000));
    }
}
