//! How store values sit in database columns, for every SQL backend: timestamps are Unix
//! milliseconds, ids and enums their text, structured values JSON; a value that cannot be decoded
//! is [`StoreError::Corrupt`] naming its column. And how lists are paged: by keyset, with an
//! opaque cursor ([`encode_cursor`](crate::encode_cursor) positions; lists are named by a letter:
//! `d` deployments, `g` groups, `r` releases, `a` the audit log) and one extra row fetched to know
//! whether a next page exists. No database types here: a backend binds and reads plain values.

use std::fmt;
use std::str::FromStr;

use alien_core::{Id, TokenType};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Page, PageRequest, StoreError, StoreResult};

// ---- encoding of columns ----

/// The current time in Unix milliseconds.
pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// A timestamp column (Unix milliseconds).
pub fn time(column: &str, millis: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: {millis} is not a timestamp")))
}

/// A nullable timestamp column.
pub fn opt_time(column: &str, millis: Option<i64>) -> StoreResult<Option<DateTime<Utc>>> {
    millis.map(|m| time(column, m)).transpose()
}

/// An id column.
pub fn id(column: &str, value: &str) -> StoreResult<Id> {
    Id::parse_any(value).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A nullable id column.
pub fn opt_id(column: &str, value: Option<&str>) -> StoreResult<Option<Id>> {
    value.map(|v| id(column, v)).transpose()
}

/// A column holding the text of an enum (`FromStr`).
pub fn parse<T: FromStr>(column: &str, value: &str) -> StoreResult<T>
where
    T::Err: fmt::Display,
{
    value.parse().map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A JSON column.
pub fn from_json<T: DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A nullable JSON column.
pub fn opt_from_json<T: DeserializeOwned>(
    column: &str,
    text: Option<&str>,
) -> StoreResult<Option<T>> {
    text.map(|t| from_json(column, t)).transpose()
}

/// A value as JSON text, for a column.
pub fn to_json<T: Serialize + ?Sized>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Database(format!("cannot encode {what} as JSON: {e}")))
}

/// An optional value as JSON text.
pub fn opt_to_json<T: Serialize>(what: &str, value: Option<&T>) -> StoreResult<Option<String>> {
    value.map(|v| to_json(what, v)).transpose()
}

/// A `tokens.token_type` column.
pub fn token_type(value: &str) -> StoreResult<TokenType> {
    TokenType::ALL
        .into_iter()
        .find(|kind| kind.as_str() == value)
        .ok_or_else(|| StoreError::Corrupt(format!("tokens.token_type: unknown {value:?}")))
}

/// A count column as `u32`.
pub fn count(column: &str, value: i64) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column}: {value} out of range")))
}

// ---- cursors: `crate::encode_cursor` positions; lists are named by a letter ----

/// The kind of ids of list `list` (`d`, `g`, `r`; the audit log `a` has none).
fn list_kind(list: &str) -> Option<alien_core::IdKind> {
    match list {
        "d" => Some(alien_core::IdKind::Deployment),
        "g" => Some(alien_core::IdKind::DeploymentGroup),
        "r" => Some(alien_core::IdKind::Release),
        _ => None,
    }
}

/// The cursor after an item at `millis` (or sequence number) with id `id` of list `list`.
pub fn encode_cursor(list: &str, millis: i64, id: &str) -> String {
    crate::encode_cursor(millis, list_kind(list).map(|_| id))
}

/// The position and id (empty for the audit log) of a cursor of list `list`.
pub fn decode_cursor(list: &str, cursor: &str) -> StoreResult<(i64, String)> {
    let (position, id) = crate::decode_cursor(cursor, list_kind(list))?;
    Ok((position, id.map(|id| id.to_string()).unwrap_or_default()))
}

/// The position and id (empty for the audit log) a page of list `list` starts after: its
/// cursor's, or `first` for the first page.
pub fn page_start(list: &str, page: &PageRequest, first: i64) -> StoreResult<(i64, String)> {
    match &page.cursor {
        Some(cursor) => decode_cursor(list, cursor),
        None => Ok((first, String::new())),
    }
}

/// The effective limit of a page request, for binding.
pub fn limit_of(page: &PageRequest) -> i64 {
    i64::from(page.effective_limit())
}

/// Cuts one extra fetched row off and makes the cursor of the last item kept.
pub fn into_page<R, T>(
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
