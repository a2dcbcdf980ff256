//! Resource ids: `<prefix>_<28 chars [0-9a-z]>` (`spec/api.md`).
//!
//! The random part comes from the OS RNG and is mapped to the 36-character alphabet without bias
//! (rejection sampling), so 28 characters carry about 144 bits. This module is the one place that
//! knows the format: [`Id::new`] generates, [`Id::parse`] checks an id of a known kind.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The kinds of ids the API hands out, each with its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    /// A release, `rel_...`.
    Release,
    /// A deployment, `dep_...`.
    Deployment,
    /// A deployment group, `dg_...`.
    DeploymentGroup,
    /// A token (its record, not the secret), `tok_...`.
    Token,
    /// A remote command, `cmd_...`.
    Command,
}

impl IdKind {
    /// Every kind, for exhaustive tests and prefix lookup.
    pub const ALL: [IdKind; 5] =
        [Self::Release, Self::Deployment, Self::DeploymentGroup, Self::Token, Self::Command];

    /// The prefix written before the `_`, e.g. `"rel"`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Release => "rel",
            Self::Deployment => "dep",
            Self::DeploymentGroup => "dg",
            Self::Token => "tok",
            Self::Command => "cmd",
        }
    }

    /// A human name for messages, e.g. `"deployment group"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Deployment => "deployment",
            Self::DeploymentGroup => "deployment group",
            Self::Token => "token",
            Self::Command => "command",
        }
    }

    /// The format of its ids as a regular expression (for API documents), e.g.
    /// `^dep_[0-9a-z]{28}$`.
    pub fn pattern(self) -> String {
        format!("^{}_[0-9a-z]{{{}}}$", self.prefix(), Id::RANDOM_LEN)
    }

    /// The kind whose prefix starts `value` (`"dep_..."` -> deployment), if any.
    fn of(value: &str) -> Option<IdKind> {
        let (prefix, _) = value.split_once('_')?;
        Self::ALL.into_iter().find(|kind| kind.prefix() == prefix)
    }
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The prefix is missing or belongs to another kind.
    #[error(
        "{given:?} is not a {expected} id: expected the prefix \"{}_\"{}",
        expected.prefix(),
        found.map(|k| format!(" (this looks like a {k} id)")).unwrap_or_default()
    )]
    WrongPrefix {
        /// The kind that was expected.
        expected: IdKind,
        /// The kind the prefix belongs to, if it is a known one.
        found: Option<IdKind>,
        /// The input, shortened for messages.
        given: String,
    },
    /// The prefix is known but no kind was expected and none matched.
    #[error("{given:?} is not an id: expected one of the prefixes rel_, dep_, dg_, tok_, cmd_")]
    UnknownPrefix {
        /// The input, shortened for messages.
        given: String,
    },
    /// The random part does not have exactly [`Id::RANDOM_LEN`] characters.
    #[error(
        "{given:?} is not a valid {kind} id: expected {} characters after \"{}_\", got {length}",
        Id::RANDOM_LEN,
        kind.prefix()
    )]
    WrongLength {
        /// The kind of the id.
        kind: IdKind,
        /// How many characters follow the prefix.
        length: usize,
        /// The input, shortened for messages.
        given: String,
    },
    /// The random part contains a character outside `[0-9a-z]`.
    #[error(
        "{given:?} is not a valid {kind} id: {character:?} is not allowed; expected only [0-9a-z] after the prefix"
    )]
    InvalidCharacter {
        /// The kind of the id.
        kind: IdKind,
        /// The first offending character.
        character: char,
        /// The input, shortened for messages.
        given: String,
    },
}

/// A resource id such as `dep_3k9x...`: a known prefix, `_`, and 28 characters of `[0-9a-z]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Bytes at or above this value are rejected so that `byte % 36` is uniform (252 = 7 * 36).
const UNBIASED_LIMIT: u8 = 252;

impl Id {
    /// Number of random characters after the prefix.
    pub const RANDOM_LEN: usize = 28;

    /// Generates a new id of `kind` from the OS random number generator.
    ///
    /// # Panics
    ///
    /// When the operating system cannot provide random bytes, which leaves no safe way to make ids.
    /// Use [`Id::try_new`] to handle that case.
    pub fn new(kind: IdKind) -> Id {
        #[expect(clippy::expect_used, reason = "an OS without a working RNG cannot mint ids")]
        Self::try_new(kind).expect("the OS random number generator failed")
    }

    /// Generates a new id of `kind`, or the OS random number generator's error.
    pub fn try_new(kind: IdKind) -> Result<Id, getrandom::Error> {
        let mut id = String::with_capacity(kind.prefix().len() + 1 + Self::RANDOM_LEN);
        id.push_str(kind.prefix());
        id.push('_');
        let mut remaining = Self::RANDOM_LEN;
        let mut bytes = [0u8; 64];
        while remaining > 0 {
            getrandom::fill(&mut bytes)?;
            for byte in bytes.iter().filter(|b| **b < UNBIASED_LIMIT).take(remaining) {
                id.push(char::from(ALPHABET[usize::from(byte % 36)]));
                remaining -= 1;
            }
        }
        Ok(Id(id))
    }

    /// Checks that `value` is an id of `kind`.
    pub fn parse(kind: IdKind, value: &str) -> Result<Id, IdError> {
        let Some(random) = value.strip_prefix(kind.prefix()).and_then(|r| r.strip_prefix('_'))
        else {
            return Err(IdError::WrongPrefix {
                expected: kind,
                found: IdKind::of(value),
                given: shorten(value),
            });
        };
        let length = random.chars().count();
        if length != Self::RANDOM_LEN {
            return Err(IdError::WrongLength { kind, length, given: shorten(value) });
        }
        if let Some(character) =
            random.chars().find(|c| !(c.is_ascii_digit() || c.is_ascii_lowercase()))
        {
            return Err(IdError::InvalidCharacter { kind, character, given: shorten(value) });
        }
        Ok(Id(value.to_owned()))
    }

    /// Checks that `value` is an id of any kind (used when deserializing).
    pub fn parse_any(value: &str) -> Result<Id, IdError> {
        match IdKind::of(value) {
            Some(kind) => Self::parse(kind, value),
            None => Err(IdError::UnknownPrefix { given: shorten(value) }),
        }
    }

    /// The id as written, e.g. `"dep_..."`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this id is of `kind`.
    pub fn is(&self, kind: IdKind) -> bool {
        IdKind::of(&self.0) == Some(kind)
    }
}

/// Keeps error messages bounded when a caller sends a huge string as an id.
fn shorten(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Id {
    type Err = IdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse_any(value)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::parse_any(&value).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Id {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^(rel|dep|dg|tok|cmd)_[0-9a-z]{28}$"))
            .description(Some(
                "A prefix naming the kind (rel, dep, dg, tok, cmd), `_`, 28 characters [0-9a-z].",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Id {}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn new_ids_have_the_prefix_and_28_lowercase_alphanumerics() {
        for kind in IdKind::ALL {
            let id = Id::new(kind);
            let (prefix, random) = id.as_str().split_once('_').unwrap();
            assert_eq!(prefix, kind.prefix());
            assert_eq!(random.len(), 28);
            assert!(random.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()), "{id}");
            assert_eq!(Id::parse(kind, id.as_str()).unwrap(), id);
            assert!(id.is(kind));
        }
    }

    #[test]
    fn ten_thousand_ids_are_unique() {
        let ids: HashSet<Id> = (0..10_000).map(|_| Id::new(IdKind::Deployment)).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn every_character_of_the_alphabet_appears() {
        let seen: HashSet<char> = (0..200)
            .flat_map(|_| Id::new(IdKind::Token).as_str()[4..].chars().collect::<Vec<_>>())
            .collect();
        assert_eq!(seen.len(), 36);
    }

    #[test]
    fn parse_rejects_a_wrong_prefix_and_names_the_other_kind() {
        let dep = Id::new(IdKind::Deployment);
        let err = Id::parse(IdKind::Release, dep.as_str()).unwrap_err();
        assert!(matches!(
            err,
            IdError::WrongPrefix { expected: IdKind::Release, found: Some(IdKind::Deployment), .. }
        ));
        let message = err.to_string();
        assert!(message.contains("\"rel_\"") && message.contains("deployment id"), "{message}");

        let err = Id::parse(IdKind::Release, "xyz_0123456789abcdefghijklmnopqr").unwrap_err();
        assert!(matches!(err, IdError::WrongPrefix { found: None, .. }));
        assert!(Id::parse(IdKind::Release, "rel0123456789abcdefghijklmnopqr").is_err());
        assert!(Id::parse(IdKind::Deployment, "dg_0123456789abcdefghijklmnopqr").is_err());
    }

    #[test]
    fn parse_rejects_a_wrong_length() {
        for value in
            ["rel_", "rel_0123456789abcdefghijklmnopq", "rel_0123456789abcdefghijklmnopqrs"]
        {
            let err = Id::parse(IdKind::Release, value).unwrap_err();
            assert!(matches!(err, IdError::WrongLength { .. }), "{value}: {err}");
            assert!(err.to_string().contains("expected 28 characters"), "{err}");
        }
    }

    #[test]
    fn parse_rejects_uppercase_and_other_characters() {
        for (value, bad) in [
            ("rel_0123456789ABCDEFGHIJKLMNOPQR", 'A'),
            ("rel_0123456789abcdefghijklmnop-r", '-'),
            ("rel_0123456789abcdefghijklmnopqé", 'é'),
        ] {
            let err = Id::parse(IdKind::Release, value).unwrap_err();
            assert_eq!(
                err,
                IdError::InvalidCharacter {
                    kind: IdKind::Release,
                    character: bad,
                    given: value.to_owned()
                }
            );
            assert!(err.to_string().contains("[0-9a-z]"), "{err}");
        }
    }

    #[test]
    fn error_messages_shorten_huge_inputs() {
        let huge = "x".repeat(10_000);
        let message = Id::parse(IdKind::Command, &huge).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn serializes_as_a_string_and_deserializes_any_known_kind() {
        let id = Id::new(IdKind::DeploymentGroup);
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(json, serde_json::Value::String(id.to_string()));
        let back: Id = serde_json::from_value(json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<Id>("\"foo_0123456789abcdefghijklmnopqr\"").is_err());
        assert!(serde_json::from_str::<Id>("\"dep_short\"").is_err());
        assert_eq!("dg_0123456789abcdefghijklmnopqr".parse::<Id>().unwrap().as_str().len(), 31);
    }
}
