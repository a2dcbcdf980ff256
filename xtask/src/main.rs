//! `cargo xtask setup|test|fuzz|docs|bench|image`: the developer tasks of the workspace.
//!
//! `test` is what CI runs (`.ci/run`): formatting, clippy with warnings denied, cargo-deny, every
//! fuzz target for a few seconds, and every test, ending with the test runner's summary. `setup`
//! installs what the tests need and is idempotent; `fuzz` runs the fuzz targets (`fuzz/`) longer;
//! `docs` regenerates the files that are generated from code; `image` builds the test
//! application's or the manager's OCI image without a container daemon (and pushes it); `dist`
//! writes the release archives `[server] releases-url` serves.

mod dist;
mod fuzz;
mod image;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("test") => test(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("docs") => docs(args.get(1).map(String::as_str) == Some("--check")),
        Some("bench") => {
            let flag = |name: &str| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .map(String::as_str)
            };
            let name = args.get(1).map(String::as_str).filter(|n| !n.starts_with("--"));
            match flag("--database") {
                Some("postgres") => bench_scale(name, flag("--replicas")),
                Some(other) => Err(format!("--database {other}: expected postgres")),
                None => bench(name),
            }
        }
        Some("image") => image::image(&args[1..]),
        Some("dist") => dist::dist(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 setup          install what the tests need (cargo-deny, cargo-fuzz)\n  \
                 test [ARGS]    fmt check, clippy -D warnings, cargo deny, each fuzz target for 10s, all tests\n                 \
                 (ARGS go to the test runner)\n  \
                 fuzz [TARGET] [--seconds N]\n                 \
                 build the fuzz targets (fuzz/) and run each (or TARGET) for N seconds (default 60);\n                 \
                 targets: stack, config, oci_manifest, oci_reference, otlp, sync, command_wire\n  \
                 bench [NAME]   run benchmarks (all, start, api, fleet, commands, registry, telemetry), each with a reference;\n                 \
                 writes target/bench/report.json (all: docs/performance.md too)\n                 \
                 bench fleet|commands|api --database postgres [--replicas N]\n                 \
                 the same load on SQLite, PostgreSQL and N replicas (default 3) behind nginx, side by side\n  \
                 docs [--check] regenerate docs/configuration.md and docs/openapi.json (or check them)\n  \
                 image hello-app|manager [--push HOST:PORT/REPO:TAG [--creds USER:TOKEN]]\n                 \
                 build the test app's (target/hello-app/oci) or the manager's OCI image\n                 \
                 (target/images/alien-manager/oci) and push it with skopeo\n  \
                 dist           static release archives of the binaries in the releases-url layout (target/dist)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(root());
    cmd
}

fn run(step: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("==> {step}");
    let start = Instant::now();
    let status = cmd.status().map_err(|e| format!("{step}: cannot start: {e}"))?;
    eprintln!(
        "<== {step}: {} in {:.1}s",
        if status.success() { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    if status.success() { Ok(()) } else { Err(format!("{step} failed ({status})")) }
}

fn has_cargo_subcommand(name: &str) -> bool {
    cargo().args([name, "--version"]).output().is_ok_and(|o| o.status.success())
}

/// Debian packages the peer tests run against (`spec/testing.md`): command -> package.
const APT_PEERS: [(&str, &str); 14] = [
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("podman", "podman"),
    ("runc", "runc"),
    ("slirp4netns", "slirp4netns"),
    // Test certificates for the manager's own TLS (tests/security.rs).
    ("openssl", "openssl"),
    // The agent install one-liner (tests/install.rs).
    ("curl", "curl"),
    // Runs the Firestore emulator's jar (alien-gcp).
    ("java", "default-jre-headless"),
    // Runs Azurite (alien-azure).
    ("npm", "npm"),
    // Stop PostgreSQL peers (`kill -QUIT`) and start them as `nobody` when root (alien-store-postgres).
    ("kill", "procps"),
    ("setpriv", "util-linux"),
    // The load balancer in front of several manager replicas (tests/scale_out.rs).
    ("nginx", "nginx-light"),
    // The docker CLI against podman's Docker-compatible service (tests/container_api.rs); the
    // machine image has it, Debian's docker.io brings it elsewhere.
    ("docker", "docker.io"),
];

/// The Firestore emulator's jar (alien-gcp's KV tests): part of the machine image, from Google's
/// `google-cloud-cli-firestore-emulator` package (not in Debian).
const FIRESTORE_JAR: &str =
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar";

/// Azurite (alien-azure's Blob and Table peer), pinned, in `target/peers/node_modules`.
const AZURITE: &str = "azurite@3.35.0";

/// npm packages of the peers (`target/peers/node_modules`), installed where missing.
fn node_peers() -> Result<(), String> {
    let peers = root().join("target/peers");
    let bin = peers.join("node_modules/.bin/azurite");
    let version = std::fs::read_to_string(peers.join("node_modules/azurite/package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json["version"].as_str().map(str::to_owned));
    if bin.exists() && version.as_deref() == AZURITE.split('@').nth(1) {
        eprintln!("node peers: present ({AZURITE})");
        return Ok(());
    }
    std::fs::create_dir_all(&peers).map_err(|e| format!("{}: {e}", peers.display()))?;
    let mut install = Command::new("npm");
    install.args(["install", "--no-audit", "--no-fund", "--prefix"]).arg(&peers).arg(AZURITE);
    run(&format!("npm install {AZURITE}"), install)
}

/// Says where the Firestore emulator comes from when it is missing (a test needing it fails).
fn firestore_emulator() -> Result<(), String> {
    let jar = std::env::var_os("ALIEN_FIRESTORE_EMULATOR_JAR")
        .map_or_else(|| PathBuf::from(FIRESTORE_JAR), PathBuf::from);
    if jar.exists() {
        eprintln!("firestore emulator: present ({})", jar.display());
        return Ok(());
    }
    Err(format!(
        "the Firestore emulator is missing ({}): install `google-cloud-cli-firestore-emulator` \
         from Google's apt repository (https://cloud.google.com/sdk/docs/install#deb), or set \
         ALIEN_FIRESTORE_EMULATOR_JAR to its jar",
        jar.display()
    ))
}

/// Python packages of the peers' virtualenv (`target/peers/venv`). schemathesis is pinned: its
/// checks and generators change between versions (`tests/schema.rs`); so is moto (the AWS
/// emulator: `xtask/peers/moto_serial.py` patches its server, docs/research/aws-moto) and
/// python-hcl2 (infra/aws/check.py reads its output shape).
const PIP_PEERS: [&str; 7] = [
    "oras",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "schemathesis==4.32.5",
    "moto[server]==5.2.6",
    "python-hcl2==8.1.4",
    "gcp-storage-emulator==2026.7.19",
];
/// What `python -c` runs to tell that the peers are installed.
const PIP_IMPORTS: &str = "import oras, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http; \
    import moto.server, hcl2, gcp_storage_emulator; \
    import importlib.metadata as m; assert m.version('schemathesis') == '4.32.5'; \
    assert m.version('moto') == '5.2.6'; assert m.version('python-hcl2') == '8.1.4'; \
    assert m.version('gcp-storage-emulator') == '2026.7.19'";
/// checkov, in a virtualenv of its own (`target/peers/checkov-venv`): it pins an old boto3 and
/// installs a fork of python-hcl2 under the same module name, which would break the peers'.
const CHECKOV: &str = "checkov==3.3.30";

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
}

fn setup() -> Result<(), String> {
    let missing: Vec<&str> =
        APT_PEERS.iter().filter(|(cmd, _)| !on_path(cmd)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        eprintln!("peers: present ({})", APT_PEERS.map(|(c, _)| c).join(", "));
    } else {
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]);
        run("apt-get update", update)?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(&format!("apt-get install {}", missing.join(" ")), install)?;
    }
    postgres_server()?;
    python_peers()?;
    firestore_emulator()?;
    node_peers()?;
    if has_cargo_subcommand("deny") {
        eprintln!("cargo-deny: present");
    } else {
        let mut cmd = cargo();
        cmd.args(["install", "--locked", "cargo-deny"]);
        run("install cargo-deny", cmd)?;
    }
    fuzz::install_cargo_fuzz()
}

/// PostgreSQL's server (alien-store-postgres's tests): Debian's `postgresql`, whose binaries
/// live in `/usr/lib/postgresql/<major>/bin`, off the PATH.
fn postgres_server() -> Result<(), String> {
    let present = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| entry.path().join("bin/postgres").is_file());
    if present {
        eprintln!("postgresql: present");
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    run("apt-get update", update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run("apt-get install postgresql", install)
}

/// The virtualenv with the Python peers (oras, the OpenTelemetry SDK), created on first use.
fn python_peers() -> Result<(), String> {
    let venv = root().join("target/peers/venv");
    let python = venv.join("bin/python");
    let present = python.exists()
        && Command::new(&python)
            .args(["-c", PIP_IMPORTS])
            .output()
            .is_ok_and(|o| o.status.success());
    if present {
        eprintln!("python peers: present ({})", PIP_PEERS.join(", "));
        return checkov();
    }
    if !python.exists() {
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        run("python3 -m venv target/peers/venv", create)?;
    }
    let mut install = Command::new(venv.join("bin/pip"));
    install.args(["install", "-q"]).args(PIP_PEERS);
    run(&format!("pip install {}", PIP_PEERS.join(" ")), install)?;
    checkov()
}

/// checkov in `target/peers/checkov-venv` (infra/ checks), created on first use.
fn checkov() -> Result<(), String> {
    let venv = root().join("target/peers/checkov-venv");
    let checkov = venv.join("bin/checkov");
    let present = Command::new(&checkov)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "3.3.30");
    if present {
        eprintln!("checkov: present ({CHECKOV})");
        return Ok(());
    }
    if !venv.join("bin/python").exists() {
        let mut create = Command::new("python3");
        create.args(["-m", "venv"]).arg(&venv);
        run("python3 -m venv target/peers/checkov-venv", create)?;
    }
    let mut install = Command::new(venv.join("bin/pip"));
    install.args(["install", "-q", CHECKOV]);
    run(&format!("pip install {CHECKOV}"), install)
}

fn test(runner_args: &[String]) -> Result<(), String> {
    setup()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", fmt)?;
    // The fuzz targets are a workspace of their own.
    let mut fmt_fuzz = cargo();
    fmt_fuzz.args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--all", "--", "--check"]);
    run("cargo fmt --check (fuzz)", fmt_fuzz)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy -D warnings", clippy)?;
    let mut deny = cargo();
    deny.args(["deny", "--locked", "check", "licenses", "bans", "sources"]);
    run("cargo deny check licenses bans sources", deny)?;
    advisories()?;
    docs(true)?;
    // Before the tests, so that the test runner's summary stays the last thing printed.
    fuzz::run_targets(&fuzz::TARGETS, fuzz::TEST_SECONDS)?;
    // The release archives and the images the install, image and CLI tests run (they rebuild
    // them when stale; built here, their builds are no-ops).
    dist::dist(&[])?;
    image::image(&["manager".to_owned()])?;
    image::image(&["hello-app".to_owned()])?;
    let mut tests = cargo();
    if has_cargo_subcommand("nextest") {
        tests.args(["nextest", "run", "--workspace", "--locked", "--no-fail-fast"]);
    } else {
        tests.args(["test", "--workspace", "--locked", "--no-fail-fast"]);
    }
    // The same features as clippy's, so the build is shared; this includes the peer tests.
    tests.arg("--all-features");
    tests.args(runner_args);
    // No closing line of our own: the test runner's summary stays the last thing printed.
    eprintln!("==> tests");
    let status = tests.status().map_err(|e| format!("tests: cannot start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("tests failed ({status})")) }
}

/// `cargo deny check advisories` needs the RustSec database, a git repository. Where it cannot be
/// fetched (this project's machines reach package registries only) the check cannot run: say so
/// loudly rather than pass quietly. Any other failure (a vulnerable crate) fails the run.
fn advisories() -> Result<(), String> {
    eprintln!("==> cargo deny check advisories");
    let out = cargo()
        .args(["deny", "--locked", "check", "advisories"])
        .output()
        .map_err(|e| format!("cargo deny: cannot start: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprintln!("<== cargo deny check advisories: ok");
        return Ok(());
    }
    if stderr.contains("failed to fetch advisory database") {
        eprintln!(
            "<== cargo deny check advisories: NOT RUN: the RustSec advisory database could not be \
             fetched (no route to its git host from this machine); run it where it can be"
        );
        return Ok(());
    }
    eprintln!("{stderr}");
    Err("cargo deny check advisories failed".to_owned())
}

/// `bench fleet|commands|api --database postgres [--replicas N]`: SQLite, PostgreSQL and N
/// replicas on PostgreSQL behind nginx, side by side (bins/alien-manager/examples/bench_scale.rs).
fn bench_scale(name: Option<&str>, replicas: Option<&str>) -> Result<(), String> {
    let what = name.unwrap_or("all");
    if !["fleet", "commands", "api", "all"].contains(&what) {
        return Err(format!("--database postgres compares fleet, commands or api, not {what}"));
    }
    setup()?;
    let mut manager = cargo();
    manager.args(["build", "--release", "--locked", "-p", "alien-manager"]);
    run("build the release manager", manager)?;
    let mut cmd = cargo();
    cmd.env("ALIEN_MANAGER_BIN", root().join("target/release/alien-manager"));
    cmd.args(["run", "--release", "--locked", "-p", "alien-manager", "--example", "bench_scale"]);
    cmd.args(["--", what, "--replicas", replicas.unwrap_or("3")]);
    run(&format!("bench {what} --database postgres"), cmd)
}

/// Benchmarks: each runs in release mode and reports its figures with a reference from the same
/// run (crates/alien-server/examples/common/report.rs). Every run gathers them into
/// `target/bench/report.json` and `target/bench/report.md`; `bench all` (or no name) also writes
/// the table into `docs/performance.md`.
fn bench(name: Option<&str>) -> Result<(), String> {
    const BENCHES: [(&str, &str, &str); 6] = [
        ("start", "alien-server", "bench_start"),
        ("api", "alien-server", "bench_api"),
        ("fleet", "alien-server", "bench_fleet"),
        ("commands", "alien-server", "bench_commands"),
        ("registry", "alien-server", "bench_registry"),
        ("telemetry", "alien-server", "bench_telemetry"),
    ];
    let all = name.is_none_or(|n| n == "all");
    let selected: Vec<_> = BENCHES.iter().filter(|(n, ..)| all || name == Some(*n)).collect();
    if selected.is_empty() {
        let names: Vec<&str> = BENCHES.iter().map(|(n, ..)| *n).collect();
        return Err(format!("unknown benchmark; known: all, {}", names.join(", ")));
    }
    setup()?;
    let mut manager = cargo();
    manager.args(["build", "--release", "--locked", "-p", "alien-manager"]);
    run("build the release manager", manager)?;
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let figures = out.join("figures.jsonl");
    let _ = std::fs::remove_file(&figures);
    for (name, package, example) in selected {
        let mut cmd = cargo();
        cmd.env("ALIEN_MANAGER_BIN", root().join("target/release/alien-manager"));
        cmd.env("ALIEN_BENCH_REPORT", &figures);
        cmd.args(["run", "--release", "--locked", "-p", package, "--example", example]);
        run(&format!("bench {name}"), cmd)?;
    }
    let text = std::fs::read_to_string(&figures)
        .map_err(|e| format!("no figures were reported ({}): {e}", figures.display()))?;
    let records = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<serde_json::Value>, _>>()
        .map_err(|e| format!("{}: {e}", figures.display()))?;
    let command = format!("cargo xtask bench {}", name.unwrap_or("all"));
    let table = bench_table(&records);
    let report = serde_json::json!({"command": command, "figures": records});
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    write_file(&out.join("report.json"), &json)?;
    write_file(&out.join("report.md"), &table)?;
    eprintln!("{table}\nwritten: target/bench/report.json, target/bench/report.md");
    if all {
        let doc = format!(
            "{PERFORMANCE_HEAD}\n## Latest figures\n\nCommand: `{command}` (writes \
             `target/bench/report.json` and this table).\n\n{table}"
        );
        write_file(&root().join("docs/performance.md"), &doc)?;
        eprintln!("written: docs/performance.md");
    }
    let missed = records.iter().filter(|r| r["holds"] == serde_json::Value::Bool(false)).count();
    if missed > 0 {
        eprintln!("{missed} figure(s) missed their floor (marked MISSED above)");
    }
    Ok(())
}

/// What docs/performance.md says above its table.
const PERFORMANCE_HEAD: &str = "# Performance\n\n\
Every figure is measured by `cargo xtask bench` on the machine it names, next to a reference \
measured in the same run: CNCF Distribution for the registry and for start-up, `GET /health` on \
the same server and load generator for the API (the HTTP floor), one plain `UPDATE` of the same \
rows for release marking. Each is the best of three alternating rounds. The floors are those of \
issue 21. How each figure is reached, and what bounds those that miss, is in \
docs/decisions.md (\"Performance\").\n";

/// A Markdown table of the reported figures.
fn bench_table(records: &[serde_json::Value]) -> String {
    let mut table = String::from(
        "| bench | figure | value | reference | ratio | floor | holds |\n|---|---|---|---|---|---|---|\n",
    );
    let num = |v: &serde_json::Value| v.as_f64().map(|n| format!("{n:.2}"));
    for r in records {
        let unit = r["unit"].as_str().unwrap_or("");
        let reference = match (r["reference"].as_str(), num(&r["referenceValue"])) {
            (Some(name), Some(value)) => format!("{name}: {value} {unit}"),
            _ => "-".to_owned(),
        };
        let holds = match r["holds"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        table.push_str(&format!(
            "| {} | {} | {} {unit} | {reference} | {} | {} | {holds} |\n",
            r["bench"].as_str().unwrap_or(""),
            r["figure"].as_str().unwrap_or(""),
            num(&r["value"]).unwrap_or_default(),
            num(&r["ratio"]).map(|r| format!("{r}x")).unwrap_or_else(|| "-".to_owned()),
            r["floor"].as_str().unwrap_or("-"),
        ));
    }
    table
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The files generated from code: (path, contents).
fn generated_docs() -> [(&'static str, String); 2] {
    [
        ("docs/configuration.md", alien_config::reference_markdown()),
        ("docs/openapi.json", alien_server::api::openapi::openapi_json()),
    ]
}

fn docs(check: bool) -> Result<(), String> {
    let mut stale = Vec::new();
    for (name, generated) in generated_docs() {
        let path = root().join(name);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == generated {
            eprintln!("{name}: up to date");
        } else if check {
            stale.push(name);
        } else {
            std::fs::write(&path, generated)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("{name}: regenerated");
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!("{} out of date; run `cargo xtask docs`", stale.join(", ")))
    }
}
