//! The container engine CLI (`podman`, else `docker`) driven through `tokio::process`: finding
//! the binary, running one command with a timeout, and reading containers back from
//! `container inspect` JSON, which both engines write in the same shape.
//!
//! Secrets never reach a command line (visible to every user of the host in `ps`): a
//! container's environment goes through a 0600 `--env-file` that is deleted once the engine has
//! read it, and registry credentials through a 0600 auth file (`--authfile` for podman, a
//! `--config` directory for docker).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

/// Which engine the deployer drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// `podman` when it is on `PATH`, else `docker`.
    #[default]
    Auto,
    /// `podman` only.
    Podman,
    /// `docker` only.
    Docker,
}

/// The engine that was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Podman (daemonless; slirp4netns networking, see spec/testing.md).
    Podman,
    /// Docker (a daemon; `host.docker.internal` reaches the host).
    Docker,
}

impl EngineKind {
    /// The CLI's name on `PATH`.
    pub fn binary_name(self) -> &'static str {
        match self {
            Self::Podman => "podman",
            Self::Docker => "docker",
        }
    }

    /// The address containers reach the host's loopback services at, for
    /// `alien_deployer::reachable_from_containers`: `10.0.2.2` (slirp4netns with
    /// `allow_host_loopback`) for podman, `host.docker.internal` for docker.
    pub fn host_gateway(self) -> &'static str {
        match self {
            Self::Podman => "10.0.2.2",
            Self::Docker => "host.docker.internal",
        }
    }
}

/// Why an engine command did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Neither engine is installed.
    #[error(
        "no container engine found: neither `podman` nor `docker` is on PATH; install podman \
         (Debian: `apt-get install -y podman runc slirp4netns`) or docker"
    )]
    NotFound,
    /// The chosen engine is not installed.
    #[error("`{name}` is not on PATH; install it, or choose the other engine (or `auto`)")]
    Missing {
        /// The binary looked for.
        name: &'static str,
    },
    /// The command could not be started.
    #[error("`{command}` could not start: {source}")]
    Spawn {
        /// The command line (it never holds secrets).
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The command exited with an error.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it said on stderr (trimmed, shortened).
        stderr: String,
    },
    /// The command ran longer than allowed and was killed.
    #[error("`{command}` did not finish within {secs} s and was killed")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit.
        secs: u64,
    },
    /// The command's output could not be read (unexpected JSON, I/O on a temporary file).
    #[error("{0}")]
    Output(String),
}

/// Most characters of stderr kept in an error.
const STDERR_LIMIT: usize = 2000;

/// One container the engine reports, as far as the deployer cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineContainer {
    /// Engine id.
    pub id: String,
    /// Name, without docker's leading `/`.
    pub name: String,
    /// Labels (the image's too).
    pub labels: BTreeMap<String, String>,
    /// `running`, `exited`, `created`, ...
    pub status: String,
    /// Whether its process runs.
    pub running: bool,
    /// Exit code of the last run (0 while running).
    pub exit_code: i64,
    /// When it last started (RFC 3339), if it did.
    pub started_at: Option<String>,
    /// How many times the engine restarted it.
    pub restart_count: u32,
    /// Published TCP ports: container port -> host port on 127.0.0.1.
    pub ports: BTreeMap<u32, u16>,
}

/// A container engine CLI with the environment its commands run with.
#[derive(Debug, Clone)]
pub struct Engine {
    kind: EngineKind,
    binary: PathBuf,
    env: Vec<(String, String)>,
    /// For docker: whether the daemon is podman's Docker-compatible service (asked once).
    docker_on_podman: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

impl Engine {
    /// Finds the engine on `PATH` (the `PATH` among `env` when given there).
    pub fn find(choice: EngineChoice, env: Vec<(String, String)>) -> Result<Engine, EngineError> {
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| OsString::from(v))
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        let lookup = |kind: EngineKind| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(kind.binary_name()))
                .find(|candidate| is_executable(candidate))
                .map(|binary| Engine {
                    kind,
                    binary,
                    env: env.clone(),
                    docker_on_podman: Default::default(),
                })
        };
        match choice {
            EngineChoice::Podman => {
                lookup(EngineKind::Podman).ok_or(EngineError::Missing { name: "podman" })
            }
            EngineChoice::Docker => {
                lookup(EngineKind::Docker).ok_or(EngineError::Missing { name: "docker" })
            }
            EngineChoice::Auto => lookup(EngineKind::Podman)
                .or_else(|| lookup(EngineKind::Docker))
                .ok_or(EngineError::NotFound),
        }
    }

    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    /// The binary that runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Whether `docker` talks to podman's Docker-compatible service (`podman system service`),
    /// from `docker version`; asked once. Always false for podman itself.
    pub async fn docker_on_podman(&self) -> bool {
        if self.kind != EngineKind::Docker {
            return false;
        }
        *self
            .docker_on_podman
            .get_or_init(|| async {
                let format = "{{range .Server.Components}}{{.Name}};{{end}}";
                self.run(&args(&["version", "--format", format]), &[], SHORT)
                    .await
                    .is_ok_and(|out| out.contains("Podman"))
            })
            .await
    }

    /// The engine's own `run` arguments: for docker, `host.docker.internal` mapped to the host
    /// (`host-gateway`); for docker on podman's service, slirp4netns networking as podman's own
    /// containers get (the service would otherwise put them on its bridge network), with
    /// `host.docker.internal` at slirp4netns' gateway to the host's loopback. Podman takes its
    /// networking from `containers.conf`.
    pub async fn run_args(&self) -> Vec<String> {
        match self.kind {
            EngineKind::Podman => Vec::new(),
            EngineKind::Docker if self.docker_on_podman().await => {
                args(&["--network", "slirp4netns", "--add-host", "host.docker.internal:10.0.2.2"])
            }
            EngineKind::Docker => args(&["--add-host", "host.docker.internal:host-gateway"]),
        }
    }

    /// Runs `binary args...` with the engine's environment plus `extra_env`; stdout on success.
    pub async fn run(
        &self,
        args: &[String],
        extra_env: &[(String, String)],
        timeout: Duration,
    ) -> Result<String, EngineError> {
        let command = format!("{} {}", self.kind.binary_name(), args.join(" "));
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|source| EngineError::Spawn { command: command.clone(), source })?;
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => return Err(EngineError::Timeout { command, secs: timeout.as_secs() }),
            Ok(Err(source)) => return Err(EngineError::Spawn { command, source }),
            Ok(Ok(output)) => output,
        };
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            if stderr.len() > STDERR_LIMIT {
                let cut = (0..=STDERR_LIMIT).rev().find(|i| stderr.is_char_boundary(*i));
                stderr.truncate(cut.unwrap_or(0));
                stderr.push_str("...");
            }
            Err(EngineError::Failed { command, status: output.status.to_string(), stderr })
        }
    }

    /// Every container (running or not) carrying `label=value`, or `label` with any value.
    pub async fn containers_with_label(
        &self,
        label: &str,
        value: Option<&str>,
    ) -> Result<Vec<EngineContainer>, EngineError> {
        let filter = match value {
            Some(value) => format!("label={label}={value}"),
            None => format!("label={label}"),
        };
        // A container removed between `ps` and `inspect` makes inspect fail: list again.
        let mut last = None;
        for _ in 0..3 {
            let ids = self
                .run(&args(&["ps", "-a", "-q", "--no-trunc", "--filter", &filter]), &[], SHORT)
                .await?;
            let ids: Vec<String> = ids.split_whitespace().map(str::to_owned).collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut inspect = args(&["container", "inspect"]);
            inspect.extend(ids);
            match self.run(&inspect, &[], SHORT).await {
                Ok(json) => return parse_inspect(&json),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(EngineError::Output("container inspect failed".to_owned())))
    }

    /// Whether `image` is in the engine's local store.
    pub async fn image_present(&self, image: &str) -> bool {
        self.run(&args(&["image", "inspect", "--format", "{{.Id}}", image]), &[], SHORT)
            .await
            .is_ok()
    }

    /// Pulls `image`, with `creds` (`user`, `secret`) for `registry` when given, over plain
    /// HTTP when `insecure` (podman only; docker takes insecure registries from its daemon).
    pub async fn pull(
        &self,
        image: &str,
        registry: &str,
        creds: Option<(&str, &str)>,
        insecure: bool,
    ) -> Result<(), EngineError> {
        let dir = match creds {
            Some((user, secret)) => Some(auth_dir(registry, user, secret)?),
            None => None,
        };
        let mut argv = Vec::new();
        match (self.kind, &dir) {
            (EngineKind::Docker, Some(dir)) => {
                argv.extend(["--config".to_owned(), dir.path().display().to_string()]);
                argv.extend(args(&["pull", "-q"]));
            }
            (EngineKind::Docker, None) => argv.extend(args(&["pull", "-q"])),
            (EngineKind::Podman, _) => {
                argv.extend(args(&["pull", "-q"]));
                if insecure {
                    argv.push("--tls-verify=false".to_owned());
                }
                if let Some(dir) = &dir {
                    argv.push("--authfile".to_owned());
                    argv.push(dir.path().join(AUTH_FILE).display().to_string());
                }
            }
        }
        argv.push(image.to_owned());
        self.run(&argv, &[], PULL).await.map(drop)
    }

    /// `run -d` with `argv` (from [`crate::deployer::replica::ReplicaSpec::run_args`], which
    /// ends with the image and its arguments), the environment going through an env file.
    pub async fn run_detached(
        &self,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<String, EngineError> {
        let (file, passed) = env_file(env)?;
        let mut full = args(&["run", "-d", "--env-file"]);
        full.push(file.path().display().to_string());
        for (name, _) in &passed {
            full.push("-e".to_owned());
            full.push(name.clone());
        }
        full.extend(argv.iter().cloned());
        let out = self.run(&full, &passed, SHORT).await;
        drop(file);
        Ok(out?.trim().to_owned())
    }

    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes the named containers; a
    /// container already gone is not an error.
    pub async fn stop_and_remove(
        &self,
        names: &[String],
        grace: Duration,
    ) -> Result<(), EngineError> {
        if names.is_empty() {
            return Ok(());
        }
        let mut stop = args(&["stop", "-t", &grace.as_secs().to_string()]);
        stop.extend(names.iter().cloned());
        // A container that is already stopped or gone makes `stop` fail; `rm -f` settles it.
        let _ = self.run(&stop, &[], grace + SHORT).await;
        let mut rm = args(&["rm", "-f"]);
        rm.extend(names.iter().cloned());
        match self.run(&rm, &[], SHORT).await {
            Ok(_) => Ok(()),
            Err(EngineError::Failed { stderr, .. }) if no_such(&stderr) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates the named volume with `labels` unless it exists.
    pub async fn ensure_volume(
        &self,
        name: &str,
        labels: &[(String, String)],
    ) -> Result<(), EngineError> {
        if self.run(&args(&["volume", "inspect", name]), &[], SHORT).await.is_ok() {
            return Ok(());
        }
        let mut create = args(&["volume", "create"]);
        for (k, v) in labels {
            create.push("--label".to_owned());
            create.push(format!("{k}={v}"));
        }
        create.push(name.to_owned());
        self.run(&create, &[], SHORT).await.map(drop)
    }

    /// Names of the volumes carrying `label=value`.
    pub async fn volumes_with_label(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<String>, EngineError> {
        let filter = format!("label={label}={value}");
        let out = self.run(&args(&["volume", "ls", "-q", "--filter", &filter]), &[], SHORT).await?;
        Ok(out.split_whitespace().map(str::to_owned).collect())
    }

    /// Removes the named volumes; one already gone is not an error.
    pub async fn remove_volumes(&self, names: &[String]) -> Result<(), EngineError> {
        for name in names {
            match self.run(&args(&["volume", "rm", "-f", name]), &[], SHORT).await {
                Ok(_) => {}
                Err(EngineError::Failed { stderr, .. }) if no_such(&stderr) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The last `lines` lines the container wrote (stdout and stderr), for error messages.
    /// `stats --no-stream` of `names`: `name<TAB>CPU %<TAB>memory %` lines (the template both
    /// engines understand).
    pub async fn stats(&self, names: &[String]) -> Result<String, EngineError> {
        let mut argv =
            args(&["stats", "--no-stream", "--format", "{{.Name}}\t{{.CPUPerc}}\t{{.MemPerc}}"]);
        argv.extend(names.iter().cloned());
        self.run(&argv, &[], SHORT).await
    }

    pub async fn logs_tail(&self, name: &str, lines: u32) -> String {
        let argv = args(&["logs", "--tail", &lines.to_string(), name]);
        let mut cmd = Command::new(&self.binary);
        cmd.args(&argv)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(SHORT, cmd.output()).await {
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                text.trim().to_owned()
            }
            _ => String::new(),
        }
    }
}

/// Limit for commands that do not move images.
const SHORT: Duration = Duration::from_secs(60);
/// Limit for a pull.
const PULL: Duration = Duration::from_secs(600);
/// The auth file's name inside its directory (docker's `--config` reads `config.json`).
const AUTH_FILE: &str = "config.json";

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn no_such(stderr: &str) -> bool {
    let lower = stderr.to_ascii_lowercase();
    lower.contains("no such") || lower.contains("no container with") || lower.contains("not found")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A private directory holding `config.json` with the credentials for `registry` (the format
/// both podman's `--authfile` and docker's `--config` read).
fn auth_dir(registry: &str, user: &str, secret: &str) -> Result<tempfile::TempDir, EngineError> {
    use base64::Engine as _;
    let dir = tempfile::Builder::new().prefix("alien-auth-").tempdir().map_err(|e| {
        EngineError::Output(format!("cannot create a registry auth directory: {e}"))
    })?;
    let auth = serde_json::json!({
        "auths": { registry: { "auth": base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")) } }
    });
    write_private(&dir.path().join(AUTH_FILE), auth.to_string().as_bytes())?;
    Ok(dir)
}

/// The env file for `env` (0600, deleted on drop) and the variables it cannot hold (values
/// with a line break), which are passed as `-e NAME` through the engine's own environment.
type EnvFile = (tempfile::NamedTempFile, Vec<(String, String)>);

fn env_file(env: &[(String, String)]) -> Result<EnvFile, EngineError> {
    let (lines, passed) = env_file_lines(env);
    let mut file = tempfile::Builder::new()
        .prefix("alien-env-")
        .tempfile()
        .map_err(|e| EngineError::Output(format!("cannot create an env file: {e}")))?;
    file.write_all(lines.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| EngineError::Output(format!("cannot write the env file: {e}")))?;
    Ok((file, passed))
}

/// `NAME=value` lines for an env file, and the variables that must go another way.
pub(crate) fn env_file_lines(env: &[(String, String)]) -> (String, Vec<(String, String)>) {
    let mut lines = String::new();
    let mut passed = Vec::new();
    for (name, value) in env {
        if value.contains(['\n', '\r']) {
            passed.push((name.clone(), value.clone()));
        } else {
            lines.push_str(name);
            lines.push('=');
            lines.push_str(value);
            lines.push('\n');
        }
    }
    (lines, passed)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| EngineError::Output(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(bytes)
        .map_err(|e| EngineError::Output(format!("cannot write {}: {e}", path.display())))
}

/// Containers from `container inspect` JSON (an array, same shape for podman and docker).
pub(crate) fn parse_inspect(json: &str) -> Result<Vec<EngineContainer>, EngineError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Inspect {
        id: String,
        name: String,
        #[serde(default)]
        config: Option<Config>,
        state: State,
        #[serde(default)]
        network_settings: Option<Network>,
        #[serde(default)]
        restart_count: u32,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Config {
        #[serde(default)]
        labels: Option<BTreeMap<String, String>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct State {
        #[serde(default)]
        status: String,
        #[serde(default)]
        running: bool,
        #[serde(default)]
        exit_code: i64,
        #[serde(default)]
        started_at: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Network {
        #[serde(default)]
        ports: Option<BTreeMap<String, Option<Vec<Binding>>>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Binding {
        #[serde(default)]
        host_ip: String,
        host_port: String,
    }
    let parsed: Vec<Inspect> = serde_json::from_str(json)
        .map_err(|e| EngineError::Output(format!("unexpected `container inspect` output: {e}")))?;
    Ok(parsed
        .into_iter()
        .map(|c| {
            let mut ports = BTreeMap::new();
            for (key, bindings) in c.network_settings.and_then(|n| n.ports).unwrap_or_default() {
                let Some(port) = key.strip_suffix("/tcp").and_then(|p| p.parse().ok()) else {
                    continue;
                };
                let host = bindings.into_iter().flatten().find_map(|b| {
                    let loopback = b.host_ip.is_empty() || b.host_ip == "127.0.0.1";
                    b.host_port.parse::<u16>().ok().filter(|_| loopback)
                });
                if let Some(host) = host {
                    ports.insert(port, host);
                }
            }
            EngineContainer {
                id: c.id,
                name: c.name.trim_start_matches('/').to_owned(),
                labels: c.config.and_then(|cfg| cfg.labels).unwrap_or_default(),
                status: c.state.status,
                running: c.state.running,
                exit_code: c.state.exit_code,
                started_at: c.state.started_at.filter(|s| !s.is_empty()),
                restart_count: c.restart_count,
                ports,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_json_of_podman_and_docker_gives_names_labels_and_loopback_ports() {
        let json = r#"[
          {"Id":"abc","Name":"alien-dep_1-api-0",
           "Config":{"Labels":{"alien.deployment":"dep_1","alien.replica":"0"}},
           "State":{"Status":"running","Running":true,"ExitCode":0,"StartedAt":"2026-01-01T00:00:00.5Z"},
           "NetworkSettings":{"Ports":{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":"40305"}],
                                        "9090/tcp":null, "53/udp":[{"HostIp":"","HostPort":"5353"}]}}},
          {"Id":"def","Name":"/alien-dep_1-api-1","Config":{"Labels":null},
           "State":{"Status":"exited","Running":false,"ExitCode":3,"StartedAt":""},
           "NetworkSettings":{"Ports":{"8080/tcp":[{"HostIp":"0.0.0.0","HostPort":"1234"}]}}}
        ]"#;
        let containers = parse_inspect(json).unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0].name, "alien-dep_1-api-0");
        assert_eq!(containers[0].labels["alien.replica"], "0");
        assert_eq!(containers[0].ports, BTreeMap::from([(8080, 40305)]));
        assert!(containers[0].running);
        assert_eq!(containers[1].name, "alien-dep_1-api-1", "docker's leading / is dropped");
        assert!(containers[1].labels.is_empty());
        assert!(containers[1].ports.is_empty(), "a port on 0.0.0.0 is not ours");
        assert_eq!((containers[1].exit_code, containers[1].started_at.clone()), (3, None));
        assert!(parse_inspect("{}").is_err());
    }

    #[test]
    fn env_file_keeps_single_line_values_and_passes_multiline_ones_aside() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "x=y z".to_owned()),
            ("PEM".to_owned(), "line1\nline2".to_owned()),
        ];
        let (lines, passed) = env_file_lines(&env);
        assert_eq!(lines, "A=1\nB=x=y z\n");
        assert_eq!(passed, vec![("PEM".to_owned(), "line1\nline2".to_owned())]);
    }

    #[test]
    fn finding_an_engine_reports_what_is_missing() {
        let empty = tempfile::tempdir().unwrap();
        let path = vec![("PATH".to_owned(), empty.path().display().to_string())];
        assert!(matches!(
            Engine::find(EngineChoice::Auto, path.clone()),
            Err(EngineError::NotFound)
        ));
        let err = Engine::find(EngineChoice::Podman, path.clone()).unwrap_err();
        assert!(err.to_string().contains("`podman` is not on PATH"), "{err}");

        let fake = empty.path().join("docker");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let engine = Engine::find(EngineChoice::Auto, path).unwrap();
        assert_eq!(engine.kind(), EngineKind::Docker, "docker when podman is absent");
        assert_eq!(engine.binary(), fake);
        assert_eq!(engine.kind().host_gateway(), "host.docker.internal");
    }
}
