//! The Azure bindings (alien-azure): which subscription each names, the checks `config check`
//! runs on them, and the backends made from them.
//!
//! Subscriptions: a binding's `subscriptionId`, else `AZURE_SUBSCRIPTION_ID`, else the
//! subscription in `[impersonation.azure]` `resourceId` (the vendor's resources and its
//! management identity usually share one). A `resourceGroupName` that needs one it cannot find
//! is refused, never ignored.

use std::sync::{Arc, OnceLock};

use alien_config::{ArtifactRegistryBinding, AzureImpersonation, KvBinding, ManagerConfig};

use crate::failure::Failure;

/// The manager's own Resource Manager client: `AZURE_RESOURCE_MANAGER_ENDPOINT` (else the
/// public cloud's) as the environment's identity. One per process (its token is cached).
pub fn arm() -> alien_azure::Arm {
    static ARM: OnceLock<alien_azure::Arm> = OnceLock::new();
    ARM.get_or_init(|| {
        let tokens = alien_azure::ambient_token_source(alien_azure::arm::ARM_RESOURCE);
        alien_azure::Arm::new(&alien_azure::arm::arm_endpoint_from_env(), tokens)
    })
    .clone()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The parts of a user-assigned identity's ARM id:
/// `/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{n}`.
fn identity_subscription(resource_id: &str) -> Option<&str> {
    let parts: Vec<&str> = resource_id.trim_matches('/').split('/').collect();
    let shape = parts.len() == 8
        && parts[0].eq_ignore_ascii_case("subscriptions")
        && parts[2].eq_ignore_ascii_case("resourceGroups")
        && parts[4].eq_ignore_ascii_case("providers")
        && parts[5].eq_ignore_ascii_case("Microsoft.ManagedIdentity")
        && parts[6].eq_ignore_ascii_case("userAssignedIdentities")
        && !parts[3].is_empty()
        && !parts[7].is_empty()
        && alien_azure::identity::is_guid(parts[1]);
    shape.then_some(parts[1])
}

/// The subscription a binding's resources are in (see the module documentation), and where it
/// came from.
fn subscription(config: &ManagerConfig, own: Option<&str>) -> Option<String> {
    own.map(str::to_owned).or_else(|| env("AZURE_SUBSCRIPTION_ID")).or_else(|| {
        match &config.impersonation.azure {
            Some(AzureImpersonation::Azuremanagedidentity { resource_id: Some(id), .. }) => {
                identity_subscription(id).map(str::to_owned)
            }
            _ => None,
        }
    })
}

/// Whether the Table endpoint of a `tablestorage` binding is given (its `endpointUrl`, or
/// Azurite's through `AZURE_STORAGE_USE_EMULATOR`), so Resource Manager is not asked.
fn table_endpoint_given(endpoint_url: Option<&str>) -> bool {
    endpoint_url.is_some() || alien_azure::storage::use_emulator()
}

const NO_SUBSCRIPTION: &str = "needs the subscription it is in: set subscriptionId on the \
     binding, AZURE_SUBSCRIPTION_ID, or [impersonation.azure] resourceId";

/// The Azure bindings' problems as `(key, message)`: identifiers that are not GUIDs or ARM ids,
/// and resource groups whose subscription is unknown.
pub fn issues(config: &ManagerConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let guid = |out: &mut Vec<(String, String)>, key: &str, value: &str| {
        if !alien_azure::identity::is_guid(value) {
            out.push((
                key.to_owned(),
                format!(
                    "expected a GUID such as 00000000-0000-0000-0000-000000000000, got `{value}`"
                ),
            ));
        }
    };
    if let Some(AzureImpersonation::Azuremanagedidentity {
        client_id,
        resource_id,
        principal_id,
        tenant_id,
    }) = &config.impersonation.azure
    {
        guid(&mut out, "impersonation.azure.clientId", client_id);
        if let Some(principal) = principal_id {
            guid(&mut out, "impersonation.azure.principalId", principal);
        }
        if let Some(tenant) = tenant_id {
            let domain = tenant.contains('.')
                && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
            if !domain {
                guid(&mut out, "impersonation.azure.tenantId", tenant);
            }
        }
        if let Some(id) = resource_id
            && identity_subscription(id).is_none()
        {
            out.push((
                "impersonation.azure.resourceId".to_owned(),
                format!(
                    "expected a user-assigned identity's id, \
                     /subscriptions/<GUID>/resourceGroups/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>, got `{id}`"
                ),
            ));
        }
    }
    if let Some(sub) = env("AZURE_SUBSCRIPTION_ID") {
        guid(&mut out, "AZURE_SUBSCRIPTION_ID (environment)", &sub);
    }
    let registries = &config.artifact_registry;
    for (slot, binding) in [("default", &registries.default), ("azure", &registries.azure)] {
        if let Some(ArtifactRegistryBinding::Acr { subscription_id, .. }) = binding {
            let key = format!("artifact-registry.{slot}");
            if let Some(sub) = subscription_id {
                guid(&mut out, &format!("{key}.subscriptionId"), sub);
            } else if subscription(config, None).is_none() {
                // The registry's id is what AcrPull is granted on.
                out.push((format!("{key}.resourceGroupName"), NO_SUBSCRIPTION.to_owned()));
            }
        }
    }
    if let Some(KvBinding::Tablestorage { subscription_id, endpoint_url, .. }) = &config.commands.kv
    {
        if subscription_id.is_some() && table_endpoint_given(endpoint_url.as_deref()) {
            // Only the endpoint lookup uses it: with the endpoint given it would do nothing.
            out.push((
                "commands.kv.subscriptionId".to_owned(),
                "has no effect when the Table endpoint is given (endpointUrl or \
                 AZURE_STORAGE_USE_EMULATOR): remove one of them"
                    .to_owned(),
            ));
        } else if let Some(sub) = subscription_id {
            guid(&mut out, "commands.kv.subscriptionId", sub);
        } else if !table_endpoint_given(endpoint_url.as_deref())
            && subscription(config, None).is_none()
        {
            out.push(("commands.kv.resourceGroupName".to_owned(), NO_SUBSCRIPTION.to_owned()));
        }
    }
    out
}

/// The endpoints of the `tablestorage` binding's account as Resource Manager reports them;
/// `None` when its endpoint is given.
async fn table_account_endpoints(
    config: &ManagerConfig,
) -> Result<Option<(String, alien_azure::storage::StorageEndpoints)>, Failure> {
    let Some(KvBinding::Tablestorage {
        resource_group_name,
        account_name,
        subscription_id,
        endpoint_url,
        ..
    }) = &config.commands.kv
    else {
        return Ok(None);
    };
    if table_endpoint_given(endpoint_url.as_deref()) {
        return Ok(None);
    }
    let Some(sub) = subscription(config, subscription_id.as_deref()) else {
        return Err(Failure::config(format!("commands.kv.resourceGroupName: {NO_SUBSCRIPTION}")));
    };
    let endpoints =
        alien_azure::storage::storage_endpoints(&arm(), &sub, resource_group_name, account_name)
            .await
            .map_err(|e| {
                Failure::runtime(format!(
                    "commands.kv: storage account {account_name} in resource group \
                     {resource_group_name} of subscription {sub}: {e}"
                ))
            })?;
    tracing::info!(account = %account_name, table = %endpoints.table, blob = %endpoints.blob,
        "storage account endpoints from Resource Manager");
    Ok(Some((account_name.clone(), endpoints)))
}

/// `[commands] kv` on Table Storage.
pub async fn table_kv(config: &ManagerConfig) -> Result<Arc<dyn alien_commands::Kv>, Failure> {
    let Some(KvBinding::Tablestorage { account_name, table_name, endpoint_url, .. }) =
        &config.commands.kv
    else {
        return Err(Failure::config("commands.kv: not a tablestorage binding".to_owned()));
    };
    let looked_up = table_account_endpoints(config).await?;
    let endpoint = endpoint_url.clone().or(looked_up.map(|(_, e)| e.table));
    let kv = alien_azure::TableKv::new(account_name, table_name, endpoint.as_deref())
        .map_err(|e| Failure::config(format!("commands.kv: {e}")))?;
    Ok(Arc::new(kv))
}

/// `[commands] storage` on Blob Storage: at its `endpointUrl`, else (for the account the
/// `tablestorage` KV also uses) the Blob endpoint Resource Manager reports, else the public
/// cloud's.
pub async fn blob_payloads(
    config: &ManagerConfig,
    account: &str,
    container: &str,
    endpoint_url: Option<&str>,
) -> Result<Arc<dyn alien_commands::PayloadStore>, Failure> {
    let endpoint = match endpoint_url {
        Some(url) => Some(url.to_owned()),
        None => table_account_endpoints(config)
            .await?
            .filter(|(name, _)| name == account)
            .map(|(_, e)| e.blob),
    };
    let store = alien_azure::BlobPayloadStore::new(account, container, endpoint.as_deref())
        .map_err(|e| Failure::config(format!("commands.storage: {e}")))?;
    Ok(Arc::new(store))
}

/// The embedded registry's blobs in a Blob container.
pub fn registry_blobs(
    account: &str,
    container: &str,
    endpoint_url: Option<&str>,
) -> Result<alien_registry::ObjectBlobStore, Failure> {
    alien_azure::blob_blob_store(account, container, endpoint_url)
        .map_err(|e| Failure::config(format!("artifact-registry.default.storage: {e}")))
}

/// The ACR registry of an `acr` binding at `key`.
pub fn acr_registry(
    config: &ManagerConfig,
    key: &str,
    binding: &ArtifactRegistryBinding,
) -> Result<Arc<dyn alien_registry::ArtifactRegistry>, Failure> {
    let ArtifactRegistryBinding::Acr {
        registry_name,
        resource_group_name,
        repository_prefix,
        subscription_id,
        endpoint_url,
    } = binding
    else {
        return Err(Failure::config(format!("{key}: not an acr binding")));
    };
    let Some(subscription_id) = subscription(config, subscription_id.as_deref()) else {
        return Err(Failure::config(format!("{key}.resourceGroupName: {NO_SUBSCRIPTION}")));
    };
    let settings = alien_azure::AcrSettings {
        registry_name: registry_name.clone(),
        resource_group_name: resource_group_name.clone(),
        subscription_id: Some(subscription_id),
        repository_prefix: repository_prefix.clone(),
        login_server_url: endpoint_url.clone(),
        tokens: alien_azure::ambient_token_source(alien_azure::arm::ARM_RESOURCE),
        arm: arm(),
    };
    let acr = alien_azure::AcrRegistry::new(&settings)
        .map_err(|e| Failure::config(format!("{key}: {e}")))?;
    tracing::info!(%key, host = %alien_registry::ArtifactRegistry::host(&acr), "release images in ACR");
    Ok(Arc::new(acr))
}

/// Azure targets through federated workload identity: as `[impersonation.azure]`'s management
/// identity (pinned to its `principalId` and `resourceId` when given), else as the
/// environment's own identity.
pub fn impersonator(config: &ManagerConfig) -> alien_azure::ManagedIdentityImpersonator {
    match &config.impersonation.azure {
        Some(AzureImpersonation::Azuremanagedidentity {
            client_id,
            resource_id,
            principal_id,
            tenant_id,
        }) => alien_azure::ManagedIdentityImpersonator::from_binding(
            client_id,
            tenant_id.clone().or_else(|| env("AZURE_TENANT_ID")),
        )
        .pinned(principal_id.clone(), resource_id.clone()),
        None => alien_azure::ManagedIdentityImpersonator::new(
            &alien_azure::entra::authority_from_env(),
            alien_azure::ambient_token_source(alien_azure::entra::TOKEN_EXCHANGE_AUDIENCE),
            env("AZURE_TENANT_ID"),
        ),
    }
}

/// The Container Apps deployer, granting pulls on `registry`.
pub fn deployer(
    registry: Arc<dyn alien_registry::ArtifactRegistry>,
) -> alien_azure::ContainerAppsDeployer {
    alien_azure::ContainerAppsDeployer::new(arm()).with_registry(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_ids_name_their_subscription() {
        let id = "/subscriptions/55555555-5555-5555-5555-555555555555/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/alien-management";
        assert_eq!(identity_subscription(id), Some("55555555-5555-5555-5555-555555555555"));
        assert_eq!(
            identity_subscription("/subscriptions/.../providers/Microsoft.ManagedIdentity/..."),
            None
        );
        assert_eq!(identity_subscription(&id.replace("userAssignedIdentities", "x")), None);
    }
}
