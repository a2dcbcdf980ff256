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
use serde_json::{Value, json};

const DEPLOYMENTS: u32 = 100_000;
const CLIENTS: usize = 64;
const LOAD_SECONDS: u64 = 5;

#[tokio::main]
async fn main() {
    let setup = Setup::new().await;
    let (store, admin, base) = (setup.store.clone(), setup.admin.clone(), setup.base.clone());
    setup.serve(setup.builder()).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();

    // 1. Release marking.
    let group = store.create_group("bench", DEPLOYMENTS + 10).await.unwrap();
    let seeded = Instant::now();
    let one =
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
    println!(
        "release marking: {DEPLOYMENTS} running deployments marked update-pending in {:.0} ms (target < 2000 ms: {:.2}x of budget)",
        took.as_secs_f64() * 1000.0,
        took.as_secs_f64() / 2.0
    );

    // 2. GET /v1/deployments/{id} against GET /health.
    let health = load(&client, format!("{base}/health"), None).await;
    let get = load(&client, format!("{base}/v1/deployments/{one}"), Some(admin.clone())).await;
    println!(
        "GET /health (reference):          {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({CLIENTS} clients)",
        health.rps, health.p50_ms, health.p99_ms
    );
    println!(
        "GET /v1/deployments/{{id}}:         {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({CLIENTS} clients)",
        get.rps, get.p50_ms, get.p99_ms
    );
    println!("ratio GET deployment / GET health: {:.2}", get.rps / health.rps);
}

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `CLIENTS` concurrent loops of GET for `LOAD_SECONDS`; every answer must be 200.
async fn load(client: &reqwest::Client, url: String, token: Option<String>) -> Load {
    let end = Instant::now() + Duration::from_secs(LOAD_SECONDS);
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
    Load { rps: all.len() as f64 / LOAD_SECONDS as f64, p50_ms: pct(0.50), p99_ms: pct(0.99) }
}
