//! kill -9 during 10 parallel pushes: after a restart every acknowledged push pulls back
//! byte-identical, and no partial blob is visible in storage.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use alien_registry_conformance::layout::{build_layout, referenced_blobs};
use common::{Server, printed_admin_token, serve};
use sha2::Digest as _;

fn skopeo_copy(src: &str, dest: &str, creds: &str) -> bool {
    Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(["--src-creds", creds, "--dest-creds", creds])
        .arg(src)
        .arg(dest)
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo (install it with `cargo xtask setup`): {e}"))
        .status
        .success()
}

/// Every blob file in the registry's storage holds exactly the bytes its name promises. A write
/// cut by the kill can leave object_store's staging file (`{digest}#{n}`): never a blob (no read
/// names it, renaming it over the blob is what a write ends with), so it is not checked.
fn assert_no_partial_blob(state: &Path) {
    let dir = state.join("registry/blobs/sha256");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no blob storage at {}: {e}", dir.display()))
        .collect();
    assert!(!entries.is_empty(), "acknowledged pushes left no blobs in {}", dir.display());
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains('#') {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            name,
            "partial or corrupt blob visible: {}",
            path.display()
        );
    }
}

/// Pushes every layout in parallel and kills the registry with SIGKILL once `ack_before_kill`
/// pushes are acknowledged: which pushes were acknowledged at the kill.
fn push_then_kill(
    layouts: &[std::path::PathBuf],
    state: &Path,
    ack_before_kill: usize,
) -> (Vec<usize>, String) {
    let server = Server::start(serve(state, &[]));
    let token = printed_admin_token(&server).unwrap();
    let creds = format!("x:{token}");
    let host = server.addr.clone();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = layouts
        .iter()
        .enumerate()
        .map(|(i, layout)| {
            let (acknowledged, creds, host) = (acknowledged.clone(), creds.clone(), host.clone());
            let src = format!("oci:{}:latest", layout.display());
            std::thread::spawn(move || {
                if skopeo_copy(&src, &format!("docker://{host}/crash/img{i}:v1"), &creds) {
                    acknowledged.lock().unwrap().push(i);
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while acknowledged.lock().unwrap().len() < ack_before_kill {
        assert!(
            std::time::Instant::now() < deadline,
            "{ack_before_kill} pushes not through in 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // What was acknowledged when the kill landed (a push finishing after it is not).
    let at_kill = acknowledged.lock().unwrap().clone();
    server.kill9();
    for handle in handles {
        handle.join().unwrap();
    }
    let after = acknowledged.lock().unwrap().clone();
    assert!(at_kill.iter().all(|i| after.contains(i)));
    (after, creds)
}

#[test]
fn kill_9_during_parallel_pushes_loses_no_acknowledged_push() {
    let work = tempfile::tempdir().unwrap();
    let layouts: Vec<_> = (0..10)
        .map(|i| {
            let dir = work.path().join(format!("src{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            build_layout(&dir, 2, 4 * 1024 * 1024, 1000 + i).unwrap()
        })
        .collect();
    // The kill must land while pushes are in flight: when all of them were acknowledged anyway
    // (a fast machine), kill earlier.
    let mut landed = None;
    for (attempt, ack_before_kill) in [3, 1, 0].into_iter().enumerate() {
        let state = work.path().join(format!("state{attempt}"));
        let (acknowledged, creds) = push_then_kill(&layouts, &state, ack_before_kill);
        eprintln!(
            "attempt {attempt}: {} of {} pushes acknowledged when kill -9 landed",
            acknowledged.len(),
            layouts.len()
        );
        if acknowledged.len() < layouts.len() {
            landed = Some((state, acknowledged, creds));
            break;
        }
    }
    let (state, acknowledged, creds) =
        landed.expect("every push was acknowledged before kill -9 in three attempts");
    assert!(acknowledged.len() < layouts.len(), "pushes were in flight at the kill");
    assert_no_partial_blob(&state);

    let server = Server::start(serve(&state, &[]));
    let host = server.addr.clone();
    for &i in &acknowledged {
        let back = work.path().join(format!("back{i}"));
        assert!(
            skopeo_copy(
                &format!("docker://{host}/crash/img{i}:v1"),
                &format!("oci:{}:latest", back.display()),
                &creds
            ),
            "acknowledged push {i} cannot be pulled after the restart"
        );
        assert_eq!(
            referenced_blobs(&layouts[i]).unwrap(),
            referenced_blobs(&back).unwrap(),
            "push {i} is not byte-identical"
        );
    }
    // The interrupted pushes can be retried to completion.
    let interrupted = (0..layouts.len()).find(|i| !acknowledged.contains(i)).unwrap();
    assert!(skopeo_copy(
        &format!("oci:{}:latest", layouts[interrupted].display()),
        &format!("docker://{host}/crash/retry:v1"),
        &creds
    ));
    assert_no_partial_blob(&state);
}
