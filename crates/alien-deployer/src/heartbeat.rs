//! The heartbeat loop, every `heartbeat-interval-secs`:
//!
//! - push mode: refreshes each `running` or `refresh-failed` deployment through its platform's
//!   deployer, records `lastHeartbeatAt` and the state it read (outputs, replica health); a
//!   failing resource makes the deployment `refresh-failed` with the error naming it, and the
//!   next healthy refresh brings it back to `running`;
//! - pull mode: a deployment whose agent has not synced for 3 intervals becomes `stale` (its next
//!   sync brings it back).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use alien_core::{Deployment, DeploymentEvent, DeploymentModel, DeploymentStatus, Platform};
use alien_store::{DeploymentFilter, DeploymentPatch, PageRequest, Store, StoreError};
use chrono::{DateTime, Utc};

use crate::platform::PlatformDeployer;

/// Missed intervals after which an agent's deployment is stale.
pub const MISSED_INTERVALS: u32 = 3;
/// Deployments marked stale per pass at most.
const PER_PASS: u32 = 1000;

/// Deployments refreshed at once.
const REFRESH_CONCURRENCY: usize = 8;

/// What a push-mode refresh pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshPass {
    /// Deployments refreshed.
    pub refreshed: usize,
    /// Of those, found failing (now `refresh-failed`).
    pub failing: usize,
    /// Of those, back to `running`.
    pub recovered: usize,
}

/// The heartbeat loop of one manager replica.
pub struct HeartbeatLoop {
    store: Arc<dyn Store>,
    interval: Duration,
    deployers: HashMap<Platform, Arc<dyn PlatformDeployer>>,
    impersonator: Arc<dyn alien_impersonation::Impersonator>,
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
        let impersonator = Arc::new(alien_impersonation::PerCloudImpersonator::new());
        Self { store, interval, deployers: HashMap::new(), impersonator }
    }

    /// Mints each refresh's credentials with `impersonator` (as the deployment loop does).
    #[must_use]
    pub fn with_impersonator(
        mut self,
        impersonator: Arc<dyn alien_impersonation::Impersonator>,
    ) -> Self {
        self.impersonator = impersonator;
        self
    }

    /// Refreshes push-mode deployments of these platforms every interval.
    #[must_use]
    pub fn with_deployers(
        mut self,
        deployers: HashMap<Platform, Arc<dyn PlatformDeployer>>,
    ) -> Self {
        self.deployers = deployers;
        self
    }

    /// Refreshes every `running` and `refresh-failed` push deployment of a platform this loop
    /// has a deployer for. Deployments the deployment loop holds for a retry are left to it.
    pub async fn refresh_push(&self, now: DateTime<Utc>) -> Result<RefreshPass, StoreError> {
        let mut pass = RefreshPass::default();
        // A deployment that moved from running to refresh-failed in this pass is listed again.
        let mut done: HashSet<alien_core::Id> = HashSet::new();
        for platform in self.deployers.keys().copied() {
            for status in [DeploymentStatus::Running, DeploymentStatus::RefreshFailed] {
                let filter = DeploymentFilter {
                    status: Some(status),
                    platform: Some(platform),
                    ..Default::default()
                };
                let mut cursor = None;
                loop {
                    let page = self
                        .store
                        .list_deployments(&filter, &PageRequest { limit: 500, cursor })
                        .await?;
                    let due: Vec<Deployment> = page
                        .items
                        .into_iter()
                        .filter(|d| {
                            d.deployment_model == DeploymentModel::Push && !d.retry_requested
                        })
                        .filter(|d| done.insert(d.id.clone()))
                        .collect();
                    let mut results = Vec::with_capacity(due.len());
                    for chunk in due.chunks(REFRESH_CONCURRENCY) {
                        let refreshes = chunk.iter().map(|d| self.refresh_one(d, now));
                        results.extend(futures_util::future::join_all(refreshes).await);
                    }
                    for result in results {
                        match result? {
                            Refreshed::Healthy => pass.refreshed += 1,
                            Refreshed::Failing => {
                                pass.refreshed += 1;
                                pass.failing += 1;
                            }
                            Refreshed::Recovered => {
                                pass.refreshed += 1;
                                pass.recovered += 1;
                            }
                            Refreshed::Moved => {}
                        }
                    }
                    cursor = page.next_cursor;
                    if cursor.is_none() {
                        break;
                    }
                }
            }
        }
        metrics::counter!("deployment_refreshes_total").increment(pass.refreshed as u64);
        Ok(pass)
    }

    async fn refresh_one(
        &self,
        deployment: &Deployment,
        now: DateTime<Utc>,
    ) -> Result<Refreshed, StoreError> {
        let Some(deployer) = self.deployers.get(&deployment.platform) else {
            return Ok(Refreshed::Moved);
        };
        let impersonator = self.impersonator.as_ref();
        let credentials = match crate::lifecycle::credentials(
            self.store.as_ref(),
            impersonator,
            deployment,
            "refresh",
        )
        .await
        {
            Ok(credentials) => credentials,
            // Deleted since it was listed: nothing to refresh.
            Err(StoreError::NotFound { .. }) => return Ok(Refreshed::Moved),
            Err(err) => return Err(err),
        };
        let report = match credentials {
            Ok(credentials) => {
                deployer.refresh(deployment, deployment.stack_state.as_ref(), &credentials).await
            }
            // Without credentials nothing can be read: the deployment is not known healthy.
            Err(error) => crate::platform::RefreshReport { state: None, failing: Some(error) },
        };
        let was_failing = deployment.status == DeploymentStatus::RefreshFailed;
        let (event, error, outcome) = match report.failing {
            Some(error) => {
                if !was_failing {
                    tracing::warn!(deployment = %deployment.id, code = %error.code, resource = ?error.resource_id, message = %error.message, "refresh found a failing resource");
                }
                (DeploymentEvent::RefreshFailed, Some(error), Refreshed::Failing)
            }
            None if was_failing => {
                tracing::info!(deployment = %deployment.id, "every resource is healthy again");
                (DeploymentEvent::RefreshHealthy, None, Refreshed::Recovered)
            }
            None => (DeploymentEvent::RefreshHealthy, None, Refreshed::Healthy),
        };
        let patch = DeploymentPatch {
            stack_state: report.state,
            // A healthy refresh keeps no error; a failing one records what fails.
            error: Some(error),
            last_heartbeat_at: Some(now),
            reason: "heartbeat".into(),
            ..Default::default()
        };
        match self.store.transition(&deployment.id, event, patch).await {
            Ok(_) => Ok(outcome),
            // It changed meanwhile (an update, a delete): the loop owns it now.
            Err(
                StoreError::InvalidTransition(_)
                | StoreError::Conflict(_)
                | StoreError::NotFound { .. },
            ) => Ok(Refreshed::Moved),
            Err(err) => Err(err),
        }
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
                if let Err(err) = self.refresh_push(Utc::now()).await {
                    tracing::warn!(error = %err, "refresh pass failed");
                }
            }
        })
    }
}

/// What one refresh did.
enum Refreshed {
    Healthy,
    Failing,
    Recovered,
    /// The deployment changed status meanwhile: not this loop's any more.
    Moved,
}
