//! The container resource, field by field as the SDK writes it (camelCase).
//!
//! Unknown fields are rejected (a typo must not deploy silently). Optional fields stay `None` when
//! absent and are not written back, and defaults (health check path, mount path, ...) are applied
//! by accessors, never injected, so that a stack serializes back to exactly what was given.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Number, Value};

use super::ResourceRef;
use crate::quantity::QuantityValue;

/// A container: what it runs, its resources, ports, scaling, storage and environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerConfig {
    /// DNS label: `[a-z0-9-]`, 1..63, alphanumeric at both ends, no `--`; equals the resource key.
    pub id: String,
    /// The image to run, or the source to build one from.
    pub code: Code,
    /// CPU in vCPUs or millicores.
    pub cpu: ResourceRequest,
    /// Memory size.
    pub memory: ResourceRequest,
    /// Ports the container listens on; at least one, at most one exposed.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// Fixed replica count (exclusive with `autoscaling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Replica bounds and scaling targets (exclusive with `replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Stable replica identity; required for persistent storage. Absent means `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful: Option<bool>,
    /// A volume that survives restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_storage: Option<PersistentStorage>,
    /// Scratch space that may be lost when a replica restarts or moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<QuantityValue>,
    /// GPUs per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// The HTTP probe deciding whether a replica is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Environment variables; kept as given (the SDK writes `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    /// Resources of the stack this container gets bindings to; kept as given (the SDK writes `[]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<ResourceRef>>,
    /// The permission profile the container runs with.
    pub permissions: String,
    /// Placement hint: the container cluster to run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Placement hint: the machine pool within the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

/// What a container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Code {
    /// An existing image, deployed as is.
    Image {
        /// Image reference, e.g. `ghcr.io/acme/api:v1`.
        image: String,
    },
    /// A source directory the build step turns into an image; not deployable as is.
    Source {
        /// Source directory.
        src: String,
        /// How to build it.
        toolchain: Toolchain,
    },
}

/// The toolchain that builds source code; its options are passed through unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toolchain {
    /// Which toolchain.
    #[serde(rename = "type")]
    pub kind: ToolchainKind,
    /// Toolchain-specific options (binary name, Dockerfile, ...).
    #[serde(flatten)]
    pub options: Map<String, Value>,
}

/// The toolchains of the SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolchainKind {
    /// Rust, built with Cargo.
    Rust,
    /// TypeScript or JavaScript, built with Bun.
    Typescript,
    /// A project with a Dockerfile.
    Docker,
}

/// A CPU or memory request: `{min, desired}` as the SDK writes it, or one value for both.
///
/// The single form (`"cpu": "0.5"` or `"cpu": 1`) is accepted for hand-written stacks and means
/// `min = desired`; it is written back as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ResourceRequest {
    /// Lower bound and preferred amount.
    Range {
        /// The least the container can run with.
        min: QuantityValue,
        /// What the container should get.
        desired: QuantityValue,
    },
    /// One amount, both minimum and desired.
    Fixed(QuantityValue),
}

impl ResourceRequest {
    /// The least the container can run with.
    pub fn min(&self) -> &QuantityValue {
        match self {
            Self::Range { min, .. } => min,
            Self::Fixed(value) => value,
        }
    }

    /// What the container should get (used for limits).
    pub fn desired(&self) -> &QuantityValue {
        match self {
            Self::Range { desired, .. } => desired,
            Self::Fixed(value) => value,
        }
    }
}

impl<'de> Deserialize<'de> for ResourceRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ResourceRequestVisitor)
    }
}

struct ResourceRequestVisitor;

impl<'de> Visitor<'de> for ResourceRequestVisitor {
    type Value = ResourceRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{min, desired} or a single quantity")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct MinDesired {
            min: QuantityValue,
            desired: QuantityValue,
        }
        let MinDesired { min, desired } = MinDesired::deserialize(MapAccessDeserializer::new(map))?;
        Ok(ResourceRequest::Range { min, desired })
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(ResourceRequest::Fixed(QuantityValue::Text(value.to_owned())))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(ResourceRequest::Fixed(QuantityValue::Number(value.into())))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(ResourceRequest::Fixed(QuantityValue::Number(value.into())))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        let number =
            Number::from_f64(value).ok_or_else(|| E::custom("expected a finite number"))?;
        Ok(ResourceRequest::Fixed(QuantityValue::Number(number)))
    }
}

/// A port the container listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerPort {
    /// Port number, 1..65535 (checked by validation, so that the message names the container).
    pub port: u32,
    /// How the port is exposed publicly, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
}

/// How a port is exposed through the platform's load balancing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expose {
    /// An HTTP(S) endpoint with a URL.
    Http,
    /// A raw TCP endpoint.
    Tcp,
}

/// Autoscaling bounds and targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Autoscaling {
    /// Fewest replicas.
    pub min: u32,
    /// Replicas to start with.
    pub desired: u32,
    /// Most replicas, at least 1.
    pub max: u32,
    /// Target average CPU utilisation, in (0, 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cpu_percent: Option<Number>,
    /// Target average memory utilisation, in (0, 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_memory_percent: Option<Number>,
    /// Target concurrent HTTP requests per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_http_in_flight_per_replica: Option<u32>,
    /// Scale out when the p95 HTTP latency exceeds this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_http_p95_latency_ms: Option<Number>,
}

/// A volume that survives restarts, mounted into every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PersistentStorage {
    /// Volume size.
    pub size: QuantityValue,
    /// Absolute mount path; [`PersistentStorage::DEFAULT_MOUNT_PATH`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
}

impl PersistentStorage {
    /// The SDK's default mount path.
    pub const DEFAULT_MOUNT_PATH: &str = "/data";

    /// Where the volume is mounted.
    pub fn mount_path(&self) -> &str {
        self.mount_path.as_deref().unwrap_or(Self::DEFAULT_MOUNT_PATH)
    }
}

/// GPUs per replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// GPU type identifier, e.g. `nvidia-t4`.
    #[serde(rename = "type")]
    pub gpu_type: String,
    /// Number of GPUs, 1..8.
    pub count: u32,
}

/// The HTTP health probe; absent fields take the SDK defaults through the accessors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    /// HTTP path, default `/health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port to probe, one of the container's ports; default: the container's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// HTTP method, default `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Probe timeout, 1..5 seconds, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Consecutive failures before a replica is unhealthy, default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

impl HealthCheck {
    /// The probed path.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("/health")
    }

    /// The HTTP method.
    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("GET")
    }

    /// The probe timeout in seconds.
    pub fn timeout_seconds(&self) -> u32 {
        self.timeout_seconds.unwrap_or(1)
    }

    /// Consecutive failures before a replica counts as unhealthy.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(3)
    }
}

impl ContainerConfig {
    /// The image to run, when the code is an image (not yet-to-be-built source).
    pub fn image(&self) -> Option<&str> {
        match &self.code {
            Code::Image { image } => Some(image),
            Code::Source { .. } => None,
        }
    }

    /// The publicly exposed port, if any.
    pub fn exposed_port(&self) -> Option<&ContainerPort> {
        self.ports.iter().find(|port| port.expose.is_some())
    }

    /// Whether replicas have a stable identity.
    pub fn is_stateful(&self) -> bool {
        self.stateful.unwrap_or(false)
    }

    /// Replicas to run: `replicas`, else `autoscaling.desired`, else 1.
    pub fn desired_replicas(&self) -> u32 {
        self.replicas.or(self.autoscaling.as_ref().map(|a| a.desired)).unwrap_or(1)
    }

    /// The resources this container links to.
    pub fn links(&self) -> &[ResourceRef] {
        self.links.as_deref().unwrap_or_default()
    }

    /// The port the health check probes: its own, else the exposed port, else the first port.
    pub fn health_check_port(&self) -> Option<u32> {
        self.health_check
            .as_ref()
            .and_then(|check| check.port)
            .or_else(|| self.exposed_port().or(self.ports.first()).map(|p| p.port))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn minimal() -> Value {
        json!({
            "id": "api",
            "code": {"type": "image", "image": "nginx:1"},
            "cpu": {"min": "0.5", "desired": "1"},
            "memory": {"min": "512Mi", "desired": "1Gi"},
            "ports": [{"port": 80, "expose": "http"}, {"port": 9090}],
            "permissions": "execution"
        })
    }

    #[test]
    fn a_minimal_container_round_trips_without_injected_fields() {
        let config: ContainerConfig = serde_json::from_value(minimal()).unwrap();
        assert_eq!(serde_json::to_value(&config).unwrap(), minimal());
        assert_eq!(config.image(), Some("nginx:1"));
        assert_eq!(config.exposed_port().map(|p| p.port), Some(80));
        assert_eq!(config.health_check_port(), Some(80));
        assert!(!config.is_stateful());
        assert_eq!(config.desired_replicas(), 1);
        assert!(config.links().is_empty());
        assert_eq!(config.cpu.min(), &QuantityValue::from("0.5"));
        assert_eq!(config.memory.desired(), &QuantityValue::from("1Gi"));
    }

    #[test]
    fn unknown_fields_are_rejected_at_every_level() {
        let mut typo = minimal();
        typo["replica"] = json!(2);
        let err = serde_json::from_value::<ContainerConfig>(typo).unwrap_err();
        assert!(err.to_string().contains("unknown field `replica`"), "{err}");

        let mut nested = minimal();
        nested["ports"][0]["exposed"] = json!("http");
        assert!(serde_json::from_value::<ContainerConfig>(nested).is_err());

        let mut code = minimal();
        code["code"]["tag"] = json!("v1");
        assert!(serde_json::from_value::<ContainerConfig>(code).is_err());

        let mut cpu = minimal();
        cpu["cpu"]["max"] = json!("2");
        assert!(serde_json::from_value::<ContainerConfig>(cpu).is_err());
    }

    #[test]
    fn a_single_cpu_or_memory_value_means_min_equals_desired() {
        let mut config = minimal();
        config["cpu"] = json!(1);
        config["memory"] = json!("256Mi");
        let parsed: ContainerConfig = serde_json::from_value(config.clone()).unwrap();
        assert_eq!(parsed.cpu.min(), parsed.cpu.desired());
        assert_eq!(parsed.cpu.desired().cpu_millis(), Ok(1000));
        assert_eq!(parsed.memory.min().bytes(), Ok(256 << 20));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), config);
    }

    #[test]
    fn source_code_keeps_its_toolchain_options() {
        let mut config = minimal();
        config["code"] = json!({
            "type": "source", "src": "./api",
            "toolchain": {"type": "rust", "binaryName": "api"}
        });
        let parsed: ContainerConfig = serde_json::from_value(config.clone()).unwrap();
        assert!(matches!(
            &parsed.code,
            Code::Source { toolchain: Toolchain { kind: ToolchainKind::Rust, .. }, .. }
        ));
        assert_eq!(parsed.image(), None);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), config);
    }

    #[test]
    fn defaults_come_from_accessors() {
        let check: HealthCheck = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            (check.path(), check.method(), check.timeout_seconds(), check.failure_threshold()),
            ("/health", "GET", 1, 3)
        );
        assert_eq!(serde_json::to_value(&check).unwrap(), json!({}));
        let storage: PersistentStorage = serde_json::from_value(json!({"size": "1Gi"})).unwrap();
        assert_eq!(storage.mount_path(), "/data");
    }
}
