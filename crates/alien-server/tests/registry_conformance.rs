//! The OCI conformance suite against our registry, read strictly (the documented status and OCI
//! error code of every refusal): it needs no peer, so plain `cargo test` runs it. With the
//! `peer-tests` feature, the same suite runs against CNCF Distribution, read leniently, which
//! must fail exactly the checks listed in `DISTRIBUTION_FAILS`, each as listed: the places where
//! we go beyond it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use alien_registry_conformance::{Strictness, Target, results_table, run_all, unexpected_outcomes};
use support::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_registry_passes_every_check_read_strictly() {
    let api = Api::start().await;
    let ours = Target::new("alien-manager", api.base.clone())
        .with_credentials("x", api.admin.clone())
        .with_strictness(Strictness::Strict);
    let results = run_all(&ours).await;
    println!("alien-manager ({}):\n{}", ours.strictness, results_table(&results));
    let problems = unexpected_outcomes(&results, &[]);
    assert!(problems.is_empty(), "our registry fails checks:\n  {}", problems.join("\n  "));
}

/// Fails (never skips) when Distribution cannot be started.
#[cfg(feature = "peer-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_fails_exactly_the_listed_checks() {
    use alien_registry_conformance::{
        DISTRIBUTION_FAILS, distribution_version, start_distribution,
    };

    let distribution = start_distribution()
        .await
        .unwrap_or_else(|e| panic!("cannot start CNCF Distribution: {e}"));
    let theirs = distribution.target();
    let results = run_all(&theirs).await;
    println!(
        "CNCF Distribution ({}, {}):\n{}",
        distribution_version().unwrap_or_else(|e| e),
        theirs.strictness,
        results_table(&results)
    );
    let problems = unexpected_outcomes(&results, DISTRIBUTION_FAILS);
    assert!(
        problems.is_empty(),
        "Distribution's results differ from DISTRIBUTION_FAILS (logs in {}):\n  {}",
        distribution.log_dir.display(),
        problems.join("\n  ")
    );
}
