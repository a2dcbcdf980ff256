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

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use alien_core::Deployment;

/// How long entries are served after `PRAGMA data_version` was last found unmoved.
pub const CROSS_PROCESS_BOUND: Duration = Duration::from_secs(1);
/// Deployments kept; beyond it an arbitrary entry makes room.
pub const CAPACITY: usize = 10_000;

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
    /// `PRAGMA data_version` at the last reading.
    data_version: Option<i64>,
    /// Entries are served until then (see [`CROSS_PROCESS_BOUND`]).
    fresh_until: Option<Instant>,
    /// A reading of `PRAGMA data_version` is under way.
    checking: bool,
}

struct Entry {
    rowid: i64,
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
        if let Some(id) = state.ids.remove(&rowid) {
            state.entries.remove(&id);
        }
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
            if let Some(id) = state.ids.remove(&rowid) {
                state.entries.remove(&id);
            }
        }
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

    /// Keeps `deployment` (row `rowid`), read after [`DeploymentCache::get`] answered
    /// `generation`, unless a write settled or another process's write was seen since, or its
    /// row is being written.
    pub fn put(&self, generation: u64, rowid: i64, deployment: &Deployment) {
        let mut state = self.state();
        if state.generation != generation || state.unsettled.contains(&rowid) {
            return;
        }
        if state.entries.len() >= CAPACITY
            && !state.entries.contains_key(deployment.id.as_str())
            && let Some((id, rowid)) =
                state.entries.iter().next().map(|(id, entry)| (id.clone(), entry.rowid))
        {
            state.entries.remove(&id);
            state.ids.remove(&rowid);
        }
        let id = deployment.id.as_str().to_owned();
        state.ids.insert(rowid, id.clone());
        state.entries.insert(id, Entry { rowid, deployment: deployment.clone() });
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
        cache.put(generation, 1, &deployment(ID, "a"));
        assert!(matches!(cache.get(ID, now), Lookup::Hit(d) if d.name == "a"));
        cache.changed(1);
        let generation = miss(&cache, now);
        cache.put(generation, 1, &deployment(ID, "old, read before the commit"));
        assert!(matches!(cache.get(ID, now), Lookup::Miss { .. }), "unsettled rows are not kept");
        cache.settle();
        cache.put(generation, 1, &deployment(ID, "old, offered after the commit"));
        assert!(matches!(cache.get(ID, now), Lookup::Miss { .. }), "a read older than the write");
        let generation = miss(&cache, now);
        cache.put(generation, 1, &deployment(ID, "new"));
        assert!(matches!(cache.get(ID, now), Lookup::Hit(d) if d.name == "new"));
    }

    #[test]
    fn another_process_write_empties_the_cache_and_nothing_is_served_unchecked() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        cache.put(generation, 1, &deployment(ID, "a"));
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
        cache.put(generation, 1, &deployment(ID, "read before the reading"));
        assert!(matches!(cache.get(ID, later), Lookup::Miss { .. }));
        cache.checked(None, later);
        assert!(matches!(cache.get(ID, later), Lookup::Miss { check: true, .. }), "failed reading");
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity() {
        let (cache, now) = fresh_cache();
        let generation = miss(&cache, now);
        for n in 0..(CAPACITY as i64 + 10) {
            cache.put(generation, n, &deployment(&format!("dep_{n:028}"), "a"));
        }
        let state = cache.state();
        assert_eq!((state.entries.len(), state.ids.len()), (CAPACITY, CAPACITY));
    }
}
