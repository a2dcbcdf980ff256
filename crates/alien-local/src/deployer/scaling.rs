//! The autoscaler's side of the deployer: which containers it watches (handed over by their
//! completed steps), and one look at a container every `autoscale_interval` (probe, point its
//! fronts, measure, start or stop replicas), under the deployment's lock so that it never acts
//! while a step runs. The decision itself is `autoscale`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use alien_core::ContainerConfig;
use alien_deployer::{ContainerEnv, DeployRequest};

use super::engine::EngineContainer;
use super::replica::{LABEL_DEPLOYMENT, LABEL_REPLICA, LABEL_RESOURCE, LABEL_SPEC, ReplicaSpec};
use super::{ContainerFronts, Observed, Runtime, Scaled, ScalingEvent, autoscale};

impl Runtime {
    pub(super) fn scale_key(dep: &str, id: &str) -> String {
        format!("{dep}/{id}")
    }

    /// The replica count the autoscaler chose for `key`, if it chose one.
    pub(super) fn scale_target(&self, key: &str) -> Option<u32> {
        self.scale_targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .copied()
    }

    /// The lock a step of `dep` and the autoscaler's actions on it take.
    pub(super) fn lock_of(&self, dep: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(dep.to_owned())
            .or_default()
            .clone()
    }

    /// After a container's step is done (with its environment `env`): the autoscaled
    /// container is handed to the autoscaler as it now runs.
    pub(super) fn track_scaling(
        &self,
        request: &DeployRequest<'_>,
        id: &str,
        config: &ContainerConfig,
        env: &ContainerEnv,
        fronts: &ContainerFronts,
        devices: Vec<String>,
    ) {
        let Some(policy) = &config.autoscaling else { return };
        let dep = request.deployment.id.as_str();
        let key = Self::scale_key(dep, id);
        let mut scaled = self.scaled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ok(spec) = ReplicaSpec::new(dep, config, env, devices) else {
            scaled.remove(&key);
            return;
        };
        let release = request.release_id.to_string();
        match scaled.get_mut(&key) {
            Some(entry) => {
                entry.release = release;
                entry.spec = spec;
                entry.policy = policy.clone();
                entry.fronts = fronts.clone();
            }
            None => {
                let entry = Scaled {
                    dep: dep.to_owned(),
                    id: id.to_owned(),
                    release,
                    spec,
                    policy: policy.clone(),
                    fronts: fronts.clone(),
                    stabilizer: autoscale::Stabilizer::new(self.options.scale_down_window),
                    failures: BTreeMap::new(),
                };
                scaled.insert(key, entry);
            }
        }
    }

    /// A container still being rolled out, or not autoscaled, is not the autoscaler's; one no
    /// longer autoscaled (`forget`) loses its scaled count too.
    pub(super) fn untrack_scaling(&self, dep: &str, id: &str, forget: bool) {
        let key = Self::scale_key(dep, id);
        self.scaled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
        if forget {
            self.scale_targets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&key);
        }
    }

    /// Stops autoscaling the containers of `dep` (those not in `keep`, when given).
    pub(super) fn forget_scaling(&self, dep: &str, keep: Option<&BTreeSet<String>>) {
        let prefix = format!("{dep}/");
        let gone = |key: &String| {
            key.strip_prefix(&prefix).is_some_and(|id| keep.is_none_or(|k| !k.contains(id)))
        };
        self.scaled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| !gone(k));
        self.scale_targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| !gone(k));
    }

    /// Measures and scales every autoscaled container, every `autoscale_interval`, until the
    /// deployer is dropped.
    pub(super) async fn autoscale_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.options.autoscale_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let keys: Vec<String> = self
                .scaled
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .keys()
                .cloned()
                .collect();
            for key in keys {
                self.autoscale(&key).await;
            }
        }
    }

    /// One look at autoscaled container `key`: probe, point its fronts, measure, and start or
    /// stop replicas when the policy asks for another count. Skipped while a step of its
    /// deployment runs.
    pub(super) async fn autoscale(&self, key: &str) {
        let Some((dep, id, release, spec, policy, fronts, mut failures)) =
            self.scaled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).map(
                |s| {
                    (
                        s.dep.clone(),
                        s.id.clone(),
                        s.release.clone(),
                        s.spec.clone(),
                        s.policy.clone(),
                        s.fronts.clone(),
                        s.failures.clone(),
                    )
                },
            )
        else {
            return;
        };
        let lock = self.lock_of(&dep);
        let Ok(_guard) = lock.try_lock() else { return };
        let Ok(all) = self.engine.containers_with_label(LABEL_DEPLOYMENT, Some(&dep)).await else {
            return;
        };
        let mine: Vec<&EngineContainer> =
            all.iter().filter(|c| c.labels.get(LABEL_RESOURCE) == Some(&id)).collect();
        let observed = self.observe(&mine, &mut failures, &[]).await;
        self.point_fronts(&dep, &id, &fronts, &observed, &[]);
        let current: Vec<&Observed<'_>> = observed
            .iter()
            .filter(|o| o.container.running)
            .filter(|o| o.container.labels.get(LABEL_SPEC) == Some(&spec.hash))
            .collect();
        let count = current.len() as u32;
        let mut sample = autoscale::Sample::default();
        if let Some(load) =
            fronts.expose.and_then(|(_, port)| self.fronts.load(&Self::port_key(&dep, &id, port)))
        {
            sample.in_flight = Some(load.in_flight());
            sample.p95_ms = load.p95_ms();
        }
        if policy.target_cpu_percent.is_some() || policy.target_memory_percent.is_some() {
            let names: Vec<String> = current.iter().map(|o| o.container.name.clone()).collect();
            if let Ok(text) = self.engine.stats(&names).await {
                let stats = autoscale::parse_stats(&text);
                if !stats.is_empty() {
                    let n = stats.len() as f64;
                    let cpus: f64 = spec.cpus.parse().unwrap_or(1.0_f64).max(0.001);
                    sample.cpu_percent =
                        Some(stats.iter().map(|(_, cpu, _)| cpu / cpus).sum::<f64>() / n);
                    sample.memory_percent = Some(stats.iter().map(|(_, _, m)| m).sum::<f64>() / n);
                }
            }
        }
        let (recommended, why) = autoscale::recommend(&policy, count, &sample);
        let target = {
            let mut scaled = self.scaled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(entry) = scaled.get_mut(key) else { return };
            entry.failures = failures;
            entry.stabilizer.next(std::time::Instant::now(), recommended, count)
        };
        if target == count {
            return;
        }
        if target > count {
            let used: BTreeSet<u32> = mine
                .iter()
                .filter_map(|c| c.labels.get(LABEL_REPLICA).and_then(|o| o.parse().ok()))
                .collect();
            let free = (0..).filter(|n| !used.contains(n)).take((target - count) as usize);
            for ordinal in free {
                if let Err(message) =
                    self.start_replica(&dep, &id, &release, &spec, ordinal, &fronts).await
                {
                    tracing::warn!(deployment = %dep, container = %id, %message, "autoscaling could not start a replica");
                    return;
                }
            }
        } else {
            let mut by_ordinal: Vec<&&Observed<'_>> = current.iter().collect();
            by_ordinal.sort_by_key(|o| std::cmp::Reverse(o.ordinal));
            let removed: Vec<String> = by_ordinal
                .iter()
                .take((count - target) as usize)
                .map(|o| o.container.name.clone())
                .collect();
            if self.point_fronts(&dep, &id, &fronts, &observed, &removed) {
                tokio::time::sleep(self.options.drain).await;
            }
            if let Err(e) = self.engine.stop_and_remove(&removed, self.options.stop_grace).await {
                tracing::warn!(deployment = %dep, container = %id, error = %e, "autoscaling could not stop replicas");
                return;
            }
        }
        self.scale_targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned(), target);
        let reason = why.unwrap_or_else(|| "within autoscaling.min..max".to_owned());
        tracing::info!(deployment = %dep, container = %id, from = count, to = target, %reason, "autoscaled");
        if let Some(events) = &self.options.scaling_events {
            (events.0)(ScalingEvent {
                deployment: dep,
                container: id,
                from: count,
                to: target,
                reason,
            });
        }
    }
}
