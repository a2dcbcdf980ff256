//! [`TelemetrySettings`]: what this crate needs to know of the manager's `[telemetry]` section,
//! as its own type, so that the crate does not depend on the configuration crate (the binary
//! maps one onto the other).

use std::collections::BTreeMap;
use std::fmt;

/// Where and how OTLP data is forwarded, and whether the manager exports its own.
#[derive(Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// OTLP/HTTP base URL; signals go to `{base}/v1/{logs,traces,metrics}`. `None`: data is
    /// counted and discarded.
    pub otlp_endpoint: Option<String>,
    /// Headers sent with every forwarded request (secrets: never logged).
    pub headers: BTreeMap<String, String>,
    /// Gzip request bodies.
    pub gzip: bool,
    /// Time limit of one export request, in seconds.
    pub timeout_secs: u64,
    /// Bound of the forward queue, in bytes.
    pub queue_bytes: u64,
    /// Also export the manager's own traces and metrics to the endpoint.
    pub self_telemetry: bool,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            headers: BTreeMap::new(),
            gzip: true,
            timeout_secs: 10,
            queue_bytes: 64 * 1024 * 1024,
            self_telemetry: true,
        }
    }
}

impl fmt::Debug for TelemetrySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        f.debug_struct("TelemetrySettings")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("headers", &headers)
            .field("gzip", &self.gzip)
            .field("timeout_secs", &self.timeout_secs)
            .field("queue_bytes", &self.queue_bytes)
            .field("self_telemetry", &self.self_telemetry)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_header_names_never_values() {
        let settings = TelemetrySettings {
            headers: BTreeMap::from([("Authorization".into(), "Bearer s3cret".into())]),
            ..TelemetrySettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(shown.contains("Authorization") && !shown.contains("s3cret"), "{shown}");
    }
}
