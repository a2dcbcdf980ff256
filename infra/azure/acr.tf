# Artifact registry: one Azure Container Registry "<name>acr<suffix>"; release images go to
# <name>acr<suffix>.azurecr.io/<name>-artifacts/<resource>. Nothing authenticates with a password
# of the registry: the manager exchanges its own Entra ID token for registry tokens (ACR's
# /oauth2/exchange and /oauth2/token), which carry the rights of its role here.

resource "azurerm_container_registry" "artifacts" {
  #checkov:skip=CKV_AZURE_139:Customers' Container Apps pull and the vendor's CI pushes from networks the vendor does not control, so the registry stays reachable; every request needs an Entra ID token (no admin user, no anonymous pull).
  #checkov:skip=CKV_AZURE_163:Image scanning is Microsoft Defender for Containers, a subscription-level plan the vendor enables outside this module; the registry has no setting for it.
  #checkov:skip=CKV_AZURE_164:Docker Content Trust is retired in ACR (azurerm 5 removed trust_policy_enabled); sign images with Notation and verify signatures where they are deployed.
  #checkov:skip=CKV_AZURE_165:Geo-replicas belong in the regions where customers run, which this module cannot know; add georeplications next to it (Premium only).
  #checkov:skip=CKV_AZURE_166:Quarantine hides every pushed image until a scanner marks it verified; nothing here runs one, so every deployment would fail to pull.
  #checkov:skip=CKV_AZURE_167:Deployments and rollbacks may name images by digest; a moved tag leaves the old manifest untagged but still running somewhere, and purging it would break restarts and rollbacks of those deployments.
  count = var.enable_artifact_registry ? 1 : 0

  name                = local.registry_name
  resource_group_name = var.resource_group_name
  location            = var.location
  sku                 = var.registry_sku
  tags                = var.tags

  admin_enabled                 = false
  anonymous_pull_enabled        = false
  public_network_access_enabled = true
  # Premium only: zone redundancy, and layer downloads from <registry>.<region>.data.azurecr.io
  # (a name customers can allow in their egress rules) instead of shared blob endpoints.
  zone_redundancy_enabled = var.registry_sku == "Premium" ? var.zone_redundant : false
  data_endpoint_enabled   = var.registry_sku == "Premium"

  dynamic "identity" {
    for_each = var.customer_managed_key == null ? [] : [var.customer_managed_key]

    content {
      type         = "UserAssigned"
      identity_ids = [identity.value.user_assigned_identity_id]
    }
  }

  dynamic "encryption" {
    for_each = var.customer_managed_key == null ? [] : [var.customer_managed_key]

    content {
      key_vault_key_id   = encryption.value.key_vault_key_id
      identity_client_id = encryption.value.identity_client_id
    }
  }

  lifecycle {
    precondition {
      condition     = var.customer_managed_key == null || var.registry_sku == "Premium"
      error_message = "A registry encrypted with customer_managed_key must be Premium: set registry_sku = \"Premium\"."
    }
  }
}

# Push credentials for the vendor's CI are registry tokens the manager obtains with its own Entra ID
# token, so they carry this role (push and pull on every repository of the registry, no
# administration of it) and nothing more.
resource "azurerm_role_assignment" "manager_acr_push" {
  count = var.enable_artifact_registry ? 1 : 0

  scope                = azurerm_container_registry.artifacts[0].id
  role_definition_name = "AcrPush"
  principal_id         = var.principal
  description          = "alien-manager ${var.name}: push and pull release images"
}

# At deploy time the manager grants the identity a customer's Container Apps pull with AcrPull on
# this registry, and revokes it when the deployment goes. Writing role assignments is otherwise
# the power to grant anything: the condition limits this assignment to creating and deleting
# AcrPull assignments of service principals (managed identities are service principals) on this
# registry, so the manager can make no one Owner, Contributor or AcrPush here, and no user or group
# a reader. A built-in role with a condition, not a custom role: a custom role would need
# Microsoft.Authorization/roleDefinitions/write of whoever applies this module, and without a
# condition it could still grant any role.
resource "azurerm_role_assignment" "manager_acr_pull_grants" {
  count = var.enable_artifact_registry ? 1 : 0

  scope                = azurerm_container_registry.artifacts[0].id
  role_definition_name = "Role Based Access Control Administrator"
  principal_id         = var.principal
  description          = "alien-manager ${var.name}: grant and revoke AcrPull of deploying identities"
  condition_version    = "2.0"
  condition            = <<-EOT
    (
     (
      !(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})
     )
     OR
     (
      @Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${local.acr_pull_role_id}}
      AND
      @Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'}
     )
    )
    AND
    (
     (
      !(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})
     )
     OR
     (
      @Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${local.acr_pull_role_id}}
      AND
      @Resource[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'}
     )
    )
  EOT
}
