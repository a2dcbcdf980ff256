//! API tokens (`spec/api.md` "Tokens and auth"): kinds, the raw format, and how they are stored.
//!
//! A raw token is `<prefix><40 lowercase hex chars>` from the OS RNG: `ax_admin_`, `ax_dg_`,
//! `ax_deploy_`. Only its SHA-256 hex digest and its first 12 characters are stored; the raw token
//! is shown once, at creation. This module is the one place that knows the format.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Id;

/// Number of random hex characters after the prefix.
pub const RANDOM_HEX_LEN: usize = 40;
/// Number of leading characters kept as the displayable key prefix.
pub const KEY_PREFIX_LEN: usize = 12;

/// What a token is allowed to act as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TokenType {
    /// Workspace admin.
    Admin,
    /// Deployer of one deployment group.
    DeploymentGroup,
    /// Manager of one deployment.
    Deployment,
}

impl TokenType {
    /// Every kind.
    pub const ALL: [TokenType; 3] = [Self::Admin, Self::DeploymentGroup, Self::Deployment];

    /// The raw token prefix of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Admin => "ax_admin_",
            Self::DeploymentGroup => "ax_dg_",
            Self::Deployment => "ax_deploy_",
        }
    }

    /// The wire name (`admin`, `deployment-group`, `deployment`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::DeploymentGroup => "deployment-group",
            Self::Deployment => "deployment",
        }
    }

    /// The kind whose format `raw` has, if any.
    pub fn of_raw(raw: &str) -> Option<TokenType> {
        Self::ALL.into_iter().find(|kind| {
            raw.strip_prefix(kind.prefix()).is_some_and(|rest| {
                rest.len() == RANDOM_HEX_LEN
                    && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
        })
    }
}

impl std::fmt::Display for TokenType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A freshly generated raw token. Its `Debug` never shows the secret part.
#[derive(Clone, PartialEq, Eq)]
pub struct RawToken(String);

impl std::fmt::Debug for RawToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawToken({}…)", self.key_prefix())
    }
}

impl RawToken {
    /// A new random token of `kind`.
    pub fn generate(kind: TokenType) -> Result<RawToken, getrandom::Error> {
        let mut bytes = [0u8; RANDOM_HEX_LEN / 2];
        getrandom::fill(&mut bytes)?;
        Ok(RawToken(format!("{}{}", kind.prefix(), hex::encode(bytes))))
    }

    /// A token given by a user (e.g. `ALIEN_ADMIN_TOKEN`), checked against the format of `kind`.
    pub fn parse(kind: TokenType, raw: &str) -> Result<RawToken, String> {
        if TokenType::of_raw(raw) == Some(kind) {
            Ok(RawToken(raw.to_owned()))
        } else {
            Err(format!(
                "expected `{}` followed by {RANDOM_HEX_LEN} lowercase hex characters",
                kind.prefix()
            ))
        }
    }

    /// The secret itself: return it to the caller once, or seal it; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 hex of the whole token: what is stored and looked up.
    pub fn hash(&self) -> String {
        hash_token(&self.0)
    }

    /// The first 12 characters, safe to show.
    pub fn key_prefix(&self) -> String {
        self.0.chars().take(KEY_PREFIX_LEN).collect()
    }
}

/// SHA-256 hex of a presented token.
pub fn hash_token(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// A stored token (never the raw value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// `tok_...` id.
    pub id: Id,
    /// Kind.
    pub token_type: TokenType,
    /// First 12 characters of the raw token.
    pub key_prefix: String,
    /// SHA-256 hex of the raw token.
    #[serde(skip)]
    pub key_hash: String,
    /// Group a group token (or a deployment token's deployment) belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_group_id: Option<Id>,
    /// Deployment of a deployment token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<Id>,
    /// Optional label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When it was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it stops working, if ever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Last time it authenticated a request (updated in batches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_documented_format() {
        for kind in TokenType::ALL {
            let token = RawToken::generate(kind).unwrap();
            assert!(token.expose().starts_with(kind.prefix()));
            assert_eq!(token.expose().len(), kind.prefix().len() + RANDOM_HEX_LEN);
            assert_eq!(TokenType::of_raw(token.expose()), Some(kind));
            assert_eq!(token.key_prefix().len(), KEY_PREFIX_LEN);
            assert_eq!(token.hash().len(), 64);
            assert!(!format!("{token:?}").contains(&token.expose()[KEY_PREFIX_LEN..]));
        }
        let a = RawToken::generate(TokenType::Admin).unwrap();
        let b = RawToken::generate(TokenType::Admin).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn malformed_tokens_are_no_kind() {
        for raw in [
            "",
            "ax_admin_",
            "ax_admin_0123456789abcdef0123456789abcdef0123456",
            "ax_admin_0123456789ABCDEF0123456789abcdef01234567",
            "ax_other_0123456789abcdef0123456789abcdef01234567",
            "ax_admin_0123456789abcdef0123456789abcdef0123456g",
        ] {
            assert_eq!(TokenType::of_raw(raw), None, "{raw}");
        }
        assert!(
            RawToken::parse(TokenType::Admin, "ax_dg_0123456789abcdef0123456789abcdef01234567")
                .is_err()
        );
        assert!(
            RawToken::parse(TokenType::Admin, "ax_admin_0123456789abcdef0123456789abcdef01234567")
                .is_ok()
        );
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
