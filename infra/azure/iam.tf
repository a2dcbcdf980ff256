# Impersonation: the manager acts as the management identity (a user-assigned managed identity), and
# as that identity obtains tokens of a deployment's customer identity (target.clientId in
# target.tenantId): an Entra ID application whose federated identity credential trusts the
# management identity (README, "Customer side").

resource "azurerm_user_assigned_identity" "management" {
  count = var.enable_impersonation ? 1 : 0

  name                = "${var.name}-management"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags

  lifecycle {
    precondition {
      condition     = (var.federated_issuer == null) == (var.federated_subject == null)
      error_message = "Set federated_issuer and federated_subject together, or neither."
    }
  }
}

# How the manager becomes the management identity. Azure RBAC has no role that lets one identity
# obtain another's tokens (nothing like STS AssumeRole or roles/iam.serviceAccountTokenCreator), so
# principal gets no role here: a managed identity's tokens come from the compute it is attached to
# (IMDS or IDENTITY_ENDPOINT with its client ID), or from Entra ID in exchange for a token this
# federated credential trusts (the manager's workload identity token, e.g. on AKS).
resource "azurerm_federated_identity_credential" "manager" {
  count = var.enable_impersonation && local.federated ? 1 : 0

  name                      = "${var.name}-manager"
  user_assigned_identity_id = azurerm_user_assigned_identity.management[0].id
  audience                  = ["api://AzureADTokenExchange"]
  issuer                    = var.federated_issuer
  subject                   = var.federated_subject
}

# The manager's own grants on the commands store (the registry's are in acr.tf).

# Entities of the commands table only: query, insert, conditional update and delete.
resource "azurerm_role_assignment" "manager_table" {
  count = var.enable_commands_store ? 1 : 0

  scope                = azapi_resource.commands_table[0].id
  role_definition_name = "Storage Table Data Contributor"
  principal_id         = var.principal
  description          = "alien-manager ${var.name}: command state in the commands table"
}

# Blobs of the payload container only: create, read, overwrite, list and delete. A user delegation
# SAS acts with the rights of the identity whose key signed it, so this also bounds the URLs the
# manager hands out.
resource "azurerm_role_assignment" "manager_blob" {
  count = var.enable_commands_store ? 1 : 0

  scope                = azurerm_storage_container.commands[0].id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = var.principal
  description          = "alien-manager ${var.name}: command payloads in the payload container"
}

# A user delegation key (to sign SAS URLs without Shared Key) is requested from the blob service,
# above any container: Storage Blob Delegator holds just that action, and no data access.
resource "azurerm_role_assignment" "manager_blob_delegator" {
  count = var.enable_commands_store ? 1 : 0

  scope                = azurerm_storage_account.commands[0].id
  role_definition_name = "Storage Blob Delegator"
  principal_id         = var.principal
  description          = "alien-manager ${var.name}: user delegation keys for payload SAS URLs"
}

# The manager reads the storage account's endpoints from Resource Manager at start
# (Microsoft.Storage/storageAccounts/read: the `tablestorage` binding names the account by resource
# group, which also covers sovereign clouds and DNS-zone endpoints). Reader on the account alone:
# its properties, no data and no keys (listKeys is an action, not a read).
resource "azurerm_role_assignment" "manager_account_reader" {
  count = var.enable_commands_store ? 1 : 0

  scope                = azurerm_storage_account.commands[0].id
  role_definition_name = "Reader"
  principal_id         = var.principal
  description          = "alien-manager ${var.name}: the commands storage account's endpoints"
}
