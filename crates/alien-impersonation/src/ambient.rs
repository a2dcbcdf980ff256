//! The local implementation: the manager's own environment is every identity.

use crate::credentials::Credentials;
use crate::error::ImpersonationError;
use crate::impersonator::Impersonator;
use crate::target::ImpersonationTarget;

/// Single-account mode: answers [`Credentials::Ambient`] for every target, so deployers and
/// workloads use the credentials of their own environment (instance role, workload identity,
/// `~/.aws`, ...): a deployment's role ARN or service account is not assumed. An embedder may
/// use it as a `PerCloudImpersonator` fallback for single-account setups; the manager itself
/// refuses a cloud target it cannot impersonate into (`IMPERSONATION_NOT_CONFIGURED`) rather than
/// act in the wrong account. It holds no secret and never fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AmbientImpersonator;

#[async_trait::async_trait]
impl Impersonator for AmbientImpersonator {
    async fn credentials(
        &self,
        _target: &ImpersonationTarget,
    ) -> Result<Credentials, ImpersonationError> {
        Ok(Credentials::Ambient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::aws_target;

    #[tokio::test]
    async fn every_target_gets_ambient_credentials() {
        for target in [ImpersonationTarget::ambient(), aws_target("customer")] {
            assert_eq!(AmbientImpersonator.credentials(&target).await, Ok(Credentials::Ambient));
        }
    }
}
