# Commands store: one storage account holds both halves. KV: table "<name>commands", one entity per
# key (PartitionKey "kv", RowKey the key, Value, Version, ExpiresMs). Blob: container
# "<name>-commands", command params and responses under arc/commands/{id}/, uploaded and downloaded
# through SAS URLs. Shared Key is off: the manager reads and writes with its Entra ID token and signs
# user delegation SAS URLs (object_store does when it holds a token, not a key). Account names are
# global, hence the suffix.

resource "azurerm_storage_account" "commands" {
  #checkov:skip=CKV_AZURE_35:Customers' runtimes upload and download payloads through SAS URLs from networks the vendor does not control, so the default network action stays Allow; every request needs an Entra ID token or a user delegation SAS (Shared Key is off).
  #checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: SAS URLs are used from customer networks; no anonymous access (nested items cannot be public, Shared Key is off).
  #checkov:skip=CKV2_AZURE_33:A private endpoint serves only networks peered with the vendor's; customers' runtimes reach payloads over the internet through SAS URLs.
  #checkov:skip=CKV2_AZURE_1:A customer-managed key is optional (var.customer_managed_key); by default the account is encrypted with Microsoft-managed keys, which need no Key Vault.
  #checkov:skip=CKV2_AZURE_38:Payloads are ephemeral and deleted on purpose when a command is forgotten; blob soft delete would keep every deleted payload (and its cost) past the retention the manager enforces.
  #checkov:skip=CKV_AZURE_33:The account holds no queues; Queue service logging would record nothing.
  #checkov:skip=CKV_AZURE_206:Command state and payloads live minutes to days; zone-redundant storage (the default) survives a zone outage, and a region outage fails commands, which their callers retry. A geo-replica would copy data that is stale by the time anyone fails over to it.
  count = var.enable_commands_store ? 1 : 0

  name                     = local.storage_account_name
  resource_group_name      = var.resource_group_name
  location                 = var.location
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = var.zone_redundant ? "ZRS" : "LRS"
  access_tier              = "Hot"
  tags                     = var.tags

  https_traffic_only_enabled        = true
  min_tls_version                   = "TLS1_2"
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  public_network_access_enabled     = true
  local_user_enabled                = false
  sftp_enabled                      = false
  cross_tenant_replication_enabled  = false
  allowed_copy_scope                = "AAD"
  infrastructure_encryption_enabled = true
  # Tables and queues under the account's key, so a customer-managed key covers the commands table
  # too (by default they use a service key whatever the account's key is).
  table_encryption_key_type = "Account"
  queue_encryption_key_type = "Account"

  blob_properties {
    versioning_enabled  = false
    change_feed_enabled = false

    # The container is permanent; a deleted one (and its payloads) can be restored for 7 days.
    container_delete_retention_policy {
      days = 7
    }
  }

  dynamic "identity" {
    for_each = var.customer_managed_key == null ? [] : [var.customer_managed_key]

    content {
      type         = "UserAssigned"
      identity_ids = [identity.value.user_assigned_identity_id]
    }
  }

  dynamic "customer_managed_key" {
    for_each = var.customer_managed_key == null ? [] : [var.customer_managed_key]

    content {
      key_vault_key_id          = customer_managed_key.value.key_vault_key_id
      user_assigned_identity_id = customer_managed_key.value.user_assigned_identity_id
    }
  }
}

# Through Azure Resource Manager (see versions.tf): the provider's azurerm_storage_table needs
# Shared Key for the table's ACL.
resource "azapi_resource" "commands_table" {
  count = var.enable_commands_store ? 1 : 0

  type      = "Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01"
  name      = local.table_name
  parent_id = "${azurerm_storage_account.commands[0].id}/tableServices/default"
  body      = {}
}

resource "azurerm_storage_container" "commands" {
  #checkov:skip=CKV2_AZURE_21:Read logging needs a Log Analytics workspace or log storage whose location and retention the vendor chooses; add a diagnostic setting on the account's blob service next to this module.
  count = var.enable_commands_store ? 1 : 0

  name                  = local.container_name
  storage_account_id    = azurerm_storage_account.commands[0].id
  container_access_type = "private"
}

resource "azurerm_storage_management_policy" "commands" {
  count = var.enable_commands_store ? 1 : 0

  storage_account_id = azurerm_storage_account.commands[0].id

  rule {
    name    = "expire-command-payloads"
    enabled = true

    filters {
      blob_types = ["blockBlob"]
      # Lifecycle prefixes start with the container name.
      prefix_match = ["${azurerm_storage_container.commands[0].name}/arc/"]
    }

    actions {
      base_blob {
        delete_after_days_since_creation_greater_than = var.payload_retention_days
      }
    }
  }
}
