//! The stable front of an exposed container: a TCP forwarder on 127.0.0.1 that the container's
//! `url` points at, handing each new connection to one healthy replica's published port in turn.
//!
//! Replicas come and go during a rolling update (each gets its own host port from the engine);
//! the front's port does not, so the url keeps answering. It runs inside the deployer's process:
//! its port is written into the state and into every replica's `alien.url-port` label, and the
//! next `apply` or `refresh` after a restart binds it again (a new port, and so a new url, only
//! when something else took it meanwhile). A connection stays with its replica until it closes;
//! a replica is taken out of the rotation before it is stopped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The fronts of one deployer, by `<deployment>/<container>`.
#[derive(Default)]
pub struct Fronts {
    fronts: Mutex<HashMap<String, Front>>,
}

struct Front {
    port: u16,
    backends: Arc<RwLock<Vec<u16>>>,
    task: JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fronts {
    /// The port of `key`'s front, binding one (on `preferred` when given and free) if there is
    /// none. Needs a Tokio runtime.
    pub fn ensure(&self, key: &str, preferred: Option<u16>) -> std::io::Result<u16> {
        let mut fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(front) = fronts.get(key) {
            return Ok(front.port);
        }
        let bind = |port: u16| {
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        };
        // A front closed a moment ago (its task aborted, the listener not yet dropped) holds
        // the port briefly: try the preferred port a few times.
        let rebind = |port: u16| {
            let mut result = bind(port);
            for _ in 0..10 {
                match &result {
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        result = bind(port);
                    }
                    _ => break,
                }
            }
            result
        };
        let listener = match preferred.map(rebind) {
            Some(Ok(listener)) => listener,
            Some(Err(e)) => {
                tracing::warn!(
                    key,
                    port = preferred,
                    "cannot bind the front's port again ({e}); its url changes"
                );
                bind(0)?
            }
            None => bind(0)?,
        };
        let port = listener.local_addr()?.port();
        let backends = Arc::new(RwLock::new(Vec::new()));
        let task = tokio::spawn(serve(listener, backends.clone()));
        fronts.insert(key.to_owned(), Front { port, backends, task });
        Ok(port)
    }

    /// Replaces the host ports `key`'s front forwards to (no-op without a front).
    pub fn set_backends(&self, key: &str, ports: Vec<u16>) {
        let fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(front) = fronts.get(key) {
            *front.backends.write().unwrap_or_else(std::sync::PoisonError::into_inner) = ports;
        }
    }

    /// The host ports `key`'s front forwards to now.
    pub fn backends(&self, key: &str) -> Vec<u16> {
        let fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fronts
            .get(key)
            .map(|f| f.backends.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
            .unwrap_or_default()
    }

    /// Closes `key`'s front.
    pub fn close(&self, key: &str) {
        let mut fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fronts.remove(key);
    }

    /// Closes every front of `deployment` (keys `<deployment>/...`).
    pub fn close_deployment(&self, deployment: &str) {
        let prefix = format!("{deployment}/");
        let mut fronts = self.fronts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fronts.retain(|key, _| !key.starts_with(&prefix));
    }
}

async fn serve(listener: TcpListener, backends: Arc<RwLock<Vec<u16>>>) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let ports = backends.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let first = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(forward(inbound, ports, first));
    }
}

/// Connects `inbound` to the first backend (from `first` on, round robin) that accepts.
async fn forward(mut inbound: TcpStream, ports: Vec<u16>, first: usize) {
    let _ = inbound.set_nodelay(true);
    for i in 0..ports.len() {
        let port = ports[(first + i) % ports.len()];
        if let Ok(mut outbound) =
            TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
        {
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn echo_name(name: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                s.write_all(name.as_bytes()).await.unwrap();
            }
        });
        port
    }

    async fn read_via(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_front_keeps_its_port_and_rotates_over_current_backends() {
        let (a, b) = (echo_name("a").await, echo_name("b").await);
        let fronts = Fronts::default();
        let port = fronts.ensure("dep/api", None).unwrap();
        assert_eq!(fronts.ensure("dep/api", Some(1)).unwrap(), port, "an existing front stays");
        fronts.set_backends("dep/api", vec![a, b]);
        let mut seen = vec![read_via(port).await, read_via(port).await];
        seen.sort();
        assert_eq!(seen, ["a", "b"]);
        fronts.set_backends("dep/api", vec![b]);
        assert_eq!(read_via(port).await, "b");
        assert_eq!(fronts.backends("dep/api"), vec![b]);

        // Closed, then bound again on the same port (as after a restart).
        let other = fronts.ensure("dep-2/api", None).unwrap();
        fronts.close_deployment("dep");
        assert_eq!(fronts.ensure("dep-2/api", None).unwrap(), other, "another deployment's stays");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(fronts.ensure("dep/api", Some(port)).unwrap(), port);
        fronts.set_backends("dep/api", vec![a]);
        assert_eq!(read_via(port).await, "a");
    }
}
