//! The three OTLP signals and what their records are called.

use std::fmt;

/// An OTLP signal; each has its own ingest path, forward queue and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Spans (`/v1/traces`).
    Traces,
    /// Log records (`/v1/logs`).
    Logs,
    /// Metric data points (`/v1/metrics`).
    Metrics,
}

impl Signal {
    /// Every signal, in a fixed order (index of [`Signal::index`]).
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Logs, Signal::Metrics];

    /// The label used in metrics and URLs: `traces`, `logs` or `metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }

    /// The OTLP/HTTP path of the signal, e.g. `/v1/traces`.
    pub fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
            Signal::Metrics => "/v1/metrics",
        }
    }

    /// What one record of the signal is called in messages (`spans`, `log records`, ...).
    pub fn record_noun(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Logs => "log records",
            Signal::Metrics => "data points",
        }
    }

    /// Position in [`Signal::ALL`], for per-signal arrays.
    pub fn index(self) -> usize {
        match self {
            Signal::Traces => 0,
            Signal::Logs => 1,
            Signal::Metrics => 2,
        }
    }

    /// The signal served at an OTLP/HTTP path (`/v1/logs`, ...), if any.
    pub fn from_path(path: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.path() == path)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_indexes_round_trip() {
        for (i, s) in Signal::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i);
            assert_eq!(Signal::from_path(s.path()), Some(s));
            assert_eq!(s.path(), format!("/v1/{s}"));
        }
        assert_eq!(Signal::from_path("/v1/profiles"), None);
    }
}
