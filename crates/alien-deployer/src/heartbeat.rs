//! The heartbeat loop. Pull mode: a deployment whose agent has not synced for 3 heartbeat
//! intervals becomes `stale` (its next sync brings it back). Push mode (refreshing running
//! deployments through their platform's deployer) arrives with the local deployer.

use std::sync::Arc;
use std::time::Duration;

use alien_core::DeploymentEvent;
use alien_store::{DeploymentPatch, Store, StoreError};
use chrono::{DateTime, Utc};

/// Missed intervals after which an agent's deployment is stale.
pub const MISSED_INTERVALS: u32 = 3;
/// Deployments marked stale per pass at most.
const PER_PASS: u32 = 1000;

/// The heartbeat loop of one manager replica.
pub struct HeartbeatLoop {
    store: Arc<dyn Store>,
    interval: Duration,
}

impl std::fmt::Debug for HeartbeatLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatLoop").field("interval", &self.interval).finish_non_exhaustive()
    }
}

impl HeartbeatLoop {
    /// A loop over `store` with `interval` (`heartbeat-interval-secs`, also the agents' sync
    /// interval the manager expects).
    pub fn new(store: Arc<dyn Store>, interval: Duration) -> Self {
        Self { store, interval }
    }

    /// Marks `stale` every pull deployment silent for [`MISSED_INTERVALS`] intervals before
    /// `now`; returns how many. A deployment that synced or changed meanwhile is left alone.
    pub async fn mark_silent_agents(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let window = chrono::Duration::from_std(self.interval * MISSED_INTERVALS)
            .unwrap_or(chrono::Duration::MAX);
        let silent_since = now - window;
        let mut marked = 0;
        for id in self.store.silent_pull_deployments(silent_since, PER_PASS).await? {
            let patch = DeploymentPatch {
                reason: format!("no sync for {MISSED_INTERVALS} heartbeat intervals"),
                ..Default::default()
            };
            match self.store.transition(&id, DeploymentEvent::HeartbeatMissed, patch).await {
                Ok(_) => {
                    marked += 1;
                    tracing::info!(deployment = %id, "agent silent: deployment is stale");
                }
                // It changed since the query (a sync, a delete): nothing to do.
                Err(StoreError::InvalidTransition(_) | StoreError::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
        }
        metrics::counter!("deployments_marked_stale_total").increment(marked as u64);
        Ok(marked)
    }

    /// Runs a pass every interval until the task is aborted.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(err) = self.mark_silent_agents(Utc::now()).await {
                    tracing::warn!(error = %err, "heartbeat pass failed");
                }
            }
        })
    }
}
