//! The AWS backends of alien-manager's seams, on the official AWS SDK for Rust (one module per
//! concern, as object_store lays out its clouds):
//!
//! - [`DynamoKv`]: the commands `Kv` on a DynamoDB table;
//! - [`S3PayloadStore`]: command payloads in S3 behind SigV4 presigned URLs;
//! - [`s3_blob_store`]: the embedded registry's blobs in S3 (object_store);
//! - [`StsImpersonator`]: STS `AssumeRole` into customers' roles;
//! - [`EcsDeployer`]: each container as an ECS service on Fargate in the customer's account;
//! - [`EcrRegistry`]: release images in Amazon ECR.
//!
//! Every client is made from one [`AwsSettings`] (region, endpoint override) over one HTTP
//! stack (hyper 1 + rustls/ring). This crate never logs a credential, and depends on layer
//! crates only; the binary chooses it from configuration.

pub mod blobs;
pub mod config;
pub mod dynamodb;
pub mod ecr;
pub mod ecs;
mod error;
#[cfg(any(test, feature = "peer-tests"))]
pub mod moto;
pub mod s3;
pub mod sts;

pub use blobs::{S3BlobSettings, s3_blob_store, s3_object_store};
pub use config::{AwsSettings, with_credentials};
pub use dynamodb::DynamoKv;
pub use ecr::{EcrError, EcrRegistry, EcrSettings};
pub use ecs::EcsDeployer;
pub use s3::{S3PayloadStore, s3_client};
pub use sts::{ManagementRole, StsImpersonator};
