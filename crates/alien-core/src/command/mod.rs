//! Remote commands (`spec/commands.md`): the `arc.v1` wire types and the command state machine.
//! The protocol engine lives in `alien-commands`; these types are here because the store keeps
//! command metadata and every layer speaks them.

pub mod state;
pub mod wire;

pub use state::{CommandEvent, CommandState};
