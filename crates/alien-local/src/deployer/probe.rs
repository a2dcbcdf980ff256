//! Health probes from the host to a replica's published port: the container's `healthCheck`
//! over HTTP (a 2xx or 3xx answer within `timeoutSeconds` passes, as in Kubernetes), a TCP
//! connect to the exposed port when there is no health check, and nothing (running is enough)
//! when neither exists. The probe is written into a label (`alien.health`) so that a deployer
//! that lost its state probes the same way.

use std::time::Duration;

use alien_core::ContainerConfig;
use serde::{Deserialize, Serialize};

/// How a replica is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", rename_all_fields = "camelCase")]
pub enum Probe {
    /// `method path` on the container port `port`.
    Http {
        /// Container port.
        port: u32,
        /// Path.
        path: String,
        /// HTTP method.
        method: String,
        /// Timeout in seconds.
        timeout_seconds: u32,
        /// Counted consecutive failures before the replica is failing.
        failure_threshold: u32,
    },
    /// A TCP connect to the container port `port`.
    Tcp {
        /// Container port.
        port: u32,
    },
    /// No probe: running is healthy.
    None,
}

/// Failures counted before a replica without an HTTP check is failing.
const DEFAULT_THRESHOLD: u32 = 3;
/// Timeout of a TCP probe.
const TCP_TIMEOUT: Duration = Duration::from_secs(1);

impl Probe {
    /// The probe of `config`.
    pub fn of(config: &ContainerConfig) -> Probe {
        match (&config.health_check, config.health_check_port(), config.exposed_port()) {
            (Some(check), Some(port), _) => Probe::Http {
                port,
                path: check.path().to_owned(),
                method: check.method().to_owned(),
                timeout_seconds: check.timeout_seconds(),
                failure_threshold: check.failure_threshold(),
            },
            (_, _, Some(exposed)) => Probe::Tcp { port: exposed.port },
            _ => Probe::None,
        }
    }

    /// The container port probed, if any.
    pub fn port(&self) -> Option<u32> {
        match self {
            Self::Http { port, .. } | Self::Tcp { port } => Some(*port),
            Self::None => None,
        }
    }

    /// Counted failures that make a replica failing.
    pub fn failure_threshold(&self) -> u32 {
        match self {
            Self::Http { failure_threshold, .. } => (*failure_threshold).max(1),
            _ => DEFAULT_THRESHOLD,
        }
    }

    /// A short description for messages, e.g. `GET /health on port 8080`.
    pub fn describe(&self) -> String {
        match self {
            Self::Http { port, path, method, .. } => format!("{method} {path} on port {port}"),
            Self::Tcp { port } => format!("TCP connect to port {port}"),
            Self::None => "no probe".to_owned(),
        }
    }

    /// Probes the replica whose probed port is published at `host_port` on 127.0.0.1.
    pub async fn run(&self, http: &reqwest::Client, host_port: Option<u16>) -> ProbeResult {
        let port = match (self, host_port) {
            (Self::None, _) => return ProbeResult::Passed,
            (_, Some(port)) => port,
            (_, None) => {
                return ProbeResult::Failed {
                    responded: false,
                    detail: "the probed port is not published".to_owned(),
                };
            }
        };
        match self {
            Self::Http { path, method, timeout_seconds, .. } => {
                let url = format!("http://127.0.0.1:{port}{path}");
                let method =
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
                let timeout = Duration::from_secs(u64::from((*timeout_seconds).max(1)));
                match http.request(method, &url).timeout(timeout).send().await {
                    Ok(response) => {
                        let status = response.status();
                        if status.is_success() || status.is_redirection() {
                            ProbeResult::Passed
                        } else {
                            ProbeResult::Failed {
                                responded: true,
                                detail: format!("HTTP {status}"),
                            }
                        }
                    }
                    Err(e) if e.is_timeout() => ProbeResult::Failed {
                        responded: false,
                        detail: format!("no answer within {} s", timeout.as_secs()),
                    },
                    Err(e) => ProbeResult::Failed {
                        responded: false,
                        detail: format!("no HTTP answer ({})", root_cause(&e)),
                    },
                }
            }
            Self::Tcp { .. } => {
                let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
                match tokio::time::timeout(TCP_TIMEOUT, connect).await {
                    Ok(Ok(_)) => ProbeResult::Passed,
                    Ok(Err(e)) => ProbeResult::Failed {
                        responded: false,
                        detail: format!("TCP connect failed: {e}"),
                    },
                    Err(_) => ProbeResult::Failed {
                        responded: false,
                        detail: "TCP connect timed out".to_owned(),
                    },
                }
            }
            Self::None => ProbeResult::Passed,
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// Healthy.
    Passed,
    /// Not healthy.
    Failed {
        /// Whether the app answered (an answer counts as a failure at once; silence counts only
        /// after the startup grace, so that a slow start is not a failure).
        responded: bool,
        /// What happened.
        detail: String,
    },
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(extra: serde_json::Value) -> ContainerConfig {
        let mut value = json!({
            "id": "api", "code": {"type": "image", "image": "a:1"},
            "cpu": "1", "memory": "64Mi", "ports": [{"port": 8080, "expose": "http"}, {"port": 9090}],
            "permissions": "execution"
        });
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn probes_follow_the_health_check_then_the_exposed_port() {
        let check = config(json!({"healthCheck": {"port": 9090, "timeoutSeconds": 2}}));
        assert_eq!(
            Probe::of(&check),
            Probe::Http {
                port: 9090,
                path: "/health".to_owned(),
                method: "GET".to_owned(),
                timeout_seconds: 2,
                failure_threshold: 3
            }
        );
        assert_eq!(Probe::of(&config(json!({}))), Probe::Tcp { port: 8080 });
        assert_eq!(Probe::of(&config(json!({"ports": [{"port": 1}]}))), Probe::None);
        let label = serde_json::to_string(&Probe::of(&check)).unwrap();
        assert_eq!(
            label,
            r#"{"type":"http","port":9090,"path":"/health","method":"GET","timeoutSeconds":2,"failureThreshold":3}"#
        );
        assert_eq!(serde_json::from_str::<Probe>(&label).unwrap(), Probe::of(&check));
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_fail_on_errors_and_closed_ports() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in ["200 OK", "500 Internal Server Error"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let http = reqwest::Client::new();
        let probe = Probe::of(&config(json!({"healthCheck": {}})));
        assert_eq!(probe.run(&http, Some(port)).await, ProbeResult::Passed);
        match probe.run(&http, Some(port)).await {
            ProbeResult::Failed { responded: true, detail } => {
                assert!(detail.contains("500"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        match probe.run(&http, Some(port)).await {
            ProbeResult::Failed { responded: false, .. } => {}
            other => panic!("a closed port did not answer: {other:?}"),
        }
        assert!(matches!(probe.run(&http, None).await, ProbeResult::Failed { .. }));
        assert_eq!(Probe::None.run(&http, None).await, ProbeResult::Passed);
    }
}
