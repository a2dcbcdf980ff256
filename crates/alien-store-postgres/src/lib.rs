//! PostgreSQL backends of alien-manager's seams, for managers that run as several replicas on
//! one database (docs/scale-out.md): the commands KV ([`PostgresKv`], feature `commands`) and the
//! store traits of alien-store ([`PostgresStore`], feature `store`), and the signals between
//! replicas ([`PgSignals`], feature `signals`: `LISTEN/NOTIFY`). Each lives in a schema of its
//! own with its own migrations (`alien_commands`, `alien`), so both can share one database.
//!
//! With the `peer-tests` feature, [`peer`] starts Debian's PostgreSQL for the tests.

#[cfg(feature = "commands")]
pub mod kv;
#[cfg(feature = "peer-tests")]
pub mod peer;
pub mod pg;
#[cfg(feature = "signals")]
pub mod signals;
#[cfg(feature = "store")]
pub mod store;

#[cfg(feature = "commands")]
pub use kv::PostgresKv;
#[cfg(feature = "signals")]
pub use signals::PgSignals;
#[cfg(feature = "store")]
pub use store::PostgresStore;
