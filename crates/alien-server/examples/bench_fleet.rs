//! `cargo xtask bench fleet`: a fleet of simulated pull agents (a load generator, no containers)
//! syncing against one manager, at 10,000 and then 100,000 deployments (spec/deployer.md,
//! "Targets to beat"), each number with a reference from the same run.
//!
//! 1. `POST /v1/sync` as an agent sends it once it runs its release (`currentState` running on the
//!    desired release with a small stack state; no target comes back), each agent with its own
//!    deployment token, 64 at once, visiting the whole fleet in a spread order: the manager's CPU
//!    time per sync (target < 1 ms) and p50/p99 latency. Reference: `GET /health` on the same
//!    server with the same load generator, measured the same way (the HTTP floor).
//! 2. The deployment loop's tick with nothing due over as many running push deployments (target
//!    < 10 ms whatever their number: the ratio 100k / 10k shows it does not grow), and the
//!    heartbeat loop's pass with every agent fresh.
//!
//! The manager is the release binary (`ALIEN_MANAGER_BIN`, set by xtask) on a database seeded
//! through the store beforehand, with its loops off (they are measured in-process in 2), so its
//! process CPU time (`/proc/<pid>/stat`) is what the requests cost. `FLEET_SCALE=small` shrinks
//! sizes and durations for development.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alien_core::{Deployment, Id, NewRelease, Platform};
use alien_deployer::platform::RefreshReport;
use alien_deployer::{
    DeployRequest, DeploymentLoop, HeartbeatLoop, LoopConfig, PlatformDeployer, StepOutcome,
};
use alien_store::{DeploymentStore, ReleaseStore, Store};
use alien_store_sqlite::SqliteStore;
use alien_store_sqlite::seal::{EncryptionKey, Sealer};
use serde_json::{Value, json};

mod common;

use common::report::{Figure, Floor};

const CLIENTS: usize = 64;
/// Alternating rounds of each load; the best of each is reported.
const ROUNDS: usize = 3;
/// Steps through the fleet: coprime with every size, so `k * STRIDE % n` visits each agent once
/// per `n` syncs, spread over the table rather than in insertion order.
const STRIDE: usize = 7919;
const SYNC_TARGET_US: f64 = 1000.0;
const TICK_TARGET_MS: f64 = 10.0;

struct Scale {
    sizes: [u32; 2],
    load: Duration,
    ticks: usize,
    passes: usize,
}

impl Scale {
    fn from_env() -> Scale {
        if std::env::var("FLEET_SCALE").as_deref() == Ok("small") {
            Scale { sizes: [1_000, 10_000], load: Duration::from_secs(2), ticks: 200, passes: 5 }
        } else {
            Scale {
                sizes: [10_000, 100_000],
                load: Duration::from_secs(5),
                ticks: 1000,
                passes: 20,
            }
        }
    }
}

/// A simulated agent: its deployment and that deployment's token.
struct Agent {
    id: String,
    token: String,
}

struct Round {
    size: u32,
    health: Load,
    sync: Load,
    tick: Timing,
    heartbeat: Timing,
}

#[tokio::main]
async fn main() {
    let scale = Scale::from_env();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    alien_store::private_fs::create_dir(&state).unwrap();
    let key = EncryptionKey::generate().unwrap().expose_hex();
    let db = state.join("alien-manager.db");
    let stack_state = agent_stack_state();

    let store = open(&db, &key).await;
    let largest = *scale.sizes.iter().max().unwrap();
    let group = store.create_group("fleet", largest).await.unwrap().id;
    let release = web_release(&store).await;
    store.close().await;
    drop(store);

    let mut agents: Vec<Agent> = Vec::new();
    let mut rounds = Vec::new();
    for size in scale.sizes {
        // Grow the fleet to `size` pull deployments, all running the release.
        let store = open(&db, &key).await;
        let seeded = Instant::now();
        let grown = store
            .seed_pull_deployments(
                &group,
                Platform::Local,
                &release,
                &stack_state,
                size - agents.len() as u32,
            )
            .await
            .unwrap();
        agents.extend(
            grown
                .into_iter()
                .map(|(id, token)| Agent { id: id.to_string(), token: token.expose().to_owned() }),
        );
        eprintln!("fleet: {size} pull deployments (seeded in {:.1?})", seeded.elapsed());
        let heartbeat = heartbeat_pass(store.clone(), scale.passes).await;
        store.close().await;
        drop(store);

        let manager = Manager::start(&state, &key);
        let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
        let agents_now = Arc::new(std::mem::take(&mut agents));
        let health =
            |client: &reqwest::Client, base: &str, _: usize| client.get(format!("{base}/health"));
        let sync = {
            let (agents, release, stack_state) =
                (agents_now.clone(), release.to_string(), stack_state.clone());
            move |client: &reqwest::Client, base: &str, k: usize| {
                let agent = &agents[k.wrapping_mul(STRIDE) % agents.len()];
                let body = json!({
                    "deploymentId": agent.id,
                    "currentState": {
                        "status": "running",
                        "platform": "local",
                        "currentRelease": {"releaseId": release},
                        "stackState": stack_state,
                    },
                });
                client.post(format!("{base}/v1/sync")).bearer_auth(&agent.token).json(&body)
            }
        };
        // Warm up: connections, then one sync of every agent of the fleet (the first sync after
        // a start finds no token cached: that cold pass is reported on its own). Then
        // `ROUNDS` alternating rounds, going on in the same spread order: the steady state of a
        // fleet that syncs every interval.
        load(&client, &manager, Duration::from_secs(1), 0, health).await;
        let mut next = 0;
        let cold_started = Instant::now();
        while next < size as usize {
            next +=
                load(&client, &manager, Duration::from_secs(1), next, sync.clone()).await.requests;
        }
        let cold_rps = next as f64 / cold_started.elapsed().as_secs_f64();
        eprintln!(
            "cold pass: {next} syncs at {cold_rps:.0}/s (every agent's first sync since the start)"
        );
        let (mut healths, mut syncs) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let order = if round % 2 == 0 { [true, false] } else { [false, true] };
            for health_first in order {
                if health_first {
                    healths.push(load(&client, &manager, scale.load, 0, health).await);
                } else {
                    let measured = load(&client, &manager, scale.load, next, sync.clone()).await;
                    next += measured.requests;
                    syncs.push(measured);
                }
            }
        }
        drop(sync);
        let peak_rss = common::report::peak_rss_mib(manager.child.id());
        manager.stop();
        agents = Arc::into_inner(agents_now).expect("the load is over");

        let tick = tick_cost(size, scale.ticks).await;
        let round =
            Round { size, health: best_load(&healths), sync: best_load(&syncs), tick, heartbeat };
        round.print(scale.load);
        round.report(&healths, &syncs, peak_rss);
        Figure::new(
            "fleet",
            format!("agent syncs/s, cold pass (first sync of each of {size} agents since start)"),
            "req/s",
        )
        .rounds(vec![cold_rps])
        .report();
        rounds.push(round);
    }
    summary(&rounds);
}

/// The round with the most requests per second.
fn best_load(loads: &[Load]) -> Load {
    loads.iter().max_by(|a, b| a.rps.total_cmp(&b.rps)).cloned().expect("at least one round")
}

impl Round {
    /// The figures of issue 21 (their floors apply at 100,000 deployments).
    fn report(&self, healths: &[Load], syncs: &[Load], peak_rss: f64) {
        let floors = self.size >= 100_000;
        let on = |floor| if floors { floor } else { Floor::None };
        let n = self.size;
        let of = |loads: &[Load], f: fn(&Load) -> f64| loads.iter().map(f).collect::<Vec<_>>();
        Figure::new("fleet", format!("agent syncs/s, {n} deployments"), "req/s")
            .rounds(of(syncs, |l| l.rps))
            .against("GET /health req/s", of(healths, |l| l.rps))
            .floor(on(Floor::AtLeast(10_000.0)))
            .report();
        Figure::new("fleet", format!("agent sync p99, {n} deployments"), "ms")
            .lower_is_better()
            .rounds(of(syncs, |l| l.p99_ms))
            .against("GET /health p99", of(healths, |l| l.p99_ms))
            .floor(on(Floor::Below(20.0)))
            .report();
        Figure::new("fleet", format!("server CPU per sync, {n} deployments"), "µs")
            .lower_is_better()
            .rounds(of(syncs, |l| l.cpu_us))
            .against("server CPU per GET /health", of(healths, |l| l.cpu_us))
            .floor(on(Floor::RatioAtMost(8.0)))
            .report();
        Figure::new("fleet", format!("manager peak RSS, {n} deployments"), "MiB")
            .lower_is_better()
            .rounds(vec![peak_rss])
            .floor(Floor::Below(200.0))
            .report();
    }

    fn print(&self, load: Duration) {
        let (h, s) = (&self.health, &self.sync);
        println!(
            "{} pull deployments, {CLIENTS} concurrent agents, {} s per load:",
            self.size,
            load.as_secs()
        );
        println!(
            "  GET /health (reference): {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  server CPU {:>5.0} µs/request ({:.0}% system)",
            h.rps,
            h.p50_ms,
            h.p99_ms,
            h.cpu_us,
            h.system_share * 100.0
        );
        println!(
            "  POST /v1/sync:           {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  server CPU {:>5.0} µs/sync ({:.0}% system; {} agents synced)",
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.cpu_us,
            s.system_share * 100.0,
            s.requests.min(self.size as usize)
        );
        println!(
            "  sync CPU: {:.2}x GET /health; {:.2}x of the 1 ms budget (target < {SYNC_TARGET_US:.0} µs)",
            s.cpu_us / h.cpu_us,
            s.cpu_us / SYNC_TARGET_US
        );
        println!(
            "  at {:.0} syncs/s every agent of the fleet syncs once per {:.1} s (agents default to 10 s)",
            s.rps,
            f64::from(self.size) / s.rps
        );
        let (t, b) = (&self.tick, &self.heartbeat);
        println!(
            "  deployment loop tick, nothing due ({} running push deployments): mean {:.3} ms  p99 {:.3} ms  CPU {:.3} ms/tick  ({:.3}x of the 10 ms budget at p99)",
            self.size,
            t.mean_ms,
            t.p99_ms,
            t.cpu_ms,
            t.p99_ms / TICK_TARGET_MS
        );
        println!(
            "  heartbeat pass, every agent fresh ({} pull deployments): mean {:.2} ms  p99 {:.2} ms  CPU {:.2} ms/pass",
            self.size, b.mean_ms, b.p99_ms, b.cpu_ms
        );
    }
}

fn summary(rounds: &[Round]) {
    let [small, large] = rounds else { return };
    println!("summary ({} -> {} deployments):", small.size, large.size);
    println!(
        "  sync CPU: {:.0} -> {:.0} µs/sync (x{:.2}); worst {:.2}x of the 1 ms budget; {:.2}x GET /health at {}",
        small.sync.cpu_us,
        large.sync.cpu_us,
        large.sync.cpu_us / small.sync.cpu_us,
        small.sync.cpu_us.max(large.sync.cpu_us) / SYNC_TARGET_US,
        large.sync.cpu_us / large.health.cpu_us,
        large.size
    );
    println!(
        "  sync p99: {:.2} -> {:.2} ms (GET /health p99 {:.2} -> {:.2} ms)",
        small.sync.p99_ms, large.sync.p99_ms, small.health.p99_ms, large.health.p99_ms
    );
    println!(
        "  loop tick, nothing due: mean {:.3} -> {:.3} ms (x{:.2} for {}x the deployments); worst p99 {:.3}x of the 10 ms budget",
        small.tick.mean_ms,
        large.tick.mean_ms,
        large.tick.mean_ms / small.tick.mean_ms,
        large.size / small.size,
        small.tick.p99_ms.max(large.tick.p99_ms) / TICK_TARGET_MS
    );
    println!(
        "  heartbeat pass: mean {:.2} -> {:.2} ms (x{:.2})",
        small.heartbeat.mean_ms,
        large.heartbeat.mean_ms,
        large.heartbeat.mean_ms / small.heartbeat.mean_ms
    );
}

async fn open(db: &Path, key: &str) -> Arc<SqliteStore> {
    let sealer = Sealer::new(EncryptionKey::from_hex(key).unwrap());
    Arc::new(SqliteStore::open(db, sealer).await.unwrap())
}

/// The `valid-web.json` release (one container, `api`) for the local platform.
async fn web_release(store: &SqliteStore) -> Id {
    let stack: Value =
        serde_json::from_str(include_str!("../../../../shared/fixtures/valid-web.json")).unwrap();
    let release = NewRelease {
        stack: BTreeMap::from([(
            Platform::Local,
            alien_core::parse_release_stack(&stack).unwrap(),
        )]),
        git_metadata: None,
        version: Some("fleet".into()),
        description: None,
    };
    store.create_release(release).await.unwrap().release.id
}

/// What a local agent reports for one healthy replica of `api` (spec/containers.md "Outputs").
fn agent_stack_state() -> Value {
    json!({
        "platform": "local",
        "resources": {"api": {"type": "container", "status": "running", "outputs": {
            "name": "api", "status": "running", "currentReplicas": 1, "desiredReplicas": 1,
            "internalDns": "10.0.2.2:41234", "url": "http://127.0.0.1:41234",
            "replicas": [{"replicaId": "alien-agent-api-0", "healthy": true, "ordinal": 0}],
        }}},
        "local": {"engine": "podman", "containers": {"api": {"urlPort": 41234}}},
    })
}

/// The release binary serving `state`, without its loops.
struct Manager {
    child: Child,
    base: String,
}

impl Manager {
    fn start(state: &Path, key: &str) -> Manager {
        let bin = std::env::var("ALIEN_MANAGER_BIN")
            .unwrap_or_else(|_| "target/release/alien-manager".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(&bin);
        for var in ["PORT", "HOST", "BASE_URL", "OTLP_ENDPOINT", "RUST_LOG"] {
            cmd.env_remove(var);
        }
        for (name, _) in std::env::vars() {
            if name.starts_with("ALIEN_") {
                cmd.env_remove(name);
            }
        }
        let child = cmd
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--state-dir"])
            .arg(state)
            .args(["--disable-deployment-loop", "--disable-heartbeat-loop"])
            .env("ALIEN_DATABASE__ENCRYPTION_KEY", key)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let host = format!("127.0.0.1:{port}");
        common::report::wait_ready(port);
        Manager { child, base: format!("http://{host}") }
    }

    /// User and system CPU time of the manager process so far, in microseconds.
    fn cpu_us(&self) -> (f64, f64) {
        process_cpu_us(&format!("/proc/{}/stat", self.child.id()))
    }

    /// SIGTERM and wait: the manager checkpoints its database before exiting.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let signalled = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(signalled.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "manager exit: {status}");
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime and stime of `/proc/<pid>/stat`, in microseconds.
fn process_cpu_us(stat: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(stat).unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = text.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let us = |ticks: &str| ticks.parse::<f64>().unwrap() * 1e6 / clock_ticks_per_second();
    (us(fields[11]), us(fields[12]))
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[derive(Clone)]
struct Load {
    requests: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Manager CPU time per request.
    cpu_us: f64,
    /// The part of it spent in the kernel.
    system_share: f64,
}

/// `CLIENTS` concurrent loops of `request(k)` (k = first, first + 1, ... across all loops) for
/// `duration`; every answer must be 200 without a target.
async fn load<F>(
    client: &reqwest::Client,
    manager: &Manager,
    duration: Duration,
    first: usize,
    request: F,
) -> Load
where
    F: Fn(&reqwest::Client, &str, usize) -> reqwest::RequestBuilder + Clone + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(first));
    let cpu_before = manager.cpu_us();
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, base, next, request) =
            (client.clone(), manager.base.clone(), next.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let response = request(&client, &base, k).send().await.unwrap();
                let status = response.status();
                let body = response.bytes().await.unwrap();
                latencies.push(t0.elapsed());
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                assert!(
                    !body.windows(8).any(|w| w == b"\"target\""),
                    "an agent on its desired release got a target"
                );
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = manager.cpu_us();
    let (user, system) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    Load {
        requests: all.len(),
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        cpu_us: (user + system) / all.len() as f64,
        system_share: system / (user + system),
    }
}

struct Timing {
    mean_ms: f64,
    p99_ms: f64,
    /// This process's CPU time per run (nothing else runs meanwhile).
    cpu_ms: f64,
}

/// Runs `op` `runs` times after a few warm-up runs.
async fn time_runs<F, Fut>(runs: usize, mut op: F) -> Timing
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..runs.min(5) {
        op().await;
    }
    let self_cpu = || {
        let (user, system) = process_cpu_us("/proc/self/stat");
        user + system
    };
    let cpu_before = self_cpu();
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        op().await;
        took.push(t0.elapsed());
    }
    let cpu = self_cpu() - cpu_before;
    let total: Duration = took.iter().sum();
    took.sort();
    let p99 = took[((runs as f64 * 0.99) as usize).min(runs - 1)];
    Timing {
        mean_ms: total.as_secs_f64() * 1000.0 / runs as f64,
        p99_ms: p99.as_secs_f64() * 1000.0,
        cpu_ms: cpu / 1000.0 / runs as f64,
    }
}

/// A deployer for a loop that must find nothing due.
struct NothingDue;

#[async_trait::async_trait]
impl PlatformDeployer for NothingDue {
    async fn apply(&self, request: DeployRequest<'_>) -> StepOutcome {
        panic!("nothing is due, yet {} was stepped", request.deployment.id)
    }

    async fn destroy(
        &self,
        deployment: &Deployment,
        _: Option<&Value>,
        _: bool,
        _: &alien_deployer::platform::Credentials,
    ) -> StepOutcome {
        panic!("nothing is due, yet {} was destroyed", deployment.id)
    }

    async fn refresh(
        &self,
        deployment: &Deployment,
        _: Option<&Value>,
        _: &alien_deployer::platform::Credentials,
    ) -> RefreshReport {
        panic!("the loop refreshed {}", deployment.id)
    }
}

/// Ticks of the deployment loop over `size` running push deployments (a store of their own).
async fn tick_cost(size: u32, ticks: usize) -> Timing {
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(EncryptionKey::generate().unwrap());
    let store = Arc::new(SqliteStore::open(&dir.path().join("m.db"), sealer).await.unwrap());
    let group = store.create_group("push", size).await.unwrap();
    store.seed_running_deployments(&group.id, Platform::Local, size).await.unwrap();
    let deployers: HashMap<Platform, Arc<dyn PlatformDeployer>> =
        HashMap::from([(Platform::Local, Arc::new(NothingDue) as Arc<dyn PlatformDeployer>)]);
    let dyn_store: Arc<dyn Store> = store.clone();
    let looper =
        DeploymentLoop::new(dyn_store, deployers, LoopConfig::new("bench", "http://127.0.0.1:1"));
    let timing = time_runs(ticks, || async {
        let report = looper.tick().await.unwrap();
        assert_eq!(report.stepped, 0, "nothing is due");
    })
    .await;
    drop(looper);
    store.close().await;
    timing
}

/// Passes of the heartbeat loop over the fleet; the interval is long enough for every agent to
/// count as fresh, so a pass finds nothing to mark.
async fn heartbeat_pass(store: Arc<SqliteStore>, passes: usize) -> Timing {
    let dyn_store: Arc<dyn Store> = store;
    let heartbeat = HeartbeatLoop::new(dyn_store, Duration::from_secs(3600));
    time_runs(passes, || async {
        let marked = heartbeat.mark_silent_agents(chrono::Utc::now()).await.unwrap();
        assert_eq!(marked, 0, "every agent is fresh");
    })
    .await
}
