//! The AWS [`Impersonator`]: STS `AssumeRole` into a deployment's target role (`target.roleArn`,
//! `externalId`, the session name `alien-<purpose>-<id>`, the target's duration). With an
//! `[impersonation.aws]` binding the manager first becomes its management role (`roleArn`, which
//! the customers' roles trust) and assumes the target role from there (role chaining, hence the
//! one-hour maximum); without one it assumes the target role as its own identity. The
//! management role's credentials are cached and refreshed by the SDK; the target's by the
//! `CachingImpersonator` the manager wraps around this.

use alien_impersonation::{
    Credentials, Identity, ImpersonationError, ImpersonationTarget, Impersonator,
};
use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sts::Client;

use crate::config::AwsSettings;
use crate::error::classify;

/// The role the manager becomes before it assumes customers' roles (`[impersonation.aws]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementRole {
    /// Its ARN.
    pub role_arn: String,
    /// The external id its trust policy asks for, if any.
    pub external_id: Option<String>,
}

/// STS `AssumeRole`, from the manager's identity or its management role.
#[derive(Clone)]
pub struct StsImpersonator {
    client: Client,
    via: Option<String>,
}

/// Names the identity the role is assumed from; no credential.
impl std::fmt::Debug for StsImpersonator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StsImpersonator").field("via", &self.via).finish()
    }
}

impl StsImpersonator {
    /// Assumes roles from the environment's identity, or from `management` when given.
    pub async fn new(
        settings: &AwsSettings,
        management: Option<ManagementRole>,
    ) -> StsImpersonator {
        let sdk = settings.load().await;
        StsImpersonator::from_sdk(&sdk, management).await
    }

    /// As [`StsImpersonator::new`], over an SDK configuration.
    pub async fn from_sdk(sdk: &SdkConfig, management: Option<ManagementRole>) -> StsImpersonator {
        let Some(management) = management else {
            return StsImpersonator { client: Client::new(sdk), via: None };
        };
        let mut provider = aws_config::sts::AssumeRoleProvider::builder(&management.role_arn)
            .session_name("alien-management")
            .configure(sdk);
        if let Some(external_id) = &management.external_id {
            provider = provider.external_id(external_id);
        }
        let provider = provider.build().await;
        let chained =
            sdk.to_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build();
        StsImpersonator { client: Client::new(&chained), via: Some(management.role_arn) }
    }

    /// The account and ARN the current credentials act as (`GetCallerIdentity`).
    pub async fn caller(&self) -> Result<(String, String), ImpersonationError> {
        let out = self.client.get_caller_identity().send().await.map_err(|e| {
            let failure = classify("STS GetCallerIdentity", &e);
            if failure.transient {
                ImpersonationError::Unavailable { message: failure.message }
            } else {
                ImpersonationError::Backend { message: failure.message }
            }
        })?;
        Ok((out.account().unwrap_or_default().to_owned(), out.arn().unwrap_or_default().to_owned()))
    }
}

/// STS error codes that mean the role (or the manager's identity) refuses.
const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "RegionDisabledException",
    "UnrecognizedClientException",
];

#[async_trait::async_trait]
impl Impersonator for StsImpersonator {
    async fn credentials(
        &self,
        target: &ImpersonationTarget,
    ) -> Result<Credentials, ImpersonationError> {
        let (role_arn, external_id, session_name) = match target.identity() {
            Identity::Aws { role_arn, external_id, session_name } => {
                (role_arn, external_id, session_name)
            }
            Identity::Ambient => return Ok(Credentials::Ambient),
            other => {
                let cloud = other.cloud().unwrap_or(alien_impersonation::Cloud::Aws);
                return Err(ImpersonationError::NotConfigured { cloud });
            }
        };
        let seconds = i32::try_from(target.duration().as_secs()).unwrap_or(3600);
        let out = self
            .client
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session_name.as_str())
            .set_external_id(external_id.clone())
            .duration_seconds(seconds)
            .send()
            .await
            .map_err(|e| {
                let failure = classify("STS AssumeRole", &e);
                if failure.code.as_deref().is_some_and(|c| DENIED.contains(&c)) {
                    ImpersonationError::Denied {
                        identity: target.identity().to_string(),
                        message: failure.message,
                    }
                } else if failure.transient {
                    ImpersonationError::Unavailable { message: failure.message }
                } else {
                    ImpersonationError::Backend { message: failure.message }
                }
            })?;
        let credentials = out.credentials().ok_or_else(|| ImpersonationError::Backend {
            message: format!("STS AssumeRole into {role_arn} returned no credentials"),
        })?;
        let expires_at = chrono::DateTime::from_timestamp(credentials.expiration().secs(), 0)
            .ok_or_else(|| ImpersonationError::Backend {
                message: format!("STS AssumeRole into {role_arn}: an expiry out of range"),
            })?;
        Ok(Credentials::Aws {
            access_key_id: credentials.access_key_id().to_owned(),
            secret_access_key: credentials.secret_access_key().to_owned(),
            session_token: credentials.session_token().to_owned(),
            expires_at,
        })
    }
}
