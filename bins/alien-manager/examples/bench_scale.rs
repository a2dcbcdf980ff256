//! `cargo xtask bench fleet|commands|api --database postgres [--replicas N]`: the same load on
//! four set-ups side by side, in one run, against the release binary:
//!
//! - one manager on SQLite (the reference),
//! - one manager on PostgreSQL,
//! - with N > 1: one manager on PostgreSQL behind nginx, and N replicas (default 3) on
//!   PostgreSQL behind nginx (round robin); the N replicas are also printed as a ratio of the one
//!   manager behind the same balancer, which separates what replicas change from what the
//!   balancer costs.
//!
//! `fleet`: simulated pull agents (`POST /v1/sync` of an agent running its release, 64 at once):
//! syncs/s and CPU per sync, the managers' and PostgreSQL's apart. `commands`: sequential round
//! trips (create, a receiver's long-poll lease, respond, the caller's status poll) p50/p99, and
//! commands/s with 16 receivers and 16 creators. `api`: `GET /v1/deployments/{id}` requests/s with
//! 64 clients. Every set-up also measures `GET /health` with the same load (the HTTP floor), and
//! each figure is printed as a ratio of SQLite's. Managers run with their loops off, so their CPU
//! time is what the requests cost; PostgreSQL runs on the same 2 cores.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

#[allow(dead_code)]
#[path = "../tests/common/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "../tests/common/nginx.rs"]
mod nginx;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CLIENTS: usize = 64;
const AGENTS: usize = 1000;
const LOAD: Duration = Duration::from_secs(5);
const SEQUENTIAL: usize = 200;
const RECEIVERS: usize = 16;
const CREATORS: usize = 16;
/// The name of the set-up N replicas are compared with.
const BALANCED_ONE: &str = "PostgreSQL, 1 manager + nginx";

/// A free port on 127.0.0.1 (used by the nginx helper too).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Args {
    what: String,
    replicas: usize,
}

fn args() -> Args {
    let mut args = std::env::args().skip(1);
    let mut out = Args { what: "all".into(), replicas: 3 };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--replicas" => out.replicas = args.next().and_then(|n| n.parse().ok()).unwrap(),
            "fleet" | "commands" | "api" | "all" => out.what = arg,
            other => panic!("unknown argument {other}: expected fleet|commands|api [--replicas N]"),
        }
    }
    assert!(out.replicas >= 1);
    out
}

/// One set-up: its managers, the URL clients use, what keeps it alive.
struct Setup {
    name: String,
    base: String,
    admin: String,
    managers: Vec<Child>,
    db: database::TestDatabase,
    _nginx: Option<nginx::Nginx>,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for child in &mut self.managers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Setup {
    async fn start(replicas: usize, postgres: bool, balanced: bool) -> Setup {
        let db = if postgres {
            database::TestDatabase::postgres().await
        } else {
            database::TestDatabase::sqlite()
        };
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let file = dir.path().join("alien-manager.toml");
        std::fs::write(
            &file,
            format!(
                "[artifact-registry.default]\nservice = \"local\"\ndataDir = \"{0}/registry\"\n\n\
                 [commands]\nstorage = {{ service = \"local\", storagePath = \"{0}/payloads\" }}\n",
                shared.display()
            ),
        )
        .unwrap();
        let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
        let nginx = (balanced || replicas > 1).then(|| nginx::Nginx::start(&ports));
        let base =
            nginx.as_ref().map_or_else(|| format!("http://127.0.0.1:{}", ports[0]), |n| n.url());
        let key = "6b".repeat(32);
        let bin = std::env::var("ALIEN_MANAGER_BIN")
            .unwrap_or_else(|_| "target/release/alien-manager".into());
        let mut managers = Vec::new();
        let mut admin = String::new();
        for (i, port) in ports.iter().enumerate() {
            let mut cmd = Command::new(&bin);
            for (name, _) in std::env::vars() {
                if name.starts_with("ALIEN_") {
                    cmd.env_remove(name);
                }
            }
            cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--disable-deployment-loop", "--disable-heartbeat-loop", "--state-dir"])
                .arg(dir.path().join(format!("state-{i}")))
                .arg("-c")
                .arg(&file)
                .env("ALIEN_DATABASE__ENCRYPTION_KEY", &key)
                .env("BASE_URL", &base)
                .env("RUST_LOG", "warn")
                .envs(db.env())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = cmd.spawn().unwrap();
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(token) = line.strip_prefix("export ALIEN_API_KEY=") {
                        let _ = tx.send(token.to_owned());
                    }
                }
            });
            wait_healthy(&format!("http://127.0.0.1:{port}")).await;
            if i == 0 {
                admin = rx.recv_timeout(Duration::from_secs(5)).expect("the admin token");
            }
            managers.push(child);
        }
        let name = match (postgres, replicas, nginx.is_some()) {
            (false, ..) => "SQLite, 1 manager".to_owned(),
            (true, 1, false) => "PostgreSQL, 1 manager".to_owned(),
            (true, 1, true) => BALANCED_ONE.to_owned(),
            (true, n, _) => format!("PostgreSQL, {n} replicas + nginx"),
        };
        Setup { name, base, admin, managers, db, _nginx: nginx, _dir: dir }
    }

    /// CPU time so far, in µs: (managers, PostgreSQL).
    fn cpu_us(&self) -> (f64, f64) {
        let managers = self.managers.iter().map(|c| process_cpu_us(c.id())).sum();
        let postgres = self.db.server_pid().map_or(0.0, |pid| {
            let mut total = process_cpu_us(pid);
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if parent_of(child) == Some(pid) {
                    total += process_cpu_us(child);
                }
            }
            total
        });
        (managers, postgres)
    }
}

/// Until `/ready` answers 200 (while a manager starts, only `/health` does).
async fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/ready")).await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{base} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(text.rsplit_once(')')?.1.split_whitespace().map(str::to_owned).collect())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// utime + stime of a process, in µs (0 once it is gone).
fn process_cpu_us(pid: u32) -> f64 {
    let Some(fields) = stat_fields(pid) else { return 0.0 };
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks * 1e6 / 100.0
}

/// What one load measured.
#[derive(Clone, Copy, Default)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    manager_cpu_us: f64,
    postgres_cpu_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// `CLIENTS` clients sending `request(k)` for `LOAD`; each answer must be 200.
async fn load<F>(setup: &Setup, request: F) -> Load
where
    F: Fn(&reqwest::Client, &str, usize) -> reqwest::RequestBuilder + Clone + Send + 'static,
{
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let (m0, p0) = setup.cpu_us();
    let started = Instant::now();
    let end = started + LOAD;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, base, next, request) =
            (client.clone(), setup.base.clone(), next.clone(), request.clone());
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
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (m1, p1) = setup.cpu_us();
    all.sort();
    let n = all.len() as f64;
    Load {
        rps: n / elapsed,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        manager_cpu_us: (m1 - m0) / n,
        postgres_cpu_us: (p1 - p0) / n,
    }
}

async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    let response = client.post(url).bearer_auth(token).json(&body).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status} {body}");
    body
}

/// A release, a group, its token, and `agents` pull deployments registered and running it:
/// (release id, [(deployment id, deployment token)]).
async fn fleet(setup: &Setup, agents: usize) -> (String, Vec<(String, String)>) {
    let client = reqwest::Client::new();
    let base = &setup.base;
    let stack: Value =
        serde_json::from_str(include_str!("../../../../shared/fixtures/valid-web.json")).unwrap();
    let release = post(
        &client,
        format!("{base}/v1/releases"),
        &setup.admin,
        json!({"stack": {"local": stack}}),
    )
    .await;
    let release = release["id"].as_str().unwrap().to_owned();
    let group = post(
        &client,
        format!("{base}/v1/deployment-groups"),
        &setup.admin,
        json!({"name": "fleet", "maxDeployments": agents + 10}),
    )
    .await;
    let group = group["id"].as_str().unwrap().to_owned();
    let token = post(
        &client,
        format!("{base}/v1/deployment-groups/{group}/tokens"),
        &setup.admin,
        json!({}),
    )
    .await;
    let group_token = token["token"].as_str().unwrap().to_owned();
    use futures_util::StreamExt as _;
    let registered = futures_util::stream::iter((0..agents).map(|i| {
        let (client, base, group_token, release) =
            (client.clone(), base.clone(), group_token.clone(), release.clone());
        async move {
            let init = post(
                &client,
                format!("{base}/v1/initialize"),
                &group_token,
                json!({"name": format!("agent-{i}")}),
            )
            .await;
            let id = init["deploymentId"].as_str().unwrap().to_owned();
            let token = init["token"].as_str().unwrap().to_owned();
            post(&client, format!("{base}/v1/sync"), &token, running(&id, &release)).await;
            (id, token)
        }
    }))
    // At most 32 registrations at once.
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    (release, registered)
}

fn running(id: &str, release: &str) -> Value {
    json!({
        "deploymentId": id,
        "currentState": {
            "status": "running",
            "platform": "local",
            "currentRelease": {"releaseId": release},
            "stackState": {
                "platform": "local",
                "resources": {"api": {"type": "container", "status": "running", "outputs": {
                    "name": "api", "status": "running", "currentReplicas": 1, "desiredReplicas": 1,
                    "url": "http://127.0.0.1:41234",
                    "replicas": [{"replicaId": "alien-agent-api-0", "healthy": true, "ordinal": 0}],
                }}},
            },
        },
    })
}

struct Commands {
    p50_ms: f64,
    p99_ms: f64,
    per_second: f64,
}

fn lease_body(dep: &str, wait: u64, max: u32) -> Value {
    json!({"deploymentId": dep, "target": {"resourceId": "api", "resourceType": "container"}, "waitSeconds": wait, "leaseSeconds": 30, "maxLeases": max})
}

async fn commands(setup: &Setup, dep: &str, token: &str) -> Commands {
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let base = setup.base.clone();
    // Sequential round trips.
    let mut took = Vec::new();
    for i in 0..SEQUENTIAL {
        let t0 = Instant::now();
        let body = json!({"deploymentId": dep, "command": "echo", "params": {"mode": "inline", "inlineBase64": "aGk="}});
        let created = post(&client, format!("{base}/v1/commands"), &setup.admin, body).await;
        let id = created["commandId"].as_str().unwrap();
        let leases =
            post(&client, format!("{base}/v1/commands/leases"), token, lease_body(dep, 5, 1)).await;
        assert_eq!(leases["leases"][0]["commandId"], id, "round {i}: {leases}");
        let answer =
            json!({"status": "success", "response": {"mode": "inline", "inlineBase64": "SEk="}});
        let r = client
            .put(format!("{base}/v1/commands/{id}/response"))
            .bearer_auth(token)
            .json(&answer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let done: Value = client
            .get(format!("{base}/v1/commands/{id}"))
            .bearer_auth(&setup.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(done["state"], "SUCCEEDED");
        took.push(t0.elapsed());
    }
    took.sort();
    // Sustained: creators and long-polling receivers for LOAD.
    let done = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + LOAD;
    let mut tasks = Vec::new();
    for _ in 0..CREATORS {
        let (client, base, admin, dep) =
            (client.clone(), base.clone(), setup.admin.clone(), dep.to_owned());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let body = json!({"deploymentId": dep, "command": "echo", "params": {"mode": "inline", "inlineBase64": "aGk="}});
                post(&client, format!("{base}/v1/commands"), &admin, body).await;
            }
        }));
    }
    let started = Instant::now();
    for _ in 0..RECEIVERS {
        let (client, base, token, dep, done) =
            (client.clone(), base.clone(), token.to_owned(), dep.to_owned(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let leases =
                    post(&client, format!("{base}/v1/commands/leases"), &token, lease_body(&dep, 1, 8))
                        .await;
                for lease in leases["leases"].as_array().into_iter().flatten() {
                    let id = lease["commandId"].as_str().unwrap();
                    let answer = json!({"status": "success", "response": {"mode": "inline", "inlineBase64": "SEk="}});
                    let r = client
                        .put(format!("{base}/v1/commands/{id}/response"))
                        .bearer_auth(&token)
                        .json(&answer)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Commands {
        p50_ms: percentile(&took, 0.50),
        p99_ms: percentile(&took, 0.99),
        per_second: done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
    }
}

#[derive(Default)]
struct Report {
    name: String,
    health: Load,
    sync: Option<Load>,
    get: Option<Load>,
    commands: Option<(f64, f64, f64)>,
}

async fn measure(setup: &Setup, what: &str) -> Report {
    let mut report = Report { name: setup.name.clone(), ..Default::default() };
    report.health = load(setup, |c, base, _| c.get(format!("{base}/health"))).await;
    let agents = if what == "commands" { 1 } else { AGENTS };
    let (release, fleet) = fleet(setup, agents).await;
    let fleet = Arc::new(fleet);
    if what == "fleet" || what == "all" {
        let (fleet, release) = (fleet.clone(), release.clone());
        report.sync = Some(
            load(setup, move |c, base, k| {
                let (id, token) = &fleet[k.wrapping_mul(7919) % fleet.len()];
                c.post(format!("{base}/v1/sync")).bearer_auth(token).json(&running(id, &release))
            })
            .await,
        );
    }
    if what == "api" || what == "all" {
        let (fleet, admin) = (fleet.clone(), setup.admin.clone());
        report.get = Some(
            load(setup, move |c, base, k| {
                let (id, _) = &fleet[k.wrapping_mul(7919) % fleet.len()];
                c.get(format!("{base}/v1/deployments/{id}")).bearer_auth(&admin)
            })
            .await,
        );
    }
    if what == "commands" || what == "all" {
        let (dep, token) = &fleet[0];
        let c = commands(setup, dep, token).await;
        report.commands = Some((c.p50_ms, c.p99_ms, c.per_second));
    }
    report
}

fn print(reports: &[Report]) {
    let base = &reports[0];
    let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::NAN };
    for r in reports {
        println!("{}:", r.name);
        let h = &r.health;
        println!(
            "  GET /health (floor):      {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({:.2}x SQLite's)",
            h.rps,
            h.p50_ms,
            h.p99_ms,
            ratio(h.rps, base.health.rps)
        );
        if let (Some(s), Some(b)) = (&r.sync, &base.sync) {
            println!(
                "  POST /v1/sync:            {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  CPU/sync: managers {:>5.0} µs + PostgreSQL {:>5.0} µs  ({:.2}x SQLite's syncs/s)",
                s.rps,
                s.p50_ms,
                s.p99_ms,
                s.manager_cpu_us,
                s.postgres_cpu_us,
                ratio(s.rps, b.rps)
            );
        }
        if let (Some(g), Some(b)) = (&r.get, &base.get) {
            println!(
                "  GET /v1/deployments/{{id}}: {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  CPU/request: managers {:>5.0} µs + PostgreSQL {:>5.0} µs  ({:.2}x SQLite's)",
                g.rps,
                g.p50_ms,
                g.p99_ms,
                g.manager_cpu_us,
                g.postgres_cpu_us,
                ratio(g.rps, b.rps)
            );
        }
        if let (Some((p50, p99, per_second)), Some((_, _, b))) = (r.commands, base.commands) {
            println!(
                "  commands: round trip p50 {p50:.2} ms  p99 {p99:.2} ms; {per_second:.0} commands/s with {RECEIVERS} receivers and {CREATORS} creators  ({:.2}x SQLite's commands/s)",
                ratio(per_second, b)
            );
        }
        if r.name.contains("replicas")
            && let Some(one) = reports.iter().find(|o| o.name == BALANCED_ONE)
        {
            let of = |x: Option<f64>, y: Option<f64>| match (x, y) {
                (Some(x), Some(y)) => format!("{:.2}x", ratio(x, y)),
                _ => "-".to_owned(),
            };
            println!(
                "  vs {BALANCED_ONE}: GET /health {:.2}x, syncs/s {}, GET /v1/deployments/{{id}} {}, commands/s {}",
                ratio(r.health.rps, one.health.rps),
                of(r.sync.map(|l| l.rps), one.sync.map(|l| l.rps)),
                of(r.get.map(|l| l.rps), one.get.map(|l| l.rps)),
                of(r.commands.map(|c| c.2), one.commands.map(|c| c.2)),
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let mut reports = Vec::new();
    let mut setups = vec![(1, false, false), (1, true, false)];
    if args.replicas > 1 {
        setups.push((1, true, true));
        setups.push((args.replicas, true, true));
    }
    for (replicas, postgres, balanced) in setups {
        let setup = Setup::start(replicas, postgres, balanced).await;
        eprintln!("== {}", setup.name);
        reports.push(measure(&setup, &args.what).await);
        drop(setup);
    }
    print(&reports);
    println!(
        "(one machine, {} cores: the managers, PostgreSQL, nginx and the load generator share them)",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
}
