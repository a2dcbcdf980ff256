//! What the local platform refuses before a step starts anything (resources other than
//! containers, foreign links, HTTP autoscaling metrics without an HTTP front, GPUs the host
//! lacks), and the notices of fields that have no local effect.

use alien_core::{ContainerConfig, DeploymentError};
use alien_deployer::DeployRequest;

use super::{Runtime, gpu};

impl Runtime {
    /// What the local platform refuses before anything starts: resources other than
    /// containers, links to anything but a container of the stack, and GPUs this host lacks.
    pub(super) fn preflight(&self, request: &DeployRequest<'_>) -> Result<(), DeploymentError> {
        let resources = &request.stack.resources;
        let unsupported: Vec<(&String, &str)> = resources
            .iter()
            .filter(|(_, entry)| entry.config.as_container().is_none())
            .map(|(id, entry)| (id, entry.config.resource_type()))
            .collect();
        if let Some((first, _)) = unsupported.first() {
            let named: Vec<String> =
                unsupported.iter().map(|(id, kind)| format!("`{id}` ({kind})")).collect();
            return Err(DeploymentError {
                code: "PLATFORM_NOT_SUPPORTED".to_owned(),
                message: format!(
                    "the local platform runs containers only; this stack also has {}: deploy \
                     it to a cloud platform, or leave those resources out of the local stack",
                    named.join(", ")
                ),
                resource_id: Some((*first).clone()),
            });
        }
        let mut gpus = None;
        for (id, entry) in resources {
            let Some(config) = entry.config.as_container() else { continue };
            for link in config.links() {
                let linked = resources.get(&link.id).and_then(|e| e.config.as_container());
                if linked.is_none() {
                    return Err(DeploymentError {
                        code: "PLATFORM_NOT_SUPPORTED".to_owned(),
                        message: format!(
                            "container {id} links {} `{}`, which the local platform does not \
                             provide (it links containers of the same stack only)",
                            link.resource_type, link.id
                        ),
                        resource_id: Some(id.clone()),
                    });
                }
            }
            if let Some(policy) = &config.autoscaling {
                let http_metric = policy.target_http_in_flight_per_replica.is_some()
                    || policy.max_http_p95_latency_ms.is_some();
                let http_exposed = config
                    .exposed_port()
                    .is_some_and(|p| p.expose != Some(alien_core::stack::Expose::Tcp));
                if http_metric && !http_exposed {
                    return Err(DeploymentError {
                        code: "PLATFORM_NOT_SUPPORTED".to_owned(),
                        message: format!(
                            "container {id}: autoscaling.targetHttpInFlightPerReplica and \
                             maxHttpP95LatencyMs need a port with `expose: \"http\"` on the \
                             local platform (requests are measured at its front)"
                        ),
                        resource_id: Some(id.clone()),
                    });
                }
            }
            if let Some(gpu) = &config.gpu {
                let available =
                    gpus.get_or_insert_with(|| gpu::cdi_devices(&self.options.cdi_dirs));
                if let Err(message) =
                    gpu::assign(id, &gpu.gpu_type, gpu.count, available, &self.options.cdi_dirs)
                {
                    return Err(DeploymentError {
                        code: "GPU_NOT_AVAILABLE".to_owned(),
                        message,
                        resource_id: Some(id.clone()),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The container's fields that have no effect on the local platform, each saying why (they
/// appear in the resource's `notices` of the deployment's stack state).
pub(super) fn notices(config: &ContainerConfig) -> Vec<String> {
    let mut notices = vec![format!(
        "permissions `{}`: no local effect (replicas run with the container engine's default \
         privileges; permission profiles apply on cloud platforms)",
        config.permissions
    )];
    if let Some(cluster) = &config.cluster {
        notices.push(format!(
            "cluster `{cluster}`: no local effect (every replica runs on this host)"
        ));
    }
    if let Some(pool) = &config.pool {
        notices.push(format!("pool `{pool}`: no local effect (every replica runs on this host)"));
    }
    if let Some(gpu) = &config.gpu {
        notices.push(format!(
            "gpu.type `{}`: the local platform matches the vendor's CDI devices, not the model",
            gpu.gpu_type
        ));
    }
    notices
}
