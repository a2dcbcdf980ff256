//! Leasing: the long poll over a target's queue, claiming a command with a versioned write, the
//! envelope a receiver gets, and releasing a lease.

use super::*;

impl CommandEngine {
    /// Leases commands for a receiver (`POST /v1/commands/leases`), waiting up to `waitSeconds`.
    #[tracing::instrument(name = "command.lease", skip_all, fields(deployment = %request.deployment_id, resource = %request.target.resource_id))]
    pub async fn lease(&self, request: &LeaseRequest) -> Result<LeaseResponse, CommandError> {
        let LeaseBounds { max, lease_seconds, wait } = Self::check_lease(request)?;
        let until = tokio::time::Instant::now() + wait;
        let waker = self.waker(&request.deployment_id, &request.target.resource_id);
        loop {
            // Register interest before looking, so a command enqueued meanwhile wakes us.
            let notified = waker.notified();
            tokio::pin!(notified);
            // Registered now, so a command enqueued while we look wakes this poll.
            notified.as_mut().enable();
            let leases = self.try_lease(request, max, lease_seconds).await?;
            let now = tokio::time::Instant::now();
            if !leases.is_empty() || now >= until {
                return Ok(LeaseResponse { leases });
            }
            let _ = tokio::time::timeout((until - now).min(POLL_EVERY), notified).await;
        }
    }

    /// The bounds of a lease request with their defaults, or which one is out of range: what
    /// [`Self::lease`] refuses before it looks at the queue.
    pub fn check_lease(request: &LeaseRequest) -> Result<LeaseBounds, CommandError> {
        if !alien_core::stack::is_dns_label(&request.target.resource_id) {
            return Err(CommandError::Invalid {
                field: "target.resourceId",
                message: "must be a container's resource id: a DNS label of [a-z0-9-]".into(),
            });
        }
        let max = request.max_leases.unwrap_or(1);
        if !(1..=100).contains(&max) {
            return Err(CommandError::Invalid {
                field: "maxLeases",
                message: "must be 1..=100".into(),
            });
        }
        let lease_seconds = request.lease_seconds.unwrap_or(60);
        if !(1..=3600).contains(&lease_seconds) {
            return Err(CommandError::Invalid {
                field: "leaseSeconds",
                message: "must be 1..=3600".into(),
            });
        }
        let wait = Duration::from_secs(request.wait_seconds.unwrap_or(0));
        if wait > MAX_WAIT {
            return Err(CommandError::Invalid {
                field: "waitSeconds",
                message: "must be 0..=30".into(),
            });
        }
        Ok(LeaseBounds { max, lease_seconds, wait })
    }

    pub(super) async fn try_lease(
        &self,
        request: &LeaseRequest,
        max: u32,
        lease_seconds: u64,
    ) -> Result<Vec<Lease>, CommandError> {
        let prefix = pending_prefix(&request.deployment_id, &request.target.resource_id);
        let mut leases = Vec::new();
        let mut after: Option<String> = None;
        while leases.len() < max as usize {
            let batch = self.kv.scan(&prefix, after.as_deref(), (max as usize * 2).max(8)).await?;
            if batch.is_empty() {
                break;
            }
            after = batch.last().map(|e| e.key.clone());
            // Claim up to the missing number of entries, then lease them concurrently: their
            // writes share the KV's group commits instead of queueing one after another.
            let mut claimed = Vec::new();
            for entry in batch {
                if leases.len() + claimed.len() >= max as usize {
                    break;
                }
                let Some(id) = entry.key.rsplit(':').next().map(str::to_owned) else { continue };
                // Another poll of this replica is claiming it: skip instead of racing.
                if let Some(claim) = Claim::take(&self.claiming, &id) {
                    claimed.push((entry.key, claim));
                }
            }
            let attempts =
                claimed.iter().map(|(key, claim)| self.lease_one(key, &claim.id, lease_seconds));
            for leased in futures_util::future::join_all(attempts).await {
                leases.extend(leased?);
            }
        }
        Ok(leases)
    }

    /// Leases the command behind queue entry `key`, if it is still leasable.
    pub(super) async fn lease_one(
        &self,
        key: &str,
        id: &str,
        lease_seconds: u64,
    ) -> Result<Option<Lease>, CommandError> {
        let lease_id = format!("lease_{id}.{}", uuid::Uuid::new_v4().simple());
        let expires_ns = now_ns() + u128::from(lease_seconds) * 1_000_000_000;
        let mut seen = None;
        let mut past_deadline = false;
        let leased = match self
            .update(id, |m| {
                seen = Some(m.state);
                // Past its deadline a command is never delivered: it expires (below).
                past_deadline = m.deadline_ns.is_some_and(|d| d <= now_ns());
                if past_deadline {
                    return None;
                }
                let state = m.state.next(CommandEvent::Lease)?;
                let writes = vec![
                    // Leased by us: the entry leaves the queue with the same write.
                    KvWrite::delete(key),
                    KvWrite::put(format!("leased:{expires_ns:030}:{}", m.id), Vec::new()),
                ];
                let next = Meta {
                    state,
                    lease_id: Some(lease_id.clone()),
                    lease_expires_ns: Some(expires_ns),
                    ..m.clone()
                };
                Some((next, writes))
            })
            .await
        {
            Ok(leased) => leased,
            Err(CommandError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // Gone for good (ended, or waiting for an upload): the stale entry leaves the queue.
        // Leased by another receiver: that receiver removed it.
        if leased.is_none() && seen != Some(CommandState::Dispatched) {
            if past_deadline {
                self.expire(id).await?;
            }
            self.kv.delete(key, None).await?;
        }
        let Some(meta) = leased else { return Ok(None) };
        count("leased");
        Ok(Some(Lease {
            lease_id,
            lease_expires_at: rfc3339(expires_ns),
            command_id: meta.id.clone(),
            attempt: meta.attempt,
            envelope: self.envelope(&meta).await?,
        }))
    }

    pub(super) async fn envelope(&self, meta: &Meta) -> Result<Envelope, CommandError> {
        let params = match &meta.params {
            ParamsAt::Meta { base64 } => BodySpec::Inline { inline_base64: base64.clone() },
            ParamsAt::Kv => {
                let stored = self.kv.get(&format!("cmd:{}:params", meta.id)).await?;
                BodySpec::Inline {
                    inline_base64: stored
                        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
                        .unwrap_or_default(),
                }
            }
            ParamsAt::Payload { size } => BodySpec::Storage {
                size: *size,
                storage_get_request: Some(
                    self.payloads.presign_get(&params_payload(&meta.id), UPLOAD_URL_TTL).await?,
                ),
                storage_put_used: None,
            },
        };
        let (expires, token) = self.signer.sign_until(SystemTime::now(), RESPONSE_URL_TTL, |e| {
            format!("commands.v1:{}:{e}", meta.id)
        });
        Ok(Envelope {
            protocol: PROTOCOL.to_owned(),
            deployment_id: meta.deployment_id.clone(),
            target: meta.target.clone(),
            command_id: meta.id.clone(),
            attempt: meta.attempt,
            deadline: meta.deadline_ns.map(rfc3339),
            command: meta.command.clone(),
            params,
            response_handling: ResponseHandling {
                max_inline_bytes: MAX_INLINE_RESPONSE,
                submit_response_url: format!(
                    "{}/v1/commands/{}/response?response_token={token}&expires={expires}",
                    self.base_url, meta.id
                ),
                storage_upload_request: self
                    .payloads
                    .presign_put(&response_payload(&meta.id), RESPONSE_URL_TTL)
                    .await?,
            },
        })
    }

    /// The command a lease is for (for authorization), if the lease is held: lease ids are
    /// `lease_{commandId}.{random}`, and the command must still hold exactly that lease.
    pub async fn command_of_lease(&self, lease_id: &str) -> Result<Option<String>, CommandError> {
        let Some((id, _)) = lease_id.strip_prefix("lease_").and_then(|l| l.split_once('.')) else {
            return Ok(None);
        };
        Ok(self
            .read_meta(id)
            .await?
            .filter(|(meta, _)| meta.lease_id.as_deref() == Some(lease_id))
            .map(|(meta, _)| meta.id))
    }

    /// Gives a leased command back (`POST /v1/commands/leases/{leaseId}/release`).
    pub async fn release(&self, lease_id: &str) -> Result<(), CommandError> {
        let id = self
            .command_of_lease(lease_id)
            .await?
            .ok_or_else(|| CommandError::LeaseNotFound(lease_id.to_owned()))?;
        let released = self
            .update(&id, |m| {
                if m.lease_id.as_deref() != Some(lease_id) {
                    return None;
                }
                let state = m.state.next(CommandEvent::Release)?;
                let next = Meta { state, lease_id: None, lease_expires_ns: None, ..m.clone() };
                let mut writes = lease_cleanup(m);
                writes.push(queue_entry(&next));
                Some((next, writes))
            })
            .await?;
        let meta = released.ok_or_else(|| CommandError::LeaseNotFound(lease_id.to_owned()))?;
        self.wake(&meta);
        count("released");
        Ok(())
    }
}
