//! How values sit in columns, and how lists are paged: `alien_store::codec` (shared with the
//! other SQL backends), and the sealing of sensitive columns with the store's
//! [`Sealer`](crate::seal::Sealer) (`alien_store::seal`), bound to `table/column/row-id` so that a
//! sealed value cannot be moved to another row.

pub(crate) use alien_store::codec::*;
#[cfg(feature = "bench")]
pub(crate) use alien_store::seal::seal_column as seal;
pub(crate) use alien_store::seal::{reseal_column as reseal, token_aad, variable_aad};
