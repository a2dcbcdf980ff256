//! Transitions: events and patches, conditional writes, deletion, secrets.

use super::*;

/// A transition applies the event and the patch, and records the change.
pub async fn transition_applies_event_and_patch(store: &dyn Store) {
    let g = group(store, "g", 10).await;
    let r1 = store.create_release(new_release(&[Platform::Local], "v1")).await.unwrap().release;
    let d = deployment(store, &g.id, "web", Platform::Local).await;
    let heartbeat = Utc::now();
    let error = DeploymentError {
        code: "IMAGE_PULL".into(),
        message: "no such image".into(),
        resource_id: Some("api".into()),
    };

    let provisioning =
        store.transition(&d.id, DeploymentEvent::BeginProvisioning, patch("step")).await.unwrap();
    assert_eq!(provisioning.status, DeploymentStatus::Provisioning);
    assert!(provisioning.updated_at >= d.updated_at);
    let failed = store
        .transition(
            &d.id,
            DeploymentEvent::StepFailed,
            DeploymentPatch {
                error: Some(Some(error.clone())),
                stack_state: Some(json!({"api": {"replicas": 0}})),
                reason: "step".into(),
                detail: Some(json!({"attempt": 1})),
                ..DeploymentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, DeploymentStatus::ProvisioningFailed);
    assert_eq!(failed.error.as_ref(), Some(&error));
    assert_eq!(failed.stack_state, Some(json!({"api": {"replicas": 0}})));

    let retried = store
        .transition(
            &d.id,
            DeploymentEvent::Retry,
            DeploymentPatch { retry_requested: Some(true), ..patch("retry") },
        )
        .await
        .unwrap();
    assert_eq!(retried.status, DeploymentStatus::Provisioning);
    assert!(retried.retry_requested);
    assert_eq!(retried.error.as_ref(), Some(&error), "an unset patch field is left alone");

    let running = store
        .transition(
            &d.id,
            DeploymentEvent::StepSucceeded,
            DeploymentPatch {
                current_release_id: Some(r1.id.clone()),
                error: Some(None),
                retry_requested: Some(false),
                last_heartbeat_at: Some(heartbeat),
                ..patch("step")
            },
        )
        .await
        .unwrap();
    assert_eq!(running.status, DeploymentStatus::Running);
    assert_eq!(running.current_release_id.as_ref(), Some(&r1.id));
    assert_eq!(running.desired_release_id.as_ref(), Some(&r1.id));
    assert_eq!(running.error, None);
    assert!(!running.retry_requested);
    assert_eq!(running.last_heartbeat_at, Some(millis(heartbeat)));
    assert_eq!(running.stack_state, Some(json!({"api": {"replicas": 0}})));
    assert_eq!(store.get_deployment(&d.id).await.unwrap().as_ref(), Some(&running));

    let events = store.deployment_events(&d.id, 50).await.unwrap();
    let steps: Vec<_> = events.iter().map(|e| (e.from, e.to, e.reason.as_str())).collect();
    use DeploymentStatus as S;
    assert_eq!(
        steps,
        [
            (Some(S::Provisioning), S::Running, "step"),
            (Some(S::ProvisioningFailed), S::Provisioning, "retry"),
            (Some(S::Provisioning), S::ProvisioningFailed, "step"),
            (Some(S::Pending), S::Provisioning, "step"),
            (None, S::Pending, "created"),
        ]
    );
    assert_eq!(events[2].detail, Some(json!({"attempt": 1})));
    assert_eq!(store.deployment_events(&d.id, 2).await.unwrap(), events[..2]);

    // A heartbeat that changes nothing is not an event.
    store
        .transition(
            &d.id,
            DeploymentEvent::RefreshHealthy,
            DeploymentPatch { last_heartbeat_at: Some(Utc::now()), ..patch("refresh") },
        )
        .await
        .unwrap();
    assert_eq!(store.deployment_events(&d.id, 50).await.unwrap().len(), events.len());

    let missing = Id::new(IdKind::Deployment);
    let err = store.transition(&missing, DeploymentEvent::Retry, patch("retry")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { entity: crate::Entity::Deployment, .. }),
        "{err}"
    );
}

/// Of concurrent callers applying the same event, exactly one wins.
pub async fn transition_is_conditional(store: &dyn Store) {
    let g = group(store, "g", 10).await;
    let d = deployment(store, &g.id, "web", Platform::Local).await;
    let go = || store.transition(&d.id, DeploymentEvent::BeginProvisioning, patch("step"));
    let (a, b, c, e) = tokio::join!(go(), go(), go(), go());
    let results = [a, b, c, e];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    for result in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(result, StoreError::InvalidTransition(_) | StoreError::Conflict(_)),
            "{result}"
        );
    }
    let after = store.get_deployment(&d.id).await.unwrap().unwrap();
    assert_eq!(after.status, DeploymentStatus::Provisioning);
    assert_eq!(store.deployment_events(&d.id, 50).await.unwrap().len(), 2);
}

/// An event the status refuses is an error and changes nothing.
pub async fn invalid_transition_writes_nothing(store: &dyn Store) {
    let g = group(store, "g", 10).await;
    let d = deployment(store, &g.id, "web", Platform::Local).await;
    let running = drive_to(store, &d.id, DeploymentStatus::Running).await;
    let events = store.deployment_events(&d.id, 50).await.unwrap();
    let err = store
        .transition(
            &d.id,
            DeploymentEvent::Retry,
            DeploymentPatch {
                error: Some(Some(DeploymentError {
                    code: "X".into(),
                    message: "x".into(),
                    resource_id: None,
                })),
                retry_requested: Some(true),
                ..patch("retry")
            },
        )
        .await
        .unwrap_err();
    let StoreError::InvalidTransition(refused) = &err else { panic!("{err}") };
    assert_eq!((refused.from, refused.event), (DeploymentStatus::Running, DeploymentEvent::Retry));
    assert_eq!(store.get_deployment(&d.id).await.unwrap().as_ref(), Some(&running));
    assert_eq!(store.deployment_events(&d.id, 50).await.unwrap(), events);
}

/// Deleting removes the deployment with its variables and events and revokes its tokens.
pub async fn delete_revokes_tokens(store: &dyn Store) {
    let g = group(store, "g", 10).await;
    let mut new = new_deployment(&g.id, "web", Platform::Local);
    new.environment_variables = vec![EnvironmentVariable {
        name: "K".into(),
        value: "v".into(),
        var_type: VariableType::Secret,
    }];
    let hash = new.token.raw.hash();
    let d = store.create_deployment(new.clone()).await.unwrap();
    let kept = deployment(store, &g.id, "other", Platform::Local).await;
    let mut extra = new_token(TokenType::Deployment);
    extra.deployment_id = Some(d.id.clone());
    extra.deployment_group_id = Some(g.id.clone());
    let extra = store.create_token(extra).await.unwrap();
    assert!(store.find_token(&hash, Utc::now()).await.unwrap().is_some());

    assert!(store.delete_deployment(&d.id).await.unwrap());
    assert_eq!(store.get_deployment(&d.id).await.unwrap(), None);
    assert_eq!(store.find_token(&hash, Utc::now()).await.unwrap(), None);
    assert_eq!(store.get_token(&new.token.id).await.unwrap(), None);
    assert_eq!(store.get_token(&extra.id).await.unwrap(), None);
    assert_eq!(store.deployment_token(&d.id).await.unwrap(), None);
    assert!(matches!(store.deployment_environment(&d.id).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.deployment_events(&d.id, 10).await, Err(StoreError::NotFound { .. })));
    assert!(!store.delete_deployment(&d.id).await.unwrap());
    assert!(matches!(
        store.transition(&d.id, DeploymentEvent::DeleteRequested, patch("delete")).await,
        Err(StoreError::NotFound { entity: crate::Entity::Deployment, .. })
    ));
    // The others are untouched and the name is free again.
    assert!(store.get_deployment(&kept.id).await.unwrap().is_some());
    assert_eq!(store.count_tokens(TokenType::Deployment).await.unwrap(), 1);
    deployment(store, &g.id, "web", Platform::Local).await;
}

/// A plain variable, a secret and an empty secret.
fn secret_variables() -> Vec<EnvironmentVariable> {
    let var = |name: &str, value: &str, var_type| EnvironmentVariable {
        name: name.into(),
        value: value.into(),
        var_type,
    };
    vec![
        var("LOG_LEVEL", "debug", VariableType::Plain),
        var("DB_PASSWORD", "hunter2-sekrit", VariableType::Secret),
        var("EMPTY", "", VariableType::Secret),
    ]
}

/// Secret values and the raw token come back unsealed only through the injection calls.
pub async fn secrets_are_returned_unsealed_to_injection_only(store: &dyn Store) {
    let g = group(store, "g", 10).await;
    let mut new = new_deployment(&g.id, "web", Platform::Local);
    new.environment_variables = secret_variables();
    let created = store.create_deployment(new.clone()).await.unwrap();
    assert_eq!(store.deployment_environment(&new.id).await.unwrap(), new.environment_variables);
    assert_eq!(store.deployment_token(&new.id).await.unwrap(), Some(new.token.raw.clone()));
    let raw = new.token.raw.expose().to_owned();
    for shown in [
        serde_json::to_string(&created).unwrap(),
        serde_json::to_string(&store.get_deployment(&new.id).await.unwrap()).unwrap(),
        serde_json::to_string(
            &store
                .list_deployments(&DeploymentFilter::default(), &PageRequest::default())
                .await
                .unwrap(),
        )
        .unwrap(),
        serde_json::to_string(&store.list_tokens().await.unwrap()).unwrap(),
        format!("{:?}", store.list_tokens().await.unwrap()),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(&raw[12..]), "{shown}");
    }
    let record = store.find_token(&new.token.raw.hash(), Utc::now()).await.unwrap().unwrap();
    assert_eq!(record.token_type, TokenType::Deployment);
    assert_eq!(record.deployment_id.as_ref(), Some(&new.id));
    assert_eq!(record.deployment_group_id.as_ref(), Some(&g.id));
    assert_eq!(record.key_prefix, new.token.raw.key_prefix());
    let none = deployment(store, &g.id, "bare", Platform::Local).await;
    assert!(store.deployment_environment(&none.id).await.unwrap().is_empty());
    let missing = Id::new(IdKind::Deployment);
    assert_eq!(store.deployment_token(&missing).await.unwrap(), None);
    assert!(matches!(
        store.deployment_environment(&missing).await,
        Err(StoreError::NotFound { entity: crate::Entity::Deployment, .. })
    ));
}

/// `deployment_inputs` gives in one read what the single reads give: the asked release, the
/// variables and token unsealed, the target; no release asked or an unknown one is `None`; an
/// unknown deployment is `NotFound`.
pub async fn deployment_inputs_match_the_single_reads(store: &dyn Store) {
    let g = group(store, "inputs", 10).await;
    let release = store.create_release(new_release(&[Platform::Aws], "v1")).await.unwrap().release;
    let mut new = new_deployment(&g.id, "web", Platform::Aws);
    new.environment_variables = secret_variables();
    let target =
        json!({"accountId": "123456789012", "roleArn": "arn:aws:iam::123456789012:role/r"});
    new.target = Some(target.clone());
    let created = store.create_deployment(new.clone()).await.unwrap();
    assert_eq!(created.desired_release_id.as_ref(), Some(&release.id));

    let inputs = store.deployment_inputs(&created.id, Some(&release.id)).await.unwrap();
    assert_eq!(inputs.release.as_ref(), Some(&release));
    assert_eq!(inputs.release, store.get_release(&release.id).await.unwrap());
    assert_eq!(inputs.variables, new.environment_variables);
    assert_eq!(inputs.variables, store.deployment_environment(&created.id).await.unwrap());
    assert_eq!(inputs.token.as_ref(), Some(&new.token.raw));
    assert_eq!(inputs.token, store.deployment_token(&created.id).await.unwrap());
    assert_eq!(inputs.target, Some(target));

    let bare = deployment(store, &g.id, "bare", Platform::Local).await;
    let inputs = store.deployment_inputs(&bare.id, None).await.unwrap();
    assert!(inputs.release.is_none() && inputs.variables.is_empty() && inputs.target.is_none());
    assert!(inputs.token.is_some());
    let unknown_release = Id::new(IdKind::Release);
    let inputs = store.deployment_inputs(&bare.id, Some(&unknown_release)).await.unwrap();
    assert!(inputs.release.is_none());

    let unknown = Id::new(IdKind::Deployment);
    assert!(matches!(
        store.deployment_inputs(&unknown, Some(&release.id)).await,
        Err(StoreError::NotFound { entity: crate::Entity::Deployment, .. })
    ));
}
