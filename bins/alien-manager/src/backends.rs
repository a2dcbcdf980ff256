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

#[cfg(feature = "azure")]
mod azure;

/// The services this build contains for each binding slot (the key path's first two segments
/// for `artifact-registry.*` and `impersonation.*`).
fn available(slot: &str) -> Vec<&'static str> {
    #[cfg_attr(
        not(any(feature = "aws", feature = "gcp", feature = "azure", feature = "postgres")),
        allow(unused_mut)
    )]
    let mut services = match slot {
        "commands.kv" | "commands.storage" => vec!["local"],
        "artifact-registry.default.storage" => vec![],
        s if s.starts_with("artifact-registry.") => vec!["local"],
        // Impersonation and object storage come with the cloud crates.
        _ => vec![],
    };
    #[cfg(feature = "aws")]
    services.extend(match slot {
        "commands.kv" => &["dynamodb"][..],
        "commands.storage" | "artifact-registry.default.storage" => &["s3"],
        "artifact-registry.default" | "artifact-registry.aws" => &["ecr"],
        "impersonation.aws" => &["awsiam"],
        _ => &[],
    });
    #[cfg(feature = "gcp")]
    services.extend(match slot {
        "commands.kv" => &["firestore"][..],
        "commands.storage" | "artifact-registry.default.storage" => &["gcs"],
        "artifact-registry.default" | "artifact-registry.gcp" => &["gar"],
        "impersonation.gcp" => &["gcpserviceaccount"],
        _ => &[],
    });
    #[cfg(feature = "postgres")]
    if slot == "commands.kv" {
        services.push("postgres");
    }
    #[cfg(feature = "azure")]
    services.extend(match slot {
        "commands.kv" => &["tablestorage"][..],
        "commands.storage" | "artifact-registry.default.storage" => &["blob"],
        "artifact-registry.default" | "artifact-registry.azure" => &["acr"],
        "impersonation.azure" => &["azuremanagedidentity"],
        _ => &[],
    });
    services
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
    #[cfg(feature = "azure")]
    let bindings = bindings.chain(
        azure::issues(&loaded.config).into_iter().map(|(key, message)| loaded.issue(key, message)),
    );
    let database =
        (loaded.config.database.url.is_some() && !cfg!(feature = "postgres")).then(|| {
            loaded.issue(
                "database.url".to_owned(),
                "PostgreSQL is not available in this build of alien-manager (feature `postgres`); \
             use [database] path or a build with it"
                    .to_owned(),
            )
        });
    tls.into_iter().chain(database).chain(bindings).collect()
}

/// Where the embedded registry keeps its data: `[artifact-registry.default]` `local` `dataDir`,
/// else `{state-dir}/registry`.
fn registry_dir(config: &ManagerConfig) -> PathBuf {
    match &config.artifact_registry.default {
        Some(ArtifactRegistryBinding::Local { data_dir: Some(dir), .. }) => dir.clone(),
        _ => config.database.state_dir.join("registry"),
    }
}

/// The embedded registry's blob storage: `[artifact-registry.default]` `storage` (an S3
/// bucket), else the local directory.
pub async fn registry_blobs(
    config: &ManagerConfig,
) -> Result<alien_registry::ObjectBlobStore, Failure> {
    if let Some(ArtifactRegistryBinding::Local { storage: Some(storage), .. }) =
        &config.artifact_registry.default
    {
        return registry_object_storage(storage).await;
    }
    let dir = registry_dir(config);
    alien_registry::ObjectBlobStore::local(&dir)
        .map_err(|e| Failure::runtime(format!("registry storage {}: {}", dir.display(), e.message)))
}

async fn registry_object_storage(
    storage: &alien_config::RegistryStorage,
) -> Result<alien_registry::ObjectBlobStore, Failure> {
    match storage {
        #[cfg(feature = "aws")]
        alien_config::RegistryStorage::S3 { bucket_name, region, endpoint_url } => {
            let settings = alien_aws::S3BlobSettings {
                bucket: bucket_name.clone(),
                aws: alien_aws::AwsSettings::new(region.as_deref(), endpoint_url.as_deref()),
            };
            alien_aws::s3_blob_store(&settings)
                .await
                .map_err(|e| Failure::config(format!("artifact-registry.default.storage: {e}")))
        }
        #[cfg(feature = "gcp")]
        alien_config::RegistryStorage::Gcs { bucket_name, endpoint_url } => {
            let settings =
                gcp_settings().with_endpoint(alien_gcp::Service::Storage, endpoint_url.as_deref());
            Ok(alien_gcp::gcs_blob_store(&settings, bucket_name))
        }
        #[cfg(feature = "azure")]
        alien_config::RegistryStorage::Blob { account_name, container_name, endpoint_url } => {
            azure::registry_blobs(account_name, container_name, endpoint_url.as_deref())
        }
        #[allow(unreachable_patterns)] // every service of a build with all cloud features
        other => Err(unavailable("artifact-registry.default.storage", other.service())),
    }
}

/// The manager's own Google identity (Application Default Credentials) and the environment's
/// endpoint overrides; a binding's `endpointUrl` is added where it applies.
#[cfg(feature = "gcp")]
fn gcp_settings() -> alien_gcp::GcpSettings {
    static SETTINGS: std::sync::OnceLock<alien_gcp::GcpSettings> = std::sync::OnceLock::new();
    SETTINGS.get_or_init(alien_gcp::GcpSettings::from_env).clone()
}

/// Where each platform's release images live: the `local` bindings of `[artifact-registry.*]`,
/// ECR for an `ecr` binding of `aws` or `default` (in the region of [`aws_settings`]), and
/// Artifact Registry for a `gar` binding of `gcp` or `default`.
pub async fn artifact_registries(
    config: &ManagerConfig,
) -> Result<alien_registry::ArtifactRegistries, Failure> {
    let mut registries = alien_server::registry::local_artifact_registries(config);
    let bindings = &config.artifact_registry;
    if let Some(binding) = &bindings.default
        && let Some(cloud) = cloud_registry(config, "artifact-registry.default", binding).await?
    {
        // Platforms with a `local` binding of their own keep it.
        let mut with_default = alien_registry::ArtifactRegistries::new(cloud);
        for platform in [Platform::Aws, Platform::Gcp, Platform::Azure] {
            let own = match platform {
                Platform::Aws => &bindings.aws,
                Platform::Gcp => &bindings.gcp,
                _ => &bindings.azure,
            };
            if matches!(own, Some(ArtifactRegistryBinding::Local { .. })) {
                let registry = registries.for_platform(platform).clone();
                with_default = with_default.with_platform(platform, registry);
            }
        }
        registries = with_default;
    }
    for (platform, key, binding) in [
        (Platform::Aws, "artifact-registry.aws", &bindings.aws),
        (Platform::Gcp, "artifact-registry.gcp", &bindings.gcp),
        (Platform::Azure, "artifact-registry.azure", &bindings.azure),
    ] {
        if let Some(binding) = binding
            && let Some(cloud) = cloud_registry(config, key, binding).await?
        {
            registries = registries.with_platform(platform, cloud);
        }
    }
    Ok(registries)
}

/// The cloud registry of the binding at `key`; `None` for a `local` binding (already among the
/// local registries).
async fn cloud_registry(
    config: &ManagerConfig,
    key: &str,
    binding: &ArtifactRegistryBinding,
) -> Result<Option<Arc<dyn alien_registry::ArtifactRegistry>>, Failure> {
    let _ = config;
    match binding {
        ArtifactRegistryBinding::Local { .. } => Ok(None),
        #[cfg(feature = "aws")]
        ArtifactRegistryBinding::Ecr { .. } => ecr_registry(config, key, binding).await.map(Some),
        #[cfg(feature = "gcp")]
        ArtifactRegistryBinding::Gar {
            repository_name,
            pull_service_account_email,
            push_service_account_email,
        } => {
            let settings = alien_gcp::GarSettings {
                repository_name: repository_name.clone(),
                push_service_account_email: push_service_account_email.clone(),
                pull_service_account_email: pull_service_account_email.clone(),
                gcp: gcp_settings(),
            };
            let gar = alien_gcp::GarRegistry::new(&settings)
                .map_err(|e| Failure::config(format!("{key}: {e}")))?;
            tracing::info!(%key, host = %alien_registry::ArtifactRegistry::host(&gar), "release images in Artifact Registry");
            Ok(Some(Arc::new(gar)))
        }
        #[cfg(feature = "azure")]
        ArtifactRegistryBinding::Acr { .. } => azure::acr_registry(config, key, binding).map(Some),
        #[allow(unreachable_patterns)] // a build with every cloud feature
        other => Err(unavailable(key, other.service())),
    }
}

/// The [`alien_aws::EcrRegistry`] of an `ecr` binding at `key`.
#[cfg(feature = "aws")]
async fn ecr_registry(
    config: &ManagerConfig,
    key: &str,
    binding: &ArtifactRegistryBinding,
) -> Result<Arc<dyn alien_registry::ArtifactRegistry>, Failure> {
    let ArtifactRegistryBinding::Ecr { repository_prefix, pull_role_arn, push_role_arn } = binding
    else {
        return Err(Failure::config(format!("{key}: not an ecr binding")));
    };
    let settings = alien_aws::EcrSettings {
        repository_prefix: repository_prefix.clone(),
        push_role_arn: push_role_arn.clone(),
        pull_role_arn: pull_role_arn.clone(),
        aws: aws_settings(config),
    };
    let ecr = alien_aws::EcrRegistry::new(&settings)
        .await
        .map_err(|e| Failure::config(format!("{key}: {e}")))?;
    tracing::info!(%key, host = %alien_registry::ArtifactRegistry::host(&ecr), "release images in ECR");
    Ok(Arc::new(ecr))
}

/// The impersonator of the deployment loop, the heartbeat and `POST /v1/credentials/mint`: one,
/// cached (credentials reused until 80% of their lifetime). AWS targets are assumed with STS
/// (from `[impersonation.aws]`'s management role when it is set, else from the manager's own
/// identity), GCP service accounts through IAM Credentials `generateAccessToken` (delegated
/// through `[impersonation.gcp]`'s management account when it is set); a cloud this build has
/// no impersonator for fails naming the binding, a target
/// outside a cloud runs as the ambient identity.
pub async fn impersonator(config: &ManagerConfig) -> Arc<dyn alien_impersonation::Impersonator> {
    use alien_impersonation::{CachingImpersonator, PerCloudImpersonator};
    let per_cloud = PerCloudImpersonator::new();
    #[cfg(feature = "aws")]
    let per_cloud = {
        let management = config.impersonation.aws.as_ref().map(|binding| {
            let alien_config::AwsImpersonation::Awsiam { role_arn, external_id, .. } = binding;
            alien_aws::ManagementRole {
                role_arn: role_arn.clone(),
                external_id: external_id.clone(),
            }
        });
        let sts = alien_aws::StsImpersonator::new(&aws_settings(config), management).await;
        per_cloud.with(alien_impersonation::Cloud::Aws, Arc::new(sts))
    };
    #[cfg(feature = "gcp")]
    let per_cloud = {
        // The management account the customers' accounts trust: named by its unique id when
        // given (pinning that very account, not a later one of the same email), else its email.
        let management = config.impersonation.gcp.as_ref().map(|binding| {
            let alien_config::GcpImpersonation::Gcpserviceaccount { email, unique_id } = binding;
            unique_id.clone().filter(|id| !id.trim().is_empty()).unwrap_or_else(|| email.clone())
        });
        let iam = alien_gcp::IamImpersonator::new(&gcp_settings(), management);
        per_cloud.with(alien_impersonation::Cloud::Gcp, Arc::new(iam))
    };
    #[cfg(feature = "azure")]
    let per_cloud =
        per_cloud.with(alien_impersonation::Cloud::Azure, Arc::new(azure::impersonator(config)));
    #[cfg(not(any(feature = "aws", feature = "gcp", feature = "azure")))]
    let _ = config;
    Arc::new(CachingImpersonator::new(per_cloud))
}

/// The region and endpoint of the manager's own AWS clients (STS, the deployer): the commands
/// KV's when it is DynamoDB, else the environment's.
#[cfg(feature = "aws")]
fn aws_settings(config: &ManagerConfig) -> alien_aws::AwsSettings {
    match &config.commands.kv {
        Some(KvBinding::Dynamodb { region, endpoint_url, .. }) => {
            alien_aws::AwsSettings::new(Some(region), endpoint_url.as_deref())
        }
        _ => alien_aws::AwsSettings::default(),
    }
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
        // With the store on PostgreSQL, the commands share it.
        None if config.database.url.is_some() => None,
        None | Some(KvBinding::Local { data_dir: None }) => {
            Some(config.database.state_dir.join("commands_kv"))
        }
        Some(KvBinding::Local { data_dir: Some(dir) }) => Some(dir.clone()),
        Some(_) => None,
    }
}

/// The commands backends: `[commands] kv` and `storage` (the local SQLite KV in
/// `{state-dir}/commands_kv` and payload files in `{state-dir}/commands_storage` behind
/// manager-signed URLs by default), and the engine over them. `signing_key` signs payload URLs;
/// with `signals`, queued commands wake receivers long-polling on other replicas.
pub async fn commands(
    config: &ManagerConfig,
    signing_key: [u8; 32],
    signals: Option<Arc<dyn alien_core::signal::Signals>>,
) -> Result<Commands, Failure> {
    let signer = alien_commands::UrlSigner::new(signing_key);
    let base_url = config.server.effective_base_url();
    let kv = commands_kv(config).await?;
    let payloads = payload_store(config, &base_url, &signer).await?;
    let mut engine =
        alien_commands::CommandEngine::new(kv.clone(), payloads.clone(), signer, base_url)
            .with_max_payload_bytes(config.commands.max_payload_bytes)
            .with_deployment_quota_bytes(config.commands.deployment_quota_bytes)
            .with_retention(std::time::Duration::from_secs(config.commands.retention_secs));
    if let Some(signals) = signals {
        engine = engine.with_signals(signals);
    }
    let engine = Arc::new(engine);
    Ok(Commands { engine, kv, payloads })
}

/// The signals between replicas: `LISTEN/NOTIFY` on the database when the store is on
/// PostgreSQL (`[database] url`); none for a single manager on SQLite.
pub async fn signals(
    config: &ManagerConfig,
) -> Result<Option<Arc<dyn alien_core::signal::Signals>>, Failure> {
    let Some(url) = &config.database.url else { return Ok(None) };
    #[cfg(feature = "postgres")]
    {
        let signals = alien_store_postgres::PgSignals::start(url.expose())
            .await
            .map_err(|e| Failure::runtime(format!("database.url: {e}")))?;
        Ok(Some(Arc::new(signals)))
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = url;
        Err(Failure::config(
            "database.url: this build has no PostgreSQL (feature `postgres`)".to_owned(),
        ))
    }
}

/// Asks the commands KV and payload store once at start and logs, naming the binding, what
/// does not answer (a table or bucket that does not exist, say): the manager serves anyway and
/// `/ready` answers 503 naming it until it does.
pub async fn report_unreachable(commands: &Commands) {
    let (kv, payloads) = tokio::join!(commands.kv.ping(), commands.payloads.ping());
    if let Err(err) = kv {
        tracing::error!(error = %err, "[commands] kv is not usable: /ready answers 503 until it is");
    }
    if let Err(err) = payloads {
        tracing::error!(error = %err, "[commands] storage is not usable: /ready answers 503 until it is");
    }
}

/// `[commands] kv`: SQLite in `{state-dir}/commands_kv` by default, DynamoDB, Firestore,
/// Table Storage or PostgreSQL.
async fn commands_kv(config: &ManagerConfig) -> Result<Arc<dyn alien_commands::Kv>, Failure> {
    if let Some(kv_dir) = local_kv_dir(config) {
        let kv = alien_local::SqliteKv::open(&kv_dir)
            .await
            .map_err(|e| Failure::runtime(format!("commands KV {}: {e}", kv_dir.display())))?;
        return Ok(Arc::new(kv));
    }
    match &config.commands.kv {
        #[cfg(feature = "aws")]
        Some(KvBinding::Dynamodb { table_name, region, endpoint_url }) => {
            let settings = alien_aws::AwsSettings::new(Some(region), endpoint_url.as_deref());
            Ok(Arc::new(alien_aws::DynamoKv::connect(table_name, &settings).await))
        }
        #[cfg(feature = "gcp")]
        Some(KvBinding::Firestore { project_id, database_id, collection_name, endpoint_url }) => {
            let settings = gcp_settings()
                .with_endpoint(alien_gcp::Service::Firestore, endpoint_url.as_deref());
            let location = alien_gcp::FirestoreLocation {
                project_id: project_id.clone(),
                database_id: database_id.clone(),
                collection: collection_name.clone(),
            };
            Ok(Arc::new(alien_gcp::FirestoreKv::new(location, &settings)))
        }
        #[cfg(feature = "azure")]
        Some(KvBinding::Tablestorage { .. }) => azure::table_kv(config).await,
        #[cfg(feature = "postgres")]
        Some(KvBinding::Postgres { url: Some(url) }) => {
            let kv = alien_store_postgres::PostgresKv::connect(url.expose())
                .await
                .map_err(|e| Failure::runtime(format!("commands.kv: {e}")))?;
            Ok(Arc::new(kv))
        }
        #[cfg(feature = "postgres")]
        None | Some(KvBinding::Postgres { url: None }) if config.database.url.is_some() => {
            let url = config.database.url.as_ref().map(alien_config::Secret::expose);
            let kv = alien_store_postgres::PostgresKv::connect(url.unwrap_or_default())
                .await
                .map_err(|e| Failure::runtime(format!("commands.kv (database.url): {e}")))?;
            Ok(Arc::new(kv))
        }
        other => {
            let service = other.as_ref().map_or("local", KvBinding::service);
            Err(unavailable("commands.kv", service))
        }
    }
}

/// `[commands] storage`: files in `{state-dir}/commands_storage` behind manager-signed URLs by
/// default, or an S3 or GCS bucket behind presigned or signed URLs.
async fn payload_store(
    config: &ManagerConfig,
    base_url: &str,
    signer: &alien_commands::UrlSigner,
) -> Result<Arc<dyn alien_commands::PayloadStore>, Failure> {
    let state_dir = &config.database.state_dir;
    let dir = match &config.commands.storage {
        None | Some(StorageBinding::Local { storage_path: None }) => {
            state_dir.join("commands_storage")
        }
        Some(StorageBinding::Local { storage_path: Some(dir) }) => dir.clone(),
        #[cfg(feature = "aws")]
        Some(StorageBinding::S3 { bucket_name, region, endpoint_url }) => {
            // A bucket without its own region lives in the commands KV's (else the
            // environment's).
            let region = region.clone().or_else(|| match &config.commands.kv {
                Some(KvBinding::Dynamodb { region, .. }) => Some(region.clone()),
                _ => None,
            });
            let settings = alien_aws::AwsSettings::new(region.as_deref(), endpoint_url.as_deref());
            return Ok(Arc::new(alien_aws::S3PayloadStore::connect(bucket_name, &settings).await));
        }
        #[cfg(feature = "gcp")]
        Some(StorageBinding::Gcs { bucket_name, endpoint_url }) => {
            let settings =
                gcp_settings().with_endpoint(alien_gcp::Service::Storage, endpoint_url.as_deref());
            return Ok(Arc::new(alien_gcp::GcsPayloadStore::new(bucket_name, &settings)));
        }
        #[cfg(feature = "azure")]
        Some(StorageBinding::Blob { account_name, container_name, endpoint_url }) => {
            return azure::blob_payloads(
                config,
                account_name,
                container_name,
                endpoint_url.as_deref(),
            )
            .await;
        }
        #[allow(unreachable_patterns)] // a build with every cloud feature
        Some(other) => return Err(unavailable("commands.storage", other.service())),
    };
    Ok(Arc::new(alien_local::FsPayloadStore::new(dir, base_url.to_owned(), signer.clone())))
}

/// [`check`] refuses these before anything starts; reaching one here is a bug in `check`.
fn unavailable(slot: &str, service: &str) -> Failure {
    Failure::config(format!(
        "{slot}.service: `{service}` is not available in this build of alien-manager"
    ))
}

/// Records the local platform's autoscaling steps in the deployment's events (`autoscale`,
/// detail `{container, from, to, reason}`), off the autoscaler's path.
fn scaling_events(store: Arc<dyn alien_store::Store>) -> alien_local::ScalingEvents {
    alien_local::ScalingEvents(Arc::new(move |event: alien_local::ScalingEvent| {
        let store = store.clone();
        tokio::spawn(async move {
            let Ok(id) = alien_core::Id::parse_any(&event.deployment) else { return };
            let reason = alien_local::ScalingEvent::REASON;
            if let Err(err) = store.record_event(&id, reason, event.detail()).await {
                tracing::warn!(deployment = %event.deployment, error = %err, "recording a scaling event failed");
            }
        });
    }))
}

/// The platform deployers of this manager, and the manager URL of each platform whose
/// containers reach it at another address than the base URL: the local platform's when podman
/// or docker is installed (without one, local deployments fail with a message saying what to
/// install; its loopback URL is rewritten to the engine's host gateway), and AWS (ECS on
/// Fargate) in a build with it. Restores the stable URLs of what already runs locally.
#[allow(clippy::type_complexity)] // the two maps the deployment loop takes
pub async fn platform_deployers(
    config: &ManagerConfig,
    artifact_registries: &alien_registry::ArtifactRegistries,
    store: Arc<dyn alien_store::Store>,
) -> (HashMap<Platform, Arc<dyn alien_deployer::PlatformDeployer>>, HashMap<Platform, String>) {
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
        scaling_events: Some(scaling_events(store)),
        ..Default::default()
    };
    let mut deployers: HashMap<Platform, Arc<dyn alien_deployer::PlatformDeployer>> =
        HashMap::new();
    let mut urls = HashMap::new();
    match alien_local::LocalDeployer::new(alien_local::EngineChoice::Auto, options) {
        Ok(local) => {
            let url =
                alien_deployer::reachable_from_containers(&base, local.engine().host_gateway());
            urls.insert(Platform::Local, url);
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
    #[cfg(feature = "aws")]
    {
        let ecs = alien_aws::EcsDeployer::new(&aws_settings(config))
            .await
            .with_registry(artifact_registries.for_platform(Platform::Aws).clone());
        tracing::info!(deployer = %alien_deployer::PlatformDeployer::describe(&ecs), "aws platform");
        deployers.insert(Platform::Aws, Arc::new(ecs));
    }
    #[cfg(feature = "gcp")]
    {
        let run = alien_gcp::CloudRunDeployer::new(&gcp_settings())
            .with_registry(artifact_registries.for_platform(Platform::Gcp).clone());
        tracing::info!(deployer = %alien_deployer::PlatformDeployer::describe(&run), "gcp platform");
        deployers.insert(Platform::Gcp, Arc::new(run));
    }
    #[cfg(feature = "azure")]
    {
        let apps = azure::deployer(artifact_registries.for_platform(Platform::Azure).clone());
        tracing::info!(deployer = %alien_deployer::PlatformDeployer::describe(&apps), "azure platform");
        deployers.insert(Platform::Azure, Arc::new(apps));
    }
    (deployers, urls)
}

/// The deployment loop of this replica over `deployers`.
pub fn deployment_loop(
    config: &ManagerConfig,
    store: std::sync::Arc<dyn alien_store::Store>,
    deployers: std::collections::HashMap<
        alien_core::Platform,
        std::sync::Arc<dyn alien_deployer::PlatformDeployer>,
    >,
    platform_urls: HashMap<Platform, String>,
    owner: String,
    impersonator: Arc<dyn alien_impersonation::Impersonator>,
) -> std::sync::Arc<alien_deployer::DeploymentLoop> {
    let mut loop_config =
        alien_deployer::LoopConfig::new(owner, config.server.effective_base_url());
    loop_config.platform_urls = platform_urls;
    loop_config.interval = std::time::Duration::from_secs(config.server.deployment_interval_secs);
    loop_config.stale_after = std::time::Duration::from_secs(config.server.deployment_lease_secs);
    let deployment_loop = alien_deployer::DeploymentLoop::new(store, deployers, loop_config);
    std::sync::Arc::new(deployment_loop.with_impersonator(impersonator))
}
