//! The environment a container receives (spec/deployer.md): its own `environment`, the
//! deployment's variables (secrets decrypted only here), then the manager's: identity, the
//! commands receiver, and OTLP export with the deployment token. A manager URL on a loopback
//! address is rewritten to the address containers reach the host at.

use alien_core::{ContainerConfig, Deployment, EnvironmentVariable};

/// Variables in the order they are set (later names override earlier ones when a platform
/// applies them in order; names are unique here).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv(pub Vec<(String, String)>);

impl std::fmt::Debug for ContainerEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values include the deployment token and secrets.
        f.debug_list().entries(self.0.iter().map(|(k, _)| k)).finish()
    }
}

impl ContainerEnv {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }
}

/// The environment of every container of `stack`, by resource id ([`container_env`] of each).
pub fn stack_env(
    stack: &alien_core::Stack,
    deployment: &Deployment,
    variables: &[EnvironmentVariable],
    manager_url: &str,
    token: &str,
) -> std::collections::BTreeMap<String, ContainerEnv> {
    stack
        .containers()
        .map(|(id, container)| {
            let env = container_env(container, id, deployment, variables, manager_url, token);
            (id.to_owned(), env)
        })
        .collect()
}

/// The variables of [`container_env`] whose values are secret: the deployment's secret
/// variables, and the manager's variables that carry the deployment token.
pub fn secret_names(variables: &[EnvironmentVariable]) -> std::collections::BTreeSet<String> {
    variables
        .iter()
        .filter(|v| v.var_type == alien_core::VariableType::Secret)
        .map(|v| v.name.clone())
        .chain(TOKEN_VARIABLES.iter().map(|name| (*name).to_owned()))
        .collect()
}

/// The manager's variables whose values hold the deployment token.
const TOKEN_VARIABLES: [&str; 2] = ["ALIEN_COMMANDS_TOKEN", "OTEL_EXPORTER_OTLP_HEADERS"];

/// The environment of `container` (named `resource_id` in the stack) of `deployment`.
/// `manager_url` is the URL containers use to reach the manager (see
/// [`reachable_from_containers`]); `token` is the deployment's token.
pub fn container_env(
    container: &ContainerConfig,
    resource_id: &str,
    deployment: &Deployment,
    variables: &[EnvironmentVariable],
    manager_url: &str,
    token: &str,
) -> ContainerEnv {
    let mut env = ContainerEnv::default();
    for (name, value) in container.environment.iter().flatten() {
        env.set(name, value.clone());
    }
    for variable in variables {
        env.set(&variable.name, variable.value.clone());
    }
    let base = manager_url.trim_end_matches('/');
    let managed = [
        ("ALIEN_DEPLOYMENT_ID", deployment.id.to_string()),
        ("ALIEN_DEPLOYMENT_NAME", deployment.name.clone()),
        ("ALIEN_COMMANDS_URL", format!("{base}/v1")),
        ("ALIEN_COMMANDS_TOKEN", token.to_owned()),
        ("ALIEN_COMMANDS_TARGET_RESOURCE_ID", resource_id.to_owned()),
        ("ALIEN_COMMANDS_TARGET_RESOURCE_TYPE", "container".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", base.to_owned()),
        ("OTEL_EXPORTER_OTLP_HEADERS", format!("authorization=Bearer {token}")),
    ];
    for (name, value) in managed {
        env.set(name, value);
    }
    env
}

/// `manager_url` as containers on this host reach it: a loopback host (`localhost`,
/// `127.0.0.0/8`, `::1`) becomes `host_gateway` (`10.0.2.2` for podman with slirp4netns,
/// `host.docker.internal` for docker); anything else is kept.
pub fn reachable_from_containers(manager_url: &str, host_gateway: &str) -> String {
    let Ok(mut url) = url::Url::parse(manager_url) else { return manager_url.to_owned() };
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if loopback && url.set_host(Some(host_gateway)).is_ok() {
        return url.as_str().trim_end_matches('/').to_owned();
    }
    manager_url.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_point_at_the_host_gateway() {
        for (url, want) in [
            ("http://127.0.0.1:8080", "http://10.0.2.2:8080"),
            ("http://localhost:8080/", "http://10.0.2.2:8080"),
            ("http://[::1]:9", "http://10.0.2.2:9"),
            ("http://127.8.0.1", "http://10.0.2.2"),
            ("https://manager.example.com", "https://manager.example.com"),
            ("http://192.168.1.4:8080", "http://192.168.1.4:8080"),
        ] {
            assert_eq!(reachable_from_containers(url, "10.0.2.2"), want, "{url}");
        }
        assert_eq!(
            reachable_from_containers("http://127.0.0.1:1", "host.docker.internal"),
            "http://host.docker.internal:1"
        );
    }
}
