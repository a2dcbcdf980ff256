//! What one replica tells the others so that they act at once instead of at their next poll: a
//! command was queued for a target, deployments have new work. Signals are hints: a lost one
//! costs a poll interval, never correctness, since every receiver also polls the store.

use std::sync::Arc;

/// A hint to the other replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A command was queued (or came back) for a receiver of `deployment`'s `resource`.
    CommandQueued {
        /// The deployment's id.
        deployment: String,
        /// The container's resource id.
        resource: String,
    },
    /// Deployments may have work: a release, a new deployment, a retry, a redeploy, a delete.
    DeploymentsChanged,
}

impl Signal {
    /// The signal as one line of text (what a notification carries).
    pub fn encode(&self) -> String {
        match self {
            Signal::CommandQueued { deployment, resource } => format!("c {deployment} {resource}"),
            Signal::DeploymentsChanged => "d".to_owned(),
        }
    }

    /// The signal [`Signal::encode`] wrote, or `None` for anything else.
    pub fn decode(text: &str) -> Option<Signal> {
        let mut parts = text.split(' ');
        let signal = match (parts.next()?, parts.next(), parts.next()) {
            ("c", Some(deployment), Some(resource))
                if !deployment.is_empty() && !resource.is_empty() =>
            {
                Signal::CommandQueued {
                    deployment: deployment.to_owned(),
                    resource: resource.to_owned(),
                }
            }
            ("d", None, None) => Signal::DeploymentsChanged,
            _ => return None,
        };
        parts.next().is_none().then_some(signal)
    }
}

/// Called with every signal another replica published.
pub type SignalHandler = Arc<dyn Fn(&Signal) + Send + Sync>;

/// The channel between replicas (PostgreSQL's `LISTEN/NOTIFY` when they share one).
pub trait Signals: Send + Sync {
    /// Tells the other replicas, without waiting (best effort).
    fn publish(&self, signal: Signal);

    /// Calls `handler` with each signal another replica publishes from now on. The handler runs
    /// on the receiving task: it must only wake something, never wait.
    fn subscribe(&self, handler: SignalHandler);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip_and_nothing_else_decodes() {
        for signal in [
            Signal::CommandQueued { deployment: "dep_1".into(), resource: "api".into() },
            Signal::DeploymentsChanged,
        ] {
            assert_eq!(Signal::decode(&signal.encode()), Some(signal));
        }
        for text in ["", "c", "c dep_1", "c dep_1 api extra", "c  api", "d x", "x", "d "] {
            assert_eq!(Signal::decode(text), None, "{text:?}");
        }
    }
}
