//! `cargo xtask bench commands`: the commands protocol with the local KV and payload store.
//!
//! 1. Round trip as the caller sees it: create -> a receiver's long-poll lease -> respond -> the
//!    caller's status poll sees SUCCEEDED; p50/p99 over sequential commands.
//! 2. Sustained commands/second with 16 receivers (long poll, up to 8 leases each) and 16
//!    creators, for 5 s.
//!
//! Three alternating rounds; each figure is the best round (`common::report`).
//!
//! Reference from the same run: `GET /health` round trips on the same server and client (the HTTP
//! floor); one command round trip is five HTTP requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::report::{Figure, Floor};

use alien_core::{DeploymentEvent, Id};
use alien_store::{DeploymentPatch, DeploymentStore};
use common::Setup;
use serde_json::{Value, json};

const SEQUENTIAL: usize = 500;
const RECEIVERS: usize = 16;
const CREATORS: usize = 16;
const SUSTAIN: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;

struct Bench {
    base: String,
    admin: String,
    dep: String,
    token: String,
    client: reqwest::Client,
}

async fn start() -> (Bench, tempfile::TempDir) {
    let setup = Setup::new().await;
    let (base, store, dir) = (setup.base.clone(), setup.store.clone(), setup.dir.path().to_owned());
    let kv: Arc<dyn alien_commands::Kv> =
        Arc::new(alien_local::SqliteKv::open(&dir.join("kv")).await.unwrap());
    let signer = alien_commands::UrlSigner::new(store.derive_key("commands url signing").await);
    let payloads: Arc<dyn alien_commands::PayloadStore> = Arc::new(
        alien_local::FsPayloadStore::new(dir.join("payloads"), base.clone(), signer.clone()),
    );
    let engine = Arc::new(alien_commands::CommandEngine::new(
        kv.clone(),
        payloads.clone(),
        signer,
        base.clone(),
    ));
    setup.serve(setup.builder().commands(engine, kv, payloads)).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let stack: Value =
        serde_json::from_str(include_str!("../../../../shared/fixtures/valid-web.json")).unwrap();
    client
        .post(format!("{base}/v1/releases"))
        .bearer_auth(&setup.admin)
        .json(&json!({"stack": {"local": stack}}))
        .send()
        .await
        .unwrap();
    let (dep, token) = setup.deployment(&client).await;
    let id = Id::parse_any(&dep).unwrap();
    let release = store.get_deployment(&id).await.unwrap().unwrap().desired_release_id.unwrap();
    let patch = |r: Option<Id>| DeploymentPatch {
        current_release_id: r,
        reason: "bench".into(),
        ..Default::default()
    };
    store.transition(&id, DeploymentEvent::BeginProvisioning, patch(None)).await.unwrap();
    store.transition(&id, DeploymentEvent::StepSucceeded, patch(Some(release))).await.unwrap();
    let admin = setup.admin.clone();
    (Bench { base, admin, dep, token, client }, setup.dir)
}

impl Bench {
    async fn create(&self) -> String {
        let body = json!({"deploymentId": self.dep, "command": "echo", "params": {"mode": "inline", "inlineBase64": "aGk="}});
        let r: Value = self
            .client
            .post(format!("{}/v1/commands", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["commandId"].as_str().unwrap().to_owned()
    }

    /// A receiver: long-polls and answers everything at once, until `stop`.
    async fn receive(&self, max: u32, stop: &AtomicBool, done: &AtomicU64) {
        let body = json!({"deploymentId": self.dep, "target": {"resourceId": "api", "resourceType": "container"}, "maxLeases": max, "leaseSeconds": 30, "waitSeconds": 1});
        while !stop.load(Ordering::Relaxed) {
            let leases: Value = self
                .client
                .post(format!("{}/v1/commands/leases", self.base))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            // Handlers run concurrently, as the receiver library runs them.
            let responses = leases["leases"].as_array().unwrap().iter().map(|lease| async move {
                let url =
                    lease["envelope"]["responseHandling"]["submitResponseUrl"].as_str().unwrap();
                let r = self.client.put(url).json(&json!({"status": "success", "response": {"mode": "inline", "inlineBase64": "aGk="}})).send().await.unwrap();
                assert_eq!(r.status(), 200);
                done.fetch_add(1, Ordering::Relaxed);
            });
            futures_util::future::join_all(responses).await;
        }
    }

    async fn wait_succeeded(&self, id: &str) {
        loop {
            let s: Value = self
                .client
                .get(format!("{}/v1/commands/{id}", self.base))
                .bearer_auth(&self.admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if s["state"] == "SUCCEEDED" {
                return;
            }
            assert!(s["state"] != "FAILED" && s["state"] != "EXPIRED", "{s}");
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let (bench, _dir) = start().await;
    let bench = Arc::new(bench);
    let (mut p50s, mut p99s, mut floors, mut sustained, mut health_rates) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither gets the warmer machine.
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for reference_first in order {
            if reference_first {
                floors.push(5.0 * health_round_trip_p50(&bench).await);
                health_rates.push(health_rate(&bench).await);
            } else {
                let (p50, p99) = sequential_round_trips(&bench).await;
                p50s.push(p50);
                p99s.push(p99);
                sustained.push(sustained_rate(&bench).await);
            }
        }
    }
    Figure::new(
        "commands",
        format!("command round trip p50 (create, long-poll lease, respond, SUCCEEDED seen), {SEQUENTIAL} sequential"),
        "ms",
    )
    .lower_is_better()
    .rounds(p50s)
    .against("five GET /health round trips (p50 x 5)", floors.clone())
    .floor(Floor::Below(2.5))
    .report();
    Figure::new("commands", "command round trip p99", "ms")
        .lower_is_better()
        .rounds(p99s)
        .against("five GET /health round trips (p50 x 5)", floors)
        .report();
    Figure::new(
        "commands",
        format!("sustained commands/s answered, {RECEIVERS} receivers and {CREATORS} creators"),
        "/s",
    )
    .rounds(sustained)
    .against(format!("GET /health req/s, {} clients", RECEIVERS + CREATORS), health_rates)
    .floor(Floor::AtLeast(4000.0))
    .report();
}

/// The HTTP floor on this machine: p50 of sequential `GET /health` round trips, in ms.
async fn health_round_trip_p50(bench: &Bench) -> f64 {
    let mut floor = Vec::new();
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        bench
            .client
            .get(format!("{}/health", bench.base))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        floor.push(t.elapsed());
    }
    floor.sort();
    pct(&floor, 0.5)
}

/// `GET /health` requests/second with as many clients as the sustained run has.
async fn health_rate(bench: &Arc<Bench>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..RECEIVERS + CREATORS)
        .map(|_| {
            let (bench, stop, done) = (bench.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let url = format!("{}/health", bench.base);
                    bench.client.get(url).send().await.unwrap().bytes().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(SUSTAIN).await;
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    rate
}

/// Sequential round trips with one long-polling receiver: (p50, p99) in ms.
async fn sequential_round_trips(bench: &Arc<Bench>) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (bench, stop, done) = (bench.clone(), stop.clone(), done.clone());
        tokio::spawn(async move { bench.receive(1, &stop, &done).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut trips = Vec::new();
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        let id = bench.create().await;
        bench.wait_succeeded(&id).await;
        trips.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    receiver.await.unwrap();
    trips.sort();
    eprintln!("round trips: p50 {:.2} ms, p99 {:.2} ms", pct(&trips, 0.5), pct(&trips, 0.99));
    (pct(&trips, 0.5), pct(&trips, 0.99))
}

/// Commands answered per second with long-polling receivers and busy creators.
async fn sustained_rate(bench: &Arc<Bench>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..RECEIVERS {
        let (bench, stop, done) = (bench.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move { bench.receive(8, &stop, &done).await }));
    }
    let started = Instant::now();
    for _ in 0..CREATORS {
        let (bench, stop) = (bench.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                bench.create().await;
            }
        }));
    }
    tokio::time::sleep(SUSTAIN).await;
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!("sustained: {rate:.0} commands/s answered");
    rate
}
