//! Container Apps sizes: a container's desired cpu and memory rounded up to a pair the
//! Consumption profile allows (vCPU in steps of 0.25 from 0.25 to 4, memory twice the vCPU in
//! GiB: 0.25/0.5Gi … 4/8Gi, as `ContainerResources` in Microsoft Learn's "Containers in Azure
//! Container Apps" lists them). What was asked and what was chosen are kept side by side, so
//! the rounding shows in the deployment's outputs.

use serde::{Deserialize, Serialize};

/// The largest size, in quarter vCPUs.
const MAX_QUARTERS: u64 = 16;

/// A Container Apps size and the request it was rounded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSize {
    /// vCPU in quarters (1 = 0.25 vCPU).
    pub quarters: u64,
    /// The cpu asked for, in millicores.
    pub requested_cpu_millis: u64,
    /// The memory asked for, in MiB (rounded up).
    pub requested_memory_mib: u64,
}

impl AppSize {
    /// vCPU, e.g. `0.75`.
    pub fn cpu(&self) -> f64 {
        self.quarters as f64 / 4.0
    }

    /// Memory as Container Apps writes it, e.g. `1.5Gi`.
    pub fn memory(&self) -> String {
        format!("{}Gi", self.quarters as f64 / 2.0)
    }

    /// Whether the size differs from the request.
    pub fn rounded(&self) -> bool {
        self.quarters * 250 != self.requested_cpu_millis
            || self.quarters * 512 != self.requested_memory_mib
    }
}

/// The smallest allowed pair with at least `cpu_millis` and `memory_bytes`; `None` above the
/// largest (4 vCPU, 8 GiB).
pub fn app_size(cpu_millis: u64, memory_bytes: u64) -> Option<AppSize> {
    let mib = memory_bytes.div_ceil(1024 * 1024);
    let quarters = cpu_millis.div_ceil(250).max(mib.div_ceil(512)).max(1);
    (quarters <= MAX_QUARTERS).then_some(AppSize {
        quarters,
        requested_cpu_millis: cpu_millis,
        requested_memory_mib: mib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn requests_round_up_to_the_smallest_allowed_pair() {
        let cases = [
            ((100, 128), (0.25, "0.5Gi")),
            ((250, 512), (0.25, "0.5Gi")),
            ((500, 1024), (0.5, "1Gi")),
            ((2000, 1024), (2.0, "4Gi")),
            ((250, 3000), (1.5, "3Gi")),
            ((4000, 8192), (4.0, "8Gi")),
        ];
        for ((millis, mib), (cpu, memory)) in cases {
            let size = app_size(millis, mib * MIB).unwrap_or_else(|| panic!("{millis} {mib}"));
            assert_eq!((size.cpu(), size.memory().as_str()), (cpu, memory), "{millis}m {mib}Mi");
        }
        assert!(!app_size(500, 1024 * MIB).is_some_and(|s| s.rounded()));
        assert!(app_size(2000, 1024 * MIB).is_some_and(|s| s.rounded()));
        assert_eq!(app_size(4001, MIB), None);
        assert_eq!(app_size(250, 8193 * MIB), None);
    }
}
