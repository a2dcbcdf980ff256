//! One impersonator per cloud behind one [`Impersonator`]: how the binary turns the
//! `[impersonation.aws|gcp|azure]` bindings into the single impersonator the manager uses.

use std::sync::Arc;

use crate::credentials::Credentials;
use crate::error::ImpersonationError;
use crate::impersonator::Impersonator;
use crate::target::{Cloud, ImpersonationTarget};

/// Sends each target to the impersonator of its cloud. An [`crate::Identity::Ambient`] target
/// gets [`Credentials::Ambient`] directly; a cloud without an impersonator goes to the fallback
/// (usually [`crate::AmbientImpersonator`], single-account mode) or, without one, fails with
/// [`ImpersonationError::NotConfigured`].
#[derive(Debug, Clone, Default)]
pub struct PerCloudImpersonator {
    aws: Option<Arc<dyn Impersonator>>,
    gcp: Option<Arc<dyn Impersonator>>,
    azure: Option<Arc<dyn Impersonator>>,
    fallback: Option<Arc<dyn Impersonator>>,
}

impl PerCloudImpersonator {
    /// No cloud served and no fallback: every cloud target is `NotConfigured`.
    pub fn new() -> PerCloudImpersonator {
        PerCloudImpersonator::default()
    }

    /// Serves `cloud`'s targets with `impersonator` (replacing an earlier one).
    #[must_use]
    pub fn with(mut self, cloud: Cloud, impersonator: Arc<dyn Impersonator>) -> Self {
        *self.slot(cloud) = Some(impersonator);
        self
    }

    /// Serves the targets of clouds without their own impersonator with `impersonator`.
    #[must_use]
    pub fn otherwise(mut self, impersonator: Arc<dyn Impersonator>) -> Self {
        self.fallback = Some(impersonator);
        self
    }

    /// Whether `cloud` has its own impersonator (not the fallback).
    pub fn serves(&self, cloud: Cloud) -> bool {
        self.get(cloud).is_some()
    }

    fn slot(&mut self, cloud: Cloud) -> &mut Option<Arc<dyn Impersonator>> {
        match cloud {
            Cloud::Aws => &mut self.aws,
            Cloud::Gcp => &mut self.gcp,
            Cloud::Azure => &mut self.azure,
        }
    }

    fn get(&self, cloud: Cloud) -> Option<&Arc<dyn Impersonator>> {
        match cloud {
            Cloud::Aws => self.aws.as_ref(),
            Cloud::Gcp => self.gcp.as_ref(),
            Cloud::Azure => self.azure.as_ref(),
        }
    }
}

#[async_trait::async_trait]
impl Impersonator for PerCloudImpersonator {
    async fn credentials(
        &self,
        target: &ImpersonationTarget,
    ) -> Result<Credentials, ImpersonationError> {
        let Some(cloud) = target.identity().cloud() else {
            return Ok(Credentials::Ambient);
        };
        match self.get(cloud).or(self.fallback.as_ref()) {
            Some(impersonator) => impersonator.credentials(target).await,
            None => Err(ImpersonationError::NotConfigured { cloud }),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, Utc};

    use super::*;
    use crate::AmbientImpersonator;
    use crate::target::Identity;
    use crate::testing::{ScriptedImpersonator, aws_credentials, aws_target};

    fn gcp_target() -> ImpersonationTarget {
        let identity = Identity::Gcp {
            service_account_email: "alien@customer.iam.gserviceaccount.com".into(),
            scopes: vec![crate::GCP_CLOUD_PLATFORM_SCOPE.into()],
        };
        ImpersonationTarget::new(identity, None)
    }

    #[tokio::test]
    async fn a_cloud_without_impersonator_or_fallback_is_not_configured() {
        let none = PerCloudImpersonator::new();
        assert_eq!(
            none.credentials(&gcp_target()).await,
            Err(ImpersonationError::NotConfigured { cloud: Cloud::Gcp })
        );
        assert_eq!(
            none.credentials(&ImpersonationTarget::ambient()).await,
            Ok(Credentials::Ambient),
            "the manager's own identity needs no configuration"
        );
        assert!(!none.serves(Cloud::Gcp));
    }

    #[tokio::test]
    async fn each_cloud_goes_to_its_impersonator_and_the_rest_to_the_fallback() {
        let credentials = aws_credentials("routed", Utc::now() + TimeDelta::hours(1));
        let aws = Arc::new(ScriptedImpersonator::new([Ok(credentials.clone())]));
        let per_cloud = PerCloudImpersonator::new()
            .with(Cloud::Aws, aws.clone())
            .otherwise(Arc::new(AmbientImpersonator));

        assert_eq!(per_cloud.credentials(&aws_target("customer")).await, Ok(credentials));
        assert_eq!(aws.calls(), 1);
        assert_eq!(per_cloud.credentials(&gcp_target()).await, Ok(Credentials::Ambient));
        assert_eq!(aws.calls(), 1, "the gcp target did not reach the aws impersonator");
        assert!(per_cloud.serves(Cloud::Aws) && !per_cloud.serves(Cloud::Azure));
    }
}
