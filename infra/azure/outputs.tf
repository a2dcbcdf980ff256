locals {
  # One entry per alien-manager.toml section; a section is left out when its switch is off.
  artifact_registry_config = var.enable_artifact_registry ? {
    "artifact-registry.azure" = {
      service           = "acr"
      registryName      = azurerm_container_registry.artifacts[0].name
      resourceGroupName = azurerm_container_registry.artifacts[0].resource_group_name
      subscriptionId    = data.azurerm_client_config.current.subscription_id
      repositoryPrefix  = local.repository_prefix
    }
  } : {}

  commands_config = var.enable_commands_store ? {
    "commands" = {
      kv = {
        service           = "tablestorage"
        resourceGroupName = azurerm_storage_account.commands[0].resource_group_name
        subscriptionId    = data.azurerm_client_config.current.subscription_id
        accountName       = azurerm_storage_account.commands[0].name
        tableName         = azapi_resource.commands_table[0].name
      }
      storage = {
        service       = "blob"
        accountName   = azurerm_storage_account.commands[0].name
        containerName = azurerm_storage_container.commands[0].name
      }
    }
  } : {}

  impersonation_config = var.enable_impersonation ? {
    "impersonation.azure" = {
      service     = "azuremanagedidentity"
      clientId    = azurerm_user_assigned_identity.management[0].client_id
      resourceId  = azurerm_user_assigned_identity.management[0].id
      principalId = azurerm_user_assigned_identity.management[0].principal_id
      tenantId    = azurerm_user_assigned_identity.management[0].tenant_id
    }
  } : {}
}

output "config_values" {
  description = "alien-manager.toml sections: keys are section paths, values that section's keys (render with infra/azure/check.py render, or paste from terraform output -json config_values)."
  value       = merge(local.artifact_registry_config, local.commands_config, local.impersonation_config)
}

output "registry_name" {
  description = "Name of the container registry."
  value       = one(azurerm_container_registry.artifacts[*].name)
}

output "registry_id" {
  description = "Resource ID of the container registry (the scope of the manager's AcrPush and AcrPull grants)."
  value       = one(azurerm_container_registry.artifacts[*].id)
}

output "registry_login_server" {
  description = "Where images of the registry are pushed and pulled: <registry>.azurecr.io (images under <registry>.azurecr.io/<name>-artifacts/)."
  value       = one(azurerm_container_registry.artifacts[*].login_server)
}

output "repository_prefix" {
  description = "Repository prefix of release images in the registry."
  value       = var.enable_artifact_registry ? local.repository_prefix : null
}

output "storage_account_name" {
  description = "Storage account of the commands table and the payload container."
  value       = one(azurerm_storage_account.commands[*].name)
}

output "table_name" {
  description = "Table of the commands KV."
  value       = one(azapi_resource.commands_table[*].name)
}

output "container_name" {
  description = "Blob container of the command payloads."
  value       = one(azurerm_storage_container.commands[*].name)
}

output "management_identity_id" {
  description = "Resource ID of the management identity; attach it to the manager's Container App or VM (identity_ids) unless the manager reaches it through federated_issuer/federated_subject."
  value       = one(azurerm_user_assigned_identity.management[*].id)
}

output "management_identity_client_id" {
  description = "Client ID of the management identity (the manager asks for its tokens with it)."
  value       = one(azurerm_user_assigned_identity.management[*].client_id)
}

output "management_identity_principal_id" {
  description = "Object (principal) ID of the management identity: the subject customer-side federated credentials trust."
  value       = one(azurerm_user_assigned_identity.management[*].principal_id)
}

output "management_federated_credential" {
  description = "What a customer-side Entra ID application's federated identity credential names to trust the management identity (issuer, subject, audience)."
  value = var.enable_impersonation ? {
    issuer   = "https://login.microsoftonline.com/${azurerm_user_assigned_identity.management[0].tenant_id}/v2.0"
    subject  = azurerm_user_assigned_identity.management[0].principal_id
    audience = "api://AzureADTokenExchange"
  } : null
}
