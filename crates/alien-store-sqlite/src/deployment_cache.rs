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
//!
//! The same cache keeps which pull deployments are *steady*: the digest of the report (platform,
//! release, stack state) the database last confirmed a deployment to be exactly in, by the
//! conditional write of a steady heartbeat (`heartbeats`). A later identical report is steady
//! without a trip to the database, until the row is written by anything but a heartbeat: the
//! update hook drops the digest while that statement runs, and a digest confirmed by a write that
//! raced with such a statement is not kept ([`DeploymentCache::steady_put`]). Writes that set
//! heartbeat times only run in [`DeploymentCache::heartbeat_only`] mode and leave digests alone.
//! Digests follow the same one-second bound for other processes' writes, and at most
//! [`STEADY_CAPACITY`] are kept (about 100 bytes each).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use alien_core::Deployment;

/// How long entries are served after `PRAGMA data_version` was last found unmoved.
pub const CROSS_PROCESS_BOUND: Duration = Duration::from_secs(1);
/// A new reading is asked for this long before the last one's bound runs out.
pub const REFRESH_AHEAD: Duration = Duration::from_millis(500);
/// Deployments kept; beyond it arbitrary entries make room.
pub const CAPACITY: usize = 10_000;
/// Bytes of stored state and error kept in all; beyond it arbitrary entries make room.
pub const BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// A deployment whose stored state and error are larger is read from the database every time.
pub const MAX_ENTRY_BYTES: usize = BUDGET_BYTES / 64;
/// Steady digests kept; beyond it arbitrary ones make room (their next report goes to the
/// database, which confirms it again).
pub const STEADY_CAPACITY: usize = 250_000;

/// The SHA-256 digest of a steady report.
pub(crate) type SteadyDigest = [u8; 32];

/// See the module documentation.
#[derive(Default)]
pub(crate) struct DeploymentCache {
    state: Mutex<State>,
    /// The writer runs a statement that sets heartbeat times only.
    heartbeat_only: AtomicBool,
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
    /// Bumped by every write of a deployment other than a heartbeat time, and with `generation`
    /// when another process's write is seen.
    steady_generation: u64,
    /// The steady digest of each deployment id, and its rowid.
    steady: HashMap<String, (i64, SteadyDigest)>,
    /// The id of each steady digest, by rowid.
    steady_ids: HashMap<i64, String>,
}

struct Entry {
    rowid: i64,
    /// Its stored state and error, in bytes, as the database holds them.
    bytes: usize,
    deployment: Deployment,
}

/// What [`DeploymentCache::steady_get`] found.
pub(crate) enum SteadyLookup {
    /// The database confirmed this very report and nothing but heartbeats wrote the row since.
    Steady,
    /// Ask the database; if it confirms the report, offer the digest to
    /// [`DeploymentCache::steady_put`] with this generation.
    Ask { generation: u64 },
}

/// The heartbeat-only mode of the writer, ended when dropped.
pub(crate) struct HeartbeatOnly<'a>(&'a DeploymentCache);

impl Drop for HeartbeatOnly<'_> {
    fn drop(&mut self) {
        self.0.heartbeat_only.store(false, Ordering::SeqCst);
    }
}

/// What [`DeploymentCache::get`] found.
pub(crate) enum Lookup {
    Hit(Box<Deployment>),
    /// Read it from the database, then offer it to [`DeploymentCache::put`] with this generation.
    Miss {
        generation: u64,
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
        let heartbeat_only = self.heartbeat_only.load(Ordering::SeqCst);
        let mut state = self.state();
        state.unsettled.insert(rowid);
        state.remove_row(rowid);
        if !heartbeat_only {
            state.steady_generation += 1;
            state.remove_steady(rowid);
        }
    }

    /// Puts the writer in heartbeat-only mode until the guard is dropped. The caller holds the
    /// single writer connection for that time and runs on it only statements that set
    /// `last_heartbeat_at` and nothing else.
    pub fn heartbeat_only(&self) -> HeartbeatOnly<'_> {
        self.heartbeat_only.store(true, Ordering::SeqCst);
        HeartbeatOnly(self)
    }

    /// Whether the report of digest `digest` for deployment `id` is known steady, and whether the
    /// caller is to read `PRAGMA data_version` (see [`DeploymentCache::checked`]).
    pub fn steady_get(
        &self,
        id: &str,
        digest: &SteadyDigest,
        now: Instant,
    ) -> (SteadyLookup, bool) {
        let mut state = self.state();
        let (fresh, check) = state.freshness(now);
        if fresh && state.steady.get(id).is_some_and(|(_, kept)| kept == digest) {
            return (SteadyLookup::Steady, check);
        }
        (SteadyLookup::Ask { generation: state.steady_generation }, check)
    }

    /// Keeps `digest` as steady for deployment `id` (row `rowid`), confirmed by a write that
    /// started after [`DeploymentCache::steady_get`] answered `generation`, unless a deployment
    /// was written otherwise, or another process's write was seen, since.
    pub fn steady_put(&self, generation: u64, rowid: i64, id: &str, digest: SteadyDigest) {
        let mut state = self.state();
        if state.steady_generation != generation {
            return;
        }
        state.remove_steady(rowid);
        while state.steady.len() >= STEADY_CAPACITY {
            let Some(victim) = state.steady.values().next().map(|(rowid, _)| *rowid) else {
                break;
            };
            state.remove_steady(victim);
        }
        state.steady_ids.insert(rowid, id.to_owned());
        state.steady.insert(id.to_owned(), (rowid, digest));
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

    /// The deployment `id` if it is kept and may be served, and whether the caller is to read
    /// `PRAGMA data_version` (see [`DeploymentCache::checked`]).
    pub fn get(&self, id: &str, now: Instant) -> (Lookup, bool) {
        let mut state = self.state();
        let (fresh, check) = state.freshness(now);
        if fresh
            && let Some(entry) = state.entries.get(id)
            && !state.unsettled.contains(&entry.rowid)
        {
            return (Lookup::Hit(Box::new(entry.deployment.clone())), check);
        }
        (Lookup::Miss { generation: state.generation }, check)
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
    /// Whether entries may be served at `now`, and whether the caller should start a reading of
    /// `PRAGMA data_version`: one is asked for [`REFRESH_AHEAD`] before the last one's second
    /// runs out, so that under load (the writer busy) entries stay served without a gap.
    fn freshness(&mut self, now: Instant) -> (bool, bool) {
        let fresh = self.fresh_until.is_some_and(|until| now < until);
        let due = self.fresh_until.is_none_or(|until| now + REFRESH_AHEAD >= until);
        let check = due && !self.checking;
        if check {
            self.checking = true;
        }
        (fresh, check)
    }

    fn forget_all(&mut self) {
        self.generation += 1;
        self.entries.clear();
        self.ids.clear();
        self.bytes = 0;
        self.steady_generation += 1;
        self.steady.clear();
        self.steady_ids.clear();
    }

    /// Drops the steady digest of row `rowid`, if kept.
    fn remove_steady(&mut self, rowid: i64) {
        if let Some(id) = self.steady_ids.remove(&rowid) {
            self.steady.remove(&id);
        }
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
        match cache.get(ID, now).0 {
            Lookup::Miss { generation, .. } => generation,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    fn fresh_cache() -> (DeploymentCache, Instant) {
        let cache = DeploymentCache::default();
        let now = Instant::now();
        assert!(matches!(cache.get(ID, now), (Lookup::Miss { .. }, true)));
        cache.checked(Some(7), now);
        (cache, now)
    }

    #[test]
    fn a_kept_deployment_is_served_until_its_row_is_written() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "a"));
        assert!(matches!(cache.get(ID, now).0, Lookup::Hit(d) if d.name == "a"));
        cache.changed(1);
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "old, read before the commit"));
        assert!(matches!(cache.get(ID, now).0, Lookup::Miss { .. }), "unsettled rows are not kept");
        cache.settle();
        cache.put(generation, 1, 0, &deployment(ID, "old, offered after the commit"));
        assert!(matches!(cache.get(ID, now).0, Lookup::Miss { .. }), "a read older than the write");
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "new"));
        assert!(matches!(cache.get(ID, now).0, Lookup::Hit(d) if d.name == "new"));
    }

    #[test]
    fn another_process_write_empties_the_cache_and_nothing_is_served_unchecked() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "a"));
        let later = now + CROSS_PROCESS_BOUND;
        assert!(
            matches!(cache.get(ID, later), (Lookup::Miss { .. }, true)),
            "a second after the last reading the entry is not served and a reading is asked for"
        );
        assert!(matches!(cache.get(ID, later), (Lookup::Miss { .. }, false)), "only once");
        cache.checked(Some(7), later);
        assert!(matches!(cache.get(ID, later).0, Lookup::Hit(_)), "nothing moved");
        cache.checked(Some(8), later);
        assert!(matches!(cache.get(ID, later).0, Lookup::Miss { .. }), "another process wrote");
        cache.put(generation, 1, 0, &deployment(ID, "read before the reading"));
        assert!(matches!(cache.get(ID, later).0, Lookup::Miss { .. }));
        cache.checked(None, later);
        assert!(matches!(cache.get(ID, later), (Lookup::Miss { .. }, true)), "failed reading");
    }

    #[test]
    fn the_next_reading_is_asked_for_before_the_second_runs_out_by_hits_too() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "a"));
        let (digest, steady_generation) = ([1; 32], cache.state().steady_generation);
        cache.steady_put(steady_generation, 1, ID, digest);
        let soon = now + CROSS_PROCESS_BOUND - REFRESH_AHEAD;
        assert!(matches!(cache.get(ID, soon), (Lookup::Hit(_), true)), "a hit asks for it");
        assert!(matches!(cache.get(ID, soon), (Lookup::Hit(_), false)), "once");
        cache.checked(Some(7), soon);
        let later = now + CROSS_PROCESS_BOUND;
        assert!(matches!(cache.get(ID, later).0, Lookup::Hit(_)), "served without a gap");
        assert!(matches!(cache.steady_get(ID, &digest, later).0, SteadyLookup::Steady));
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
        assert!(matches!(cache.get(ID, now).0, Lookup::Miss { .. }), "too large to keep");
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
    fn a_steady_digest_holds_until_the_row_is_written_other_than_by_a_heartbeat() {
        let (cache, now) = fresh_cache();
        let (digest, other) = ([1; 32], [2; 32]);
        let (SteadyLookup::Ask { generation }, _) = cache.steady_get(ID, &digest, now) else {
            panic!("nothing confirmed yet");
        };
        cache.steady_put(generation, 1, ID, digest);
        assert!(matches!(cache.steady_get(ID, &digest, now).0, SteadyLookup::Steady));
        assert!(matches!(cache.steady_get(ID, &other, now).0, SteadyLookup::Ask { .. }));
        {
            let _mode = cache.heartbeat_only();
            cache.changed(1);
        }
        cache.settle();
        assert!(matches!(cache.steady_get(ID, &digest, now).0, SteadyLookup::Steady), "heartbeat");
        cache.changed(1);
        assert!(
            matches!(cache.steady_get(ID, &digest, now).0, SteadyLookup::Ask { .. }),
            "a write"
        );
        // A confirmation that raced with another write is not kept.
        let (SteadyLookup::Ask { generation }, _) = cache.steady_get(ID, &digest, now) else {
            panic!("dropped");
        };
        cache.changed(2);
        cache.steady_put(generation, 1, ID, digest);
        assert!(matches!(cache.steady_get(ID, &digest, now).0, SteadyLookup::Ask { .. }), "raced");
        // Another process's write drops every digest; none is trusted a second after a reading.
        let (SteadyLookup::Ask { generation }, _) = cache.steady_get(ID, &digest, now) else {
            panic!("dropped");
        };
        cache.steady_put(generation, 1, ID, digest);
        let later = now + CROSS_PROCESS_BOUND;
        assert!(matches!(cache.steady_get(ID, &digest, later), (SteadyLookup::Ask { .. }, true)));
        cache.checked(Some(8), later);
        assert!(matches!(cache.steady_get(ID, &digest, later).0, SteadyLookup::Ask { .. }));
        assert!(cache.state().steady.is_empty() && cache.state().steady_ids.is_empty());
    }

    #[test]
    fn at_most_the_steady_capacity_is_kept() {
        let (cache, now) = fresh_cache();
        let (SteadyLookup::Ask { generation }, _) = cache.steady_get(ID, &[0; 32], now) else {
            panic!("nothing confirmed yet");
        };
        for n in 0..(STEADY_CAPACITY as i64 + 10) {
            cache.steady_put(generation, n, &format!("dep_{n:028}"), [0; 32]);
        }
        let state = cache.state();
        assert_eq!(
            (state.steady.len(), state.steady_ids.len()),
            (STEADY_CAPACITY, STEADY_CAPACITY)
        );
    }

    #[test]
    fn a_new_writer_connection_drops_what_the_old_one_vouched_for() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        cache.put(generation, 1, 0, &deployment(ID, "a"));
        cache.reconnected();
        cache.checked(Some(7), now);
        assert!(matches!(cache.get(ID, now).0, Lookup::Miss { .. }), "same number, new connection");
    }
}
