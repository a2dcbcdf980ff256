//! What commands keep, and for how long: the payload bytes a deployment stores (its quota) and
//! the retention of ended commands.
//!
//! Every payload byte the store holds for a command is charged to the command's deployment:
//! params stored outside the KV at creation (the declared size of an upload, reserved up front),
//! a response when it is uploaded through the manager or recorded from a cloud store. The charge
//! lives in the command's metadata and the sum in `usage:{deployment}`; both change in one
//! versioned batch, so a crash never leaves them apart. A charge that would take the sum past
//! the quota is refused ([`CommandError::QuotaExceeded`]) and nothing of it is kept.
//!
//! An ended command gets `done:{nanos}:{id}`; the reaper forgets it `retention` later: its
//! payloads, its metadata, and its charge.

use super::*;

/// Payload bytes a deployment may store by default: `[commands] deployment-quota-bytes`.
pub const DEFAULT_DEPLOYMENT_QUOTA_BYTES: u64 = 1024 * 1024 * 1024;
/// How long ended commands (and their payloads) are kept by default: `[commands] retention-secs`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

fn usage_key(deployment: &str) -> String {
    format!("usage:{deployment}")
}

/// The key that marks a command ended at `ns`, for the retention pass.
pub(super) fn done_entry(ns: u128, id: &str) -> KvWrite {
    KvWrite::put(format!("done:{ns:030}:{id}"), Vec::new())
}

/// Payload bytes a command holds against its deployment's quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Charged {
    /// Its params in the payload store (the declared size while they are being uploaded).
    pub params: u64,
    /// Its uploaded response.
    pub response: u64,
}

impl Charged {
    fn total(self) -> u64 {
        self.params.saturating_add(self.response)
    }
}

/// A deployment's stored bytes as read, and the versioned write that changes them.
pub(super) struct Usage {
    key: String,
    /// The bytes.
    pub bytes: u64,
    version: Option<u64>,
}

impl Usage {
    /// The write setting the usage to `bytes`, valid only if nobody changed it since the read.
    /// A usage back at zero is deleted (a deployment that stores nothing leaves no key behind);
    /// none is written when it was zero and stays so.
    pub fn set(&self, bytes: u64) -> Option<KvWrite> {
        match (bytes, self.version) {
            (0, Some(version)) => {
                Some(KvWrite::Delete { key: self.key.clone(), version: Some(version) })
            }
            (0, None) => None,
            (bytes, version) => Some(KvWrite::Put {
                key: self.key.clone(),
                value: bytes.to_string().into_bytes(),
                condition: match version {
                    Some(version) => PutCondition::IfVersion(version),
                    None => PutCondition::IfAbsent,
                },
                ttl: None,
            }),
        }
    }
}

impl CommandEngine {
    /// Deployments may store at most `bytes` of command payloads
    /// ([`DEFAULT_DEPLOYMENT_QUOTA_BYTES`] unless set).
    #[must_use]
    pub fn with_deployment_quota_bytes(mut self, bytes: u64) -> Self {
        self.quota_bytes = bytes;
        self
    }

    /// Ended commands are forgotten `retention` after they end ([`DEFAULT_RETENTION`] unless set).
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    pub(super) async fn usage(&self, deployment: &str) -> Result<Usage, CommandError> {
        let key = usage_key(deployment);
        match self.kv.get(&key).await? {
            Some(entry) => {
                let bytes = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| {
                        CommandError::Unavailable(format!("corrupt usage of {deployment}"))
                    })?;
                Ok(Usage { key, bytes, version: Some(entry.version) })
            }
            None => Ok(Usage { key, bytes: 0, version: None }),
        }
    }

    /// Payload bytes deployment `deployment` stores now.
    pub async fn stored_bytes(&self, deployment: &str) -> Result<u64, CommandError> {
        Ok(self.usage(deployment).await?.bytes)
    }

    /// The refusal of `adding` bytes to a deployment storing `used`.
    pub(super) fn over_quota(&self, deployment: &str, used: u64, adding: u64) -> CommandError {
        CommandError::QuotaExceeded {
            deployment: deployment.to_owned(),
            used,
            adding,
            quota: self.quota_bytes,
        }
    }

    /// Room left in `deployment`'s quota for a payload replacing `replacing` charged bytes.
    pub(super) async fn room(&self, deployment: &str, replacing: u64) -> Result<u64, CommandError> {
        let used = self.usage(deployment).await?.bytes.saturating_sub(replacing);
        Ok(self.quota_bytes.saturating_sub(used))
    }

    /// Sets command `id`'s charge to what `change` makes of it, with its deployment's usage, in
    /// one versioned batch; growth past the quota is refused and changes nothing.
    pub(super) async fn charge(
        &self,
        id: &str,
        change: impl Fn(Charged) -> Charged + Send,
    ) -> Result<(), CommandError> {
        for _ in 0..CAS_RETRIES {
            let (meta, version) =
                self.read_meta(id).await?.ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
            let charged = change(meta.charged);
            if charged == meta.charged {
                return Ok(());
            }
            let usage = self.usage(&meta.deployment_id).await?;
            let bytes =
                usage.bytes.saturating_sub(meta.charged.total()).saturating_add(charged.total());
            if charged.total() > meta.charged.total() && bytes > self.quota_bytes {
                let adding = charged.total() - meta.charged.total();
                return Err(self.over_quota(&meta.deployment_id, usage.bytes, adding));
            }
            let next = Meta { charged, ..meta };
            let mut writes = vec![KvWrite::Put {
                key: meta_key(id),
                value: encode(&next)?,
                condition: PutCondition::IfVersion(version),
                ttl: None,
            }];
            writes.extend(usage.set(bytes));
            if let BatchOutcome::Applied(versions) = self.kv.write_batch(writes).await? {
                self.recent.remember(&next, versions.first().copied().flatten());
                return Ok(());
            }
        }
        Err(CommandError::Conflict(format!("command {id} is changing too often; retry")))
    }

    /// Charges a response payload of `size` bytes now in the store to command `id`; over the
    /// quota, the payload is deleted (nothing of it is kept) and the refusal returned.
    pub(super) async fn charge_response(&self, id: &str, size: u64) -> Result<(), CommandError> {
        match self.charge(id, |c| Charged { response: size, ..c }).await {
            Err(refused @ CommandError::QuotaExceeded { .. }) => {
                self.payloads.delete(&response_payload(id)).await?;
                self.charge(id, |c| Charged { response: 0, ..c }).await?;
                Err(refused)
            }
            other => other,
        }
    }

    /// Forgets ended command `id`: its payloads, then its metadata with its charge.
    async fn forget(&self, id: &str) -> Result<(), CommandError> {
        for _ in 0..CAS_RETRIES {
            let Some((meta, version)) = self.read_meta(id).await? else { return Ok(()) };
            if !meta.state.is_terminal() {
                return Ok(());
            }
            // Payloads first: a crash in between leaves a command without payloads, which the
            // next pass forgets.
            if matches!(meta.params, ParamsAt::Payload { .. }) {
                self.payloads.delete(&params_payload(id)).await?;
            }
            self.payloads.delete(&response_payload(id)).await?;
            let mut writes = vec![
                KvWrite::Delete { key: meta_key(id), version: Some(version) },
                KvWrite::delete(format!("cmd:{id}:params")),
            ];
            if meta.charged.total() > 0 {
                let usage = self.usage(&meta.deployment_id).await?;
                writes.extend(usage.set(usage.bytes.saturating_sub(meta.charged.total())));
            }
            if let BatchOutcome::Applied(_) = self.kv.write_batch(writes).await? {
                self.recent.remember(&meta, None);
                count("forgotten");
                return Ok(());
            }
        }
        Err(CommandError::Conflict(format!("command {id} is changing too often; retry")))
    }

    /// Forgets the commands that ended `retention` ago or more (a pass of the reaper); how many.
    pub async fn forget_ended(&self) -> Result<u64, CommandError> {
        let cutoff = now_ns().saturating_sub(self.retention.as_nanos());
        let mut forgotten = 0;
        for (key, id) in self.due("done:", cutoff).await? {
            self.forget(&id).await?;
            self.kv.delete(&key, None).await?;
            forgotten += 1;
        }
        Ok(forgotten)
    }
}
