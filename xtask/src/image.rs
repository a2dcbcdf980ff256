//! `cargo xtask image hello-app|manager [--push HOST:PORT/REPO:TAG [--creds USER:TOKEN]]`: the
//! test application, or the manager, as an OCI image built without a container daemon
//! (`spec/testing.md`; the manager's image: docs/container-image.md).
//!
//! `manager`: the static release binary of [`crate::dist::build_static`] in the root file system
//! [`manager_rootfs`] lays out, packaged by umoci into `target/images/alien-manager/oci`, tag
//! `alien-manager:latest`; the same tree as `target/images/alien-manager/rootfs.tar` is what the
//! repository's `Dockerfile` adds.
//!
//! The binary is linked statically against glibc (the musl target is not installable on these
//! machines) into its own target directory, checked to have no ELF interpreter, and put alone at
//! `/hello-app` in an OCI layout by umoci: `target/hello-app/oci`, tag `hello-app:latest`
//! (`oci:target/hello-app/oci:hello-app:latest` for skopeo and podman). File times and created
//! dates are pinned, so the same binary always gives the same digest. `--push` copies it to a
//! registry with skopeo over plain HTTP (what a manager on `http://127.0.0.1:PORT` serves).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::{on_path, root, run};

/// The layout's tag, as skopeo names it after `oci:DIR:`.
const TAG: &str = "hello-app:latest";
/// The port the image declares and its `PORT` default.
const PORT: u16 = 8080;
/// Every date in the image (2024-01-01T00:00:00Z), so that its digest depends on the binary only.
const PINNED_DATE: &str = "2024-01-01T00:00:00Z";
const PINNED_UNIX: u64 = 1_704_067_200;

/// The images this task builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    HelloApp,
    Manager,
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    which: Which,
    push: Option<String>,
    creds: Option<String>,
}

fn parse(args: &[String]) -> Result<Request, String> {
    const USAGE: &str = "usage: cargo xtask image hello-app|manager [--push HOST:PORT/REPO:TAG [--creds USER:TOKEN]]";
    let mut args = args.iter().map(String::as_str);
    let which = match args.next() {
        Some("hello-app") => Which::HelloApp,
        Some("manager") => Which::Manager,
        Some(other) => {
            return Err(format!("unknown image {other:?}; known: hello-app, manager\n{USAGE}"));
        }
        None => return Err(USAGE.to_owned()),
    };
    let mut request = Request { which, push: None, creds: None };
    while let Some(flag) = args.next() {
        let slot = match flag {
            "--push" => &mut request.push,
            "--creds" => &mut request.creds,
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        };
        match args.next() {
            Some(value) if !value.starts_with("--") => *slot = Some(value.to_owned()),
            _ => return Err(format!("{flag} needs a value\n{USAGE}")),
        }
    }
    if request.creds.is_some() && request.push.is_none() {
        return Err(format!("--creds only goes with --push\n{USAGE}"));
    }
    if request.creds.as_deref().is_some_and(|c| !c.contains(':')) {
        return Err(format!("--creds must be USER:TOKEN\n{USAGE}"));
    }
    Ok(request)
}

/// Builds the image (and pushes it when asked); prints its digest on stdout.
pub fn image(args: &[String]) -> Result<(), String> {
    let request = parse(args)?;
    let mut tools = vec!["umoci"];
    if request.push.is_some() {
        tools.push("skopeo");
    }
    if let Some(missing) = tools.iter().find(|tool| !on_path(tool)) {
        return Err(format!("{missing} is not installed; run `cargo xtask setup`"));
    }
    let (dir, tag, digest) = match request.which {
        Which::HelloApp => {
            let dir = root().join("target/hello-app");
            let binary = build(&dir)?;
            let layout = dir.join("oci");
            let spec = Spec {
                tag: TAG,
                created_by: "cargo xtask image hello-app",
                config: vec![
                    "--config.entrypoint".into(),
                    "/hello-app".into(),
                    "--config.exposedports".into(),
                    format!("{PORT}/tcp"),
                    "--config.env".into(),
                    format!("PORT={PORT}"),
                    "--config.label".into(),
                    "org.opencontainers.image.title=hello-app".into(),
                ],
            };
            let digest = package(&dir, &layout, &spec, |rootfs| {
                let target = rootfs.join("hello-app");
                install_file(binary.as_path(), &target, 0o755)
            })?;
            (dir, TAG, digest)
        }
        Which::Manager => {
            let dir = root().join("target/images/alien-manager");
            let binaries = crate::dist::build_static(&["alien-manager"])?;
            let binary = binaries.first().ok_or("the build named no binary")?;
            // The tree the Dockerfile adds, as a tar beside the layout: `ADD` of a local tar
            // keeps owners and modes, which `COPY` cannot set on a directory (`/data`).
            let context = dir.join("rootfs");
            if context.exists() {
                std::fs::remove_dir_all(&context)
                    .map_err(|e| format!("cannot remove the old {}: {e}", context.display()))?;
            }
            manager_rootfs(&context, binary)?;
            write_tree_tar(&context, &dir.join("rootfs.tar"))?;
            std::fs::remove_dir_all(&context)
                .map_err(|e| format!("cannot remove {}: {e}", context.display()))?;
            let spec = Spec {
                tag: MANAGER_TAG,
                created_by: "cargo xtask image manager",
                config: manager_config(),
            };
            let digest =
                package(&dir, &dir.join("oci"), &spec, |rootfs| manager_rootfs(rootfs, binary))?;
            (dir, MANAGER_TAG, digest)
        }
    };
    let layout = dir.join("oci");
    let source = format!("oci:{}:{tag}", layout.display());
    eprintln!("image: {source} ({digest})");
    println!("digest: {digest}");
    if let Some(destination) = request.push {
        let pushed = push(&dir, &source, &destination, request.creds.as_deref())?;
        println!("pushed: {destination}@{pushed}");
    }
    Ok(())
}

/// The manager image's tag in its layout.
const MANAGER_TAG: &str = "alien-manager:latest";
/// The user the manager runs as in its image, and the owner of `/data`.
pub const MANAGER_UID: u32 = 10001;

/// The manager's root file system: the binary, a user to run as, `/data` (its state, owned by
/// that user), `/app` (its working directory, where a mounted `alien-manager.toml` is read) with
/// `/app/.alien-manager` (the default state directory) pointing at `/data`, and `/tmp`.
fn manager_rootfs(rootfs: &Path, binary: &Path) -> Result<(), String> {
    let dir = |path: &Path, mode: u32, owner: u32| -> Result<(), String> {
        std::fs::create_dir_all(path)
            .and_then(|()| {
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            })
            .and_then(|()| std::os::unix::fs::chown(path, Some(owner), Some(owner)))
            .map_err(|e| format!("cannot make {}: {e}", path.display()))
    };
    dir(rootfs, 0o755, 0)?;
    for (path, mode, owner) in [
        ("usr/local/bin", 0o755, 0),
        ("etc", 0o755, 0),
        ("app", 0o755, 0),
        ("tmp", 0o1777, 0),
        ("data", 0o700, MANAGER_UID),
    ] {
        dir(&rootfs.join(path), mode, owner)?;
    }
    install_file(binary, &rootfs.join("usr/local/bin/alien-manager"), 0o755)?;
    let text = |path: &str, contents: String| -> Result<(), String> {
        let target = rootfs.join(path);
        std::fs::write(&target, contents)
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        pin_mtime(&target)
    };
    text(
        "etc/passwd",
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             alien:x:{MANAGER_UID}:{MANAGER_UID}:alien-manager:/data:/sbin/nologin\n"
        ),
    )?;
    text("etc/group", format!("root:x:0:\nalien:x:{MANAGER_UID}:\n"))?;
    let link = rootfs.join("app/.alien-manager");
    std::os::unix::fs::symlink("/data", &link)
        .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
    for path in ["usr/local/bin", "usr/local", "usr", "etc", "app", "tmp", "data", ""] {
        pin_mtime(&rootfs.join(path))?;
    }
    Ok(())
}

/// A tar of the tree at `dir` (its root as `.`) with owners, modes, times and links as they are.
fn write_tree_tar(dir: &Path, out: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", out.display());
    let file = std::fs::File::create(out).map_err(fail)?;
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    tar.append_dir_all(".", dir).map_err(fail)?;
    tar.into_inner().and_then(|f| f.sync_all()).map_err(fail)
}

/// The manager image's configuration (umoci flags).
fn manager_config() -> Vec<String> {
    [
        "--config.entrypoint",
        "/usr/local/bin/alien-manager",
        "--config.cmd",
        "serve",
        "--config.user",
        "10001:10001",
        "--config.workingdir",
        "/app",
        "--config.volume",
        "/data",
        "--config.exposedports",
        "8080/tcp",
        "--config.env",
        "PATH=/usr/local/bin",
        "--config.stopsignal",
        "SIGTERM",
        "--config.label",
        "org.opencontainers.image.title=alien-manager",
        "--config.label",
        "org.opencontainers.image.source=https://github.com/alien-manager/alien-manager",
        "--config.label",
        "org.opencontainers.image.licenses=Apache-2.0",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        "--config.label".to_owned(),
        format!("org.opencontainers.image.version={}", crate::dist::version()),
    ])
    .collect()
}

/// Copies `from` to `to` with `mode` and the pinned time.
fn install_file(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    std::fs::copy(from, to).map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", to.display()))?;
    pin_mtime(to)
}

/// Sets the modification time the layer's tar records to [`PINNED_UNIX`].
fn pin_mtime(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(PINNED_UNIX)))
        .map_err(|e| format!("cannot pin the mtime of {}: {e}", path.display()))
}

/// How [`package`] configures an image.
struct Spec {
    tag: &'static str,
    created_by: &'static str,
    /// `umoci config` flags besides the dates and the platform.
    config: Vec<String>,
}

/// `cargo build --release -p hello-app`, static, in `dir`; returns the checked binary.
fn build(dir: &Path) -> Result<PathBuf, String> {
    let built = crate::dist::build_static_in(dir, &["hello-app"])?;
    built.into_iter().next().ok_or_else(|| "the build named no binary".to_owned())
}

/// The ELF program interpreter (`PT_INTERP`) a binary asks for; `None` for a static binary.
pub(crate) fn elf_interpreter(elf: &[u8]) -> Result<Option<String>, String> {
    const PT_INTERP: u32 = 3;
    let bad = || "not a 64-bit little-endian ELF file".to_owned();
    let u16_at = |at: usize| -> Result<u16, String> {
        let b = elf.get(at..at + 2).ok_or_else(bad)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| -> Result<u32, String> {
        let b = elf.get(at..at + 4).ok_or_else(bad)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| -> Result<usize, String> {
        let b: [u8; 8] = elf.get(at..at + 8).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        usize::try_from(u64::from_le_bytes(b)).map_err(|_| bad())
    };
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(bad());
    }
    let (table, entry_size, entries) = (u64_at(0x20)?, usize::from(u16_at(0x36)?), u16_at(0x38)?);
    for n in 0..usize::from(entries) {
        let header = table + n * entry_size;
        if u32_at(header)? == PT_INTERP {
            let (offset, size) = (u64_at(header + 8)?, u64_at(header + 32)?);
            let path = elf.get(offset..offset + size).ok_or_else(bad)?;
            let path = String::from_utf8_lossy(path).trim_end_matches('\0').to_owned();
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// A fresh OCI layout at `layout` with one layer, the files `fill` puts in the root file system,
/// configured by `spec`; returns the manifest digest.
///
/// The layer comes from `umoci unpack` + `umoci repack` of a bundle, not from `umoci insert`:
/// umoci 0.4.7 (Debian 12) writes an insert layer without the tar padding and end-of-archive
/// blocks, which `tar` and Go's archive/tar (podman, skopeo) reject as an unexpected EOF.
fn package(
    dir: &Path,
    layout: &Path,
    spec: &Spec,
    fill: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<String, String> {
    let bundle = dir.join("bundle");
    for old in [layout, bundle.as_path()] {
        if old.exists() {
            std::fs::remove_dir_all(old)
                .map_err(|e| format!("cannot remove the old {}: {e}", old.display()))?;
        }
    }
    let image = format!("{}:{}", layout.display(), spec.tag);
    let umoci = |args: &[&str]| {
        let mut cmd = Command::new("umoci");
        cmd.args(args).stdout(std::io::stderr());
        cmd
    };
    let layout_arg = layout.display().to_string();
    let bundle_arg = bundle.display().to_string();
    run("umoci init", umoci(&["init", "--layout", &layout_arg]))?;
    run("umoci new", umoci(&["new", "--image", &image]))?;
    let mut unpack = vec!["unpack", "--image", &image];
    // Without root, map the caller to uid 0 so the files are root's in the image.
    if !running_as_root() {
        unpack.push("--rootless");
    }
    unpack.push(&bundle_arg);
    run("umoci unpack", umoci(&unpack))?;
    let rootfs = bundle.join("rootfs");
    fill(&rootfs)?;
    // The layer's tar records the root's time too.
    pin_mtime(&rootfs)?;
    run(
        "umoci repack",
        umoci(&[
            "repack",
            "--image",
            &image,
            "--history.created",
            PINNED_DATE,
            "--history.created_by",
            spec.created_by,
            &bundle_arg,
        ]),
    )?;
    let mut config = vec![
        "config",
        "--image",
        &image,
        "--no-history",
        "--created",
        PINNED_DATE,
        "--os",
        "linux",
        "--architecture",
        "amd64",
    ];
    config.extend(spec.config.iter().map(String::as_str));
    run("umoci config", umoci(&config))?;
    run("umoci gc", umoci(&["gc", "--layout", &layout_arg]))?;
    manifest_digest(layout, spec.tag)
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The digest of the manifest tagged `tag` in the layout's `index.json`.
fn manifest_digest(layout: &Path, tag: &str) -> Result<String, String> {
    let path = layout.join("index.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{} has no manifest tagged {tag}", path.display()))
}

/// `skopeo copy` to `docker://destination` over plain HTTP; returns the pushed digest.
fn push(
    dir: &Path,
    source: &str,
    destination: &str,
    creds: Option<&str>,
) -> Result<String, String> {
    let digest_file = dir.join("pushed.digest");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--dest-tls-verify=false"]);
    if let Some(creds) = creds {
        cmd.args(["--dest-creds", creds]);
    }
    cmd.arg("--digestfile")
        .arg(&digest_file)
        .arg(source)
        .arg(format!("docker://{destination}"))
        .stdout(std::io::stderr());
    run(&format!("skopeo copy to {destination}"), cmd)?;
    let digest = std::fs::read_to_string(&digest_file)
        .map_err(|e| format!("cannot read {}: {e}", digest_file.display()))?;
    Ok(digest.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_push_and_creds_in_any_order() {
        let request = parse(&args("hello-app --creds u:t --push 127.0.0.1:5000/app:v1")).unwrap();
        assert_eq!(request.push.as_deref(), Some("127.0.0.1:5000/app:v1"));
        assert_eq!(request.creds.as_deref(), Some("u:t"));
        assert_eq!(
            parse(&args("hello-app")).unwrap(),
            Request { which: Which::HelloApp, push: None, creds: None }
        );
        assert_eq!(parse(&args("manager")).unwrap().which, Which::Manager);
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert!(parse(&args("")).is_err());
        assert!(parse(&args("other-app")).unwrap_err().contains("known: hello-app, manager"));
        assert!(parse(&args("hello-app --push")).unwrap_err().contains("needs a value"));
        assert!(parse(&args("hello-app --creds u:t")).unwrap_err().contains("only goes with"));
        assert!(parse(&args("hello-app --push r/a:b --creds token")).is_err());
        assert!(parse(&args("hello-app --tag x")).is_err());
    }

    #[test]
    fn finds_the_interpreter_of_a_dynamic_binary_only() {
        // The running test binary is dynamically linked (tests are not built static).
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interpreter = elf_interpreter(&own).unwrap().unwrap();
        assert!(interpreter.contains("ld-linux"), "{interpreter}");
        let mut static_header = vec![0x7f, b'E', b'L', b'F', 2, 1];
        static_header.resize(64, 0);
        assert_eq!(elf_interpreter(&static_header).unwrap(), None, "no program headers");
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
        assert!(elf_interpreter(&own[..64]).is_err());
    }
}
