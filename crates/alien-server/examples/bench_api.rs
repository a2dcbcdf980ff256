//! `cargo xtask bench api`: the core API's two numbers, each with a reference from the same run.
//!
//! 1. `POST /v1/releases` marking 100,000 running deployments update-pending (target < 2 s).
//! 2. `GET /v1/deployments/{id}` requests/second and p50/p99 latency with 64 concurrent clients,
//!    against `GET /health` on the same server with the same load generator: the HTTP stack's
//!    ceiling on this machine, so the ratio shows what auth + store cost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

use std::time::{Duration, Instant};

mod common;

use alien_core::Platform;
use alien_store::DeploymentStore;
use common::Setup;
use common::report::{Figure, Floor};
use serde_json::{Value, json};

const DEPLOYMENTS: u32 = 100_000;
const CLIENTS: usize = 64;
const LOAD: Duration = Duration::from_secs(5);

const ROUNDS: usize = 3;

#[tokio::main]
async fn main() {
    // 1. Release marking, on a fresh store each round; the reference is one plain UPDATE of the
    //    same rows on the same file (what any set-based marking costs at least).
    let (mut marking, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (took, reference) = release_marking().await;
        marking.push(took);
        plain.push(reference);
    }
    Figure::new(
        "api",
        format!("release marking {DEPLOYMENTS} running deployments update-pending"),
        "ms",
    )
    .lower_is_better()
    .rounds(marking)
    .against("one UPDATE of every row (same file)", plain)
    .floor(Floor::Below(500.0))
    .report();

    // 2. GET /v1/deployments/{id} against GET /health, alternating.
    let setup = Setup::new().await;
    let (store, admin, base) = (setup.store.clone(), setup.admin.clone(), setup.base.clone());
    setup.serve(setup.builder()).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let group = store.create_group("bench", DEPLOYMENTS + 10).await.unwrap();
    let one =
        store.seed_running_deployments(&group.id, Platform::Local, DEPLOYMENTS).await.unwrap();
    let health_url = format!("{base}/health");
    let get_url = format!("{base}/v1/deployments/{one}");
    // Warm up both paths.
    load(&client, health_url.clone(), None, Duration::from_secs(1)).await;
    load(&client, get_url.clone(), Some(admin.clone()), Duration::from_secs(1)).await;
    let (mut healths, mut gets) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for health_first in order {
            if health_first {
                healths.push(load(&client, health_url.clone(), None, LOAD).await);
            } else {
                gets.push(load(&client, get_url.clone(), Some(admin.clone()), LOAD).await);
            }
        }
    }
    for (h, g) in healths.iter().zip(&gets) {
        eprintln!(
            "round: GET /health {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms); GET /v1/deployments/{{id}} {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms)",
            h.rps, h.p50_ms, h.p99_ms, g.rps, g.p50_ms, g.p99_ms
        );
    }
    Figure::new("api", "GET /v1/deployments/{id}, 64 clients", "req/s")
        .rounds(gets.iter().map(|l| l.rps).collect())
        .against("GET /health", healths.iter().map(|l| l.rps).collect())
        .floor(Floor::RatioAtLeast(0.6))
        .report();
    Figure::new("api", "GET /v1/deployments/{id} p99, 64 clients", "ms")
        .lower_is_better()
        .rounds(gets.iter().map(|l| l.p99_ms).collect())
        .against("GET /health p99", healths.iter().map(|l| l.p99_ms).collect())
        .report();
}

/// One release over `DEPLOYMENTS` running deployments on a fresh store: how long its
/// `POST /v1/releases` took, and one plain UPDATE of every row of the same table after it (ms).
async fn release_marking() -> (f64, f64) {
    let setup = Setup::new().await;
    let (store, admin, base) = (setup.store.clone(), setup.admin.clone(), setup.base.clone());
    setup.serve(setup.builder()).await;
    let client = reqwest::Client::new();
    let group = store.create_group("bench", DEPLOYMENTS + 10).await.unwrap();
    let seeded = Instant::now();
    store.seed_running_deployments(&group.id, Platform::Local, DEPLOYMENTS).await.unwrap();
    eprintln!("seeded {DEPLOYMENTS} running deployments in {:.1?}", seeded.elapsed());
    let stack: Value =
        serde_json::from_str(include_str!("../../../../shared/fixtures/valid-web.json")).unwrap();
    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/releases"))
        .bearer_auth(&admin)
        .json(&json!({"stack": {"local": stack}}))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), 201);
    let pending = store
        .list_deployments(
            &alien_store::DeploymentFilter {
                status: Some(alien_core::DeploymentStatus::UpdatePending),
                ..Default::default()
            },
            &alien_store::PageRequest { limit: 1, cursor: None },
        )
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 1, "deployments were marked");
    let reference = store.bench_plain_update_all().await.unwrap();
    eprintln!(
        "release marking: {:.0} ms; one UPDATE of every row: {:.0} ms",
        took.as_secs_f64() * 1000.0,
        reference.as_secs_f64() * 1000.0
    );
    (took.as_secs_f64() * 1000.0, reference.as_secs_f64() * 1000.0)
}

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `CLIENTS` concurrent loops of GET for `duration`; every answer must be 200.
async fn load(
    client: &reqwest::Client,
    url: String,
    token: Option<String>,
    duration: Duration,
) -> Load {
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let t0 = Instant::now();
                let mut request = client.get(&url);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                let _ = response.bytes().await.unwrap();
                latencies.push(t0.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    Load {
        rps: all.len() as f64 / started.elapsed().as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}
