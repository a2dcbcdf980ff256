//! Why credentials could not be had. Each variant's message says what to do about it; the
//! server maps the variants to the API error body (`retryable` from [`ImpersonationError::retryable`]).
//! No message ever contains a credential.

use crate::target::Cloud;

/// Why an [`crate::Impersonator`] gave no credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImpersonationError {
    /// This manager has no impersonation set up for the target's cloud.
    #[error(
        "no {cloud} impersonation is configured: add an [impersonation.{cloud}] binding to \
         alien-manager.toml, or remove the deployment's target to use the manager's own {cloud} \
         credentials"
    )]
    NotConfigured {
        /// The target's cloud.
        cloud: Cloud,
    },
    /// The target cannot be used as given; nothing was asked of the provider.
    #[error("invalid impersonation target: {field} {message}")]
    InvalidTarget {
        /// Which field (`target.roleArn`).
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The provider refused: the identity does not trust the manager, or a condition failed.
    #[error(
        "{identity} refused to be impersonated: {message}; check that it trusts the manager's \
         identity (on AWS: the role's trust policy and external id)"
    )]
    Denied {
        /// Who refused (an [`crate::Identity`]'s `Display`).
        identity: String,
        /// The provider's reason.
        message: String,
    },
    /// The provider could not be reached or is throttling; retrying later may succeed.
    #[error("the credentials service is unavailable: {message}; retry later")]
    Unavailable {
        /// What failed.
        message: String,
    },
    /// The provider answered with something unusable (an unexpected error or response).
    #[error("the credentials service failed: {message}")]
    Backend {
        /// What failed.
        message: String,
    },
}

impl ImpersonationError {
    /// The error code of the API and of a failed deployment step, one per variant:
    /// `IMPERSONATION_NOT_CONFIGURED`, `INVALID_TARGET`, `IMPERSONATION_DENIED`,
    /// `IMPERSONATION_UNAVAILABLE`, `IMPERSONATION_FAILED`.
    pub fn code(&self) -> &'static str {
        match self {
            ImpersonationError::NotConfigured { .. } => "IMPERSONATION_NOT_CONFIGURED",
            ImpersonationError::InvalidTarget { .. } => "INVALID_TARGET",
            ImpersonationError::Denied { .. } => "IMPERSONATION_DENIED",
            ImpersonationError::Unavailable { .. } => "IMPERSONATION_UNAVAILABLE",
            ImpersonationError::Backend { .. } => "IMPERSONATION_FAILED",
        }
    }

    /// Whether asking again later may succeed without anyone changing anything.
    pub fn retryable(&self) -> bool {
        matches!(self, ImpersonationError::Unavailable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_tell_the_user_what_to_do() {
        let not_configured = ImpersonationError::NotConfigured { cloud: Cloud::Gcp }.to_string();
        assert!(not_configured.contains("[impersonation.gcp]"), "{not_configured}");

        let denied = ImpersonationError::Denied {
            identity: "AWS role arn:aws:iam::123456789012:role/r".into(),
            message: "AccessDenied".into(),
        }
        .to_string();
        assert!(denied.contains("arn:aws:iam::123456789012:role/r"), "{denied}");
        assert!(denied.contains("trust policy"), "{denied}");

        let unavailable = ImpersonationError::Unavailable { message: "timeout".into() };
        assert!(unavailable.to_string().contains("retry later"));
    }

    #[test]
    fn only_unavailable_is_retryable() {
        let errors = [
            ImpersonationError::NotConfigured { cloud: Cloud::Aws },
            ImpersonationError::InvalidTarget { field: "target".into(), message: "x".into() },
            ImpersonationError::Denied { identity: "i".into(), message: "m".into() },
            ImpersonationError::Unavailable { message: "m".into() },
            ImpersonationError::Backend { message: "m".into() },
        ];
        let retryable: Vec<bool> = errors.iter().map(ImpersonationError::retryable).collect();
        assert_eq!(retryable, [false, false, false, true, false]);
    }
}
