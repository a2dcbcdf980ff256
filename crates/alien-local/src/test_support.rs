//! For peer tests (feature `peer-tests`): a podman of their own, configured as testing.md says
//! for these machines (runc, cgroupfs, vfs storage, slirp4netns reaching the host's loopback at
//! 10.0.2.2, file events, bounded ulimits), so tests never touch the user's containers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

use std::path::Path;

/// Writes `containers.conf` and `storage.conf` under `dir/podman` and returns the variables
/// that point podman at them (pass them to the engine's processes).
pub fn isolated_podman(dir: &Path) -> Vec<(String, String)> {
    let podman = dir.join("podman");
    std::fs::create_dir_all(podman.join("tmp")).unwrap();
    std::fs::write(
        podman.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             netns = \"slirp4netns\"\n[engine]\nnetwork_cmd_options = [\"allow_host_loopback=true\"]\n\
             runtime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             tmp_dir = \"{}\"\n",
            podman.join("tmp").display()
        ),
    )
    .unwrap();
    std::fs::write(
        podman.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
            podman.join("run").display(),
            podman.join("root").display()
        ),
    )
    .unwrap();
    vec![
        ("CONTAINERS_CONF".to_owned(), podman.join("containers.conf").display().to_string()),
        ("CONTAINERS_STORAGE_CONF".to_owned(), podman.join("storage.conf").display().to_string()),
    ]
}
