//! The Azure backends of alien-manager's seams, on Azure's REST APIs over the workspace's one HTTP
//! stack (reqwest, rustls/ring), one module per concern:
//!
//! - storage (Table Storage and Blob Storage: the commands KV, payloads, registry blobs),
//!   authorized with the account key (Shared Key, SAS) or an Entra ID token;
//! - Entra ID tokens and managed-identity impersonation, ACR and the Container Apps deployer
//!   over Azure Resource Manager.
//!
//! Emulator endpoints follow object_store's convention (`AZURE_STORAGE_USE_EMULATOR`,
//! `AZURITE_BLOB_STORAGE_URL`, `AZURITE_TABLE_STORAGE_URL`). This crate never logs a credential,
//! and depends on layer crates only; the binary chooses it from configuration.
//!
//! The Entra ID / ARM side: [`entra`] (token sources: client secret, workload identity,
//! `IDENTITY_ENDPOINT`, IMDS), [`arm`] (the Resource Manager client and long-running
//! operations), [`ManagedIdentityImpersonator`] (federated workload identity into customers'
//! tenants), [`AcrRegistry`] and [`ContainerAppsDeployer`]; with the `peer-tests` feature,
//! `stub` is the contract stub of the Azure services that have no emulator.

pub mod acr;
pub mod apps;
pub mod arm;
#[cfg(any(test, feature = "peer-tests"))]
pub mod azurite;
pub mod blob;
pub mod entra;
pub mod identity;
pub mod storage;
#[cfg(any(test, feature = "peer-tests"))]
pub mod stub;
pub mod table;

pub use acr::{AcrRegistry, AcrSettings};
pub use apps::ContainerAppsDeployer;
pub use arm::{Arm, ArmError, Completion};
pub use blob::{BlobPayloadStore, blob_blob_store, blob_container};
pub use entra::{
    AccessToken, ClientCredential, ClientCredentials, TokenSource, ambient_token_source,
};
pub use identity::ManagedIdentityImpersonator;
pub use table::TableKv;
