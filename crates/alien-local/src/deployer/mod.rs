//! [`LocalDeployer`]: the local platform's [`PlatformDeployer`], running each container of a
//! release as replicas on this host through the podman or docker CLI (spec/deployer.md, "Local
//! platform").
//!
//! Every step reads what runs from the engine by label (`alien.deployment=<id>`), never from
//! memory, so a deployer that lost its state (a manager restart, a stale state) adopts what it
//! finds: no duplicate replicas, no orphaned old ones. A step probes every running replica once,
//! decides with `rollout::plan` (one new replica at a time while old ones serve), acts, and
//! returns at once: `Wait` with a short delay while replicas start.
//!
//! Every port is served by a front on 127.0.0.1 in this process, on a stable port, that sends
//! each request or connection to a healthy replica's own published port (a reverse proxy for an
//! `expose: "http"` port, whose front is the `url`; a TCP forwarder otherwise), so the url, the
//! `internalDns` and the bindings of linking containers keep answering while replicas are
//! replaced. Containers with `autoscaling` are measured and scaled by a task of this deployer
//! between steps (see `autoscale`); docs/deployer.md lists what happens to each Container API
//! field.

mod autoscale;
mod engine;
mod front;
mod gpu;
mod preflight;
mod probe;
mod replica;
mod rollout;
mod scaling;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use alien_core::{ContainerConfig, Deployment, DeploymentError};
use alien_deployer::platform::RefreshReport;
use alien_deployer::{ContainerEnv, DeployRequest, PlatformDeployer, StepOutcome};
use futures_util::future::join_all;
use serde_json::{Value, json};

pub use autoscale::{ScalingEvent, ScalingSink};
pub use engine::{EngineChoice, EngineError, EngineKind};

use engine::{Engine, EngineContainer};
use front::{Fronts, Protocol};
use probe::{Probe, ProbeResult};
use replica::{
    LABEL_DEPLOYMENT, LABEL_EXPOSE, LABEL_FRONT_PORTS, LABEL_HEALTH, LABEL_RELEASE, LABEL_REPLICA,
    LABEL_RESOURCE, LABEL_SPEC, LABEL_URL_PORT, ReplicaSpec, front_ports_label, parse_expose,
    parse_front_ports, registry_of, replica_name,
};
use rollout::{Decision, FailReason, Health, ReplicaView};
use state::{Book, ContainerBook, ContainerReport, ReplicaReport, state_json};

/// The user name images of the manager's registry are pulled with; the secret is the
/// deployment token (`ALIEN_COMMANDS_TOKEN` of the container's environment).
pub const REGISTRY_USER: &str = "deployment";

/// How the [`LocalDeployer`] reaches registries and paces its steps.
#[derive(Debug, Clone)]
pub struct LocalDeployerOptions {
    /// Registries (`host:port`) served by this manager: their images are pulled with
    /// [`REGISTRY_USER`] and the deployment token.
    pub manager_registries: Vec<String>,
    /// Registries (`host:port`) reached over plain HTTP (`--tls-verify=false`; podman only,
    /// docker takes them from its daemon's `insecure-registries`).
    pub insecure_registries: Vec<String>,
    /// Environment of every engine command on top of this process's (for example
    /// `CONTAINERS_CONF` and `CONTAINERS_STORAGE_CONF`, or `DOCKER_HOST`); a `PATH` here is also
    /// where the engine is looked for.
    pub engine_env: Vec<(String, String)>,
    /// The `Wait` returned while replicas start.
    pub step_wait: Duration,
    /// How long after its start a replica that does not answer at all is still starting; an
    /// HTTP answer that is not 2xx/3xx counts as a failed probe at once.
    pub startup_grace: Duration,
    /// SIGTERM to SIGKILL when a replica is stopped.
    pub stop_grace: Duration,
    /// Pause between taking a replica out of the front and stopping it, for connections the
    /// front handed to it just before.
    pub drain: Duration,
    /// Where the host's CDI specifications (its GPUs) are read from.
    pub cdi_dirs: Vec<std::path::PathBuf>,
    /// How often autoscaled containers are measured.
    pub autoscale_interval: Duration,
    /// How long a lower replica count must be all an autoscaled container asks for before it
    /// scales down (scaling up is immediate).
    pub scale_down_window: Duration,
    /// Where scaling steps are reported (the deployment's events).
    pub scaling_events: Option<ScalingEvents>,
}

/// A [`ScalingSink`] in the options.
#[derive(Clone)]
pub struct ScalingEvents(pub ScalingSink);

impl std::fmt::Debug for ScalingEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScalingEvents")
    }
}

impl Default for LocalDeployerOptions {
    fn default() -> Self {
        Self {
            manager_registries: Vec::new(),
            insecure_registries: Vec::new(),
            engine_env: Vec::new(),
            step_wait: Duration::from_millis(500),
            startup_grace: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            drain: Duration::from_millis(200),
            cdi_dirs: gpu::DEFAULT_CDI_DIRS.iter().map(std::path::PathBuf::from).collect(),
            autoscale_interval: Duration::from_secs(1),
            scale_down_window: Duration::from_secs(30),
            scaling_events: None,
        }
    }
}

/// The local platform's deployer: containers on podman or docker on this host.
pub struct LocalDeployer {
    rt: Arc<Runtime>,
    /// The autoscaler's task, started with the first autoscaled container.
    autoscaler: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
}

/// What the deployer's steps and its autoscaler share.
pub struct Runtime {
    engine: Engine,
    options: LocalDeployerOptions,
    /// Registries learnt at run time (an agent's first target): (host, insecure).
    trusted: std::sync::RwLock<Vec<(String, bool)>>,
    fronts: Fronts,
    http: reqwest::Client,
    /// The replica count of each autoscaled container (`<deployment>/<container>`).
    scale_targets: std::sync::Mutex<HashMap<String, u32>>,
    /// Autoscaled containers whose last step was done, with what the autoscaler needs.
    scaled: std::sync::Mutex<HashMap<String, Scaled>>,
    /// One lock per deployment: a step and an autoscaling action never run at once.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::ops::Deref for LocalDeployer {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.rt
    }
}

impl Drop for LocalDeployer {
    fn drop(&mut self) {
        if let Some(task) = self.autoscaler.get() {
            task.abort();
        }
    }
}

/// An autoscaled container as its last completed step left it.
struct Scaled {
    dep: String,
    id: String,
    release: String,
    spec: ReplicaSpec,
    policy: alien_core::stack::Autoscaling,
    fronts: ContainerFronts,
    stabilizer: autoscale::Stabilizer,
    failures: BTreeMap<String, u32>,
}

impl std::fmt::Debug for LocalDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDeployer")
            .field("engine", &self.engine.kind())
            .field("binary", &self.engine.binary())
            .finish_non_exhaustive()
    }
}

/// The outcome of one container in a step.
enum Progress {
    Done,
    Wait,
    Failed(DeploymentError),
}

/// One replica as observed in a step.
struct Observed<'a> {
    container: &'a EngineContainer,
    ordinal: u32,
    health: Health,
}

impl Observed<'_> {
    fn report(&self) -> ReplicaReport {
        let c = self.container;
        ReplicaReport {
            name: c.name.clone(),
            healthy: self.health == Health::Healthy,
            died: matches!(self.health, Health::Died { .. }),
            ordinal: self.ordinal,
            status: c.status.clone(),
            health: match &self.health {
                Health::Healthy => "healthy",
                Health::Unhealthy { failures: 0, .. } => "starting",
                Health::Unhealthy { .. } => "unhealthy",
                Health::Exited { .. } | Health::Died { .. } => "stopped",
            },
            restarts: c.restart_count,
            started_at: c.started_at.clone(),
        }
    }
}

/// The fronts of one container on 127.0.0.1, one per port: where its `url`, `internalDns`,
/// `internalPorts` and the bindings of containers linking it point.
#[derive(Debug, Clone, Default)]
struct ContainerFronts {
    /// Container port -> the front's host port.
    ports: BTreeMap<u32, u16>,
    /// The exposed port and its kind (`http` or `tcp`).
    expose: Option<(&'static str, u32)>,
    /// The port `internalDns` and a binding's `internalUrl` name: the exposed one, else the
    /// first.
    primary: Option<u32>,
}

impl ContainerFronts {
    fn scheme(&self, port: u32) -> &'static str {
        match self.expose {
            Some(("tcp", exposed)) if exposed == port => "tcp",
            _ => "http",
        }
    }
}

/// `ALIEN_<ID>_BINDING`: the variable a container linking container `id` reads its binding from
/// (upper-cased, `-` as `_`, as the SDK looks it up).
pub fn binding_var(id: &str) -> String {
    format!("ALIEN_{}_BINDING", id.to_ascii_uppercase().replace('-', "_"))
}

impl LocalDeployer {
    /// Finds the engine (`podman` before `docker` for [`EngineChoice::Auto`]); an error says
    /// what is missing and how to install it.
    pub fn new(engine: EngineChoice, options: LocalDeployerOptions) -> Result<Self, EngineError> {
        let engine = Engine::find(engine, options.engine_env.clone())?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| EngineError::Output(format!("cannot build the probe HTTP client: {e}")))?;
        let rt = Runtime {
            engine,
            options,
            trusted: Default::default(),
            fronts: Fronts::default(),
            http,
            scale_targets: Default::default(),
            scaled: Default::default(),
            locks: Default::default(),
        };
        Ok(Self { rt: Arc::new(rt), autoscaler: std::sync::OnceLock::new() })
    }

    /// The engine in use.
    pub fn engine(&self) -> EngineKind {
        self.engine.kind()
    }
}

impl Runtime {
    fn engine_failure(error: &EngineError, resource: Option<&str>) -> DeploymentError {
        DeploymentError {
            code: "LOCAL_ENGINE_FAILED".to_owned(),
            message: format!("the container engine failed: {error}"),
            resource_id: resource.map(str::to_owned),
        }
    }

    /// Probes every replica once and updates the failure counts in `failures`. A replica that
    /// is not running counts as died (to be replaced) when `was_healthy` names it, as exited
    /// (it never came up) otherwise.
    async fn observe<'a>(
        &self,
        replicas: &[&'a EngineContainer],
        failures: &mut BTreeMap<String, u32>,
        was_healthy: &[String],
    ) -> Vec<Observed<'a>> {
        failures.retain(|name, _| replicas.iter().any(|c| &c.name == name));
        let probes = replicas.iter().map(|c| async move {
            let probe = c
                .labels
                .get(LABEL_HEALTH)
                .and_then(|l| serde_json::from_str::<Probe>(l).ok())
                .unwrap_or(Probe::None);
            if !c.running {
                return None;
            }
            let host_port = probe.port().and_then(|p| c.ports.get(&p).copied());
            Some(probe.run(&self.http, host_port).await)
        });
        let results = join_all(probes).await;
        let mut observed = Vec::new();
        for (c, result) in replicas.iter().zip(results) {
            let health = match result {
                None if was_healthy.contains(&c.name) => Health::Died { code: c.exit_code },
                None => Health::Exited { code: c.exit_code },
                Some(ProbeResult::Passed) => {
                    failures.remove(&c.name);
                    Health::Healthy
                }
                Some(ProbeResult::Failed { responded, detail }) => {
                    let count = failures.entry(c.name.clone()).or_insert(0);
                    if responded || self.past_grace(c) {
                        *count += 1;
                    }
                    Health::Unhealthy { failures: *count, last: detail }
                }
            };
            let ordinal = c.labels.get(LABEL_REPLICA).and_then(|o| o.parse().ok()).unwrap_or(0);
            observed.push(Observed { container: c, ordinal, health });
        }
        observed
    }

    fn past_grace(&self, c: &EngineContainer) -> bool {
        let Some(started) =
            c.started_at.as_deref().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        else {
            return true;
        };
        let elapsed = chrono::Utc::now().signed_duration_since(started);
        elapsed.to_std().is_ok_and(|e| e > self.options.startup_grace)
    }

    fn port_key(dep: &str, id: &str, port: u32) -> String {
        format!("{dep}/{id}/{port}")
    }

    fn container_prefix(dep: &str, id: &str) -> String {
        format!("{dep}/{id}/")
    }

    /// The front ports a container had: its bookkeeping, else its replicas' labels (the
    /// exposed port's also from the older `alien.url-port` label).
    fn preferred_fronts(
        cbook: &ContainerBook,
        mine: &[&EngineContainer],
        exposed: Option<u32>,
    ) -> BTreeMap<u32, u16> {
        let mut preferred = mine
            .iter()
            .find_map(|c| c.labels.get(LABEL_FRONT_PORTS))
            .map(|label| parse_front_ports(label))
            .unwrap_or_default();
        if let Some(port) = exposed {
            let url_port = cbook.url_port.or_else(|| {
                mine.iter().find_map(|c| c.labels.get(LABEL_URL_PORT).and_then(|p| p.parse().ok()))
            });
            if let Some(url_port) = url_port {
                preferred.entry(port).or_insert(url_port);
            }
        }
        preferred.extend(cbook.front_ports.iter().map(|(k, v)| (*k, *v)));
        preferred
    }

    /// Binds (or finds) a front for each of `ports` (the exposed one speaking its `expose`
    /// kind, the others TCP) on their `preferred` host ports when free, and closes the
    /// container's fronts of ports it no longer has.
    fn bind_fronts(
        &self,
        dep: &str,
        id: &str,
        ports: &[u32],
        expose: Option<(&'static str, u32)>,
        preferred: &BTreeMap<u32, u16>,
    ) -> Result<ContainerFronts, String> {
        let mut fronts = ContainerFronts {
            expose,
            primary: expose.map(|(_, port)| port).or_else(|| ports.first().copied()),
            ..ContainerFronts::default()
        };
        let mut keys = Vec::new();
        for &port in ports {
            let protocol = match expose {
                Some((kind, exposed)) if exposed == port => Protocol::of(Some(kind)),
                _ => Protocol::Tcp,
            };
            let key = Self::port_key(dep, id, port);
            let front =
                self.fronts.ensure(&key, preferred.get(&port).copied(), protocol).map_err(|e| {
                    format!(
                        "container {id}: cannot bind the front of port {port} on 127.0.0.1: {e}"
                    )
                })?;
            fronts.ports.insert(port, front);
            keys.push(key);
        }
        self.fronts.close_others(&Self::container_prefix(dep, id), &keys);
        Ok(fronts)
    }

    /// Points the front of each port at the healthy replicas (at the running ones while none
    /// is healthy), leaving out `excluded`; returns whether a replica left a rotation it was
    /// in (then it is drained before it stops).
    fn point_fronts(
        &self,
        dep: &str,
        id: &str,
        fronts: &ContainerFronts,
        observed: &[Observed<'_>],
        excluded: &[String],
    ) -> bool {
        let mut left = false;
        for port in fronts.ports.keys() {
            let key = Self::port_key(dep, id, *port);
            let before = self.fronts.backends(&key);
            let serving = |healthy_only: bool| -> Vec<u16> {
                observed
                    .iter()
                    .filter(|o| !excluded.contains(&o.container.name))
                    .filter(|o| o.container.running)
                    .filter(|o| !healthy_only || o.health == Health::Healthy)
                    .filter_map(|o| o.container.ports.get(port).copied())
                    .collect()
            };
            let mut ports = serving(true);
            if ports.is_empty() {
                ports = serving(false);
            }
            self.fronts.set_backends(&key, ports);
            left |= observed.iter().any(|o| {
                excluded.contains(&o.container.name)
                    && o.container.ports.get(port).is_some_and(|p| before.contains(p))
            });
        }
        left
    }

    /// `url`, `internalDns` and `internalPorts` of a container with `fronts`.
    fn addresses(
        &self,
        fronts: &ContainerFronts,
    ) -> (Option<String>, Option<String>, BTreeMap<u32, String>) {
        let gateway = self.engine.kind().host_gateway();
        let url = fronts.expose.and_then(|(kind, port)| {
            fronts.ports.get(&port).map(|front| format!("{kind}://127.0.0.1:{front}"))
        });
        let internal_dns = fronts
            .primary
            .and_then(|port| fronts.ports.get(&port))
            .map(|front| format!("{gateway}:{front}"));
        let internal_ports = fronts
            .ports
            .iter()
            .map(|(port, front)| (*port, format!("{gateway}:{front}")))
            .collect();
        (url, internal_dns, internal_ports)
    }

    /// The binding a container linking container `id` gets (`ALIEN_<ID>_BINDING`): the shape
    /// the SDK reads for local containers, with every port's address besides.
    fn binding(&self, id: &str, fronts: &ContainerFronts) -> Value {
        let gateway = self.engine.kind().host_gateway();
        let (public_url, _, internal_ports) = self.addresses(fronts);
        let mut binding = json!({"service": "local", "containerName": id});
        if let Some((port, front)) =
            fronts.primary.and_then(|port| fronts.ports.get(&port).map(|f| (port, f)))
        {
            binding["internalUrl"] = json!(format!("{}://{gateway}:{front}", fronts.scheme(port)));
        }
        if let Some(url) = public_url {
            binding["publicUrl"] = json!(url);
        }
        binding["internalPorts"] = json!(internal_ports);
        binding
    }

    /// Starts replica `ordinal` of container `id` (the image and volume are there); returns its
    /// name, or why it did not start.
    async fn start_replica(
        &self,
        dep: &str,
        id: &str,
        release: &str,
        spec: &ReplicaSpec,
        ordinal: u32,
        fronts: &ContainerFronts,
    ) -> Result<String, String> {
        let name = replica_name(dep, id, ordinal);
        let mut labels = vec![
            (LABEL_DEPLOYMENT.to_owned(), dep.to_owned()),
            (LABEL_RELEASE.to_owned(), release.to_owned()),
            (LABEL_RESOURCE.to_owned(), id.to_owned()),
            (LABEL_REPLICA.to_owned(), ordinal.to_string()),
            (LABEL_SPEC.to_owned(), spec.hash.clone()),
            (LABEL_HEALTH.to_owned(), spec.probe_label()),
        ];
        if let Some(expose) = spec.expose_label() {
            labels.push((LABEL_EXPOSE.to_owned(), expose));
        }
        if let Some(port) = fronts.expose.and_then(|(_, port)| fronts.ports.get(&port)) {
            labels.push((LABEL_URL_PORT.to_owned(), port.to_string()));
        }
        labels.push((LABEL_FRONT_PORTS.to_owned(), front_ports_label(&fronts.ports)));
        let argv = spec.run_args(&self.engine.run_args().await, &name, &labels);
        match self.engine.run_detached(&argv, &spec.env).await {
            Ok(_) => Ok(name),
            Err(e) => Err(format!("container {id}: cannot start replica {name}: {e}")),
        }
    }

    async fn ensure_image(&self, spec: &ReplicaSpec, env: &ContainerEnv) -> Result<(), String> {
        if self.engine.image_present(&spec.image).await {
            return Ok(());
        }
        let registry = registry_of(&spec.image);
        let learnt = self
            .trusted
            .read()
            .map(|t| t.iter().find(|(host, _)| host == registry).map(|(_, insecure)| *insecure))
            .unwrap_or_default();
        let ours =
            learnt.is_some() || self.options.manager_registries.iter().any(|r| r == registry);
        let creds = match (ours, env.get("ALIEN_COMMANDS_TOKEN")) {
            (true, Some(token)) => Some((REGISTRY_USER, token)),
            (true, None) => {
                return Err(format!(
                    "{} is in the manager's registry but the container has no deployment token \
                     (ALIEN_COMMANDS_TOKEN) to pull it with",
                    spec.image
                ));
            }
            (false, _) => None,
        };
        let insecure =
            learnt == Some(true) || self.options.insecure_registries.iter().any(|r| r == registry);
        self.engine
            .pull(&spec.image, registry, creds, insecure)
            .await
            .map_err(|e| format!("cannot pull {}: {e}", spec.image))
    }

    /// One step of one container, with its environment (bindings included), fronts and GPU
    /// devices.
    #[allow(clippy::too_many_arguments)] // one container's whole context
    async fn step_container(
        &self,
        request: &DeployRequest<'_>,
        id: &str,
        config: &ContainerConfig,
        env: ContainerEnv,
        fronts: &ContainerFronts,
        devices: Vec<String>,
        mine: &[&EngineContainer],
        cbook: &mut ContainerBook,
    ) -> (ContainerReport, Progress) {
        let dep = request.deployment.id.as_str();
        let desired = match &config.autoscaling {
            Some(policy) => self
                .scale_target(&Self::scale_key(dep, id))
                .unwrap_or(policy.desired)
                .clamp(policy.min.max(1), policy.max.max(1)),
            None => config.desired_replicas(),
        };
        let fail = |code: &str, message: String| DeploymentError {
            code: code.to_owned(),
            message,
            resource_id: Some(id.to_owned()),
        };
        let mut report = ContainerReport {
            id: id.to_owned(),
            resource_status: "provisioning",
            status: "pending",
            desired,
            url: None,
            internal_dns: None,
            internal_ports: BTreeMap::new(),
            replicas: Vec::new(),
            error: None,
            notices: preflight::notices(config),
        };
        let spec = match ReplicaSpec::new(dep, config, &env, devices) {
            Ok(spec) => spec,
            Err(message) => {
                report.resource_status = "provision-failed";
                report.status = "failing";
                let error = fail("VALIDATION_FAILED", message);
                report.error = Some(error.clone());
                return (report, Progress::Failed(error));
            }
        };
        let was_healthy = state::healthy_in(request.state, id);
        let observed = self.observe(mine, &mut cbook.failures, &was_healthy).await;
        // An update: replicas of another spec run, or an earlier step already deployed it.
        let updating =
            observed.iter().any(|o| o.container.labels.get(LABEL_SPEC) != Some(&spec.hash))
                || state::resources_in(request.state).iter().any(|r| r == id)
                    && request.state.is_some_and(|s| s["resources"][id]["status"] == "running");
        if updating {
            report.resource_status = "updating";
        }
        let views: Vec<ReplicaView> = observed
            .iter()
            .map(|o| ReplicaView {
                name: o.container.name.clone(),
                ordinal: o.ordinal,
                current: o.container.labels.get(LABEL_SPEC) == Some(&spec.hash),
                health: o.health.clone(),
            })
            .collect();
        let decision = rollout::plan(desired, spec.probe.failure_threshold(), &views);
        let (removed, started, progress) = match decision {
            Decision::Fail { replica, reason } => {
                let logs = self.engine.logs_tail(&replica, 5).await;
                let (code, message) = match reason {
                    FailReason::Unhealthy { failures, last } => (
                        "HEALTH_CHECK_FAILED",
                        format!(
                            "container {id}: new replica {replica} failed {failures} consecutive \
                             health checks ({}: {last}); the previous replicas keep running",
                            spec.probe.describe()
                        ),
                    ),
                    FailReason::Exited { code } => (
                        "REPLICA_EXITED",
                        format!(
                            "container {id}: new replica {replica} exited with code {code}; the \
                             previous replicas keep running"
                        ),
                    ),
                };
                let message = if logs.is_empty() {
                    message
                } else {
                    format!("{message}. Its last log lines:\n{logs}")
                };
                (vec![replica], Vec::new(), Progress::Failed(fail(code, message)))
            }
            Decision::Act { remove, start, done } => {
                let progress =
                    if done && start.is_empty() { Progress::Done } else { Progress::Wait };
                (remove, start, progress)
            }
        };

        // The fronts first: a replica leaves the rotations before it stops.
        if self.point_fronts(dep, id, fronts, &observed, &removed) {
            tokio::time::sleep(self.options.drain).await;
        }
        (report.url, report.internal_dns, report.internal_ports) = self.addresses(fronts);
        cbook.front_ports.clone_from(&fronts.ports);
        cbook.url_port = fronts.expose.and_then(|(_, port)| fronts.ports.get(&port).copied());

        let mut progress = progress;
        if let Err(e) = self.engine.stop_and_remove(&removed, self.options.stop_grace).await {
            progress = Progress::Failed(Self::engine_failure(&e, Some(id)));
        }
        for name in &removed {
            cbook.failures.remove(name);
        }
        let mut started_names = Vec::new();
        if !started.is_empty() && matches!(progress, Progress::Wait) {
            if let Err(message) = self.ensure_image(&spec, &env).await {
                progress = Progress::Failed(fail(
                    "IMAGE_PULL_FAILED",
                    format!("container {id}: {message}"),
                ));
            } else if let Some((volume, _)) = &spec.volume
                && let Err(e) = self
                    .engine
                    .ensure_volume(
                        volume,
                        &[
                            (LABEL_DEPLOYMENT.to_owned(), dep.to_owned()),
                            (LABEL_RESOURCE.to_owned(), id.to_owned()),
                        ],
                    )
                    .await
            {
                progress = Progress::Failed(Self::engine_failure(&e, Some(id)));
            } else {
                for ordinal in started {
                    let release = request.release_id.to_string();
                    match self.start_replica(dep, id, &release, &spec, ordinal, fronts).await {
                        Ok(name) => started_names.push((name, ordinal)),
                        Err(message) => {
                            progress = Progress::Failed(fail("LOCAL_ENGINE_FAILED", message));
                            break;
                        }
                    }
                }
            }
        }

        report.replicas = observed
            .iter()
            .filter(|o| !removed.contains(&o.container.name))
            .map(Observed::report)
            .chain(started_names.into_iter().map(|(name, ordinal)| ReplicaReport {
                name,
                healthy: false,
                died: false,
                ordinal,
                status: "created".to_owned(),
                health: "starting",
                restarts: 0,
                started_at: None,
            }))
            .collect();
        let any_running =
            observed.iter().any(|o| o.container.running && !removed.contains(&o.container.name));
        report.status = ContainerReport::status_of(&report.replicas, any_running);
        match &progress {
            Progress::Done => report.resource_status = "running",
            Progress::Wait => {}
            Progress::Failed(error) => {
                report.resource_status =
                    if updating { "update-failed" } else { "provision-failed" };
                report.status = "failing";
                report.error = Some(error.clone());
            }
        }
        (report, progress)
    }
}

impl alien_deployer::AgentPlatform for LocalDeployer {
    fn trust_registry(&self, host: &str, insecure: bool) {
        if let Ok(mut trusted) = self.trusted.write() {
            match trusted.iter_mut().find(|(h, _)| h == host) {
                Some(entry) => entry.1 = insecure,
                None => trusted.push((host.to_owned(), insecure)),
            }
        }
    }

    fn host_gateway(&self) -> String {
        self.engine.kind().host_gateway().to_owned()
    }
}

#[async_trait::async_trait]
impl PlatformDeployer for LocalDeployer {
    fn describe(&self) -> String {
        format!("{} on this host", self.engine.kind().binary_name())
    }

    async fn apply(&self, request: DeployRequest<'_>) -> StepOutcome {
        let dep = request.deployment.id.as_str();
        let lock = self.lock_of(dep);
        let _step = lock.lock().await;
        let mut book = Book::from_state(request.state);
        book.engine = self.engine.kind().binary_name().to_owned();
        let all = match self.engine.containers_with_label(LABEL_DEPLOYMENT, Some(dep)).await {
            Ok(all) => all,
            Err(e) => {
                return StepOutcome::Failed {
                    state: None,
                    error: Runtime::engine_failure(&e, None),
                };
            }
        };
        // Before anything starts: what the local platform cannot run, and GPUs it lacks.
        if let Err(error) = self.preflight(&request) {
            return StepOutcome::Failed { state: None, error };
        }
        let containers: Vec<(&String, &ContainerConfig)> = request
            .stack
            .resources
            .iter()
            .filter_map(|(id, entry)| entry.config.as_container().map(|c| (id, c)))
            .collect();
        let mine_of = |id: &String| -> Vec<&EngineContainer> {
            all.iter().filter(|c| c.labels.get(LABEL_RESOURCE) == Some(id)).collect()
        };
        // Every container's fronts first: a container's bindings name those it links.
        let mut fronts = BTreeMap::new();
        for (id, config) in &containers {
            let cbook = book.containers.entry((*id).clone()).or_default();
            let expose = config.exposed_port().map(|p| {
                let kind = match p.expose {
                    Some(alien_core::stack::Expose::Tcp) => "tcp",
                    _ => "http",
                };
                (kind, p.port)
            });
            let preferred =
                Runtime::preferred_fronts(cbook, &mine_of(id), expose.map(|(_, port)| port));
            let ports: Vec<u32> = config.ports.iter().map(|p| p.port).collect();
            match self.bind_fronts(dep, id, &ports, expose, &preferred) {
                Ok(bound) => {
                    fronts.insert((*id).clone(), bound);
                }
                Err(message) => {
                    let error = DeploymentError {
                        code: "LOCAL_FRONT_FAILED".to_owned(),
                        message,
                        resource_id: Some((*id).clone()),
                    };
                    return StepOutcome::Failed { state: None, error };
                }
            }
        }
        let mut reports = Vec::new();
        let mut failed = None;
        let mut waiting = false;
        let mut ids = BTreeSet::new();
        for (id, config) in &containers {
            ids.insert((*id).clone());
            let mut env = request.env.get(*id).cloned().unwrap_or_default();
            for link in config.links() {
                if let Some(linked) = fronts.get(&link.id) {
                    env.0.push((binding_var(&link.id), self.binding(&link.id, linked).to_string()));
                }
            }
            let devices = match &config.gpu {
                Some(gpu) => {
                    let available = gpu::cdi_devices(&self.options.cdi_dirs);
                    gpu::assign(id, &gpu.gpu_type, gpu.count, &available, &self.options.cdi_dirs)
                        .unwrap_or_default()
                }
                None => Vec::new(),
            };
            let mine = mine_of(id);
            let cbook = book.containers.entry((*id).clone()).or_default();
            let own = fronts.get(*id).cloned().unwrap_or_default();
            let step_env = env.clone();
            let (report, progress) = self
                .step_container(&request, id, config, env, &own, devices.clone(), &mine, cbook)
                .await;
            match &config.autoscaling {
                Some(_) if matches!(progress, Progress::Done) => {
                    self.track_scaling(&request, id, config, &step_env, &own, devices);
                }
                autoscaling => self.untrack_scaling(dep, id, autoscaling.is_none()),
            }
            reports.push(report);
            match progress {
                Progress::Done => {}
                Progress::Wait => waiting = true,
                Progress::Failed(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        book.containers.retain(|id, _| ids.contains(id));
        self.forget_scaling(dep, Some(&ids));
        if !self.scaled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty() {
            let rt = self.rt.clone();
            self.autoscaler.get_or_init(|| tokio::spawn(rt.autoscale_forever()));
        }
        if failed.is_none() && !waiting {
            // Containers the release no longer has: their replicas go (their volumes stay
            // until the deployment is destroyed with cleanup).
            let gone: Vec<String> = all
                .iter()
                .filter(|c| c.labels.get(LABEL_RESOURCE).is_none_or(|r| !ids.contains(r)))
                .map(|c| c.name.clone())
                .collect();
            for resource in all.iter().filter_map(|c| c.labels.get(LABEL_RESOURCE)) {
                if !ids.contains(resource) {
                    self.fronts.close_others(&Runtime::container_prefix(dep, resource), &[]);
                }
            }
            if let Err(e) = self.engine.stop_and_remove(&gone, self.options.stop_grace).await {
                failed = Some(Runtime::engine_failure(&e, None));
            }
        }
        let state = state_json(&reports, &book);
        match failed {
            Some(error) => StepOutcome::Failed { state: Some(state), error },
            None if waiting => StepOutcome::Wait { state, wait: self.options.step_wait },
            None => StepOutcome::Done { state },
        }
    }

    async fn destroy(
        &self,
        deployment: &Deployment,
        _state: Option<&Value>,
        cleanup: bool,
        // The local engine runs as this process: its credentials are always the ambient ones.
        _credentials: &alien_deployer::platform::Credentials,
    ) -> StepOutcome {
        let dep = deployment.id.as_str();
        let lock = self.lock_of(dep);
        let _step = lock.lock().await;
        self.forget_scaling(dep, None);
        self.fronts.close_deployment(dep);
        let result = async {
            let all = self.engine.containers_with_label(LABEL_DEPLOYMENT, Some(dep)).await?;
            let names: Vec<String> = all.into_iter().map(|c| c.name).collect();
            self.engine.stop_and_remove(&names, self.options.stop_grace).await?;
            if cleanup {
                let volumes = self.engine.volumes_with_label(LABEL_DEPLOYMENT, dep).await?;
                self.engine.remove_volumes(&volumes).await?;
            }
            Ok::<_, EngineError>(())
        }
        .await;
        match result {
            Ok(()) => {
                // Its lock is not needed any more (a later step makes a new one).
                self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(dep);
                StepOutcome::Done { state: json!({"platform": "local", "resources": {}}) }
            }
            Err(e) => StepOutcome::Failed { state: None, error: Runtime::engine_failure(&e, None) },
        }
    }

    async fn refresh(
        &self,
        deployment: &Deployment,
        state: Option<&Value>,
        _credentials: &alien_deployer::platform::Credentials,
    ) -> RefreshReport {
        self.refresh_deployment(deployment.id.as_str(), state).await
    }
}

impl LocalDeployer {
    /// Binds the url fronts again for every deployment whose containers this engine runs, from
    /// their labels (a refresh of each, without state); returns how many deployments it found.
    /// Call it once when the manager (or agent) starts: the fronts live in this process, and a
    /// `running` deployment is not stepped again until something changes.
    pub async fn restore(&self) -> Result<usize, EngineError> {
        let all = self.engine.containers_with_label(LABEL_DEPLOYMENT, None).await?;
        let deployments: BTreeSet<String> =
            all.iter().filter_map(|c| c.labels.get(LABEL_DEPLOYMENT).cloned()).collect();
        for dep in &deployments {
            self.refresh_deployment(dep, None).await;
        }
        Ok(deployments.len())
    }
}

impl Runtime {
    async fn refresh_deployment(&self, dep: &str, state: Option<&Value>) -> RefreshReport {
        let mut book = Book::from_state(state);
        book.engine = self.engine.kind().binary_name().to_owned();
        let all = match self.engine.containers_with_label(LABEL_DEPLOYMENT, Some(dep)).await {
            Ok(all) => all,
            Err(e) => {
                return RefreshReport {
                    state: None,
                    failing: Some(Self::engine_failure(&e, None)),
                };
            }
        };
        let mut ids: BTreeSet<String> = state::resources_in(state).into_iter().collect();
        ids.extend(all.iter().filter_map(|c| c.labels.get(LABEL_RESOURCE).cloned()));
        let mut reports = Vec::new();
        let mut failing = None;
        for id in &ids {
            let mine: Vec<&EngineContainer> =
                all.iter().filter(|c| c.labels.get(LABEL_RESOURCE) == Some(id)).collect();
            let cbook = book.containers.entry(id.clone()).or_default();
            let was_healthy = state::healthy_in(state, id);
            let observed = self.observe(&mine, &mut cbook.failures, &was_healthy).await;
            let desired = self
                .scale_target(&Self::scale_key(dep, id))
                .or_else(|| state::desired_in(state, id))
                .unwrap_or(mine.len() as u32);
            let expose = mine
                .iter()
                .find_map(|c| c.labels.get(LABEL_EXPOSE))
                .and_then(|label| parse_expose(label))
                .map(|(kind, port)| (if kind == "tcp" { "tcp" } else { "http" }, port));
            let preferred = Self::preferred_fronts(cbook, &mine, expose.map(|(_, port)| port));
            let ports: Vec<u32> = preferred.keys().copied().collect();
            let fronts = match self.bind_fronts(dep, id, &ports, expose, &preferred) {
                Ok(fronts) => {
                    self.point_fronts(dep, id, &fronts, &observed, &[]);
                    cbook.front_ports.clone_from(&fronts.ports);
                    cbook.url_port = expose.and_then(|(_, port)| fronts.ports.get(&port).copied());
                    fronts
                }
                Err(message) => {
                    tracing::warn!(deployment = dep, %message, "cannot bind a front again");
                    ContainerFronts::default()
                }
            };
            let (url, internal_dns, internal_ports) = self.addresses(&fronts);
            let threshold = |c: &EngineContainer| {
                c.labels
                    .get(LABEL_HEALTH)
                    .and_then(|l| serde_json::from_str::<Probe>(l).ok())
                    .unwrap_or(Probe::None)
                    .failure_threshold()
            };
            // A replica below its failure threshold still counts as serving.
            let mut problems = Vec::new();
            let mut serving = 0;
            for o in &observed {
                match &o.health {
                    Health::Healthy => serving += 1,
                    Health::Unhealthy { failures, last } if *failures >= threshold(o.container) => {
                        problems.push(format!(
                            "{} failed {failures} consecutive health checks ({last})",
                            o.container.name
                        ));
                    }
                    Health::Unhealthy { .. } => serving += 1,
                    Health::Exited { code } | Health::Died { code } => {
                        problems.push(format!("{} exited with code {code}", o.container.name));
                    }
                }
            }
            let error = if serving < desired as usize || !problems.is_empty() {
                let mut message =
                    format!("container {id}: {serving} of {desired} replicas serving");
                if !problems.is_empty() {
                    message.push_str(": ");
                    message.push_str(&problems.join("; "));
                }
                let code =
                    if observed.is_empty() { "REPLICAS_MISSING" } else { "REPLICAS_UNHEALTHY" };
                Some(DeploymentError {
                    code: code.to_owned(),
                    message,
                    resource_id: Some(id.clone()),
                })
            } else {
                None
            };
            let replicas: Vec<ReplicaReport> = observed.iter().map(Observed::report).collect();
            let any_running = observed.iter().any(|o| o.container.running);
            let status = if error.is_some() {
                "failing"
            } else {
                ContainerReport::status_of(&replicas, any_running)
            };
            if failing.is_none() {
                failing.clone_from(&error);
            }
            reports.push(ContainerReport {
                id: id.clone(),
                resource_status: "running",
                status,
                desired,
                url,
                internal_dns,
                internal_ports,
                replicas,
                error,
                notices: state::notices_in(state, id),
            });
        }
        book.containers.retain(|id, _| ids.contains(id));
        RefreshReport { state: Some(state_json(&reports, &book)), failing }
    }
}
