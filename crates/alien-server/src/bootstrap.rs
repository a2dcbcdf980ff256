//! First run and recovery of admin access (`spec/config.md` "First run and admin key").
//!
//! On a store without any admin token the manager creates one (or takes `ALIEN_ADMIN_TOKEN`),
//! stores only its hash, and hands the raw value back once for printing. `admin-token reset`
//! revokes every admin token and mints a new one.

use alien_core::{RawToken, TokenType};
use alien_store::{NewToken, Store, StoreError};

/// Why bootstrapping failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// `ALIEN_ADMIN_TOKEN` does not have the admin token format.
    #[error("ALIEN_ADMIN_TOKEN: {0}")]
    BadSeed(String),
    /// The OS random generator failed.
    #[error("cannot generate a token: {0}")]
    Random(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates the first admin token when the store has none: `seed` (from `ALIEN_ADMIN_TOKEN`) if
/// given, else a random one. Returns the raw token to print once (`None` for a seeded token the
/// operator already knows, and when admin tokens exist).
pub async fn first_run_admin(
    store: &dyn Store,
    seed: Option<&str>,
) -> Result<Option<RawToken>, BootstrapError> {
    if store.count_tokens(TokenType::Admin).await? > 0 {
        return Ok(None);
    }
    match seed {
        Some(seed) => {
            let raw =
                RawToken::parse(TokenType::Admin, seed.trim()).map_err(BootstrapError::BadSeed)?;
            store.create_token(admin_token(Some(raw))?).await?;
            Ok(None)
        }
        None => {
            let token = admin_token(None)?;
            let raw = token.raw.clone();
            store.create_token(token).await?;
            Ok(Some(raw))
        }
    }
}

/// Revokes every admin token and returns a new one.
pub async fn reset_admin(store: &dyn Store) -> Result<RawToken, BootstrapError> {
    let token = admin_token(None)?;
    let raw = token.raw.clone();
    store.revoke_admin_tokens().await?;
    store.create_token(token).await?;
    Ok(raw)
}

fn admin_token(raw: Option<RawToken>) -> Result<NewToken, BootstrapError> {
    NewToken::admin(raw).map_err(|e| BootstrapError::Random(e.to_string()))
}

/// The lines printed with a new admin token.
pub fn admin_token_banner(base_url: &str, token: &RawToken) -> String {
    format!(
        "alien-manager admin token (shown once; store it now):\n\nexport ALIEN_MANAGER_URL={base_url}\nexport ALIEN_API_KEY={}\n",
        token.expose()
    )
}
