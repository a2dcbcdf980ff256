//! Where in the customer's account a deployment's containers run: read from the deployment's
//! platform target (`spec/clouds.md`: `{accountId, roleArn, externalId?}`, which the
//! impersonation reads) plus the network and roles ECS needs, which this deployer reads:
//!
//! ```json
//! {"accountId": "210987654321", "roleArn": "arn:aws:iam::210987654321:role/alien-deployer",
//!  "vpcId": "vpc-...", "subnetIds": ["subnet-a", "subnet-b"], "securityGroupIds": ["sg-..."],
//!  "executionRoleArn": "arn:aws:iam::210987654321:role/alien-ecs-execution",
//!  "cluster": "alien", "assignPublicIp": false}
//! ```
//!
//! The deployer never looks the network up itself: which subnets and security groups a vendor's
//! containers may use is the customer's decision, written once where the deployment is made.

use alien_core::DeploymentError;
use serde_json::Value;

/// The error code of a target the deployer cannot use.
pub const INVALID_TARGET: &str = alien_deployer::codes::INVALID_TARGET;

/// What ECS needs to know about the customer's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsTarget {
    /// The customer's account (`accountId`), granted pull on release images in the vendor's
    /// registry; `None` in single-account mode.
    pub account_id: Option<String>,
    /// The cluster services are created in (created if missing; default `alien`).
    pub cluster: String,
    /// The VPC of the subnets (target groups are created in it).
    pub vpc_id: Option<String>,
    /// Subnets of the tasks and load balancers (at least one; two in two zones for an ALB).
    pub subnet_ids: Vec<String>,
    /// Security groups of the tasks and load balancers (at least one).
    pub security_group_ids: Vec<String>,
    /// The task execution role (pulls images, reads secret parameters, writes logs).
    pub execution_role_arn: String,
    /// Whether tasks get a public IP (subnets without a NAT gateway need one to pull images).
    pub assign_public_ip: bool,
}

fn invalid(field: &str, message: &str) -> DeploymentError {
    DeploymentError {
        code: INVALID_TARGET.into(),
        message: format!(
            "target.{field} {message}; aws deployments give {{\"vpcId\", \"subnetIds\", \
             \"securityGroupIds\", \"executionRoleArn\"}} besides accountId and roleArn \
             (docs/aws.md)"
        ),
        resource_id: None,
    }
}

fn string(target: &Value, field: &str) -> Result<Option<String>, DeploymentError> {
    match target.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(invalid(field, "must be a non-empty string")),
    }
}

fn strings(target: &Value, field: &str) -> Result<Vec<String>, DeploymentError> {
    match target.get(field) {
        None | Some(Value::Null) => Err(invalid(field, "is missing")),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                _ => Err(invalid(field, "must hold non-empty strings")),
            })
            .collect(),
        Some(_) => Err(invalid(field, "must be a non-empty array of strings")),
    }
}

impl EcsTarget {
    /// The ECS settings of a deployment's `target`; `needs_vpc` when a port is exposed (target
    /// groups live in a VPC). A missing or malformed field is an error naming it.
    pub fn from_target(
        target: Option<&Value>,
        needs_vpc: bool,
    ) -> Result<EcsTarget, DeploymentError> {
        let target = match target {
            Some(value @ Value::Object(_)) => value,
            _ => return Err(invalid("subnetIds", "is missing (the deployment has no target)")),
        };
        let vpc_id = string(target, "vpcId")?;
        if needs_vpc && vpc_id.is_none() {
            return Err(invalid(
                "vpcId",
                "is missing (an exposed port needs a target group in it)",
            ));
        }
        let execution_role_arn = string(target, "executionRoleArn")?
            .ok_or_else(|| invalid("executionRoleArn", "is missing"))?;
        if !execution_role_arn.starts_with("arn:") || !execution_role_arn.contains(":role/") {
            return Err(invalid("executionRoleArn", "must be an IAM role ARN"));
        }
        let assign_public_ip = match target.get("assignPublicIp") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("assignPublicIp", "must be true or false")),
        };
        let cluster = string(target, "cluster")?.unwrap_or_else(|| "alien".to_owned());
        let valid_cluster = cluster.len() <= 255
            && cluster.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_cluster {
            return Err(invalid("cluster", "must be 1..=255 of letters, digits, - and _"));
        }
        Ok(EcsTarget {
            account_id: string(target, "accountId")?,
            cluster,
            vpc_id,
            subnet_ids: strings(target, "subnetIds")?,
            security_group_ids: strings(target, "securityGroupIds")?,
            execution_role_arn,
            assign_public_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn full() -> Value {
        json!({"accountId": "210987654321", "roleArn": "arn:aws:iam::210987654321:role/d",
               "vpcId": "vpc-1", "subnetIds": ["subnet-a", "subnet-b"],
               "securityGroupIds": ["sg-1"],
               "executionRoleArn": "arn:aws:iam::210987654321:role/exec"})
    }

    #[test]
    fn a_full_target_reads_with_defaults() {
        let target = EcsTarget::from_target(Some(&full()), true).unwrap();
        assert_eq!(target.cluster, "alien");
        assert_eq!(target.subnet_ids, ["subnet-a", "subnet-b"]);
        assert!(!target.assign_public_ip);
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases: [(&str, Value, bool); 7] = [
            ("subnetIds", json!(null), false),
            ("subnetIds", json!([]), false),
            ("securityGroupIds", json!("sg-1"), false),
            ("vpcId", json!(null), true),
            ("executionRoleArn", json!("exec"), false),
            ("assignPublicIp", json!("yes"), false),
            ("cluster", json!("a b"), false),
        ];
        for (field, value, needs_vpc) in cases {
            let mut target = full();
            target[field] = value;
            let err = EcsTarget::from_target(Some(&target), needs_vpc).unwrap_err();
            assert_eq!(err.code, INVALID_TARGET);
            assert!(err.message.starts_with(&format!("target.{field} ")), "{}", err.message);
        }
        let err = EcsTarget::from_target(None, false).unwrap_err();
        assert!(err.message.contains("no target"), "{}", err.message);
        let mut no_vpc = full();
        no_vpc["vpcId"] = json!(null);
        assert!(EcsTarget::from_target(Some(&no_vpc), false).is_ok(), "no port exposed");
    }
}
