//! One method per API operation (`docs/openapi.json`).

use alien_core::api::{
    BuildConfig, CreateGroupToken, DeleteAccepted, DeleteBody, DeploymentCreated, DeploymentInfo,
    EventsPage, GroupTokenCreated, Health, Page, Platforms, RecentLogsPage, RedeployBody, Success,
    TokenList, WhoAmI,
};
use alien_core::command::wire::{
    CommandStatusResponse, CreateCommandRequest, CreateCommandResponse, PresignedRequest,
    UploadComplete,
};
use alien_core::sync::{InitializeRequest, Initialized, SyncRequest, SyncResponse};
use alien_core::{
    CreateDeployment, CreateDeploymentGroup, CreateRelease, Deployment, DeploymentGroup,
    DeploymentStatus, Id, Platform, Release,
};

use crate::{Client, ClientError};

/// `?limit=&cursor=` of list operations.
#[derive(Debug, Clone, Default)]
pub struct PageParams {
    /// Items per page (the manager's default when absent).
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters of [`Client::list_deployments`].
#[derive(Debug, Clone, Default)]
pub struct DeploymentQuery {
    /// Only this group's.
    pub deployment_group_id: Option<Id>,
    /// Only in this status.
    pub status: Option<DeploymentStatus>,
    /// Only of this platform.
    pub platform: Option<Platform>,
    /// Only with this name.
    pub name: Option<String>,
    /// Paging.
    pub page: PageParams,
}

/// `?a=b&c=d` of the pairs that have a value (empty when none).
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (name, value) in pairs {
        if let Some(value) = value {
            serializer.append_pair(name, value);
            any = true;
        }
    }
    if any { format!("?{}", serializer.finish()) } else { String::new() }
}

fn page_query(page: &PageParams) -> String {
    query(&[("limit", page.limit.map(|l| l.to_string())), ("cursor", page.cursor.clone())])
}

/// A path segment, percent-encoded (ids are safe already; names a user typed may not be).
fn segment(value: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    encoded.replace('+', "%20")
}

impl Client {
    /// `GET /health` (no credentials needed).
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get("/health").await
    }

    /// `GET /v1/whoami`.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.get("/v1/whoami").await
    }

    /// `GET /v1/platforms`.
    pub async fn platforms(&self) -> Result<Platforms, ClientError> {
        self.get("/v1/platforms").await
    }

    /// `GET /v1/build-config?platform=&repositories=`: where images for `platform` are pushed,
    /// and the credentials to push `repositories` with when the registry needs its own.
    pub async fn build_config(
        &self,
        platform: Platform,
        repositories: &[String],
    ) -> Result<BuildConfig, ClientError> {
        let repositories = (!repositories.is_empty()).then(|| repositories.join(","));
        let query =
            query(&[("platform", Some(platform.to_string())), ("repositories", repositories)]);
        self.get(&format!("/v1/build-config{query}")).await
    }

    /// `GET /v1/deployment-groups`.
    pub async fn list_groups(
        &self,
        page: &PageParams,
    ) -> Result<Page<DeploymentGroup>, ClientError> {
        self.get(&format!("/v1/deployment-groups{}", page_query(page))).await
    }

    /// `POST /v1/deployment-groups`.
    pub async fn create_group(
        &self,
        body: &CreateDeploymentGroup,
    ) -> Result<DeploymentGroup, ClientError> {
        self.post("/v1/deployment-groups", Some(body)).await
    }

    /// `GET /v1/deployment-groups/{id}`.
    pub async fn get_group(&self, id: &str) -> Result<DeploymentGroup, ClientError> {
        self.get(&format!("/v1/deployment-groups/{}", segment(id))).await
    }

    /// `POST /v1/deployment-groups/{id}/tokens`.
    pub async fn create_group_token(
        &self,
        id: &str,
        body: &CreateGroupToken,
    ) -> Result<GroupTokenCreated, ClientError> {
        self.post(&format!("/v1/deployment-groups/{}/tokens", segment(id)), Some(body)).await
    }

    /// `GET /v1/releases`.
    pub async fn list_releases(&self, page: &PageParams) -> Result<Page<Release>, ClientError> {
        self.get(&format!("/v1/releases{}", page_query(page))).await
    }

    /// `GET /v1/releases/{id}`.
    pub async fn get_release(&self, id: &str) -> Result<Release, ClientError> {
        self.get(&format!("/v1/releases/{}", segment(id))).await
    }

    /// `POST /v1/releases`.
    pub async fn create_release(&self, body: &CreateRelease) -> Result<Release, ClientError> {
        self.post("/v1/releases", Some(body)).await
    }

    /// `GET /v1/deployments`.
    pub async fn list_deployments(
        &self,
        filter: &DeploymentQuery,
    ) -> Result<Page<Deployment>, ClientError> {
        let q = query(&[
            ("deploymentGroupId", filter.deployment_group_id.as_ref().map(Id::to_string)),
            ("status", filter.status.map(|s| s.to_string())),
            ("platform", filter.platform.map(|p| p.to_string())),
            ("name", filter.name.clone()),
            ("limit", filter.page.limit.map(|l| l.to_string())),
            ("cursor", filter.page.cursor.clone()),
        ]);
        self.get(&format!("/v1/deployments{q}")).await
    }

    /// `POST /v1/deployments`.
    pub async fn create_deployment(
        &self,
        body: &CreateDeployment,
    ) -> Result<DeploymentCreated, ClientError> {
        self.post("/v1/deployments", Some(body)).await
    }

    /// `GET /v1/deployments/{id}`.
    pub async fn get_deployment(&self, id: &str) -> Result<Deployment, ClientError> {
        self.get(&format!("/v1/deployments/{}", segment(id))).await
    }

    /// `GET /v1/deployments/{id}/info`.
    pub async fn deployment_info(&self, id: &str) -> Result<DeploymentInfo, ClientError> {
        self.get(&format!("/v1/deployments/{}/info", segment(id))).await
    }

    /// `GET /v1/deployments/{id}/events?limit=`.
    pub async fn deployment_events(
        &self,
        id: &str,
        limit: Option<u32>,
    ) -> Result<EventsPage, ClientError> {
        let q = query(&[("limit", limit.map(|l| l.to_string()))]);
        self.get(&format!("/v1/deployments/{}/events{q}", segment(id))).await
    }

    /// `POST /v1/deployments/{id}/retry`.
    pub async fn retry_deployment(&self, id: &str) -> Result<Success, ClientError> {
        self.post(&format!("/v1/deployments/{}/retry", segment(id)), None::<&()>).await
    }

    /// `POST /v1/deployments/{id}/redeploy`.
    pub async fn redeploy_deployment(
        &self,
        id: &str,
        body: &RedeployBody,
    ) -> Result<Success, ClientError> {
        self.post(&format!("/v1/deployments/{}/redeploy", segment(id)), Some(body)).await
    }

    /// `POST /v1/deployments/{id}/delete`.
    pub async fn delete_deployment(
        &self,
        id: &str,
        body: &DeleteBody,
    ) -> Result<DeleteAccepted, ClientError> {
        self.post(&format!("/v1/deployments/{}/delete", segment(id)), Some(body)).await
    }

    /// `GET /v1/deployments/{id}/logs?limit=`.
    pub async fn recent_logs(
        &self,
        id: &str,
        limit: Option<u32>,
    ) -> Result<RecentLogsPage, ClientError> {
        let q = query(&[("limit", limit.map(|l| l.to_string()))]);
        self.get(&format!("/v1/deployments/{}/logs{q}", segment(id))).await
    }

    /// `GET /v1/tokens`.
    pub async fn list_tokens(&self) -> Result<TokenList, ClientError> {
        self.get("/v1/tokens").await
    }

    /// `DELETE /v1/tokens/{id}`.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .send(reqwest::Method::DELETE, &format!("/v1/tokens/{}", segment(id)), None::<&()>)
            .await?;
        Ok(())
    }

    /// `POST /v1/commands`.
    pub async fn create_command(
        &self,
        body: &CreateCommandRequest,
    ) -> Result<CreateCommandResponse, ClientError> {
        self.post("/v1/commands", Some(body)).await
    }

    /// `GET /v1/commands/{id}`.
    pub async fn command_status(&self, id: &str) -> Result<CommandStatusResponse, ClientError> {
        self.get(&format!("/v1/commands/{}", segment(id))).await
    }

    /// `POST /v1/commands/{id}/upload-complete`: the parameters are uploaded.
    pub async fn upload_complete(&self, id: &str, size: u64) -> Result<(), ClientError> {
        let path = format!("/v1/commands/{}/upload-complete", segment(id));
        let _: serde_json::Value = self.post(&path, Some(&UploadComplete { size })).await?;
        Ok(())
    }

    /// Makes a presigned request (payload upload or download): its URL carries its own
    /// authorization, so the API key is not sent. The answer's body.
    pub async fn presigned(
        &self,
        request: &PresignedRequest,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ClientError> {
        let backend = &request.backend;
        let method = reqwest::Method::from_bytes(backend.method.as_bytes()).map_err(|_| {
            ClientError::Decode {
                url: crate::without_query(&backend.url),
                detail: format!("presigned method {:?}", backend.method),
            }
        })?;
        let mut call = self.http.request(method, &backend.url);
        for (name, value) in &backend.headers {
            call = call.header(name, value);
        }
        if let Some(body) = body {
            call = call.body(body);
        }
        let response = call.send().await.map_err(|e| crate::unreachable(&backend.url, e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| crate::unreachable(&backend.url, e))?;
        if status.is_success() {
            Ok(bytes.to_vec())
        } else {
            Err(crate::error_answer(status.as_u16(), &bytes))
        }
    }

    /// `POST /v1/initialize`: registers a pull-mode deployment (group token) or finds it.
    pub async fn initialize(&self, body: &InitializeRequest) -> Result<Initialized, ClientError> {
        self.post("/v1/initialize", Some(body)).await
    }

    /// `POST /v1/sync`: an agent's report and the manager's answer.
    pub async fn sync(&self, body: &SyncRequest) -> Result<SyncResponse, ClientError> {
        self.post("/v1/sync", Some(body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_carry_only_given_values_encoded() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(query(&[("a", Some("x y&z".into())), ("b", None)]), "?a=x+y%26z");
        assert_eq!(segment("a/b c+"), "a%2Fb%20c%2B");
    }
}
