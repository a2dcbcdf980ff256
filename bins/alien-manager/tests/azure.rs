//! Azure push mode end to end, against the real binary (spec/testing.md): the seed's Azure
//! settings (`[artifact-registry.azure]` ACR, `[commands]` Table Storage + Blob,
//! `[impersonation.azure]` with `resourceId` and `principalId`) with the commands store on
//! Azurite, and what has no emulator (Resource Manager: storage accounts, Container Apps, role
//! assignments; the managed-identity endpoint; Entra ID's token endpoint; ACR's token service)
//! on the contract stub, reached through `AZURE_RESOURCE_MANAGER_ENDPOINT`,
//! `AZURE_AUTHORITY_HOST`, `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` and the ACR binding's
//! `endpointUrl`.
//!
//! The storage account's endpoints come from Resource Manager (the stub reports Azurite's), in
//! the subscription named by the management identity's `resourceId`. A deployment on platform
//! `azure` in a customer's subscription runs as container apps created with the token the
//! management identity's federated credential got in the customer's tenant; its update, a
//! failing revision and the fix; a command with 1 MiB params through Table Storage and Blob
//! answered by a receiver with the container's environment through SAS URLs (which Azurite
//! verifies); credentials minted for the workloads; and a cleanup that leaves nothing in the
//! stub or Azurite.
//!
//! What the stub cannot show: Entra ID's and Resource Manager's authorization decisions, that
//! images exist or start, replica counts, real timing (docs/azure.md).
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alien_azure::azurite::{Azurite, create_container, unique_name};
use alien_azure::storage::{EMULATOR_ACCOUNT, StorageAccount, StorageService, ms_date};
use alien_azure::stub::{ContractStub, FAILING_IMAGE_MARKER, IDENTITY_HEADER};
use common::push::{self, wait_status};
use common::{Manager, fixture};
use reqwest::Method;
use serde_json::{Value, json};

const VENDOR_SUBSCRIPTION: &str = "55555555-5555-5555-5555-555555555555";
const VENDOR_TENANT: &str = "44444444-4444-4444-4444-444444444444";
const VENDOR_GROUP: &str = "rg-alien";
const MANAGEMENT: &str = "11111111-1111-1111-1111-111111111111";
const MANAGEMENT_PRINCIPAL: &str = "66666666-6666-6666-6666-666666666666";
const CUSTOMER_SUBSCRIPTION: &str = "99999999-9999-9999-9999-999999999999";
const CUSTOMER_TENANT: &str = "33333333-3333-3333-3333-333333333333";
const CUSTOMER_CLIENT: &str = "22222222-2222-2222-2222-222222222222";
const CUSTOMER_GROUP: &str = "rg-acme";
const APP_IDENTITY_PRINCIPAL: &str = "77777777-7777-7777-7777-777777777777";
const SECRET: &str = "db-password-never-in-plain-sight";
const REGISTRY: &str = "alienregistry.azurecr.io";

fn management_id() -> String {
    format!(
        "/subscriptions/{VENDOR_SUBSCRIPTION}/resourceGroups/{VENDOR_GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/alien-management"
    )
}

/// The seed's Azure settings, with a table and a container of this test's own; no
/// subscription anywhere but in the management identity's `resourceId`; one second of command
/// retention so the cleanup can be watched.
fn seed_config(stub: &str, table: &str, container: &str) -> String {
    format!(
        r#"
[server]
deployment-interval-secs = 1

[artifact-registry.azure]
service = "acr"
registryName = "alienregistry"
resourceGroupName = "{VENDOR_GROUP}"
endpointUrl = "{stub}"

[commands]
kv = {{ service = "tablestorage", resourceGroupName = "{VENDOR_GROUP}", accountName = "{EMULATOR_ACCOUNT}", tableName = "{table}" }}
storage = {{ service = "blob", accountName = "{EMULATOR_ACCOUNT}", containerName = "{container}" }}
retention-secs = 1

[impersonation.azure]
service = "azuremanagedidentity"
clientId = "{MANAGEMENT}"
resourceId = "{id}"
principalId = "{MANAGEMENT_PRINCIPAL}"
tenantId = "{VENDOR_TENANT}"
"#,
        id = management_id()
    )
}

/// The environment of a manager whose Azure calls go to `stub`: Resource Manager, Entra ID and
/// the managed-identity endpoint (as the management identity).
fn stub_env(stub: &ContractStub) -> Vec<(&'static str, String)> {
    vec![
        ("AZURE_RESOURCE_MANAGER_ENDPOINT", stub.base().to_owned()),
        ("AZURE_AUTHORITY_HOST", stub.base().to_owned()),
        ("IDENTITY_ENDPOINT", stub.identity_endpoint()),
        ("IDENTITY_HEADER", IDENTITY_HEADER.to_owned()),
        ("AZURE_CLIENT_ID", MANAGEMENT.to_owned()),
    ]
}

struct World {
    azurite: Azurite,
    stub: ContractStub,
    table: String,
    container: String,
    manager: Manager,
}

async fn world() -> World {
    let azurite = Azurite::start().await.unwrap();
    let stub = ContractStub::start().await.unwrap();
    stub.set_identity(MANAGEMENT, MANAGEMENT_PRINCIPAL, Some(&management_id()));
    stub.add_storage_account(
        VENDOR_SUBSCRIPTION,
        VENDOR_GROUP,
        EMULATOR_ACCOUNT,
        &format!("{}/{EMULATOR_ACCOUNT}", azurite.table_url),
        &format!("{}/{EMULATOR_ACCOUNT}", azurite.blob_url),
    );
    let table = unique_name("aliencommands");
    let container = unique_name("alien-commands-");
    alien_azure::TableKv::new(EMULATOR_ACCOUNT, &table, Some(&azurite.table_url))
        .unwrap()
        .create_table()
        .await
        .unwrap();
    create_container(&azurite.blob_url, &container).await.unwrap();
    let env = stub_env(&stub);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let manager =
        Manager::start_deploying_with(&seed_config(stub.base(), &table, &container), &env).await;
    World { azurite, stub, table, container, manager }
}

impl World {
    /// The entities of the commands table (row keys), expired or not.
    async fn entities(&self) -> Vec<String> {
        let account = StorageAccount::resolve(
            StorageService::Table,
            EMULATOR_ACCOUNT,
            Some(&self.azurite.table_url),
        )
        .unwrap();
        let path = format!("/{}()", self.table);
        let date = ms_date(chrono::Utc::now());
        let body: Value = reqwest::Client::new()
            .get(format!("{}{path}", account.base))
            .header("x-ms-date", &date)
            .header("x-ms-version", "2019-02-02")
            .header("Accept", "application/json;odata=nometadata")
            .header("Authorization", account.table_authorization(&path, &date).unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["RowKey"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The blobs of the payload container (names).
    async fn blobs(&self) -> Vec<String> {
        use futures_util::TryStreamExt as _;
        use object_store::ObjectStore as _;
        let store = alien_azure::blob_container(
            EMULATOR_ACCOUNT,
            &self.container,
            Some(&self.azurite.blob_url),
        )
        .unwrap();
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        listed.into_iter().map(|m| m.location.to_string()).collect()
    }
}

fn release(image: &str) -> Value {
    let mut stack = fixture("valid-web.json");
    stack["resources"]["api"]["config"]["code"]["image"] = json!(image);
    json!({"stack": {"azure": stack}})
}

fn image(tag: &str) -> String {
    format!("{REGISTRY}/alien-artifacts/api:{tag}")
}

fn target() -> Value {
    json!({
        "subscriptionId": CUSTOMER_SUBSCRIPTION, "tenantId": CUSTOMER_TENANT,
        "clientId": CUSTOMER_CLIENT, "resourceGroup": CUSTOMER_GROUP, "location": "westeurope",
        "environmentId": format!("/subscriptions/{CUSTOMER_SUBSCRIPTION}/resourceGroups/{CUSTOMER_GROUP}/providers/Microsoft.App/managedEnvironments/acme-env"),
        "identityResourceId": format!("/subscriptions/{CUSTOMER_SUBSCRIPTION}/resourceGroups/{CUSTOMER_GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/alien-pull"),
        "identityPrincipalId": APP_IDENTITY_PRINCIPAL,
    })
}

/// The last body the manager put for the container app `id`.
fn last_put(stub: &ContractStub, id: &str) -> Value {
    stub.requests()
        .into_iter()
        .rfind(|r| r.method == "PUT" && r.path.eq_ignore_ascii_case(id))
        .and_then(|r| r.body)
        .unwrap()
}

store_matrix! {
async fn seed_azure_push_mode_end_to_end() {
    let w = world().await;
    let manager = &w.manager;
    let (_, ready) = manager.call(Method::GET, "/ready", None, None).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    // The storage account's endpoints were read from Resource Manager, in the subscription of
    // the management identity's resourceId.
    let lookups = w.stub.requests_to("/providers/Microsoft.Storage/storageAccounts/");
    assert!(!lookups.is_empty());
    assert!(lookups[0].path.starts_with(&format!("/subscriptions/{VENDOR_SUBSCRIPTION}/")));

    // Where the CLI pushes: ACR, with a refresh token exchanged for the manager's identity.
    let (status, build) = manager
        .call(
            Method::GET,
            "/v1/build-config?platform=azure&repositories=api",
            Some(&manager.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{build}");
    assert_eq!(
        (build["registry"].as_str(), build["repositoryName"].as_str()),
        (Some(REGISTRY), Some("alien-artifacts")),
        "{build}"
    );
    assert_eq!(build["credentials"]["username"], "00000000-0000-0000-0000-000000000000");
    let exchange = &w.stub.requests_to("/oauth2/exchange")[0];
    assert_eq!(exchange.form["service"], REGISTRY);
    let aad = w.stub.token_info(&exchange.form["access_token"]).unwrap();
    assert_eq!(aad.client_id, MANAGEMENT, "exchanged as the management identity");

    // A release and a deployment in the customer's subscription.
    manager.admin(Method::POST, "/v1/releases", Some(release(&image("v1")))).await;
    let (group_id, group_token) = manager.group("customers").await;
    let body = json!({
        "name": "acme", "platform": "azure", "deploymentGroupId": group_id,
        "environmentVariables": [
            {"name": "DB_PASSWORD", "value": SECRET, "type": "secret"},
            {"name": "MODE", "value": "production", "type": "plain"}],
        "target": target(),
    });
    let created = manager.admin(Method::POST, "/v1/deployments", Some(body)).await;
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    let dep_token = created["token"].as_str().unwrap().to_owned();
    let info = wait_status(manager, &dep, "running").await;

    // What runs: a container app with the stack's image, size, scale rules and ingress, created
    // with the token the management identity's federated credential got in the customer's
    // tenant.
    let apps = w.stub.apps();
    assert_eq!(apps.len(), 1, "{apps:?}");
    let id = apps[0].clone();
    assert!(
        id.starts_with(&format!(
            "/subscriptions/{CUSTOMER_SUBSCRIPTION}/resourceGroups/{CUSTOMER_GROUP}/providers/Microsoft.App/containerApps/"
        )),
        "{id}"
    );
    let put = last_put(&w.stub, &id);
    let configuration = &put["properties"]["configuration"];
    let container = &put["properties"]["template"]["containers"][0];
    assert_eq!(container["image"], image("v1"));
    assert_eq!(container["resources"], json!({"cpu": 2.0, "memory": "4Gi"}));
    assert_eq!(configuration["ingress"]["targetPort"], 8080);
    assert_eq!(configuration["ingress"]["external"], true);
    assert_eq!(configuration["registries"][0]["server"], REGISTRY, "{configuration}");
    let scale = &put["properties"]["template"]["scale"];
    assert_eq!((scale["minReplicas"].as_u64(), scale["maxReplicas"].as_u64()), (Some(2), Some(20)));
    assert!(!scale["rules"].as_array().unwrap().is_empty());
    for call in w.stub.requests().iter().filter(|r| r.path.contains("/Microsoft.App/")) {
        let info = w.stub.token_info(call.token.as_deref().unwrap()).unwrap();
        assert_eq!(
            (info.client_id.as_str(), info.tenant.as_deref(), info.via.as_deref()),
            (CUSTOMER_CLIENT, Some(CUSTOMER_TENANT), Some(MANAGEMENT)),
            "{} {}",
            call.method,
            call.path
        );
    }
    // The customer's app identity may pull from the vendor's registry (AcrPull, granted as the
    // manager on the registry in the vendor's subscription).
    let grants = w.stub.role_assignments();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].1["principalId"], APP_IDENTITY_PRINCIPAL);
    assert!(
        grants[0].1["scope"].as_str().unwrap().starts_with(&format!(
            "/subscriptions/{VENDOR_SUBSCRIPTION}/resourceGroups/{VENDOR_GROUP}/providers/Microsoft.ContainerRegistry/registries/alienregistry"
        )),
        "{grants:?}"
    );
    // Secrets are Container Apps secrets, not plain env; the stored app shows no value.
    let stored = w.stub.app(&id).unwrap().to_string();
    assert!(!stored.contains(SECRET) && !stored.contains(&dep_token), "{stored}");
    let plain: Vec<&Value> =
        container["env"].as_array().unwrap().iter().filter_map(|e| e.get("value")).collect();
    assert!(
        !plain.iter().any(|v| v.as_str().is_some_and(|v| v == SECRET || v.contains(&dep_token))),
        "a secret in plain env: {plain:?}"
    );
    let outputs = &info["stackState"]["resources"]["api"]["outputs"];
    let fqdn = w.stub.app(&id).unwrap()["properties"]["latestRevisionFqdn"].clone();
    assert_eq!(outputs["url"], format!("https://{}", fqdn.as_str().unwrap()), "{info}");
    assert_eq!(outputs["status"], "running", "{info}");
    assert_eq!(outputs["currentReplicas"], 2, "{info}");

    // A command with 1 MiB params: state in Table Storage, payloads in Blob behind SAS URLs,
    // answered by a receiver with the container's environment (secrets as Container Apps
    // injects them).
    let secrets: BTreeMap<&str, &str> = configuration["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["value"].as_str().unwrap()))
        .collect();
    let mut container_env: BTreeMap<String, String> = BTreeMap::new();
    for var in container["env"].as_array().unwrap() {
        let value = match (var["value"].as_str(), var["secretRef"].as_str()) {
            (Some(value), _) => value,
            (None, Some(secret)) => secrets[secret],
            _ => panic!("{var}"),
        };
        container_env.insert(var["name"].as_str().unwrap().to_owned(), value.to_owned());
    }
    assert_eq!(container_env["DB_PASSWORD"], SECRET);
    assert_eq!(container_env["MODE"], "production");
    let prefix = format!("{}/{EMULATOR_ACCOUNT}/{}/", w.azurite.blob_url, w.container);
    let command =
        push::reverse_a_large_command(manager, &group_token, &dep, &container_env, &prefix).await;
    let entities = w.entities().await;
    assert!(entities.iter().any(|k| k.contains(&command)), "state in the table: {entities:?}");
    let blobs = w.blobs().await;
    assert!(blobs.iter().any(|b| b.contains(&command)), "payloads in Blob: {blobs:?}");

    // Credentials minted for the deployment's workloads: a token of the customer's application.
    let body = json!({"deploymentId": dep, "resourceId": "api", "bindingName": "storage"});
    let (status, minted) =
        manager.call(Method::POST, "/v1/credentials/mint", Some(&dep_token), Some(body)).await;
    assert_eq!(status, 200, "{minted}");
    let creds: alien_impersonation::Credentials =
        serde_json::from_value(minted["credentials"].clone()).unwrap();
    let alien_impersonation::Credentials::Azure { access_token, .. } = &creds else {
        panic!("{minted}")
    };
    assert_eq!(w.stub.identity_of(access_token).as_deref(), Some(CUSTOMER_CLIENT));

    // A second release: a new revision, then running.
    manager.admin(Method::POST, "/v1/releases", Some(release(&image("v2")))).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.stub.revisions(&id).len() < 2 {
        assert!(Instant::now() < deadline, "no second revision");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_status(manager, &dep, "running").await;
    assert_eq!(
        last_put(&w.stub, &id)["properties"]["template"]["containers"][0]["image"],
        image("v2")
    );
    let serving = w.stub.app(&id).unwrap()["properties"]["latestReadyRevisionName"].clone();

    // A revision that does not provision: update-failed naming the container, the previous
    // revision still serving.
    let broken = image(&format!("{FAILING_IMAGE_MARKER}-v3"));
    manager.admin(Method::POST, "/v1/releases", Some(release(&broken))).await;
    push::expect_api_rollout_failed(manager, &dep).await;
    assert_eq!(w.stub.app(&id).unwrap()["properties"]["latestReadyRevisionName"], serving);

    // A fixed release recovers.
    manager.admin(Method::POST, "/v1/releases", Some(release(&image("v4")))).await;
    wait_status(manager, &dep, "running").await;

    // Cleanup leaves nothing behind: no app, and (once the command's retention of one second
    // has passed) no command entity or payload.
    push::delete_and_wait(manager, &dep).await;
    assert!(w.stub.apps().is_empty(), "{:?}", w.stub.apps());
    push::wait_until_nothing_left("Azurite", || async {
        [w.entities().await, w.blobs().await].concat()
    })
    .await;
}
}

/// A management identity other than the one `[impersonation.azure]` pins by `principalId`:
/// deployments fail naming the key, and nothing is exchanged in the customer's tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_management_identity_than_the_pinned_one_is_refused() {
    let stub = ContractStub::start().await.unwrap();
    stub.set_identity(MANAGEMENT, "12121212-1212-1212-1212-121212121212", None);
    let toml = format!(
        r#"
[server]
deployment-interval-secs = 1

[impersonation.azure]
service = "azuremanagedidentity"
clientId = "{MANAGEMENT}"
principalId = "{MANAGEMENT_PRINCIPAL}"
tenantId = "{VENDOR_TENANT}"
"#
    );
    let env = stub_env(&stub);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let manager = Manager::start_deploying_with(&toml, &env).await;
    manager.admin(Method::POST, "/v1/releases", Some(release("ghcr.io/acme/api:v1"))).await;
    let (group_id, _) = manager.group("customers").await;
    let body = json!({"name": "acme", "platform": "azure", "deploymentGroupId": group_id,
        "target": target()});
    let created = manager.admin(Method::POST, "/v1/deployments", Some(body)).await;
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let info = manager.admin(Method::GET, &format!("/v1/deployments/{dep}"), None).await;
        if let Some(message) = info["error"]["message"].as_str() {
            break message.to_owned();
        }
        assert!(Instant::now() < deadline, "no error: {info}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(message.contains("principalId"), "{message}");
    assert!(message.contains("12121212-1212-1212-1212-121212121212"), "{message}");
    assert!(
        stub.requests_to(&format!("/{CUSTOMER_TENANT}/oauth2/v2.0/token")).is_empty(),
        "nothing exchanged in the customer's tenant"
    );
    assert!(stub.apps().is_empty());
}

/// The embedded registry with its blobs in a Blob container on Azurite passes the OCI
/// conformance suite, read strictly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_on_blob_storage_passes_the_oci_conformance_suite() {
    use alien_registry_conformance::{
        Strictness, Target, results_table, run_all, unexpected_outcomes,
    };
    let azurite = Azurite::start().await.unwrap();
    let container = unique_name("alien-registry-");
    create_container(&azurite.blob_url, &container).await.unwrap();
    let toml = format!(
        "[artifact-registry.default]\nservice = \"local\"\nstorage = {{ service = \"blob\", accountName = \"{EMULATOR_ACCOUNT}\", containerName = \"{container}\", endpointUrl = \"{}\" }}\n",
        azurite.blob_url
    );
    let manager = Manager::start_deploying_with(&toml, &[]).await;
    let ours = Target::new("alien-manager (Blob)", manager.base.clone())
        .with_credentials("x", manager.admin.clone())
        .with_strictness(Strictness::Strict);
    let results = run_all(&ours).await;
    println!("{}", results_table(&results));
    let problems = unexpected_outcomes(&results, &[]);
    assert!(problems.is_empty(), "with Blob storage:\n  {}", problems.join("\n  "));
    use futures_util::TryStreamExt as _;
    use object_store::ObjectStore as _;
    let store =
        alien_azure::blob_container(EMULATOR_ACCOUNT, &container, Some(&azurite.blob_url)).unwrap();
    let blobs: Vec<_> =
        store.list(Some(&object_store::path::Path::from("blobs"))).try_collect().await.unwrap();
    assert!(!blobs.is_empty(), "blobs are in the container");
}

/// A storage account Resource Manager does not know in the configured resource group: the
/// manager refuses to start, naming the binding, the account and the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_account_not_in_its_resource_group_stops_the_start() {
    let stub = ContractStub::start().await.unwrap();
    let toml = format!(
        r#"
[commands]
kv = {{ service = "tablestorage", resourceGroupName = "rg-elsewhere", subscriptionId = "{VENDOR_SUBSCRIPTION}", accountName = "alienstate", tableName = "t" }}
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alien-manager.toml");
    std::fs::write(&file, toml).unwrap();
    let mut command = common::bin();
    command.current_dir(dir.path()).args(["serve", "--port", "0", "-c"]).arg(&file);
    command.env("ALIEN_DATABASE__STATE_DIR", dir.path().join("state"));
    for (key, value) in stub_env(&stub) {
        command.env(key, value);
    }
    let out = command.env_remove("AZURE_STORAGE_USE_EMULATOR").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for part in ["commands.kv", "alienstate", "rg-elsewhere", "ResourceNotFound"] {
        assert!(stderr.contains(part), "{part} in: {stderr}");
    }
}

/// Storage without an account key, as `infra/azure` leaves it (Shared Key off): the manager
/// reaches Table Storage and Blob with Entra ID tokens of its managed identity, and signs
/// payload URLs with a user delegation key. Azurite checks each token's audience, issuer and
/// lifetime (`--oauth basic`, over HTTPS with a test CA the manager trusts through
/// `SSL_CERT_FILE`) and each SAS against the delegation key it issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_without_account_keys_uses_entra_tokens_and_user_delegation_sas() {
    use alien_azure::azurite::{create_container_in, create_table_in};
    use alien_azure::storage::AccountKey;
    const ACCOUNT: &str = "alienstate";
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("azurite.crt"), dir.path().join("azurite.key"));
    let ca = common::tls::test_ca(dir.path());
    common::tls::leaf(dir.path(), &cert, &key, "azurite");
    let account_key = "YWxpZW4tc3RhdGUtdGVzdC1hY2NvdW50LWtleS0zMmJ5dGVz";
    let azurite =
        Azurite::start_oauth(&cert, &key, &format!("{ACCOUNT}:{account_key}")).await.unwrap();
    let stub = ContractStub::start().await.unwrap();
    // The test itself sets up the table and the container with the account key.
    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let keyed = |service, url: &str| {
        let mut account = StorageAccount::resolve(service, ACCOUNT, Some(url)).unwrap();
        account.key = Some(AccountKey::from_base64(account_key).unwrap());
        account
    };
    let (table, container) = (unique_name("aliencommands"), unique_name("alien-commands-"));
    let table_account = keyed(StorageService::Table, &azurite.table_url);
    create_table_in(&table_account, &trusted, &table).await.unwrap();
    create_container_in(&keyed(StorageService::Blob, &azurite.blob_url), &trusted, &container)
        .await
        .unwrap();

    let toml = format!(
        r#"
[server]
deployment-interval-secs = 1

[commands]
kv = {{ service = "tablestorage", resourceGroupName = "{VENDOR_GROUP}", accountName = "{ACCOUNT}", tableName = "{table}", endpointUrl = "{}" }}
storage = {{ service = "blob", accountName = "{ACCOUNT}", containerName = "{container}", endpointUrl = "{}" }}
"#,
        azurite.table_url, azurite.blob_url
    );
    let mut env = stub_env(&stub);
    env.push(("SSL_CERT_FILE", ca.display().to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let manager = Manager::start_deploying_with(&toml, &env).await;
    let (status, ready) = manager.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, 200, "{ready}");
    let storage_tokens: Vec<_> = stub
        .requests_to("/msi/token")
        .into_iter()
        .filter(|r| {
            r.query.get("resource").map(String::as_str) == Some("https://storage.azure.com/")
        })
        .collect();
    assert!(!storage_tokens.is_empty(), "storage tokens from the managed-identity endpoint");

    // A command, to a running deployment, whose params go up through a user-delegation SAS URL.
    manager.admin(Method::POST, "/v1/releases", Some(release("ghcr.io/acme/api:v1"))).await;
    let (group_id, group_token) = manager.group("customers").await;
    let body = json!({"name": "acme", "platform": "azure", "deploymentGroupId": group_id,
        "target": target()});
    let created = manager.admin(Method::POST, "/v1/deployments", Some(body)).await;
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    wait_status(&manager, &dep, "running").await;
    let params: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 253) as u8).collect();
    let body = json!({"deploymentId": dep, "command": "reverse",
        "params": {"mode": "storage", "size": params.len()}});
    let (status, created) =
        manager.call(Method::POST, "/v1/commands", Some(&group_token), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let command = created["commandId"].as_str().unwrap().to_owned();
    let backend = &created["storageUpload"]["putRequest"]["backend"];
    let url = backend["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/{ACCOUNT}/{container}/", azurite.blob_url)), "{url}");
    assert!(url.contains("skoid="), "a user delegation SAS: {url}");
    let mut put = trusted.put(url).body(params.clone());
    for (name, value) in backend["headers"].as_object().into_iter().flatten() {
        put = put.header(name.as_str(), value.as_str().unwrap());
    }
    let response = put.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    // The same URL with its signature altered is refused by Azurite.
    let forged = url.replacen("sig=", "sig=AA", 1);
    let response =
        trusted.put(&forged).header("x-ms-blob-type", "BlockBlob").body("x").send().await;
    assert_eq!(response.unwrap().status(), 403, "a forged SAS");
    let (status, r) = manager
        .call(
            Method::POST,
            &format!("/v1/commands/{command}/upload-complete"),
            Some(&group_token),
            Some(json!({"size": params.len()})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let state = manager.admin(Method::GET, &format!("/v1/commands/{command}"), None).await;
    assert_eq!(state["state"], "PENDING", "{state}");

    // A bearer token for another audience is refused by Azurite, so the tokens above counted.
    let arm_token = reqwest::Client::new()
        .get(format!("{}?resource=https://management.azure.com/&api-version=2019-08-01&client_id={MANAGEMENT}", stub.identity_endpoint()))
        .header("X-IDENTITY-HEADER", IDENTITY_HEADER)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = trusted
        .get(format!("{}/{table}()", table_account.base))
        .bearer_auth(&arm_token)
        .header("x-ms-version", "2019-02-02")
        .header("x-ms-date", ms_date(chrono::Utc::now()))
        .header("Accept", "application/json;odata=nometadata")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "{}", refused.text().await.unwrap());
}
