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

/// Every blob file in the registry's storage holds exactly the bytes its name promises.
fn assert_no_partial_blob(state: &Path) {
    let dir = state.join("registry/blobs/sha256");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no blob storage at {}: {e}", dir.display()))
        .collect();
    assert!(!entries.is_empty(), "acknowledged pushes left no blobs in {}", dir.display());
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            name,
            "partial or corrupt blob visible: {}",
            path.display()
        );
    }
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
    let state = work.path().join("state");
    let server = Server::start(serve(&state, &[]));
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
    // Kill once a few pushes are through and the others are mid-flight.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    server.kill9();
    for handle in handles {
        handle.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!("{} of 10 pushes acknowledged before kill -9", acknowledged.len());
    assert!(!acknowledged.is_empty());
    assert_no_partial_blob(&state);

    let server = Server::start(serve(&state, &[]));
    let host = server.addr.clone();
    for i in acknowledged {
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
    assert!(skopeo_copy(
        &format!("oci:{}:latest", layouts[9].display()),
        &format!("docker://{host}/crash/retry:v1"),
        &creds
    ));
    assert_no_partial_blob(&state);
}
