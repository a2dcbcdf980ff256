//! The rules a stack must follow (`spec/containers.md`), each reported with a path and a message
//! naming the resource, all at once.
//!
//! [`Stack::validate`] checks the stack's shape; [`Stack::validate_for_release`] adds what a
//! release needs (built images); [`check_update_compatible`] compares a new release with the one
//! a deployment runs.

use std::fmt;

use super::{Code, ContainerConfig, Lifecycle, ResourceEntry, ResourceRequest, Stack};
use crate::error::FieldViolation;
use crate::quantity::{QuantityError, QuantityValue};

const MAX_STACK_ID_LEN: usize = 128;
const MAX_DNS_LABEL_LEN: usize = 63;
const MAX_GPUS: u32 = 8;
const HEALTH_CHECK_TIMEOUT_SECONDS: std::ops::RangeInclusive<u32> = 1..=5;
const RESERVED_ENV_PREFIX: &str = "ALIEN_";
const HEALTH_CHECK_METHODS: [&str; 7] =
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl Stack {
    /// Every violation of the stack rules; empty when the stack is valid.
    pub fn validate(&self) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        if !is_stack_id(&self.id) {
            violations.push(FieldViolation::new(
                "id",
                format!(
                    "stack id {:?} must be 1..{MAX_STACK_ID_LEN} characters of [A-Za-z0-9_-]",
                    self.id
                ),
            ));
        }
        for (key, entry) in &self.resources {
            check_resource_key(key, entry, &mut violations);
            if let Some(container) = entry.config.as_container() {
                let violations = &mut violations;
                ContainerCheck { stack: self, key, container, violations }.check_all(entry);
            }
        }
        violations
    }

    /// [`Stack::validate`] plus the rules of a release to be deployed: every container references
    /// an image (source code must have been built by `alien build` first).
    pub fn validate_for_release(&self) -> Vec<FieldViolation> {
        let mut violations = self.validate();
        for (key, container) in self.containers() {
            if let Code::Source { src, .. } = &container.code {
                violations.push(FieldViolation::new(
                    format!("resources.{key}.config.code"),
                    format!(
                        "container {key:?}: code is source ({src:?}), but a release must reference \
                         images; build the source first (alien build) and release the result"
                    ),
                ));
            }
        }
        violations
    }
}

/// What a new release changes that an existing deployment cannot take (rule 8): for each
/// container present in both stacks, `stateful`, the port numbers and the persistent storage's
/// mount path must stay the same. Paths point into `new`.
pub fn check_update_compatible(old: &Stack, new: &Stack) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    for (key, current) in new.containers() {
        let Some(previous) = old.container(key) else {
            continue;
        };
        let mut changed = |field: &str, was: String, now: String| {
            if was != now {
                violations.push(FieldViolation::new(
                    format!("resources.{key}.config.{field}"),
                    format!(
                        "container {key:?}: {field} cannot change on update (was {was}, now {now}); \
                         deploy the changed container under a new id instead"
                    ),
                ));
            }
        };
        changed("stateful", previous.is_stateful().to_string(), current.is_stateful().to_string());
        changed("ports", port_list(previous), port_list(current));
        changed("persistentStorage.mountPath", mount_path(previous), mount_path(current));
    }
    violations
}

fn port_list(container: &ContainerConfig) -> String {
    let mut ports: Vec<u32> = container.ports.iter().map(|p| p.port).collect();
    ports.sort_unstable();
    ports.dedup();
    let list: Vec<String> = ports.iter().map(u32::to_string).collect();
    format!("[{}]", list.join(", "))
}

fn mount_path(container: &ContainerConfig) -> String {
    match &container.persistent_storage {
        Some(storage) => format!("{:?}", storage.mount_path()),
        None => "none".to_owned(),
    }
}

fn is_stack_id(id: &str) -> bool {
    (1..=MAX_STACK_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `id` is a DNS label as resource ids are: 1..=63 of `[a-z0-9-]`, alphanumeric at both
/// ends, no `--` (the API document's `^[a-z0-9]+(-[a-z0-9]+)*$`, at most 63 long).
pub fn is_dns_label(id: &str) -> bool {
    let starts_and_ends_alphanumeric =
        id.bytes().next().zip(id.bytes().last()).is_some_and(|(first, last)| {
            first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()
        });
    id.len() <= MAX_DNS_LABEL_LEN
        && starts_and_ends_alphanumeric
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.contains("--")
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_resource_key(key: &str, entry: &ResourceEntry, violations: &mut Vec<FieldViolation>) {
    let message = match entry.config.id() {
        Some(id) if id == key => return,
        Some(id) => {
            format!("resource {key:?}: config.id {id:?} must equal the resource key {key:?}")
        }
        None => format!("resource {key:?}: config.id is missing; it must equal the resource key"),
    };
    violations.push(FieldViolation::new(format!("resources.{key}.config.id"), message));
}

/// One container's rules, collecting violations under `resources.<key>`.
struct ContainerCheck<'a> {
    stack: &'a Stack,
    key: &'a str,
    container: &'a ContainerConfig,
    violations: &'a mut Vec<FieldViolation>,
}

impl ContainerCheck<'_> {
    /// Records a violation of `field` (relative to the resource entry, e.g. `config.ports`).
    fn report(&mut self, field: &str, message: impl fmt::Display) {
        self.violations.push(FieldViolation::new(
            format!("resources.{}.{field}", self.key),
            format!("container {:?}: {message}", self.key),
        ));
    }

    fn check_all(&mut self, entry: &ResourceEntry) {
        if entry.lifecycle != Lifecycle::Live {
            self.report("lifecycle", "containers must have lifecycle \"live\"");
        }
        let container = self.container;
        self.id();
        self.code();
        self.request("cpu", &container.cpu, QuantityValue::cpu_millis);
        self.request("memory", &container.memory, QuantityValue::bytes);
        self.ports();
        self.scaling();
        self.storage();
        self.gpu();
        self.health_check();
        self.environment();
        self.links();
        self.permissions();
        self.command();
    }

    fn id(&mut self) {
        let id = &self.container.id;
        if !is_dns_label(id) {
            self.report(
                "config.id",
                format!(
                    "id {id:?} must be a DNS label: 1..{MAX_DNS_LABEL_LEN} characters of [a-z0-9-], \
                     starting and ending with a letter or digit, without \"--\""
                ),
            );
        }
    }

    fn code(&mut self) {
        match &self.container.code {
            Code::Image { image } if image.trim().is_empty() => {
                self.report("config.code.image", "code.image must name an image");
            }
            Code::Source { src, .. } if src.trim().is_empty() => {
                self.report("config.code.src", "code.src must name a source directory");
            }
            Code::Image { .. } | Code::Source { .. } => {}
        }
    }

    /// `cpu` or `memory`: each value parses and is > 0, and min <= desired.
    fn request(
        &mut self,
        name: &str,
        request: &ResourceRequest,
        parse: fn(&QuantityValue) -> Result<u64, QuantityError>,
    ) {
        let (min, desired) = match request {
            ResourceRequest::Range { min, desired } => (
                self.positive(&format!("{name}.min"), min, parse),
                self.positive(&format!("{name}.desired"), desired, parse),
            ),
            ResourceRequest::Fixed(value) => {
                let parsed = self.positive(name, value, parse);
                (parsed, parsed)
            }
        };
        if let (Some(min), Some(desired)) = (min, desired)
            && min > desired
        {
            self.report(
                &format!("config.{name}"),
                format!(
                    "{name}.min ({}) must not exceed {name}.desired ({})",
                    request.min(),
                    request.desired()
                ),
            );
        }
    }

    /// Parses a quantity that must be greater than zero, reporting why it is not.
    fn positive(
        &mut self,
        field: &str,
        value: &QuantityValue,
        parse: fn(&QuantityValue) -> Result<u64, QuantityError>,
    ) -> Option<u64> {
        match parse(value) {
            Ok(0) => {
                self.report(&format!("config.{field}"), format!("{field} must be greater than 0"))
            }
            Ok(amount) => return Some(amount),
            Err(err) => self.report(&format!("config.{field}"), format!("{field}: {err}")),
        }
        None
    }

    fn ports(&mut self) {
        let ports = &self.container.ports;
        if ports.is_empty() {
            self.report("config.ports", "every container must define at least one port");
        }
        for (index, port) in ports.iter().enumerate() {
            let field = format!("config.ports[{index}].port");
            if !(1..=65535).contains(&port.port) {
                self.report(
                    &field,
                    format!("port {} is out of range; expected 1..65535", port.port),
                );
            } else if ports.iter().take(index).any(|earlier| earlier.port == port.port) {
                self.report(&field, format!("port {} is listed more than once", port.port));
            }
        }
        let exposed: Vec<String> =
            ports.iter().filter(|p| p.expose.is_some()).map(|p| p.port.to_string()).collect();
        if exposed.len() > 1 {
            self.report(
                "config.ports",
                format!(
                    "only one port may be exposed publicly, but ports {} all set expose",
                    exposed.join(", ")
                ),
            );
        }
    }

    fn scaling(&mut self) {
        let container = self.container;
        if container.replicas.is_some() && container.autoscaling.is_some() {
            self.report("config.replicas", "use either fixed replicas or autoscaling, not both");
        }
        if container.replicas == Some(0) {
            self.report("config.replicas", "replicas must be at least 1");
        }
        let Some(scaling) = &container.autoscaling else {
            return;
        };
        if scaling.max < 1 {
            self.report("config.autoscaling.max", "autoscaling.max must be at least 1");
        }
        if !(scaling.min <= scaling.desired && scaling.desired <= scaling.max) {
            self.report(
                "config.autoscaling",
                format!(
                    "autoscaling needs min <= desired <= max, got min {}, desired {}, max {}",
                    scaling.min, scaling.desired, scaling.max
                ),
            );
        }
        for (name, percent) in [
            ("targetCpuPercent", &scaling.target_cpu_percent),
            ("targetMemoryPercent", &scaling.target_memory_percent),
        ] {
            let Some(percent) = percent else { continue };
            if !percent.as_f64().is_some_and(|p| p > 0.0 && p <= 100.0) {
                self.report(
                    &format!("config.autoscaling.{name}"),
                    format!("autoscaling.{name} must be in (0, 100], got {percent}"),
                );
            }
        }
        if scaling.target_http_in_flight_per_replica == Some(0) {
            self.report(
                "config.autoscaling.targetHttpInFlightPerReplica",
                "autoscaling.targetHttpInFlightPerReplica must be at least 1",
            );
        }
        if let Some(latency) = &scaling.max_http_p95_latency_ms
            && !latency.as_f64().is_some_and(|ms| ms > 0.0)
        {
            self.report(
                "config.autoscaling.maxHttpP95LatencyMs",
                format!("autoscaling.maxHttpP95LatencyMs must be greater than 0, got {latency}"),
            );
        }
    }

    fn storage(&mut self) {
        let container = self.container;
        if let Some(storage) = &container.persistent_storage {
            if !container.is_stateful() {
                self.report(
                    "config.persistentStorage",
                    "persistentStorage requires stateful: true",
                );
            }
            self.positive("persistentStorage.size", &storage.size, QuantityValue::bytes);
            let mount_path = storage.mount_path();
            if !mount_path.starts_with('/') {
                self.report(
                    "config.persistentStorage.mountPath",
                    format!("persistentStorage.mountPath {mount_path:?} must be an absolute path"),
                );
            }
        }
        if let Some(size) = &container.ephemeral_storage {
            self.positive("ephemeralStorage", size, QuantityValue::bytes);
        }
    }

    fn gpu(&mut self) {
        let Some(gpu) = &self.container.gpu else {
            return;
        };
        if gpu.gpu_type.trim().is_empty() {
            self.report("config.gpu.type", "gpu.type must name a GPU type, e.g. \"nvidia-t4\"");
        }
        if !(1..=MAX_GPUS).contains(&gpu.count) {
            self.report(
                "config.gpu.count",
                format!("gpu.count must be between 1 and {MAX_GPUS}, got {}", gpu.count),
            );
        }
    }

    fn health_check(&mut self) {
        let container = self.container;
        let Some(check) = &container.health_check else {
            return;
        };
        if let Some(port) = check.port
            && !container.ports.iter().any(|p| p.port == port)
        {
            let ports: Vec<String> = container.ports.iter().map(|p| p.port.to_string()).collect();
            self.report(
                "config.healthCheck.port",
                format!(
                    "healthCheck.port {port} is not one of the container's ports ({})",
                    ports.join(", ")
                ),
            );
        }
        if !check.path().starts_with('/') {
            self.report(
                "config.healthCheck.path",
                format!("healthCheck.path {:?} must start with \"/\"", check.path()),
            );
        }
        if !HEALTH_CHECK_METHODS.contains(&check.method()) {
            self.report(
                "config.healthCheck.method",
                format!(
                    "healthCheck.method {:?} is not one of {}",
                    check.method(),
                    HEALTH_CHECK_METHODS.join(", ")
                ),
            );
        }
        if !HEALTH_CHECK_TIMEOUT_SECONDS.contains(&check.timeout_seconds()) {
            self.report(
                "config.healthCheck.timeoutSeconds",
                format!(
                    "healthCheck.timeoutSeconds must be between 1 and 5, got {}",
                    check.timeout_seconds()
                ),
            );
        }
        if check.failure_threshold() < 1 {
            self.report(
                "config.healthCheck.failureThreshold",
                "healthCheck.failureThreshold must be at least 1",
            );
        }
    }

    fn environment(&mut self) {
        let Some(environment) = &self.container.environment else {
            return;
        };
        let total: usize =
            environment.iter().map(|(name, value)| name.len() + 1 + value.len()).sum();
        if total > super::MAX_ENV_TOTAL {
            self.report(
                "config.environment",
                format!(
                    "the variables take {total} bytes (NAME=value each); at most {} fit in a \
                     container's environment",
                    super::MAX_ENV_TOTAL
                ),
            );
        }
        for (name, value) in environment {
            let field = format!("config.environment.{name}");
            let size = name.len() + 1 + value.len();
            if size > super::MAX_ENV_VARIABLE {
                self.report(
                    &field,
                    format!(
                        "{name}=value takes {size} bytes; Linux starts no process with a variable \
                         over {} bytes",
                        super::MAX_ENV_VARIABLE
                    ),
                );
            }
            if !is_env_name(name) {
                self.report(
                    &field,
                    format!("environment variable name {name:?} must match [A-Za-z_][A-Za-z0-9_]*"),
                );
            } else if name.starts_with(RESERVED_ENV_PREFIX) {
                self.report(
                    &field,
                    format!(
                        "environment variable {name:?} uses the prefix {RESERVED_ENV_PREFIX}, \
                         which is reserved for variables the manager sets"
                    ),
                );
            }
        }
    }

    fn links(&mut self) {
        for (index, link) in self.container.links().iter().enumerate() {
            let field = format!("config.links[{index}]");
            match self.stack.resources.get(&link.id) {
                None => self.report(
                    &field,
                    format!("link to {:?} names no resource of the stack", link.id),
                ),
                Some(target) if target.config.resource_type() != link.resource_type => self.report(
                    &field,
                    format!(
                        "link to {:?} says type {:?}, but that resource is a {:?}",
                        link.id,
                        link.resource_type,
                        target.config.resource_type()
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    fn permissions(&mut self) {
        if self.container.permissions.trim().is_empty() {
            self.report("config.permissions", "permissions must name a permission profile");
        }
    }

    fn command(&mut self) {
        let Some(command) = &self.container.command else {
            return;
        };
        match command.first() {
            None => self.report(
                "config.command",
                "command must not be empty; omit it to use the image's entrypoint",
            ),
            Some(program) if program.trim().is_empty() => {
                self.report("config.command[0]", "command[0] must name the program to run");
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::stack::parse_stack;

    /// A valid stack with one container `api` and one storage resource `files`.
    fn base() -> Value {
        json!({
            "id": "my-app",
            "resources": {
                "api": {
                    "config": {
                        "id": "api", "type": "container",
                        "code": {"type": "image", "image": "ghcr.io/acme/api:v1"},
                        "cpu": {"min": "0.5", "desired": "1"},
                        "memory": {"min": "512Mi", "desired": "1Gi"},
                        "ports": [{"port": 8080, "expose": "http"}, {"port": 9090}],
                        "autoscaling": {"min": 1, "desired": 2, "max": 4, "targetCpuPercent": 70},
                        "healthCheck": {"path": "/health", "port": 8080, "method": "GET",
                                        "timeoutSeconds": 1, "failureThreshold": 3},
                        "environment": {"LOG_LEVEL": "info", "_X1": "y"},
                        "links": [{"type": "storage", "id": "files"}],
                        "permissions": "execution",
                        "command": ["./server"],
                        "stateful": false
                    },
                    "lifecycle": "live",
                    "dependencies": []
                },
                "files": {
                    "config": {"id": "files", "type": "storage"},
                    "lifecycle": "frozen",
                    "dependencies": []
                }
            }
        })
    }

    fn violations_of(value: &Value) -> Vec<FieldViolation> {
        parse_stack(value).unwrap().validate()
    }

    /// Applies `change` to the base stack and expects exactly one violation at `path` whose
    /// message names the container and contains `message`.
    #[track_caller]
    fn expect_one(change: impl FnOnce(&mut Value), path: &str, message: &str) {
        let mut value = base();
        change(&mut value);
        let violations = violations_of(&value);
        assert_eq!(violations.len(), 1, "expected one violation, got {violations:#?}");
        assert_eq!(violations[0].path, path);
        assert!(
            violations[0].message.contains(message),
            "{:?} does not contain {message:?}",
            violations[0].message
        );
    }

    fn api(value: &mut Value) -> &mut Value {
        &mut value["resources"]["api"]["config"]
    }

    #[test]
    fn the_base_stack_is_valid() {
        assert_eq!(violations_of(&base()), []);
        assert_eq!(parse_stack(&base()).unwrap().validate_for_release(), []);
    }

    #[test]
    fn environment_variables_fit_what_linux_starts() {
        // Exactly the largest variable Linux takes (NAME=value, 131071 bytes) is valid.
        let mut value = base();
        api(&mut value)["environment"]["BIG"] = json!("v".repeat(131_071 - 4));
        assert_eq!(violations_of(&value), []);
        // One byte more is not.
        expect_one(
            |v| api(v)["environment"]["BIG"] = json!("v".repeat(131_071 - 3)),
            "resources.api.config.environment.BIG",
            "over 131071 bytes",
        );
        // A megabyte: too large alone, and the container's variables too large together.
        let mut value = base();
        api(&mut value)["environment"]["HUGE"] = json!("v".repeat(1 << 20));
        let paths: Vec<String> = violations_of(&value).into_iter().map(|v| v.path).collect();
        assert_eq!(
            paths,
            ["resources.api.config.environment", "resources.api.config.environment.HUGE"]
        );
        // Many variables each under the limit, over the total.
        let mut value = base();
        for i in 0..6 {
            api(&mut value)["environment"][format!("V{i}")] = json!("v".repeat(100_000));
        }
        expect_one(|v| *v = value.clone(), "resources.api.config.environment", "at most 524288");
    }

    #[test]
    fn stack_id_charset_and_length() {
        for bad in ["", "my app", "a.b", &"x".repeat(129)] {
            expect_one(
                |v| v["id"] = json!(bad),
                "id",
                "must be 1..128 characters of [A-Za-z0-9_-]",
            );
        }
        let mut value = base();
        value["id"] = json!("A_b-9".repeat(25));
        assert_eq!(violations_of(&value), []);
    }

    #[test]
    fn container_id_is_a_dns_label() {
        for bad in ["Api", "-api", "api-", "a--b", "a_b", &"a".repeat(64)] {
            expect_one(
                |v| {
                    let entry = v["resources"].as_object_mut().unwrap().remove("api").unwrap();
                    v["resources"][bad] = entry;
                    v["resources"][bad]["config"]["id"] = json!(bad);
                },
                &format!("resources.{bad}.config.id"),
                "must be a DNS label",
            );
        }
    }

    #[test]
    fn resource_key_equals_config_id() {
        expect_one(
            |v| api(v)["id"] = json!("web"),
            "resources.api.config.id",
            "resource \"api\": config.id \"web\" must equal the resource key \"api\"",
        );
        expect_one(
            |v| v["resources"]["files"]["config"]["id"] = json!("other"),
            "resources.files.config.id",
            "must equal the resource key",
        );
    }

    #[test]
    fn at_least_one_port() {
        expect_one(
            |v| {
                api(v)["ports"] = json!([]);
                api(v)["healthCheck"].as_object_mut().unwrap().remove("port");
            },
            "resources.api.config.ports",
            "container \"api\": every container must define at least one port",
        );
    }

    #[test]
    fn at_most_one_exposed_port() {
        expect_one(
            |v| api(v)["ports"][1]["expose"] = json!("tcp"),
            "resources.api.config.ports",
            "container \"api\": only one port may be exposed publicly",
        );
    }

    #[test]
    fn ports_in_range_and_unique() {
        expect_one(
            |v| api(v)["ports"][1]["port"] = json!(0),
            "resources.api.config.ports[1].port",
            "port 0 is out of range; expected 1..65535",
        );
        expect_one(
            |v| api(v)["ports"][1]["port"] = json!(65536),
            "resources.api.config.ports[1].port",
            "out of range",
        );
        expect_one(
            |v| api(v)["ports"][1]["port"] = json!(8080),
            "resources.api.config.ports[1].port",
            "port 8080 is listed more than once",
        );
    }

    #[test]
    fn replicas_or_autoscaling_not_both() {
        expect_one(
            |v| api(v)["replicas"] = json!(2),
            "resources.api.config.replicas",
            "container \"api\": use either fixed replicas or autoscaling",
        );
    }

    #[test]
    fn replicas_at_least_one() {
        expect_one(
            |v| {
                api(v).as_object_mut().unwrap().remove("autoscaling");
                api(v)["replicas"] = json!(0);
            },
            "resources.api.config.replicas",
            "replicas must be at least 1",
        );
    }

    #[test]
    fn autoscaling_bounds_and_targets() {
        let path = "resources.api.config.autoscaling";
        expect_one(|v| api(v)["autoscaling"]["min"] = json!(3), path, "min <= desired <= max");
        expect_one(
            |v| api(v)["autoscaling"]["desired"] = json!(5),
            path,
            "got min 1, desired 5, max 4",
        );
        expect_one(
            |v| api(v)["autoscaling"] = json!({"min": 0, "desired": 0, "max": 0}),
            "resources.api.config.autoscaling.max",
            "autoscaling.max must be at least 1",
        );
        for bad in [json!(0), json!(100.5), json!(-3)] {
            expect_one(
                |v| api(v)["autoscaling"]["targetMemoryPercent"] = bad,
                "resources.api.config.autoscaling.targetMemoryPercent",
                "must be in (0, 100]",
            );
        }
        let mut value = base();
        api(&mut value)["autoscaling"]["targetCpuPercent"] = json!(100);
        api(&mut value)["autoscaling"]["targetMemoryPercent"] = json!(0.5);
        api(&mut value)["autoscaling"]["maxHttpP95LatencyMs"] = json!(250.5);
        assert_eq!(violations_of(&value), []);
        expect_one(
            |v| api(v)["autoscaling"]["targetHttpInFlightPerReplica"] = json!(0),
            "resources.api.config.autoscaling.targetHttpInFlightPerReplica",
            "at least 1",
        );
        expect_one(
            |v| api(v)["autoscaling"]["maxHttpP95LatencyMs"] = json!(0),
            "resources.api.config.autoscaling.maxHttpP95LatencyMs",
            "greater than 0",
        );
    }

    #[test]
    fn persistent_storage_requires_stateful_and_an_absolute_path() {
        expect_one(
            |v| api(v)["persistentStorage"] = json!({"size": "10Gi", "mountPath": "/data"}),
            "resources.api.config.persistentStorage",
            "container \"api\": persistentStorage requires stateful: true",
        );
        expect_one(
            |v| {
                api(v)["stateful"] = json!(true);
                api(v)["persistentStorage"] = json!({"size": "10Gi", "mountPath": "data"});
            },
            "resources.api.config.persistentStorage.mountPath",
            "persistentStorage.mountPath \"data\" must be an absolute path",
        );
        let mut value = base();
        api(&mut value)["stateful"] = json!(true);
        api(&mut value)["persistentStorage"] = json!({"size": "10Gi"});
        assert_eq!(violations_of(&value), []);
    }

    #[test]
    fn containers_are_live() {
        expect_one(
            |v| v["resources"]["api"]["lifecycle"] = json!("frozen"),
            "resources.api.lifecycle",
            "container \"api\": containers must have lifecycle \"live\"",
        );
    }

    #[test]
    fn cpu_and_memory_parse_are_positive_and_ordered() {
        expect_one(
            |v| api(v)["cpu"]["min"] = json!("half"),
            "resources.api.config.cpu.min",
            "cpu.min: cpu \"half\" is not a number",
        );
        expect_one(
            |v| api(v)["memory"]["desired"] = json!("1GB"),
            "resources.api.config.memory.desired",
            "unknown suffix \"GB\"",
        );
        expect_one(
            |v| api(v)["cpu"]["min"] = json!("0"),
            "resources.api.config.cpu.min",
            "cpu.min must be greater than 0",
        );
        expect_one(
            |v| api(v)["memory"] = json!("0"),
            "resources.api.config.memory",
            "memory must be greater than 0",
        );
        expect_one(
            |v| api(v)["cpu"]["min"] = json!("1500m"),
            "resources.api.config.cpu",
            "cpu.min (\"1500m\") must not exceed cpu.desired (\"1\")",
        );
        expect_one(
            |v| api(v)["memory"]["min"] = json!("2Gi"),
            "resources.api.config.memory",
            "must not exceed memory.desired",
        );
        let mut value = base();
        api(&mut value)["cpu"] = json!(0.25);
        api(&mut value)["memory"] = json!({"min": "1.5Gi", "desired": 1610612736});
        assert_eq!(violations_of(&value), []);
    }

    #[test]
    fn storage_sizes_parse_and_are_positive() {
        expect_one(
            |v| api(v)["ephemeralStorage"] = json!("lots"),
            "resources.api.config.ephemeralStorage",
            "ephemeralStorage: size \"lots\" is not a number",
        );
        expect_one(
            |v| {
                api(v)["stateful"] = json!(true);
                api(v)["persistentStorage"] = json!({"size": "0Gi", "mountPath": "/data"});
            },
            "resources.api.config.persistentStorage.size",
            "persistentStorage.size must be greater than 0",
        );
    }

    #[test]
    fn gpu_count_and_type() {
        for bad in [0, 9] {
            expect_one(
                |v| api(v)["gpu"] = json!({"type": "nvidia-t4", "count": bad}),
                "resources.api.config.gpu.count",
                "gpu.count must be between 1 and 8",
            );
        }
        expect_one(
            |v| api(v)["gpu"] = json!({"type": "", "count": 1}),
            "resources.api.config.gpu.type",
            "gpu.type must name a GPU type",
        );
    }

    #[test]
    fn health_check_rules() {
        expect_one(
            |v| api(v)["healthCheck"]["port"] = json!(8081),
            "resources.api.config.healthCheck.port",
            "healthCheck.port 8081 is not one of the container's ports (8080, 9090)",
        );
        for bad in [0, 6] {
            expect_one(
                |v| api(v)["healthCheck"]["timeoutSeconds"] = json!(bad),
                "resources.api.config.healthCheck.timeoutSeconds",
                "between 1 and 5",
            );
        }
        expect_one(
            |v| api(v)["healthCheck"]["failureThreshold"] = json!(0),
            "resources.api.config.healthCheck.failureThreshold",
            "at least 1",
        );
        expect_one(
            |v| api(v)["healthCheck"]["path"] = json!("health"),
            "resources.api.config.healthCheck.path",
            "must start with \"/\"",
        );
        expect_one(
            |v| api(v)["healthCheck"]["method"] = json!("get"),
            "resources.api.config.healthCheck.method",
            "healthCheck.method \"get\" is not one of GET, HEAD",
        );
    }

    #[test]
    fn environment_names() {
        for bad in ["1X", "A-B", "", "Ü"] {
            expect_one(
                |v| api(v)["environment"][bad] = json!("x"),
                &format!("resources.api.config.environment.{bad}"),
                "must match [A-Za-z_][A-Za-z0-9_]*",
            );
        }
        expect_one(
            |v| api(v)["environment"]["ALIEN_DEPLOYMENT_ID"] = json!("x"),
            "resources.api.config.environment.ALIEN_DEPLOYMENT_ID",
            "uses the prefix ALIEN_, which is reserved",
        );
    }

    #[test]
    fn links_name_resources_of_the_stack() {
        expect_one(
            |v| {
                api(v)["links"] =
                    json!([{"type": "storage", "id": "files"}, {"type": "kv", "id": "cache"}])
            },
            "resources.api.config.links[1]",
            "link to \"cache\" names no resource of the stack",
        );
        expect_one(
            |v| api(v)["links"][0]["type"] = json!("queue"),
            "resources.api.config.links[0]",
            "link to \"files\" says type \"queue\", but that resource is a \"storage\"",
        );
    }

    #[test]
    fn permissions_name_a_profile() {
        expect_one(
            |v| api(v)["permissions"] = json!(" "),
            "resources.api.config.permissions",
            "container \"api\": permissions must name a permission profile",
        );
    }

    #[test]
    fn command_is_not_empty() {
        expect_one(
            |v| api(v)["command"] = json!([]),
            "resources.api.config.command",
            "command must not be empty",
        );
        expect_one(
            |v| api(v)["command"] = json!(["", "--port"]),
            "resources.api.config.command[0]",
            "command[0] must name the program to run",
        );
    }

    #[test]
    fn image_and_source_are_named() {
        expect_one(
            |v| api(v)["code"]["image"] = json!(""),
            "resources.api.config.code.image",
            "code.image must name an image",
        );
        expect_one(
            |v| {
                api(v)["code"] =
                    json!({"type": "source", "src": "", "toolchain": {"type": "docker"}})
            },
            "resources.api.config.code.src",
            "code.src must name a source directory",
        );
    }

    #[test]
    fn releases_need_built_images() {
        let mut value = base();
        api(&mut value)["code"] =
            json!({"type": "source", "src": "./api", "toolchain": {"type": "rust"}});
        let stack = parse_stack(&value).unwrap();
        assert_eq!(stack.validate(), []);
        let violations = stack.validate_for_release();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].path, "resources.api.config.code");
        assert!(violations[0].message.contains("build the source first"), "{}", violations[0]);
    }

    #[test]
    fn several_violations_in_several_containers_are_all_reported() {
        let mut value = base();
        let mut worker = value["resources"]["api"].clone();
        worker["config"]["id"] = json!("worker");
        worker["config"]["ports"] =
            json!([{"port": 1, "expose": "tcp"}, {"port": 2, "expose": "http"}]);
        worker["config"]["healthCheck"]["port"] = json!(1);
        value["resources"]["worker"] = worker;
        value["id"] = json!("bad id");
        api(&mut value)["replicas"] = json!(2);
        api(&mut value)["gpu"] = json!({"type": "t4", "count": 0});
        api(&mut value)["environment"]["ALIEN_X"] = json!("1");

        let violations = violations_of(&value);
        let found: Vec<(&str, &str)> = violations
            .iter()
            .map(|v| (v.path.as_str(), v.message.split(':').next().unwrap_or_default()))
            .collect();
        assert_eq!(
            found,
            [
                ("id", "stack id \"bad id\" must be 1..128 characters of [A-Za-z0-9_-]"),
                ("resources.api.config.replicas", "container \"api\""),
                ("resources.api.config.gpu.count", "container \"api\""),
                ("resources.api.config.environment.ALIEN_X", "container \"api\""),
                ("resources.worker.config.ports", "container \"worker\""),
            ]
        );
        assert!(violations[4].message.contains("ports 1, 2 all set expose"));
    }

    fn stateful_stack(mount_path: &str, ports: Value) -> Stack {
        let mut value = base();
        api(&mut value)["stateful"] = json!(true);
        api(&mut value)["persistentStorage"] = json!({"size": "1Gi", "mountPath": mount_path});
        api(&mut value)["ports"] = ports;
        api(&mut value).as_object_mut().unwrap().remove("healthCheck");
        parse_stack(&value).unwrap()
    }

    #[test]
    fn updates_keep_stateful_ports_and_mount_path() {
        let old =
            stateful_stack("/data", json!([{"port": 8080, "expose": "http"}, {"port": 9090}]));
        let reordered =
            stateful_stack("/data", json!([{"port": 9090, "expose": "tcp"}, {"port": 8080}]));
        assert_eq!(check_update_compatible(&old, &reordered), []);

        let new = stateful_stack("/var/lib", json!([{"port": 8080, "expose": "http"}]));
        let violations = check_update_compatible(&old, &new);
        let paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(
            paths,
            ["resources.api.config.ports", "resources.api.config.persistentStorage.mountPath"]
        );
        assert_eq!(
            violations[0].message,
            "container \"api\": ports cannot change on update (was [8080, 9090], now [8080]); \
             deploy the changed container under a new id instead"
        );
        assert!(violations[1].message.contains("(was \"/data\", now \"/var/lib\")"));

        let stateless = parse_stack(&base()).unwrap();
        let violations = check_update_compatible(&stateless, &old);
        assert_eq!(violations.len(), 2, "{violations:#?}");
        assert!(
            violations[0]
                .message
                .contains("stateful cannot change on update (was false, now true)")
        );
        assert!(violations[1].message.contains("(was none, now \"/data\")"));
    }

    #[test]
    fn updates_may_add_and_remove_containers() {
        let old = parse_stack(&base()).unwrap();
        let mut value = base();
        let entry = value["resources"].as_object_mut().unwrap().remove("api").unwrap();
        value["resources"]["web"] = entry;
        value["resources"]["web"]["config"]["id"] = json!("web");
        value["resources"]["web"]["config"]["stateful"] = json!(true);
        let new = parse_stack(&value).unwrap();
        assert_eq!(check_update_compatible(&old, &new), []);
    }
}
