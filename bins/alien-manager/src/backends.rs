//! Backend choice: every configured binding (`[commands] kv/storage`, `[artifact-registry.*]`,
//! `[impersonation.*]`, the embedded registry's storage, the store) mapped to the trait object
//! that serves it. The only place that knows which backend crates this build contains.
//!
//! [`check`] runs before anything is created, bound or printed (`config check` and `serve`
//! alike): a binding whose service this build does not contain is refused with its key path,
//! never parsed and ignored. Cloud backends join here, one Cargo feature per cloud crate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use alien_config::{
    ArtifactRegistryBinding, ConfigIssue, KvBinding, LoadedConfig, ManagerConfig, StorageBinding,
};
use alien_core::Platform;

use crate::failure::Failure;

/// The services this build contains for each binding slot (the key path's first two segments
/// for `artifact-registry.*` and `impersonation.*`).
fn available(slot: &str) -> &'static [&'static str] {
    match slot {
        "commands.kv" | "commands.storage" => &["local"],
        s if s.starts_with("artifact-registry.") => &["local"],
        // Impersonation comes with the cloud crates; this build has none.
        _ => &[],
    }
}

/// Every configured binding whose service this build does not contain, as a configuration
/// problem naming `<binding>.service`, and TLS files that cannot be served (naming
/// `server.tls-cert` or `server.tls-key`).
pub fn check(loaded: &LoadedConfig) -> Vec<ConfigIssue> {
    let tls = alien_server::tls::check(&loaded.config.server)
        .err()
        .map(|err| loaded.issue(err.key.to_owned(), err.message));
    let bindings = loaded.config.bindings().into_iter().filter_map(|(slot, service)| {
        let available = available(slot);
        if available.contains(&service) {
            return None;
        }
        let choice = if available.is_empty() {
            "this build has none".to_owned()
        } else {
            format!("this build has: {}", available.join(", "))
        };
        Some(loaded.issue(
            format!("{slot}.service"),
            format!(
                "`{service}` is not available in this build of alien-manager ({choice}); \
                     remove the binding or use a build with that backend"
            ),
        ))
    });
    tls.into_iter().chain(bindings).collect()
}

/// Where the embedded registry keeps its data: `[artifact-registry.default]` `local` `dataDir`,
/// else `{state-dir}/registry`.
fn registry_dir(config: &ManagerConfig) -> PathBuf {
    match &config.artifact_registry.default {
        Some(ArtifactRegistryBinding::Local { data_dir: Some(dir), .. }) => dir.clone(),
        _ => config.database.state_dir.join("registry"),
    }
}

/// The embedded registry's blob storage.
pub fn registry_blobs(config: &ManagerConfig) -> Result<alien_registry::ObjectBlobStore, Failure> {
    let dir = registry_dir(config);
    alien_registry::ObjectBlobStore::local(&dir)
        .map_err(|e| Failure::runtime(format!("registry storage {}: {}", dir.display(), e.message)))
}

/// Where each platform's release images live: the `local` bindings of `[artifact-registry.*]`
/// (cloud registries join here with their crates; [`check`] refuses them until then).
pub fn artifact_registries(config: &ManagerConfig) -> alien_registry::ArtifactRegistries {
    alien_server::registry::local_artifact_registries(config)
}

/// The impersonator of the deployment loop, the heartbeat and `POST /v1/credentials/mint`: one,
/// cached (credentials reused until 80% of their lifetime). `[impersonation.*]` bindings are
/// refused by [`check`] until the cloud crates bring theirs; a cloud target without one fails
/// naming the binding, a target outside a cloud runs as the ambient identity.
pub fn impersonator() -> Arc<dyn alien_impersonation::Impersonator> {
    use alien_impersonation::{CachingImpersonator, PerCloudImpersonator};
    Arc::new(CachingImpersonator::new(PerCloudImpersonator::new()))
}

/// The commands backends and the engine over them.
pub struct Commands {
    /// The engine.
    pub engine: Arc<alien_commands::CommandEngine>,
    /// Command state.
    pub kv: Arc<dyn alien_commands::Kv>,
    /// Large payloads.
    pub payloads: Arc<dyn alien_commands::PayloadStore>,
}

/// The local commands KV's directory (`[commands] kv` local `dataDir`, else
/// `{state-dir}/commands_kv`); `None` when the commands KV is another service.
pub fn local_kv_dir(config: &ManagerConfig) -> Option<PathBuf> {
    match &config.commands.kv {
        None | Some(KvBinding::Local { data_dir: None }) => {
            Some(config.database.state_dir.join("commands_kv"))
        }
        Some(KvBinding::Local { data_dir: Some(dir) }) => Some(dir.clone()),
        Some(_) => None,
    }
}

/// The commands backends: `[commands] kv` and `storage` (the local SQLite KV in
/// `{state-dir}/commands_kv` and payload files in `{state-dir}/commands_storage` behind
/// manager-signed URLs by default), and the engine over them. `signing_key` signs payload URLs.
pub async fn commands(config: &ManagerConfig, signing_key: [u8; 32]) -> Result<Commands, Failure> {
    let state_dir = &config.database.state_dir;
    let Some(kv_dir) = local_kv_dir(config) else {
        let service = config.commands.kv.as_ref().map_or("local", KvBinding::service);
        return Err(unavailable("commands.kv", service));
    };
    let storage_dir = match &config.commands.storage {
        None | Some(StorageBinding::Local { storage_path: None }) => {
            state_dir.join("commands_storage")
        }
        Some(StorageBinding::Local { storage_path: Some(dir) }) => dir.clone(),
        Some(other) => return Err(unavailable("commands.storage", other.service())),
    };
    let kv = alien_local::SqliteKv::open(&kv_dir)
        .await
        .map_err(|e| Failure::runtime(format!("commands KV {}: {e}", kv_dir.display())))?;
    let signer = alien_commands::UrlSigner::new(signing_key);
    let base_url = config.server.effective_base_url();
    let payloads: Arc<dyn alien_commands::PayloadStore> =
        Arc::new(alien_local::FsPayloadStore::new(storage_dir, base_url.clone(), signer.clone()));
    let kv: Arc<dyn alien_commands::Kv> = Arc::new(kv);
    let engine = Arc::new(
        alien_commands::CommandEngine::new(kv.clone(), payloads.clone(), signer, base_url)
            .with_max_payload_bytes(config.commands.max_payload_bytes)
            .with_deployment_quota_bytes(config.commands.deployment_quota_bytes)
            .with_retention(std::time::Duration::from_secs(config.commands.retention_secs)),
    );
    Ok(Commands { engine, kv, payloads })
}

/// [`check`] refuses these before anything starts; reaching one here is a bug in `check`.
fn unavailable(slot: &str, service: &str) -> Failure {
    Failure::config(format!(
        "{slot}.service: `{service}` is not available in this build of alien-manager"
    ))
}

/// The platform deployers of this manager and the manager URL containers reach: the local
/// platform's when podman or docker is installed (without one, local deployments fail with a
/// message saying what to install). Restores the stable URLs of what already runs.
pub async fn platform_deployers(
    config: &ManagerConfig,
    artifact_registries: &alien_registry::ArtifactRegistries,
) -> (HashMap<Platform, Arc<dyn alien_deployer::PlatformDeployer>>, String) {
    let base = config.server.effective_base_url();
    let host = config.server.public_host();
    let port = host.rsplit_once(':').map(|(_, p)| p.to_owned());
    // Images of releases name the registry as the CLI saw it: a configured registry host, this
    // manager's host, or loopback aliases of it.
    let mut own = vec![host.clone()];
    if let Some(port) = &port {
        own.extend([format!("localhost:{port}"), format!("127.0.0.1:{port}")]);
    }
    let mut registries = artifact_registries.hosts();
    registries.extend(own.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    registries.retain(|host| seen.insert(host.clone()));
    // Plain HTTP (the deployment token in the clear) only where it is known to be so: this
    // manager behind an http:// base URL, or a registryUrl written with http://.
    let mut insecure = if base.starts_with("http://") { own } else { Vec::new() };
    for host in artifact_registries.plain_http_hosts() {
        if !insecure.contains(&host) {
            insecure.push(host);
        }
    }
    let options = alien_local::LocalDeployerOptions {
        manager_registries: registries,
        insecure_registries: insecure,
        ..Default::default()
    };
    let mut deployers: HashMap<Platform, Arc<dyn alien_deployer::PlatformDeployer>> =
        HashMap::new();
    let mut manager_url = base.clone();
    match alien_local::LocalDeployer::new(alien_local::EngineChoice::Auto, options) {
        Ok(local) => {
            manager_url =
                alien_deployer::reachable_from_containers(&base, local.engine().host_gateway());
            match local.restore().await {
                Ok(n) if n > 0 => tracing::info!(deployments = n, "local deployments restored"),
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "restoring local deployments failed"),
            }
            tracing::info!(engine = ?local.engine(), "local platform: deploying with the container engine");
            deployers.insert(Platform::Local, Arc::new(local));
        }
        Err(err) => tracing::warn!(
            error = %err,
            "no container engine: local deployments will fail until podman or docker is installed"
        ),
    }
    (deployers, manager_url)
}

/// The deployment loop of this replica over `deployers`.
pub fn deployment_loop(
    config: &ManagerConfig,
    store: std::sync::Arc<dyn alien_store::Store>,
    deployers: std::collections::HashMap<
        alien_core::Platform,
        std::sync::Arc<dyn alien_deployer::PlatformDeployer>,
    >,
    manager_url: String,
    owner: String,
    impersonator: Arc<dyn alien_impersonation::Impersonator>,
) -> std::sync::Arc<alien_deployer::DeploymentLoop> {
    let mut loop_config = alien_deployer::LoopConfig::new(owner, manager_url);
    loop_config.interval = std::time::Duration::from_secs(config.server.deployment_interval_secs);
    let deployment_loop = alien_deployer::DeploymentLoop::new(store, deployers, loop_config);
    std::sync::Arc::new(deployment_loop.with_impersonator(impersonator))
}
