//! The receiver library (`alien_commands::receiver`) against a real in-process manager on
//! 127.0.0.1 with the local KV and payload store: echo round trips (inline, manager-moved and
//! uploaded params; inline and uploaded responses), the error codes (`UNKNOWN_COMMAND`,
//! `HANDLER_ERROR`, `HANDLER_TIMEOUT`), capacity, graceful drain and an unreachable manager.
//! Deployments are driven to `running` through the store, as in `tests/commands.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alien_commands::receiver::{
    CommandContext, HandlerError, Receiver, ReceiverConfig, ReceiverError,
};
use alien_commands::wire::CommandTarget;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use support::{Api, b64, running};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn config(api: &Api, dep: &str, token: &str) -> ReceiverConfig {
    ReceiverConfig::new(
        format!("{}/v1", api.base),
        token,
        dep,
        CommandTarget { resource_id: "api".into(), resource_type: "container".into() },
    )
}

/// A receiver running in the background until [`Running::stop`].
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ReceiverError>>,
}

impl Running {
    fn start(receiver: Receiver) -> Running {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(receiver.run(async move {
            let _ = rx.await;
        }));
        Running { stop: Some(tx), task }
    }

    /// Signals shutdown and waits for the drain; returns how long that took.
    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the receiver drains within 30 s")
            .unwrap()
            .unwrap();
        started.elapsed()
    }
}

/// Creates a command with inline params; returns its id.
async fn create(api: &Api, token: &str, dep: &str, command: &str, params: &[u8]) -> String {
    create_with(api, token, json!({"deploymentId": dep, "command": command, "params": {"mode": "inline", "inlineBase64": b64(params)}})).await
}

async fn create_with(api: &Api, token: &str, body: Value) -> String {
    let (status, created) = api.call(Method::POST, "/v1/commands", Some(token), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["commandId"].as_str().unwrap().to_owned()
}

/// Creates a command whose params are uploaded (mode storage); returns its id.
async fn create_uploaded(
    api: &Api,
    token: &str,
    dep: &str,
    command: &str,
    params: &[u8],
) -> String {
    let body = json!({"deploymentId": dep, "command": command, "params": {"mode": "storage", "size": params.len()}});
    let (status, created) = api.call(Method::POST, "/v1/commands", Some(token), Some(body)).await;
    assert_eq!((status, created["next"].as_str()), (201, Some("upload")), "{created}");
    let id = created["commandId"].as_str().unwrap().to_owned();
    let put = created["storageUpload"]["putRequest"]["backend"]["url"].as_str().unwrap();
    let r = reqwest::Client::new().put(put).body(params.to_vec()).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (status, r) = api
        .call(
            Method::POST,
            &format!("/v1/commands/{id}/upload-complete"),
            Some(token),
            Some(json!({"size": params.len()})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    id
}

/// Polls the command until it is terminal (or fails the test after `within`).
async fn terminal(api: &Api, id: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let status = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
        if matches!(status["state"].as_str(), Some("SUCCEEDED" | "FAILED" | "EXPIRED")) {
            return status;
        }
        assert!(Instant::now() < until, "command {id} not terminal in {within:?}: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bytes of a successful command's response, inline or downloaded.
async fn output(status: &Value) -> Vec<u8> {
    assert_eq!(status["state"], "SUCCEEDED", "{status}");
    let body = &status["response"]["response"];
    match body["mode"].as_str() {
        Some("inline") => base64::engine::general_purpose::STANDARD
            .decode(body["inlineBase64"].as_str().unwrap())
            .unwrap(),
        Some("storage") => {
            let url = body["storageGetRequest"]["backend"]["url"].as_str().unwrap();
            reqwest::get(url).await.unwrap().bytes().await.unwrap().to_vec()
        }
        _ => panic!("no response body: {status}"),
    }
}

fn echo(receiver: Receiver) -> Receiver {
    receiver.handle("echo", |ctx: CommandContext| async move {
        Ok::<_, HandlerError>(ctx.into_params())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trips_small_and_large_payloads_both_ways() {
    let api = Api::start().await;
    let (dep, group_token, token) = running(&api).await;
    let receiver = Running::start(echo(Receiver::new(config(&api, &dep, &token))));

    // Small params, small output: inline both ways, delivered to the waiting long poll.
    let started = Instant::now();
    let small = create(&api, &group_token, &dep, "echo", b"hello").await;
    let status = terminal(&api, &small, Duration::from_secs(10)).await;
    assert_eq!(output(&status).await, b"hello");
    assert_eq!(status["response"]["response"]["mode"], "inline");
    // Delivered to the waiting long poll, not at the end of its 30 s wait (a generous bound:
    // at once on a quiet machine).
    assert!(started.elapsed() < Duration::from_secs(25), "long poll delivers at once");

    // 100 KB inline params (the manager moves them to storage): fetched with the presigned GET;
    // the output is above maxInlineBytes, so it is uploaded and submitted as storage.
    let medium: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let id = create(&api, &group_token, &dep, "echo", &medium).await;
    let status = terminal(&api, &id, Duration::from_secs(10)).await;
    assert_eq!(status["response"]["response"]["mode"], "storage", "{status}");
    assert_eq!(output(&status).await, medium);

    // 200 KB params uploaded by the caller, 200 KB output uploaded by the receiver.
    let large: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let id = create_uploaded(&api, &group_token, &dep, "echo", &large).await;
    let status = terminal(&api, &id, Duration::from_secs(10)).await;
    assert_eq!(status["response"]["response"]["mode"], "storage", "{status}");
    assert_eq!(status["response"]["response"]["size"], 200_000);
    assert_eq!(output(&status).await, large);

    // Exactly maxInlineBytes stays inline; one byte more goes to storage.
    for (size, mode) in [(12 * 1024, "inline"), (12 * 1024 + 1, "storage")] {
        let id = create(&api, &group_token, &dep, "echo", &vec![b'x'; size]).await;
        let status = terminal(&api, &id, Duration::from_secs(10)).await;
        assert_eq!(status["response"]["response"]["mode"], mode, "{size} bytes");
        assert_eq!(output(&status).await.len(), size);
    }
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_and_handler_errors_fail_with_their_codes() {
    let api = Api::start().await;
    let (dep, group_token, token) = running(&api).await;
    let receiver = echo(Receiver::new(config(&api, &dep, &token)))
        .handle("fail", |_ctx: CommandContext| async move {
            Err::<Vec<u8>, _>(HandlerError::new("no such row").with_details(json!({"row": 7})))
        })
        .handle("panic", |_ctx: CommandContext| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<_, HandlerError>(Vec::new())
        });
    let receiver = Running::start(receiver);

    let id = create(&api, &group_token, &dep, "reindex", b"").await;
    let status = terminal(&api, &id, Duration::from_secs(10)).await;
    assert_eq!(status["state"], "FAILED", "{status}");
    assert_eq!(status["response"]["status"], "error");
    assert_eq!(status["response"]["code"], "UNKNOWN_COMMAND");
    assert!(status["response"]["message"].as_str().unwrap().contains("reindex"), "{status}");

    let id = create(&api, &group_token, &dep, "fail", b"").await;
    let status = terminal(&api, &id, Duration::from_secs(10)).await;
    assert_eq!(status["state"], "FAILED", "{status}");
    assert_eq!(status["response"]["code"], "HANDLER_ERROR");
    assert_eq!(status["response"]["message"], "no such row");
    assert_eq!(status["response"]["details"], json!({"row": 7}));

    let id = create(&api, &group_token, &dep, "panic", b"").await;
    let status = terminal(&api, &id, Duration::from_secs(10)).await;
    assert_eq!(status["response"]["code"], "HANDLER_ERROR", "{status}");
    assert!(status["response"]["message"].as_str().unwrap().contains("handler bug"), "{status}");

    // The receiver is still serving after all that.
    let id = create(&api, &group_token, &dep, "echo", b"still here").await;
    assert_eq!(output(&terminal(&api, &id, Duration::from_secs(10)).await).await, b"still here");
    receiver.stop().await;
}

/// Sets its flag when dropped: shows that a timed-out handler's future was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn sleeper(receiver: Receiver, dropped: Arc<AtomicBool>) -> Receiver {
    receiver.handle("sleep", move |ctx: CommandContext| {
        let flag = DropFlag(dropped.clone());
        async move {
            let _flag = flag;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, HandlerError>(ctx.into_params())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_past_their_budget_are_cancelled_and_reported() {
    let api = Api::start().await;
    let (dep, group_token, token) = running(&api).await;

    // Budget from the lease: 6 s lease - 5 s margin = 1 s, no deadline -> HANDLER_TIMEOUT.
    let dropped = Arc::new(AtomicBool::new(false));
    let mut short_lease = config(&api, &dep, &token);
    short_lease.lease_seconds = 6;
    let receiver = Running::start(sleeper(Receiver::new(short_lease), dropped.clone()));
    let started = Instant::now();
    let id = create(&api, &group_token, &dep, "sleep", b"").await;
    let status = terminal(&api, &id, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_eq!(status["state"], "FAILED", "{status}");
    assert_eq!(status["response"]["code"], "HANDLER_TIMEOUT", "{status}");
    // Not before its 1 s budget; long before the 60 s the handler would take uncancelled.
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(30), "{took:?}");
    assert!(dropped.load(Ordering::SeqCst), "the handler's future was dropped");
    assert_eq!(status["attempt"], 1, "answered before the lease ran out: no redelivery");
    receiver.stop().await;

    // Budget from a short deadline. The command is EXPIRED at its deadline (commands.md) and an
    // answer after that changes nothing; the receiver cancels the handler at the deadline and
    // answers HANDLER_TIMEOUT at once, so which of the two the manager records first would be a
    // race. The receiver runs on a runtime of its own, held still across the deadline: the manager
    // expires the command while the handler still runs; then the receiver goes on, cancels the
    // handler and submits its late answer, which is ignored.
    let dropped = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let receiver_runtime = runtime.handle().clone();
    let receiver = sleeper(Receiver::new(config(&api, &dep, &token)), dropped.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let receiver_thread = std::thread::spawn(move || {
        runtime.block_on(receiver.run(async move {
            let _ = stopped.await;
        }))
    });
    let deadline = chrono::Utc::now() + chrono::Duration::milliseconds(2000);
    let id = create_with(
        &api,
        &group_token,
        json!({"deploymentId": dep, "command": "sleep", "params": {"mode": "inline", "inlineBase64": ""}, "deadline": deadline.to_rfc3339()}),
    )
    .await;
    let path = format!("/v1/commands/{id}");
    let until = Instant::now() + Duration::from_secs(5);
    while api.admin(Method::GET, &path, None).await["state"] != "DISPATCHED" {
        assert!(Instant::now() < until, "the receiver leases the command");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (held, is_held) = oneshot::channel::<()>();
    let (resume, resumed) = std::sync::mpsc::channel::<()>();
    receiver_runtime.spawn(async move {
        let _ = held.send(());
        // Blocks the receiver runtime's only thread: nothing of the receiver runs until `resume`.
        let _ = resumed.recv();
    });
    is_held.await.unwrap();
    let left = (deadline - chrono::Utc::now()).to_std().expect("held before the deadline");
    tokio::time::sleep(left + Duration::from_millis(100)).await;
    let status = api.admin(Method::GET, &path, None).await;
    assert_eq!(status["state"], "EXPIRED", "{status}");
    assert!(!dropped.load(Ordering::SeqCst), "the handler was still running");
    resume.send(()).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while !dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < until, "the handler is cancelled once its budget is spent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // run() returns once the answers of its handlers are submitted.
    let _ = stop.send(());
    tokio::task::spawn_blocking(move || receiver_thread.join()).await.unwrap().unwrap().unwrap();
    let status = api.admin(Method::GET, &path, None).await;
    assert_eq!(status["state"], "EXPIRED", "the late HANDLER_TIMEOUT is ignored: {status}");
    assert!(status["response"].is_null(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_bounds_concurrent_handlers() {
    let api = Api::start().await;
    let (dep, group_token, token) = running(&api).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(create(&api, &group_token, &dep, "slow", format!("{i}").as_bytes()).await);
    }
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut two = config(&api, &dep, &token);
    two.capacity = 2;
    let (current, max) = (now.clone(), peak.clone());
    let receiver = Receiver::new(two).handle("slow", move |ctx: CommandContext| {
        let (current, max) = (current.clone(), max.clone());
        async move {
            let running = current.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            current.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(ctx.into_params())
        }
    });
    let started = Instant::now();
    let receiver = Running::start(receiver);
    for (i, id) in ids.iter().enumerate() {
        let status = terminal(&api, id, Duration::from_secs(20)).await;
        assert_eq!(output(&status).await, format!("{i}").as_bytes());
    }
    let took = started.elapsed();
    assert_eq!(peak.load(Ordering::SeqCst), 2, "two at a time, never more");
    assert!(took >= Duration::from_millis(850), "6 x 300 ms two at a time: {took:?}");
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_running_handlers_and_stops_leasing() {
    let api = Api::start().await;
    let (dep, group_token, token) = running(&api).await;
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let receiver = echo(Receiver::new(config(&api, &dep, &token))).handle(
        "slow",
        move |_ctx: CommandContext| {
            let started_tx = started_tx.clone();
            async move {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(Duration::from_millis(800)).await;
                Ok::<_, HandlerError>(b"finished".to_vec())
            }
        },
    );
    let receiver = Running::start(receiver);
    let id = create(&api, &group_token, &dep, "slow", b"").await;
    tokio::time::timeout(Duration::from_secs(10), started_rx).await.unwrap().unwrap();
    let drained = receiver.stop().await;
    assert!(drained >= Duration::from_millis(600), "run() waited for the handler: {drained:?}");
    // The response was submitted before run() returned.
    let status = api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await;
    assert_eq!(status["state"], "SUCCEEDED", "{status}");
    assert_eq!(output(&status).await, b"finished");
    // Nothing is leased after shutdown.
    let later = create(&api, &group_token, &dep, "echo", b"x").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = api.admin(Method::GET, &format!("/v1/commands/{later}"), None).await;
    assert_eq!(status["state"], "PENDING", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_manager_is_retried_until_shutdown() {
    let target = CommandTarget { resource_id: "api".into(), resource_type: "container".into() };
    // A port that accepts and hangs up at once: every lease request fails; count the tries.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let tries = Arc::new(AtomicUsize::new(0));
    let counter = tries.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let config = ReceiverConfig::new(url.clone(), "token", "dep_x", target.clone());
    let started = Instant::now();
    let receiver = Running::start(echo(Receiver::new(config)));
    // Retried: three tries however long a loaded machine takes to make them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tries.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "lease requests are not retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!receiver.task.is_finished(), "run() keeps going while the manager is down");
    let elapsed = started.elapsed();
    receiver.stop().await;
    let tries_now = tries.load(Ordering::SeqCst);
    let per_second = tries_now as f64 / elapsed.as_secs_f64();
    assert!(per_second < 40.0, "with backoff, not in a tight loop: {tries_now} in {elapsed:?}");

    // A stop during a backoff ends it instead of waiting it out (here a 20 s one).
    let mut patient = ReceiverConfig::new(url.clone(), "token", "dep_x", target.clone());
    patient.retry.initial_delay = Duration::from_secs(20);
    patient.retry.max_delay = Duration::from_secs(20);
    let before = tries.load(Ordering::SeqCst);
    let receiver = Running::start(echo(Receiver::new(patient)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while tries.load(Ordering::SeqCst) == before {
        assert!(Instant::now() < deadline, "the first lease request never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tries.load(Ordering::SeqCst), before + 1, "in its 20 s backoff");
    let stopped = receiver.stop().await;
    assert!(stopped < Duration::from_secs(10), "shutdown interrupts the backoff: {stopped:?}");

    // Nothing listening at all: same.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = ReceiverConfig::new(format!("http://{closed}/v1"), "token", "dep_x", target);
    let receiver = Running::start(echo(Receiver::new(config)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!receiver.task.is_finished());
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_retried_not_fatal() {
    let api = Api::start().await;
    let (dep, group_token, token) = running(&api).await;
    let receiver = Running::start(echo(Receiver::new(config(&api, &dep, "not-a-token"))));
    let id = create(&api, &group_token, &dep, "echo", b"later").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!receiver.task.is_finished(), "a 401 on leasing does not stop the receiver");
    assert_eq!(
        api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await["state"],
        "PENDING"
    );
    receiver.stop().await;
    let receiver = Running::start(echo(Receiver::new(config(&api, &dep, &token))));
    let status = terminal(&api, &id, Duration::from_secs(10)).await;
    assert_eq!(output(&status).await, b"later");
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_that_comes_back_is_served_again() {
    // The receiver talks to the manager through a proxy that hangs up on every connection until
    // `up` is set, then forwards: the manager is unreachable at first, then comes back.
    let api = Api::start().await;
    let (dep, group_token, token) = running(&api).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}/v1", listener.local_addr().unwrap());
    let upstream = api.base.trim_start_matches("http://").to_owned();
    let up = Arc::new(AtomicBool::new(false));
    let is_up = up.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !is_up.load(Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let mut through_proxy = config(&api, &dep, &token);
    through_proxy.commands_url = proxy;
    let receiver = Running::start(echo(Receiver::new(through_proxy)));
    let id = create(&api, &group_token, &dep, "echo", b"back").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!receiver.task.is_finished(), "run() keeps going while the manager is down");
    assert_eq!(
        api.admin(Method::GET, &format!("/v1/commands/{id}"), None).await["state"],
        "PENDING"
    );
    up.store(true, Ordering::SeqCst);
    // Backoff is capped at 5 s (default policy), so the next try comes within that.
    let status = terminal(&api, &id, Duration::from_secs(10)).await;
    assert_eq!(output(&status).await, b"back");
    receiver.stop().await;
}
