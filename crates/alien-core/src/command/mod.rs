//! Remote commands (`spec/commands.md`): the `arc.v1` wire types, the command state machine and
//! the rule for which container a command goes to.
//! The protocol engine lives in `alien-commands`; these types are here because the store keeps
//! command metadata and every layer speaks them.

pub mod state;
pub mod target;
pub mod wire;

pub use state::{CommandEvent, CommandState};
pub use target::{CommandTargetError, command_target};
