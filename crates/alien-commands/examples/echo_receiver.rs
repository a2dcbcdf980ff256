//! An `arc.v1` receiver with one command, `echo`, which answers with its params. It reads its
//! configuration from `ALIEN_COMMANDS_URL`, `ALIEN_COMMANDS_TOKEN`, `ALIEN_DEPLOYMENT_ID`,
//! `ALIEN_COMMANDS_TARGET_RESOURCE_ID` (and optionally `ALIEN_COMMANDS_TARGET_RESOURCE_TYPE`),
//! and runs until Ctrl-C, then drains running commands.
//!
//! ```text
//! ALIEN_COMMANDS_URL=http://127.0.0.1:8080/v1 ALIEN_COMMANDS_TOKEN=... ALIEN_DEPLOYMENT_ID=dep_... \
//! ALIEN_COMMANDS_TARGET_RESOURCE_ID=api cargo run -p alien-commands --features receiver --example echo_receiver
//! ```

use alien_commands::receiver::{CommandContext, HandlerError, Receiver, ReceiverConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = ReceiverConfig::from_env()?;
    Receiver::new(config)
        .handle(
            "echo",
            |ctx: CommandContext| async move { Ok::<_, HandlerError>(ctx.into_params()) },
        )
        .run(async {
            if let Err(err) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %err, "cannot listen for Ctrl-C; stopping");
            }
        })
        .await?;
    Ok(())
}
