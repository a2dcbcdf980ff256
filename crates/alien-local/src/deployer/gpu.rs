//! GPUs for the local platform: the host's CDI devices (Container Device Interface, the
//! specification podman and docker read from `/etc/cdi` and `/var/run/cdi`), and which of them
//! a container's `gpu: {type, count}` gets. A request the host cannot meet is refused before
//! anything starts: a container never runs without the GPUs it asked for.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where CDI specifications are looked for when the options name no other directories.
pub const DEFAULT_CDI_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// The parts of a CDI specification that name devices.
#[derive(Deserialize)]
struct Spec {
    kind: String,
    #[serde(default)]
    devices: Vec<Device>,
}

#[derive(Deserialize)]
struct Device {
    name: String,
}

/// The fully qualified CDI device names (`nvidia.com/gpu=0`) in the specifications of `dirs`,
/// sorted; `all` is left out (a count is asked for, not every device). Unreadable or malformed
/// files are skipped with a warning, as the engines do.
pub fn cdi_devices(dirs: &[PathBuf]) -> Vec<String> {
    let mut names = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            match read_spec(&file) {
                Ok(Some(spec)) => names.extend(
                    spec.devices
                        .into_iter()
                        .filter(|d| d.name != "all")
                        .map(|d| format!("{}={}", spec.kind, d.name)),
                ),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "skipping a CDI specification")
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn read_spec(file: &Path) -> Result<Option<Spec>, String> {
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or_default();
    if !matches!(extension, "json" | "yaml" | "yml") {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    if extension == "json" {
        serde_json::from_str(&text).map(Some).map_err(|e| e.to_string())
    } else {
        serde_yaml_ng::from_str(&text).map(Some).map_err(|e| e.to_string())
    }
}

/// The CDI kind a `gpu.type` asks for: its vendor (`nvidia-t4` -> `nvidia.com/gpu`); `None`
/// for a vendor without a known CDI kind.
pub fn kind_of(gpu_type: &str) -> Option<&'static str> {
    let vendor = gpu_type.split(['-', '_', ' ']).next().unwrap_or_default().to_ascii_lowercase();
    match vendor.as_str() {
        "nvidia" => Some("nvidia.com/gpu"),
        "amd" => Some("amd.com/gpu"),
        "intel" => Some("intel.com/gpu"),
        _ => None,
    }
}

/// The devices container `id` gets for `count` GPUs of `gpu_type` among `available`, or why it
/// cannot have them (the message names the container, what it asked and what the host has).
pub fn assign(
    id: &str,
    gpu_type: &str,
    count: u32,
    available: &[String],
    dirs: &[PathBuf],
) -> Result<Vec<String>, String> {
    let Some(kind) = kind_of(gpu_type) else {
        return Err(format!(
            "container {id}: gpu.type `{gpu_type}` names no vendor the local platform knows \
             (nvidia-..., amd-..., intel-...)"
        ));
    };
    let prefix = format!("{kind}=");
    let matching: Vec<&String> = available.iter().filter(|d| d.starts_with(&prefix)).collect();
    if matching.len() < count as usize {
        let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(format!(
            "container {id}: gpu asks for {count} `{gpu_type}` GPU(s); this host has {} CDI \
             device(s) of kind {kind} (looked in {}); install the vendor's container toolkit \
             and generate its CDI specification (NVIDIA: `nvidia-ctk cdi generate --output \
             /etc/cdi/nvidia.yaml`)",
            matching.len(),
            looked.join(", ")
        ));
    }
    Ok(matching.into_iter().take(count as usize).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_read_from_json_and_yaml_specs_and_assigned_by_vendor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nvidia.yaml"),
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits: {}\n\
             - name: \"1\"\n  containerEdits: {}\n- name: all\n  containerEdits: {}\n\
             containerEdits: {}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("amd.json"),
            r#"{"cdiVersion":"0.6.0","kind":"amd.com/gpu","devices":[{"name":"gpu0","containerEdits":{}}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        std::fs::write(dir.path().join("README"), "not a spec").unwrap();
        let dirs = vec![dir.path().to_path_buf(), dir.path().join("absent")];
        let found = cdi_devices(&dirs);
        assert_eq!(found, ["amd.com/gpu=gpu0", "nvidia.com/gpu=0", "nvidia.com/gpu=1"]);

        assert_eq!(
            assign("ml", "nvidia-t4", 2, &found, &dirs).unwrap(),
            ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
        );
        assert_eq!(assign("ml", "amd-mi300x", 1, &found, &dirs).unwrap(), ["amd.com/gpu=gpu0"]);
        let short = assign("ml", "nvidia-a100", 3, &found, &dirs).unwrap_err();
        assert!(short.contains("container ml") && short.contains("has 2 CDI"), "{short}");
        let unknown = assign("ml", "tpu-v5", 1, &found, &dirs).unwrap_err();
        assert!(unknown.contains("gpu.type `tpu-v5`"), "{unknown}");
        assert!(cdi_devices(&[dir.path().join("absent")]).is_empty());
    }
}
