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
//! An exposed port is served at a stable `url` by a front on 127.0.0.1 in this process (a
//! reverse proxy for `http`, a TCP forwarder for `tcp`) that sends each request or connection to
//! a healthy replica's own published port, so the url keeps answering while replicas are
//! replaced.

mod engine;
mod front;
mod probe;
mod replica;
mod rollout;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use alien_core::{ContainerConfig, Deployment, DeploymentError};
use alien_deployer::platform::RefreshReport;
use alien_deployer::{ContainerEnv, DeployRequest, PlatformDeployer, StepOutcome};
use futures_util::future::join_all;
use serde_json::{Value, json};

pub use engine::{EngineChoice, EngineError, EngineKind};

use engine::{Engine, EngineContainer};
use front::{Fronts, Protocol};
use probe::{Probe, ProbeResult};
use replica::{
    LABEL_DEPLOYMENT, LABEL_EXPOSE, LABEL_HEALTH, LABEL_RELEASE, LABEL_REPLICA, LABEL_RESOURCE,
    LABEL_SPEC, LABEL_URL_PORT, ReplicaSpec, parse_expose, registry_of, replica_name,
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
        }
    }
}

/// The local platform's deployer: containers on podman or docker on this host.
pub struct LocalDeployer {
    engine: Engine,
    options: LocalDeployerOptions,
    /// Registries learnt at run time (an agent's first target): (host, insecure).
    trusted: std::sync::RwLock<Vec<(String, bool)>>,
    fronts: Fronts,
    http: reqwest::Client,
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
    /// Host port of the exposed container port.
    exposed: Option<u16>,
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
        Ok(Self { engine, options, trusted: Default::default(), fronts: Fronts::default(), http })
    }

    /// The engine in use.
    pub fn engine(&self) -> EngineKind {
        self.engine.kind()
    }

    fn key(deployment: &str, container: &str) -> String {
        format!("{deployment}/{container}")
    }

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
            let exposed = c
                .labels
                .get(LABEL_EXPOSE)
                .and_then(|l| parse_expose(l))
                .and_then(|(_, port)| c.ports.get(&port).copied());
            let ordinal = c.labels.get(LABEL_REPLICA).and_then(|o| o.parse().ok()).unwrap_or(0);
            observed.push(Observed { container: c, ordinal, health, exposed });
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

    /// Binds (or finds) the front of an exposed container and points it at the healthy
    /// replicas (at the running ones while none is healthy); returns its port.
    fn update_front(
        &self,
        key: &str,
        preferred: Option<u16>,
        protocol: Protocol,
        observed: &[Observed<'_>],
        excluded: &[String],
    ) -> std::io::Result<u16> {
        let port = self.fronts.ensure(key, preferred, protocol)?;
        let serving = |healthy_only: bool| -> Vec<u16> {
            observed
                .iter()
                .filter(|o| !excluded.contains(&o.container.name))
                .filter(|o| o.container.running)
                .filter(|o| !healthy_only || o.health == Health::Healthy)
                .filter_map(|o| o.exposed)
                .collect()
        };
        let mut ports = serving(true);
        if ports.is_empty() {
            ports = serving(false);
        }
        self.fronts.set_backends(key, ports);
        Ok(port)
    }

    fn urls(&self, expose: Option<&str>, port: Option<u16>) -> (Option<String>, Option<String>) {
        match port {
            Some(port) => {
                let scheme = if expose == Some("tcp") { "tcp" } else { "http" };
                (
                    Some(format!("{scheme}://127.0.0.1:{port}")),
                    Some(format!("{}:{port}", self.engine.kind().host_gateway())),
                )
            }
            None => (None, None),
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

    /// One step of one container.
    async fn step_container(
        &self,
        request: &DeployRequest<'_>,
        id: &str,
        config: &ContainerConfig,
        mine: &[&EngineContainer],
        cbook: &mut ContainerBook,
    ) -> (ContainerReport, Progress) {
        let dep = request.deployment.id.as_str();
        let env = request.env.get(id).cloned().unwrap_or_default();
        let desired = config.desired_replicas();
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
            replicas: Vec::new(),
            error: None,
        };
        let spec = match ReplicaSpec::new(dep, config, &env) {
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

        // The front first: a replica leaves the rotation before it stops.
        let key = Self::key(dep, id);
        let mut front_port = None;
        if spec.expose.is_some() {
            let preferred = cbook.url_port.or_else(|| {
                mine.iter().find_map(|c| c.labels.get(LABEL_URL_PORT).and_then(|p| p.parse().ok()))
            });
            let before = self.fronts.backends(&key);
            let protocol = Protocol::of(spec.expose.map(|(kind, _)| kind));
            match self.update_front(&key, preferred, protocol, &observed, &removed) {
                Ok(port) => {
                    front_port = Some(port);
                    cbook.url_port = Some(port);
                }
                Err(e) => {
                    let error = fail(
                        "LOCAL_FRONT_FAILED",
                        format!("container {id}: cannot bind its url's port on 127.0.0.1: {e}"),
                    );
                    report.error = Some(error.clone());
                    return (report, Progress::Failed(error));
                }
            }
            let drained = observed.iter().any(|o| {
                removed.contains(&o.container.name)
                    && o.exposed.is_some_and(|p| before.contains(&p))
            });
            if drained {
                tokio::time::sleep(self.options.drain).await;
            }
        } else {
            self.fronts.close(&key);
        }
        (report.url, report.internal_dns) =
            self.urls(spec.expose.map(|(kind, _)| kind), front_port);

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
                    let name = replica_name(dep, id, ordinal);
                    let mut labels = vec![
                        (LABEL_DEPLOYMENT.to_owned(), dep.to_owned()),
                        (LABEL_RELEASE.to_owned(), request.release_id.to_string()),
                        (LABEL_RESOURCE.to_owned(), id.to_owned()),
                        (LABEL_REPLICA.to_owned(), ordinal.to_string()),
                        (LABEL_SPEC.to_owned(), spec.hash.clone()),
                        (LABEL_HEALTH.to_owned(), spec.probe_label()),
                    ];
                    if let Some(expose) = spec.expose_label() {
                        labels.push((LABEL_EXPOSE.to_owned(), expose));
                    }
                    if let Some(port) = front_port {
                        labels.push((LABEL_URL_PORT.to_owned(), port.to_string()));
                    }
                    let argv = spec.run_args(self.engine.kind(), &name, &labels);
                    match self.engine.run_detached(&argv, &spec.env).await {
                        Ok(_) => started_names.push((name, ordinal)),
                        Err(e) => {
                            progress = Progress::Failed(fail(
                                "LOCAL_ENGINE_FAILED",
                                format!("container {id}: cannot start replica {name}: {e}"),
                            ));
                            break;
                        }
                    }
                }
            }
        }

        report.replicas = observed
            .iter()
            .filter(|o| !removed.contains(&o.container.name))
            .map(|o| ReplicaReport {
                name: o.container.name.clone(),
                healthy: o.health == Health::Healthy,
                died: matches!(o.health, Health::Died { .. }),
                ordinal: o.ordinal,
            })
            .chain(started_names.into_iter().map(|(name, ordinal)| ReplicaReport {
                name,
                healthy: false,
                died: false,
                ordinal,
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
        let mut book = Book::from_state(request.state);
        book.engine = self.engine.kind().binary_name().to_owned();
        let all = match self.engine.containers_with_label(LABEL_DEPLOYMENT, Some(dep)).await {
            Ok(all) => all,
            Err(e) => {
                return StepOutcome::Failed { state: None, error: Self::engine_failure(&e, None) };
            }
        };
        let mut reports = Vec::new();
        let mut failed = None;
        let mut waiting = false;
        let mut ids = BTreeSet::new();
        for (id, entry) in &request.stack.resources {
            let Some(config) = entry.config.as_container() else { continue };
            ids.insert(id.clone());
            let mine: Vec<&EngineContainer> =
                all.iter().filter(|c| c.labels.get(LABEL_RESOURCE) == Some(id)).collect();
            let cbook = book.containers.entry(id.clone()).or_default();
            let (report, progress) = self.step_container(&request, id, config, &mine, cbook).await;
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
                    self.fronts.close(&Self::key(dep, resource));
                }
            }
            if let Err(e) = self.engine.stop_and_remove(&gone, self.options.stop_grace).await {
                failed = Some(Self::engine_failure(&e, None));
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
            Ok(()) => StepOutcome::Done { state: json!({"platform": "local", "resources": {}}) },
            Err(e) => StepOutcome::Failed { state: None, error: Self::engine_failure(&e, None) },
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
            let desired = state::desired_in(state, id).unwrap_or(mine.len() as u32);
            let expose = mine.iter().find_map(|c| c.labels.get(LABEL_EXPOSE).cloned());
            let expose_kind = expose.as_deref().and_then(parse_expose).map(|(kind, _)| kind);
            let mut front_port = None;
            if expose.is_some() {
                let key = Self::key(dep, id);
                let preferred = cbook.url_port.or_else(|| {
                    mine.iter()
                        .find_map(|c| c.labels.get(LABEL_URL_PORT).and_then(|p| p.parse().ok()))
                });
                let protocol = Protocol::of(expose_kind);
                if let Ok(port) = self.update_front(&key, preferred, protocol, &observed, &[]) {
                    front_port = Some(port);
                    cbook.url_port = Some(port);
                }
            }
            let (url, internal_dns) = self.urls(expose_kind, front_port);
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
            let replicas: Vec<ReplicaReport> = observed
                .iter()
                .map(|o| ReplicaReport {
                    name: o.container.name.clone(),
                    healthy: o.health == Health::Healthy,
                    died: matches!(o.health, Health::Died { .. }),
                    ordinal: o.ordinal,
                })
                .collect();
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
                replicas,
                error,
            });
        }
        book.containers.retain(|id, _| ids.contains(id));
        RefreshReport { state: Some(state_json(&reports, &book)), failing }
    }
}
