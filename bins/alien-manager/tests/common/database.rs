//! The store a test's manager runs on: SQLite in its state directory, or a PostgreSQL of the
//! test's own. [`store_matrix!`](crate::store_matrix) runs one scenario on both: one matrix, the
//! same test code.

use alien_store_postgres::peer::PgPeer;

/// Which store a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The SQLite file in the state directory (the default).
    Sqlite,
    /// A PostgreSQL started for the test (`ALIEN_DATABASE__URL`).
    Postgres,
}

tokio::task_local! {
    static STORE: StoreKind;
}

impl StoreKind {
    /// Runs `scenario` with managers it starts on this store.
    pub async fn scope<F: std::future::Future>(self, scenario: F) -> F::Output {
        STORE.scope(self, scenario).await
    }
}

/// The store of one test: kept alive (its PostgreSQL running) for as long as the test holds it,
/// across restarts of the manager.
pub struct TestDatabase {
    peer: Option<PgPeer>,
    url: Option<String>,
}

impl TestDatabase {
    /// The store of the running scenario ([`StoreKind::scope`]; SQLite outside one).
    pub async fn for_test() -> TestDatabase {
        match STORE.try_with(|kind| *kind).unwrap_or(StoreKind::Sqlite) {
            StoreKind::Sqlite => TestDatabase::sqlite(),
            StoreKind::Postgres => TestDatabase::postgres().await,
        }
    }

    /// The default: SQLite in the state directory.
    pub fn sqlite() -> TestDatabase {
        TestDatabase { peer: None, url: None }
    }

    /// A PostgreSQL started for this test, with an empty database `alien`.
    pub async fn postgres() -> TestDatabase {
        let peer = PgPeer::start().await.unwrap();
        peer.create_database("alien").await.unwrap();
        let url = peer.url_of("alien");
        TestDatabase { peer: Some(peer), url: Some(url) }
    }

    /// The database URL, on PostgreSQL.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The PostgreSQL server's process id, on PostgreSQL.
    pub fn server_pid(&self) -> Option<u32> {
        self.peer.as_ref().map(PgPeer::pid)
    }

    /// Whether the store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.peer.is_some()
    }

    /// The manager's environment for this store (`ALIEN_DATABASE__URL` on PostgreSQL).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.url.iter().map(|url| ("ALIEN_DATABASE__URL", url.clone())).collect()
    }
}
