data "azurerm_client_config" "current" {}

locals {
  # Registry and storage account names are global (<name>.azurecr.io, <name>.blob.core.windows.net)
  # and allow lowercase letters and digits only: 8 hex characters of the subscription and resource
  # group keep them apart, as the account ID and project ID do in infra/aws and infra/gcp.
  suffix = substr(sha256(lower("${data.azurerm_client_config.current.subscription_id}/${var.resource_group_name}")), 0, 8)

  registry_name = "${var.name}acr${local.suffix}"
  # Images go to <registry>.azurecr.io/<repositoryPrefix>/<resource>.
  repository_prefix = "${var.name}-artifacts"

  storage_account_name = "${var.name}cmd${local.suffix}"
  table_name           = "${var.name}commands"
  container_name       = "${var.name}-commands"

  # Built-in role definition IDs, the same in every tenant.
  acr_pull_role_id = "7f951dda-4ed3-4680-a7ca-43fe172d538d"

  # Where the manager's federated credential comes from, when it has one.
  federated = var.federated_issuer != null && var.federated_subject != null
}
