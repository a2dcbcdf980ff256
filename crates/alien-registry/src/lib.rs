//! The embedded OCI registry: the OCI Distribution Specification v1.1 at `/v2/`.
//!
//! Owns name/tag/digest validation ([`reference`]), manifest parsing ([`manifest`]), the OCI error body ([`error`]), the storage
//! seam ([`storage::BlobStore`] with the `object_store` implementation) and the HTTP routes
//! ([`routes`]), and the [`ArtifactRegistry`] seam (where a platform's release images live, and
//! the credentials to pull them). It never decides who may do what: the [`routes::RegistryAccess`] trait, given by
//! the server, does, so this crate knows nothing of tokens or the store of deployments.

pub mod artifact;
#[cfg(feature = "cloud-http")]
pub mod cloud_http;
#[cfg(feature = "contract-tests")]
pub mod contract;
pub mod error;
pub mod gc;
pub mod manifest;
pub mod reference;
pub mod routes;
pub mod storage;

pub use artifact::{
    ArtifactRegistries, ArtifactRegistry, ArtifactRegistryError, EMBEDDED_REPOSITORY,
    EmbeddedRegistry, PullFor,
};
pub use error::RegistryError;
pub use reference::{Digest, RepoName};
pub use routes::{Access, RegistryAccess, router};
pub use storage::{BlobStore, ObjectBlobStore};
