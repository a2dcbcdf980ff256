//! `GET /install/agent.sh` (no auth): the POSIX sh script that installs and starts `alien-agent`
//! for this manager, from `[server] releases-url` (docs/operations.md, "Installing the agent").
//!
//! The script is `install/agent.sh` with this manager's base URL, releases URL and version put
//! in as single-quoted shell words; it downloads
//! `{releases-url}/alien-agent/{version}/alien-agent-{target}.tar.gz`, checks it against the
//! `.sha256` beside it, and installs nothing when either is missing or they disagree.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::builder::AppState;

const TEMPLATE: &str = include_str!("install/agent.sh");

/// `text` as the inside of a single-quoted sh word: `'` becomes `'\''`.
fn sh_quoted(text: &str) -> String {
    text.replace('\'', r"'\''")
}

/// The script for a manager at `manager_url` whose binaries are under `releases_url`.
pub fn agent_script(manager_url: &str, releases_url: &str, version: &str) -> String {
    TEMPLATE
        .replace("@MANAGER_URL@", &sh_quoted(manager_url.trim_end_matches('/')))
        .replace("@RELEASES_URL@", &sh_quoted(releases_url.trim_end_matches('/')))
        .replace("@VERSION@", &sh_quoted(version))
}

/// `GET /install/agent.sh`: the agent's install script (`curl -fsSL
/// {base}/install/agent.sh | sh -s -- --token TOKEN --name NAME`).
#[utoipa::path(get, path = "/install/agent.sh", tag = "operations", security(()),
    responses((status = 200, description = "A POSIX sh script", content_type = "text/x-shellscript", body = String)))]
pub async fn agent(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let server = &state.config.server;
    let script =
        agent_script(&server.effective_base_url(), &server.releases_url, env!("CARGO_PKG_VERSION"));
    (
        [
            (header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        script,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_values_are_single_quoted_words_whatever_they_hold() {
        let script = agent_script("https://m.example.com/", "https://r.example.com/x'y", "1.2.3");
        assert!(script.contains("manager_url='https://m.example.com'\n"), "{script}");
        assert!(script.contains(r"releases_url='https://r.example.com/x'\''y'"), "{script}");
        assert!(script.contains("version='1.2.3'\n"));
        for placeholder in ["@MANAGER_URL@", "@RELEASES_URL@", "@VERSION@"] {
            assert!(!script.contains(placeholder), "{placeholder} is filled");
        }
    }
}
