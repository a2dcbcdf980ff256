//! What the benchmarks share: a store in a temporary directory with its admin token, a
//! configuration on 127.0.0.1, serving a built manager, and a deployment to send as.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several benchmarks

pub mod report;

use std::sync::Arc;

use alien_config::ManagerConfig;
use alien_server::ManagerBuilder;
use alien_store::Store;
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};
use serde_json::{Value, json};

/// A fresh store and the configuration of a manager on a free 127.0.0.1 port.
pub struct Setup {
    /// Holds the database and the other state; removed on drop.
    pub dir: tempfile::TempDir,
    /// The store (concrete, for seeding).
    pub store: Arc<SqliteStore>,
    /// The first-run admin token.
    pub admin: String,
    /// `http://127.0.0.1:{port}`, also the configured base URL.
    pub base: String,
    /// The configuration to build with.
    pub config: ManagerConfig,
}

impl Setup {
    pub async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::new(EncryptionKey::generate().unwrap());
        let store = Arc::new(SqliteStore::open(&dir.path().join("m.db"), sealer).await.unwrap());
        let admin = alien_server::bootstrap::first_run_admin(store.as_ref(), None)
            .await
            .unwrap()
            .unwrap()
            .expose()
            .to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let mut config = ManagerConfig::default();
        config.server.host = "127.0.0.1".into();
        config.server.port = port;
        config.server.base_url = Some(base.clone());
        Setup { dir, store, admin, base, config }
    }

    /// The store as the builder takes it.
    pub fn dyn_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// A builder on this setup's configuration and store.
    pub fn builder(&self) -> ManagerBuilder {
        ManagerBuilder::new(self.config.clone()).store(self.dyn_store())
    }

    /// Binds and serves `builder` in the background.
    pub async fn serve(&self, builder: ManagerBuilder) {
        let bound = builder.build().bind().await.unwrap();
        tokio::spawn(bound.serve(std::future::pending()));
    }

    /// A group `bench` and a local deployment `d` in it: its id and token.
    pub async fn deployment(&self, client: &reqwest::Client) -> (String, String) {
        let post = |path: &str, body: Value| {
            client.post(format!("{}{path}", self.base)).bearer_auth(&self.admin).json(&body).send()
        };
        let group: Value = post("/v1/deployment-groups", json!({"name": "bench"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let body = json!({"name": "d", "platform": "local", "deploymentGroupId": group["id"]});
        let created: Value = post("/v1/deployments", body).await.unwrap().json().await.unwrap();
        (
            created["deployment"]["id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        )
    }
}
