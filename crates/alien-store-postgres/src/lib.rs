//! PostgreSQL backends of alien-manager's seams, for managers that run as several replicas on
//! one database (docs/scale-out.md): the commands KV ([`PostgresKv`], feature `commands`) now;
//! the store traits are to come (issue 19).
//!
//! With the `peer-tests` feature, [`peer`] starts Debian's PostgreSQL for the tests.

#[cfg(feature = "commands")]
pub mod kv;
#[cfg(feature = "peer-tests")]
pub mod peer;

#[cfg(feature = "commands")]
pub use kv::PostgresKv;
