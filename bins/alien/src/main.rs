//! `alien`: the command-line client of alien-manager. It parses the command line, calls the
//! manager through `alien-client` and shows the answer (a table, or the manager's JSON with
//! `--json`). `alien serve` runs the `alien-manager` binary; the CLI links no server crate.
//!
//! Exit status: 0 on success, 1 when the manager refused or failed (its error code, message and
//! hint are printed) or the work failed, 2 on usage errors. The API key is never printed.

use std::process::ExitCode;

use alien_client::ClientError;
use alien_client::registry::RegistryError;
use clap::Parser;

mod args;
mod commands;
mod deployments;
mod output;
mod release;
mod resolve;
mod serve;

/// Why a command did not succeed; decides the message and the exit status.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The command line is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The manager refused or failed, or could not be reached (exit 1).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The registry refused a push, or the image layout is unusable (exit 1).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Something else went wrong here, or the work ended badly (exit 1).
    #[error("{0}")]
    Local(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }

    /// The lines printed on stderr.
    fn report(&self) -> String {
        let Self::Client(ClientError::Api { status, body }) = self else {
            return format!("error: {self}");
        };
        let mut text =
            format!("error: {} ({status}): {}", alien_client::code_name(body.code), body.message);
        for violation in body.violations() {
            text.push_str(&format!("\n  {}: {}", violation.path, violation.message));
        }
        if let Some(hint) = &body.hint {
            text.push_str(&format!("\nhint: {hint}"));
        }
        text
    }
}

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    if let args::Command::Serve { args } = &cli.command {
        return serve::serve(args);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.report());
            ExitCode::from(failure.exit_code())
        }
    }
}
