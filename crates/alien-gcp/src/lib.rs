//! The GCP backends of alien-manager's seams, on Google's REST APIs over the workspace's one HTTP
//! stack (reqwest, rustls/ring), one module per concern:
//!
//! - [`FirestoreKv`]: the commands `Kv` on Firestore documents;
//! - [`GcsPayloadStore`]: command payloads in GCS behind V4 signed URLs;
//! - [`gcs_blob_store`]: the embedded registry's blobs in GCS;
//! - [`IamImpersonator`]: IAM Credentials `generateAccessToken` for customers' service accounts;
//! - [`GarRegistry`]: release images in Artifact Registry;
//! - [`CloudRunDeployer`]: each container as a Cloud Run service in the customer's project.
//!
//! Every client is made from one [`GcpSettings`] (the manager's token source, endpoint
//! overrides: `FIRESTORE_EMULATOR_HOST`, `STORAGE_EMULATOR_HOST`,
//! `CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>`). This crate never logs a token, and depends on layer
//! crates only; the binary chooses it from configuration. With the `peer-tests` feature, `stub`
//! is the contract stub of the Google APIs that have no emulator (Cloud Run, Secret Manager, IAM
//! Credentials, Artifact Registry, Resource Manager).

pub mod auth;
pub mod config;
#[cfg(any(test, feature = "peer-tests"))]
pub mod emulators;
pub mod firestore;
pub mod gar;
pub mod gcs;
pub mod iam;
pub mod objects;
pub mod payload;
pub mod rest;
pub mod run;
#[cfg(any(test, feature = "peer-tests"))]
pub mod stub;

pub use auth::{TokenSource, ambient_token_source};
pub use config::{GcpSettings, Service};
pub use firestore::{FirestoreKv, FirestoreLocation};
pub use gar::{GarRegistry, GarSettings};
pub use gcs::{GcsClient, UrlSigner};
pub use iam::{IamImpersonator, MintedToken, generate_access_token, sign_blob};
pub use objects::{GcsObjectStore, gcs_blob_store};
pub use payload::GcsPayloadStore;
pub use rest::{Api, ApiError};
pub use run::CloudRunDeployer;
