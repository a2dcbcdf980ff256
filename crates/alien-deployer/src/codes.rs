//! The error codes every platform deployer reports the same way (a deployment's `error.code`):
//! one name per kind of failure whatever the platform, so clients and runbooks match on them.

/// A rollout did not complete: a revision or task set never became healthy (the previous one
/// keeps serving where the platform allows).
pub const ROLLOUT_FAILED: &str = "ROLLOUT_FAILED";
/// The registry could not let the deployment's account or project pull the release's image.
pub const REGISTRY_ERROR: &str = "REGISTRY_ERROR";
/// A container the platform cannot run as asked (a port protocol, a resource it lacks), or a
/// platform without a deployer in this manager.
pub const PLATFORM_NOT_SUPPORTED: &str = "PLATFORM_NOT_SUPPORTED";
/// A container the deployer cannot run: no image, larger than the platform's largest size.
pub const UNSUPPORTED_CONTAINER: &str = "UNSUPPORTED_CONTAINER";
/// The deployment's `target` lacks a field the platform needs, or has a malformed one.
pub const INVALID_TARGET: &str = "INVALID_TARGET";
/// The platform bookkeeping in the deployment's state does not read: the step touches nothing
/// rather than treating it as empty.
pub const STATE_UNREADABLE: &str = "STATE_UNREADABLE";
