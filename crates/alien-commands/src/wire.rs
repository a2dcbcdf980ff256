//! The `arc.v1` wire types (defined in `alien_core::command`).

pub use alien_core::command::wire::*;
