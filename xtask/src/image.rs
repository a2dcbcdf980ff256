//! `cargo xtask image hello-app [--push HOST:PORT/REPO:TAG [--creds USER:TOKEN]]`: the test
//! application as an OCI image, built without a container daemon (`spec/testing.md`).
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

use crate::{cargo, on_path, root, run};

/// The only target installed here; `+crt-static` makes its binaries static.
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The layout's tag, as skopeo names it after `oci:DIR:`.
const TAG: &str = "hello-app:latest";
/// The port the image declares and its `PORT` default.
const PORT: u16 = 8080;
/// Every date in the image (2024-01-01T00:00:00Z), so that its digest depends on the binary only.
const PINNED_DATE: &str = "2024-01-01T00:00:00Z";
const PINNED_UNIX: u64 = 1_704_067_200;

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    push: Option<String>,
    creds: Option<String>,
}

fn parse(args: &[String]) -> Result<Request, String> {
    const USAGE: &str =
        "usage: cargo xtask image hello-app [--push HOST:PORT/REPO:TAG [--creds USER:TOKEN]]";
    let mut args = args.iter().map(String::as_str);
    match args.next() {
        Some("hello-app") => {}
        Some(other) => return Err(format!("unknown image {other:?}; known: hello-app\n{USAGE}")),
        None => return Err(USAGE.to_owned()),
    }
    let mut request = Request { push: None, creds: None };
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
    let dir = root().join("target/hello-app");
    let binary = build(&dir)?;
    let layout = dir.join("oci");
    let digest = package(&dir, &binary, &layout)?;
    let source = format!("oci:{}:{TAG}", layout.display());
    eprintln!("image: {source} ({digest})");
    println!("digest: {digest}");
    if let Some(destination) = request.push {
        let pushed = push(&dir, &source, &destination, request.creds.as_deref())?;
        println!("pushed: {destination}@{pushed}");
    }
    Ok(())
}

/// `cargo build --release -p hello-app`, static, in `dir`; returns the checked binary.
fn build(dir: &Path) -> Result<PathBuf, String> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--locked", "-p", "hello-app", "--target", TARGET])
        .arg("--target-dir")
        .arg(dir)
        // With --target these flags reach the binary only, not build scripts or proc macros.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    run("build hello-app (static, release)", cmd)?;
    let binary = dir.join(TARGET).join("release/hello-app");
    let bytes =
        std::fs::read(&binary).map_err(|e| format!("cannot read {}: {e}", binary.display()))?;
    if let Some(interpreter) = elf_interpreter(&bytes)? {
        return Err(format!(
            "{} is dynamically linked (interpreter {interpreter}); it cannot run in an empty image",
            binary.display()
        ));
    }
    if on_path("file") {
        let mut file = Command::new("file");
        file.arg("-b").arg(&binary).stdout(std::io::stderr());
        run("file hello-app", file)?;
    }
    eprintln!("hello-app: static, {} KiB", bytes.len() / 1024);
    Ok(binary)
}

/// The ELF program interpreter (`PT_INTERP`) a binary asks for; `None` for a static binary.
fn elf_interpreter(elf: &[u8]) -> Result<Option<String>, String> {
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

/// A fresh OCI layout at `layout` holding `binary` at `/hello-app`; returns the manifest digest.
///
/// The layer comes from `umoci unpack` + `umoci repack` of a bundle, not from `umoci insert`:
/// umoci 0.4.7 (Debian 12) writes an insert layer without the tar padding and end-of-archive
/// blocks, which `tar` and Go's archive/tar (podman, skopeo) reject as an unexpected EOF.
fn package(dir: &Path, binary: &Path, layout: &Path) -> Result<String, String> {
    let bundle = dir.join("bundle");
    for old in [layout, bundle.as_path()] {
        if old.exists() {
            std::fs::remove_dir_all(old)
                .map_err(|e| format!("cannot remove the old {}: {e}", old.display()))?;
        }
    }
    let image = format!("{}:{TAG}", layout.display());
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
    // Without root, map the caller to uid 0 so /hello-app is root's in the image.
    if !running_as_root() {
        unpack.push("--rootless");
    }
    unpack.push(&bundle_arg);
    run("umoci unpack", umoci(&unpack))?;
    let rootfs = bundle.join("rootfs");
    let target = rootfs.join("hello-app");
    std::fs::copy(binary, &target).map_err(|e| format!("cannot copy the binary: {e}"))?;
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", target.display()))?;
    // The layer's tar records both times.
    for path in [&target, &rootfs] {
        std::fs::File::open(path)
            .and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(PINNED_UNIX)))
            .map_err(|e| format!("cannot pin the mtime of {}: {e}", path.display()))?;
    }
    run(
        "umoci repack",
        umoci(&[
            "repack",
            "--image",
            &image,
            "--history.created",
            PINNED_DATE,
            "--history.created_by",
            "cargo xtask image hello-app",
            &bundle_arg,
        ]),
    )?;
    let port = format!("{PORT}/tcp");
    let env = format!("PORT={PORT}");
    run(
        "umoci config",
        umoci(&[
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
            "--config.entrypoint",
            "/hello-app",
            "--config.exposedports",
            &port,
            "--config.env",
            &env,
            "--config.label",
            "org.opencontainers.image.title=hello-app",
        ]),
    )?;
    run("umoci gc", umoci(&["gc", "--layout", &layout_arg]))?;
    manifest_digest(layout)
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The digest of the manifest tagged [`TAG`] in the layout's `index.json`.
fn manifest_digest(layout: &Path) -> Result<String, String> {
    let path = layout.join("index.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == TAG)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{} has no manifest tagged {TAG}", path.display()))
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
        assert_eq!(parse(&args("hello-app")).unwrap(), Request { push: None, creds: None });
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert!(parse(&args("")).is_err());
        assert!(parse(&args("other-app")).unwrap_err().contains("known: hello-app"));
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
