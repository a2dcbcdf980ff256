//! The API against its own document: schemathesis (from PyPI, in the peers' virtualenv that
//! `cargo xtask setup` makes) runs every check it has against the real binary's `/openapi.json`,
//! with a group, a deployment and an admin token: no server error, every answer's status and
//! body as documented, requests the document allows accepted and the ones it forbids refused.
//! The exceptions, each with its reason, are in `tests/schemathesis/schemathesis.toml`.
//!
//! The run is seeded (`ALIEN_SCHEMATHESIS_SEED`, default 1) so that CI is repeatable; another
//! seed explores other requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::Manager;

fn peer(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_its_document_says_to_every_kind_of_token() {
    let schemathesis = peer("../../target/peers/venv/bin/schemathesis");
    let config = peer("tests/schemathesis/schemathesis.toml");
    let manager = Manager::start().await;
    let (group, group_token) = manager.group("g").await;
    let (_, deployment_token) = manager.deployment(&group, "d").await;
    let seed = std::env::var("ALIEN_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".to_owned());
    // The admin last: its stateful phase may revoke the other tokens.
    for (who, token) in
        [("group", group_token), ("deployment", deployment_token), ("admin", manager.admin.clone())]
    {
        let out = tokio::process::Command::new(&schemathesis)
            .arg("--config-file")
            .arg(&config)
            .args(["run", &format!("{}/openapi.json", manager.base)])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "all", "--max-examples", "20", "--seed", &seed, "--no-color"])
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!("cannot start {} (run `cargo xtask setup`): {e}", schemathesis.display())
            });
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis with the {who} token, seed {seed}, found failures:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A run that tested nothing would pass too: it must have generated cases.
        let summary = report.lines().find(|l| l.contains(" generated, ")).unwrap_or_default();
        let generated: u64 =
            summary.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(generated > 1000, "schemathesis with the {who} token ran too little: {summary:?}");
    }
}
