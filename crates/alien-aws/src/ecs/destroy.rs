//! Removing what the deployer made for one container, in an order AWS accepts: scaling,
//! the service (waiting while it drains), listener, target group, load balancer, every revision
//! of the task definition family, the log group and the parameters. What is already gone is
//! done.

use alien_core::DeploymentError;

use super::book::ContainerBook;
use super::rollout::describe_service;
use super::{Clients, aws_error};
use crate::error::{AwsFailure, classify};

/// Removes one container's resources; `Ok(false)` while its service is still draining.
pub(super) async fn destroy_container(
    clients: &Clients,
    cluster: &str,
    id: &str,
    entry: &ContainerBook,
) -> Result<bool, DeploymentError> {
    use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
    let fail = |f: AwsFailure| aws_error(f, Some(id));
    let gone =
        |f: &AwsFailure, codes: &[&str]| f.code.as_deref().is_some_and(|c| codes.contains(&c));
    if entry.autoscaling {
        let resource = format!("service/{cluster}/{}", entry.family);
        // Policies first: deregistering the target leaves them behind on some implementations.
        for name in ["alien-cpu", "alien-memory", "alien-requests"] {
            let deleted = clients
                .scaling
                .delete_scaling_policy()
                .policy_name(name)
                .service_namespace(ServiceNamespace::Ecs)
                .resource_id(&resource)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .send()
                .await;
            if let Err(err) = deleted {
                let f = classify("Auto Scaling DeleteScalingPolicy", &err);
                if !gone(&f, &["ObjectNotFoundException", "ValidationException"]) {
                    return Err(fail(f));
                }
            }
        }
        let deregistered = clients
            .scaling
            .deregister_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&resource)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .send()
            .await;
        if let Err(err) = deregistered {
            let f = classify("Auto Scaling DeregisterScalableTarget", &err);
            if !gone(&f, &["ObjectNotFoundException", "ValidationException"]) {
                return Err(fail(f));
            }
        }
    }
    let service = describe_service(clients, cluster, &entry.family).await.map_err(fail)?;
    match service.as_ref().and_then(|s| s.status()) {
        Some("ACTIVE") => {
            clients
                .ecs
                .delete_service()
                .cluster(cluster)
                .service(&entry.family)
                .force(true)
                .send()
                .await
                .map_err(|e| fail(classify("ECS DeleteService", &e)))?;
            let after = describe_service(clients, cluster, &entry.family).await.map_err(fail)?;
            if after.as_ref().and_then(|s| s.status()) == Some("DRAINING") {
                return Ok(false);
            }
        }
        Some("DRAINING") => return Ok(false),
        _ => {}
    }
    if let Some(lb) = &entry.load_balancer {
        let elb = &clients.elb;
        if !lb.listener_arn.is_empty()
            && let Err(err) = elb.delete_listener().listener_arn(&lb.listener_arn).send().await
        {
            let f = classify("ELB DeleteListener", &err);
            if !gone(&f, &["ListenerNotFound"]) {
                return Err(fail(f));
            }
        }
        if !lb.target_group_arn.is_empty()
            && let Err(err) =
                elb.delete_target_group().target_group_arn(&lb.target_group_arn).send().await
        {
            let f = classify("ELB DeleteTargetGroup", &err);
            if gone(&f, &["ResourceInUse"]) {
                return Ok(false);
            }
            if !gone(&f, &["TargetGroupNotFound"]) {
                return Err(fail(f));
            }
        }
        if !lb.arn.is_empty()
            && let Err(err) = elb.delete_load_balancer().load_balancer_arn(&lb.arn).send().await
        {
            let f = classify("ELB DeleteLoadBalancer", &err);
            if !gone(&f, &["LoadBalancerNotFound"]) {
                return Err(fail(f));
            }
        }
    }
    // Every revision of the family, not only the last one recorded.
    let mut revisions = Vec::new();
    for status in [
        aws_sdk_ecs::types::TaskDefinitionStatus::Active,
        aws_sdk_ecs::types::TaskDefinitionStatus::Inactive,
    ] {
        let mut pages = clients
            .ecs
            .list_task_definitions()
            .family_prefix(&entry.family)
            .status(status.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| fail(classify("ECS ListTaskDefinitions", &e)))?;
            for arn in page.task_definition_arns() {
                // The prefix also matches `alien-{d}-{c}-x`; keep this family's own revisions.
                let name = arn.rsplit_once('/').map_or(arn.as_str(), |(_, n)| n);
                if name.rsplit_once(':').is_some_and(|(f, _)| f == entry.family) {
                    revisions.push((
                        arn.clone(),
                        status == aws_sdk_ecs::types::TaskDefinitionStatus::Active,
                    ));
                }
            }
        }
    }
    for (arn, active) in &revisions {
        if *active {
            clients
                .ecs
                .deregister_task_definition()
                .task_definition(arn)
                .send()
                .await
                .map_err(|e| fail(classify("ECS DeregisterTaskDefinition", &e)))?;
        }
    }
    for chunk in revisions.chunks(10) {
        clients
            .ecs
            .delete_task_definitions()
            .set_task_definitions(Some(chunk.iter().map(|(arn, _)| arn.clone()).collect()))
            .send()
            .await
            .map_err(|e| fail(classify("ECS DeleteTaskDefinitions", &e)))?;
    }
    if let Err(err) = clients.logs.delete_log_group().log_group_name(&entry.log_group).send().await
    {
        let f = classify("Logs DeleteLogGroup", &err);
        if !gone(&f, &["ResourceNotFoundException"]) {
            return Err(fail(f));
        }
    }
    let parameters: Vec<String> = entry.parameters.iter().cloned().collect();
    for chunk in parameters.chunks(10) {
        clients
            .ssm
            .delete_parameters()
            .set_names(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| fail(classify("SSM DeleteParameters", &e)))?;
    }
    Ok(true)
}
