//! The rolling replacement of one container's replicas, decided from what runs: a pure
//! function, so every case is tested without an engine.
//!
//! Replicas whose spec hash equals the release's are *current*, the others *old*. A current
//! replica that exited while starting, or failed `failureThreshold` counted probes in a row,
//! fails the step (the old replicas stay); one that died after it ran is removed and replaced. While a current replica is not yet healthy nothing else happens. Once all
//! current replicas are healthy: old replicas beyond the desired total are removed, then one new
//! replica starts (all missing ones at once when no old replica is left to replace), until the
//! current replicas are the desired number and no old one is left.

/// What the last probes said about one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The last probe passed.
    Healthy,
    /// Not (yet) healthy: `failures` counted consecutive failed probes, `last` the latest result.
    Unhealthy {
        /// Counted consecutive failures.
        failures: u32,
        /// The latest probe result, for messages.
        last: String,
    },
    /// The process is not running (it stopped within its startup grace: it never came up).
    Exited {
        /// Its exit code.
        code: i64,
    },
    /// The process stopped after it had been healthy: it died (killed, out of memory, a crash
    /// after hours), and is replaced rather than failing the step.
    Died {
        /// Its exit code.
        code: i64,
    },
}

/// One replica as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    /// Container name.
    pub name: String,
    /// Its ordinal.
    pub ordinal: u32,
    /// Whether it runs the current spec.
    pub current: bool,
    /// Its health.
    pub health: Health,
}

/// Why a current replica fails the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// It exited.
    Exited {
        /// The exit code.
        code: i64,
    },
    /// It failed the health check `failures` times in a row.
    Unhealthy {
        /// Counted consecutive failures.
        failures: u32,
        /// The latest probe result.
        last: String,
    },
}

/// What to do in this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Remove `replica` and fail the step.
    Fail {
        /// The failing replica.
        replica: String,
        /// Why.
        reason: FailReason,
    },
    /// Remove these replicas, then start replicas with these ordinals; `done` when the target
    /// is reached once that is done.
    Act {
        /// Replicas to stop and remove.
        remove: Vec<String>,
        /// Ordinals of replicas to start.
        start: Vec<u32>,
        /// Whether nothing is left to do after this.
        done: bool,
    },
}

/// The step for `desired` replicas failing after `threshold` counted failures.
pub fn plan(desired: u32, threshold: u32, replicas: &[ReplicaView]) -> Decision {
    let desired = desired as usize;
    let mut remove = Vec::new();
    // Replicas that died after they ran serve nothing: remove them at once (current ones are
    // replaced below, old ones are not needed).
    for r in replicas {
        if matches!(r.health, Health::Died { .. }) {
            remove.push(r.name.clone());
        }
    }
    let replicas: Vec<ReplicaView> =
        replicas.iter().filter(|r| !matches!(r.health, Health::Died { .. })).cloned().collect();
    let replicas = replicas.as_slice();
    let mut current: Vec<&ReplicaView> = replicas.iter().filter(|r| r.current).collect();
    current.sort_by_key(|r| r.ordinal);
    for r in &current {
        match &r.health {
            Health::Exited { code } => {
                return Decision::Fail {
                    replica: r.name.clone(),
                    reason: FailReason::Exited { code: *code },
                };
            }
            Health::Unhealthy { failures, last } if *failures >= threshold.max(1) => {
                return Decision::Fail {
                    replica: r.name.clone(),
                    reason: FailReason::Unhealthy { failures: *failures, last: last.clone() },
                };
            }
            _ => {}
        }
    }
    // Old replicas that exited serve nothing: remove them at once.
    let mut old: Vec<&ReplicaView> = Vec::new();
    for r in replicas.iter().filter(|r| !r.current) {
        if matches!(r.health, Health::Exited { .. }) {
            remove.push(r.name.clone());
        } else {
            old.push(r);
        }
    }
    if current.iter().any(|r| r.health != Health::Healthy) {
        return Decision::Act { remove, start: Vec::new(), done: false };
    }
    // Unhealthy old replicas go first, then by ordinal.
    old.sort_by_key(|r| (r.health == Health::Healthy, r.ordinal));
    let mut old = old.into_iter();
    let mut old_left = old.len();
    while current.len() + old_left > desired && old_left > 0 {
        if let Some(r) = old.next() {
            remove.push(r.name.clone());
        }
        old_left -= 1;
    }
    while current.len() > desired {
        if let Some(r) = current.pop() {
            remove.push(r.name.clone());
        }
    }
    let mut start = Vec::new();
    if current.len() < desired {
        let missing = if old_left == 0 { desired - current.len() } else { 1 };
        let used: Vec<u32> =
            replicas.iter().filter(|r| !remove.contains(&r.name)).map(|r| r.ordinal).collect();
        start = (0..).filter(|n| !used.contains(n)).take(missing).collect();
    }
    let done = start.is_empty() && old_left == 0;
    Decision::Act { remove, start, done }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, ordinal: u32, current: bool, health: Health) -> ReplicaView {
        ReplicaView { name: name.to_owned(), ordinal, current, health }
    }
    fn healthy(name: &str, ordinal: u32, current: bool) -> ReplicaView {
        r(name, ordinal, current, Health::Healthy)
    }
    fn starting(name: &str, ordinal: u32, failures: u32) -> ReplicaView {
        r(name, ordinal, true, Health::Unhealthy { failures, last: "HTTP 500".to_owned() })
    }
    fn act(remove: &[&str], start: &[u32], done: bool) -> Decision {
        Decision::Act {
            remove: remove.iter().map(|s| (*s).to_owned()).collect(),
            start: start.to_vec(),
            done,
        }
    }

    #[test]
    fn a_first_deployment_starts_every_replica_at_once_then_is_done() {
        assert_eq!(plan(3, 3, &[]), act(&[], &[0, 1, 2], false));
        let starting_up = [starting("a0", 0, 0), starting("a1", 1, 0), healthy("a2", 2, true)];
        assert_eq!(plan(3, 3, &starting_up), act(&[], &[], false));
        let up = [healthy("a0", 0, true), healthy("a1", 1, true), healthy("a2", 2, true)];
        assert_eq!(plan(3, 3, &up), act(&[], &[], true));
    }

    #[test]
    fn an_update_replaces_one_replica_at_a_time() {
        // Two old replicas, nothing new yet: start one new beside them.
        let mut replicas = vec![healthy("old0", 0, false), healthy("old1", 1, false)];
        assert_eq!(plan(2, 3, &replicas), act(&[], &[2], false));
        // The new one is starting: wait, remove nothing.
        replicas.push(starting("new2", 2, 1));
        assert_eq!(plan(2, 3, &replicas), act(&[], &[], false));
        // Healthy: one old goes, the next new one starts in its ordinal.
        replicas[2].health = Health::Healthy;
        assert_eq!(plan(2, 3, &replicas), act(&["old0"], &[0], false));
        replicas.remove(0);
        replicas.push(healthy("new0", 0, true));
        // Both new ones healthy: the last old one goes and the target is reached.
        assert_eq!(plan(2, 3, &replicas), act(&["old1"], &[], true));
    }

    #[test]
    fn a_failing_new_replica_fails_the_step_and_keeps_the_old_ones() {
        let replicas = [healthy("old0", 0, false), starting("new1", 1, 3)];
        assert_eq!(
            plan(1, 3, &replicas),
            Decision::Fail {
                replica: "new1".to_owned(),
                reason: FailReason::Unhealthy { failures: 3, last: "HTTP 500".to_owned() }
            }
        );
        assert_eq!(
            plan(1, 3, &[healthy("old0", 0, false), starting("new1", 1, 2)]),
            act(&[], &[], false)
        );
        let exited = [healthy("old0", 0, false), r("new1", 1, true, Health::Exited { code: 2 })];
        assert_eq!(
            plan(1, 3, &exited),
            Decision::Fail { replica: "new1".to_owned(), reason: FailReason::Exited { code: 2 } }
        );
    }

    #[test]
    fn scaling_down_and_dead_old_replicas_are_removed() {
        let replicas = [healthy("a0", 0, true), healthy("a1", 1, true), healthy("a2", 2, true)];
        assert_eq!(plan(1, 3, &replicas), act(&["a2", "a1"], &[], true));
        let dead_old = [r("old0", 0, false, Health::Exited { code: 137 }), healthy("a1", 1, true)];
        assert_eq!(plan(1, 3, &dead_old), act(&["old0"], &[], true));
        // With no old replica left to keep the service up, every missing replica starts.
        let dead_only = [r("old0", 0, false, Health::Exited { code: 1 })];
        assert_eq!(plan(2, 3, &dead_only), act(&["old0"], &[0, 1], false));
    }

    #[test]
    fn a_replica_that_died_after_running_is_replaced_not_failed() {
        let died = [r("a0", 0, true, Health::Died { code: 137 }), healthy("a1", 1, true)];
        assert_eq!(plan(2, 3, &died), act(&["a0"], &[0], false));
        // Its replacement crashing while starting fails the step.
        let crashed = [r("a0", 0, true, Health::Exited { code: 1 }), healthy("a1", 1, true)];
        assert!(matches!(plan(2, 3, &crashed), Decision::Fail { .. }));
        // Every replica died: all start again at once.
        let all = [
            r("a0", 0, true, Health::Died { code: 137 }),
            r("a1", 1, true, Health::Died { code: 9 }),
        ];
        assert_eq!(plan(2, 3, &all), act(&["a0", "a1"], &[0, 1], false));
    }

    #[test]
    fn unhealthy_old_replicas_are_replaced_first() {
        let old_bad = r("old0", 0, false, Health::Unhealthy { failures: 9, last: "x".to_owned() });
        let replicas = [old_bad, healthy("old1", 1, false), healthy("new2", 2, true)];
        assert_eq!(plan(2, 3, &replicas), act(&["old0"], &[0], false));
    }
}
