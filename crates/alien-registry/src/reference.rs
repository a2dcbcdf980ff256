//! Repository names, tags and digests exactly as the OCI distribution specification defines them.

use std::fmt;

use crate::error::RegistryError;

/// Longest repository name.
pub const MAX_NAME_LEN: usize = 255;

/// A repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Parses a name, or `NAME_INVALID`.
    pub fn parse(name: &str) -> Result<RepoName, RegistryError> {
        if name.len() > MAX_NAME_LEN || !follows_name_grammar(name) {
            return Err(RegistryError::name_invalid(name));
        }
        Ok(RepoName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` follows the repository-name grammar (any length; [`RepoName::parse`] also
/// bounds it to [`MAX_NAME_LEN`]).
pub fn follows_name_grammar(name: &str) -> bool {
    !name.is_empty() && name.split('/').all(valid_component)
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or one or more `-`.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "."
            || sep == "_"
            || sep == "__"
            || (!sep.is_empty() && sep.bytes().all(|b| b == b'-'));
        if !ok {
            return false;
        }
    }
    true
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A digest algorithm the registry verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, 64 hex characters.
    Sha256,
    /// SHA-512, 128 hex characters.
    Sha512,
}

impl Algorithm {
    /// The name in digests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

/// A content digest `algorithm:hex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase), or `DIGEST_INVALID`.
    pub fn parse(value: &str) -> Result<Digest, RegistryError> {
        let (alg, hex) =
            value.split_once(':').ok_or_else(|| RegistryError::digest_invalid(value))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(RegistryError::digest_invalid(value)),
        };
        if hex.len() != algorithm.hex_len()
            || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(RegistryError::digest_invalid(value));
        }
        Ok(Digest { algorithm, hex: hex.to_owned() })
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest { algorithm: Algorithm::Sha256, hex: hex::encode(sha2::Sha256::digest(bytes)) }
    }

    /// Builds a digest from an algorithm and its raw output.
    pub fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Digest {
        Digest { algorithm, hex: hex::encode(raw) }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

/// What a manifest URL names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A tag.
    Tag(String),
    /// A digest.
    Digest(Digest),
}

impl Reference {
    /// A digest if it contains `:`, else a tag; invalid ones are errors.
    pub fn parse(value: &str) -> Result<Reference, RegistryError> {
        if value.contains(':') {
            Digest::parse(value).map(Reference::Digest)
        } else if valid_tag(value) {
            Ok(Reference::Tag(value.to_owned()))
        } else {
            Err(RegistryError::tag_invalid(value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_grammar() {
        for ok in ["a", "library/ubuntu", "a.b/c_d/e__f/g-h/i---j", "x0/1y", &"a".repeat(255)] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "a-",
            "-a",
            "a..b",
            "a___b",
            "a_-b",
            "_a",
            "a b",
            &"a".repeat(256),
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_follow_the_grammar() {
        for ok in ["latest", "v1.0", "_x", "A-b.c_d", &"a".repeat(128)] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in ["", ".a", "-a", "a/b", "a:b", &"a".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn digests_are_checked() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(128))).is_ok());
        for bad in [
            "sha256:abc",
            "md5:00",
            "sha256",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(Reference::parse("v1").unwrap(), Reference::Tag(_)));
        assert!(Reference::parse("bad tag").is_err());
    }
}
