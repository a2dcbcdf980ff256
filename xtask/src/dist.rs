//! `cargo xtask dist`: release archives of the binaries, static, in the layout `[server]
//! releases-url` serves (docs/operations.md, "Installing the agent"):
//!
//! ```text
//! target/dist/{binary}/{version}/{binary}-{target}.tar.gz          the binary alone, mode 0755
//! target/dist/{binary}/{version}/{binary}-{target}.tar.gz.sha256   "{hex}  {file name}\n"
//! ```
//!
//! The binaries are linked statically against glibc ([`build_static`], shared with `xtask image
//! manager`), checked to ask for no ELF interpreter. Archive times are pinned, so the same binary
//! always gives the same archive and checksum.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::{cargo, root, run};

/// The only target built here; `+crt-static` makes its binaries static.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// What `dist` ships.
pub const BINARIES: [&str; 3] = ["alien-manager", "alien-agent", "alien"];
/// Every date in an archive (2024-01-01T00:00:00Z).
const PINNED_UNIX: u64 = 1_704_067_200;

/// The static builds' own target directory.
fn target_dir() -> PathBuf {
    root().join("target/static")
}

/// `cargo build --release` of `binaries` (one package each), static, in `target/static`;
/// returns their paths.
pub fn build_static(binaries: &[&str]) -> Result<Vec<PathBuf>, String> {
    build_static_in(&target_dir(), binaries)
}

/// [`build_static`] in the target directory `dir`.
pub fn build_static_in(dir: &Path, binaries: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--locked", "--target", TARGET]);
    for binary in binaries {
        cmd.args(["-p", binary]);
    }
    cmd.arg("--target-dir")
        .arg(dir)
        // With --target these flags reach the binaries only, not build scripts or proc macros.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    run(&format!("build {} (static, release)", binaries.join(", ")), cmd)?;
    binaries
        .iter()
        .map(|binary| {
            let path = dir.join(TARGET).join("release").join(binary);
            check_static(&path)?;
            Ok(path)
        })
        .collect()
}

/// Fails unless `path` is a static ELF executable.
pub fn check_static(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Some(interpreter) = crate::image::elf_interpreter(&bytes)? {
        return Err(format!(
            "{} is dynamically linked (interpreter {interpreter}); it cannot run in an empty image",
            path.display()
        ));
    }
    eprintln!("{}: static, {} KiB", path.display(), bytes.len() / 1024);
    Ok(())
}

/// The workspace version (every binary has it).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `cargo xtask dist`.
pub fn dist(args: &[String]) -> Result<(), String> {
    if let Some(extra) = args.first() {
        return Err(format!("unknown argument {extra:?}\nusage: cargo xtask dist"));
    }
    let built = build_static(&BINARIES)?;
    let out = root().join("target/dist");
    for (binary, path) in BINARIES.iter().zip(&built) {
        let archive = write_archive(&out, binary, path)?;
        println!("{}", archive.display());
    }
    Ok(())
}

/// Writes `{out}/{binary}/{version}/{binary}-{TARGET}.tar.gz` and its `.sha256`; returns the
/// archive's path.
fn write_archive(out: &Path, binary: &str, path: &Path) -> Result<PathBuf, String> {
    let dir = out.join(binary).join(version());
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = format!("{binary}-{TARGET}.tar.gz");
    let archive = dir.join(&name);
    let bytes = archive_bytes(binary, path)?;
    std::fs::write(&archive, &bytes)
        .map_err(|e| format!("cannot write {}: {e}", archive.display()))?;
    let sum = format!("{}  {name}\n", hex::encode(sha2::Sha256::digest(&bytes)));
    let sum_file = dir.join(format!("{name}.sha256"));
    std::fs::write(&sum_file, sum)
        .map_err(|e| format!("cannot write {}: {e}", sum_file.display()))?;
    Ok(archive)
}

/// A gzipped tar holding the binary alone, as `binary`, mode 0755, owned by 0:0.
fn archive_bytes(binary: &str, path: &Path) -> Result<Vec<u8>, String> {
    let contents =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(PINNED_UNIX);
    header.set_entry_type(tar::EntryType::Regular);
    let fail = |e: std::io::Error| format!("cannot archive {binary}: {e}");
    tar.append_data(&mut header, binary, contents.as_slice()).map_err(fail)?;
    let mut gz = tar.into_inner().map_err(fail)?;
    gz.flush().map_err(fail)?;
    gz.finish().map_err(fail)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::Read as _;

    #[test]
    fn an_archive_holds_the_binary_alone_executable_and_is_the_same_each_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("build")).unwrap();
        let binary = dir.path().join("build/tool");
        std::fs::write(&binary, b"\x7fELF pretend").unwrap();
        let first = write_archive(dir.path(), "tool", &binary).unwrap();
        let bytes = std::fs::read(&first).unwrap();
        let again = write_archive(dir.path(), "tool", &binary).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), bytes, "pinned times: the same archive");
        assert_eq!(first, dir.path().join(format!("tool/{}/tool-{TARGET}.tar.gz", version())));
        let sum = std::fs::read_to_string(first.with_extension("gz.sha256")).unwrap();
        let expected = hex::encode(sha2::Sha256::digest(&bytes));
        assert_eq!(sum, format!("{expected}  tool-{TARGET}.tar.gz\n"));
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("tool"));
        assert_eq!(entry.header().mode().unwrap(), 0o755);
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).unwrap();
        assert_eq!(contents, b"\x7fELF pretend");
        drop(entry);
        assert!(entries.next().is_none());
    }
}
