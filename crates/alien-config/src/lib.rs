//! Configuration of alien-manager: `alien-manager.toml`, environment variables and CLI flags.
//!
//! Owns the typed configuration ([`ManagerConfig`] and its sections and bindings), the layering
//! (defaults < file < environment < flags, with `figment`), validation with errors that name the
//! origin, key path and expectation, the `--init` template, the effective-value listing of
//! `config check`, and the generated reference `docs/configuration.md`. It never opens a
//! database, binds a port or creates a directory: callers exit on error before doing so.

pub mod effective;
pub mod error;
pub mod load;
pub mod model;
pub mod reference;
pub mod schema;
pub mod template;
mod validate;

pub use effective::{EffectiveValue, effective_values, render_effective};
pub use error::{ConfigError, ConfigIssue};
pub use load::{CliOverrides, DEFAULT_FILE, LoadedConfig, load, load_from, parse_toml};
pub use model::*;
pub use reference::reference_markdown;
pub use template::TEMPLATE;
