//! What the app reads from its environment, once, at start (the receiver's and the OTLP
//! exporter's variables are read by their own modules).

use std::net::IpAddr;

/// Port when `PORT` is unset.
pub const DEFAULT_PORT: u16 = 8080;
/// Greeting when `HELLO_MESSAGE` is unset.
pub const DEFAULT_MESSAGE: &str = "hello";

/// The app's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Address to listen on (`HOST`, default `0.0.0.0`: a container must accept outside traffic).
    pub host: IpAddr,
    /// Port to listen on (`PORT`, default 8080; 0 picks a free one).
    pub port: u16,
    /// What `GET /` says (`HELLO_MESSAGE`), so a test can tell releases apart.
    pub message: String,
    /// `HELLO_FAIL_HEALTH=1`: `/health` answers 500, for tests of unhealthy releases.
    pub fail_health: bool,
    /// `ALIEN_DEPLOYMENT_ID`, set by the deployer.
    pub deployment_id: Option<String>,
    /// `ALIEN_DEPLOYMENT_NAME`, set by the deployer.
    pub deployment_name: Option<String>,
    /// `HOSTNAME` (the container's id under podman and docker): which replica answered.
    pub hostname: Option<String>,
    /// `HELLO_EXTRA_PORTS` (`9090,9091`): more ports serving the same routes, for containers
    /// with several ports.
    pub extra_ports: Vec<u16>,
}

impl Settings {
    /// Reads the process environment; an error names the variable that is wrong.
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let set = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let host = match set("HOST") {
            None => IpAddr::from([0, 0, 0, 0]),
            Some(text) => text
                .parse()
                .map_err(|_| format!("HOST: expected an IP address like 0.0.0.0, got {text:?}"))?,
        };
        let port = match set("PORT") {
            None => DEFAULT_PORT,
            Some(text) => text
                .parse()
                .map_err(|_| format!("PORT: expected a port number 0..=65535, got {text:?}"))?,
        };
        let fail_health = match set("HELLO_FAIL_HEALTH").map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(text) => match text.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => return Err(format!("HELLO_FAIL_HEALTH: expected 1 or 0, got {text:?}")),
            },
        };
        let mut extra_ports = Vec::new();
        for part in set("HELLO_EXTRA_PORTS").unwrap_or_default().split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            extra_ports.push(part.parse().map_err(|_| {
                format!("HELLO_EXTRA_PORTS: expected port numbers like 9090,9091, got {part:?}")
            })?);
        }
        Ok(Self {
            host,
            port,
            extra_ports,
            // Not trimmed: a test may look for exactly what it set.
            message: get("HELLO_MESSAGE").unwrap_or_else(|| DEFAULT_MESSAGE.to_owned()),
            fail_health,
            deployment_id: set("ALIEN_DEPLOYMENT_ID"),
            deployment_name: set("ALIEN_DEPLOYMENT_NAME"),
            hostname: set("HOSTNAME"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::from_vars(|name| {
            vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_listen_on_all_addresses_port_8080() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.host, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(s.port, 8080);
        assert_eq!(s.message, "hello");
        assert!(!s.fail_health);
        assert_eq!(s.deployment_id, None);
    }

    #[test]
    fn reads_every_variable() {
        let s = settings(&[
            ("HOST", "127.0.0.1"),
            ("PORT", "9000"),
            ("HELLO_MESSAGE", "release 2"),
            ("HELLO_FAIL_HEALTH", "1"),
            ("ALIEN_DEPLOYMENT_ID", "dep_1"),
            ("ALIEN_DEPLOYMENT_NAME", "acme"),
            ("HOSTNAME", "abc123"),
            ("HELLO_EXTRA_PORTS", "9090, 9091"),
        ])
        .unwrap();
        assert_eq!(s.extra_ports, [9090, 9091]);
        assert_eq!(s.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(s.port, 9000);
        assert_eq!(s.message, "release 2");
        assert!(s.fail_health);
        assert_eq!(s.deployment_id.as_deref(), Some("dep_1"));
        assert_eq!(s.deployment_name.as_deref(), Some("acme"));
        assert_eq!(s.hostname.as_deref(), Some("abc123"));
    }

    #[test]
    fn fail_health_accepts_words_and_rejects_typos() {
        assert!(settings(&[("HELLO_FAIL_HEALTH", "TRUE")]).unwrap().fail_health);
        assert!(!settings(&[("HELLO_FAIL_HEALTH", "0")]).unwrap().fail_health);
        assert!(!settings(&[("HELLO_FAIL_HEALTH", "")]).unwrap().fail_health);
        let err = settings(&[("HELLO_FAIL_HEALTH", "maybe")]).unwrap_err();
        assert!(err.contains("HELLO_FAIL_HEALTH"), "{err}");
    }

    #[test]
    fn a_bad_port_or_host_names_the_variable() {
        assert!(settings(&[("PORT", "http")]).unwrap_err().starts_with("PORT:"));
        assert!(settings(&[("PORT", "70000")]).unwrap_err().starts_with("PORT:"));
        assert!(settings(&[("HOST", "localhost")]).unwrap_err().starts_with("HOST:"));
        let err = settings(&[("HELLO_EXTRA_PORTS", "9090,x")]).unwrap_err();
        assert!(err.starts_with("HELLO_EXTRA_PORTS:"), "{err}");
    }
}
