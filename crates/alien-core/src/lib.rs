//! The domain model of alien-manager, with no I/O.
//!
//! Owns the id format, [`Platform`], the [`DeploymentStatus`] state machine (the one transition
//! function), the Stack / Container model of a release with its validation rules, quantity
//! parsing, and the API error type with its JSON body. It must never open a file, a socket or a
//! database: every other crate builds on it, and unit tests reach every rule here without HTTP.

pub mod api;
pub mod command;
pub mod deployment;
pub mod error;
pub mod id;
pub mod platform;
pub mod quantity;
pub mod release;
pub mod signal;
pub mod stack;
pub mod status;
pub mod sync;
pub mod token;

pub use deployment::{
    CreateDeployment, CreateDeploymentGroup, Deployment, DeploymentError, DeploymentEventRecord,
    DeploymentGroup, EnvironmentVariable, GroupRollout, RolloutDecision, RolloutPolicy,
    UpdateDeploymentGroup, VariableType,
};
pub use error::{ApiError, ErrorCode, FieldViolation};
pub use id::{Id, IdKind};
pub use platform::{DeploymentModel, Platform};
pub use release::{CreateRelease, GitMetadata, NewRelease, Release};
pub use stack::{ContainerConfig, Stack, parse_release_stack, parse_stack};
pub use status::{DeploymentEvent, DeploymentStatus};
pub use token::{RawToken, TokenRecord, TokenType};
