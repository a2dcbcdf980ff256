//! [`StsImpersonator`] on moto: the impersonation contract suite, role chaining through the
//! management role, and proof that the minted credentials act in the target's account (moto
//! places what they create in the role's account).
//!
//! moto's STS accepts every role and external id, so a refusal cannot be shown against it; the
//! mapping of STS's refusals is the unit of `sts.rs`.
#![cfg(feature = "peer-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use alien_aws::moto::Moto;
use alien_aws::{ManagementRole, StsImpersonator, with_credentials};
use alien_impersonation::{Credentials, Identity, ImpersonationTarget, Impersonator, SessionName};

const TARGET_ACCOUNT: &str = "210987654321";

fn target(account: &str) -> ImpersonationTarget {
    ImpersonationTarget::new(
        Identity::Aws {
            role_arn: format!("arn:aws:iam::{account}:role/alien-deployer"),
            external_id: Some("customer-guard".into()),
            session_name: SessionName::new("deploy", "dep_0123456789abcdef"),
        },
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds() {
    let moto = Moto::start().await.unwrap();
    let sts = StsImpersonator::new(&moto.settings(), None).await;
    alien_impersonation::contract::run_all(&sts, &[target(TARGET_ACCOUNT)]).await;
}

/// Credentials from the management role's session, for the target role, act in the target's
/// account: GetCallerIdentity says so, and an ECR repository they create is in that account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_credentials_act_in_the_target_account() {
    let moto = Moto::start().await.unwrap();
    let management = ManagementRole {
        role_arn: "arn:aws:iam::123456789012:role/alien-management".into(),
        external_id: None,
    };
    let sts = StsImpersonator::new(&moto.settings(), Some(management)).await;
    let (account, arn) = sts.caller().await.unwrap();
    assert_eq!(account, "123456789012");
    assert!(arn.contains("assumed-role/alien-management/alien-management"), "{arn}");

    let credentials = sts.credentials(&target(TARGET_ACCOUNT)).await.unwrap();
    let Credentials::Aws { expires_at, .. } = &credentials else { panic!("{credentials:?}") };
    let left = *expires_at - chrono::Utc::now();
    assert!(left > chrono::TimeDelta::minutes(50), "an hour asked, {left} left");

    let sdk = moto.settings().load().await;
    let as_target = with_credentials(&sdk, &credentials).unwrap();
    let me = aws_sdk_sts::Client::new(&as_target).get_caller_identity().send().await.unwrap();
    assert_eq!(me.account(), Some(TARGET_ACCOUNT));
    assert!(
        me.arn().unwrap().contains("assumed-role/alien-deployer/alien-deploy-dep_0123456789abcdef"),
        "{:?}",
        me.arn()
    );
    let repo = aws_sdk_ecr::Client::new(&as_target)
        .create_repository()
        .repository_name("proof")
        .send()
        .await
        .unwrap();
    let arn = repo.repository().unwrap().repository_arn().unwrap();
    assert!(arn.contains(&format!(":{TARGET_ACCOUNT}:repository/proof")), "{arn}");
}
