//! `docs/quickstart.md`, run: every `sh` block of the page (except those marked "not run"), in
//! order, in one `bash -euo pipefail`, against the real `alien` and `alien-manager` binaries and
//! podman (feature `peer-tests`). The page's port is swapped for a free one; nothing else of it is
//! changed.

#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{alien_bin, clean, copy_dir, hello_app_layout, isolated_podman, manager_bin};

const NOT_RUN: &str = "<!-- quickstart: not run";

/// The `sh` blocks of a markdown page, in order, without those after a "not run" comment.
fn runnable_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = page.lines();
    let mut skip_next = false;
    while let Some(line) = lines.next() {
        if line.starts_with(NOT_RUN) {
            skip_next = true;
        } else if line.trim_end() == "```sh" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim_end() != "```").collect();
            if !std::mem::take(&mut skip_next) {
                blocks.push(body.join("\n"));
            }
        }
    }
    blocks
}

#[test]
fn the_blocks_are_found_and_the_skipped_ones_skipped() {
    let page = "a\n```sh\necho one\n```\n<!-- quickstart: not run (x) -->\n```sh\necho two\n```\n\
                ```text\nthree\n```\n```sh\necho four\nand more\n```\n";
    assert_eq!(runnable_blocks(page), vec!["echo one", "echo four\nand more"]);
}

#[test]
fn the_quickstart_page_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let page = std::fs::read_to_string(root.join("docs/quickstart.md")).unwrap();
    let blocks = runnable_blocks(&page);
    assert!(blocks.len() >= 8, "the page's steps: {blocks:#?}");
    for tool in ["podman", "curl", "bash"] {
        assert!(
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())),
            "{tool} is not installed"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut script = String::from("set -euo pipefail\n");
    for block in &blocks {
        script.push_str(block);
        script.push('\n');
    }
    for fixed in ["PORT=8080", "127.0.0.1:8080"] {
        assert!(script.contains(fixed), "the page sets {fixed}");
    }
    let script = script
        .replace("PORT=8080", &format!("PORT={port}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));

    // The reader's directory: the image layout the page's first (not run) block makes.
    let dir = tempfile::Builder::new().prefix("quickstart-").tempdir().unwrap();
    let (_copy, layout) = hello_app_layout();
    copy_dir(&layout, &dir.path().join("hello-app-oci"));
    let bin_dir = alien_bin().parent().unwrap().to_owned();
    assert_eq!(manager_bin().parent().unwrap(), bin_dir);
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let transcript = dir.path().join("transcript.txt");
    let mut cmd = clean(Command::new("bash"));
    cmd.args(["-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .envs(isolated_podman(dir.path()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&transcript).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr.txt")).unwrap())
        // Its own process group: whatever the page left running is stopped with it.
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // `kill -s KILL -- -PGID`: procps reads `kill -KILL -PGID` as options and signals pid -1.
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
    let out = std::fs::read_to_string(&transcript).unwrap();
    let err = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
    let log = std::fs::read_to_string(dir.path().join("alien-manager.log")).unwrap_or_default();
    let shown = format!("stdout:\n{out}\nstderr:\n{err}\nmanager log (tail):\n{}", tail(&log, 40));
    let status = status.unwrap_or_else(|| panic!("the page did not finish in 5 minutes\n{shown}"));
    assert!(status.success(), "the page failed ({status})\n{shown}");
    // What each step shows the reader.
    for expected in ["created deployment", "SUCCEEDED", r#"{"hello":"world"}"#] {
        assert!(out.contains(expected), "{expected:?} is not in the output\n{shown}");
    }
    assert!(err.contains(": running"), "--watch followed the deployment to running\n{shown}");
    assert!(err.contains(": deleted"), "--watch followed the delete\n{shown}");
    assert!(log.contains("alien-manager stopped"), "the manager stopped cleanly\n{shown}");
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
