//! `alien deployments ...`, and `--watch`: following a deployment's status and events until it
//! reaches a final status.

use std::time::Duration;

use alien_client::{Client, ClientError, DeploymentQuery};
use alien_core::api::{DeleteAction, DeleteBody, RedeployBody};
use alien_core::{
    CreateDeployment, Deployment, DeploymentModel, DeploymentStatus, EnvironmentVariable,
    ErrorCode, Id, Platform, VariableType,
};
use chrono::{DateTime, Utc};

use crate::Failure;
use crate::args::{DeploymentsCommand, Model};
use crate::commands::{more, page};
use crate::output::{Output, Table, or_dash, relative};

/// How often `--watch` asks.
const WATCH_EVERY: Duration = Duration::from_secs(2);

pub async fn run(
    client: &Client,
    out: &Output,
    command: DeploymentsCommand,
) -> Result<(), Failure> {
    match command {
        DeploymentsCommand::List { group, status, platform, name, page: page_args } => {
            let group = match group {
                Some(group) => Some(parse_id(&crate::resolve::group(client, &group).await?)?),
                None => None,
            };
            let query = DeploymentQuery {
                deployment_group_id: group,
                status: status.as_deref().map(parse_status).transpose()?,
                platform: platform.as_deref().map(parse_platform).transpose()?,
                name,
                page: page(&page_args),
            };
            let deployments = client.list_deployments(&query).await?;
            if out.json {
                return out.print_json(&deployments);
            }
            let mut table = Table::new(&[
                "ID",
                "NAME",
                "PLATFORM",
                "STATUS",
                "RELEASE",
                "LAST SEEN",
                "CREATED",
            ]);
            for d in &deployments.items {
                table.row(vec![
                    d.id.to_string(),
                    d.name.clone(),
                    d.platform.to_string(),
                    out.status(d.status),
                    or_dash(d.current_release_id.as_ref()),
                    d.last_heartbeat_at.map_or_else(|| "never".to_owned(), relative),
                    relative(d.created_at),
                ]);
            }
            table.print(out, "no deployments");
            more(out, &deployments);
            Ok(())
        }
        DeploymentsCommand::Get { id } => {
            let id = crate::resolve::deployment(client, &id).await?;
            let deployment = client.get_deployment(&id).await?;
            if out.json {
                return out.print_json(&deployment);
            }
            show(out, &deployment);
            let events = client.deployment_events(&id, Some(10)).await?;
            if !events.items.is_empty() {
                println!();
                let mut table = Table::new(&["WHEN", "FROM", "TO", "REASON"]);
                for event in &events.items {
                    table.row(vec![
                        relative(event.at),
                        or_dash(event.from),
                        out.status(event.to),
                        event.reason.clone(),
                    ]);
                }
                table.print(out, "");
            }
            Ok(())
        }
        DeploymentsCommand::Create { name, platform, group, model, env, watch } => {
            let platform = parse_platform(&platform)?;
            let group = match group {
                Some(group) => Some(parse_id(&crate::resolve::group(client, &group).await?)?),
                None => None,
            };
            let body = CreateDeployment {
                name,
                platform,
                deployment_group_id: group,
                deployment_model: model.map(|m| match m {
                    Model::Push => DeploymentModel::Push,
                    Model::Pull => DeploymentModel::Pull,
                }),
                environment_variables: env
                    .iter()
                    .map(|e| parse_variable(e))
                    .collect::<Result<_, _>>()?,
                stack_settings: None,
                region: None,
                target: None,
            };
            let created = client.create_deployment(&body).await?;
            if out.json {
                out.print_json(&created)?;
            } else {
                println!(
                    "created deployment {} ({}, {})",
                    created.deployment.id, created.deployment.name, created.deployment.status
                );
                println!("deployment token (shown once): {}", created.token);
            }
            if watch {
                follow(client, out, created.deployment.id.as_str(), false).await?;
            }
            Ok(())
        }
        DeploymentsCommand::Retry { id, watch } => {
            let id = crate::resolve::deployment(client, &id).await?;
            let answer = client.retry_deployment(&id).await?;
            acted(out, &answer, &format!("retry of {id} requested"))?;
            if watch {
                follow(client, out, &id, false).await?;
            }
            Ok(())
        }
        DeploymentsCommand::Redeploy { id, release, watch } => {
            let id = crate::resolve::deployment(client, &id).await?;
            let body = RedeployBody { release_id: release.as_deref().map(parse_id).transpose()? };
            let answer = client.redeploy_deployment(&id, &body).await?;
            acted(out, &answer, &format!("redeploy of {id} requested"))?;
            if watch {
                follow(client, out, &id, false).await?;
            }
            Ok(())
        }
        DeploymentsCommand::Delete { id, forget, watch } => {
            let id = crate::resolve::deployment(client, &id).await?;
            let action = if forget { DeleteAction::Forget } else { DeleteAction::Cleanup };
            let answer = client.delete_deployment(&id, &DeleteBody { action }).await?;
            acted(out, &answer, &answer.message)?;
            if watch && !forget {
                follow(client, out, &id, true).await?;
            }
            Ok(())
        }
    }
}

fn acted<T: serde::Serialize>(out: &Output, answer: &T, message: &str) -> Result<(), Failure> {
    if out.json {
        return out.print_json(answer);
    }
    println!("{message}");
    Ok(())
}

fn show(out: &Output, d: &Deployment) {
    let mut rows = vec![
        ("deployment", d.id.to_string()),
        ("name", d.name.clone()),
        ("group", d.deployment_group_id.to_string()),
        ("platform", format!("{} ({:?})", d.platform, d.deployment_model).to_lowercase()),
        ("status", out.status(d.status)),
        ("current release", or_dash(d.current_release_id.as_ref())),
        ("desired release", or_dash(d.desired_release_id.as_ref())),
        ("last seen", d.last_heartbeat_at.map_or_else(|| "never".to_owned(), relative)),
        ("created", relative(d.created_at)),
    ];
    if let Some(error) = &d.error {
        rows.push(("error", format!("{}: {}", error.code, error.message)));
    }
    out.fields(&rows);
}

fn parse_id(text: &str) -> Result<Id, Failure> {
    Id::parse_any(text).map_err(|e| Failure::Usage(format!("{text:?}: {e}")))
}

fn parse_status(text: &str) -> Result<DeploymentStatus, Failure> {
    text.parse().map_err(|e| Failure::Usage(format!("--status: {e}")))
}

pub fn parse_platform(text: &str) -> Result<Platform, Failure> {
    text.trim().parse().map_err(|e| Failure::Usage(format!("platform {text:?}: {e}")))
}

fn parse_variable(text: &str) -> Result<EnvironmentVariable, Failure> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| Failure::Usage(format!("--env {text:?}: expected NAME=VALUE")))?;
    Ok(EnvironmentVariable {
        name: name.to_owned(),
        value: value.to_owned(),
        var_type: VariableType::Plain,
    })
}

/// Whether `--watch` stops at `status`.
fn is_final(status: DeploymentStatus, deleting: bool) -> bool {
    use DeploymentStatus as S;
    match status {
        S::Deleted | S::Stale => true,
        S::Running => !deleting,
        s => s.is_failed(),
    }
}

/// Prints status changes and new events until a final status; a failed one is exit 1. While
/// `deleting`, the deployment disappearing is the end.
async fn follow(client: &Client, out: &Output, id: &str, deleting: bool) -> Result<(), Failure> {
    let mut seen: Option<DateTime<Utc>> = None;
    let mut last_status = None;
    loop {
        let deployment = match client.get_deployment(id).await {
            Ok(deployment) => deployment,
            Err(ClientError::Api { body, .. })
                if deleting && body.code == ErrorCode::DeploymentNotFound =>
            {
                eprintln!("{id}: deleted");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let events = client.deployment_events(id, Some(50)).await?;
        let mut fresh: Vec<_> =
            events.items.iter().filter(|e| seen.is_none_or(|s| e.at > s)).collect();
        fresh.reverse();
        for event in fresh {
            eprintln!(
                "{} {} -> {}: {}",
                out.dim(&event.at.format("%H:%M:%S").to_string()),
                or_dash(event.from),
                out.status(event.to),
                event.reason
            );
            seen = Some(seen.map_or(event.at, |s| s.max(event.at)));
        }
        if last_status != Some(deployment.status) {
            last_status = Some(deployment.status);
            eprintln!("{id}: {}", out.status(deployment.status));
        }
        if is_final(deployment.status, deleting) {
            return if deployment.status.is_failed() {
                let reason = deployment
                    .error
                    .map(|e| format!(": {}: {}", e.code, e.message))
                    .unwrap_or_default();
                Err(Failure::Local(format!("deployment {id} is {}{reason}", deployment.status)))
            } else {
                Ok(())
            };
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watching_stops_at_running_failures_and_deletion() {
        use DeploymentStatus as S;
        assert!(is_final(S::Running, false));
        assert!(!is_final(S::Running, true));
        assert!(is_final(S::UpdateFailed, false));
        assert!(is_final(S::DeleteFailed, true));
        assert!(is_final(S::Deleted, true));
        for waiting in [S::Pending, S::Provisioning, S::UpdatePending, S::Updating, S::Deleting] {
            assert!(!is_final(waiting, false), "{waiting}");
        }
    }

    #[test]
    fn variables_are_name_equals_value() {
        let v = parse_variable("A=b=c").ok();
        assert_eq!(v.as_ref().map(|v| (v.name.as_str(), v.value.as_str())), Some(("A", "b=c")));
        assert!(matches!(parse_variable("novalue"), Err(Failure::Usage(_))));
    }
}
