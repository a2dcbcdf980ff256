//! The reaper: deadlines that passed expire their commands, leases that ran out are redelivered,
//! and ended commands past their retention are forgotten (`quota`).

use super::*;

impl CommandEngine {
    pub(super) async fn expire(&self, id: &str) -> Result<Option<Meta>, CommandError> {
        let expired = self
            .update(id, |m| {
                let state = m.state.next(CommandEvent::DeadlinePassed)?;
                let next = Meta {
                    state,
                    completed_ns: Some(now_ns()),
                    lease_id: None,
                    lease_expires_ns: None,
                    ..m.clone()
                };
                Some((next, lease_cleanup(m)))
            })
            .await?;
        if let Some(meta) = &expired {
            count("expired");
            observe_done(meta);
        }
        Ok(expired)
    }

    /// The entries `{prefix}{nanos:030}:{id}` due at `until` (nanos at or before it), oldest
    /// first, as (key, command id); at most 1000 a pass.
    pub(super) async fn due(
        &self,
        prefix: &str,
        until: u128,
    ) -> Result<Vec<(String, String)>, CommandError> {
        let mut due = Vec::new();
        for entry in self.kv.scan(prefix, None, 1000).await? {
            let mut parts = entry.key.splitn(3, ':').skip(1);
            let (Some(at), Some(id)) = (parts.next(), parts.next()) else { continue };
            if at.parse::<u128>().unwrap_or(u128::MAX) > until {
                break;
            }
            let id = id.to_owned();
            due.push((entry.key, id));
        }
        Ok(due)
    }

    /// One reaper pass: expires commands past their deadline and redelivers commands whose lease
    /// ran out (attempt + 1). Returns how many commands it moved.
    #[tracing::instrument(name = "command.reap", skip_all, level = "debug")]
    pub async fn reap(&self) -> Result<u64, CommandError> {
        let now = now_ns();
        let mut moved = 0;
        for (key, id) in self.due("deadline:", now).await? {
            match self.expire(&id).await {
                Ok(Some(_)) => moved += 1,
                Ok(None) | Err(CommandError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            self.kv.delete(&key, None).await?;
        }
        for (key, id) in self.due("leased:", now).await? {
            let redelivered = match self
                .update(&id, |m| {
                    if m.lease_expires_ns.is_none_or(|e| e > now) {
                        return None;
                    }
                    let state = m.state.next(CommandEvent::LeaseExpired)?;
                    let next = Meta {
                        state,
                        attempt: m.attempt + 1,
                        lease_id: None,
                        lease_expires_ns: None,
                        ..m.clone()
                    };
                    let mut writes = lease_cleanup(m);
                    writes.push(queue_entry(&next));
                    Some((next, writes))
                })
                .await
            {
                Ok(r) => r,
                Err(CommandError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if let Some(meta) = redelivered {
                self.wake(&meta);
                count("redelivered");
                moved += 1;
            } else {
                self.kv.delete(&key, None).await?;
            }
        }
        Ok(moved)
    }

    /// Runs [`reap`](Self::reap) every `every` until the task is aborted.
    pub fn spawn_reaper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(err) = engine.reap().await {
                    tracing::warn!(error = %err, "command reaper pass failed");
                }
                if let Err(err) = engine.forget_ended().await {
                    tracing::warn!(error = %err, "command retention pass failed");
                }
            }
        })
    }
}
