//! The cache of found tokens the SQL stores share (see [`TokenCache`]).

use std::collections::HashMap;
use std::time::Instant;

use alien_core::TokenRecord;
use chrono::{DateTime, Utc};

/// Tokens a store found in the last [`TOKEN_CACHE_TTL`], so that an authenticated request does
/// not read its token from the database every time. The store empties it after every revocation
/// it commits (revoke, admin reset, a deleted deployment's tokens), and when it learns of one
/// committed elsewhere; a lookup that raced a revocation does not fill it (the generation moved),
/// so a token revoked here fails at once. Expiry is checked at every use.
#[derive(Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<CachedTokens>,
}

/// A revocation generation, and the records found by hash with when they were read.
type CachedTokens = (u64, HashMap<String, (TokenRecord, Instant)>);

/// How long a found token is trusted without reading it again.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Tokens remembered at most (the cache starts over when full).
pub const TOKEN_CACHE_MAX: usize = 10_000;

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CachedTokens> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh, unexpired record for `hash`, and the generation a lookup starts from.
    pub fn get(&self, hash: &str, now: DateTime<Utc>) -> (Option<TokenRecord>, u64) {
        let guard = self.lock();
        let hit = guard.1.get(hash).filter(|(record, at)| {
            at.elapsed() < TOKEN_CACHE_TTL && record.expires_at.is_none_or(|e| e > now)
        });
        (hit.map(|(record, _)| record.clone()), guard.0)
    }

    /// Remembers `record` unless a revocation happened since `generation`.
    pub fn put(&self, hash: &str, record: &TokenRecord, generation: u64) {
        let mut guard = self.lock();
        if guard.0 != generation {
            return;
        }
        if guard.1.len() >= TOKEN_CACHE_MAX {
            guard.1.clear();
        }
        guard.1.insert(hash.to_owned(), (record.clone(), Instant::now()));
    }

    /// Forgets everything (after a revocation commits).
    pub fn revoked(&self) {
        let mut guard = self.lock();
        guard.0 = guard.0.wrapping_add(1);
        guard.1.clear();
    }
}
