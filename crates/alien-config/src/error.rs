//! Configuration errors: each names where the value came from, the key path and what was expected.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` names a file that does not exist.
    #[error("config file {} does not exist (given with --config)", .0.display())]
    FileNotFound(PathBuf),
    /// One or more values are wrong.
    #[error("{}", render(.0))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The individual problems (one for `FileNotFound`).
    pub fn issues(&self) -> Vec<ConfigIssue> {
        match self {
            Self::FileNotFound(path) => vec![ConfigIssue {
                origin: "--config".to_owned(),
                key: String::new(),
                message: format!("{} does not exist", path.display()),
            }],
            Self::Invalid(issues) => issues.clone(),
        }
    }
}

/// One wrong value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where it came from: a file path, `environment variable PORT`, `flag --port`, `default`.
    pub origin: String,
    /// Dotted key path, e.g. `artifact-registry.aws.repositoryPrefix`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

fn render(issues: &[ConfigIssue]) -> String {
    let lines: Vec<String> = issues.iter().map(|i| format!("  {i}")).collect();
    format!("invalid configuration:\n{}", lines.join("\n"))
}
