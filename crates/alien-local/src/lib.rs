//! Local backends of alien-manager's seams: everything a single machine needs, kept in the state
//! directory, so that `alien-manager serve` runs with no cloud account. This crate implements
//! the layer crates' traits and never decides which backend runs (the binary does) nor talks to
//! clients itself (the server routes to it).
//!
//! For remote commands (feature `commands`, on by default): [`SqliteKv`] (the [`alien_commands::Kv`] on one SQLite file,
//! `{state-dir}/commands_kv/kv.db`) and [`FsPayloadStore`] (the [`alien_commands::PayloadStore`]
//! on files under `{state-dir}/commands_storage`, reached by clients through manager-signed URLs
//! at `/v1/payloads/{key}`).
//!
//! For deployments: [`LocalDeployer`], the local platform's `alien_deployer::PlatformDeployer`,
//! running containers as replicas on podman or docker through their CLI and finding them again
//! by label after any restart (see the [`deployer`] module).

pub mod deployer;
#[cfg(feature = "commands")]
pub mod kv;
#[cfg(feature = "commands")]
pub mod payload;

#[cfg(feature = "peer-tests")]
pub mod test_support;

pub use deployer::{
    EngineChoice, EngineError, EngineKind, LocalDeployer, LocalDeployerOptions, ScalingEvent,
    ScalingEvents, ScalingSink, binding_var,
};
#[cfg(feature = "commands")]
pub use kv::SqliteKv;
#[cfg(feature = "commands")]
pub use payload::FsPayloadStore;
