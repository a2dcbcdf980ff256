//! The remote-commands protocol `arc.v1`: a vendor invokes a named command on a deployment's
//! container; a receiver leases it, runs it and responds; the caller polls its status.
//!
//! Owns the wire types ([`wire`]), the state machine ([`state`], one transition table), the
//! storage seams [`Kv`] (command state) and [`PayloadStore`] (large payloads) with their contract
//! suites (feature `contract-tests`, so release binaries do not carry them), and manager-signed URLs ([`signing`]). It never talks HTTP to clients itself and never
//! knows which backend implements a seam: the server routes requests here, the binary chooses
//! backends (`alien-local` by default).

pub mod engine;
pub mod kv;
#[cfg(feature = "contract-tests")]
pub mod kv_contract;
pub mod payload;
#[cfg(feature = "contract-tests")]
pub mod payload_contract;
#[cfg(feature = "receiver")]
pub mod receiver;
pub mod signing;
pub mod state;
pub mod wire;

pub use engine::{CommandEngine, CommandError, LeaseBounds};
pub use kv::{BatchOutcome, Kv, KvEntry, KvError, KvWrite, PutCondition};
pub use payload::{PayloadError, PayloadStore, PayloadStream};
pub use signing::UrlSigner;
pub use state::{CommandEvent, CommandState};
