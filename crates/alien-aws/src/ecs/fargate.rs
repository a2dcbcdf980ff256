//! Fargate task sizes: a container's desired cpu and memory rounded up to the smallest size
//! Fargate runs (cpu units of 1/1024 vCPU with the memory range each allows), with what was asked
//! and what was chosen kept side by side so the rounding shows in the deployment's state.

use serde::{Deserialize, Serialize};

/// Each cpu size (units) with its memory range in MiB (min, max, step).
const SIZES: &[(u32, u32, u32, u32)] = &[
    (256, 512, 2048, 512),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// A Fargate size and the request it was rounded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FargateSize {
    /// Cpu units (1024 = one vCPU).
    pub cpu: u32,
    /// Memory in MiB.
    pub memory: u32,
    /// The cpu asked for, in millicores.
    pub requested_cpu_millis: u64,
    /// The memory asked for, in MiB (rounded up).
    pub requested_memory_mib: u64,
}

impl FargateSize {
    /// Whether the size differs from the request.
    pub fn rounded(&self) -> bool {
        u64::from(self.cpu) * 1000 != self.requested_cpu_millis * 1024
            || u64::from(self.memory) != self.requested_memory_mib
    }
}

/// The smallest Fargate size with at least `cpu_millis` and `memory_bytes`; `None` above the
/// largest (16 vCPU, 120 GiB).
pub fn fargate_size(cpu_millis: u64, memory_bytes: u64) -> Option<FargateSize> {
    let units = (cpu_millis * 1024).div_ceil(1000);
    let mib = memory_bytes.div_ceil(1024 * 1024);
    for &(cpu, min, max, step) in SIZES {
        if u64::from(cpu) < units || u64::from(max) < mib {
            continue;
        }
        let memory = if mib <= u64::from(min) {
            min
        } else {
            let steps = (mib - u64::from(min)).div_ceil(u64::from(step));
            min + u32::try_from(steps).ok()? * step
        };
        return Some(FargateSize {
            cpu,
            memory,
            requested_cpu_millis: cpu_millis,
            requested_memory_mib: mib,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn requests_round_up_to_the_smallest_valid_size() {
        let cases = [
            // (millicores, MiB) -> (cpu units, memory MiB)
            ((250, 512), (256, 512)),
            ((100, 64), (256, 512)),
            ((250, 600), (256, 1024)),
            ((250, 2048), (256, 2048)),
            ((250, 2049), (512, 3072)),
            ((300, 512), (512, 1024)),
            ((500, 1024), (512, 1024)),
            ((1000, 1024), (1024, 2048)),
            ((1000, 3000), (1024, 3072)),
            ((1500, 512), (2048, 4096)),
            ((2000, 16384), (2048, 16384)),
            ((2000, 16385), (4096, 17408)),
            ((4000, 30720), (4096, 30720)),
            ((8000, 16385), (8192, 20480)),
            ((16000, 122880), (16384, 122880)),
        ];
        for ((millis, mib), (cpu, memory)) in cases {
            let size = fargate_size(millis, mib * MIB).unwrap();
            assert_eq!((size.cpu, size.memory), (cpu, memory), "{millis}m {mib}Mi");
        }
    }

    #[test]
    fn every_result_is_a_listed_combination() {
        for millis in (0..=16_000).step_by(125) {
            for mib in (0..=122_880u64).step_by(1000) {
                let size = fargate_size(millis, mib * MIB).unwrap();
                let (_, min, max, step) = SIZES.iter().copied().find(|s| s.0 == size.cpu).unwrap();
                assert!(size.memory >= min && size.memory <= max, "{size:?}");
                assert_eq!((size.memory - min) % step, 0, "{size:?}");
                assert!(u64::from(size.cpu) * 1000 >= millis * 1024);
                assert!(u64::from(size.memory) >= mib);
            }
        }
    }

    #[test]
    fn too_large_is_none_and_rounding_is_reported() {
        assert_eq!(fargate_size(17_000, MIB), None);
        assert_eq!(fargate_size(1000, 200 * 1024 * MIB), None);
        assert!(fargate_size(300, 512 * MIB).unwrap().rounded());
        assert!(!fargate_size(1000, 2048 * MIB).unwrap().rounded());
        // Fractional MiB round up.
        assert_eq!(fargate_size(250, 512 * MIB + 1).unwrap().memory, 1024);
    }
}
