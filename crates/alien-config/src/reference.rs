//! `docs/configuration.md`, generated from the config types (`cargo xtask docs` writes it; a test
//! fails when the committed file differs).

use std::fmt::Write;

use serde_json::Value;

use crate::schema::{SHORT_ENV, env_names, is_secret, sections};

/// The configuration reference in Markdown.
pub fn reference_markdown() -> String {
    let mut md = String::new();
    md.push_str("# Configuration reference\n\n");
    md.push_str("<!-- Generated from crates/alien-config by `cargo xtask docs`; do not edit by hand. -->\n\n");
    md.push_str(
        "alien-manager reads, lowest to highest priority: built-in defaults, the TOML file \
         (`--config/-c PATH`, else `./alien-manager.toml` if present), environment variables, \
         command-line flags. Unknown sections and keys are errors. `alien-manager serve --init` \
         prints a commented template; `alien-manager config check` prints the effective values \
         and where each came from.\n\n",
    );
    md.push_str(
        "Every key can be set as `ALIEN_<SECTION>__<KEY>` (upper case, `-` as `_`; binding \
         fields in snake case, e.g. `ALIEN_COMMANDS__KV__TABLE_NAME`). The short names ",
    );
    let short: Vec<String> = SHORT_ENV.iter().map(|(n, _)| format!("`{n}`")).collect();
    md.push_str(&short.join(", "));
    md.push_str(
        " of the public reference also work and win over the long form when both are set. \
         Secrets (marked below) are redacted wherever configuration is shown.\n",
    );
    for section in sections() {
        let _ = write!(md, "\n## `[{}]`\n\n{}\n", section.name, section.description);
        if !section.keys.is_empty() {
            md.push_str(
                "\n| key | type | default | environment | description |\n|---|---|---|---|---|\n",
            );
            for key in &section.keys {
                let name = key.path.split_once('.').map_or(key.path.as_str(), |(_, k)| k);
                let default = match &key.default {
                    Some(Value::String(s)) => format!("`\"{s}\"`"),
                    Some(v) => format!("`{v}`"),
                    None => "(none)".to_owned(),
                };
                let env: Vec<String> =
                    env_names(&key.path).iter().map(|n| format!("`{n}`")).collect();
                let secret = if is_secret(&key.path) { " **Secret.**" } else { "" };
                let _ = writeln!(
                    md,
                    "| `{name}` | {} | {default} | {} | {}{secret} |",
                    key.kind.describe(),
                    env.join(", "),
                    key.description
                );
            }
        }
        for binding in &section.bindings {
            let _ = write!(
                md,
                "\n### `{}` (binding)\n\n{} Environment: `{}__SERVICE` and `{}__<FIELD>`.\n",
                binding.path,
                binding.description,
                env_names(&binding.path)[0],
                env_names(&binding.path)[0],
            );
            for variant in &binding.variants {
                let _ = write!(
                    md,
                    "\n`service = \"{}\"`: {}\n\n",
                    variant.service, variant.description
                );
                if variant.fields.is_empty() {
                    continue;
                }
                md.push_str("| field | type | required | description |\n|---|---|---|---|\n");
                for field in &variant.fields {
                    let _ = writeln!(
                        md,
                        "| `{}` | {} | {} | {} |",
                        field.name,
                        field.kind.describe(),
                        if field.required { "yes" } else { "no" },
                        field.description
                    );
                }
            }
        }
    }
    md
}
