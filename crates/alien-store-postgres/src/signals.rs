//! [`Signals`] between replicas over PostgreSQL's `LISTEN/NOTIFY` on channel `alien_signals`.
//!
//! Publishing queues the signal and returns; a task sends what is queued with one `pg_notify`
//! statement (repeats dropped: PostgreSQL would fold them within the transaction anyway), so a
//! request never waits for it. Each replica tags what it sends with a random instance name and ignores
//! its own. Notifications are not stored: those sent while a replica's listening connection is
//! down are lost, so after reconnecting the listener tells its handlers that deployments
//! changed, and every receiver also polls (commands every half second, the deployment loop at
//! its interval).

use std::str::FromStr as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use alien_core::signal::{Signal, SignalHandler, Signals};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::mpsc;

use crate::pg::{describe, redact};

/// The notification channel.
pub const CHANNEL: &str = "alien_signals";

/// Signals waiting to be sent; more are dropped (they are hints).
const QUEUE: usize = 4096;
/// Signals sent with one statement at most.
const SEND_AT_ONCE: usize = 256;

/// The signals of one replica.
pub struct PgSignals {
    instance: String,
    outbox: mpsc::Sender<String>,
    handlers: Arc<RwLock<Vec<SignalHandler>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PgSignals {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PgSignals {
    /// Listens on the database at `url` (the first connection must succeed: a wrong URL stops
    /// the start) and starts the sender.
    pub async fn start(url: &str) -> Result<PgSignals, String> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| format!("not a PostgreSQL URL: {}", redact(&e.to_string(), url)))?;
        let shown = describe(&options);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| format!("{shown}: listening: {}", redact(&e.to_string(), url)))?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(|e| format!("{shown}: LISTEN {CHANNEL}: {}", redact(&e.to_string(), url)))?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| format!("random: {e}"))?;
        let instance: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let handlers: Arc<RwLock<Vec<SignalHandler>>> = Arc::default();
        let (outbox, rx) = mpsc::channel(QUEUE);
        let tasks = vec![
            tokio::spawn(listen(listener, instance.clone(), handlers.clone())),
            tokio::spawn(send(pool, rx)),
        ];
        Ok(PgSignals { instance, outbox, handlers, tasks })
    }
}

impl Signals for PgSignals {
    fn publish(&self, signal: Signal) {
        let payload = format!("{} {}", self.instance, signal.encode());
        if self.outbox.try_send(payload).is_err() {
            tracing::debug!("signal queue full: a signal was dropped (receivers poll)");
        }
    }

    fn subscribe(&self, handler: SignalHandler) {
        self.handlers.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(handler);
    }
}

fn deliver(handlers: &RwLock<Vec<SignalHandler>>, signal: &Signal) {
    for handler in handlers.read().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        handler(signal);
    }
}

async fn listen(
    mut listener: PgListener,
    instance: String,
    handlers: Arc<RwLock<Vec<SignalHandler>>>,
) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                let Some((from, text)) = notification.payload().split_once(' ') else { continue };
                if from == instance {
                    continue;
                }
                if let Some(signal) = Signal::decode(text) {
                    deliver(&handlers, &signal);
                }
            }
            Ok(None) => {
                // The connection was lost (the next call reconnects): whatever was sent
                // meanwhile is gone, so the deployment loop looks now.
                tracing::warn!("signal listener lost its connection; reconnecting");
                deliver(&handlers, &Signal::DeploymentsChanged);
            }
            Err(err) => {
                tracing::warn!(error = %err, "signal listener: retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn send(pool: sqlx::PgPool, mut rx: mpsc::Receiver<String>) {
    let mut queued = Vec::with_capacity(SEND_AT_ONCE);
    while rx.recv_many(&mut queued, SEND_AT_ONCE).await > 0 {
        let mut payloads: Vec<String> = Vec::with_capacity(queued.len());
        for payload in queued.drain(..) {
            if !payloads.contains(&payload) {
                payloads.push(payload);
            }
        }
        let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(&pool)
            .await;
        if let Err(err) = sent {
            tracing::warn!(error = %err, "signals to the other replicas were not sent (they poll)");
        }
    }
}
