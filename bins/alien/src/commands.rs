//! Every command but `serve`, `release` and `deployments`: call, then show.

use std::collections::BTreeMap;
use std::time::Duration;

use alien_client::{ApiKey, Client, DeploymentQuery, PageParams};
use alien_core::api::{CreateGroupToken, Page};
use alien_core::command::CommandState;
use alien_core::command::wire::{
    BodySpec, CommandResponse, CommandStatusResponse, CreateCommandRequest,
};
use alien_core::{CreateDeploymentGroup, DeploymentStatus};
use clap::CommandFactory;

use crate::Failure;
use crate::args::{
    Cli, Command, CommandsCommand, GroupsCommand, PageArgs, ReleasesCommand, Shell, TokensCommand,
};
use crate::output::{Output, Table, or_dash, relative};

/// The client for `--manager-url` / `--api-key` (or their variables).
pub fn connect(cli: &Cli) -> Result<Client, Failure> {
    let url = cli.manager_url.as_deref().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
        Failure::Usage(
            "no manager URL: set ALIEN_MANAGER_URL or pass --manager-url (the manager prints both lines at its first start)".into(),
        )
    })?;
    let key =
        cli.api_key.as_deref().filter(|k| !k.trim().is_empty()).ok_or_else(|| {
            Failure::Usage("no API key: set ALIEN_API_KEY or pass --api-key".into())
        })?;
    Client::new(url, ApiKey::new(key)).map_err(|e| Failure::Usage(e.to_string()))
}

/// Runs `cli`'s command.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let out = Output::new(cli.json);
    if let Command::Completions { shell } = &cli.command {
        return completions(*shell);
    }
    let client = connect(&cli)?;
    match cli.command {
        Command::Serve { .. } | Command::Completions { .. } => Ok(()),
        Command::Whoami => whoami(&client, &out).await,
        Command::Status => status(&client, &out).await,
        Command::Release(args) => crate::release::release(&client, &out, args).await,
        Command::Releases(command) => releases(&client, &out, command).await,
        Command::Groups(command) => groups(&client, &out, command).await,
        Command::Deployments(command) => crate::deployments::run(&client, &out, command).await,
        Command::Tokens(command) => tokens(&client, &out, command).await,
        Command::Commands(command) => commands(&client, &out, command).await,
        Command::Logs { deployment, follow, limit } => {
            let deployment = crate::resolve::deployment(&client, &deployment).await?;
            logs(&client, &out, &deployment, follow, limit).await
        }
    }
}

fn completions(shell: Shell) -> Result<(), Failure> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "alien", &mut std::io::stdout());
    Ok(())
}

pub fn page(args: &PageArgs) -> PageParams {
    PageParams { limit: args.limit, cursor: args.cursor.clone() }
}

/// The line after a page that has a next one.
pub fn more<T>(out: &Output, page: &Page<T>) {
    if let Some(cursor) = &page.next_cursor {
        println!("{}", out.dim(&format!("more: --cursor {cursor}")));
    }
}

async fn whoami(client: &Client, out: &Output) -> Result<(), Failure> {
    let who = client.whoami().await?;
    if out.json {
        return out.print_json(&who);
    }
    let mut rows = vec![
        ("token", who.id.to_string()),
        ("type", who.token_type.to_string()),
        ("role", who.role.clone()),
        ("scope", who.scope.scope_type.clone()),
    ];
    if let Some(group) = &who.scope.deployment_group_id {
        rows.push(("group", group.to_string()));
    }
    if let Some(deployment) = &who.scope.deployment_id {
        rows.push(("deployment", deployment.to_string()));
    }
    rows.push(("manager", client.base_url().to_owned()));
    out.fields(&rows);
    Ok(())
}

/// Every deployment the key can see (all pages).
pub async fn all_deployments(
    client: &Client,
    mut query: DeploymentQuery,
) -> Result<Vec<alien_core::Deployment>, Failure> {
    let mut all = Vec::new();
    query.page.limit = Some(1000);
    loop {
        let page = client.list_deployments(&query).await?;
        all.extend(page.items);
        match page.next_cursor {
            Some(cursor) => query.page.cursor = Some(cursor),
            None => return Ok(all),
        }
    }
}

async fn status(client: &Client, out: &Output) -> Result<(), Failure> {
    let health = client.health().await?;
    let platforms = client.platforms().await?;
    let deployments = all_deployments(client, DeploymentQuery::default()).await?;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for deployment in &deployments {
        *by_status.entry(deployment.status.to_string()).or_default() += 1;
    }
    if out.json {
        let value = serde_json::json!({
            "manager": client.base_url(),
            "health": health,
            "deployments": {"total": deployments.len(), "byStatus": by_status},
            "platforms": platforms,
        });
        return out.print_json(&value);
    }
    let counts: Vec<String> = DeploymentStatus::ALL
        .iter()
        .filter_map(|s| by_status.get(&s.to_string()).map(|n| format!("{} {n}", out.status(*s))))
        .collect();
    let deployments_line = if counts.is_empty() {
        "0".to_owned()
    } else {
        format!("{} ({})", deployments.len(), counts.join(", "))
    };
    let mut rows = vec![
        ("manager", client.base_url().to_owned()),
        ("version", health.version.clone()),
        ("health", health.status.clone()),
        ("deployments", deployments_line),
    ];
    let mut registries: Vec<String> = platforms
        .details
        .iter()
        .map(|d| {
            format!("{}/{} ({})", d.registry.host, d.registry.repository_name, d.registry.kind)
        })
        .collect();
    registries.dedup();
    rows.push(("registry", registries.join(", ")));
    let platform_list: Vec<String> = platforms
        .details
        .iter()
        .map(|d| {
            let mut modes = Vec::new();
            if let Some(push) = &d.push {
                modes.push(format!("push: {push}"));
            }
            if d.pull {
                modes.push("pull".to_owned());
            }
            format!("{} ({})", d.platform, modes.join(", "))
        })
        .collect();
    rows.push(("platforms", platform_list.join(", ")));
    out.fields(&rows);
    Ok(())
}

async fn releases(client: &Client, out: &Output, command: ReleasesCommand) -> Result<(), Failure> {
    match command {
        ReleasesCommand::List(args) => {
            let releases = client.list_releases(&page(&args)).await?;
            if out.json {
                return out.print_json(&releases);
            }
            let mut table = Table::new(&["ID", "PLATFORMS", "VERSION", "CREATED"]);
            for release in &releases.items {
                let platforms: Vec<String> = release.stack.keys().map(|p| p.to_string()).collect();
                table.row(vec![
                    release.id.to_string(),
                    platforms.join(","),
                    or_dash(release.version.as_deref()),
                    relative(release.created_at),
                ]);
            }
            table.print(out, "no releases yet: create one with `alien release --stack FILE`");
            more(out, &releases);
            Ok(())
        }
        ReleasesCommand::Get { id } => {
            let release = client.get_release(&id).await?;
            if out.json {
                return out.print_json(&release);
            }
            out.fields(&[
                ("release", release.id.to_string()),
                ("version", or_dash(release.version.as_deref())),
                ("description", or_dash(release.description.as_deref())),
                ("created", relative(release.created_at)),
            ]);
            let mut table = Table::new(&["PLATFORM", "RESOURCE", "IMAGE"]);
            for (platform, stack) in &release.stack {
                let value = serde_json::to_value(stack).unwrap_or_default();
                for (id, image) in crate::release::stack_images(&value) {
                    table.row(vec![platform.to_string(), id, image]);
                }
            }
            println!();
            table.print(out, "no container images");
            Ok(())
        }
    }
}

async fn groups(client: &Client, out: &Output, command: GroupsCommand) -> Result<(), Failure> {
    match command {
        GroupsCommand::Create { name, max_deployments } => {
            let body = CreateDeploymentGroup { name, max_deployments, rollout: None };
            let group = client.create_group(&body).await?;
            if out.json {
                return out.print_json(&group);
            }
            println!("created deployment group {} ({})", group.name, group.id);
            Ok(())
        }
        GroupsCommand::List(args) => {
            let groups = client.list_groups(&page(&args)).await?;
            if out.json {
                return out.print_json(&groups);
            }
            let mut table = Table::new(&["ID", "NAME", "DEPLOYMENTS", "CREATED"]);
            for group in &groups.items {
                table.row(vec![
                    group.id.to_string(),
                    group.name.clone(),
                    format!("{}/{}", group.deployment_count, group.max_deployments),
                    relative(group.created_at),
                ]);
            }
            table
                .print(out, "no deployment groups yet: create one with `alien groups create NAME`");
            more(out, &groups);
            Ok(())
        }
        GroupsCommand::Get { id } => {
            let id = crate::resolve::group(client, &id).await?;
            let group = client.get_group(&id).await?;
            if out.json {
                return out.print_json(&group);
            }
            out.fields(&[
                ("group", group.id.to_string()),
                ("name", group.name.clone()),
                ("deployments", format!("{}/{}", group.deployment_count, group.max_deployments)),
                ("rollout", group.rollout.map_or_else(|| "-".to_owned(), |r| format!("{r:?}"))),
                ("created", relative(group.created_at)),
            ]);
            Ok(())
        }
        GroupsCommand::Token { group, label, install, name } => {
            let group = crate::resolve::group(client, &group).await?;
            let created =
                client.create_group_token(&group, &CreateGroupToken { name: label }).await?;
            if out.json {
                return out.print_json(&created);
            }
            if install {
                println!(
                    "curl -fsSL {}/install/agent.sh | sh -s -- --token {} --name {name}",
                    client.base_url(),
                    created.token
                );
            } else {
                println!("{}", created.token);
            }
            Ok(())
        }
    }
}

async fn tokens(client: &Client, out: &Output, command: TokensCommand) -> Result<(), Failure> {
    match command {
        TokensCommand::List => {
            let tokens = client.list_tokens().await?;
            if out.json {
                return out.print_json(&tokens);
            }
            let mut table =
                Table::new(&["ID", "TYPE", "PREFIX", "NAME", "SCOPE", "CREATED", "LAST USED"]);
            for token in &tokens.items {
                let scope = token
                    .deployment_id
                    .as_ref()
                    .or(token.deployment_group_id.as_ref())
                    .map_or_else(|| "workspace".to_owned(), ToString::to_string);
                table.row(vec![
                    token.id.to_string(),
                    token.token_type.to_string(),
                    format!("{}…", token.key_prefix),
                    or_dash(token.name.as_deref()),
                    scope,
                    relative(token.created_at),
                    token.last_used_at.map_or_else(|| "never".to_owned(), relative),
                ]);
            }
            table.print(out, "no live tokens");
            Ok(())
        }
        TokensCommand::Revoke { id } => {
            client.revoke_token(&id).await?;
            if out.json {
                return out.print_json(&serde_json::json!({"revoked": id}));
            }
            println!("revoked token {id}");
            Ok(())
        }
    }
}

/// Parameters: JSON text, or `@FILE`'s bytes.
fn read_params(params: Option<&str>) -> Result<Vec<u8>, Failure> {
    match params {
        None => Ok(b"{}".to_vec()),
        Some(text) => match text.strip_prefix('@') {
            Some(file) => std::fs::read(file)
                .map_err(|e| Failure::Usage(format!("--params @{file}: cannot read it: {e}"))),
            None => {
                serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
                    Failure::Usage(format!("--params: not JSON ({e}); use @FILE for a file"))
                })?;
                Ok(text.as_bytes().to_vec())
            }
        },
    }
}

/// Largest parameters sent inline (the manager's limit); larger ones are uploaded.
const INLINE_PARAMS: usize = 150_000;

async fn commands(client: &Client, out: &Output, command: CommandsCommand) -> Result<(), Failure> {
    match command {
        CommandsCommand::Invoke { deployment, command, params, target, wait } => {
            let params = read_params(params.as_deref())?;
            let deployment = crate::resolve::deployment(client, &deployment).await?;
            let size = params.len() as u64;
            // Large parameters go to the payload store, as the manager asks.
            let spec = if params.len() > INLINE_PARAMS {
                BodySpec::Storage { size, storage_get_request: None, storage_put_used: None }
            } else {
                BodySpec::Inline { inline_base64: base64_encode(&params) }
            };
            let request = CreateCommandRequest {
                deployment_id: deployment,
                command,
                params: spec,
                deadline: None,
                idempotency_key: None,
                target_resource_id: target,
            };
            let mut created = client.create_command(&request).await?;
            if let Some(upload) = created.storage_upload.take() {
                client.presigned(&upload.put_request, Some(params)).await?;
                client.upload_complete(&created.command_id, size).await?;
            }
            if !wait {
                if out.json {
                    return out.print_json(&created);
                }
                println!("command {} is {}", created.command_id, created.state.as_str());
                println!(
                    "{}",
                    out.dim(&format!("see it with: alien commands get {}", created.command_id))
                );
                return Ok(());
            }
            let status = loop {
                let status = client.command_status(&created.command_id).await?;
                if status.state.is_terminal() {
                    break status;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            show_command(client, out, &status).await
        }
        CommandsCommand::Get { id } => {
            let status = client.command_status(&id).await?;
            show_command(client, out, &status).await
        }
    }
}

async fn show_command(
    client: &Client,
    out: &Output,
    status: &CommandStatusResponse,
) -> Result<(), Failure> {
    if out.json {
        out.print_json(status)?;
    } else {
        out.fields(&[
            ("command", status.command_id.clone()),
            ("state", status.state.as_str().to_owned()),
            ("target", status.target.resource_id.clone()),
            ("attempt", status.attempt.to_string()),
            ("created", status.created_at.clone()),
            ("completed", or_dash(status.completed_at.as_deref())),
        ]);
        match &status.response {
            Some(CommandResponse::Success { response: BodySpec::Inline { inline_base64 } }) => {
                let bytes = base64_decode(inline_base64).unwrap_or_default();
                println!();
                println!("{}", String::from_utf8_lossy(&bytes));
            }
            Some(CommandResponse::Success {
                response: BodySpec::Storage { size, storage_get_request, .. },
            }) => match storage_get_request {
                Some(request) => {
                    let bytes = client.presigned(request, None).await?;
                    println!();
                    println!("{}", String::from_utf8_lossy(&bytes));
                }
                None => println!("response: {size} bytes in the payload store"),
            },
            Some(CommandResponse::Error { code, message, .. }) => {
                println!("error: {code}: {message}");
            }
            None => {}
        }
    }
    match status.state {
        CommandState::Failed | CommandState::Expired => Err(Failure::Local(format!(
            "command {} {}",
            status.command_id,
            status.state.as_str().to_lowercase()
        ))),
        _ => Ok(()),
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

async fn logs(
    client: &Client,
    out: &Output,
    deployment: &str,
    follow: bool,
    limit: u32,
) -> Result<(), Failure> {
    let mut page = client.recent_logs(deployment, Some(limit)).await?;
    if out.json && !follow {
        return out.print_json(&page);
    }
    let mut last = None;
    loop {
        // Records after the last one shown (all of them when it has scrolled out).
        let start = last
            .as_ref()
            .and_then(|l| page.records.iter().rposition(|r| r == l))
            .map_or(0, |i| i + 1);
        for record in page.records.iter().skip(start) {
            if out.json {
                println!("{}", serde_json::to_string(record).unwrap_or_default());
            } else {
                let body = match &record.body {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                println!(
                    "{} {} {body}",
                    out.dim(record.timestamp.as_deref().unwrap_or("-")),
                    record.severity_text.as_deref().unwrap_or("-"),
                );
            }
        }
        if page.records.last().is_some() {
            last = page.records.last().cloned();
        }
        if !follow {
            if page.records.is_empty() && !out.json {
                eprintln!("no recent logs for {deployment}");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        page = client.recent_logs(deployment, Some(1000)).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_standard_text() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("{\"a\":1}", "eyJhIjoxfQ=="),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64_decode("not base64!"), None);
    }

    #[test]
    fn params_are_json_text_or_a_file() {
        assert_eq!(read_params(None).ok(), Some(b"{}".to_vec()));
        assert_eq!(read_params(Some("{\"n\": 1}")).ok(), Some(b"{\"n\": 1}".to_vec()));
        assert!(matches!(read_params(Some("{oops")), Err(Failure::Usage(_))));
        assert!(matches!(read_params(Some("@/nonexistent/params.json")), Err(Failure::Usage(_))));
    }
}
