//! `cargo xtask bench registry`: skopeo pushes and pulls an image of 8 random 64 MiB layers to the
//! manager's embedded registry and to CNCF Distribution on the same machine, alternating, 3
//! rounds (fresh storage each round), then 8 parallel pulls; prints median throughput of each,
//! the ratio ours / Distribution, and the manager's peak RSS.
//!
//! The CPU time of each pull is split between the server (`/proc/<pid>/stat`) and skopeo (this
//! process's waited-for children): both share the machine's two cores, so when the client's CPU
//! dominates, the wall-clock ratio is bounded by it whatever the server does. The server's CPU
//! per GiB pulled is reported against Distribution's.
//!
//! The manager is the release binary (`ALIEN_MANAGER_BIN`, set by xtask), run as users run it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alien_registry_conformance::start_distribution;

mod common;

use common::report::{Figure, Floor};

const LAYERS: usize = 8;
const LAYER_BYTES: usize = 64 * 1024 * 1024;
const ROUNDS: usize = 3;
const PARALLEL: usize = 8;

fn ok(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(out.status.success(), "{shown} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The image: an OCI layout with `LAYERS` layers of random data.
fn build_image(work: &Path) -> PathBuf {
    alien_registry_conformance::layout::build_layout(work, LAYERS, LAYER_BYTES, 42).unwrap()
}

fn layout_bytes(layout: &Path) -> u64 {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

struct Manager {
    child: Child,
    host: String,
    token: String,
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_manager(state: &Path) -> Manager {
    let bin = std::env::var("ALIEN_MANAGER_BIN")
        .unwrap_or_else(|_| "target/release/alien-manager".into());
    let port = free_port();
    let mut child = Command::new(&bin)
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--state-dir"])
        .arg(state)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let token = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("export ALIEN_API_KEY=").map(str::to_owned))
        .expect("admin token printed");
    let host = format!("127.0.0.1:{port}");
    common::report::wait_ready(port);
    Manager { child, host, token }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn skopeo_copy(src: &str, dest: &str, creds: Option<&str>) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--src-tls-verify=false", "--dest-tls-verify=false"]);
    if let Some(creds) = creds {
        if src.starts_with("docker://") {
            cmd.args(["--src-creds", creds]);
        }
        if dest.starts_with("docker://") {
            cmd.args(["--dest-creds", creds]);
        }
    }
    ok(cmd.arg(src).arg(dest));
}

/// CPU seconds from `/proc/<pid>/stat`: the process's own (user + system) and that of its
/// waited-for children.
fn cpu_secs(pid: &str) -> (f64, f64) {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name: state is the first, utime the 12th, cstime the 15th.
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().unwrap())
        .collect();
    ((fields[0] + fields[1]) / ticks, (fields[2] + fields[3]) / ticks)
}

/// The CPU seconds a pull cost the server and the skopeo clients.
#[derive(Clone, Copy, Default)]
struct PullCpu {
    server: f64,
    client: f64,
}

impl PullCpu {
    /// Measures `pull`, the server being `server_pid`.
    fn of(server_pid: u32, pull: impl FnOnce()) -> PullCpu {
        let server = server_pid.to_string();
        let (server_before, _) = cpu_secs(&server);
        let (_, client_before) = cpu_secs("self");
        pull();
        let (server_after, _) = cpu_secs(&server);
        let (_, client_after) = cpu_secs("self");
        PullCpu { server: server_after - server_before, client: client_after - client_before }
    }

    fn per_gib(self, bytes: u64) -> (f64, f64) {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        (self.server / gib, self.client / gib)
    }
}

/// Push then pull once; returns (push MB/s, pull MB/s) and the pull's CPU.
fn round_trip(
    host: &str,
    creds: Option<&str>,
    layout: &Path,
    work: &Path,
    bytes: u64,
    server_pid: u32,
) -> (f64, f64, PullCpu) {
    let image = format!("docker://{host}/bench/image:bench");
    let t = Instant::now();
    skopeo_copy(&format!("oci:{}:latest", layout.display()), &image, creds);
    let push = mbps(bytes, t.elapsed());
    let dest = work.join("pulled");
    let mut took = Duration::ZERO;
    let cpu = PullCpu::of(server_pid, || {
        let t = Instant::now();
        skopeo_copy(&image, &format!("dir:{}", dest.display()), creds);
        took = t.elapsed();
    });
    let pull = mbps(bytes, took);
    std::fs::remove_dir_all(&dest).unwrap();
    (push, pull, cpu)
}

fn parallel_pulls(host: &str, creds: Option<&str>, work: &Path, bytes: u64) -> f64 {
    let image = format!("docker://{host}/bench/image:bench");
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 0..PARALLEL {
            let image = image.clone();
            let dest = work.join(format!("parallel{i}"));
            s.spawn(move || skopeo_copy(&image, &format!("dir:{}", dest.display()), creds));
        }
    });
    let rate = mbps(bytes * PARALLEL as u64, t.elapsed());
    for i in 0..PARALLEL {
        std::fs::remove_dir_all(work.join(format!("parallel{i}"))).unwrap();
    }
    rate
}

fn mbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let work =
        tempfile::tempdir_in(std::env::var("ALIEN_BENCH_DIR").unwrap_or_else(|_| "target".into()))
            .unwrap();
    let built = Instant::now();
    let layout = build_image(work.path());
    let bytes = layout_bytes(&layout);
    eprintln!(
        "image: {LAYERS} x {} MiB layers ({:.0} MiB on disk) built in {:.1?}",
        LAYER_BYTES >> 20,
        bytes as f64 / 1048576.0,
        built.elapsed()
    );
    let (mut ours_push, mut ours_pull, mut theirs_push, mut theirs_pull) =
        (vec![], vec![], vec![], vec![]);
    let mut peak = 0;
    let mut parallel = (0.0, 0.0);
    let (mut ours_cpu, mut theirs_cpu): (Vec<PullCpu>, Vec<PullCpu>) = (vec![], vec![]);
    for round in 0..ROUNDS {
        let state = work.path().join(format!("manager{round}"));
        let manager = start_manager(&state);
        let distribution = start_distribution().await.unwrap();
        let dist_host = distribution.base_url.trim_start_matches("http://").to_owned();
        let creds = format!("x:{}", manager.token);
        // Alternate who goes first, so page cache and disk state favour neither.
        let order: [bool; 2] = if round % 2 == 0 { [true, false] } else { [false, true] };
        for ours in order {
            if ours {
                let (push, pull, cpu) = round_trip(
                    &manager.host,
                    Some(&creds),
                    &layout,
                    work.path(),
                    bytes,
                    manager.child.id(),
                );
                ours_push.push(push);
                ours_pull.push(pull);
                ours_cpu.push(cpu);
            } else {
                let (push, pull, cpu) =
                    round_trip(&dist_host, None, &layout, work.path(), bytes, distribution.pid());
                theirs_push.push(push);
                theirs_pull.push(pull);
                theirs_cpu.push(cpu);
            }
        }
        if round == ROUNDS - 1 {
            let mut ours = 0.0;
            let cpu = PullCpu::of(manager.child.id(), || {
                ours = parallel_pulls(&manager.host, Some(&creds), work.path(), bytes);
            });
            let mut theirs = 0.0;
            let their_cpu = PullCpu::of(distribution.pid(), || {
                theirs = parallel_pulls(&dist_host, None, work.path(), bytes);
            });
            parallel = (ours, theirs);
            let all = bytes * PARALLEL as u64;
            let ((s, c), (ts, tc)) = (cpu.per_gib(all), their_cpu.per_gib(all));
            eprintln!(
                "{PARALLEL} parallel pulls, CPU s/GiB: ours server {s:.2} skopeo {c:.2}; \
                 distribution server {ts:.2} skopeo {tc:.2}"
            );
        }
        peak = peak.max(peak_rss_kib(manager.child.id()));
        let ((s, c), (ts, tc)) = (ours_cpu[round].per_gib(bytes), theirs_cpu[round].per_gib(bytes));
        eprintln!(
            "round {}: ours push {:.0} pull {:.0} MiB/s; distribution push {:.0} pull {:.0} MiB/s; \
             pull CPU s/GiB: ours server {s:.2} skopeo {c:.2}, distribution server {ts:.2} \
             skopeo {tc:.2}",
            round + 1,
            ours_push[round],
            ours_pull[round],
            theirs_push[round],
            theirs_pull[round]
        );
        drop(manager);
        drop(distribution);
        let _ = std::fs::remove_dir_all(&state);
    }
    let shape = format!("{LAYERS} x {} MiB layers", LAYER_BYTES >> 20);
    Figure::new("registry", format!("push, one client (skopeo), {shape}"), "MiB/s")
        .rounds(ours_push)
        .against("CNCF Distribution", theirs_push)
        .floor(Floor::RatioAtLeast(1.5))
        .report();
    Figure::new("registry", format!("pull, one client (skopeo), {shape}"), "MiB/s")
        .rounds(ours_pull)
        .against("CNCF Distribution", theirs_pull)
        .floor(Floor::RatioAtLeast(1.5))
        .report();
    Figure::new("registry", format!("pull, {PARALLEL} parallel clients, {shape}"), "MiB/s")
        .rounds(vec![parallel.0])
        .against("CNCF Distribution", vec![parallel.1])
        .floor(Floor::RatioAtLeast(1.2))
        .report();
    let gib = |cpu: &[PullCpu], part: fn(&PullCpu) -> f64| -> Vec<f64> {
        cpu.iter().map(|c| part(c) / (bytes as f64 / (1u64 << 30) as f64)).collect()
    };
    Figure::new("registry", "pull, one client: server CPU per GiB", "s")
        .lower_is_better()
        .rounds(gib(&ours_cpu, |c| c.server))
        .against("CNCF Distribution", gib(&theirs_cpu, |c| c.server))
        .report();
    Figure::new("registry", "pull, one client: skopeo's CPU per GiB (from us)", "s")
        .lower_is_better()
        .rounds(gib(&ours_cpu, |c| c.client))
        .against("skopeo from CNCF Distribution", gib(&theirs_cpu, |c| c.client))
        .report();
    Figure::new("registry", "manager peak RSS", "MiB")
        .lower_is_better()
        .rounds(vec![peak as f64 / 1024.0])
        .floor(Floor::Below(200.0))
        .report();
}
