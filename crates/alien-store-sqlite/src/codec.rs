//! How values sit in columns, and how lists are paged.
//!
//! Timestamps are Unix milliseconds, ids and enums their text, structured values JSON; a value
//! that cannot be decoded is [`StoreError::Corrupt`] naming its column. Sensitive values are
//! sealed with the store's [`Sealer`], bound to `table/column/row-id` so that a sealed value
//! cannot be moved to another row. Lists are paged by keyset: an opaque cursor
//! (`alien_store::encode_cursor` positions) and one extra row fetched to know whether a next page
//! exists.

use std::fmt;
use std::str::FromStr;

use alien_core::{Id, TokenType};
use alien_store::{Page, PageRequest, StoreError, StoreResult};
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

// ---- cursors: `alien_store::encode_cursor` positions; lists are named by a letter ----

/// The kind of ids of list `list` (`d`, `g`, `r`; the audit log `a` has none).
fn list_kind(list: &str) -> Option<alien_core::IdKind> {
    match list {
        "d" => Some(alien_core::IdKind::Deployment),
        "g" => Some(alien_core::IdKind::DeploymentGroup),
        "r" => Some(alien_core::IdKind::Release),
        _ => None,
    }
}

pub(crate) fn encode_cursor(list: &str, millis: i64, id: &str) -> String {
    alien_store::encode_cursor(millis, list_kind(list).map(|_| id))
}

pub(crate) fn decode_cursor(list: &str, cursor: &str) -> StoreResult<(i64, String)> {
    let (position, id) = alien_store::decode_cursor(cursor, list_kind(list))?;
    Ok((position, id.map(|id| id.to_string()).unwrap_or_default()))
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
        let dep = alien_core::Id::new(alien_core::IdKind::Deployment).to_string();
        let cursor = encode_cursor("d", 1_700_000_000_123, &dep);
        assert_eq!(cursor, format!("1700000000123.{dep}"));
        assert_eq!(decode_cursor("d", &cursor).unwrap(), (1_700_000_000_123, dep.clone()));
        assert_eq!(decode_cursor("a", &encode_cursor("a", 42, "")).unwrap(), (42, String::new()));
        let too_long = format!("1234567890123456.{dep}");
        let negative = format!("-1.{dep}");
        for bad in [cursor.as_str(), "", "!!", "1.", ".x", "12", "1.dep_x", &too_long, &negative] {
            assert!(matches!(decode_cursor("g", bad), Err(StoreError::BadCursor(_))), "{bad}");
        }
        for bad in ["", "1.2", "x", "1234567890123456", "-1"] {
            assert!(matches!(decode_cursor("a", bad), Err(StoreError::BadCursor(_))), "{bad}");
        }
    }
}
