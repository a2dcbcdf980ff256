//! OCI image layouts for tests, built without a daemon by umoci: an image of random layers, and
//! the bytes of everything its tag references (to compare a round trip byte for byte).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {shown} (install it with `cargo xtask setup`): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Pseudo-random bytes (xorshift; distinct per `seed`, not for security).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    data
}

/// An OCI layout `<dir>/img` whose tag `latest` has `layers` layers of `size` random bytes.
pub fn build_layout(dir: &Path, layers: usize, size: usize, seed: u64) -> Result<PathBuf, String> {
    let layout = dir.join("img");
    let image = format!("{}:latest", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image"]).arg(&image))?;
    for i in 0..layers {
        let file = dir.join(format!("layer{i}.bin"));
        std::fs::write(&file, random_bytes(size, seed.wrapping_add(i as u64 + 1)))
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
        run(Command::new("umoci")
            .args(["insert", "--image"])
            .arg(&image)
            .arg(&file)
            .arg(format!("/data/layer{i}.bin")))?;
        std::fs::remove_file(&file).map_err(|e| e.to_string())?;
    }
    Ok(layout)
}

/// `(digest, bytes)` of the manifest, config and layers the layout's first tag references.
pub fn referenced_blobs(layout: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let read = |p: PathBuf| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()));
    let index: Value =
        serde_json::from_slice(&read(layout.join("index.json"))?).map_err(|e| e.to_string())?;
    let blob = |d: &str| read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:")));
    let manifest_digest =
        index["manifests"][0]["digest"].as_str().ok_or("index.json has no manifest")?.to_owned();
    let manifest_bytes = blob(&manifest_digest)?;
    let manifest: Value = serde_json::from_slice(&manifest_bytes).map_err(|e| e.to_string())?;
    let mut out = vec![(manifest_digest, manifest_bytes)];
    let config = manifest["config"]["digest"].as_str().ok_or("manifest has no config")?.to_owned();
    out.push((config.clone(), blob(&config)?));
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let d = layer["digest"].as_str().ok_or("layer without digest")?.to_owned();
        out.push((d.clone(), blob(&d)?));
    }
    Ok(out)
}
