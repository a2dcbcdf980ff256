//! How values sit in columns, and how lists are paged.
//!
//! Timestamps are Unix milliseconds, ids and enums their text, structured values JSON; a value
//! that cannot be decoded is [`StoreError::Corrupt`] naming its column. Sensitive values are
//! sealed with the store's [`Sealer`], bound to `table/column/row-id` so that a sealed value
//! cannot be moved to another row. Lists are paged by keyset: an opaque cursor
//! (base64url of `<list>:<millis>:<id>`) and one extra row fetched to know whether a next page
//! exists.

use std::fmt;
use std::str::FromStr;

use alien_core::{Id, TokenType};
use alien_store::{Page, PageRequest, StoreError, StoreResult};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::seal::Sealer;

// ---- sealed columns ----

pub(crate) fn seal(sealer: &Sealer, aad: &str, plaintext: &[u8]) -> StoreResult<String> {
    sealer.seal(aad, plaintext).map_err(|e| StoreError::Database(format!("sealing {aad}: {e}")))
}

pub(crate) fn open_sealed(sealer: &Sealer, aad: &str, sealed: &str) -> StoreResult<String> {
    sealer.open_string(aad, sealed).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn reseal(old: &Sealer, new: &Sealer, aad: &str, sealed: &str) -> StoreResult<String> {
    let plain = old.open(aad, sealed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    seal(new, aad, &plain)
}

pub(crate) fn token_aad(deployment_id: &str) -> String {
    format!("deployments/token/{deployment_id}")
}

pub(crate) fn variable_aad(deployment_id: &str, name: &str) -> String {
    format!("deployment_variables/value/{deployment_id}/{name}")
}

// ---- encoding of columns ----

pub(crate) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn time(column: &str, millis: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: {millis} is not a timestamp")))
}

pub(crate) fn opt_time(column: &str, millis: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    millis.map(|m| time(column, m)).transpose()
}

pub(crate) fn id(column: &str, value: &str) -> StoreResult<Id> {
    Id::parse_any(value).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

pub(crate) fn opt_id(column: &str, value: Option<&str>) -> StoreResult<Option<Id>> {
    value.map(|v| id(column, v)).transpose()
}

pub(crate) fn parse<T: FromStr>(column: &str, value: &str) -> StoreResult<T>
where
    T::Err: fmt::Display,
{
    value.parse().map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

pub(crate) fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

pub(crate) fn opt_from_json<T: DeserializeOwned>(
    column: &str,
    text: Option<&str>,
) -> StoreResult<Option<T>> {
    text.map(|t| from_json(column, t)).transpose()
}

pub(crate) fn to_json<T: Serialize + ?Sized>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Database(format!("cannot encode {what} as JSON: {e}")))
}

pub(crate) fn opt_to_json<T: Serialize>(
    what: &str,
    value: Option<&T>,
) -> StoreResult<Option<String>> {
    value.map(|v| to_json(what, v)).transpose()
}

pub(crate) fn token_type(value: &str) -> StoreResult<TokenType> {
    TokenType::ALL
        .into_iter()
        .find(|kind| kind.as_str() == value)
        .ok_or_else(|| StoreError::Corrupt(format!("tokens.token_type: unknown {value:?}")))
}

pub(crate) fn count(column: &str, value: i64) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value} out of range")))
}

// ---- cursors: base64url("<list>:<millis>:<id>") ----

pub(crate) fn encode_cursor(list: &str, millis: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}:{millis}:{id}"))
}

pub(crate) fn decode_cursor(list: &str, cursor: &str) -> StoreResult<(i64, String)> {
    let bad = || StoreError::BadCursor(format!("{cursor:.64} is not a cursor of this list"));
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ':');
    if parts.next() != Some(list) {
        return Err(bad());
    }
    let millis = parts.next().and_then(|m| m.parse::<i64>().ok()).ok_or_else(bad)?;
    let id = parts.next().ok_or_else(bad)?;
    Ok((millis, id.to_owned()))
}

pub(crate) fn limit_of(page: &PageRequest) -> i64 {
    i64::from(page.effective_limit())
}

/// Cuts one extra fetched row off and makes the cursor of the last item kept.
pub(crate) fn into_page<R, T>(
    mut rows: Vec<R>,
    limit: i64,
    key: impl Fn(&R) -> String,
    convert: impl Fn(R) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(&key)
    } else {
        None
    };
    let items = rows.into_iter().map(convert).collect::<StoreResult<Vec<T>>>()?;
    Ok(Page { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_other_lists_and_garbage() {
        let cursor = encode_cursor("d", 1_700_000_000_123, "dep_abc");
        assert_eq!(decode_cursor("d", &cursor).unwrap(), (1_700_000_000_123, "dep_abc".into()));
        for bad in [cursor.as_str(), "", "!!", "ZDox", &URL_SAFE_NO_PAD.encode("g:x:y")] {
            assert!(matches!(decode_cursor("g", bad), Err(StoreError::BadCursor(_))), "{bad}");
        }
    }
}
