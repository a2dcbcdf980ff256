//! The [`Impersonator`] seam: a service identity becomes short-lived credentials for a target.
//! The manager's default is [`crate::AmbientImpersonator`]; the cloud crates implement STS
//! `AssumeRole`, IAM Credentials `generateAccessToken` and Azure managed identity. Every
//! implementation runs the contract suite in `crate::contract` (feature `contract-tests`).

use std::fmt;
use std::sync::Arc;

use crate::credentials::Credentials;
use crate::error::ImpersonationError;
use crate::target::ImpersonationTarget;

/// Turns the manager's identity into short-lived credentials for a target.
///
/// Invariants every implementation keeps (and the contract suite checks):
/// - an [`crate::Identity::Ambient`] target gives [`Credentials::Ambient`];
/// - a cloud target gives credentials of that cloud, or [`Credentials::Ambient`] when the
///   environment's own identity is what the target should use (single-account mode); never
///   credentials of another cloud;
/// - credentials that expire are unexpired when returned, and last at most about the target's
///   duration unless the provider decides the lifetime itself (Azure tokens);
/// - no credential is ever logged, put in an error message, or shown by `Debug` (of the
///   credentials or of the implementation);
/// - a target the implementation cannot use is refused without calling the provider
///   ([`ImpersonationError::InvalidTarget`]), a cloud it does not serve is
///   [`ImpersonationError::NotConfigured`], a provider refusal is [`ImpersonationError::Denied`],
///   and only transient failures are [`ImpersonationError::Unavailable`];
/// - calls may run concurrently; an implementation need not cache
///   ([`crate::CachingImpersonator`] adds that for any implementation).
#[async_trait::async_trait]
pub trait Impersonator: Send + Sync + fmt::Debug {
    /// Credentials to act as `target` for about `target.duration()`.
    async fn credentials(
        &self,
        target: &ImpersonationTarget,
    ) -> Result<Credentials, ImpersonationError>;
}

/// Shares one impersonator, e.g. between the deployment loop and the mint endpoint.
#[async_trait::async_trait]
impl<I: Impersonator + ?Sized> Impersonator for Arc<I> {
    async fn credentials(
        &self,
        target: &ImpersonationTarget,
    ) -> Result<Credentials, ImpersonationError> {
        (**self).credentials(target).await
    }
}
