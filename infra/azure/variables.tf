variable "resource_group_name" {
  description = "Existing resource group that holds every resource of this module (the module does not create it)."
  type        = string

  validation {
    condition     = can(regex("^[-\\w.()]{0,89}[-\\w()]$", var.resource_group_name))
    error_message = "resource_group_name must be a resource group name: 1-90 letters, digits, '_', '-', '.', '(' and ')', not ending with '.'."
  }
}

variable "location" {
  description = "Azure region of every resource, as Azure Resource Manager names it (e.g. westeurope, eastus2)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]+$", var.location))
    error_message = "location must be a region name such as westeurope or eastus2 (lowercase, no spaces)."
  }
}

variable "name" {
  description = "Prefix of every resource name (lowercase letters and digits: registry and storage account names allow nothing else)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{0,12}$", var.name))
    error_message = "name must be 1-13 lowercase letters and digits, starting with a letter (the storage account name \"<name>cmd<8 hex>\" must fit in 24 characters)."
  }
}

variable "principal" {
  description = "Object (principal) ID in Microsoft Entra ID of the identity the manager runs as: the managed identity of its Container App or VM, a service principal, or a user. Every role this module grants the manager goes to it."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.principal))
    error_message = "principal must be an object ID (a GUID such as 00000000-0000-0000-0000-000000000000), not a client (application) ID or a name."
  }
}

variable "enable_artifact_registry" {
  description = "Create the container registry and the manager's roles on it for [artifact-registry.azure]."
  type        = bool
  default     = true
}

variable "enable_commands_store" {
  description = "Create the storage account with the commands table and the payload container for [commands] (kv and storage)."
  type        = bool
  default     = true
}

variable "enable_impersonation" {
  description = "Create the management identity (user-assigned managed identity) the manager acts as before it reaches customer identities ([impersonation.azure])."
  type        = bool
  default     = true
}

variable "payload_retention_days" {
  description = "Days after which the storage account's lifecycle policy deletes command payloads under arc/ (a backstop: the manager deletes payloads itself when a command is forgotten)."
  type        = number
  default     = 7

  validation {
    condition     = var.payload_retention_days >= 1
    error_message = "payload_retention_days must be at least 1."
  }
}

variable "registry_sku" {
  description = "SKU of the container registry: Premium (zone redundancy, dedicated data endpoints, geo-replication, customer-managed keys) or Standard (cheaper; none of those)."
  type        = string
  default     = "Premium"

  validation {
    condition     = contains(["Standard", "Premium"], var.registry_sku)
    error_message = "registry_sku must be Standard or Premium."
  }
}

variable "zone_redundant" {
  description = "Spread the storage account (ZRS instead of LRS) and a Premium registry across availability zones. Set false in a region without availability zones."
  type        = bool
  default     = true
}

variable "federated_issuer" {
  description = "OIDC issuer of the manager's workload identity token (e.g. an AKS cluster's OIDC issuer URL). With federated_subject, the management identity trusts that token. Null: no federated credential (attach the management identity to the manager's compute instead)."
  type        = string
  default     = null

  validation {
    condition     = var.federated_issuer == null || can(regex("^https://[^\\s]+$", var.federated_issuer))
    error_message = "federated_issuer must be an https:// URL (the token's iss claim)."
  }
}

variable "federated_subject" {
  description = "Subject (sub claim) of the manager's workload identity token, e.g. system:serviceaccount:alien:alien-manager on AKS. Set together with federated_issuer."
  type        = string
  default     = null

  validation {
    condition     = var.federated_subject == null || can(regex("^[^\\s]{1,600}$", var.federated_subject))
    error_message = "federated_subject must be 1-600 characters without whitespace."
  }
}

variable "customer_managed_key" {
  description = "Customer-managed key for the storage account (tables included) and the registry (Premium only). key_vault_key_id: a versionless Key Vault key ID (the key rotates automatically). user_assigned_identity_id and identity_client_id: a user-assigned identity that holds Key Vault Crypto Service Encryption User on the key. Null uses Microsoft-managed keys."
  type = object({
    key_vault_key_id          = string
    user_assigned_identity_id = string
    identity_client_id        = string
  })
  default = null

  validation {
    condition = var.customer_managed_key == null || (
      can(regex("^https://[^/]+/keys/[^/]+/?$", var.customer_managed_key.key_vault_key_id)) &&
      can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\\.ManagedIdentity/userAssignedIdentities/[^/]+$", var.customer_managed_key.user_assigned_identity_id)) &&
      can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.customer_managed_key.identity_client_id))
    )
    error_message = "customer_managed_key needs a versionless key ID (https://<vault>.vault.azure.net/keys/<name>), the resource ID of a user-assigned identity and that identity's client ID."
  }
}

variable "tags" {
  description = "Tags applied to every resource that takes tags (the registry, the storage account and the management identity)."
  type        = map(string)
  default     = {}
}
