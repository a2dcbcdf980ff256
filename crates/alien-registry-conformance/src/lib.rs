//! OCI Distribution Specification v1.1 conformance checks, run over HTTP against any registry:
//! the embedded registry of alien-manager, CNCF Distribution, or anything else with a `/v2/` API.
//!
//! The crate owns the list of checks (one async function each, grouped by the specification's
//! four workflow categories: pull, push, content discovery, content management), the table of
//! checks CNCF Distribution is known to fail ([`DISTRIBUTION_FAILS`]), and a launcher for
//! Distribution ([`start_distribution`]) so one test can run the suite against both and compare.
//! Every check is independent: it makes its own repositories (`conformance/<check>-<random>`),
//! pushes the random content it needs, and reports what it expected and what came back. The crate
//! never panics on a registry's answer, talks to nothing but the target's base URL, and holds no
//! registry logic of its own.
//!
//! Where the specification lets a registry choose (400 or 404 for a bad name, tag deletion enabled
//! or not, which unknown code) a [`Strictness::Lenient`] run passes every allowed answer; a
//! [`Strictness::Strict`] run, for the embedded registry, demands the one answer it documents
//! (`shared/spec/registry.md`): the status and, in the error body, that OCI code and no other. A
//! few checks ask for more than the specification in both modes because the embedded registry
//! promises it: single-request uploads, `Link` pagination, `artifactType` filtering, rejecting
//! manifests that reference missing content, error codes on 4xx answers. Their docs say so. Every
//! refusal check first makes a request the registry must accept, so that a server refusing
//! everything passes nothing (`tests/vacuous.rs`).
//!
//! Main types: [`Target`] (where, as whom, how strictly), [`Strictness`], [`CheckResult`] (one
//! check's outcome), [`Category`], [`ExpectedFailure`].
//! Entry points: [`run_all`], [`checks`], [`results_table`], [`unexpected_outcomes`].

mod client;
mod content;
mod discovery;
mod distribution;
mod fixtures;
pub mod layout;
mod management;
mod pull;
mod push;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use distribution::{
    Distribution, distribution_binary, distribution_config, distribution_version,
    start_distribution,
};

use client::Registry;

/// A registry to check: its base URL (scheme, host, port; the API is at `/v2/`), credentials,
/// and how strictly its answers are read.
#[derive(Clone, Debug)]
pub struct Target {
    /// A label for reports, e.g. `alien-manager` or `distribution`.
    pub name: String,
    /// Scheme, host and port, e.g. `http://127.0.0.1:5000`.
    pub base_url: String,
    /// Username and password sent as HTTP Basic auth on every request, when set.
    pub credentials: Option<(String, String)>,
    /// Which answers pass where the specification leaves a choice.
    pub strictness: Strictness,
}

impl Target {
    /// A registry at `base_url`, without credentials, read leniently.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            credentials: None,
            strictness: Strictness::Lenient,
        }
    }

    /// The same target sending `user` and `password` as HTTP Basic auth.
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// The same target read with `strictness`.
    pub fn with_strictness(mut self, strictness: Strictness) -> Self {
        self.strictness = strictness;
        self
    }
}

/// How a run reads answers where the OCI specification lets a registry choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strictness {
    /// Every answer the specification allows passes: an invalid name or tag refused with 404 and
    /// any body, tag deletion disabled (400 or 405), an error body listing other codes besides an
    /// expected one, a registry without auth. For registries we compare with (CNCF
    /// Distribution).
    #[default]
    Lenient,
    /// The answers the embedded registry documents (`shared/spec/registry.md`): every refusal
    /// with its documented status and an error body whose codes are all expected ones (an invalid
    /// name is 400 `NAME_INVALID`, an invalid tag 400 `TAG_INVALID`, never a bare 404; a GET of
    /// deleted content 404 `MANIFEST_UNKNOWN` or `BLOB_UNKNOWN`), tag deletion supported (202),
    /// and credentials required: 401 `UNAUTHORIZED` with a `WWW-Authenticate` challenge without
    /// them. For alien-manager's own registry.
    Strict,
}

impl fmt::Display for Strictness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lenient => "lenient",
            Self::Strict => "strict",
        })
    }
}

/// The specification's workflow categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Fetching manifests and blobs.
    Pull,
    /// Uploading blobs and manifests.
    Push,
    /// Listing tags, referrers and repositories.
    ContentDiscovery,
    /// Deleting tags, manifests and blobs.
    ContentManagement,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::ContentDiscovery => "content discovery",
            Self::ContentManagement => "content management",
        })
    }
}

/// The outcome of one check.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// The check's category.
    pub category: Category,
    /// The check's name (unique across the suite).
    pub name: &'static str,
    /// `Ok` when the registry behaved as specified; else what was expected and what came back.
    pub outcome: Result<(), String>,
}

/// A check a registry is known to fail: which, why, and how its failure reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedFailure {
    /// The check's name.
    pub check: &'static str,
    /// Why the registry fails it.
    pub reason: &'static str,
    /// Text the check's failure message must contain: the answer that shows it failed for
    /// `reason`, and not on a setup step or a timeout on the way.
    pub detail: &'static str,
}

/// An [`ExpectedFailure`], written check, detail, reason as the table reads best.
const fn fails(check: &'static str, detail: &'static str, reason: &'static str) -> ExpectedFailure {
    ExpectedFailure { check, reason, detail }
}

/// Checks CNCF Distribution 2.8 (Debian's `docker-registry` 2.8.2) is known to fail, read
/// leniently, with why and how the failure reads.
pub const DISTRIBUTION_FAILS: &[ExpectedFailure] = &[
    fails(
        "blob_push_single_post",
        "expected status 201, got 202 Accepted",
        "single-request monolithic upload (POST ?digest= with the body) is optional in the spec; \
         Distribution ignores the body and opens a session (202)",
    ),
    fails(
        "blob_chunk_out_of_order",
        "expected status 416, got 202 Accepted",
        "Distribution 2.8 ignores Content-Range on PATCH and appends every chunk: no 416",
    ),
    fails(
        "blob_upload_unknown",
        "BLOB_UPLOAD_INVALID",
        "404 but with code BLOB_UPLOAD_INVALID: Distribution keeps upload state in a signed _state \
         query parameter and calls a session URL without one invalid rather than unknown",
    ),
    fails(
        "name_too_long",
        "expected status 400 with error code NAME_INVALID, got 500 Internal Server Error",
        "a name over 255 characters gets 500 UNKNOWN: Distribution's reference parser rejects it \
         but the error is not mapped to NAME_INVALID",
    ),
    fails(
        "tags_list",
        "in this order, got 200 OK",
        "Distribution 2.8 lists tags in the storage directory's order, unsorted, where the spec \
         requires lexical order",
    ),
    fails(
        "tags_list_n_last",
        "(fewer only with a Link header)",
        "Distribution 2.8 ignores n and last on tags/list and always returns every tag",
    ),
    fails(
        "tags_list_link",
        "?n=2: expected at most 2 entries",
        "Distribution 2.8 does not paginate tags/list: n=2 returns every tag, with no Link header",
    ),
    fails(
        "manifest_put_subject_header",
        "got no OCI-Subject header",
        "no referrers support, so no OCI-Subject header on PUT",
    ),
    fails(
        "referrers_list",
        "expected status 200, got 404 Not Found",
        "no referrers API: GET /v2/<name>/referrers/<digest> is 404",
    ),
    fails(
        "referrers_filter",
        "expected status 200, got 404 Not Found",
        "no referrers API: GET /v2/<name>/referrers/<digest> is 404",
    ),
    fails(
        "referrers_empty",
        "expected status 200, got 404 Not Found",
        "no referrers API: GET /v2/<name>/referrers/<digest> is 404",
    ),
    fails(
        "delete_referrer",
        "expected status 200, got 404 Not Found",
        "no referrers API: GET /v2/<name>/referrers/<digest> is 404",
    ),
];

/// Longest a single check may take before it is reported as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// What a check function returns.
type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One check of the suite.
pub(crate) struct Check {
    category: Category,
    name: &'static str,
    run: for<'a> fn(&'a Cx<'a>) -> CheckFuture<'a>,
}

/// Declares a module's `CHECKS` table from its check functions, named after them.
macro_rules! declare_checks {
    ($category:expr; $($check:ident),* $(,)?) => {
        /// This module's checks, in run order.
        pub(crate) const CHECKS: &[crate::Check] = &[
            $(crate::Check {
                category: $category,
                name: stringify!($check),
                run: {
                    fn run<'a>(cx: &'a crate::Cx<'a>) -> crate::CheckFuture<'a> {
                        Box::pin($check(cx))
                    }
                    run
                },
            }),*
        ];
    };
}
pub(crate) use declare_checks;

/// What a running check gets: the registry and its own name (for its repository names).
pub(crate) struct Cx<'a> {
    reg: &'a Registry,
    name: &'static str,
}

impl Cx<'_> {
    /// The registry under test.
    pub(crate) fn reg(&self) -> &Registry {
        self.reg
    }

    /// Whether the run demands the embedded registry's documented answers.
    pub(crate) fn strict(&self) -> bool {
        self.reg.strictness() == Strictness::Strict
    }

    /// A fresh repository name for this check: `conformance/<check>-<random>`.
    pub(crate) fn repo(&self) -> Result<String, String> {
        Ok(format!("conformance/{}-{}", self.name.replace('_', "-"), content::random_token()?))
    }
}

fn all_checks() -> impl Iterator<Item = &'static Check> {
    pull::CHECKS.iter().chain(push::CHECKS).chain(discovery::CHECKS).chain(management::CHECKS)
}

/// Every check of the suite, in run order, as (category, name).
pub fn checks() -> impl Iterator<Item = (Category, &'static str)> {
    all_checks().map(|c| (c.category, c.name))
}

/// Runs every check against `target`, one after the other, and returns one result per check.
pub async fn run_all(target: &Target) -> Vec<CheckResult> {
    let registry = match Registry::new(target) {
        Ok(registry) => registry,
        Err(e) => {
            return all_checks()
                .map(|c| CheckResult {
                    category: c.category,
                    name: c.name,
                    outcome: Err(e.clone()),
                })
                .collect();
        }
    };
    let mut results = Vec::new();
    for check in all_checks() {
        let cx = Cx { reg: &registry, name: check.name };
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (check.run)(&cx)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("did not finish within {} s", CHECK_TIMEOUT.as_secs())),
        };
        results.push(CheckResult { category: check.category, name: check.name, outcome });
    }
    results
}

/// A plain-text table of results: category, name, PASS/FAIL and the failure message.
pub fn results_table(results: &[CheckResult]) -> String {
    let name_width = results.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let category_width = 18;
    let mut out = format!("{:<category_width$}  {:<name_width$}  result\n", "category", "check");
    for r in results {
        let (verdict, detail) = match &r.outcome {
            Ok(()) => ("PASS", String::new()),
            Err(e) => ("FAIL", format!("  {e}")),
        };
        out.push_str(&format!(
            "{:<category_width$}  {:<name_width$}  {verdict}{detail}\n",
            r.category.to_string(),
            r.name
        ));
    }
    let failed = results.iter().filter(|r| r.outcome.is_err()).count();
    // Not "N passed, N failed": that line would read as a test runner's summary in CI logs.
    out.push_str(&format!("{} of {} checks pass\n", results.len() - failed, results.len()));
    out
}

/// Differences between `results` and a table of expected failures: a listed check that passed,
/// one that failed for another reason than listed (its message lacks the listed detail), an
/// unlisted check that failed, and a listed name that is no check at all. Empty when they agree.
pub fn unexpected_outcomes(
    results: &[CheckResult],
    expected_failures: &[ExpectedFailure],
) -> Vec<String> {
    let mut problems = Vec::new();
    for listed in expected_failures {
        let name = listed.check;
        if !checks().any(|(_, n)| n == name) {
            problems
                .push(format!("{name}: listed as an expected failure but there is no such check"));
        } else if !results.iter().any(|r| r.name == name) {
            problems.push(format!("{name}: listed as an expected failure but it did not run"));
        }
    }
    for r in results {
        let listed = expected_failures.iter().find(|f| f.check == r.name);
        match (&r.outcome, listed) {
            (Ok(()), Some(listed)) => problems.push(format!(
                "{}: passes now but is listed as an expected failure ({}); \
                 remove it from the list",
                r.name, listed.reason
            )),
            (Err(e), Some(listed)) if !e.contains(listed.detail) => problems.push(format!(
                "{}: fails, but not as listed (a message containing {:?}, because {}): {e}",
                r.name, listed.detail, listed.reason
            )),
            (Err(e), None) => problems.push(format!("{}: failed unexpectedly: {e}", r.name)),
            _ => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn check_names_are_unique_and_cover_every_category() {
        let mut names = HashSet::new();
        for (_, name) in checks() {
            assert!(names.insert(name), "duplicate check name {name}");
        }
        let categories: HashSet<Category> = checks().map(|(c, _)| c).collect();
        assert_eq!(categories.len(), 4);
    }

    #[test]
    fn expected_distribution_failures_name_real_checks_and_how_they_fail() {
        for listed in DISTRIBUTION_FAILS {
            assert!(checks().any(|(_, n)| n == listed.check), "{} is not a check", listed.check);
            assert!(!listed.reason.is_empty());
            assert!(!listed.detail.is_empty(), "{}: no failure text", listed.check);
            assert!(!listed.detail.starts_with("setup:"), "{}: a setup failure", listed.check);
        }
    }

    #[test]
    fn repository_names_follow_the_name_grammar() {
        let reg = Registry::new(&Target::new("t", "http://127.0.0.1:1")).unwrap();
        for (_, name) in checks() {
            let repo = Cx { reg: &reg, name }.repo().unwrap();
            for component in repo.split('/') {
                assert!(!component.is_empty(), "{repo}");
                assert!(component.chars().next().unwrap().is_ascii_alphanumeric(), "{repo}");
                assert!(component.chars().last().unwrap().is_ascii_alphanumeric(), "{repo}");
                assert!(
                    component
                        .chars()
                        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == '-'),
                    "{repo}"
                );
            }
        }
    }

    #[test]
    fn targets_are_lenient_unless_made_strict() {
        let target = Target::new("t", "http://127.0.0.1:1");
        assert_eq!(target.strictness, Strictness::Lenient);
        assert_eq!(target.credentials, None);
        let target = target.with_credentials("x", "secret").with_strictness(Strictness::Strict);
        assert_eq!(target.strictness, Strictness::Strict);
        assert_eq!(target.credentials, Some(("x".to_owned(), "secret".to_owned())));
    }

    fn result(name: &'static str, ok: bool) -> CheckResult {
        failed_with(name, if ok { None } else { Some("boom") })
    }

    fn failed_with(name: &'static str, error: Option<&str>) -> CheckResult {
        CheckResult {
            category: Category::Pull,
            name,
            outcome: error.map_or(Ok(()), |e| Err(e.to_owned())),
        }
    }

    fn listed(check: &'static str, detail: &'static str) -> ExpectedFailure {
        ExpectedFailure { check, reason: "a reason", detail }
    }

    #[test]
    fn comparison_reports_each_kind_of_disagreement() {
        let results =
            [result("blob_get", true), result("blob_head", false), result("referrers_list", true)];
        let problems = unexpected_outcomes(
            &results,
            &[
                listed("referrers_list", "got 404"),
                listed("no_such_check", "typo"),
                listed("blob_get_range", "not run"),
            ],
        );
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("no_such_check: ") && p.contains("no such check"))
        );
        assert!(
            problems.iter().any(|p| p.starts_with("blob_get_range: ") && p.contains("did not run"))
        );
        assert!(problems.iter().any(|p| p.starts_with("referrers_list: passes now")));
        assert!(problems.iter().any(|p| p.starts_with("blob_head: failed unexpectedly")));
        assert!(unexpected_outcomes(&[result("blob_get", true)], &[]).is_empty());
    }

    #[test]
    fn a_listed_check_failing_for_another_reason_is_unexpected() {
        let expected = [listed("referrers_list", "expected status 200, got 404 Not Found")];
        let as_listed = failed_with(
            "referrers_list",
            Some("GET /v2/r/referrers/sha256:1: expected status 200, got 404 Not Found"),
        );
        assert!(unexpected_outcomes(&[as_listed], &expected).is_empty());

        let setup = failed_with(
            "referrers_list",
            Some("setup: pushing blob sha256:1: POST /v2/r/blobs/uploads/: request failed"),
        );
        let problems = unexpected_outcomes(&[setup], &expected);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("referrers_list: fails, but not as listed"),
            "{problems:?}"
        );
        assert!(problems[0].contains("setup: pushing blob"), "the actual failure is shown");

        let timeout = failed_with("referrers_list", Some("did not finish within 120 s"));
        assert_eq!(unexpected_outcomes(&[timeout], &expected).len(), 1);
    }

    #[test]
    fn table_counts_passes_and_failures() {
        let table = results_table(&[result("blob_get", true), result("blob_head", false)]);
        assert!(table.contains("blob_head"));
        assert!(table.contains("FAIL  boom"));
        assert!(table.ends_with("1 of 2 checks pass\n"));
    }
}
