//! Pull mode on untrusted bytes: `POST /v1/initialize` and `POST /v1/sync` bodies as the API
//! extracts them (`InitializeRequest`, `SyncRequest`), the checks the initialize handler makes
//! (`check_name`, the platform allows pull mode), and the decisions
//! `lifecycle::record_agent_report` takes on a report against a deployment in every status (it
//! lags behind, it takes up a retry, the transition table); and `SyncResponse` as the agent reads
//! the manager's answer.
//!
//! Invariants: a report the transition table accepts is mirrored (the deployment takes the
//! reported status); what the manager writes, the agent reads back unchanged.

#![no_main]

use std::sync::LazyLock;

use alien_core::deployment::check_name;
use alien_core::sync::{
    InitializeRequest, ReleaseRef, SyncRequest, SyncResponse, runs_older_release,
};
use alien_core::{
    Deployment, DeploymentEvent, DeploymentModel, DeploymentStatus, Id, IdKind, Platform,
};
use alien_fuzz::assert_reads_back;
use libfuzzer_sys::fuzz_target;

/// A pull deployment; each input is decided against it in every status.
static DEPLOYMENT: LazyLock<Deployment> = LazyLock::new(|| {
    serde_json::from_value(serde_json::json!({
        "id": Id::new(IdKind::Deployment).to_string(),
        "name": "agent",
        "deploymentGroupId": Id::new(IdKind::DeploymentGroup).to_string(),
        "platform": "local",
        "deploymentModel": "pull",
        "status": "running",
        "retryRequested": false,
        "createdAt": "2026-01-01T00:00:00Z",
        "updatedAt": "2026-01-01T00:00:00Z",
    }))
    .expect("a deployment")
});

static OTHER_RELEASE: LazyLock<Id> = LazyLock::new(|| Id::new(IdKind::Release));

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<InitializeRequest>(data) {
        let _ = check_name(&request.name);
        let _ = request.platform.unwrap_or(Platform::Local).allows(DeploymentModel::Pull);
    }
    if let Ok(request) = serde_json::from_slice::<SyncRequest>(data)
        && let Some(report) = request.current_state
    {
        let reported = report.current_release.as_ref().map(|r: &ReleaseRef| r.release_id.clone());
        let releases = [None, reported, Some(OTHER_RELEASE.clone())];
        for status in DeploymentStatus::ALL {
            for retry_requested in [false, true] {
                for desired in &releases {
                    let mut deployment = DEPLOYMENT.clone();
                    deployment.status = status;
                    deployment.retry_requested = retry_requested;
                    deployment.desired_release_id = desired.clone();
                    let _ = report.lags_behind(&deployment);
                    let _ = report.takes_up_retry(&deployment);
                    if let Ok(next) =
                        status.transition(DeploymentEvent::AgentReported(report.status))
                    {
                        assert_eq!(
                            next, report.status,
                            "{status} took a report of {}",
                            report.status
                        );
                        deployment.status = next;
                        deployment.current_release_id =
                            report.current_release.as_ref().map(|r| r.release_id.clone());
                        let _ = runs_older_release(&deployment);
                    }
                }
            }
        }
        assert_reads_back(&report);
    }
    if let Ok(response) = serde_json::from_slice::<SyncResponse>(data) {
        assert_reads_back(&response);
    }
});
