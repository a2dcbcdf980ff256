//! The store a test's manager runs on: SQLite in its state directory by default, or a
//! PostgreSQL of the test's own when `ALIEN_TEST_DATABASE=postgres` (`cargo xtask test` runs
//! the end-to-end scenarios a second time that way: one matrix, the same tests).

use alien_store_postgres::peer::PgPeer;

/// The variable choosing the store of the matrix run.
pub const MATRIX_VAR: &str = "ALIEN_TEST_DATABASE";

/// The store of one test: kept alive (its PostgreSQL running) for as long as the test holds it,
/// across restarts of the manager.
pub struct TestDatabase {
    peer: Option<PgPeer>,
    url: Option<String>,
}

impl TestDatabase {
    /// What `ALIEN_TEST_DATABASE` asks for: `sqlite` (or unset) or `postgres`; anything else
    /// fails the test.
    pub async fn from_env() -> TestDatabase {
        match std::env::var(MATRIX_VAR).as_deref() {
            Err(_) | Ok("" | "sqlite") => TestDatabase::sqlite(),
            Ok("postgres") => TestDatabase::postgres().await,
            Ok(other) => panic!("{MATRIX_VAR}={other}: expected sqlite or postgres"),
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

    /// Whether the store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.peer.is_some()
    }

    /// The manager's environment for this store (`ALIEN_DATABASE__URL` on PostgreSQL).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.url.iter().map(|url| ("ALIEN_DATABASE__URL", url.clone())).collect()
    }
}
