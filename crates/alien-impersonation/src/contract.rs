//! The contract suite of the [`Impersonator`] seam: one function per rule of the trait, each
//! taking any implementation, so the ambient impersonator and the STS, IAM Credentials and
//! managed-identity ones prove the same behaviour. A backend's tests call each function (or
//! [`run_all`]) from a `#[tokio::test]` with targets its peer (moto, a contract stub) accepts.
//!
//! The functions panic (through assertions) when the implementation breaks the contract. They read
//! the wall clock only to check that credentials are not expired; they never sleep.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;

use crate::credentials::Credentials;
use crate::impersonator::Impersonator;
use crate::target::ImpersonationTarget;

/// Calls made at once by [`concurrent_calls_agree`].
pub const CONCURRENT_CALLS: usize = 4;

/// The secrets `credentials` carry, for redaction checks.
fn secrets(credentials: &Credentials) -> Vec<&str> {
    match credentials {
        Credentials::Aws { secret_access_key, session_token, .. } => {
            vec![secret_access_key, session_token]
        }
        Credentials::Gcp { access_token, .. } | Credentials::Azure { access_token, .. } => {
            vec![access_token]
        }
        Credentials::Ambient => Vec::new(),
    }
}

/// The manager's own identity is never impersonated: an ambient target gives ambient credentials.
pub async fn ambient_target_gives_ambient_credentials(impersonator: &dyn Impersonator) {
    let credentials = impersonator
        .credentials(&ImpersonationTarget::ambient())
        .await
        .expect("an ambient target never fails");
    assert_eq!(credentials, Credentials::Ambient, "{impersonator:?}");
}

/// A cloud target gives credentials of its cloud, or ambient ones; never another cloud's.
pub async fn credentials_are_for_the_target(
    impersonator: &dyn Impersonator,
    target: &ImpersonationTarget,
) {
    let credentials = impersonator.credentials(target).await.expect("credentials for the target");
    match (target.identity().cloud(), credentials.cloud()) {
        (_, None) => {}
        (Some(wanted), Some(got)) => {
            assert_eq!(got, wanted, "{} got {credentials:?}", target.identity());
        }
        (None, Some(_)) => panic!("an ambient target got {credentials:?}"),
    }
}

/// Credentials that expire have not expired when they are returned, and carry non-empty secrets.
pub async fn credentials_are_unexpired(
    impersonator: &dyn Impersonator,
    target: &ImpersonationTarget,
) {
    let before = Utc::now();
    let credentials = impersonator.credentials(target).await.expect("credentials for the target");
    if let Some(expires_at) = credentials.expires_at() {
        assert!(expires_at > before, "{credentials:?} expired before they were asked for");
    }
    for secret in secrets(&credentials) {
        assert!(!secret.is_empty(), "{credentials:?} has an empty secret");
    }
}

/// No secret shows in the `Debug` of the credentials or of the impersonator that made them.
pub async fn debug_shows_no_secret(impersonator: &dyn Impersonator, target: &ImpersonationTarget) {
    let credentials = impersonator.credentials(target).await.expect("credentials for the target");
    let shown = [
        format!("{credentials:?}"),
        format!("{credentials:#?}"),
        format!("{impersonator:?}"),
        format!("{impersonator:#?}"),
    ];
    for secret in secrets(&credentials).into_iter().filter(|secret| !secret.is_empty()) {
        for text in &shown {
            assert!(!text.contains(secret), "a secret shows in {text}");
        }
    }
}

/// [`CONCURRENT_CALLS`] calls at once for one target all succeed with the same kind.
pub async fn concurrent_calls_agree(impersonator: &dyn Impersonator, target: &ImpersonationTarget) {
    let (a, b, c, d) = tokio::join!(
        impersonator.credentials(target),
        impersonator.credentials(target),
        impersonator.credentials(target),
        impersonator.credentials(target),
    );
    let kinds: Vec<&str> = [a, b, c, d]
        .iter()
        .map(|result| result.as_ref().expect("every concurrent call succeeds").kind())
        .collect();
    assert!(kinds.iter().all(|kind| *kind == kinds[0]), "kinds {kinds:?}");
}

/// Every function of the suite: the ambient rule once, the others for each of `targets`.
pub async fn run_all(impersonator: &dyn Impersonator, targets: &[ImpersonationTarget]) {
    ambient_target_gives_ambient_credentials(impersonator).await;
    for target in targets {
        credentials_are_for_the_target(impersonator, target).await;
        credentials_are_unexpired(impersonator, target).await;
        debug_shows_no_secret(impersonator, target).await;
        concurrent_calls_agree(impersonator, target).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeDelta;

    use super::*;
    use crate::target::{Cloud, Identity, SessionName};
    use crate::testing::{ScriptedImpersonator, aws_credentials, aws_target};
    use crate::{AmbientImpersonator, CachingImpersonator, PerCloudImpersonator};

    fn targets() -> Vec<ImpersonationTarget> {
        vec![
            ImpersonationTarget::ambient(),
            aws_target("customer"),
            ImpersonationTarget::new(
                Identity::Aws {
                    role_arn: "arn:aws:iam::123456789012:role/with-external-id".into(),
                    external_id: Some("ext-42".into()),
                    session_name: SessionName::new("mint", "dep_1"),
                },
                None,
            ),
            ImpersonationTarget::new(
                Identity::Gcp {
                    service_account_email: "alien@customer.iam.gserviceaccount.com".into(),
                    scopes: vec![crate::GCP_CLOUD_PLATFORM_SCOPE.into()],
                },
                None,
            ),
            ImpersonationTarget::new(
                Identity::Azure {
                    client_id: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
                    tenant_id: None,
                    subscription_id: None,
                },
                None,
            ),
        ]
    }

    /// A cache over a script that answers one AWS role with real-looking secrets.
    fn cached_aws() -> CachingImpersonator<ScriptedImpersonator> {
        let expires_at = Utc::now() + TimeDelta::hours(1);
        CachingImpersonator::new(ScriptedImpersonator::new([Ok(aws_credentials(
            "contract", expires_at,
        ))]))
    }

    #[tokio::test]
    async fn ambient_impersonator_passes_the_contract() {
        run_all(&AmbientImpersonator, &targets()).await;
    }

    #[tokio::test]
    async fn caching_impersonator_passes_the_contract() {
        run_all(&cached_aws(), &[aws_target("customer")]).await;
        run_all(&CachingImpersonator::new(AmbientImpersonator), &targets()).await;
    }

    #[tokio::test]
    async fn per_cloud_impersonator_passes_the_contract() {
        let per_cloud = PerCloudImpersonator::new()
            .with(Cloud::Aws, Arc::new(cached_aws()))
            .otherwise(Arc::new(AmbientImpersonator));
        run_all(&per_cloud, &[aws_target("customer")]).await;
        run_all(&per_cloud, &targets()[3..]).await;
    }

    #[tokio::test]
    #[should_panic(expected = "a secret shows in")]
    async fn the_suite_catches_a_leaking_debug() {
        #[derive(Debug)]
        struct Leaky(String);

        #[async_trait::async_trait]
        impl Impersonator for Leaky {
            async fn credentials(
                &self,
                _target: &ImpersonationTarget,
            ) -> Result<Credentials, crate::ImpersonationError> {
                Ok(Credentials::Gcp {
                    access_token: self.0.clone(),
                    expires_at: Utc::now() + TimeDelta::hours(1),
                })
            }
        }
        let target = &targets()[3];
        debug_shows_no_secret(&Leaky("ya29.cached-token".into()), target).await;
    }

    #[tokio::test]
    #[should_panic(expected = "got")]
    async fn the_suite_catches_credentials_of_another_cloud() {
        let aws_only = cached_aws();
        credentials_are_for_the_target(&aws_only, &targets()[3]).await;
    }
}
