terraform {
  required_version = ">= 1.3"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 5.0"
    }
    # One resource only: the commands table. azurerm_storage_table reads and writes the table's
    # ACL with Shared Key on every plan, which a storage account without shared keys refuses;
    # azapi creates the table through Azure Resource Manager instead.
    azapi = {
      source  = "Azure/azapi"
      version = ">= 2.0"
    }
  }
}
