//! The commands [`Kv`] on Azure Table Storage, over its REST API (OData JSON).
//!
//! Layout: one entity per key in one partition, `PartitionKey = "kv"`, `RowKey` = the key, with
//! `Value` (Edm.Binary), `Version` (Edm.Int64) and, for keys that expire, `ExpiresMs` (Edm.Int64,
//! epoch milliseconds). Table Storage has no TTL: expired entities stay until overwritten or
//! deleted, so every read, scan and condition treats `ExpiresMs <= now` as absent.
//!
//! **One partition**, not hash buckets: an atomic batch is an entity-group transaction, which
//! Table Storage allows within one partition only, and the commands engine's batches mix keys
//! of every kind. A partition serves about 2,000 entities a second (Azure's scalability target),
//! which bounds the commands a manager can run on Table Storage (docs/azure.md).
//!
//! Versions are `max(previous + 1, microseconds since the epoch)`, never reused after a delete or
//! an expiry as long as writers' clocks do not go back by more than the time between two writes.
//! Every conditional write reads the entity, checks the condition on it, and writes with
//! `If-Match` its ETag (or inserts, which fails if it appeared): a concurrent change makes the
//! write fail (412/409) and the read-check-write start over.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alien_commands::kv::{check_batch, valid_key};
use alien_commands::{BatchOutcome, Kv, KvEntry, KvError, KvWrite, PutCondition};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::storage::{StorageAccount, StorageService, ms_date};

/// The one partition of the KV.
pub const PARTITION: &str = "kv";
/// The storage service version the requests speak.
const VERSION: &str = "2019-02-02";
/// How often a read-check-write starts over after losing to a concurrent writer.
const RACE_RETRIES: usize = 40;

/// The commands KV on a table.
#[derive(Clone)]
pub struct TableKv {
    account: StorageAccount,
    table: String,
    http: reqwest::Client,
    /// Entra ID tokens for storage, when there is no account key.
    tokens: Option<std::sync::Arc<dyn crate::entra::TokenSource>>,
}

impl std::fmt::Debug for TableKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableKv")
            .field("account", &self.account)
            .field("table", &self.table)
            .field("tokens", &self.tokens.as_ref().map(|t| t.describe()))
            .finish()
    }
}

/// The resource of Entra ID tokens for Azure Storage.
pub const STORAGE_RESOURCE: &str = "https://storage.azure.com/";

/// An entity as read.
#[derive(Debug, Clone)]
struct Entity {
    value: Vec<u8>,
    version: u64,
    expires_ms: Option<u64>,
    etag: String,
}

impl Entity {
    fn live(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|at| at > now_ms)
    }
}

/// A failed call: HTTP status (none without an answer) and Azure's error code and message.
#[derive(Debug, Clone)]
struct Failure {
    status: Option<StatusCode>,
    code: String,
    message: String,
}

impl Failure {
    fn transient(&self) -> bool {
        self.status.is_none_or(|s| s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS)
    }

    /// Lost to a concurrent writer: the ETag moved (412) or the entity appeared (409).
    fn raced(&self) -> bool {
        matches!(self.status, Some(StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT))
    }
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis())
        .unwrap_or(u64::MAX)
}

fn now_us() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros())
        .unwrap_or(u64::MAX)
}

/// A version above `previous`.
fn next_version(previous: Option<u64>) -> u64 {
    now_us().max(previous.map_or(1, |p| p.saturating_add(1)))
}

/// An OData string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl TableKv {
    /// The KV in `table` of storage account `account` (at `endpoint_url` when given). No call is
    /// made: [`Kv::ping`] checks the table.
    pub fn new(account: &str, table: &str, endpoint_url: Option<&str>) -> Result<TableKv, String> {
        let account = StorageAccount::resolve(StorageService::Table, account, endpoint_url)?;
        // Without an account key, the environment's Entra ID identity (role `Storage Table Data
        // Contributor`); `infra/azure` turns Shared Key off.
        let tokens =
            account.key.is_none().then(|| crate::entra::ambient_token_source(STORAGE_RESOURCE));
        Ok(TableKv { account, table: table.to_owned(), http: reqwest::Client::new(), tokens })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn describe(&self) -> String {
        format!("table `{}` of storage account {}", self.table, self.account.account)
    }

    fn error(&self, what: &str, failure: &Failure) -> KvError {
        let status = failure.status.map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        let message = format!(
            "Table Storage {what} ({}): {status} {}: {}",
            self.describe(),
            failure.code,
            failure.message
        );
        if failure.transient() { KvError::Unavailable(message) } else { KvError::Backend(message) }
    }

    /// A request on `path` (after the account, starting with `/`) with `query`, signed.
    fn request(&self, method: Method, path: &str, query: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}{query}", self.account.base);
        let date = ms_date(chrono::Utc::now());
        let mut request = self
            .http
            .request(method, url)
            .header("x-ms-date", &date)
            .header("x-ms-version", VERSION)
            .header("DataServiceVersion", "3.0;NetFx")
            .header("MaxDataServiceVersion", "3.0;NetFx")
            .header("Accept", "application/json;odata=minimalmetadata");
        if let Some(authorization) = self.account.table_authorization(path, &date) {
            request = request.header("Authorization", authorization);
        }
        request
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let request = match &self.tokens {
            Some(tokens) => {
                let token = tokens.token().await.map_err(|e| Failure {
                    status: None,
                    code: "EntraToken".into(),
                    message: format!("getting a storage token ({}): {e}", tokens.describe()),
                })?;
                request.bearer_auth(token.secret())
            }
            None => request,
        };
        let response = request.send().await.map_err(|e| Failure {
            status: None,
            code: "Transport".into(),
            message: e.to_string(),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or_default();
        let error = &body["odata.error"];
        Err(Failure {
            status: Some(status),
            code: error["code"].as_str().unwrap_or("").to_owned(),
            message: error["message"]["value"]
                .as_str()
                .map_or_else(|| text.chars().take(200).collect(), str::to_owned),
        })
    }

    fn entity_path(&self, key: &str) -> String {
        let id = format!("PartitionKey={},RowKey={}", literal(PARTITION), literal(key));
        format!(
            "/{}({})",
            self.table,
            percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
        )
    }

    /// Creates the table (for tests and first runs against an emulator); one that exists is
    /// fine.
    pub async fn create_table(&self) -> Result<(), KvError> {
        let request =
            self.request(Method::POST, "/Tables", "").json(&json!({"TableName": self.table}));
        match self.send(request).await {
            Ok(_) => Ok(()),
            Err(f) if f.status == Some(StatusCode::CONFLICT) => Ok(()),
            Err(f) => Err(self.error("create table", &f)),
        }
    }

    fn body(&self, key: &str, value: &[u8], version: u64, ttl: Option<Duration>) -> Value {
        let mut body = json!({
            "PartitionKey": PARTITION, "RowKey": key,
            "Value": STANDARD.encode(value), "Value@odata.type": "Edm.Binary",
            "Version": version.to_string(), "Version@odata.type": "Edm.Int64",
        });
        if let Some(ttl) = ttl {
            let at = now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            body["ExpiresMs"] = json!(at.to_string());
            body["ExpiresMs@odata.type"] = json!("Edm.Int64");
        }
        body
    }

    /// The entities of `keys` that exist (expired ones included), by key.
    async fn read(&self, keys: &[&str]) -> Result<HashMap<String, Entity>, Failure> {
        let mut found = HashMap::new();
        if keys.is_empty() {
            return Ok(found);
        }
        let rows: Vec<String> = keys.iter().map(|k| format!("RowKey eq {}", literal(k))).collect();
        let filter = format!("PartitionKey eq {} and ({})", literal(PARTITION), rows.join(" or "));
        for (key, entity) in self.query(&filter, None).await? {
            found.insert(key, entity);
        }
        Ok(found)
    }

    /// Entities matching `filter` in RowKey order, at most `top` (every page otherwise).
    async fn query(
        &self,
        filter: &str,
        top: Option<usize>,
    ) -> Result<Vec<(String, Entity)>, Failure> {
        let mut out = Vec::new();
        let mut next: Option<(String, String)> = None;
        loop {
            let mut query = format!(
                "?$filter={}",
                percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC)
            );
            if let Some(top) = top {
                query.push_str(&format!("&$top={}", top.saturating_sub(out.len()).clamp(1, 1000)));
            }
            if let Some((partition, row)) = &next {
                query.push_str(&format!("&NextPartitionKey={partition}&NextRowKey={row}"));
            }
            let path = format!("/{}()", self.table);
            let response = self.send(self.request(Method::GET, &path, &query)).await?;
            let header = |name: &str| {
                response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
            };
            next = header("x-ms-continuation-NextPartitionKey")
                .zip(header("x-ms-continuation-NextRowKey"));
            let body: Value = response.json().await.map_err(|e| Failure {
                status: None,
                code: "Decode".into(),
                message: e.to_string(),
            })?;
            for item in body["value"].as_array().cloned().unwrap_or_default() {
                if let Some(parsed) = parse(&item) {
                    out.push(parsed);
                }
            }
            if next.is_none() || top.is_some_and(|t| out.len() >= t) {
                return Ok(out);
            }
        }
    }

    /// One attempt at `writes`: read, check, write conditionally. `None` when a concurrent
    /// writer won a race and the attempt must start over.
    async fn attempt(
        &self,
        writes: &[KvWrite],
    ) -> Result<Option<(BatchOutcome, Vec<bool>)>, Failure> {
        let keys: Vec<&str> = writes.iter().map(KvWrite::key).collect();
        let current = self.read(&keys).await?;
        let now = now_ms();
        let mut ops = Vec::with_capacity(writes.len());
        let mut versions = Vec::with_capacity(writes.len());
        let mut was_live = Vec::with_capacity(writes.len());
        for (index, write) in writes.iter().enumerate() {
            let entity = current.get(write.key());
            let live = entity.filter(|e| e.live(now));
            was_live.push(live.is_some());
            let holds = match write {
                KvWrite::Put { condition: PutCondition::Always, .. } => true,
                KvWrite::Put { condition: PutCondition::IfAbsent, .. } => live.is_none(),
                KvWrite::Put { condition: PutCondition::IfVersion(v), .. }
                | KvWrite::Delete { version: Some(v), .. } => live.is_some_and(|e| e.version == *v),
                KvWrite::Delete { version: None, .. } => true,
            };
            if !holds {
                return Ok(Some((BatchOutcome::ConditionFailed(index), was_live)));
            }
            match write {
                KvWrite::Put { key, value, ttl, .. } => {
                    let version = next_version(entity.map(|e| e.version));
                    versions.push(Some(version));
                    let body = self.body(key, value, version, *ttl);
                    ops.push(match entity {
                        Some(e) => Op::Replace { key: key.clone(), etag: e.etag.clone(), body },
                        None => Op::Insert { body },
                    });
                }
                KvWrite::Delete { key, .. } => {
                    versions.push(None);
                    if let Some(e) = entity {
                        ops.push(Op::Delete { key: key.clone(), etag: e.etag.clone() });
                    }
                }
            }
        }
        let result = match ops.as_slice() {
            [] => Ok(()),
            [op] => self.single(op).await,
            _ => self.batch(&ops).await,
        };
        match result {
            Ok(()) => Ok(Some((BatchOutcome::Applied(versions), was_live))),
            Err(failure) if failure.raced() => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    async fn single(&self, op: &Op) -> Result<(), Failure> {
        let request = match op {
            Op::Insert { body } => self
                .request(Method::POST, &format!("/{}", self.table), "")
                .header("Prefer", "return-no-content")
                .json(body),
            Op::Replace { key, etag, body } => self
                .request(Method::PUT, &self.entity_path(key), "")
                .header("If-Match", etag)
                .json(body),
            Op::Delete { key, etag } => {
                self.request(Method::DELETE, &self.entity_path(key), "").header("If-Match", etag)
            }
        };
        match self.send(request).await {
            Ok(_) => Ok(()),
            // Deleting what is already gone: the read saw it, a concurrent delete won.
            Err(f)
                if f.status == Some(StatusCode::NOT_FOUND) && matches!(op, Op::Delete { .. }) =>
            {
                Err(Failure { status: Some(StatusCode::PRECONDITION_FAILED), ..f })
            }
            Err(f) => Err(f),
        }
    }

    /// `ops` as one entity-group transaction (`$batch` with one changeset).
    async fn batch(&self, ops: &[Op]) -> Result<(), Failure> {
        let batch = format!("batch_{}", uuid::Uuid::new_v4().simple());
        let changeset = format!("changeset_{}", uuid::Uuid::new_v4().simple());
        let mut body =
            format!("--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n");
        for (index, op) in ops.iter().enumerate() {
            let (method, path, etag, json) = match op {
                Op::Insert { body } => ("POST", format!("/{}", self.table), None, Some(body)),
                Op::Replace { key, etag, body } => {
                    ("PUT", self.entity_path(key), Some(etag), Some(body))
                }
                Op::Delete { key, etag } => ("DELETE", self.entity_path(key), Some(etag), None),
            };
            body.push_str(&format!(
                "--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
                 {method} {}{path} HTTP/1.1\r\nContent-ID: {}\r\nAccept: application/json;odata=minimalmetadata\r\n\
                 DataServiceVersion: 3.0;\r\n",
                self.account.base,
                index + 1
            ));
            if let Some(etag) = etag {
                body.push_str(&format!("If-Match: {etag}\r\n"));
            }
            match json {
                Some(json) => {
                    let json = json.to_string();
                    body.push_str(&format!(
                        "Content-Type: application/json\r\nPrefer: return-no-content\r\nContent-Length: {}\r\n\r\n{json}\r\n",
                        json.len()
                    ));
                }
                None => body.push_str("\r\n"),
            }
        }
        body.push_str(&format!("--{changeset}--\r\n--{batch}--\r\n"));
        let request = self
            .request(Method::POST, "/$batch", "")
            .header("Content-Type", format!("multipart/mixed; boundary={batch}"))
            .body(body);
        let response = self.send(request).await?;
        let text = response.text().await.map_err(|e| Failure {
            status: None,
            code: "Transport".into(),
            message: e.to_string(),
        })?;
        // The changeset's answers: each `HTTP/1.1 NNN`; a failed changeset answers one error.
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("HTTP/1.1 ") else { continue };
            let code: u16 = rest.split(' ').next().and_then(|c| c.parse().ok()).unwrap_or(500);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if !status.is_success() {
                let status = if status == StatusCode::NOT_FOUND {
                    // An entity read in the attempt was deleted since: a race.
                    StatusCode::PRECONDITION_FAILED
                } else {
                    status
                };
                return Err(Failure {
                    status: Some(status),
                    code: "BatchOperationFailed".into(),
                    message: rest.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// `writes` read-checked-written until no concurrent writer interferes.
    async fn transact(&self, writes: &[KvWrite]) -> Result<(BatchOutcome, Vec<bool>), KvError> {
        for attempt in 0..RACE_RETRIES {
            match self.attempt(writes).await.map_err(|f| self.error("write", &f))? {
                Some(outcome) => return Ok(outcome),
                None => backoff(attempt).await,
            }
        }
        Err(KvError::Unavailable(format!(
            "{}: a write lost {RACE_RETRIES} times to concurrent writers",
            self.describe()
        )))
    }
}

/// A write of an attempt.
enum Op {
    Insert { body: Value },
    Replace { key: String, etag: String, body: Value },
    Delete { key: String, etag: String },
}

/// The key and fields of a query's entity.
fn parse(item: &Value) -> Option<(String, Entity)> {
    let key = item["RowKey"].as_str()?.to_owned();
    let number = |v: &Value| match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    let value = match item.get("Value") {
        Some(Value::String(b64)) => STANDARD.decode(b64).ok()?,
        _ => Vec::new(),
    };
    let version = number(&item["Version"])?;
    let expires_ms = item.get("ExpiresMs").and_then(number);
    let etag = item["odata.etag"].as_str()?.to_owned();
    Some((key, Entity { value, version, expires_ms, etag }))
}

async fn backoff(attempt: usize) {
    let jitter = u64::from(
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_micros() % 7,
    );
    tokio::time::sleep(Duration::from_millis((2u64 << attempt.min(5)) + jitter)).await;
}

fn entry(key: String, entity: Entity) -> KvEntry {
    KvEntry {
        key,
        value: entity.value,
        version: entity.version,
        expires_at: entity.expires_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
    }
}

#[async_trait::async_trait]
impl Kv for TableKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        if !valid_key(key) {
            return Err(KvError::InvalidKey(key.to_owned()));
        }
        let mut found = self.read(&[key]).await.map_err(|f| self.error("read", &f))?;
        let now = now_ms();
        Ok(found.remove(key).filter(|e| e.live(now)).map(|e| entry(key.to_owned(), e)))
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
        match self.transact(&[write]).await?.0 {
            BatchOutcome::Applied(versions) => Ok(versions.into_iter().next().flatten()),
            BatchOutcome::ConditionFailed(_) => Ok(None),
        }
    }

    async fn delete(&self, key: &str, version: Option<u64>) -> Result<bool, KvError> {
        if !valid_key(key) {
            return Err(KvError::InvalidKey(key.to_owned()));
        }
        match self.transact(&[KvWrite::Delete { key: key.to_owned(), version }]).await? {
            (BatchOutcome::Applied(_), was_live) => Ok(was_live.first().copied().unwrap_or(false)),
            (BatchOutcome::ConditionFailed(_), _) => Ok(false),
        }
    }

    async fn write_batch(&self, writes: Vec<KvWrite>) -> Result<BatchOutcome, KvError> {
        check_batch(&writes)?;
        Ok(self.transact(&writes).await?.0)
    }

    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KvEntry>, KvError> {
        alien_commands::kv::check_scan(prefix, after)?;
        let mut lower = match after {
            Some(after) if after >= prefix => format!("RowKey gt {}", literal(after)),
            _ => format!("RowKey ge {}", literal(prefix)),
        };
        let upper = format!("RowKey lt {}", literal(&format!("{prefix}~")));
        let now = now_ms();
        let mut out = Vec::new();
        while out.len() < limit {
            let want = (limit - out.len()).clamp(1, 1000);
            let filter = format!("PartitionKey eq {} and {lower} and {upper}", literal(PARTITION));
            let page =
                self.query(&filter, Some(want)).await.map_err(|f| self.error("query", &f))?;
            let full = page.len() >= want;
            for (key, entity) in page {
                lower = format!("RowKey gt {}", literal(&key));
                if entity.live(now) && key.starts_with(prefix) {
                    out.push(entry(key, entity));
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
        let filter = format!("PartitionKey eq {}", literal("ping"));
        match self.query(&filter, Some(1)).await {
            Ok(_) => Ok(()),
            Err(f) if f.status == Some(StatusCode::NOT_FOUND) => {
                Err(KvError::Unavailable(format!(
                    "{} does not exist (or this identity cannot see it): create it (infra/azure) or \
                 fix [commands] kv tableName/accountName",
                    self.describe()
                )))
            }
            Err(f) => Err(self.error("query", &f)),
        }
    }
}
