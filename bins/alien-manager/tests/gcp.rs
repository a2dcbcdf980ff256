//! GCP push mode end to end, against the real binary (spec/testing.md): the seed's GCP settings
//! (`[artifact-registry.gcp]` GAR, `[commands]` Firestore + GCS, `[impersonation.gcp]`) with
//! the commands store on the Firestore emulator and gcp-storage-emulator, and the APIs without
//! an emulator (Cloud Run, Secret Manager, IAM Credentials, Artifact Registry, Resource Manager,
//! the OAuth token endpoint) on the contract stub, reached through `FIRESTORE_EMULATOR_HOST`,
//! `STORAGE_EMULATOR_HOST` and `CLOUDSDK_API_ENDPOINT_OVERRIDES_<API>`. The manager's own
//! identity is a service-account key file whose JWTs the stub verifies.
//!
//! A deployment on platform `gcp` in a customer project runs as Cloud Run services created with
//! the token IAM Credentials minted for the customer's service account; its update, a failing
//! revision and the fix; a command with 1 MiB params through Firestore and GCS answered by a
//! receiver with the container's environment through signed URLs; credentials minted for the
//! workloads; and a cleanup that leaves nothing in the stub or the emulators.
//!
//! What the stub cannot show: Google's authorization decisions, that images exist or start,
//! instance counts, real timing (docs/gcp.md). gcp-storage-emulator verifies no signature
//! (the signer is checked against Google's own in alien-gcp).
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alien_gcp::emulators::{Emulator, unique_name, write_test_credentials};
use alien_gcp::stub::{ContractStub, FAILING_IMAGE_MARKER};
use common::push::{self, wait_status};
use common::{Manager, fixture};
use reqwest::Method;
use serde_json::{Value, json};

const VENDOR: &str = "vendor-project";
const CUSTOMER: &str = "customer-project";
const CUSTOMER_NUMBER: &str = "998877665544";
const REGION: &str = "europe-west1";
const DEPLOYER: &str = "alien-deployer@customer-project.iam.gserviceaccount.com";
const PUSH: &str = "alien-gar-push@vendor-project.iam.gserviceaccount.com";
const MANAGEMENT: &str = "alien-management@vendor-project.iam.gserviceaccount.com";
const SECRET: &str = "db-password-never-in-plain-sight";
const REGISTRY: &str = "us-central1-docker.pkg.dev";

/// The seed's GCP settings, with a collection and a bucket of this test's own; one second of
/// command retention so the cleanup can be watched.
fn seed_config(collection: &str, bucket: &str) -> String {
    format!(
        r#"
[server]
deployment-interval-secs = 1

[artifact-registry.gcp]
service = "gar"
repositoryName = "projects/{VENDOR}/locations/us-central1/repositories/alien-artifacts"
pullServiceAccountEmail = "alien-gar-pull@{VENDOR}.iam.gserviceaccount.com"
pushServiceAccountEmail = "{PUSH}"

[commands]
kv = {{ service = "firestore", projectId = "{VENDOR}", databaseId = "(default)", collectionName = "{collection}" }}
storage = {{ service = "gcs", bucketName = "{bucket}" }}
retention-secs = 1

[impersonation.gcp]
service = "gcpserviceaccount"
email = "{MANAGEMENT}"
"#
    )
}

struct World {
    firestore: Emulator,
    storage: Emulator,
    stub: ContractStub,
    collection: String,
    bucket: String,
    _keys: tempfile::TempDir,
    manager: Manager,
}

async fn world() -> World {
    let (firestore, storage) = tokio::join!(Emulator::firestore(), Emulator::storage());
    let (firestore, storage) = (firestore.unwrap(), storage.unwrap());
    let stub = ContractStub::start().await.unwrap();
    stub.add_project(CUSTOMER, CUSTOMER_NUMBER);
    let collection = unique_name("alien-commands");
    let bucket = unique_name("alien-command-storage");
    alien_gcp::GcsClient::new(&storage.settings(alien_gcp::Service::Storage), &bucket)
        .create_bucket(VENDOR)
        .await
        .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("manager-key.json");
    write_test_credentials(&key_file, &stub.token_uri()).unwrap();
    let mut env = vec![
        ("FIRESTORE_EMULATOR_HOST", firestore.url.trim_start_matches("http://").to_owned()),
        ("STORAGE_EMULATOR_HOST", storage.url.clone()),
        ("GOOGLE_APPLICATION_CREDENTIALS", key_file.display().to_string()),
    ];
    for api in
        ["RUN", "IAMCREDENTIALS", "ARTIFACTREGISTRY", "SECRETMANAGER", "CLOUDRESOURCEMANAGER"]
    {
        env.push((
            match api {
                "RUN" => "CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN",
                "IAMCREDENTIALS" => "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS",
                "ARTIFACTREGISTRY" => "CLOUDSDK_API_ENDPOINT_OVERRIDES_ARTIFACTREGISTRY",
                "SECRETMANAGER" => "CLOUDSDK_API_ENDPOINT_OVERRIDES_SECRETMANAGER",
                _ => "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER",
            },
            stub.base().to_owned(),
        ));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let manager = Manager::start_deploying_with(&seed_config(&collection, &bucket), &env).await;
    World { firestore, storage, stub, collection, bucket, _keys: keys, manager }
}

impl World {
    /// The documents of the commands collection (names).
    async fn documents(&self) -> Vec<String> {
        let url = format!(
            "{}/v1/projects/{VENDOR}/databases/(default)/documents/{}?pageSize=1000",
            self.firestore.url, self.collection
        );
        let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        body["documents"]
            .as_array()
            .map(|d| d.iter().map(|d| d["name"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }

    /// The objects of the payload bucket (names).
    async fn objects(&self) -> Vec<String> {
        let client = alien_gcp::GcsClient::new(
            &self.storage.settings(alien_gcp::Service::Storage),
            &self.bucket,
        );
        client.list("", None, None, None).await.unwrap().items.into_iter().map(|i| i.name).collect()
    }
}

fn release(image: &str) -> Value {
    let mut stack = fixture("valid-web.json");
    stack["resources"]["api"]["config"]["code"]["image"] = json!(image);
    json!({"stack": {"gcp": stack}})
}

fn image(tag: &str) -> String {
    format!("{REGISTRY}/{VENDOR}/alien-artifacts/api:{tag}")
}

store_matrix! {
async fn seed_gcp_push_mode_end_to_end() {
    let w = world().await;
    let manager = &w.manager;
    let (_, ready) = manager.call(Method::GET, "/ready", None, None).await;
    assert_eq!(ready["status"], "ready", "{ready}");

    // Where the CLI pushes: GAR, with a token of the push account, the repository made.
    let (status, build) = manager
        .call(
            Method::GET,
            "/v1/build-config?platform=gcp&repositories=api",
            Some(&manager.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{build}");
    assert_eq!(
        (build["registry"].as_str(), build["repositoryName"].as_str()),
        (Some(REGISTRY), Some("vendor-project/alien-artifacts")),
        "{build}"
    );
    assert_eq!(build["credentials"]["username"], "oauth2accesstoken", "{build}");
    let password = build["credentials"]["password"].as_str().unwrap();
    assert_eq!(w.stub.identity_of(password).as_deref(), Some(PUSH), "a token of the push account");
    let repository =
        format!("projects/{VENDOR}/locations/us-central1/repositories/alien-artifacts");
    assert!(w.stub.repository(&repository).is_some(), "the repository was created");

    // A release and a deployment in the customer's project.
    manager.admin(Method::POST, "/v1/releases", Some(release(&image("v1")))).await;
    let (group_id, group_token) = manager.group("customers").await;
    let body = json!({
        "name": "acme", "platform": "gcp", "deploymentGroupId": group_id,
        "environmentVariables": [
            {"name": "DB_PASSWORD", "value": SECRET, "type": "secret"},
            {"name": "MODE", "value": "production", "type": "plain"}],
        "target": {"projectId": CUSTOMER, "serviceAccountEmail": DEPLOYER, "region": REGION},
    });
    let created = manager.admin(Method::POST, "/v1/deployments", Some(body)).await;
    let dep = created["deployment"]["id"].as_str().unwrap().to_owned();
    let dep_token = created["token"].as_str().unwrap().to_owned();
    let info = wait_status(manager, &dep, "running").await;

    // What runs: a Cloud Run service with the stack's image, size, scaling and probes, created
    // with the customer account's token (minted through the management account).
    let services = w.stub.services();
    assert_eq!(services.len(), 1, "{services:?}");
    let name = services[0].clone();
    assert!(
        name.starts_with(&format!("projects/{CUSTOMER}/locations/{REGION}/services/")),
        "{name}"
    );
    let service = w.stub.service(&name).unwrap();
    let container = &service["template"]["containers"][0];
    assert_eq!(container["image"], image("v1"));
    assert_eq!(container["resources"]["limits"], json!({"cpu": "2", "memory": "1024Mi"}));
    assert_eq!(
        service["template"]["scaling"],
        json!({"minInstanceCount": 2, "maxInstanceCount": 20})
    );
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    for call in w.stub.requests().iter().filter(|r| r.path.starts_with("/v2/")) {
        let token = call.token.as_deref().unwrap();
        assert_eq!(
            w.stub.identity_of(token).as_deref(),
            Some(DEPLOYER),
            "{} {}",
            call.method,
            call.path
        );
    }
    let mints = w.stub.requests_to(&format!("{DEPLOYER}:generateAccessToken"));
    assert!(!mints.is_empty());
    let delegates = &mints[0].body.as_ref().unwrap()["delegates"];
    assert_eq!(delegates, &json!([format!("projects/-/serviceAccounts/{MANAGEMENT}")]));
    let minted_by = w.stub.identity_of(mints[0].token.as_deref().unwrap()).unwrap_or_default();
    assert_eq!(minted_by, "alien@demo.iam.gserviceaccount.com", "minted as the manager's key");
    // The customer's Cloud Run agent may pull the vendor's repository.
    let policy = w.stub.policy(&repository).to_string();
    assert!(
        policy.contains(&format!(
            "service-{CUSTOMER_NUMBER}@serverless-robot-prod.iam.gserviceaccount.com"
        )),
        "{policy}"
    );
    // Secrets are in Secret Manager, not in the service.
    let shown = service.to_string();
    assert!(!shown.contains(SECRET), "the secret variable is in the service");
    assert!(!shown.contains(&dep_token), "the deployment token is in the service");
    let outputs = &info["stackState"]["resources"]["api"]["outputs"];
    assert_eq!(outputs["url"], service["uri"], "{info}");
    assert_eq!(outputs["status"], "running", "{info}");
    assert_eq!(
        (outputs["currentReplicas"].as_u64(), outputs["desiredReplicas"].as_u64()),
        (Some(2), Some(2)),
        "{info}"
    );

    // A command with 1 MiB params: state in Firestore, payloads in GCS, answered by a receiver
    // with the container's environment (the secrets as Cloud Run injects them).
    let mut container_env: BTreeMap<String, String> = BTreeMap::new();
    for var in container["env"].as_array().unwrap() {
        let key = var["name"].as_str().unwrap().to_owned();
        if let Some(value) = var["value"].as_str() {
            container_env.insert(key, value.to_owned());
        } else {
            let reference = &var["valueSource"]["secretKeyRef"];
            let versions = w.stub.secret_versions(reference["secret"].as_str().unwrap());
            let version: usize = reference["version"].as_str().unwrap().parse().unwrap();
            container_env.insert(key, String::from_utf8(versions[version - 1].clone()).unwrap());
        }
    }
    assert_eq!(container_env["DB_PASSWORD"], SECRET);
    assert_eq!(container_env["MODE"], "production");
    let prefix = format!("{}/{}/", w.storage.url, w.bucket);
    let command =
        push::reverse_a_large_command(manager, &group_token, &dep, &container_env, &prefix).await;
    let documents = w.documents().await;
    assert!(documents.iter().any(|d| d.contains(&command)), "state in Firestore: {documents:?}");
    let objects = w.objects().await;
    assert!(objects.iter().any(|o| o.contains(&command)), "payloads in GCS: {objects:?}");

    // Credentials minted for the deployment's workloads are an access token of its account.
    let body = json!({"deploymentId": dep, "resourceId": "api", "bindingName": "storage"});
    let (status, minted) =
        manager.call(Method::POST, "/v1/credentials/mint", Some(&dep_token), Some(body)).await;
    assert_eq!(status, 200, "{minted}");
    let creds: alien_impersonation::Credentials =
        serde_json::from_value(minted["credentials"].clone()).unwrap();
    let alien_impersonation::Credentials::Gcp { access_token, .. } = &creds else {
        panic!("{minted}")
    };
    assert_eq!(w.stub.identity_of(access_token).as_deref(), Some(DEPLOYER));

    // A second release: a new revision, then running.
    manager.admin(Method::POST, "/v1/releases", Some(release(&image("v2")))).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.stub.revisions(&name).len() < 2 {
        assert!(Instant::now() < deadline, "no second revision");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_status(manager, &dep, "running").await;
    let service = w.stub.service(&name).unwrap();
    assert_eq!(service["template"]["containers"][0]["image"], image("v2"));
    let serving = service["latestReadyRevision"].clone();

    // A revision that does not become ready: update-failed naming the container, traffic on
    // the previous revision.
    let broken = image(&format!("{FAILING_IMAGE_MARKER}-v3"));
    manager.admin(Method::POST, "/v1/releases", Some(release(&broken))).await;
    push::expect_api_rollout_failed(manager, &dep).await;
    assert_eq!(w.stub.service(&name).unwrap()["latestReadyRevision"], serving);

    // A fixed release recovers.
    manager.admin(Method::POST, "/v1/releases", Some(release(&image("v4")))).await;
    wait_status(manager, &dep, "running").await;

    // Cleanup leaves nothing behind: no service, no secret, and (once the command's retention
    // of one second has passed) no command state or payload.
    push::delete_and_wait(manager, &dep).await;
    assert!(w.stub.services().is_empty(), "{:?}", w.stub.services());
    assert!(w.stub.secrets().is_empty(), "{:?}", w.stub.secrets());
    push::wait_until_nothing_left("the emulators", || async {
        [w.documents().await, w.objects().await].concat()
    })
    .await;
}
}

/// The embedded registry with its blobs in a GCS bucket on gcp-storage-emulator passes the OCI
/// conformance suite, read strictly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_on_gcs_passes_the_oci_conformance_suite() {
    use alien_registry_conformance::{
        Strictness, Target, results_table, run_all, unexpected_outcomes,
    };
    let storage = Emulator::storage().await.unwrap();
    let bucket = unique_name("alien-registry");
    let client = alien_gcp::GcsClient::new(&storage.settings(alien_gcp::Service::Storage), &bucket);
    client.create_bucket(VENDOR).await.unwrap();
    let toml = format!(
        "[artifact-registry.default]\nservice = \"local\"\nstorage = {{ service = \"gcs\", bucketName = \"{bucket}\", endpointUrl = \"{}\" }}\n",
        storage.url
    );
    let manager = Manager::start_deploying_with(&toml, &[]).await;
    let ours = Target::new("alien-manager (GCS)", manager.base.clone())
        .with_credentials("x", manager.admin.clone())
        .with_strictness(Strictness::Strict);
    let results = run_all(&ours).await;
    println!("{}", results_table(&results));
    let problems = unexpected_outcomes(&results, &[]);
    assert!(problems.is_empty(), "with GCS storage:\n  {}", problems.join("\n  "));
    let blobs = client.list("blobs/", None, None, None).await.unwrap();
    assert!(!blobs.items.is_empty(), "blobs are in the bucket");
}

/// A bucket that does not exist: the manager starts and `/ready` names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_named_at_start_and_by_ready() {
    let (storage, firestore) = tokio::join!(Emulator::storage(), Emulator::firestore());
    let (storage, firestore) = (storage.unwrap(), firestore.unwrap());
    let toml = format!(
        r#"
[commands]
kv = {{ service = "firestore", projectId = "{VENDOR}", databaseId = "(default)", collectionName = "c", endpointUrl = "{fs}" }}
storage = {{ service = "gcs", bucketName = "alien-no-such-bucket", endpointUrl = "{gcs}" }}
"#,
        fs = firestore.url,
        gcs = storage.url
    );
    let manager = Manager::start_deploying_with(&toml, &[]).await;
    let (status, ready) = manager.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, 503, "{ready}");
    let failed = &ready["context"]["failed"];
    assert!(
        failed["commands-payloads"].as_str().unwrap().contains("alien-no-such-bucket"),
        "{ready}"
    );
    assert!(failed.get("commands-kv").is_none(), "the Firestore KV answers: {ready}");
    let log = manager.server().log().join("\n");
    assert!(log.contains("alien-no-such-bucket"), "{log}");
}
