//! Runs the whole suite against CNCF Distribution (`docker-registry`) and checks that it fails
//! exactly the checks listed in `DISTRIBUTION_FAILS`: a check it now passes, or a new failure, is
//! a test failure. A missing `docker-registry` binary fails the test; it is never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_registry_conformance::{
    DISTRIBUTION_FAILS, distribution_version, results_table, run_all, start_distribution,
    unexpected_outcomes,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_fails_exactly_the_listed_checks() {
    let distribution = match start_distribution().await {
        Ok(d) => d,
        Err(e) => panic!("cannot start CNCF Distribution: {e}"),
    };
    let version = distribution_version().unwrap_or_else(|e| e);
    let results = run_all(&distribution.target()).await;
    println!(
        "Distribution ({version}) at {}, logs in {}",
        distribution.base_url,
        distribution.log_dir.display()
    );
    println!("{}", results_table(&results));
    let problems = unexpected_outcomes(&results, DISTRIBUTION_FAILS);
    assert!(
        problems.is_empty(),
        "Distribution's results differ from DISTRIBUTION_FAILS:\n  {}",
        problems.join("\n  ")
    );
}
