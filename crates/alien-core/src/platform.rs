//! Target platforms and how deployments on them are driven (`spec/api.md` "Deployments").
//!
//! A deployment is either pushed by the manager ([`DeploymentModel::Push`]) or pulled by an agent
//! running in the customer environment ([`DeploymentModel::Pull`]). Which models a platform allows,
//! and its default, is decided here and nowhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A platform a stack can be deployed to, lowercase on the wire.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Amazon Web Services (ECS on Fargate).
    Aws,
    /// Google Cloud (Cloud Run).
    Gcp,
    /// Microsoft Azure (Container Apps).
    Azure,
    /// A Kubernetes cluster, always reached through a pull agent.
    Kubernetes,
    /// Containers on a host through podman or docker.
    Local,
}

/// How a deployment is driven: by the manager or by an agent next to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentModel {
    /// The manager's deployment loop applies releases with credentials it holds.
    Push,
    /// An agent in the customer environment syncs with the manager and applies releases itself.
    Pull,
}

/// A string that names no [`Platform`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform {given:?}; expected one of aws, gcp, azure, kubernetes, local")]
pub struct ParsePlatformError {
    /// What was given.
    pub given: String,
}

/// A string that names no [`DeploymentModel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown deployment model {given:?}; expected push or pull")]
pub struct ParseDeploymentModelError {
    /// What was given.
    pub given: String,
}

/// A deployment model the platform does not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{platform} deployments cannot use the {model} model; {platform} allows only {allowed}")]
pub struct ModelNotAllowed {
    /// The deployment's platform.
    pub platform: Platform,
    /// The model that was asked for.
    pub model: DeploymentModel,
    /// The model the platform allows instead.
    pub allowed: DeploymentModel,
}

impl Platform {
    /// Every platform, in documentation order.
    pub const ALL: [Platform; 5] =
        [Self::Aws, Self::Gcp, Self::Azure, Self::Kubernetes, Self::Local];

    /// The wire name, e.g. `"aws"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Gcp => "gcp",
            Self::Azure => "azure",
            Self::Kubernetes => "kubernetes",
            Self::Local => "local",
        }
    }

    /// The model used when a deployment does not ask for one.
    pub fn default_model(self) -> DeploymentModel {
        match self {
            Self::Aws | Self::Gcp | Self::Azure | Self::Local => DeploymentModel::Push,
            Self::Kubernetes => DeploymentModel::Pull,
        }
    }

    /// Whether deployments on this platform may use `model`.
    pub fn allows(self, model: DeploymentModel) -> bool {
        match self {
            Self::Kubernetes => model == DeploymentModel::Pull,
            Self::Local => true,
            // The manager holds (impersonated) cloud credentials, and no cloud agent exists yet.
            Self::Aws | Self::Gcp | Self::Azure => model == DeploymentModel::Push,
        }
    }

    /// The model for a new deployment: `requested` if allowed, else the default.
    pub fn choose_model(
        self,
        requested: Option<DeploymentModel>,
    ) -> Result<DeploymentModel, ModelNotAllowed> {
        let model = requested.unwrap_or(self.default_model());
        if self.allows(model) {
            Ok(model)
        } else {
            Err(ModelNotAllowed { platform: self, model, allowed: self.default_model() })
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = ParsePlatformError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|platform| platform.as_str() == value)
            .ok_or_else(|| ParsePlatformError { given: value.to_owned() })
    }
}

impl DeploymentModel {
    /// Both models.
    pub const ALL: [DeploymentModel; 2] = [Self::Push, Self::Pull];

    /// The wire name, `"push"` or `"pull"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
        }
    }
}

impl fmt::Display for DeploymentModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeploymentModel {
    type Err = ParseDeploymentModelError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|model| model.as_str() == value)
            .ok_or_else(|| ParseDeploymentModelError { given: value.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::DeploymentModel::{Pull, Push};
    use super::*;

    #[test]
    fn names_round_trip_through_serde_display_and_from_str() {
        for platform in Platform::ALL {
            let wire = serde_json::to_value(platform).unwrap();
            assert_eq!(wire, json!(platform.to_string()));
            assert_eq!(platform.as_str().parse::<Platform>().unwrap(), platform);
            assert_eq!(serde_json::from_value::<Platform>(wire).unwrap(), platform);
        }
        for model in DeploymentModel::ALL {
            assert_eq!(serde_json::to_value(model).unwrap(), json!(model.as_str()));
            assert_eq!(model.to_string().parse::<DeploymentModel>().unwrap(), model);
        }
    }

    #[test]
    fn unknown_names_are_rejected_with_the_valid_values() {
        let err = "AWS".parse::<Platform>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown platform \"AWS\"; expected one of aws, gcp, azure, kubernetes, local"
        );
        assert!(serde_json::from_value::<Platform>(json!("test")).is_err());
        let err = "both".parse::<DeploymentModel>().unwrap_err();
        assert!(err.to_string().contains("push or pull"), "{err}");
    }

    #[test]
    fn model_rules_per_platform() {
        // (platform, default, allows push, allows pull)
        let table = [
            (Platform::Aws, Push, true, false),
            (Platform::Gcp, Push, true, false),
            (Platform::Azure, Push, true, false),
            (Platform::Kubernetes, Pull, false, true),
            (Platform::Local, Push, true, true),
        ];
        assert_eq!(table.len(), Platform::ALL.len());
        for (platform, default, push, pull) in table {
            assert_eq!(platform.default_model(), default, "{platform}");
            assert_eq!(platform.allows(Push), push, "{platform}");
            assert_eq!(platform.allows(Pull), pull, "{platform}");
        }
    }

    #[test]
    fn choose_model_uses_the_default_or_rejects_a_disallowed_request() {
        assert_eq!(Platform::Kubernetes.choose_model(None), Ok(Pull));
        assert_eq!(Platform::Local.choose_model(Some(Pull)), Ok(Pull));
        assert_eq!(Platform::Local.choose_model(None), Ok(Push));
        let err = Platform::Kubernetes.choose_model(Some(Push)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kubernetes deployments cannot use the push model; kubernetes allows only pull"
        );
        assert!(Platform::Aws.choose_model(Some(Pull)).is_err());
    }
}
