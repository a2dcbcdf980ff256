//! The values of the rows every SQL backend inserts (a deployment, a token), bound by a macro in
//! the order of the placeholders of the backend's `INSERT` (whose placeholders and defaults
//! differ per engine).

use alien_core::DeploymentStatus;

use crate::codec::opt_to_json;
use crate::{NewDeployment, StoreResult};

/// The values of a new `deployments` row, in the order of the placeholders (1 to 12) of
/// `INSERT INTO deployments (id, name, platform, deployment_model, deployment_group_id, status,
/// desired_release_id, retry_requested, region, stack_settings, target, token, created_at,
/// updated_at)`, where `retry_requested` is false and `updated_at` is placeholder 12 again.
pub struct DeploymentValues<'a> {
    /// 1: the id.
    pub id: &'a str,
    /// 2: the name.
    pub name: &'a str,
    /// 3: the platform.
    pub platform: &'static str,
    /// 4: the deployment model.
    pub deployment_model: &'static str,
    /// 5: the group.
    pub deployment_group_id: &'a str,
    /// 6: the status (`pending`).
    pub status: &'static str,
    /// 7: the desired release, if any.
    pub desired_release_id: Option<&'a str>,
    /// 8: the region, if any.
    pub region: Option<&'a str>,
    /// 9: the stack settings (JSON), if any.
    pub stack_settings: Option<String>,
    /// 10: the target (JSON), if any.
    pub target: Option<String>,
    /// 11: the sealed token.
    pub token: &'a str,
    /// 12: the creation time (Unix milliseconds).
    pub created_at: i64,
}

impl<'a> DeploymentValues<'a> {
    /// The values of `new`, with its desired release, its sealed token and its creation time.
    pub fn new(
        new: &'a NewDeployment,
        desired_release_id: Option<&'a str>,
        sealed_token: &'a str,
        created_at: i64,
    ) -> StoreResult<Self> {
        Ok(Self {
            id: new.id.as_str(),
            name: &new.name,
            platform: new.platform.as_str(),
            deployment_model: new.deployment_model.as_str(),
            deployment_group_id: new.deployment_group_id.as_str(),
            status: DeploymentStatus::Pending.as_str(),
            desired_release_id,
            region: new.region.as_deref(),
            stack_settings: opt_to_json("stackSettings", new.stack_settings.as_ref())?,
            target: opt_to_json("target", new.target.as_ref())?,
            token: sealed_token,
            created_at,
        })
    }
}

/// Binds [`DeploymentValues`] to a query of a backend's `INSERT INTO deployments`, in
/// placeholder order.
#[macro_export]
macro_rules! bind_new_deployment {
    ($query:expr, $values:expr) => {{
        let values: $crate::sql::insert::DeploymentValues<'_> = $values;
        $query
            .bind(values.id)
            .bind(values.name)
            .bind(values.platform)
            .bind(values.deployment_model)
            .bind(values.deployment_group_id)
            .bind(values.status)
            .bind(values.desired_release_id)
            .bind(values.region)
            .bind(values.stack_settings)
            .bind(values.target)
            .bind(values.token)
            .bind(values.created_at)
    }};
}
pub use crate::bind_new_deployment;

/// Binds a new token's record `$record` (a `&TokenRecord`) stored at `$now` to a query of a
/// backend's `INSERT INTO tokens (id, token_type, key_hash, key_prefix, deployment_group_id,
/// deployment_id, name, created_at, expires_at)`, in placeholder order (1 to 9).
#[macro_export]
macro_rules! bind_new_token {
    ($query:expr, $record:expr, $now:expr) => {{
        let record = $record;
        $query
            .bind(record.id.as_str())
            .bind(record.token_type.as_str())
            .bind(&record.key_hash)
            .bind(&record.key_prefix)
            .bind(record.deployment_group_id.as_ref().map(|id| id.as_str()))
            .bind(record.deployment_id.as_ref().map(|id| id.as_str()))
            .bind(record.name.as_deref())
            .bind($now)
            .bind(record.expires_at.map(|t| t.timestamp_millis()))
    }};
}
pub use crate::bind_new_token;
