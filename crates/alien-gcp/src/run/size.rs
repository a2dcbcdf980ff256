//! Cloud Run instance sizes: a container's desired cpu and memory rounded up to limits Cloud
//! Run accepts (<https://cloud.google.com/run/docs/configuring/services/memory-limits> and
//! `.../cpu`): whole vCPUs 1, 2, 4, 6 or 8; memory from 512 MiB (second generation) to 32 GiB,
//! more than 4 GiB needing 2 vCPU, 8 GiB 4, 16 GiB 6 and 24 GiB 8; and 4, 6 and 8 vCPU needing at
//! least 2, 4 and 4 GiB. Fractional vCPU (below 1) is not used: Cloud Run then requires a
//! request concurrency of 1 and cpu throttling, which would change how a vendor's service
//! behaves. What was asked and what was chosen are kept side by side, so the rounding shows in
//! the deployment's outputs.

use serde::{Deserialize, Serialize};

/// Each vCPU count with the least and most memory (MiB) it runs with.
const SIZES: &[(u32, u64, u64)] =
    &[(1, 512, 4096), (2, 512, 8192), (4, 2048, 16384), (6, 4096, 24576), (8, 4096, 32768)];

/// A Cloud Run size and the request it was rounded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSize {
    /// Whole vCPUs.
    pub cpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// The cpu asked for, in millicores.
    pub requested_cpu_millis: u64,
    /// The memory asked for, in MiB (rounded up).
    pub requested_memory_mib: u64,
}

impl RunSize {
    /// Whether the size differs from the request.
    pub fn rounded(&self) -> bool {
        u64::from(self.cpu) * 1000 != self.requested_cpu_millis
            || self.memory_mib != self.requested_memory_mib
    }

    /// The `resources.limits` of the container: `{"cpu": "2", "memory": "1024Mi"}`.
    pub fn limits(&self) -> serde_json::Value {
        serde_json::json!({"cpu": self.cpu.to_string(), "memory": format!("{}Mi", self.memory_mib)})
    }
}

/// The smallest Cloud Run size with at least `cpu_millis` and `memory_bytes`; `None` above the
/// largest (8 vCPU, 32 GiB).
pub fn run_size(cpu_millis: u64, memory_bytes: u64) -> Option<RunSize> {
    let mib = memory_bytes.div_ceil(1024 * 1024);
    SIZES.iter().find(|&&(cpu, _, max)| u64::from(cpu) * 1000 >= cpu_millis && max >= mib).map(
        |&(cpu, min, _)| RunSize {
            cpu,
            memory_mib: mib.max(min),
            requested_cpu_millis: cpu_millis,
            requested_memory_mib: mib,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn requests_round_up_to_the_smallest_valid_size() {
        let cases = [
            // (millicores, MiB) -> (vCPU, MiB)
            ((250, 128), (1, 512)),
            ((1000, 512), (1, 512)),
            ((1000, 4096), (1, 4096)),
            ((1000, 4097), (2, 4097)),
            ((1500, 1024), (2, 1024)),
            ((2000, 1024), (2, 1024)),
            ((3000, 1024), (4, 2048)),
            ((2000, 8193), (4, 8193)),
            ((5000, 512), (6, 4096)),
            ((1000, 16385), (6, 16385)),
            ((1000, 24577), (8, 24577)),
            ((8000, 32768), (8, 32768)),
        ];
        for ((millis, mib), (cpu, memory)) in cases {
            let size = run_size(millis, mib * MIB).unwrap_or_else(|| panic!("{millis}m {mib}Mi"));
            assert_eq!((size.cpu, size.memory_mib), (cpu, memory), "{millis}m {mib}Mi");
        }
    }

    #[test]
    fn too_large_is_none_and_rounding_is_reported() {
        assert_eq!(run_size(9000, MIB), None);
        assert_eq!(run_size(1000, 33 * 1024 * MIB), None);
        let exact = run_size(2000, 1024 * MIB).unwrap_or_else(|| panic!("fits"));
        assert!(!exact.rounded());
        assert_eq!(exact.limits(), serde_json::json!({"cpu": "2", "memory": "1024Mi"}));
        assert!(run_size(500, 1024 * MIB).unwrap_or_else(|| panic!("fits")).rounded());
    }
}
