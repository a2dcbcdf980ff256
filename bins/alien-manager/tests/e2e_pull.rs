//! Pull mode end to end, against the real binaries and podman (feature `peer-tests`): an
//! `alien-agent` registers with a deployment-group token, converges to `running` and serves the
//! hello-app; killed with SIGKILL its deployment becomes `stale` after 3 heartbeat intervals;
//! restarted from its state directory it is `running` again with the same containers; a new
//! release rolls out through it; delete with cleanup removes every container and the agent exits.

#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::database::TestDatabase;
use common::local::{
    containers_of, delete_with_cleanup, group, hello_app_layout, peer_dir, podman_env,
    push_hello_app, release, stack, wait_message,
};
use common::{Server, TEST_KEY, call, printed_admin_token, serve, serve_deploying_on};
use reqwest::Method;
use serde_json::Value;

/// The agent binary, built next to the manager's (`cargo xtask test` builds every binary of the
/// workspace before running tests).
fn agent_bin() -> PathBuf {
    let manager = PathBuf::from(env!("CARGO_BIN_EXE_alien-manager"));
    let agent = manager.with_file_name("alien-agent");
    assert!(
        agent.is_file(),
        "{} is missing: build it with `cargo build -p alien-agent` (cargo xtask test builds it)",
        agent.display()
    );
    agent
}

/// A running agent; killed (SIGKILL) when dropped.
struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    fn start(dir: &Path, env: &[(String, String)], args: &[&str]) -> AgentProcess {
        let log = unique(dir.join("agent-0.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(agent_bin())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        AgentProcess { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the agent to exit on its own; its status.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the agent did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unique(mut path: PathBuf) -> PathBuf {
    let mut n = 0;
    while path.exists() {
        n += 1;
        path.set_file_name(format!("agent-{n}.log"));
    }
    path
}

async fn deployment(server: &Server, admin: &str, dep: &str) -> Value {
    let (status, d) =
        call(server, admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
    assert_eq!(status, 200, "{d}");
    d
}

/// Waits until `check` holds for the deployment; fails on a failed status or the deadline.
async fn wait_for(
    server: &Server,
    admin: &str,
    dep: &str,
    what: &str,
    within: Duration,
    agent: &AgentProcess,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let d = deployment(server, admin, dep).await;
        if check(&d) {
            return d;
        }
        let status = d["status"].as_str().unwrap_or("");
        assert!(!status.ends_with("failed"), "deployment failed: {d}\nagent:\n{}", agent.log());
        assert!(
            Instant::now() < deadline,
            "not {what} within {within:?}: {d}\nagent:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

store_matrix! {
async fn an_agent_registers_runs_goes_stale_resumes_updates_and_deletes() {
    let dir = peer_dir("e2e-pull-");
    let (_copy, layout) = hello_app_layout();
    let env = podman_env(dir.path());
    // Heartbeats every second: stale after 3 s of silence.
    let state = dir.path().join("state");
    let db = TestDatabase::for_test().await;
    let db_env = db.env();
    let mut manager_env = vec![
        ("ALIEN_DATABASE__ENCRYPTION_KEY", TEST_KEY),
        ("ALIEN_SERVER__HEARTBEAT_INTERVAL_SECS", "1"),
    ];
    manager_env.extend(db_env.iter().map(|(k, v)| (*k, v.as_str())));
    let server = Server::start(serve(&state, &manager_env));
    let admin = printed_admin_token(&server).unwrap();
    let image = push_hello_app(&server, &admin, &layout, "v1");
    let first = release(&server, &admin, stack(&image, "pulled")).await;
    let group_id = group(&server, &admin, "edge").await;
    let group_id = group_id.as_str();
    let (status, token) = call(
        &server,
        &admin,
        Method::POST,
        &format!("/v1/deployment-groups/{group_id}/tokens"),
        None,
    )
    .await;
    assert!((200..300).contains(&status), "{token}");
    let group_token = token["token"].as_str().unwrap().to_owned();

    // 1. Register with the group token and converge.
    let state_dir = dir.path().join("agent");
    let manager_url = server.url();
    let state_arg = state_dir.to_str().unwrap().to_owned();
    let first_args = [
        "--manager-url",
        manager_url.as_str(),
        "--token",
        group_token.as_str(),
        "--name",
        "store-1",
        "--state-dir",
        state_arg.as_str(),
        "--interval",
        "1",
    ];
    let started = Instant::now();
    let mut agent = AgentProcess::start(dir.path(), &env, &first_args);
    let token_file = state_dir.join("deployment.token");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !token_file.exists() {
        assert!(Instant::now() < deadline, "the agent did not register:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the deployment token is private");
        let dir_mode = std::fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700, "the state directory is private");
    }
    let (status, listed) = call(
        &server,
        &admin,
        Method::GET,
        &format!("/v1/deployments?deploymentGroupId={group_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one deployment registered: {listed}");
    assert_eq!(items[0]["name"], "store-1");
    assert_eq!(items[0]["deploymentModel"], "pull");
    let dep = items[0]["id"].as_str().unwrap().to_owned();
    let running =
        wait_for(&server, &admin, &dep, "running", Duration::from_secs(60), &agent, |d| {
            d["status"] == "running" && d["currentReleaseId"] == first["id"]
        })
        .await;
    eprintln!("pull deployment running in {:.1}s", started.elapsed().as_secs_f64());
    assert!(running["lastHeartbeatAt"].is_string(), "{running}");
    let url =
        running["stackState"]["resources"]["web"]["outputs"]["url"].as_str().unwrap().to_owned();
    wait_message(&url, "pulled", Duration::from_secs(10)).await;
    let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(page["deploymentId"], dep.as_str());
    let replicas = containers_of(&env, &dep);
    assert_eq!(replicas.len(), 2, "two replicas: {replicas:?}");

    // 2. A killed agent: stale after 3 missed intervals (1 s each) since its last sync, as the
    // deployment's events and its last heartbeat record it (no wall-clock bound on the test).
    agent.kill9();
    let killed = Instant::now();
    let stale = wait_for(&server, &admin, &dep, "stale", Duration::from_secs(30), &agent, |d| {
        d["status"] == "stale"
    })
    .await;
    eprintln!("stale {:.1}s after the agent was killed", killed.elapsed().as_secs_f64());
    let last_sync: chrono::DateTime<chrono::Utc> =
        stale["lastHeartbeatAt"].as_str().unwrap().parse().unwrap();
    let (_, events) =
        call(&server, &admin, Method::GET, &format!("/v1/deployments/{dep}/events"), None).await;
    let marked = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == "stale")
        .unwrap_or_else(|| panic!("no stale event: {events}"));
    let marked_at: chrono::DateTime<chrono::Utc> = marked["at"].as_str().unwrap().parse().unwrap();
    assert!(
        marked_at - last_sync >= chrono::Duration::seconds(3),
        "stale only after 3 missed intervals: last sync {last_sync}, stale at {marked_at}"
    );

    // 3. Restarted from its state directory (no token needed): running again, same containers.
    let resume_args = [
        "--manager-url",
        manager_url.as_str(),
        "--state-dir",
        state_arg.as_str(),
        "--interval",
        "1",
    ];
    let mut agent = AgentProcess::start(dir.path(), &env, &resume_args);
    wait_for(&server, &admin, &dep, "running again", Duration::from_secs(30), &agent, |d| {
        d["status"] == "running"
    })
    .await;
    assert_eq!(containers_of(&env, &dep), replicas, "no duplicate, no replaced container");
    wait_message(&url, "pulled", Duration::from_secs(10)).await;
    let (_, listed) = call(
        &server,
        &admin,
        Method::GET,
        &format!("/v1/deployments?deploymentGroupId={group_id}"),
        None,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "no second deployment: {listed}");

    // 4. The manager goes away: what runs keeps answering; back, the agent syncs again.
    let port = server.port();
    let (status, _) = server.terminate();
    assert!(status.success(), "clean exit: {status}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_message(&url, "pulled", Duration::from_secs(2)).await;
    let mut again = serve_deploying_on(&state, port, &manager_env);
    again.arg("--disable-deployment-loop");
    let server = Server::start(again);
    let back = Instant::now();
    let d = wait_for(&server, &admin, &dep, "synced again", Duration::from_secs(30), &agent, |d| {
        d["status"] == "running"
            && d["lastHeartbeatAt"].as_str().is_some_and(|at| {
                chrono::DateTime::parse_from_rfc3339(at).is_ok_and(|at| {
                    at > chrono::Utc::now() - chrono::Duration::from_std(back.elapsed()).unwrap()
                })
            })
    })
    .await;
    eprintln!(
        "agent synced {:.1}s after the manager came back: {}",
        back.elapsed().as_secs_f64(),
        d["lastHeartbeatAt"]
    );
    assert_eq!(containers_of(&env, &dep), replicas, "nothing was restarted");

    // 5. A new release reaches the agent on its next sync and rolls out.
    let second = release(&server, &admin, stack(&image, "pulled again")).await;
    wait_for(&server, &admin, &dep, "updated", Duration::from_secs(90), &agent, |d| {
        d["status"] == "running" && d["currentReleaseId"] == second["id"]
    })
    .await;
    wait_message(&url, "pulled again", Duration::from_secs(10)).await;
    let updated = containers_of(&env, &dep);
    assert_eq!(updated.len(), 2, "the old replicas are gone");

    // A redeploy of the release it runs: taken up and spent, nothing replaced, no endless loop.
    let (status, r) =
        call(&server, &admin, Method::POST, &format!("/v1/deployments/{dep}/redeploy"), None).await;
    assert_eq!(status, 200, "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for(&server, &admin, &dep, "redeployed", Duration::from_secs(30), &agent, |d| {
        d["status"] == "running" && d["retryRequested"] == false
    })
    .await;
    assert_eq!(containers_of(&env, &dep), updated, "same spec: the same replicas");

    // 6. Delete with cleanup: the agent removes everything and exits.
    delete_with_cleanup(&server, &admin, &dep).await;
    let exit = agent.wait_exit(Duration::from_secs(60));
    assert!(exit.success(), "agent exit {exit}:\n{}", agent.log());
    let (status, _) =
        call(&server, &admin, Method::GET, &format!("/v1/deployments/{dep}"), None).await;
    assert_eq!(status, 404, "the deployment is gone");
    assert!(containers_of(&env, &dep).is_empty(), "containers left behind");
}
}
