//! `cargo xtask fuzz [TARGET] [--seconds N]`: builds the fuzz targets of `fuzz/` (cargo-fuzz,
//! libFuzzer) once and runs each selected one for N seconds; any crash fails the run and names the
//! file holding the input.
//!
//! The stable toolchain is enough: cargo-fuzz passes nightly-only flags (`-Zsanitizer=address`),
//! which `RUSTC_BOOTSTRAP=1` lets the stable compiler take, and AddressSanitizer's runtime ships
//! with stable's standard library. Targets are built optimized with debug assertions and overflow
//! checks on (cargo-fuzz's default), into `<target dir>/fuzz`.
//!
//! Each target starts from its committed corpus (`fuzz/corpus/<target>`), which it only reads:
//! libFuzzer writes the inputs it finds to the first corpus directory, and that is a scratch one
//! under the target directory, so a run never dirties the repository. Crash inputs go to
//! `<target dir>/fuzz/artifacts/<target>/`, libFuzzer's output to `<target dir>/fuzz/logs/`; a
//! fixed crash becomes a unit test of its crate and a file of the committed corpus.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use crate::{cargo, has_cargo_subcommand, on_path, root, run};

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`; `fuzz/README.md` says what each reaches).
pub const TARGETS: [&str; 7] =
    ["stack", "config", "oci_manifest", "oci_reference", "otlp", "sync", "command_wire"];

/// Seconds per target of a manual `cargo xtask fuzz`.
pub const DEFAULT_SECONDS: u64 = 60;
/// Seconds per target in `cargo xtask test`.
pub const TEST_SECONDS: u64 = 10;
/// An input that runs longer than this is reported as a hang (libFuzzer `-timeout`).
const INPUT_TIMEOUT_SECS: u64 = 20;
/// Lines of a failed target's output shown from the panic or sanitizer report on.
const CRASH_LOG_LINES: usize = 30;

/// `cargo xtask fuzz [TARGET] [--seconds N]`.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let mut target = None;
    let mut seconds = DEFAULT_SECONDS;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().ok_or("--seconds takes a number of seconds")?;
                seconds = value
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("--seconds {value}: expected a positive integer"))?;
            }
            name if target.is_none() && !name.starts_with('-') => target = Some(name),
            other => return Err(format!("fuzz: unexpected argument {other:?}")),
        }
    }
    let selected: Vec<&str> = match target {
        Some(name) if TARGETS.contains(&name) => vec![name],
        Some(name) => {
            return Err(format!("unknown fuzz target {name:?}; known: {}", TARGETS.join(", ")));
        }
        None => TARGETS.to_vec(),
    };
    run_targets(&selected, seconds)
}

/// Installs cargo-fuzz into the default cargo bin directory when it is missing, and the C++
/// compiler libfuzzer-sys builds libFuzzer with.
pub fn install_cargo_fuzz() -> Result<(), String> {
    if !on_path("c++") {
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]);
        run("apt-get update", update)?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-qq", "--no-install-recommends", "g++"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run("apt-get install g++ (libFuzzer is C++)", install)?;
    }
    if has_cargo_subcommand("fuzz") {
        eprintln!("cargo-fuzz: present");
        return Ok(());
    }
    let mut cmd = cargo();
    cmd.args(["install", "--locked", "cargo-fuzz"]);
    run("install cargo-fuzz", cmd)
}

/// Where fuzz builds, scratch corpora and crash inputs go: `<target dir>/fuzz`.
fn work_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { root().join(dir) })
        .unwrap_or_else(|| root().join("target"));
    target.join("fuzz")
}

/// `cargo fuzz <subcommand>` on the stable toolchain, building into `work`.
fn cargo_fuzz(subcommand: &str, work: &Path) -> Command {
    let mut cmd = cargo();
    cmd.env("RUSTC_BOOTSTRAP", "1");
    cmd.args(["fuzz", subcommand, "--target-dir"]).arg(work.join("build"));
    cmd
}

/// Builds every target once, then runs each of `targets` for `seconds`.
pub fn run_targets(targets: &[&str], seconds: u64) -> Result<(), String> {
    install_cargo_fuzz()?;
    let work = work_dir();
    let start = Instant::now();
    run("cargo fuzz build (AddressSanitizer, debug assertions)", cargo_fuzz("build", &work))?;
    let mut crashed = Vec::new();
    let mut failed = 0;
    for target in targets {
        let scratch = work.join("corpus").join(target);
        let artifacts = work.join("artifacts").join(target);
        let tmp = work.join("tmp");
        for dir in [&scratch, &artifacts, &work.join("logs"), &tmp] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let log_path = work.join("logs").join(format!("{target}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let mut cmd = cargo_fuzz("run", &work);
        cmd.arg(target).arg(&scratch).arg(root().join("fuzz/corpus").join(target));
        cmd.arg("--");
        cmd.arg(format!("-max_total_time={seconds}"));
        cmd.arg(format!("-timeout={INPUT_TIMEOUT_SECS}"));
        // libFuzzer joins prefix and file name: the trailing slash makes it a directory.
        cmd.arg(format!("-artifact_prefix={}/", artifacts.display()));
        cmd.arg("-print_final_stats=1");
        // A panic's report shows where it happened; files a target writes (config) stay here.
        cmd.env("RUST_BACKTRACE", "1").env("TMPDIR", &tmp);
        // libFuzzer reports every new input: its output goes to the log, a summary here.
        let err = log.try_clone().map_err(|e| format!("{}: {e}", log_path.display()))?;
        cmd.stdout(log).stderr(err);
        let began = SystemTime::now();
        let result = run(&format!("fuzz {target} for {seconds}s"), cmd);
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        if result.is_ok() {
            let summary = output
                .lines()
                .filter(|l| l.starts_with('#') && l.contains("DONE"))
                .collect::<Vec<_>>();
            eprintln!("    {}", summary.join("\n    "));
            continue;
        }
        failed += 1;
        eprintln!("{}", crash_excerpt(&output).join("\n"));
        eprintln!("(the whole output: {})", log_path.display());
        let inputs = written_since(&artifacts, began);
        if inputs.is_empty() {
            crashed.push(format!("{target}: no input was written; see {}", log_path.display()));
        }
        let build = work.join("build");
        crashed.extend(inputs.iter().map(|file| {
            format!(
                "{target}: {}\n    reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir {} {target} {}",
                file.display(),
                build.display(),
                file.display()
            )
        }));
    }
    eprintln!(
        "fuzz: {} target(s) in {:.0}s, {failed} failed",
        targets.len(),
        start.elapsed().as_secs_f64(),
    );
    if failed == 0 { Ok(()) } else { Err(format!("fuzzing failed:\n  {}", crashed.join("\n  "))) }
}

/// The files of `dir` written at or after `since` (the inputs of this run's crash).
fn written_since(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= since))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// What to show of a failed target's output: from the panic or the sanitizer's report (the
/// message and the top of the stack), and where the input was written.
fn crash_excerpt(output: &str) -> Vec<&str> {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.contains("ERROR:"))
        .unwrap_or(lines.len().saturating_sub(CRASH_LOG_LINES));
    let mut excerpt: Vec<&str> = lines[start..].iter().take(CRASH_LOG_LINES).copied().collect();
    excerpt.extend(lines.iter().filter(|l| l.contains("Test unit written")));
    excerpt
}
