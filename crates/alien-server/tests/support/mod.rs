//! A manager with a real SQLite store and registry on 127.0.0.1, for the server's tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test crates

use std::path::Path;
use std::sync::Arc;

use alien_config::ManagerConfig;
use alien_core::{DeploymentEvent, Id};
use alien_server::ManagerBuilder;
use alien_store::Store;
use alien_store::{DeploymentPatch, DeploymentStore};
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};
use reqwest::Method;
use serde_json::{Value, json};

pub struct Api {
    pub base: String,
    pub admin: String,
    pub store: Arc<SqliteStore>,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Api {
    pub async fn start() -> Api {
        Api::start_with(None).await
    }

    /// A server whose platforms use `registries` (else the embedded registry).
    pub async fn start_with(registries: Option<alien_registry::ArtifactRegistries>) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::new(EncryptionKey::generate().unwrap());
        let store = Arc::new(SqliteStore::open(&dir.path().join("m.db"), sealer).await.unwrap());
        let admin =
            alien_server::bootstrap::first_run_admin(store.as_ref(), None).await.unwrap().unwrap();
        let mut config = ManagerConfig::default();
        config.server.host = "127.0.0.1".into();
        // A known port, so presigned URLs (built from base-url) point back at this server.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        config.server.port = port;
        config.server.base_url = Some(format!("http://127.0.0.1:{port}"));
        let dyn_store: Arc<dyn Store> = store.clone();
        let blobs = alien_registry::ObjectBlobStore::local(&dir.path().join("registry")).unwrap();
        let kv: Arc<dyn alien_commands::Kv> =
            Arc::new(alien_local::SqliteKv::open(&dir.path().join("commands_kv")).await.unwrap());
        let signer = alien_commands::UrlSigner::new(store.derive_key("commands url signing").await);
        let payloads: Arc<dyn alien_commands::PayloadStore> =
            Arc::new(alien_local::FsPayloadStore::new(
                dir.path().join("commands_storage"),
                format!("http://127.0.0.1:{port}"),
                signer.clone(),
            ));
        let engine = Arc::new(alien_commands::CommandEngine::new(
            kv.clone(),
            payloads.clone(),
            signer,
            format!("http://127.0.0.1:{port}"),
        ));
        // Telemetry is dropped after ingest: the server serves every route of its OpenAPI document.
        let recent = Arc::new(alien_telemetry::RecentLogs::default());
        let sink = Arc::new(alien_telemetry::DiscardSink::default());
        let ingestor =
            Arc::new(alien_telemetry::Ingestor::new(sink).with_recent_logs(recent.clone()));
        let mut builder = ManagerBuilder::new(config);
        if let Some(registries) = registries {
            builder = builder.artifact_registries(registries);
        }
        let bound = builder
            .store(dyn_store)
            .registry(Arc::new(blobs))
            .commands(engine, kv, payloads)
            .telemetry(ingestor, recent)
            .build()
            .bind()
            .await
            .unwrap();
        let base = format!("http://{}", bound.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bound.serve(async move {
            let _ = rx.await;
        }));
        Api { base, admin: admin.expose().to_owned(), store, dir, stop: Some(tx) }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method.clone(), path, Some(&self.admin), body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
        body
    }

    pub async fn group(&self, name: &str) -> (String, String) {
        let group =
            self.admin(Method::POST, "/v1/deployment-groups", Some(json!({"name": name}))).await;
        let id = group["id"].as_str().unwrap().to_owned();
        let token =
            self.admin(Method::POST, &format!("/v1/deployment-groups/{id}/tokens"), None).await;
        (id, token["token"].as_str().unwrap().to_owned())
    }

    pub async fn deployment(&self, group: &str, name: &str) -> (String, String) {
        let body = json!({"name": name, "platform": "local", "deploymentGroupId": group});
        let created = self.admin(Method::POST, "/v1/deployments", Some(body)).await;
        (
            created["deployment"]["id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        )
    }
}

pub fn fixtures_dir() -> std::path::PathBuf {
    match std::env::var_os("ALIEN_FIXTURES_DIR") {
        Some(dir) => dir.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    }
}

pub fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join(name)).unwrap()).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A running deployment of `valid-web.json` (one container `api`), driven there through the store
/// (the deployment loop is its own issue): (id, group token, deployment token).
pub async fn running(api: &Api) -> (String, String, String) {
    api.admin(
        Method::POST,
        "/v1/releases",
        Some(json!({"stack": {"local": fixture("valid-web.json")}})),
    )
    .await;
    let (group, group_token) = api.group("g").await;
    let (id, token) = api.deployment(&group, "d").await;
    let dep = Id::parse_any(&id).unwrap();
    let release =
        api.store.get_deployment(&dep).await.unwrap().unwrap().desired_release_id.unwrap();
    api.store
        .transition(
            &dep,
            DeploymentEvent::BeginProvisioning,
            DeploymentPatch { reason: "test".into(), ..Default::default() },
        )
        .await
        .unwrap();
    api.store
        .transition(
            &dep,
            DeploymentEvent::StepSucceeded,
            DeploymentPatch {
                current_release_id: Some(release),
                reason: "test".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (id, group_token, token)
}
