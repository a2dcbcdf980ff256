//! The command line: every command, its flags and help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The command-line client of alien-manager.
///
/// Connect with ALIEN_MANAGER_URL and ALIEN_API_KEY (the two lines the manager prints at its
/// first start), or with --manager-url and --api-key.
#[derive(Debug, Parser)]
#[command(name = "alien", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// The manager's URL, e.g. https://manager.example.com.
    #[arg(long, global = true, env = "ALIEN_MANAGER_URL", value_name = "URL")]
    pub manager_url: Option<String>,
    /// The API key (an admin token for most commands).
    #[arg(long, global = true, env = "ALIEN_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Print the manager's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the manager (alien-manager serve) with these arguments, e.g. `alien serve --init`.
    #[command(disable_help_flag = true)]
    Serve {
        /// Arguments for `alien-manager serve`, passed as they are (try `alien serve --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Show who the API key belongs to and what it may reach.
    Whoami,
    /// Show the manager's version and health, deployments by status, the registry and platforms.
    Status,
    /// Push a stack's images and create a release from it.
    Release(ReleaseArgs),
    /// Look at releases.
    #[command(subcommand)]
    Releases(ReleasesCommand),
    /// Create and look at deployment groups, and mint their tokens.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Create, look at, retry, redeploy and delete deployments.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// List and revoke API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Run commands in deployments and look at their results.
    #[command(subcommand)]
    Commands(CommandsCommand),
    /// Show a deployment's recent logs.
    Logs {
        /// The deployment: its id (dep_...) or its name.
        deployment: String,
        /// Keep printing new records until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// How many recent records to show first.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// `alien release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The stack file (the JSON the SDK writes).
    #[arg(long, value_name = "FILE")]
    pub stack: PathBuf,
    /// A local OCI image layout for a resource: RESOURCE=DIR or RESOURCE=DIR:TAG. Repeatable.
    /// Resources without one keep the image the stack names.
    #[arg(long = "image", value_name = "RESOURCE=DIR[:TAG]")]
    pub images: Vec<String>,
    /// Platforms the release is for, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "local", value_name = "PLATFORMS")]
    pub platforms: Vec<String>,
    /// A version label for the release.
    #[arg(long = "release-version", id = "release_version", value_name = "VERSION")]
    pub version: Option<String>,
    /// A description of the release.
    #[arg(long)]
    pub description: Option<String>,
}

/// `?limit=&cursor=`.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Items per page.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Where to continue (the cursor printed after a page).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `alien releases`.
#[derive(Debug, Subcommand)]
pub enum ReleasesCommand {
    /// List releases, newest first.
    List(PageArgs),
    /// Show one release.
    Get {
        /// The release (rel_...).
        id: String,
    },
}

/// `alien groups`.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Create a deployment group.
    Create {
        /// Its name (lowercase letters, digits and dashes).
        name: String,
        /// Most deployments the group may hold.
        #[arg(long)]
        max_deployments: Option<u32>,
    },
    /// List deployment groups.
    List(PageArgs),
    /// Show one deployment group.
    Get {
        /// The group: its id (dg_...) or its name.
        id: String,
    },
    /// Mint a deployment-group token (agents register with it).
    Token {
        /// The group: its id (dg_...) or its name.
        group: String,
        /// A label for the token.
        #[arg(long)]
        label: Option<String>,
        /// Print the one-line agent install command instead of the token.
        #[arg(long)]
        install: bool,
        /// The deployment name in the install command.
        #[arg(long, default_value = "NAME", requires = "install")]
        name: String,
    },
}

/// Push or pull.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Model {
    /// The manager deploys.
    Push,
    /// An agent in the environment deploys.
    Pull,
}

/// `alien deployments`.
#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// List deployments.
    List {
        /// Only this group's: its id (dg_...) or its name.
        #[arg(long)]
        group: Option<String>,
        /// Only in this status (running, update-failed, ...).
        #[arg(long)]
        status: Option<String>,
        /// Only of this platform.
        #[arg(long)]
        platform: Option<String>,
        /// Only with this name.
        #[arg(long)]
        name: Option<String>,
        /// Paging.
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one deployment and its recent events.
    Get {
        /// The deployment: its id (dep_...) or its name.
        id: String,
    },
    /// Create a deployment; prints its token once.
    Create {
        /// Its name, unique in its group.
        #[arg(long)]
        name: String,
        /// Its platform (local, aws, gcp, azure, kubernetes).
        #[arg(long)]
        platform: String,
        /// Its group: id (dg_...) or name; may be left out when only one group exists.
        #[arg(long)]
        group: Option<String>,
        /// Push (the manager deploys) or pull (an agent deploys); the platform's default if left out.
        #[arg(long, value_enum)]
        model: Option<Model>,
        /// An environment variable NAME=VALUE for its containers. Repeatable.
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Follow its status until it is running or failed.
        #[arg(long)]
        watch: bool,
    },
    /// Retry a failed deployment from the step that failed.
    Retry {
        /// The deployment: its id (dep_...) or its name.
        id: String,
        /// Follow its status until it is running or failed.
        #[arg(long)]
        watch: bool,
    },
    /// Apply the desired release again, or another release (a rollback).
    Redeploy {
        /// The deployment: its id (dep_...) or its name.
        id: String,
        /// The release to apply (rel_...).
        #[arg(long)]
        release: Option<String>,
        /// Follow its status until it is running or failed.
        #[arg(long)]
        watch: bool,
    },
    /// Delete a deployment: tear down its resources, then remove it.
    Delete {
        /// The deployment: its id (dep_...) or its name.
        id: String,
        /// Remove the record now and leave its resources in place.
        #[arg(long)]
        forget: bool,
        /// Follow its status until it is deleted or failed.
        #[arg(long)]
        watch: bool,
    },
}

/// `alien tokens`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// List live tokens (never their secret values).
    List,
    /// Revoke a token at once.
    Revoke {
        /// The token (tok_...).
        id: String,
    },
}

/// `alien commands`.
#[derive(Debug, Subcommand)]
pub enum CommandsCommand {
    /// Run a command in a deployment's container.
    Invoke {
        /// The deployment: its id (dep_...) or its name.
        deployment: String,
        /// The command's name.
        command: String,
        /// Parameters: JSON text, or @FILE to read them from a file.
        #[arg(long, value_name = "JSON|@FILE")]
        params: Option<String>,
        /// The container (resource id); may be left out when the release has one.
        #[arg(long, value_name = "RESOURCE")]
        target: Option<String>,
        /// Wait for the result and print it.
        #[arg(long)]
        wait: bool,
    },
    /// Show a command's state and result.
    Get {
        /// The command's id.
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
