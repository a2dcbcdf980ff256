//! The OCI conformance suite against our registry and CNCF Distribution in the same run: every
//! check passes on ours; Distribution fails exactly the checks listed (with reasons) in
//! `DISTRIBUTION_FAILS`, the places where we go beyond it.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use alien_registry_conformance::{
    DISTRIBUTION_FAILS, Target, distribution_version, results_table, run_all, start_distribution,
    unexpected_outcomes,
};
use support::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_ours_and_distribution() {
    let api = Api::start().await;
    let ours = Target {
        name: "alien-manager".into(),
        base_url: api.base.clone(),
        credentials: Some(("x".into(), api.admin.clone())),
    };
    let distribution = start_distribution()
        .await
        .unwrap_or_else(|e| panic!("cannot start CNCF Distribution: {e}"));
    let theirs = distribution.target();
    let (ours_results, theirs_results) = tokio::join!(run_all(&ours), run_all(&theirs));
    println!("alien-manager:\n{}", results_table(&ours_results));
    println!(
        "CNCF Distribution ({}):\n{}",
        distribution_version().unwrap_or_else(|e| e),
        results_table(&theirs_results)
    );
    let ours_problems = unexpected_outcomes(&ours_results, &[]);
    let theirs_problems = unexpected_outcomes(&theirs_results, DISTRIBUTION_FAILS);
    assert!(
        ours_problems.is_empty(),
        "our registry fails checks:\n  {}",
        ours_problems.join("\n  ")
    );
    assert!(
        theirs_problems.is_empty(),
        "Distribution's results differ from DISTRIBUTION_FAILS (logs in {}):\n  {}",
        distribution.log_dir.display(),
        theirs_problems.join("\n  ")
    );
}
