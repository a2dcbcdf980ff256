//! The load balancer in front of an exposed port: an ALB with an HTTP listener on 80 (`http`,
//! health-checked on the container's health check path) or an NLB with a TCP listener on the
//! port (`tcp`), each with its target group, found by name or created.

use alien_core::stack::Expose;
use alien_core::{ContainerConfig, DeploymentError};

use super::book::LoadBalancerBook;
use super::target::EcsTarget;
use super::{Clients, EcsDeployer, aws_error, build_error};
use crate::error::classify;

impl EcsDeployer {
    /// The load balancer, target group and listener of an exposed port (found by name, else
    /// created).
    pub(super) async fn load_balancer(
        &self,
        clients: &Clients,
        target: &EcsTarget,
        id: &str,
        name: &str,
        container: &ContainerConfig,
        (port, expose): (u32, Expose),
    ) -> Result<LoadBalancerBook, DeploymentError> {
        use aws_sdk_elasticloadbalancingv2::types::{
            Action, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, Matcher,
            ProtocolEnum, TargetTypeEnum,
        };
        let (kind, lb_type, protocol, listener_port) = match expose {
            Expose::Http => {
                ("application", LoadBalancerTypeEnum::Application, ProtocolEnum::Http, 80)
            }
            Expose::Tcp => ("network", LoadBalancerTypeEnum::Network, ProtocolEnum::Tcp, port),
        };
        let port_i32 = i32::try_from(port).unwrap_or(0);
        let elb = &clients.elb;
        let found = elb.describe_load_balancers().names(name).send().await;
        let lb = match found {
            Ok(out) => out.load_balancers().first().cloned(),
            Err(err) => {
                let failure = classify("ELB DescribeLoadBalancers", &err);
                if failure.code.as_deref() != Some("LoadBalancerNotFound") {
                    return Err(aws_error(failure, Some(id)));
                }
                None
            }
        };
        let lb = match lb {
            Some(lb) => lb,
            None => elb
                .create_load_balancer()
                .name(name)
                .r#type(lb_type)
                .scheme(LoadBalancerSchemeEnum::InternetFacing)
                .set_subnets(Some(target.subnet_ids.clone()))
                .set_security_groups(Some(target.security_group_ids.clone()))
                .send()
                .await
                .map_err(|e| aws_error(classify("ELB CreateLoadBalancer", &e), Some(id)))?
                .load_balancers()
                .first()
                .cloned()
                .ok_or_else(|| build_error(id, "CreateLoadBalancer returned nothing"))?,
        };
        let lb_arn = lb.load_balancer_arn().unwrap_or_default().to_owned();
        let found = elb.describe_target_groups().names(name).send().await;
        let group = match found {
            Ok(out) => out.target_groups().first().cloned(),
            Err(err) => {
                let failure = classify("ELB DescribeTargetGroups", &err);
                if failure.code.as_deref() != Some("TargetGroupNotFound") {
                    return Err(aws_error(failure, Some(id)));
                }
                None
            }
        };
        let group = match group {
            Some(group) => group,
            None => {
                let mut create = elb
                    .create_target_group()
                    .name(name)
                    .protocol(protocol.clone())
                    .port(port_i32)
                    .set_vpc_id(target.vpc_id.clone())
                    .target_type(TargetTypeEnum::Ip);
                if expose == Expose::Http {
                    let check = container.health_check.as_ref();
                    let path = check.and_then(|c| c.path.clone()).unwrap_or_else(|| "/".into());
                    create = create
                        .health_check_path(path)
                        .matcher(Matcher::builder().http_code("200-399").build());
                    if let Some(threshold) = check.and_then(|c| c.failure_threshold) {
                        create = create.unhealthy_threshold_count(
                            i32::try_from(threshold.clamp(2, 10)).unwrap_or(2),
                        );
                    }
                }
                create
                    .send()
                    .await
                    .map_err(|e| aws_error(classify("ELB CreateTargetGroup", &e), Some(id)))?
                    .target_groups()
                    .first()
                    .cloned()
                    .ok_or_else(|| build_error(id, "CreateTargetGroup returned nothing"))?
            }
        };
        let group_arn = group.target_group_arn().unwrap_or_default().to_owned();
        let listeners = elb
            .describe_listeners()
            .load_balancer_arn(&lb_arn)
            .send()
            .await
            .map_err(|e| aws_error(classify("ELB DescribeListeners", &e), Some(id)))?;
        let listener_arn = match listeners.listeners().first() {
            Some(listener) => listener.listener_arn().unwrap_or_default().to_owned(),
            None => elb
                .create_listener()
                .load_balancer_arn(&lb_arn)
                .protocol(protocol)
                .port(i32::try_from(listener_port).unwrap_or(80))
                .default_actions(
                    Action::builder()
                        .r#type(ActionTypeEnum::Forward)
                        .target_group_arn(&group_arn)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| aws_error(classify("ELB CreateListener", &e), Some(id)))?
                .listeners()
                .first()
                .and_then(|l| l.listener_arn())
                .unwrap_or_default()
                .to_owned(),
        };
        Ok(LoadBalancerBook {
            kind: kind.to_owned(),
            name: name.to_owned(),
            arn: lb_arn,
            dns_name: lb.dns_name().unwrap_or_default().to_owned(),
            target_group_arn: group_arn,
            listener_arn,
            port,
            listener_port,
        })
    }
}

/// `app/<lb-name>/<lb-id>/targetgroup/<tg-name>/<tg-id>` (ALBRequestCountPerTarget's label).
pub(super) fn resource_label(lb: &LoadBalancerBook) -> Option<String> {
    if lb.kind != "application" {
        return None;
    }
    let lb_part = lb.arn.split_once(":loadbalancer/")?.1;
    let tg_part = lb.target_group_arn.rsplit_once(':')?.1;
    Some(format!("{lb_part}/{tg_part}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_count_label_is_built_from_the_arns() {
        let lb = LoadBalancerBook {
            kind: "application".into(),
            arn: "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/al-1/50dc6c495c0c9188"
                .into(),
            target_group_arn:
                "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/al-1/73e2d6bc24d8a067".into(),
            ..Default::default()
        };
        assert_eq!(
            resource_label(&lb).unwrap(),
            "app/al-1/50dc6c495c0c9188/targetgroup/al-1/73e2d6bc24d8a067"
        );
        assert_eq!(resource_label(&LoadBalancerBook { kind: "network".into(), ..lb }), None);
    }
}
