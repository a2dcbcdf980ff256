//! `hello-app`: the test application that end-to-end tests deploy and that users try the
//! platform with. It serves `GET /` (the `HELLO_MESSAGE`, deployment and replica, as JSON) and
//! `GET /health` on `PORT` (default 8080); runs a command receiver (`echo`, `sleep`, `fail`)
//! when the deployer injected `ALIEN_COMMANDS_URL` and its companions; exports a log record at
//! start and per `GET /` over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; and on
//! SIGTERM or SIGINT drains the receiver, stops serving and flushes its logs.
//!
//! It must stay a single static binary with no runtime files (it runs from an image holding
//! only `/hello-app`, built by `cargo xtask image hello-app`): no TLS, no config files, no DNS
//! for the manager's address beyond what the deployer injects.

mod commands;
mod http;
mod otlp;
mod settings;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::http::AppState;
use crate::settings::Settings;

/// How long the exporter may take to flush queued records at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Container logs are files, not terminals: no colour codes there.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("hello-app: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let settings = Settings::from_env()?;
    let (logs, exporter) = match otlp::ExportConfig::from_vars(|name| std::env::var(name).ok())? {
        None => (None, None),
        Some((config, warnings)) => {
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
            let (sink, task) = otlp::start(config, client);
            (Some(sink), Some(task))
        }
    };
    let receiver = match commands::config_from_env() {
        None => {
            tracing::info!("ALIEN_COMMANDS_URL is not set: serving HTTP only, no command receiver");
            None
        }
        Some(Err(err)) => {
            // Serving HTTP still tells a test what is wrong (`"commands": false`).
            tracing::error!("command receiver not started: {err}");
            None
        }
        Some(Ok(config)) => Some(config),
    };

    let listener = tokio::net::TcpListener::bind((settings.host, settings.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", settings.host, settings.port))?;
    let address = listener.local_addr().map_err(|e| format!("cannot read the address: {e}"))?;
    tracing::info!(%address, hello_message = %settings.message, "hello-app listening");
    if let Some(logs) = &logs {
        let address = address.to_string();
        logs.emit(format!("hello-app started on {address}"), &[("server.address", &address)]);
    }

    let (stop, stopping) = watch::channel(false);
    let mut extra = Vec::new();
    for port in &settings.extra_ports {
        let listener = tokio::net::TcpListener::bind((settings.host, *port))
            .await
            .map_err(|e| format!("cannot listen on {}:{port}: {e}", settings.host))?;
        extra.push(listener);
    }
    // A connection per call: a linked container's internal ports are TCP fronts, which hand
    // each connection to one replica (a pooled connection would stay with a replica that is
    // being replaced).
    let http_client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let state = Arc::new(AppState {
        settings,
        commands: receiver.is_some(),
        logs: logs.clone(),
        http: http_client,
    });
    for listener in extra {
        let router = http::router(state.clone());
        let stopping = stopping.clone();
        tokio::spawn(async move {
            if let Err(err) =
                axum::serve(listener, router).with_graceful_shutdown(stopped(stopping)).await
            {
                tracing::error!("an extra port's server failed: {err}");
            }
        });
    }
    let mut server = tokio::spawn(
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(stopped(stopping.clone()))
            .into_future(),
    );
    let receiver = receiver.map(|config| {
        tokio::spawn(async move {
            if let Err(err) = commands::receiver(config).run(stopped(stopping)).await {
                tracing::error!("command receiver stopped: {err}");
            }
        })
    });

    tokio::select! {
        () = terminated() => {}
        served = &mut server => {
            return Err(match served {
                Ok(Ok(())) => "the HTTP server stopped by itself".to_owned(),
                Ok(Err(err)) => format!("the HTTP server failed: {err}"),
                Err(err) => format!("the HTTP server task failed: {err}"),
            });
        }
    }
    tracing::info!("shutting down: draining commands and closing HTTP");
    // Nobody may be listening any more; that is fine.
    let _ = stop.send(true);
    if let Some(receiver) = receiver
        && let Err(err) = receiver.await
    {
        tracing::error!("command receiver task failed: {err}");
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!("HTTP server failed while stopping: {err}"),
        Err(err) => tracing::error!("HTTP server task failed: {err}"),
    }
    drop(logs);
    if let Some(exporter) = exporter
        && tokio::time::timeout(FLUSH_TIMEOUT, exporter).await.is_err()
    {
        tracing::warn!("OTLP logs not flushed within {FLUSH_TIMEOUT:?}; dropped");
    }
    tracing::info!("hello-app stopped");
    Ok(())
}

/// Completes once `stop` is sent (or its sender is gone).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Completes on SIGTERM (what `podman stop` sends) or SIGINT.
async fn terminated() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for SIGINT: {err}");
            std::future::pending::<()>().await;
        }
    };
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                () = interrupt => tracing::info!("SIGINT received"),
            }
        }
        Err(err) => {
            tracing::error!("cannot listen for SIGTERM ({err}); only SIGINT stops hello-app");
            interrupt.await;
        }
    }
}
