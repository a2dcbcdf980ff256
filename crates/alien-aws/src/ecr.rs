//! Amazon ECR as an [`ArtifactRegistry`] (`[artifact-registry.<platform>]` `service = "ecr"`).
//!
//! - Host `<account>.dkr.ecr.<region>.amazonaws.com`: the account of `pushRoleArn` (else
//!   `pullRoleArn`, else the manager's own identity), the region of the SDK configuration.
//! - Repositories are `<repositoryPrefix>/<name>` (ECR allows `/`), which is what a client pushing
//!   to `<host>/<repositoryName>/<name>` names; they are created on first use.
//! - Push credentials: STS `AssumeRole` into `pushRoleArn` (session `alien-ecr-push`; the
//!   manager's identity without one), then `GetAuthorizationToken` -> Basic `AWS:<password>`.
//!   Pull credentials the same with `pullRoleArn` (session `alien-ecr-pull`). Tokens are cached
//!   until 80% of their lifetime, one refresh in flight per identity.
//! - Other accounts pull through the repository policy ([`EcrRegistry::grant_pull`]).
//!
//! Repository creation, policies and tokens go through the push identity: it owns the
//! repositories. No credential or token is ever logged.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use alien_core::api::PushCredentials;
use alien_core::sync::RegistryCredentials;
use alien_registry::{ArtifactRegistry, ArtifactRegistryError, PullFor};
use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability};
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::config::AwsSettings;
use crate::error::classify;

/// Longest repository name ECR accepts, prefix included.
const MAX_REPOSITORY_LEN: usize = 256;
/// Shortest repository name ECR accepts.
const MIN_REPOSITORY_LEN: usize = 2;
/// The repository policy statement this registry owns.
const PULL_SID: &str = "AlienPull";
/// What another account needs to pull an image.
const PULL_ACTIONS: [&str; 3] =
    ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"];

/// An ECR registry binding.
#[derive(Debug, Clone)]
pub struct EcrSettings {
    /// Prefix of every repository: images go to `<prefix>/<name>`.
    pub repository_prefix: String,
    /// Role that creates repositories, sets their policies and pushes; `None`: the manager's
    /// own identity.
    pub push_role_arn: Option<String>,
    /// Role whose tokens agents pull with; `None`: the manager's own identity.
    pub pull_role_arn: Option<String>,
    /// Region and endpoint.
    pub aws: AwsSettings,
}

/// Why an [`EcrRegistry`] cannot be made; the message names the setting.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EcrError(String);

/// A token of one identity, reused until `refresh_at`.
#[derive(Clone)]
struct Token {
    username: String,
    password: String,
    expires_at: DateTime<Utc>,
    refresh_at: DateTime<Utc>,
}

/// An identity of the registry (push or pull): its ECR client and its cached token.
struct Acting {
    client: Client,
    /// The `tokio` lock is held across `GetAuthorizationToken`: one refresh in flight.
    token: tokio::sync::Mutex<Option<Token>>,
}

impl Acting {
    async fn new(sdk: &SdkConfig, role_arn: Option<&str>, session: &str) -> Acting {
        let client = match role_arn {
            // The SDK's provider caches the role's credentials and refreshes them before expiry.
            Some(arn) => {
                let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
                    .session_name(session)
                    .configure(sdk)
                    .build()
                    .await;
                let sdk = sdk
                    .to_builder()
                    .credentials_provider(SharedCredentialsProvider::new(provider))
                    .build();
                Client::new(&sdk)
            }
            None => Client::new(sdk),
        };
        Acting { client, token: tokio::sync::Mutex::new(None) }
    }
}

/// Why a registry without a pull identity gives pull-mode agents no credentials (`{key}`: the
/// binding's key of that identity).
const NO_PULL_IDENTITY: &str = "no pull identity ({key}): pull-mode agents get no credentials \
     of the manager's own identity, which could push; set {key}";

/// Amazon ECR: see the module documentation.
pub struct EcrRegistry {
    host: String,
    prefix: String,
    partition: String,
    push: Acting,
    /// The pull role's identity; `None` without `pullRoleArn`: pull-mode agents then get no
    /// credentials (the manager's own would reach everything it may do in ECR, pushes too).
    pull: Option<Acting>,
    /// `(repository, account)` pairs whose grant is known to be in the policy, so the ECS
    /// deployer's call before every task definition costs nothing once granted.
    granted: Mutex<HashSet<(String, String)>>,
    fetches: AtomicU64,
}

/// Names the registry; no credential.
impl std::fmt::Debug for EcrRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrRegistry")
            .field("host", &self.host)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EcrRegistry {
    /// The registry of `settings`. Calls STS `GetCallerIdentity` only when neither role is set
    /// (the account of the host is then the manager's own).
    pub async fn new(settings: &EcrSettings) -> Result<EcrRegistry, EcrError> {
        let sdk = settings.aws.load().await;
        EcrRegistry::from_sdk(&sdk, settings).await
    }

    /// As [`EcrRegistry::new`], over an SDK configuration (whose region and endpoint count,
    /// not those of `settings.aws`).
    pub async fn from_sdk(
        sdk: &SdkConfig,
        settings: &EcrSettings,
    ) -> Result<EcrRegistry, EcrError> {
        let prefix = settings.repository_prefix.trim_matches('/');
        if let Err(why) = check_repository(prefix) {
            return Err(EcrError(format!("repositoryPrefix: {prefix:?} {why}")));
        }
        let push_role = role("pushRoleArn", settings.push_role_arn.as_deref())?;
        let pull_role = role("pullRoleArn", settings.pull_role_arn.as_deref())?;
        let region = sdk.region().map(ToString::to_string).ok_or_else(|| {
            EcrError(
                "region: no AWS region for ECR (set the commands KV's region, or AWS_REGION)"
                    .into(),
            )
        })?;
        let (partition, account) = match push_role.or(pull_role) {
            Some((partition, account)) => (partition, account),
            None => {
                let me = aws_sdk_sts::Client::new(sdk)
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| EcrError(classify("STS GetCallerIdentity", &e).message))?;
                let account = me.account().unwrap_or_default().to_owned();
                let partition = me.arn().and_then(|a| a.split(':').nth(1)).unwrap_or("aws");
                (partition.to_owned(), account)
            }
        };
        if !is_account(&account) {
            return Err(EcrError(format!("the ECR account {account:?} is not 12 digits")));
        }
        let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
        Ok(EcrRegistry {
            host: format!("{account}.dkr.ecr.{region}.{suffix}"),
            prefix: prefix.to_owned(),
            partition,
            push: Acting::new(sdk, settings.push_role_arn.as_deref(), "alien-ecr-push").await,
            pull: match settings.pull_role_arn.as_deref() {
                Some(arn) => Some(Acting::new(sdk, Some(arn), "alien-ecr-pull").await),
                None => None,
            },
            granted: Mutex::new(HashSet::new()),
            fetches: AtomicU64::new(0),
        })
    }

    /// How many authorization tokens were fetched from ECR (the rest came from the cache).
    pub fn token_fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The repository of `image` (`<host>/<repository>[:tag][@digest]`) when it is in this
    /// registry, e.g. for [`EcrRegistry::grant_pull`].
    pub fn repository_of(&self, image: &str) -> Option<String> {
        let path = image.strip_prefix(&self.host)?.strip_prefix('/')?;
        let path = path.split_once('@').map_or(path, |(p, _)| p);
        // A `:` after the last `/` starts the tag.
        let path = match path.rfind(':') {
            Some(i) if !path[i..].contains('/') => &path[..i],
            _ => path,
        };
        Some(path.to_owned())
    }

    /// `<prefix>/<name>`, or why ECR would refuse it.
    fn full_name(&self, name: &str) -> Result<String, ArtifactRegistryError> {
        let full = format!("{}/{name}", self.prefix);
        check_repository(&full).map_err(|why| ArtifactRegistryError::InvalidRepository {
            repository: name.to_owned(),
            message: format!("{full:?} {why}"),
        })?;
        Ok(full)
    }

    fn unavailable(&self, message: String) -> ArtifactRegistryError {
        ArtifactRegistryError::Unavailable { registry: self.host.clone(), message }
    }

    /// Makes `<prefix>/<name>` exist (image scanning on push, mutable tags); returns its name.
    pub async fn ensure_repository(&self, name: &str) -> Result<String, ArtifactRegistryError> {
        let full = self.full_name(name)?;
        let client = &self.push.client;
        match client.describe_repositories().repository_names(&full).send().await {
            Ok(_) => return Ok(full),
            Err(e) => {
                let failure = classify("ECR DescribeRepositories", &e);
                if failure.code.as_deref() != Some("RepositoryNotFoundException") {
                    return Err(self.unavailable(failure.message));
                }
            }
        }
        let created = client
            .create_repository()
            .repository_name(&full)
            .image_tag_mutability(ImageTagMutability::Mutable)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder().scan_on_push(true).build(),
            )
            .send()
            .await;
        match created {
            Ok(_) => {
                tracing::info!(repository = %full, registry = %self.host, "ECR repository created");
                Ok(full)
            }
            Err(e) => {
                let failure = classify("ECR CreateRepository", &e);
                // Another replica or push created it since we looked.
                if failure.code.as_deref() == Some("RepositoryAlreadyExistsException") {
                    Ok(full)
                } else {
                    Err(self.unavailable(failure.message))
                }
            }
        }
    }

    /// Lets `account_id` pull from `repository` (the full name, under the prefix): its root
    /// principal joins the `AlienPull` statement of the repository policy; other statements and
    /// accounts stay as they are. Idempotent; once granted (by this process) it costs nothing.
    pub async fn grant_pull(
        &self,
        repository: &str,
        account_id: &str,
    ) -> Result<(), ArtifactRegistryError> {
        let invalid = |message: String| ArtifactRegistryError::InvalidRepository {
            repository: repository.to_owned(),
            message,
        };
        if !is_account(account_id) {
            return Err(invalid(format!("account id {account_id:?} is not 12 digits")));
        }
        let under_prefix =
            repository.strip_prefix(&self.prefix).is_some_and(|rest| rest.starts_with('/'));
        if !under_prefix {
            return Err(invalid(format!("not under the repository prefix {:?}", self.prefix)));
        }
        check_repository(repository).map_err(|why| invalid(why.to_owned()))?;
        let key = (repository.to_owned(), account_id.to_owned());
        if self.granted.lock().is_ok_and(|g| g.contains(&key)) {
            return Ok(());
        }
        let client = &self.push.client;
        let current = match client.get_repository_policy().repository_name(repository).send().await
        {
            Ok(out) => out.policy_text().map(str::to_owned),
            Err(e) => {
                let failure = classify("ECR GetRepositoryPolicy", &e);
                if failure.code.as_deref() != Some("RepositoryPolicyNotFoundException") {
                    return Err(self.unavailable(failure.message));
                }
                None
            }
        };
        let principal = format!("arn:{}:iam::{account_id}:root", self.partition);
        let merged = grant_in_policy(current.as_deref(), &principal).map_err(|why| {
            self.unavailable(format!("the policy of repository {repository:?}: {why}"))
        })?;
        if let Some(policy) = merged {
            client
                .set_repository_policy()
                .repository_name(repository)
                .policy_text(policy)
                .send()
                .await
                .map_err(|e| self.unavailable(classify("ECR SetRepositoryPolicy", &e).message))?;
            tracing::info!(%repository, account = %account_id, "ECR pull granted");
        }
        if let Ok(mut granted) = self.granted.lock() {
            granted.insert(key);
        }
        Ok(())
    }

    /// The cached token of `acting`, or a new one.
    async fn token(&self, acting: &Acting) -> Result<Token, ArtifactRegistryError> {
        let mut slot = acting.token.lock().await;
        let now = Utc::now();
        if let Some(token) = slot.as_ref().filter(|t| now < t.refresh_at) {
            return Ok(token.clone());
        }
        let out = acting
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| self.unavailable(classify("ECR GetAuthorizationToken", &e).message))?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let data = out.authorization_data().first().ok_or_else(|| {
            self.unavailable("ECR GetAuthorizationToken returned no authorization data".into())
        })?;
        let (username, password) =
            data.authorization_token().and_then(decode_token).ok_or_else(|| {
                self.unavailable(
                    "ECR GetAuthorizationToken: a token that is not base64 user:password".into(),
                )
            })?;
        let expires = data.expires_at().and_then(|d| DateTime::from_timestamp(d.secs(), 0));
        let (expires_at, refresh_at) = lifetime(now, expires);
        let token = Token { username, password, expires_at, refresh_at };
        *slot = Some(token.clone());
        Ok(token)
    }
}

#[async_trait::async_trait]
impl ArtifactRegistry for EcrRegistry {
    fn kind(&self) -> &'static str {
        "ecr"
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn repository_name(&self) -> &str {
        &self.prefix
    }

    /// A token of the pull identity. ECR tokens reach whatever that identity may read, not one
    /// deployment's images: the pull role's permissions draw that line.
    async fn pull_credentials(
        &self,
        _who: PullFor<'_>,
    ) -> Result<RegistryCredentials, ArtifactRegistryError> {
        let pull = self.pull.as_ref().ok_or_else(|| ArtifactRegistryError::Unavailable {
            registry: self.host.clone(),
            message: NO_PULL_IDENTITY.replace("{key}", "pullRoleArn"),
        })?;
        let token = self.token(pull).await?;
        Ok(RegistryCredentials {
            host: self.host.clone(),
            username: token.username,
            password: token.password,
            plain_http: false,
        })
    }

    async fn push_credentials(
        &self,
        repositories: &[String],
    ) -> Result<Option<PushCredentials>, ArtifactRegistryError> {
        // Every name is checked before any AWS call.
        for name in repositories {
            self.full_name(name)?;
        }
        for name in repositories {
            self.ensure_repository(name).await?;
        }
        let token = self.token(&self.push).await?;
        Ok(Some(PushCredentials {
            username: token.username,
            password: token.password,
            expires_at: token.expires_at,
        }))
    }

    async fn grant_image_pull(
        &self,
        image: &str,
        account: &str,
    ) -> Result<bool, ArtifactRegistryError> {
        let Some(repository) = self.repository_of(image) else { return Ok(false) };
        EcrRegistry::grant_pull(self, &repository, account).await?;
        Ok(true)
    }
}

/// `(partition, account)` of a role ARN `arn:<partition>:iam::<account>:role/<name>`, naming
/// `field` when it is not one.
fn role(field: &str, arn: Option<&str>) -> Result<Option<(String, String)>, EcrError> {
    let Some(arn) = arn else { return Ok(None) };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iam", "", account, resource]
            if !partition.is_empty() && is_account(account) && resource.starts_with("role/") =>
        {
            Ok(Some(((*partition).to_owned(), (*account).to_owned())))
        }
        _ => Err(EcrError(format!(
            "{field}: {arn:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
        ))),
    }
}

fn is_account(account: &str) -> bool {
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

/// Whether ECR accepts `name` as a repository name:
/// `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`, 2 to 256 characters.
/// The error says why, to follow the quoted name.
fn check_repository(name: &str) -> Result<(), &'static str> {
    if name.len() < MIN_REPOSITORY_LEN || name.len() > MAX_REPOSITORY_LEN {
        return Err("is not 2 to 256 characters long (prefix included)");
    }
    let component = |c: &str| {
        !c.is_empty()
            && c.split(['.', '_', '-']).all(|run| {
                !run.is_empty() && run.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    };
    if name.split('/').all(component) {
        Ok(())
    } else {
        Err("is not an ECR repository name: lowercase letters and digits, joined by single \
             '.', '_' or '-', in '/'-separated parts")
    }
}

/// `base64("user:password")` split.
fn decode_token(token: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| (user.to_owned(), password.to_owned()))
}

/// When a token fetched at `now` with ECR's `expires` stops being used (`expires_at`, told to
/// clients) and when it is replaced (`refresh_at`, at 80% of that lifetime). ECR's tokens last
/// 12 hours; an expiry further than 11 hours away is not believed. An expiry already past (moto
/// always answers 2015-01-01; a skewed clock could too) cannot be right for a token just issued,
/// so the token is then used for 10 minutes only.
fn lifetime(now: DateTime<Utc>, expires: Option<DateTime<Utc>>) -> (DateTime<Utc>, DateTime<Utc>) {
    let expires_at = match expires {
        Some(at) if at > now => at.min(now + TimeDelta::hours(11)),
        _ => now + TimeDelta::minutes(10),
    };
    let refresh_at = now + (expires_at - now) * 8 / 10;
    (expires_at, refresh_at)
}

/// `policy` (a repository policy's JSON, `None` for none) with `principal` in the `AlienPull`
/// statement; `Ok(None)` when it is there already. Every other statement, and the statement's
/// other principals, are kept.
fn grant_in_policy(policy: Option<&str>, principal: &str) -> Result<Option<String>, String> {
    let mut doc: Value = match policy {
        Some(text) if !text.trim().is_empty() => {
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?
        }
        _ => json!({"Version": "2008-10-17", "Statement": []}),
    };
    let Some(root) = doc.as_object_mut() else {
        return Err("not a JSON object".into());
    };
    // A policy may hold one statement as an object rather than a list of them.
    let statements = match root.remove("Statement") {
        None => Vec::new(),
        Some(Value::Array(list)) => list,
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => return Err("`Statement` is neither a list nor an object".into()),
    };
    let mut statements = statements;
    let ours =
        statements.iter_mut().find(|s| s.get("Sid").and_then(Value::as_str) == Some(PULL_SID));
    let changed = match ours {
        None => {
            statements.push(json!({
                "Sid": PULL_SID,
                "Effect": "Allow",
                "Principal": {"AWS": [principal]},
                "Action": PULL_ACTIONS,
            }));
            true
        }
        Some(statement) => {
            let mut principals: Vec<Value> = match statement.pointer("/Principal/AWS") {
                Some(Value::String(one)) => vec![Value::String(one.clone())],
                Some(Value::Array(list)) => list.clone(),
                _ => Vec::new(),
            };
            if principals.iter().any(|p| p.as_str() == Some(principal)) {
                false
            } else {
                principals.push(Value::String(principal.to_owned()));
                statement["Effect"] = json!("Allow");
                statement["Principal"] = json!({"AWS": principals});
                statement["Action"] = json!(PULL_ACTIONS);
                true
            }
        }
    };
    root.insert("Statement".into(), Value::Array(statements));
    if !changed {
        return Ok(None);
    }
    serde_json::to_string(&doc).map(Some).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ecr_repository_names() {
        for good in ["ab", "alien/web", "alien/my-app.v2/web_1", "a1/b2/c3"] {
            assert_eq!(check_repository(good), Ok(()), "{good}");
        }
        let long = format!("alien/{}", "a".repeat(251));
        for bad in [
            "a",
            "Alien/web",
            "alien//web",
            "alien/web/",
            "/web",
            "alien/-web",
            "alien/we--b",
            "alien/web.",
            "alien/we b",
            "alien/wé",
            &long,
        ] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
        assert_eq!(check_repository(&format!("alien/{}", "a".repeat(250))), Ok(()));
    }

    #[test]
    fn role_arns_give_partition_and_account() {
        assert_eq!(
            role("pushRoleArn", Some("arn:aws:iam::210987654321:role/path/push")).unwrap(),
            Some(("aws".into(), "210987654321".into()))
        );
        assert_eq!(role("pushRoleArn", None).unwrap(), None);
        for bad in
            ["", "arn:aws:iam::2109:role/x", "arn:aws:iam::210987654321:user/x", "not-an-arn"]
        {
            let err = role("pullRoleArn", Some(bad)).unwrap_err().to_string();
            assert!(err.starts_with("pullRoleArn: ") && err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn tokens_decode_and_live_at_most_eleven_hours() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:secret:with:colons");
        assert_eq!(decode_token(&token), Some(("AWS".into(), "secret:with:colons".into())));
        assert_eq!(decode_token("%%%"), None);

        let now = Utc::now();
        let past = DateTime::from_timestamp(1_420_070_400, 0); // moto's 2015-01-01
        let (expires, refresh) = lifetime(now, past);
        assert_eq!(expires, now + TimeDelta::minutes(10));
        assert_eq!(refresh, now + TimeDelta::minutes(8));
        let (expires, _) = lifetime(now, Some(now + TimeDelta::hours(12)));
        assert_eq!(expires, now + TimeDelta::hours(11));
        let (expires, refresh) = lifetime(now, Some(now + TimeDelta::hours(1)));
        assert_eq!((expires, refresh), (now + TimeDelta::hours(1), now + TimeDelta::minutes(48)));
    }

    fn statement<'a>(doc: &'a Value, sid: &str) -> &'a Value {
        doc["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == sid).unwrap()
    }

    #[test]
    fn the_pull_grant_merges_into_the_policy() {
        let a = "arn:aws:iam::111111111111:root";
        let b = "arn:aws:iam::222222222222:root";
        let first = grant_in_policy(None, a).unwrap().unwrap();
        let doc: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(statement(&doc, PULL_SID)["Principal"]["AWS"], json!([a]));
        assert_eq!(statement(&doc, PULL_SID)["Action"], json!(PULL_ACTIONS));
        assert_eq!(grant_in_policy(Some(&first), a).unwrap(), None, "idempotent");

        // AWS may store one principal as a string and one statement as an object.
        let theirs = json!({"Version": "2012-10-17", "Statement": {
            "Sid": "Theirs", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::333333333333:root"},
            "Action": "ecr:*"}});
        let with_a = grant_in_policy(Some(&theirs.to_string()), a).unwrap().unwrap();
        let stored = json!({"Version": "2012-10-17", "Statement": [
            serde_json::from_str::<Value>(&with_a).unwrap()["Statement"][0].clone(),
            {"Sid": PULL_SID, "Effect": "Allow", "Principal": {"AWS": a}, "Action": PULL_ACTIONS}]});
        let both = grant_in_policy(Some(&stored.to_string()), b).unwrap().unwrap();
        let doc: Value = serde_json::from_str(&both).unwrap();
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 2);
        assert_eq!(statement(&doc, PULL_SID)["Principal"]["AWS"], json!([a, b]));
        assert_eq!(statement(&doc, "Theirs"), &theirs["Statement"]);
        assert_eq!(doc["Version"], "2012-10-17");

        assert!(grant_in_policy(Some("not json"), a).unwrap_err().contains("not JSON"));
        assert!(grant_in_policy(Some("[]"), a).is_err());
    }
}
