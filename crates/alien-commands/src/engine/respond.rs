//! Responses: the signed response URL's token and the receiver's response ending a command.

use super::*;

impl CommandEngine {
    /// Whether a presigned response URL's token is valid for command `id`.
    pub fn verify_response_token(&self, id: &str, token: &str, expires: u64) -> bool {
        self.signer.verify_until(
            SystemTime::now(),
            expires,
            token,
            &format!("commands.v1:{id}:{expires}"),
        )
    }

    /// Checks a receiver's response on its own: an inline body is base64 of at most
    /// [`MAX_INLINE_RESPONSE`] bytes. What [`Self::respond`] refuses before it reads any store (a
    /// stored body's size is checked there).
    pub fn check_response(response: &CommandResponse) -> Result<(), CommandError> {
        if let CommandResponse::Success { response: BodySpec::Inline { inline_base64 } } = response
        {
            let len = base64::engine::general_purpose::STANDARD
                .decode(inline_base64)
                .map_err(|e| CommandError::Invalid {
                    field: "response.inlineBase64",
                    message: format!("not base64: {e}"),
                })?
                .len() as u64;
            if len > MAX_INLINE_RESPONSE {
                return Err(CommandError::Invalid {
                    field: "response",
                    message: format!(
                        "inline responses are limited to {MAX_INLINE_RESPONSE} bytes; upload it (storageUploadRequest)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Records a receiver's response (`PUT /v1/commands/{id}/response`). A response for a
    /// command that already ended is ignored: the first one is kept.
    #[tracing::instrument(name = "command.respond", skip_all, fields(command = %id))]
    pub async fn respond(
        &self,
        id: &str,
        response: CommandResponse,
    ) -> Result<CommandState, CommandError> {
        Self::check_response(&response)?;
        if let CommandResponse::Success { response: BodySpec::Storage { size, .. } } = &response {
            let stored = self.payloads.size(&response_payload(id)).await?;
            if stored != Some(*size) {
                return Err(CommandError::Invalid {
                    field: "response.size",
                    message: format!(
                        "the uploaded response holds {} bytes, not {size}",
                        stored.map_or("no".into(), |s| s.to_string())
                    ),
                });
            }
            // Uploaded through the manager, it is charged already; straight to a cloud store,
            // it is charged now.
            self.charge_response(id, *size).await?;
        }
        let event = match response {
            CommandResponse::Success { .. } => CommandEvent::Succeed,
            CommandResponse::Error { .. } => CommandEvent::Fail,
        };
        let stored = StoredResponse { response };
        let now = now_ns();
        let done = self
            .update(id, |m| {
                // Past its deadline the command is EXPIRED, whatever answer comes (below).
                if m.deadline_ns.is_some_and(|d| d <= now) {
                    return None;
                }
                let state = m.state.next(event)?;
                let next = Meta {
                    state,
                    response: Some(stored.clone()),
                    completed_ns: Some(now_ns()),
                    ..m.clone()
                };
                Some((next, lease_cleanup(m)))
            })
            .await?;
        match done {
            Some(meta) => {
                count(if meta.state == CommandState::Succeeded { "succeeded" } else { "failed" });
                observe_done(&meta);
                Ok(meta.state)
            }
            None => {
                let (meta, _) = self
                    .read_meta(id)
                    .await?
                    .ok_or_else(|| CommandError::NotFound(id.to_owned()))?;
                if meta.state.is_terminal() {
                    count("duplicate_response");
                    Ok(meta.state)
                } else if meta.deadline_ns.is_some_and(|d| d <= now) {
                    // A response after the deadline: the command expires (as the reaper or a
                    // read would have made it); the late answer is ignored, like a second one.
                    count("late_response");
                    match self.expire(id).await? {
                        Some(expired) => Ok(expired.state),
                        None => Ok(self
                            .read_meta(id)
                            .await?
                            .ok_or_else(|| CommandError::NotFound(id.to_owned()))?
                            .0
                            .state),
                    }
                } else {
                    Err(CommandError::Conflict(format!(
                        "command {id} is {} and cannot take a response",
                        meta.state
                    )))
                }
            }
        }
    }
}
