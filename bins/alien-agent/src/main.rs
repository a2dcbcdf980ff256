//! alien-agent: command line -> container engine -> [`alien_agent_core::Agent`] until stopped.
//!
//! Thin on purpose: the sync loop lives in alien-agent-core, the container engine in alien-local
//! (without its commands backends: the agent links no database).
//! Exit status: 0 when stopped (what runs keeps running) or when its deployment was deleted,
//! 2 for a usage or configuration error, 1 when the manager refuses the agent or its state
//! directory cannot be written.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use alien_agent_core::{Agent, AgentError, AgentExit, AgentOptions};
use alien_local::{EngineChoice, LocalDeployer, LocalDeployerOptions};
use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "alien-agent",
    version,
    about = "Runs an alien-manager deployment from inside the customer environment (pull mode)"
)]
struct Cli {
    /// The manager's URL, e.g. https://manager.example.com.
    #[arg(long, env = "ALIEN_MANAGER_URL", value_name = "URL")]
    manager_url: String,
    /// A deployment-group token (`ax_dg_...`, registers the deployment `--name`) or a
    /// deployment token (`ax_deploy_...`). Only needed on the first start.
    #[arg(long, env = "ALIEN_AGENT_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// The deployment's name in its group (with a group token).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Where the agent keeps its deployment token and state (created with mode 0700).
    #[arg(long, env = "ALIEN_AGENT_STATE_DIR", default_value = "alien-agent-state")]
    state_dir: PathBuf,
    /// Seconds between syncs with the manager (its heartbeat).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
    /// The container engine.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    engine: Engine,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Engine {
    /// podman when installed, else docker.
    Auto,
    /// podman.
    Podman,
    /// docker.
    Docker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("alien-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(AgentExit::Shutdown) => ExitCode::SUCCESS,
        Ok(AgentExit::Deleted) => {
            eprintln!("alien-agent: the deployment was deleted; nothing is left running");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("alien-agent: {err}");
            match err {
                AgentError::Config(_) => ExitCode::from(2),
                AgentError::Refused(_) | AgentError::State(_) => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(cli: Cli) -> Result<AgentExit, AgentError> {
    let options = AgentOptions {
        manager_url: cli.manager_url,
        token: cli.token.unwrap_or_default(),
        name: cli.name,
        state_dir: cli.state_dir,
        interval: Duration::from_secs(cli.interval),
        platform: alien_core::Platform::Local,
    };
    alien_agent_core::check_options(&options)?;
    let choice = match cli.engine {
        Engine::Auto => EngineChoice::Auto,
        Engine::Podman => EngineChoice::Podman,
        Engine::Docker => EngineChoice::Docker,
    };
    // The autoscaler's steps reach the manager with the next sync.
    let events = alien_agent_core::EventQueue::default();
    let queue = events.clone();
    let scaling = alien_local::ScalingEvents(Arc::new(move |event: alien_local::ScalingEvent| {
        queue.push(alien_core::sync::SyncEvent {
            reason: alien_local::ScalingEvent::REASON.to_owned(),
            detail: event.detail(),
        });
    }));
    let local_options =
        LocalDeployerOptions { scaling_events: Some(scaling), ..LocalDeployerOptions::default() };
    let local =
        LocalDeployer::new(choice, local_options).map_err(|e| AgentError::Config(e.to_string()))?;
    // The stable urls of what already runs are served by this process: bind them again.
    match local.restore().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deployments = n, "restored what runs"),
        Err(err) => tracing::warn!(error = %err, "restoring what runs failed"),
    }
    let agent = Agent::start(options, Arc::new(local)).await?.with_events(events);
    tracing::info!(deployment = %agent.deployment_id(), "agent running");
    agent.run(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
