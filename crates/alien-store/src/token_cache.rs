//! The cache of found tokens the SQL stores share (see [`TokenCache`]).

use std::collections::HashMap;
use std::time::Instant;

use alien_core::TokenRecord;
use chrono::{DateTime, Utc};

/// Tokens a store found recently, so that an authenticated request does not read its token from
/// the database every time. The store empties it after every revocation it commits (revoke,
/// admin reset, a deleted deployment's tokens), and when it learns of one committed elsewhere; a
/// lookup that raced a revocation does not fill it (the generation moved), so a token revoked
/// here fails at once. Expiry is checked at every use.
///
/// How a store learns of revocations committed elsewhere sets how long an entry is trusted: by
/// default [`TOKEN_CACHE_TTL`] (a bound on how long another replica's revocation may go unseen);
/// a store that checks a revocation epoch itself at least that often ([`TokenCache::trusting`])
/// keeps entries until the epoch moves, up to [`TOKEN_CACHE_TRUSTED_MAX`] of them.
pub struct TokenCache {
    entries: std::sync::Mutex<CachedTokens>,
    ttl: std::time::Duration,
    max: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            entries: std::sync::Mutex::default(),
            ttl: TOKEN_CACHE_TTL,
            max: TOKEN_CACHE_MAX,
        }
    }
}

/// A revocation generation, and the records found by hash with when they were read.
type CachedTokens = (u64, HashMap<String, (TokenRecord, Instant)>);

/// How long a found token is trusted without reading it again.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Tokens remembered at most (the cache starts over when full).
pub const TOKEN_CACHE_MAX: usize = 10_000;
/// Tokens a [`TokenCache::trusting`] cache remembers at most: a fleet of 100,000 agents, each
/// with its deployment token, and room to spare.
pub const TOKEN_CACHE_TRUSTED_MAX: usize = 250_000;
/// How long a [`TokenCache::trusting`] entry lives at most, epoch or not.
pub const TOKEN_CACHE_TRUSTED_TTL: std::time::Duration = std::time::Duration::from_secs(600);

impl TokenCache {
    /// A cache whose store reads a revocation epoch at least every [`TOKEN_CACHE_TTL`] and calls
    /// [`TokenCache::revoked`] when it moved: entries are kept until then (at most
    /// [`TOKEN_CACHE_TRUSTED_TTL`]), so a fleet's tokens stay found between its syncs.
    pub fn trusting() -> Self {
        TokenCache {
            entries: std::sync::Mutex::default(),
            ttl: TOKEN_CACHE_TRUSTED_TTL,
            max: TOKEN_CACHE_TRUSTED_MAX,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CachedTokens> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh, unexpired record for `hash`, and the generation a lookup starts from.
    pub fn get(&self, hash: &str, now: DateTime<Utc>) -> (Option<TokenRecord>, u64) {
        let guard = self.lock();
        let hit = guard.1.get(hash).filter(|(record, at)| {
            at.elapsed() < self.ttl && record.expires_at.is_none_or(|e| e > now)
        });
        (hit.map(|(record, _)| record.clone()), guard.0)
    }

    /// Remembers `record` unless a revocation happened since `generation`.
    pub fn put(&self, hash: &str, record: &TokenRecord, generation: u64) {
        let mut guard = self.lock();
        if guard.0 != generation {
            return;
        }
        if guard.1.len() >= self.max {
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
