//! Releases: immutable snapshots of a stack per platform (`spec/api.md` "Releases").

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{FieldViolation, Id, Platform, Stack, stack::parse_release_stack};

/// Git information a release may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitMetadata {
    /// Commit hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    /// Branch or tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_ref: Option<String>,
    /// Commit message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_message: Option<String>,
}

/// `POST /v1/releases` body, before validation: stacks are kept as JSON so that every violation
/// of every stack can be reported at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRelease {
    /// One stack per platform (at least one).
    #[schema(value_type = Object)]
    pub stack: BTreeMap<Platform, Value>,
    /// Git information.
    #[serde(default)]
    pub git_metadata: Option<GitMetadata>,
    /// Free-form version label.
    #[serde(default)]
    pub version: Option<String>,
    /// Free-form description.
    #[serde(default)]
    pub description: Option<String>,
}

/// Longest accepted `version` and `description`.
pub const MAX_LABEL_LEN: usize = 1024;

impl CreateRelease {
    /// Parses and validates every stack; all violations at once, paths prefixed `stack.<platform>.`.
    pub fn validate(self) -> Result<NewRelease, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let mut stacks = BTreeMap::new();
        if self.stack.is_empty() {
            violations.push(FieldViolation::new(
                "stack",
                "a release needs at least one platform's stack",
            ));
        }
        for (platform, value) in &self.stack {
            match parse_release_stack(value) {
                Ok(stack) => {
                    stacks.insert(*platform, stack);
                }
                Err(found) => violations.extend(found.into_iter().map(|v| {
                    let path = if v.path.is_empty() {
                        format!("stack.{platform}")
                    } else {
                        format!("stack.{platform}.{}", v.path)
                    };
                    FieldViolation::new(path, v.message)
                })),
            }
        }
        for (field, value) in [("version", &self.version), ("description", &self.description)] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_LABEL_LEN) {
                violations.push(FieldViolation::new(
                    field,
                    format!("must be at most {MAX_LABEL_LEN} bytes"),
                ));
            }
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(NewRelease {
            stack: stacks,
            git_metadata: self.git_metadata,
            version: self.version,
            description: self.description,
        })
    }
}

/// A validated release, not yet stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRelease {
    /// One validated stack per platform.
    pub stack: BTreeMap<Platform, Stack>,
    /// Git information.
    pub git_metadata: Option<GitMetadata>,
    /// Version label.
    pub version: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// A stored release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// `rel_...` id.
    pub id: Id,
    /// One stack per platform.
    #[schema(value_type = Object)]
    pub stack: BTreeMap<Platform, Stack>,
    /// Git information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_metadata: Option<GitMetadata>,
    /// Version label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl Release {
    /// Whether the release has a stack for `platform`.
    pub fn has_platform(&self, platform: Platform) -> bool {
        self.stack.contains_key(&platform)
    }
}
