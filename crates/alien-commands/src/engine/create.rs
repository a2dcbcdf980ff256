//! Creating commands: request checks, idempotent creation in one KV batch, parameter uploads.

use super::*;

impl CommandEngine {
    /// The deadline (ns) and decoded inline parameters of a create request, or why it is refused.
    #[allow(clippy::type_complexity)]
    pub(super) fn validate_create(
        request: &CreateCommandRequest,
    ) -> Result<(Option<u128>, Option<(String, Vec<u8>)>), CommandError> {
        if request.command.is_empty()
            || request.command.contains(':')
            || request.command.chars().count() > 256
        {
            return Err(CommandError::Invalid {
                field: "command",
                message: "must be 1..=256 characters without ':'".into(),
            });
        }
        let deadline_ns = match &request.deadline {
            Some(text) => {
                let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
                    CommandError::Invalid {
                        field: "deadline",
                        message: format!("expected RFC 3339: {e}"),
                    }
                })?;
                // A deadline that has passed already makes the command expired at once.
                Some(u128::try_from(t.timestamp_nanos_opt().unwrap_or(i64::MAX)).unwrap_or(0))
            }
            None => None,
        };
        let inline = match &request.params {
            BodySpec::Inline { inline_base64 } => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(inline_base64)
                    .map_err(|e| CommandError::Invalid {
                        field: "params.inlineBase64",
                        message: format!("not base64: {e}"),
                    })?;
                if decoded.len() as u64 > MAX_INLINE_PARAMS {
                    return Err(CommandError::TooLarge(decoded.len() as u64));
                }
                Some((inline_base64.clone(), decoded))
            }
            BodySpec::Storage { .. } => None,
        };
        Ok((deadline_ns, inline))
    }

    /// Checks a create request on its own (name, deadline, parameters): what [`Self::create`]
    /// refuses before it looks at the target, so callers can refuse bad input first.
    pub fn check_create(request: &CreateCommandRequest) -> Result<(), CommandError> {
        Self::validate_create(request).map(drop)
    }

    /// Creates a command (`POST /v1/commands`) for `target`, the container the caller resolved
    /// (`alien_core::command::command_target`).
    #[tracing::instrument(name = "command.create", skip_all, fields(deployment = %request.deployment_id, command = %request.command))]
    pub async fn create(
        &self,
        request: CreateCommandRequest,
        target: CommandTarget,
    ) -> Result<CreateCommandResponse, CommandError> {
        let (deadline_ns, inline) = Self::validate_create(&request)?;
        let declared = match &request.params {
            BodySpec::Storage { size, .. } if *size > self.max_payload_bytes => {
                return Err(CommandError::PayloadTooLarge {
                    what: format!("params of {size} bytes"),
                    max: self.max_payload_bytes,
                });
            }
            BodySpec::Storage { size, .. } => *size,
            BodySpec::Inline { .. } => 0,
        };
        let id = Id::new(IdKind::Command).to_string();
        let idempotency = if let Some(key) = &request.idempotency_key {
            let hash = hex::encode(sha2::Sha256::digest(
                format!(
                    "{}\n{}\n{}\n{key}",
                    request.deployment_id, target.resource_id, request.command
                )
                .as_bytes(),
            ));
            let idem = format!("idem:{hash}");
            if let Some(replayed) = self.replay(&idem).await? {
                return Ok(replayed);
            }
            Some(idem)
        } else {
            None
        };
        let mut writes = Vec::new();
        if let Some(idem) = &idempotency {
            writes.push(KvWrite::Put {
                key: idem.clone(),
                value: id.as_bytes().to_vec(),
                condition: PutCondition::IfAbsent,
                ttl: Some(IDEMPOTENCY_TTL),
            });
        }
        let (params, state, upload) = match inline {
            Some((b64, _)) if b64.len() <= META_INLINE_LIMIT => {
                (ParamsAt::Meta { base64: b64 }, CommandState::Pending, None)
            }
            Some((b64, _)) if b64.len() <= KV_INLINE_LIMIT => {
                writes.push(KvWrite::put(format!("cmd:{id}:params"), b64.into_bytes()));
                (ParamsAt::Kv, CommandState::Pending, None)
            }
            Some((_, decoded)) => {
                let size = decoded.len() as u64;
                let room = self.room(&request.deployment_id, 0).await?;
                if size > room {
                    let used = self.quota_bytes.saturating_sub(room);
                    return Err(self.over_quota(&request.deployment_id, used, size));
                }
                let body =
                    futures_util::stream::once(async move { Ok(bytes::Bytes::from(decoded)) });
                self.payloads.write(&params_payload(&id), Box::pin(body)).await?;
                (ParamsAt::Payload { size }, CommandState::Pending, None)
            }
            None => {
                let put = self.payloads.presign_put(&params_payload(&id), UPLOAD_URL_TTL).await?;
                let expires_at = put.expiration.clone();
                (
                    // The declared size: the upload may hold that much and no more.
                    ParamsAt::Payload { size: declared },
                    CommandState::PendingUpload,
                    Some(StorageUpload { put_request: put, expires_at }),
                )
            }
        };
        let now = now_ns();
        // A deadline that passed already: the command is created expired and never delivered.
        let born_expired = deadline_ns.is_some_and(|d| d <= now);
        let charge = match params {
            // Params that will never be uploaded take no room.
            ParamsAt::Payload { .. } if born_expired && upload.is_some() => 0,
            ParamsAt::Payload { size } => size,
            ParamsAt::Meta { .. } | ParamsAt::Kv => 0,
        };
        let (state, upload) =
            if born_expired { (CommandState::Expired, None) } else { (state, upload) };
        let meta = Meta {
            id: id.clone(),
            deployment_id: request.deployment_id.clone(),
            target,
            command: request.command,
            state,
            attempt: 1,
            deadline_ns,
            params,
            response: None,
            created_ns: now,
            completed_ns: born_expired.then_some(now),
            lease_id: None,
            lease_expires_ns: None,
            charged: Charged { params: charge, response: 0 },
        };
        writes.push(KvWrite::Put {
            key: meta_key(&id),
            value: encode(&meta)?,
            condition: PutCondition::IfAbsent,
            ttl: None,
        });
        let meta_index = writes.len() - 1;
        match deadline_ns {
            _ if born_expired => writes.push(done_entry(now, &id)),
            Some(deadline) => {
                writes.push(KvWrite::put(format!("deadline:{deadline:030}:{id}"), Vec::new()));
            }
            None => {}
        }
        if state == CommandState::Pending {
            writes.push(queue_entry(&meta));
        }
        // One atomic batch: a crash leaves either the whole command (queued) or nothing. Params
        // in the payload store are charged to the deployment's quota in it.
        let created = self.create_batch(&id, writes, meta_index, &meta, charge).await;
        if !matches!(created, Ok(true)) {
            // Nothing of a command that was not created is kept.
            if matches!(meta.params, ParamsAt::Payload { .. }) {
                self.payloads.delete(&params_payload(&id)).await?;
            }
            created?;
            // Another create with the same idempotency key won the race.
            if let Some(idem) = &idempotency
                && let Some(replayed) = self.replay(idem).await?
            {
                return Ok(replayed);
            }
            return Err(CommandError::Conflict(format!(
                "command {id} could not be created; retry"
            )));
        }
        if state == CommandState::Pending {
            self.wake(&meta);
        }
        count("created");
        Ok(CreateCommandResponse {
            command_id: id,
            state,
            next: if upload.is_some() { NextStep::Upload } else { NextStep::Poll },
            storage_upload: upload,
            inline_allowed_up_to: MAX_INLINE_PARAMS,
        })
    }

    /// Writes a new command's batch, with the deployment's usage grown by `charge` when it has
    /// one (retried while only the usage moved); `false` when another condition failed (an
    /// idempotency key taken meanwhile).
    async fn create_batch(
        &self,
        id: &str,
        writes: Vec<KvWrite>,
        meta_index: usize,
        meta: &Meta,
        charge: u64,
    ) -> Result<bool, CommandError> {
        for _ in 0..CAS_RETRIES {
            let mut batch = writes.clone();
            if charge > 0 {
                let usage = self.usage(&meta.deployment_id).await?;
                let bytes = usage.bytes.saturating_add(charge);
                if bytes > self.quota_bytes {
                    return Err(self.over_quota(&meta.deployment_id, usage.bytes, charge));
                }
                batch.extend(usage.set(bytes));
            }
            match self.kv.write_batch(batch).await? {
                BatchOutcome::Applied(versions) => {
                    self.recent.remember(meta, versions.get(meta_index).copied().flatten());
                    return Ok(true);
                }
                BatchOutcome::ConditionFailed(failed) if failed == writes.len() => continue,
                BatchOutcome::ConditionFailed(_) => return Ok(false),
            }
        }
        Err(CommandError::Conflict(format!("command {id} could not be created; retry")))
    }

    /// The command an idempotency key already created, as `create` answers it.
    pub(super) async fn replay(
        &self,
        idem: &str,
    ) -> Result<Option<CreateCommandResponse>, CommandError> {
        let Some(first) = self.kv.get(idem).await? else { return Ok(None) };
        let first = String::from_utf8_lossy(&first.value).into_owned();
        let Some((meta, _)) = self.read_meta(&first).await? else { return Ok(None) };
        count("replayed");
        Ok(Some(CreateCommandResponse {
            command_id: meta.id,
            state: meta.state,
            storage_upload: None,
            inline_allowed_up_to: MAX_INLINE_PARAMS,
            next: if meta.state == CommandState::PendingUpload {
                NextStep::Upload
            } else {
                NextStep::Poll
            },
        }))
    }

    /// Parameters were uploaded (`POST /v1/commands/{id}/upload-complete`).
    pub async fn upload_complete(&self, id: &str, size: u64) -> Result<CommandState, CommandError> {
        let stored = self.payloads.size(&params_payload(id)).await?;
        if stored != Some(size) {
            return Err(CommandError::Invalid {
                field: "size",
                message: format!(
                    "the upload holds {} bytes, not {size}",
                    stored.map_or("no".into(), |s| s.to_string())
                ),
            });
        }
        let moved = self
            .update(id, |m| {
                let state = m.state.next(CommandEvent::UploadComplete)?;
                let next = Meta { state, params: ParamsAt::Payload { size }, ..m.clone() };
                let queued = queue_entry(&next);
                Some((next, vec![queued]))
            })
            .await?;
        match moved {
            Some(meta) => {
                self.wake(&meta);
                Ok(meta.state)
            }
            None => {
                let (meta, _) = self
                    .read_meta(id)
                    .await?
                    .ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
                if meta.state == CommandState::PendingUpload {
                    Err(CommandError::Conflict(format!("command {id} cannot complete its upload")))
                } else {
                    Err(CommandError::Conflict(format!(
                        "command {id} is {}, not PENDING_UPLOAD",
                        meta.state
                    )))
                }
            }
        }
    }

    /// A command's parameters as bytes (admin `GET /v1/commands/{id}/payload`).
    pub async fn params(&self, id: &str) -> Result<crate::payload::PayloadStream, CommandError> {
        let (meta, _) =
            self.read_meta(id).await?.ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
        match meta.params {
            ParamsAt::Meta { .. } | ParamsAt::Kv => {
                let b64 = match meta.params {
                    ParamsAt::Meta { base64 } => base64.into_bytes(),
                    _ => {
                        let stored = self.kv.get(&format!("cmd:{id}:params")).await?;
                        stored.map(|e| e.value).unwrap_or_default()
                    }
                };
                let bytes =
                    base64::engine::general_purpose::STANDARD.decode(&b64).map_err(|e| {
                        CommandError::Unavailable(format!("corrupt params of {id}: {e}"))
                    })?;
                Ok(Box::pin(futures_util::stream::once(
                    async move { Ok(bytes::Bytes::from(bytes)) },
                )))
            }
            ParamsAt::Payload { .. } => Ok(self.payloads.read(&params_payload(id)).await?),
        }
    }

    /// Uploads the parameters of a `PENDING_UPLOAD` command directly (admin
    /// `PUT /v1/commands/{id}/payload`); `upload-complete` follows as with a presigned upload.
    pub async fn put_params(
        &self,
        id: &str,
        body: crate::payload::PayloadStream,
    ) -> Result<u64, CommandError> {
        let (meta, _) =
            self.read_meta(id).await?.ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
        if meta.state != CommandState::PendingUpload {
            return Err(CommandError::Conflict(format!(
                "command {id} is {}, not PENDING_UPLOAD",
                meta.state
            )));
        }
        let declared = match meta.params {
            ParamsAt::Payload { size } => size,
            ParamsAt::Meta { .. } | ParamsAt::Kv => 0,
        };
        let what = "the params (their declared size)";
        self.write_limited(&params_payload(id), what, body, declared).await
    }
}
