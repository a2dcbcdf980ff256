//! Impersonation: the manager's service identity becomes short-lived credentials for a target
//! (an AWS role, a GCP service account, an Azure identity), for the deployment loop and for
//! `POST /v1/credentials/mint` (`spec/clouds.md` "Impersonation in the deployment flow").
//!
//! Owns the [`Impersonator`] seam and its invariants, what a target is ([`ImpersonationTarget`],
//! [`Identity`], the STS [`SessionName`] rule, the duration clamp, parsing a deployment's
//! `target` JSON), the [`Credentials`] handed out, [`ImpersonationError`], the local
//! [`AmbientImpersonator`] (single-account mode), [`PerCloudImpersonator`] (one impersonator
//! per configured cloud), the [`CachingImpersonator`] decorator (reuse to 80% of the lifetime,
//! single-flight refresh) and, with the `contract-tests` feature, the `contract` suite every
//! implementation runs. It never logs, displays or puts in an error message a credential (the
//! `Debug` of [`Credentials`] redacts them), never talks to a cloud itself (the cloud crates
//! implement the trait), and never reads configuration (the binary maps the `[impersonation]`
//! bindings to impersonators and targets).

pub mod ambient;
pub mod caching;
pub mod clock;
#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
pub mod credentials;
pub mod error;
pub mod impersonator;
pub mod per_cloud;
pub mod target;
#[cfg(test)]
mod testing;

pub use ambient::AmbientImpersonator;
pub use caching::CachingImpersonator;
pub use clock::{Clock, SystemClock};
pub use credentials::Credentials;
pub use error::ImpersonationError;
pub use impersonator::Impersonator;
pub use per_cloud::PerCloudImpersonator;
pub use target::{
    Cloud, DEFAULT_DURATION, GCP_CLOUD_PLATFORM_SCOPE, Identity, ImpersonationTarget, MAX_DURATION,
    MIN_DURATION, SessionName, clamp_duration,
};
