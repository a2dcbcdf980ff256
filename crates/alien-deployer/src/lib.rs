//! Deployments that really deploy: the [`PlatformDeployer`] seam (one implementation per
//! platform: `LocalDeployer` in alien-local, ECS / Cloud Run / Container Apps in the cloud
//! crates) and [`AgentPlatform`], what the pull-mode agent (alien-agent-core) needs of one; the
//! [`DeploymentLoop`] that leases due push-mode deployments from the store and steps each toward
//! its desired release, and the environment every container receives ([`env`]).
//!
//! The rules of the lifecycle, shared by the loop, agents' syncs and external drivers, are in
//! [`lifecycle`]: the loop calls them after each step, the server's sync handlers after each
//! report. The loop persists the platform state after every step and records errors with their
//! resource; it never holds a deployment it has not leased, so replicas sharing a store never step
//! the same deployment.

pub mod codes;
pub mod env;
pub mod heartbeat;
pub mod lifecycle;
pub mod platform;
pub mod runner;

pub use env::{ContainerEnv, container_env, reachable_from_containers, secret_names, stack_env};
pub use heartbeat::HeartbeatLoop;
pub use platform::{AgentPlatform, Credentials, DeployRequest, PlatformDeployer, StepOutcome};
pub use runner::{DeploymentLoop, LoopConfig, TickReport};
