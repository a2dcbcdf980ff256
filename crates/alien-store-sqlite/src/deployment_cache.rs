//! Deployments read recently, served without a trip to a SQLite connection thread
//! ([`DeploymentCache`]): `GET /v1/deployments/{id}` is what dashboards and CLIs poll.
//!
//! An entry is never older than what this process has committed. SQLite's update hook, installed
//! on the single writer connection, names every row of `deployments` a statement touches while the
//! statement runs (before its transaction commits); such a row is *unsettled* until the writer
//! is back in its pool (the transaction committed or rolled back), and while it is, lookups of it
//! go to the database and nothing read of it is kept. Settling bumps a generation, so a read that
//! started before the write settled is not kept either.
//!
//! Another process writing the same file (an overlapping restart, an offline command) is seen
//! through `PRAGMA data_version` on the writer, which moves only when another connection commits:
//! it is read at most once a second, in the background, and entries are served only within a
//! second of the last reading that found nothing moved (the token cache's bound, see
//! `tokens::check_token_epoch`).
//!
//! Memory is bounded twice: at most [`CAPACITY`] deployments and [`BUDGET_BYTES`] of their
//! stored state and error (a deployment or group token may write large states into the
//! deployments it holds); a deployment above [`MAX_ENTRY_BYTES`] is never kept.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use alien_core::Deployment;

/// How long entries are served after `PRAGMA data_version` was last found unmoved.
pub const CROSS_PROCESS_BOUND: Duration = Duration::from_secs(1);
/// Deployments kept; beyond it arbitrary entries make room.
pub const CAPACITY: usize = 10_000;
/// Bytes of stored state and error kept in all; beyond it arbitrary entries make room.
pub const BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// A deployment whose stored state and error are larger is read from the database every time.
pub const MAX_ENTRY_BYTES: usize = BUDGET_BYTES / 64;

/// See the module documentation.
#[derive(Default)]
pub(crate) struct DeploymentCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped when writes settle and when another process's write is seen.
    generation: u64,
    /// Rowids written by statements whose transaction may not have ended yet.
    unsettled: HashSet<i64>,
    entries: HashMap<String, Entry>,
    /// The id of each entry, by rowid (what the update hook names).
    ids: HashMap<i64, String>,
    /// The `bytes` of every entry.
    bytes: usize,
    /// `PRAGMA data_version` at the last reading.
    data_version: Option<i64>,
    /// Entries are served until then (see [`CROSS_PROCESS_BOUND`]).
    fresh_until: Option<Instant>,
    /// A reading of `PRAGMA data_version` is under way.
    checking: bool,
}

struct Entry {
    rowid: i64,
    /// Its stored state and error, in bytes, as the database holds them.
    bytes: usize,
    deployment: Deployment,
}

/// What [`DeploymentCache::get`] found.
pub(crate) enum Lookup {
    Hit(Box<Deployment>),
    /// Read it from the database, then offer it to [`DeploymentCache::put`] with this generation.
    /// `check` asks the caller to read `PRAGMA data_version` (see [`DeploymentCache::checked`]).
    Miss {
        generation: u64,
        check: bool,
    },
}

impl DeploymentCache {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves at worst entries that are dropped below.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self.state.is_poisoned() {
            state.forget_all();
            self.state.clear_poison();
        }
        state
    }

    /// From the writer's update hook: the row `rowid` of `deployments` is being written.
    pub fn changed(&self, rowid: i64) {
        let mut state = self.state();
        state.unsettled.insert(rowid);
        state.remove_row(rowid);
    }

    /// The writer is back in its pool: every write so far has committed or rolled back.
    pub fn settle(&self) {
        let mut state = self.state();
        if state.unsettled.is_empty() {
            return;
        }
        state.generation += 1;
        let unsettled = std::mem::take(&mut state.unsettled);
        for rowid in unsettled {
            state.remove_row(rowid);
        }
    }

    /// The writer connection is new: `PRAGMA data_version` is per connection, so the next
    /// reading cannot be compared with the last one (everything kept is dropped then).
    pub fn reconnected(&self) {
        self.state().data_version = None;
    }

    /// The deployment `id` if it is kept and may be served.
    pub fn get(&self, id: &str, now: Instant) -> Lookup {
        let mut state = self.state();
        let fresh = state.fresh_until.is_some_and(|until| now < until);
        let check = !fresh && !state.checking;
        if check {
            state.checking = true;
        }
        if fresh
            && let Some(entry) = state.entries.get(id)
            && !state.unsettled.contains(&entry.rowid)
        {
            return Lookup::Hit(Box::new(entry.deployment.clone()));
        }
        Lookup::Miss { generation: state.generation, check }
    }

    /// Keeps `deployment` (row `rowid`, `bytes` of stored state and error), read after
    /// [`DeploymentCache::get`] answered `generation`, unless a write settled or another
    /// process's write was seen since, its row is being written, or it is too large.
    pub fn put(&self, generation: u64, rowid: i64, bytes: usize, deployment: &Deployment) {
        let mut state = self.state();
        if state.generation != generation
            || state.unsettled.contains(&rowid)
            || bytes > MAX_ENTRY_BYTES
        {
            return;
        }
        state.remove_row(rowid);
        while state.entries.len() >= CAPACITY || state.bytes + bytes > BUDGET_BYTES {
            let Some(victim) = state.entries.values().next().map(|entry| entry.rowid) else {
                break;
            };
            state.remove_row(victim);
        }
        let id = deployment.id.as_str().to_owned();
        state.bytes += bytes;
        state.ids.insert(rowid, id.clone());
        state.entries.insert(id, Entry { rowid, bytes, deployment: deployment.clone() });
    }

    /// The reading of `PRAGMA data_version` that started at `started`: `None` when it failed.
    pub fn checked(&self, data_version: Option<i64>, started: Instant) {
        let mut state = self.state();
        state.checking = false;
        match data_version {
            Some(version) if state.data_version == Some(version) => {
                state.fresh_until = Some(started + CROSS_PROCESS_BOUND);
            }
            Some(version) => {
                state.forget_all();
                state.data_version = Some(version);
                state.fresh_until = Some(started + CROSS_PROCESS_BOUND);
            }
            None => {
                state.forget_all();
                state.fresh_until = None;
            }
        }
    }
}

impl State {
    fn forget_all(&mut self) {
        self.generation += 1;
        self.entries.clear();
        self.ids.clear();
        self.bytes = 0;
    }

    /// Drops the entry of row `rowid`, if kept.
    fn remove_row(&mut self, rowid: i64) {
        if let Some(id) = self.ids.remove(&rowid)
            && let Some(entry) = self.entries.remove(&id)
        {
            self.bytes -= entry.bytes;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn deployment(id: &str, name: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "platform": "local", "status": "running",
            "deploymentModel": "pull", "deploymentGroupId": "dg_0000000000000000000000000001",
            "retryRequested": false,
            "createdAt": "2026-12-07T00:00:00Z", "updatedAt": "2026-12-07T00:00:00Z"
        }))
        .expect("a deployment")
    }

    const ID: &str = "dep_0000000000000000000000000001";

    fn miss(cache: &DeploymentCache, now: Instant) -> u64 {
        match cache.get(ID, now) {
            Lookup::Miss { generation, .. } => generation,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    fn fresh_cache() -> (DeploymentCache, Instant) {
        let cache = DeploymentCache::default();
        let now = Instant::now();
        assert!(matches!(cache.get(ID, now), Lookup::Miss { check: true, .. }));
        cache.checked(Some(7), now);
        (cache, now)
    }

    #[test]
    fn a_kept_deployment_is_served_until_its_row_is_written() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "a"));
        assert!(matches!(cache.get(ID, now), Lookup::Hit(d) if d.name == "a"));
        cache.changed(1);
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "old, read before the commit"));
        assert!(matches!(cache.get(ID, now), Lookup::Miss { .. }), "unsettled rows are not kept");
        cache.settle();
        cache.put(generation, 1, 0, &deployment(ID, "old, offered after the commit"));
        assert!(matches!(cache.get(ID, now), Lookup::Miss { .. }), "a read older than the write");
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "new"));
        assert!(matches!(cache.get(ID, now), Lookup::Hit(d) if d.name == "new"));
    }

    #[test]
    fn another_process_write_empties_the_cache_and_nothing_is_served_unchecked() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "a"));
        let later = now + CROSS_PROCESS_BOUND;
        assert!(
            matches!(cache.get(ID, later), Lookup::Miss { check: true, .. }),
            "a second after the last reading the entry is not served and a reading is asked for"
        );
        assert!(matches!(cache.get(ID, later), Lookup::Miss { check: false, .. }), "only once");
        cache.checked(Some(7), later);
        assert!(matches!(cache.get(ID, later), Lookup::Hit(_)), "nothing moved");
        cache.checked(Some(8), later);
        assert!(matches!(cache.get(ID, later), Lookup::Miss { .. }), "another process wrote");
        cache.put(generation, 1, 0, &deployment(ID, "read before the reading"));
        assert!(matches!(cache.get(ID, later), Lookup::Miss { .. }));
        cache.checked(None, later);
        assert!(matches!(cache.get(ID, later), Lookup::Miss { check: true, .. }), "failed reading");
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        for n in 0..(CAPACITY as i64 + 10) {
            cache.put(generation, n, 0, &deployment(&format!("dep_{n:028}"), "a"));
        }
        let state = cache.state();
        assert_eq!((state.entries.len(), state.ids.len()), (CAPACITY, CAPACITY));
    }

    #[test]
    fn the_cache_keeps_at_most_its_budget_of_bytes_and_no_oversized_entry() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        cache.put(generation, 1, MAX_ENTRY_BYTES + 1, &deployment(ID, "huge"));
        assert!(matches!(cache.get(ID, now), Lookup::Miss { .. }), "too large to keep");
        for n in 0..200 {
            let id = format!("dep_{n:028}");
            cache.put(generation, n, MAX_ENTRY_BYTES, &deployment(&id, "large"));
            let state = cache.state();
            assert!(state.bytes <= BUDGET_BYTES, "{} bytes kept", state.bytes);
            let sum: usize = state.entries.values().map(|e| e.bytes).sum();
            assert_eq!(sum, state.bytes);
        }
        assert_eq!(cache.state().entries.len(), BUDGET_BYTES / MAX_ENTRY_BYTES);
        // Writes and a newer read of a kept row free its bytes.
        cache.put(generation, 199, 10, &deployment("dep_0000000000000000000000000199", "b"));
        let written = *cache.state().ids.keys().find(|rowid| **rowid != 199).unwrap();
        cache.changed(written);
        cache.settle();
        let state = cache.state();
        let sum: usize = state.entries.values().map(|e| e.bytes).sum();
        assert_eq!(sum, state.bytes);
        assert_eq!(state.entries.len(), BUDGET_BYTES / MAX_ENTRY_BYTES - 1);
    }

    #[test]
    fn a_new_writer_connection_drops_what_the_old_one_vouched_for() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "a"));
        cache.reconnected();
        cache.checked(Some(7), now);
        assert!(matches!(cache.get(ID, now), Lookup::Miss { .. }), "same number, new connection");
    }
}
