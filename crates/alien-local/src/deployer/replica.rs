//! One replica of a container: its name, its labels, and the engine `run` arguments its
//! container config gives. The labels are the deployer's memory: everything it needs after a
//! restart (which deployment, resource, release, ordinal, configuration and front port) is on
//! the containers themselves.

use alien_core::ContainerConfig;
use alien_deployer::ContainerEnv;
use sha2::{Digest, Sha256};

use super::probe::Probe;

/// Label: the deployment id.
pub const LABEL_DEPLOYMENT: &str = "alien.deployment";
/// Label: the release that started the replica.
pub const LABEL_RELEASE: &str = "alien.release";
/// Label: the container's resource id in the stack.
pub const LABEL_RESOURCE: &str = "alien.resource";
/// Label: the replica's ordinal (the `n` of its name).
pub const LABEL_REPLICA: &str = "alien.replica";
/// Label: the hash of everything that shapes the replica ([`ReplicaSpec::hash`]); a replica
/// with another hash is replaced.
pub const LABEL_SPEC: &str = "alien.spec";
/// Label: how the replica is probed ([`Probe`] as JSON), so that refresh needs no stack.
pub const LABEL_HEALTH: &str = "alien.health";
/// Label: the exposed port, `http:<port>` or `tcp:<port>`.
pub const LABEL_EXPOSE: &str = "alien.expose";
/// Label: the host port of the container's stable front (its `url`), to bind it again after a
/// restart.
pub const LABEL_URL_PORT: &str = "alien.url-port";
/// Label: the host port of every port's front (`8080=41001,9090=41002`), to bind them again
/// after a restart.
pub const LABEL_FRONT_PORTS: &str = "alien.front-ports";

/// Where `ephemeralStorage` is mounted in each replica: a tmpfs of the requested size.
pub const SCRATCH_PATH: &str = "/tmp";

/// Writes a [`LABEL_FRONT_PORTS`] value.
pub fn front_ports_label(ports: &std::collections::BTreeMap<u32, u16>) -> String {
    ports.iter().map(|(port, front)| format!("{port}={front}")).collect::<Vec<_>>().join(",")
}

/// Reads a [`LABEL_FRONT_PORTS`] value back (unreadable entries are skipped).
pub fn parse_front_ports(label: &str) -> std::collections::BTreeMap<u32, u16> {
    label
        .split(',')
        .filter_map(|entry| {
            let (port, front) = entry.split_once('=')?;
            Some((port.trim().parse().ok()?, front.trim().parse().ok()?))
        })
        .collect()
}

/// `alien-<deployment>-<container>-<n>`.
pub fn replica_name(deployment: &str, container: &str, ordinal: u32) -> String {
    format!("alien-{deployment}-{container}-{ordinal}")
}

/// `alien-<deployment>-<container>`: the persistent volume shared by the container's replicas.
pub fn volume_name(deployment: &str, container: &str) -> String {
    format!("alien-{deployment}-{container}")
}

/// `--cpus` for a number of millicores: `500` -> `0.5`, `2000` -> `2`, `1250` -> `1.25`.
pub fn cpus_arg(millis: u64) -> String {
    let (whole, frac) = (millis / 1000, millis % 1000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:03}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// What one replica of a container runs, derived from its config and environment.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplicaSpec {
    /// The image reference.
    pub image: String,
    /// The environment, in order (secrets included: never log it).
    pub env: Vec<(String, String)>,
    /// Entrypoint and arguments, when the config overrides them.
    pub command: Option<Vec<String>>,
    /// `--memory` in bytes (`memory.desired`).
    pub memory_bytes: u64,
    /// `--cpus` (`cpu.desired`).
    pub cpus: String,
    /// The named volume and where it is mounted.
    pub volume: Option<(String, String)>,
    /// Container ports published on 127.0.0.1 (host port chosen by the engine): every port of
    /// the container (each has a front), the health check's among them.
    pub published: Vec<u32>,
    /// `ephemeralStorage` in bytes: a tmpfs of that size at [`SCRATCH_PATH`].
    pub scratch_bytes: Option<u64>,
    /// CDI device names passed with `--device` (the container's GPUs).
    pub devices: Vec<String>,
    /// The exposed port and its kind (`http` or `tcp`).
    pub expose: Option<(&'static str, u32)>,
    /// How replicas are probed.
    pub probe: Probe,
    /// Hex SHA-256 over all of the above: equal hashes mean an equal replica.
    pub hash: String,
}

impl std::fmt::Debug for ReplicaSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaSpec")
            .field("image", &self.image)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("command", &self.command)
            .field("memory_bytes", &self.memory_bytes)
            .field("cpus", &self.cpus)
            .field("volume", &self.volume)
            .field("published", &self.published)
            .field("scratch_bytes", &self.scratch_bytes)
            .field("devices", &self.devices)
            .field("expose", &self.expose)
            .field("probe", &self.probe)
            .field("hash", &self.hash)
            .finish()
    }
}

impl ReplicaSpec {
    /// The replica `config` describes for `deployment`, with the CDI `devices` found for its
    /// GPUs; an error says which field is unusable.
    pub fn new(
        deployment: &str,
        config: &ContainerConfig,
        env: &ContainerEnv,
        devices: Vec<String>,
    ) -> Result<ReplicaSpec, String> {
        let id = &config.id;
        let image = config.image().ok_or_else(|| {
            format!("container {id}: code is source, not an image; build the source first")
        })?;
        let memory_bytes = config
            .memory
            .desired()
            .bytes()
            .map_err(|e| format!("container {id}: memory.desired: {e}"))?;
        let millis = config
            .cpu
            .desired()
            .cpu_millis()
            .map_err(|e| format!("container {id}: cpu.desired: {e}"))?;
        if memory_bytes == 0 || millis == 0 {
            return Err(format!("container {id}: cpu.desired and memory.desired must be > 0"));
        }
        let volume = config
            .persistent_storage
            .as_ref()
            .map(|storage| (volume_name(deployment, id), storage.mount_path().to_owned()));
        let mut published: Vec<u32> = config.ports.iter().map(|p| p.port).collect();
        if config.health_check.is_some()
            && let Some(port) = config.health_check_port()
            && !published.contains(&port)
        {
            published.push(port);
        }
        if let Some(bad) = published.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(format!("container {id}: port {bad} is not in 1..65535"));
        }
        if config.command.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!("container {id}: command must not be empty"));
        }
        let scratch_bytes = match &config.ephemeral_storage {
            None => None,
            Some(size) => {
                let bytes =
                    size.bytes().map_err(|e| format!("container {id}: ephemeralStorage: {e}"))?;
                if bytes == 0 {
                    return Err(format!("container {id}: ephemeralStorage must be > 0"));
                }
                if volume.as_ref().is_some_and(|(_, path)| path == SCRATCH_PATH) {
                    return Err(format!(
                        "container {id}: persistentStorage.mountPath {SCRATCH_PATH} is where the \
                         local platform mounts ephemeralStorage; choose another mountPath"
                    ));
                }
                Some(bytes)
            }
        };
        let expose = config.exposed_port().map(|p| {
            let kind = match p.expose {
                Some(alien_core::stack::Expose::Tcp) => "tcp",
                _ => "http",
            };
            (kind, p.port)
        });
        let mut spec = ReplicaSpec {
            image: image.to_owned(),
            env: env.0.clone(),
            command: config.command.clone(),
            memory_bytes,
            cpus: cpus_arg(millis),
            volume,
            published,
            scratch_bytes,
            devices,
            expose,
            probe: Probe::of(config),
            hash: String::new(),
        };
        spec.hash = spec.compute_hash();
        Ok(spec)
    }

    fn compute_hash(&self) -> String {
        let mut hasher = Sha256::new();
        // Length-prefixed fields: no two different specs give the same byte stream.
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(self.image.as_bytes());
        for (k, v) in &self.env {
            field(k.as_bytes());
            field(v.as_bytes());
        }
        field(b"--command");
        for part in self.command.iter().flatten() {
            field(part.as_bytes());
        }
        field(&self.memory_bytes.to_le_bytes());
        field(self.cpus.as_bytes());
        if let Some((name, path)) = &self.volume {
            field(name.as_bytes());
            field(path.as_bytes());
        }
        for port in &self.published {
            field(&port.to_le_bytes());
        }
        field(b"--scratch");
        field(&self.scratch_bytes.unwrap_or(0).to_le_bytes());
        field(b"--devices");
        for device in &self.devices {
            field(device.as_bytes());
        }
        field(self.expose_label().unwrap_or_default().as_bytes());
        field(self.probe_label().as_bytes());
        // 16 bytes are plenty to tell configurations apart, and keep labels short.
        hex::encode(&hasher.finalize()[..16])
    }

    /// The [`LABEL_EXPOSE`] value, e.g. `http:8080`.
    pub fn expose_label(&self) -> Option<String> {
        self.expose.map(|(kind, port)| format!("{kind}:{port}"))
    }

    /// The [`LABEL_HEALTH`] value.
    pub fn probe_label(&self) -> String {
        serde_json::to_string(&self.probe).unwrap_or_default()
    }

    /// The `run -d` arguments after `--env-file` (the environment is not among them): name,
    /// labels, `engine_args`, limits, volume, published ports, then the image and the command's
    /// arguments.
    pub fn run_args(
        &self,
        engine_args: &[String],
        name: &str,
        labels: &[(String, String)],
    ) -> Vec<String> {
        let mut args = vec!["--name".to_owned(), name.to_owned()];
        for (k, v) in labels {
            args.push("--label".to_owned());
            args.push(format!("{k}={v}"));
        }
        // The engine's own (network, host gateway): `Engine::run_args`.
        args.extend(engine_args.iter().cloned());
        args.extend(["--memory".to_owned(), self.memory_bytes.to_string()]);
        args.extend(["--cpus".to_owned(), self.cpus.clone()]);
        if let Some((volume, path)) = &self.volume {
            args.extend(["--volume".to_owned(), format!("{volume}:{path}")]);
        }
        if let Some(bytes) = self.scratch_bytes {
            // Memory-backed, gone when the replica stops; writing past it is ENOSPC inside.
            args.extend([
                "--tmpfs".to_owned(),
                format!("{SCRATCH_PATH}:rw,size={bytes},mode=1777"),
            ]);
        }
        for device in &self.devices {
            args.extend(["--device".to_owned(), device.clone()]);
        }
        for port in &self.published {
            args.extend(["--publish".to_owned(), format!("127.0.0.1::{port}")]);
        }
        // The first element replaces the entrypoint; the rest replace the image's CMD (the only
        // form docker's single-string --entrypoint and podman both accept).
        let command = self.command.as_deref().unwrap_or_default();
        if let Some(entrypoint) = command.first() {
            args.extend(["--entrypoint".to_owned(), entrypoint.clone()]);
        }
        args.push(self.image.clone());
        args.extend(command.iter().skip(1).cloned());
        args
    }
}

/// Reads an [`LABEL_EXPOSE`] value back: kind and container port.
pub fn parse_expose(label: &str) -> Option<(&str, u32)> {
    let (kind, port) = label.split_once(':')?;
    Some((kind, port.parse().ok()?))
}

/// The registry host (`host[:port]`) of an image reference; `docker.io` when it has none.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(extra: serde_json::Value) -> ContainerConfig {
        let mut value = json!({
            "id": "api",
            "code": {"type": "image", "image": "127.0.0.1:5000/app:v1"},
            "cpu": {"min": "0.25", "desired": "500m"},
            "memory": {"min": "128Mi", "desired": "256Mi"},
            "ports": [{"port": 8080, "expose": "http"}],
            "permissions": "execution"
        });
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> ContainerEnv {
        ContainerEnv(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn names_follow_the_deployment_container_ordinal_scheme() {
        assert_eq!(replica_name("dep_abc", "api", 3), "alien-dep_abc-api-3");
        assert_eq!(volume_name("dep_abc", "api"), "alien-dep_abc-api");
    }

    #[test]
    fn cpus_are_written_as_short_decimals() {
        for (millis, want) in
            [(500, "0.5"), (2000, "2"), (1250, "1.25"), (1, "0.001"), (100, "0.1")]
        {
            assert_eq!(cpus_arg(millis), want, "{millis}");
        }
    }

    #[test]
    fn run_args_carry_limits_labels_volume_ports_and_command() {
        let c = config(json!({
            "stateful": true,
            "persistentStorage": {"size": "1Gi", "mountPath": "/var/data"},
            "ports": [{"port": 8080, "expose": "http"}, {"port": 9090}],
            "healthCheck": {"port": 9090},
            "command": ["/bin/app", "--serve", "x y"]
        }));
        let spec = ReplicaSpec::new("dep_1", &c, &env(&[("A", "1")]), Vec::new()).unwrap();
        assert_eq!(spec.memory_bytes, 256 << 20);
        assert_eq!(spec.cpus, "0.5");
        assert_eq!(spec.published, vec![8080, 9090], "the health port is published too");
        assert_eq!(spec.expose_label().as_deref(), Some("http:8080"));
        assert_eq!(parse_expose("http:8080"), Some(("http", 8080)));
        assert_eq!(parse_expose("8080"), None);
        let labels = vec![("alien.deployment".to_owned(), "dep_1".to_owned())];
        let args = spec.run_args(&[], "alien-dep_1-api-0", &labels);
        let want: Vec<String> = [
            "--name",
            "alien-dep_1-api-0",
            "--label",
            "alien.deployment=dep_1",
            "--memory",
            "268435456",
            "--cpus",
            "0.5",
            "--volume",
            "alien-dep_1-api:/var/data",
            "--publish",
            "127.0.0.1::8080",
            "--publish",
            "127.0.0.1::9090",
            "--entrypoint",
            "/bin/app",
            "127.0.0.1:5000/app:v1",
            "--serve",
            "x y",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(args, want);
        let docker = spec.run_args(&["--network".to_owned(), "slirp4netns".to_owned()], "n", &[]);
        assert_eq!(docker[2..4], ["--network", "slirp4netns"], "the engine's after the labels");
        assert!(!format!("{spec:?}").contains("\"1\""), "Debug shows env names only");
    }

    #[test]
    fn every_port_is_published_on_loopback_for_its_front() {
        let plain = ReplicaSpec::new("d", &config(json!({})), &env(&[]), Vec::new()).unwrap();
        assert_eq!(plain.published, vec![8080]);
        let internal = config(json!({"ports": [{"port": 7000}, {"port": 7001}]}));
        let spec = ReplicaSpec::new("d", &internal, &env(&[]), Vec::new()).unwrap();
        assert_eq!(
            spec.published,
            vec![7000, 7001],
            "internal ports too: other containers use them"
        );
    }

    #[test]
    fn ephemeral_storage_is_a_sized_tmpfs_and_gpus_are_cdi_devices() {
        let c = config(json!({"ephemeralStorage": "64Mi"}));
        let spec =
            ReplicaSpec::new("d", &c, &env(&[]), vec!["nvidia.com/gpu=0".to_owned()]).unwrap();
        assert_eq!(spec.scratch_bytes, Some(64 << 20));
        let args = spec.run_args(&[], "n", &[]);
        assert!(args.windows(2).any(|w| w == ["--tmpfs", "/tmp:rw,size=67108864,mode=1777"]));
        assert!(args.windows(2).any(|w| w == ["--device", "nvidia.com/gpu=0"]), "{args:?}");
        let without = ReplicaSpec::new("d", &c, &env(&[]), Vec::new()).unwrap();
        assert_ne!(spec.hash, without.hash, "the devices shape the replica");
        let bad = config(json!({"ephemeralStorage": "lots"}));
        let err = ReplicaSpec::new("d", &bad, &env(&[]), Vec::new()).unwrap_err();
        assert!(err.contains("container api: ephemeralStorage"), "{err}");
        let clash = config(json!({
            "ephemeralStorage": "1Mi", "stateful": true,
            "persistentStorage": {"size": "1Gi", "mountPath": "/tmp"}
        }));
        let err = ReplicaSpec::new("d", &clash, &env(&[]), Vec::new()).unwrap_err();
        assert!(err.contains("persistentStorage.mountPath"), "{err}");
    }

    #[test]
    fn front_ports_labels_round_trip() {
        let ports = std::collections::BTreeMap::from([(8080, 41001), (9090, 41002)]);
        let label = front_ports_label(&ports);
        assert_eq!(label, "8080=41001,9090=41002");
        assert_eq!(parse_front_ports(&label), ports);
        assert_eq!(
            parse_front_ports("8080=x,,9090=41002"),
            std::collections::BTreeMap::from([(9090, 41002)])
        );
    }

    #[test]
    fn the_hash_changes_with_what_the_replica_runs_only() {
        let c = config(json!({}));
        let a = ReplicaSpec::new("d", &c, &env(&[("HELLO_MESSAGE", "one")]), Vec::new()).unwrap();
        let same =
            ReplicaSpec::new("d", &c, &env(&[("HELLO_MESSAGE", "one")]), Vec::new()).unwrap();
        let b = ReplicaSpec::new("d", &c, &env(&[("HELLO_MESSAGE", "two")]), Vec::new()).unwrap();
        assert_eq!(a.hash, same.hash);
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 32);
        let bigger = config(json!({"memory": {"min": "128Mi", "desired": "512Mi"}}));
        assert_ne!(
            ReplicaSpec::new("d", &bigger, &env(&[("HELLO_MESSAGE", "one")]), Vec::new())
                .unwrap()
                .hash,
            a.hash
        );
        // More replicas is not another replica.
        let scaled = config(json!({"replicas": 3}));
        assert_eq!(
            ReplicaSpec::new("d", &scaled, &env(&[("HELLO_MESSAGE", "one")]), Vec::new())
                .unwrap()
                .hash,
            a.hash
        );
    }

    #[test]
    fn unusable_configs_name_the_container_and_field() {
        let source =
            config(json!({"code": {"type": "source", "src": ".", "toolchain": {"type": "rust"}}}));
        let err = ReplicaSpec::new("d", &source, &env(&[]), Vec::new()).unwrap_err();
        assert!(err.contains("container api") && err.contains("build the source first"), "{err}");
        let bad = config(json!({"memory": {"min": "1", "desired": "lots"}}));
        assert!(
            ReplicaSpec::new("d", &bad, &env(&[]), Vec::new())
                .unwrap_err()
                .contains("memory.desired")
        );
    }

    #[test]
    fn registry_hosts_are_read_from_image_references() {
        assert_eq!(registry_of("127.0.0.1:5000/app:v1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("ghcr.io/acme/api@sha256:00"), "ghcr.io");
        assert_eq!(registry_of("nginx:1"), "docker.io");
        assert_eq!(registry_of("library/nginx"), "docker.io");
    }
}
