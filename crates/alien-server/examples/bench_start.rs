//! `cargo xtask bench start`: from process start to the first `200` of `GET /health` (the
//! manager restarting on an existing state directory, as a container restart or a new replica
//! does), against CNCF Distribution's start to its first `200` of `GET /v2/`, measured the same
//! way in the same run: `STARTS` starts of each per round, alternating, `ROUNDS` rounds; each
//! round's figure is its median, the report the best round. Also the manager's idle RSS after
//! start.
//!
//! The manager is the release binary (`ALIEN_MANAGER_BIN`, set by xtask), run as users run it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is the point

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::report::{Figure, Floor};

const ROUNDS: usize = 3;
const STARTS: usize = 11;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether `GET path` on 127.0.0.1:`port` answers 200 now.
fn answers_200(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Spawns `cmd` and polls `GET path` every 0.2 ms until 200: the time it took, and the process.
fn time_to_200(mut cmd: Command, port: u16, path: &str) -> (f64, Child) {
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    loop {
        if answers_200(port, path) {
            return (started.elapsed().as_secs_f64() * 1000.0, child);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{cmd:?} exited before answering: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{cmd:?} did not answer {path}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn manager(bin: &str, state: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    for (name, _) in std::env::vars() {
        if name.starts_with("ALIEN_")
            || ["PORT", "HOST", "BASE_URL", "RUST_LOG"].contains(&name.as_str())
        {
            cmd.env_remove(name);
        }
    }
    cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--state-dir"])
        .arg(state)
        .env("RUST_LOG", "warn");
    cmd
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let bin = std::env::var("ALIEN_MANAGER_BIN")
        .unwrap_or_else(|_| "target/release/alien-manager".into());
    let registry = alien_registry_conformance::distribution_binary().unwrap();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let storage = work.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    // The first start creates the state directory (database, key, admin token).
    let port = free_port();
    let (first, child) = time_to_200(manager(&bin, &state, port), port, "/health");
    stop(child);
    eprintln!("first start (empty state directory): {first:.1} ms");

    let (mut ours, mut theirs, mut idle) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (mut o, mut t) = (Vec::new(), Vec::new());
        for start in 0..STARTS {
            let order = if (round + start) % 2 == 0 { [true, false] } else { [false, true] };
            for manager_first in order {
                let port = free_port();
                if manager_first {
                    let (ms, child) = time_to_200(manager(&bin, &state, port), port, "/health");
                    o.push(ms);
                    if start == STARTS - 1 {
                        std::thread::sleep(Duration::from_secs(1));
                        idle.push(common::report::rss_mib(child.id()));
                    }
                    stop(child);
                } else {
                    let config = work.path().join(format!("registry-{port}.yml"));
                    let text = alien_registry_conformance::distribution_config(port, &storage);
                    std::fs::write(&config, text.unwrap()).unwrap();
                    let mut cmd = Command::new(&registry);
                    cmd.arg("serve").arg(&config);
                    let (ms, child) = time_to_200(cmd, port, "/v2/");
                    t.push(ms);
                    stop(child);
                }
            }
        }
        eprintln!(
            "round {}: alien-manager median {:.1} ms (of {o:.1?}); Distribution median {:.1} ms",
            round + 1,
            median(o.clone()),
            median(t.clone())
        );
        ours.push(median(o));
        theirs.push(median(t));
    }
    Figure::new("start", "process start to GET /health 200 (restart)", "ms")
        .lower_is_better()
        .rounds(ours)
        .against("Distribution: start to GET /v2/ 200", theirs)
        .floor(Floor::RatioAtMost(1.25))
        .report();
    Figure::new("start", "manager idle RSS 1 s after start", "MiB")
        .lower_is_better()
        .rounds(idle)
        .floor(Floor::Below(25.0))
        .report();
}
