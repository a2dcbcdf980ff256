//! alien-manager: command line -> configuration -> backends -> `ManagerBuilder` -> serve.
//!
//! Thin on purpose: every rule lives in the library crates. Configuration errors exit with
//! status 2 before any file is created or any port is bound.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use alien_config::{CliOverrides, ConfigError, LogFormat, ManagerConfig, TEMPLATE};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod backends;
mod backup;
mod failure;
mod maintenance;
mod state;

use failure::{EXIT_CONFIG, Failure};

#[derive(Debug, Parser)]
#[command(
    name = "alien-manager",
    version,
    about = "Self-hosted control plane for shipping an application into customer environments"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the manager (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Re-seal every sealed value with a new encryption key, in one transaction.
    RotateKey {
        #[command(flatten)]
        config: ConfigArgs,
        /// The new key: 64 hex characters (`openssl rand -hex 32`).
        #[arg(long, value_name = "HEX")]
        new_key: String,
    },
    /// Embedded registry maintenance.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Admin token recovery (needs direct access to the database).
    AdminToken {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
    /// Probe this manager's `/health` on the loopback (for container health checks): exit 0
    /// when it answers 200, 1 otherwise.
    Health(ConfigArgs),
    /// Write a consistent snapshot of the database and the local commands KV to one file; safe
    /// while the manager runs. The encryption key is not in it.
    Backup {
        #[command(flatten)]
        config: ConfigArgs,
        /// The backup file to write.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Put a backup back (the manager stopped). Needs the encryption key the backup was made
    /// with ([database] encryption-key, or its encryption.key in the state directory).
    Restore {
        #[command(flatten)]
        config: ConfigArgs,
        /// The backup file to read.
        #[arg(long, short = 'i', value_name = "FILE")]
        input: PathBuf,
        /// Replace a state directory that holds data (the old files are kept beside).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Remove blobs no manifest references (unreferenced for over an hour) and uploads idle for
    /// over a day.
    Gc(ConfigArgs),
}

#[derive(Debug, Subcommand)]
enum AdminTokenCommand {
    /// Revoke every admin token and print a new one.
    Reset(ConfigArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration; print the effective values (secrets redacted) and
    /// where each came from.
    Check(ConfigArgs),
}

#[derive(Debug, Args, Default)]
struct ConfigArgs {
    /// Configuration file (default: ./alien-manager.toml if it exists).
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print a commented configuration template and exit.
    #[arg(long)]
    init: bool,
    /// With --init: write the template to this file instead of stdout.
    #[arg(long, value_name = "FILE", requires = "init")]
    output: Option<PathBuf>,
    /// With --init --output: overwrite an existing file.
    #[arg(long, requires = "output")]
    force: bool,
    /// HTTP port (overrides PORT and the file).
    #[arg(long)]
    port: Option<u16>,
    /// Bind address (overrides HOST and the file).
    #[arg(long)]
    host: Option<String>,
    /// Public URL of this manager (overrides BASE_URL and the file).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// State directory (database, registry, keys).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Do not run the deployment loop.
    #[arg(long)]
    disable_deployment_loop: bool,
    /// Do not run the heartbeat loop.
    #[arg(long)]
    disable_heartbeat_loop: bool,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Json,
    Pretty,
}

impl ServeArgs {
    fn overrides(&self) -> CliOverrides {
        CliOverrides {
            config: self.config.config.clone(),
            port: self.port,
            host: self.host.clone(),
            base_url: self.base_url.clone(),
            state_dir: self.state_dir.clone(),
            disable_deployment_loop: self.disable_deployment_loop,
            disable_heartbeat_loop: self.disable_heartbeat_loop,
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Json => LogFormat::Json,
                LogFormatArg::Pretty => LogFormat::Pretty,
            }),
        }
    }
}

/// See docs/decisions.md (Performance): the allocator of every request's short-lived values.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(args)) => serve(&args),
        None => serve(&cli.serve),
        Some(Command::Config { command: ConfigCommand::Check(args) }) => config_check(&args),
        Some(Command::RotateKey { config, new_key }) => {
            with_store(&config, |store, keys| async move {
                maintenance::rotate_key(store, keys, &new_key).await
            })
        }
        Some(Command::Registry { command: RegistryCommand::Gc(config) }) => registry_gc(&config),
        Some(Command::Health(config)) => health(&config),
        Some(Command::Backup { config, output, force }) => {
            with_config(&config, |c| async move { backup::backup(&c, &output, force).await })
        }
        Some(Command::Restore { config, input, force }) => {
            with_config(&config, |c| async move { backup::restore(&c, &input, force).await })
        }
        Some(Command::AdminToken { command: AdminTokenCommand::Reset(config) }) => with_store(
            &config,
            |store, keys| async move { maintenance::reset_admin(store, keys).await },
        ),
    }
}

fn config_check(args: &ConfigArgs) -> ExitCode {
    let cli = CliOverrides { config: args.config.clone(), ..Default::default() };
    match load(&cli) {
        Ok(loaded) => {
            print!("{}", alien_config::render_effective(&loaded));
            println!("# configuration is valid");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Loads and validates the configuration, including that every configured backend is in this
/// build; on a problem prints every one of them and gives exit status 2.
fn load(cli: &CliOverrides) -> Result<alien_config::LoadedConfig, ExitCode> {
    let loaded = alien_config::load(cli).map_err(|e| config_error(&e))?;
    let issues = backends::check(&loaded);
    if issues.is_empty() { Ok(loaded) } else { Err(config_error(&ConfigError::Invalid(issues))) }
}

fn config_error(err: &ConfigError) -> ExitCode {
    eprintln!("alien-manager: {err}");
    ExitCode::from(EXIT_CONFIG)
}

fn serve(args: &ServeArgs) -> ExitCode {
    if args.init {
        return init(args);
    }
    let loaded = match load(&args.overrides()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("alien-manager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    finish(runtime.block_on(async move {
        // The SDK exporters need the runtime; logging starts with them so every span is seen.
        let own = match alien_telemetry::init_self_telemetry(&telemetry_settings(&loaded.config)) {
            Ok(own) => own,
            Err(e) => {
                init_logging(loaded.config.server.log_format, None);
                return Err(Failure::config(format!("[telemetry]: {e}")));
            }
        };
        init_logging(loaded.config.server.log_format, own.as_ref());
        // Metrics go to /metrics, and to the OTLP endpoint too when the manager exports its own.
        alien_server::MetricsRegistry::install(
            own.as_ref().map(|own| Box::new(own.metrics_recorder()) as Box<_>),
        );
        let result = run(loaded.config).await;
        if let Some(own) = own
            && let Err(e) = own.shutdown(std::time::Duration::from_secs(5)).await
        {
            tracing::warn!(error = %e, "exporting the manager's own telemetry at exit failed");
        }
        result
    }))
}

/// Loads configuration (`-c` only) and runs `task` on a runtime (maintenance subcommands).
fn with_config<F, Fut>(args: &ConfigArgs, task: F) -> ExitCode
where
    F: FnOnce(ManagerConfig) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let cli = CliOverrides { config: args.config.clone(), ..Default::default() };
    let loaded = match load(&cli) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    init_logging(loaded.config.server.log_format, None);
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => finish(runtime.block_on(task(loaded.config))),
        Err(e) => {
            eprintln!("alien-manager: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Like [`with_config`], with the store opened (its key checked) for `task`.
fn with_store<F, Fut>(args: &ConfigArgs, task: F) -> ExitCode
where
    F: FnOnce(state::AnyStore, state::KeyInfo) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    with_config(args, |config| async move {
        let opened = state::open_store(&config).await?;
        task(opened.store, opened.keys).await
    })
}

/// `health`: `GET /health` on the port and scheme the configuration gives, over the loopback
/// (the address the manager binds when it names one). A certificate is not checked: the probe
/// talks to its own process.
fn health(args: &ConfigArgs) -> ExitCode {
    let cli = CliOverrides { config: args.config.clone(), ..Default::default() };
    let loaded = match load(&cli) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let server = &loaded.config.server;
    let host = match server.host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        Ok(ip) => ip.to_string(),
        Err(_) => server.host.clone(),
    };
    let scheme = if server.tls_cert.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{}/health", server.port);
    let probe = async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .danger_accept_invalid_certs(true)
            .build()?;
        client.get(&url).send().await
    };
    let answer = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(probe),
        Err(e) => {
            eprintln!("alien-manager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match answer {
        Ok(response) if response.status().is_success() => {
            println!("healthy: {url}");
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("alien-manager: unhealthy: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("alien-manager: unhealthy: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn registry_gc(args: &ConfigArgs) -> ExitCode {
    with_config(args, |config| async move { maintenance::registry_gc(&config).await })
}

fn telemetry_settings(config: &ManagerConfig) -> alien_telemetry::TelemetrySettings {
    alien_server::api::telemetry::settings(&config.telemetry)
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            tracing::error!("{}", failure.message);
            eprintln!("alien-manager: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(mut config: ManagerConfig) -> Result<(), Failure> {
    // The port is bound and served first: `/health` answers while the store opens (and
    // migrates) and the backends are probed; `/ready` and the API answer 503 until then.
    let listener = alien_server::bind_listener(&config.server)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    if config.server.port == 0 {
        // Port 0: the URLs handed out must name the port the system chose.
        let bound = listener.local_addr().map_err(|e| Failure::runtime(e.to_string()))?;
        config.server.port = bound.port();
    }
    let local_addr = listener.local_addr().map_err(|e| Failure::runtime(e.to_string()))?;
    let early =
        alien_server::serve_early(listener, &config.server, alien_server::shutdown_signal())
            .map_err(|e| Failure::runtime(e.to_string()))?;
    let opened = state::open_store(&config).await?;
    state::hold_shared(&config.database.state_dir)?;
    let base_url = config.server.effective_base_url();
    let seed = std::env::var("ALIEN_ADMIN_TOKEN").ok();
    let store = opened.store.shared();
    let first = alien_server::bootstrap::first_run_admin(store.as_ref(), seed.as_deref())
        .await
        .map_err(|e| Failure::config(e.to_string()))?;
    if let Some(token) = first {
        print!("{}", alien_server::bootstrap::admin_token_banner(&base_url, &token));
        let _ = std::io::stdout().flush();
    }
    let blobs = backends::registry_blobs(&config).await?;
    let artifact_registries = backends::artifact_registries(&config).await?;
    let impersonator = backends::impersonator(&config).await;
    let signing_key = opened.store.derive_key("commands url signing").await;
    let signals = backends::signals(&config).await?;
    let commands = backends::commands(&config, signing_key, signals.clone()).await?;
    backends::report_unreachable(&commands).await;
    let sink = alien_telemetry::build_sink(&telemetry_settings(&config))
        .map_err(|e| Failure::config(format!("[telemetry]: {e}")))?;
    let recent = std::sync::Arc::new(alien_telemetry::RecentLogs::default());
    let ingestor =
        std::sync::Arc::new(alien_telemetry::Ingestor::new(sink).with_recent_logs(recent.clone()));
    // The platforms are driven (stepped and refreshed) only where the deployment loop runs.
    let (deployers, platform_urls) = if config.server.deployment_loop {
        backends::platform_deployers(&config, &artifact_registries, store.clone()).await
    } else {
        (std::collections::HashMap::new(), std::collections::HashMap::new())
    };
    let deployment_loop = if config.server.deployment_loop {
        let owner = state::replica_id(&config)?;
        let deployers = deployers.clone();
        let impersonator = impersonator.clone();
        Some(backends::deployment_loop(
            &config,
            store.clone(),
            deployers,
            platform_urls,
            owner,
            impersonator,
        ))
    } else {
        None
    };
    let heartbeat_every = std::time::Duration::from_secs(config.server.heartbeat_interval_secs);
    let heartbeat_loop = config.server.heartbeat_loop.then(|| {
        let heartbeats = alien_deployer::HeartbeatLoop::new(store.clone(), heartbeat_every);
        std::sync::Arc::new(
            heartbeats.with_deployers(deployers).with_impersonator(impersonator.clone()),
        )
    });
    let mut manager = alien_server::ManagerBuilder::new(config)
        .store(store)
        .registry(std::sync::Arc::new(blobs))
        .artifact_registries(artifact_registries)
        .impersonator(impersonator)
        .commands(commands.engine, commands.kv, commands.payloads)
        .telemetry(ingestor, recent);
    if let Some(signals) = signals {
        manager = manager.signals(signals);
    }
    if let Some(heartbeat_loop) = heartbeat_loop {
        manager = manager.heartbeat_loop(heartbeat_loop);
    }
    if let Some(deployment_loop) = deployment_loop {
        manager = manager.deployment_loop(deployment_loop);
    }
    let serving = early.hand_over(manager.build());
    tracing::info!(addr = %local_addr, %base_url, "alien-manager listening on {local_addr}");
    let served = serving.wait().await;
    opened.store.close().await;
    served.map_err(|e| Failure::runtime(e.to_string()))?;
    tracing::info!("alien-manager stopped");
    Ok(())
}

fn init(args: &ServeArgs) -> ExitCode {
    let Some(path) = &args.output else {
        let mut stdout = std::io::stdout().lock();
        return match stdout.write_all(TEMPLATE.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    };
    if path.exists() && !args.force {
        eprintln!("alien-manager: {} already exists; pass --force to overwrite it", path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    match std::fs::write(path, TEMPLATE) {
        Ok(()) => {
            eprintln!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("alien-manager: cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, own: Option<&alien_telemetry::SelfTelemetry>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => {
            tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed()
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(own.map(|own| own.layer()))
        .try_init();
}
