//! Command states and their transition table (defined in `alien_core::command`).

pub use alien_core::command::state::*;
