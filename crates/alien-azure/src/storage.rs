//! A storage account as the manager reaches it: its Table and Blob endpoints and how requests are
//! authorized.
//!
//! Endpoints follow object_store's convention: with `AZURE_STORAGE_USE_EMULATOR=true`, Azurite at
//! `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`) and
//! `AZURITE_TABLE_STORAGE_URL` (default `http://127.0.0.1:10002`), path style
//! (`{endpoint}/{account}/...`), with Azurite's well-known development account and key unless
//! others are given; otherwise `https://{account}.table.core.windows.net` and
//! `https://{account}.blob.core.windows.net`. A binding's `endpointUrl` (the Table endpoint for
//! `tablestorage`, the Blob endpoint for `blob`) wins, path style when it names a port.
//!
//! Requests are signed with the account key (Shared Key) when one is known
//! (`AZURE_STORAGE_ACCOUNT_KEY`, or the emulator's); without a key, they carry an Entra ID token
//! for `https://storage.azure.com/` (roles `Storage Table Data Contributor`, `Storage Blob Data
//! Contributor`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Azurite's well-known development account.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key (public, documented by Microsoft).
pub const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A storage account key (base64 in configuration and the environment).
#[derive(Clone)]
pub struct AccountKey(Vec<u8>);

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountKey(..)")
    }
}

impl AccountKey {
    /// A key from its base64 form.
    pub fn from_base64(text: &str) -> Result<AccountKey, String> {
        STANDARD
            .decode(text.trim())
            .map(AccountKey)
            .map_err(|e| format!("the storage account key is not base64: {e}"))
    }

    /// HMAC-SHA256 of `text` under the key, base64.
    pub fn sign(&self, text: &str) -> String {
        // HMAC takes keys of any length, so this never fails.
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(text.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// Which storage service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageService {
    /// Table Storage.
    Table,
    /// Blob Storage.
    Blob,
}

/// A storage account's endpoint for one service, and its credentials.
#[derive(Debug, Clone)]
pub struct StorageAccount {
    /// The account name.
    pub account: String,
    /// Base URL of the service without a trailing slash; path style (`.../{account}`) for the
    /// emulator.
    pub base: String,
    /// Whether the account name is the first path segment (emulators).
    pub path_style: bool,
    /// The account key, when requests are signed with it.
    pub key: Option<AccountKey>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether `AZURE_STORAGE_USE_EMULATOR` says to use Azurite (`true` or `1`).
pub fn use_emulator() -> bool {
    env("AZURE_STORAGE_USE_EMULATOR").is_some_and(|v| v == "true" || v == "1")
}

impl StorageAccount {
    /// The account `account` for `service`: at `endpoint_url` when given, else as the module
    /// documentation says.
    pub fn resolve(
        service: StorageService,
        account: &str,
        endpoint_url: Option<&str>,
    ) -> Result<StorageAccount, String> {
        let emulator = use_emulator();
        let key = match env("AZURE_STORAGE_ACCOUNT_KEY").or_else(|| env("AZURE_STORAGE_ACCESS_KEY"))
        {
            Some(key) => Some(AccountKey::from_base64(&key)?),
            None if emulator || endpoint_url.is_some() && account == EMULATOR_ACCOUNT => {
                Some(AccountKey::from_base64(EMULATOR_KEY)?)
            }
            None => None,
        };
        let (variable, default) = match service {
            StorageService::Table => ("AZURITE_TABLE_STORAGE_URL", "http://127.0.0.1:10002"),
            StorageService::Blob => ("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000"),
        };
        let explicit = endpoint_url.map(str::to_owned).filter(|u| !u.trim().is_empty());
        let emulated = explicit
            .clone()
            .or_else(|| emulator.then(|| env(variable).unwrap_or_else(|| default.to_owned())));
        if let Some(url) = emulated {
            let url = url.trim().trim_end_matches('/').to_owned();
            let url = if url.contains("://") { url } else { format!("http://{url}") };
            // An endpoint with a port (an emulator) is path style; a custom domain is not.
            let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            let path_style = authority.split('/').next().is_some_and(|host| host.contains(':'));
            // An endpoint Resource Manager reports for an emulated account already names it.
            let named = url.ends_with(&format!("/{account}"));
            let base = if path_style && !named { format!("{url}/{account}") } else { url };
            return Ok(StorageAccount { account: account.to_owned(), base, path_style, key });
        }
        let host = match service {
            StorageService::Table => "table",
            StorageService::Blob => "blob",
        };
        Ok(StorageAccount {
            account: account.to_owned(),
            base: format!("https://{account}.{host}.core.windows.net"),
            path_style: false,
            key,
        })
    }

    /// The Shared Key Lite `Authorization` header of a Table request on `path` (the part after
    /// the base, starting with `/`, without the query) at `date` (the `x-ms-date` value).
    pub fn table_authorization(&self, path: &str, date: &str) -> Option<String> {
        let key = self.key.as_ref()?;
        let resource = if self.path_style {
            format!("/{0}/{0}{path}", self.account)
        } else {
            format!("/{}{path}", self.account)
        };
        let signature = key.sign(&format!("{date}\n{resource}"));
        Some(format!("SharedKeyLite {}:{signature}", self.account))
    }
}

impl StorageAccount {
    /// The Shared Key `Authorization` header of a Blob request without a body: `method` on
    /// `path` (after the base) with the query parameters `query` (name, value), the `x-ms-*`
    /// headers `ms_headers` (name, value), which must include `x-ms-date`.
    pub fn blob_authorization(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        ms_headers: &[(&str, &str)],
    ) -> Option<String> {
        let key = self.key.as_ref()?;
        let mut headers: Vec<(String, &str)> =
            ms_headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), *v)).collect();
        headers.sort();
        let canonical_headers: String =
            headers.iter().map(|(n, v)| format!("{n}:{}\n", v.trim())).collect();
        let mut resource = if self.path_style {
            format!("/{0}/{0}{path}", self.account)
        } else {
            format!("/{}{path}", self.account)
        };
        let mut params: Vec<(String, &str)> =
            query.iter().map(|(n, v)| (n.to_ascii_lowercase(), *v)).collect();
        params.sort();
        for (name, value) in params {
            resource.push_str(&format!("\n{name}:{value}"));
        }
        // VERB, then Content-Encoding, -Language, -Length, -MD5, -Type, Date, If-Modified-Since,
        // If-Match, If-None-Match, If-Unmodified-Since, Range: all empty here.
        let signature =
            key.sign(&format!("{method}\n\n\n\n\n\n\n\n\n\n\n\n{canonical_headers}{resource}"));
        Some(format!("SharedKey {}:{signature}", self.account))
    }
}

/// `now` as the RFC 1123 date Azure wants in `x-ms-date`.
pub fn ms_date(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Storage accounts' api-version (Resource Manager, `Microsoft.Storage`).
pub const STORAGE_ACCOUNTS_API_VERSION: &str = "2023-05-01";

/// A storage account's service endpoints as Resource Manager reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageEndpoints {
    /// The Table endpoint, e.g. `https://alienstate.table.core.windows.net` (no trailing slash).
    pub table: String,
    /// The Blob endpoint.
    pub blob: String,
}

/// The endpoints of storage account `account` in resource group `group` of `subscription`
/// ("Storage Accounts - Get Properties": `properties.primaryEndpoints`), which also names them
/// in sovereign clouds and for accounts with a DNS-zone endpoint. An account that is not in
/// that group is an error naming both.
pub async fn storage_endpoints(
    arm: &crate::Arm,
    subscription: &str,
    group: &str,
    account: &str,
) -> Result<StorageEndpoints, crate::ArmError> {
    let what = format!("ARM read storage account {account} in resource group {group}");
    let path = format!(
        "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{account}?api-version={STORAGE_ACCOUNTS_API_VERSION}"
    );
    let body: serde_json::Value = arm.json(&what, reqwest::Method::GET, &path, None).await?;
    let endpoints = &body["properties"]["primaryEndpoints"];
    let read = |service: &str| {
        endpoints[service]
            .as_str()
            .map(|url| url.trim_end_matches('/').to_owned())
            .filter(|url| !url.is_empty())
            .ok_or_else(|| {
                crate::ArmError::decode(
                    &what,
                    &format!("properties.primaryEndpoints.{service} is missing (the account has no {service} service)"),
                )
            })
    };
    Ok(StorageEndpoints { table: read("table")?, blob: read("blob")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulator_endpoint_is_path_style_with_the_well_known_key() {
        let account = StorageAccount::resolve(
            StorageService::Table,
            EMULATOR_ACCOUNT,
            Some("http://127.0.0.1:10002/"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(account.base, "http://127.0.0.1:10002/devstoreaccount1");
        assert!(account.path_style && account.key.is_some());
        assert!(!format!("{account:?}").contains(EMULATOR_KEY));
    }

    /// Shared Key Lite for the Table service signs the date and the canonical resource, whose
    /// account is doubled on a path-style (emulator) endpoint; Azurite accepting it is the
    /// contract suite's business.
    #[test]
    fn shared_key_lite_signs_the_date_and_the_doubled_account_path() {
        let account = StorageAccount::resolve(
            StorageService::Table,
            EMULATOR_ACCOUNT,
            Some("http://127.0.0.1:10002"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let date = "Sun, 06 Dec 2026 17:00:00 GMT";
        let header = account.table_authorization("/Tables", date).unwrap_or_default();
        let key = AccountKey::from_base64(EMULATOR_KEY).unwrap_or_else(|e| panic!("{e}"));
        let expected = key.sign(&format!("{date}\n/devstoreaccount1/devstoreaccount1/Tables"));
        assert_eq!(header, format!("SharedKeyLite devstoreaccount1:{expected}"));
    }
}
