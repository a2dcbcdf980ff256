//! Setup steps shared by checks: pushing a blob the most widely supported way (POST then PUT),
//! pushing manifests and whole images, reading manifests and tag lists. A failure here is reported
//! as the check's failure, prefixed `setup:`, since the check could not get to what it tests.

use reqwest::Method;

use crate::client::{Registry, Response};
use crate::content::{ACCEPT_MANIFESTS, Blob, Manifest};

/// An OCI image pushed to a repository.
pub(crate) struct Image {
    /// The single layer.
    pub(crate) layer: Blob,
    /// The image manifest.
    pub(crate) manifest: Manifest,
}

/// Opens an upload session: `POST /v2/<repo>/blobs/uploads/` must answer 202 with a `Location`.
pub(crate) async fn start_upload(reg: &Registry, repo: &str) -> Result<url::Url, String> {
    let response = reg
        .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))?
        .body(Vec::new())
        .send()
        .await?;
    response.expect_status(&[202])?;
    response.location(reg)
}

/// `url` with `digest=<digest>` added to its query (keeping the registry's own parameters).
pub(crate) fn with_digest(mut url: url::Url, digest: &str) -> url::Url {
    url.query_pairs_mut().append_pair("digest", digest);
    url
}

/// Pushes `blob` to `repo` with POST then PUT and expects 201.
pub(crate) async fn upload_blob(reg: &Registry, repo: &str, blob: &Blob) -> Result<(), String> {
    let step = async {
        let location = start_upload(reg, repo).await?;
        let response = reg
            .request_url(Method::PUT, with_digest(location, &blob.digest))
            .header("Content-Type", "application/octet-stream")
            .body(blob.bytes.clone())
            .send()
            .await?;
        response.expect_status(&[201])
    };
    step.await.map_err(|e| format!("setup: pushing blob {}: {e}", blob.digest))
}

/// `PUT /v2/<repo>/manifests/<reference>` with the manifest's media type; the response unchecked.
pub(crate) async fn put_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
) -> Result<Response, String> {
    reg.request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))?
        .header("Content-Type", manifest.media_type)
        .body(manifest.bytes.clone())
        .send()
        .await
}

/// Pushes `manifest` as `reference` (a tag, or its digest when `None`) and expects 201.
pub(crate) async fn push_manifest(
    reg: &Registry,
    repo: &str,
    reference: Option<&str>,
    manifest: &Manifest,
) -> Result<Response, String> {
    let reference = reference.unwrap_or(&manifest.digest);
    let response = put_manifest(reg, repo, reference, manifest).await?;
    response
        .expect_status(&[201])
        .map_err(|e| format!("setup: pushing manifest {}: {e}", manifest.digest))?;
    Ok(response)
}

/// Pushes a fresh OCI image (config, one layer of `layer_size` random bytes, manifest) to `repo`,
/// tagged `tag` or by digest.
pub(crate) async fn push_image(
    reg: &Registry,
    repo: &str,
    tag: Option<&str>,
    layer_size: usize,
) -> Result<Image, String> {
    let config = Blob::config()?;
    let layer = Blob::random(layer_size)?;
    upload_blob(reg, repo, &config).await?;
    upload_blob(reg, repo, &layer).await?;
    let manifest = Manifest::oci_image(&config, &[&layer])?;
    push_manifest(reg, repo, tag, &manifest).await?;
    Ok(Image { layer, manifest })
}

/// `GET` or `HEAD /v2/<repo>/manifests/<reference>` accepting every manifest type.
pub(crate) async fn fetch_manifest(
    reg: &Registry,
    method: Method,
    repo: &str,
    reference: &str,
) -> Result<Response, String> {
    reg.request(method, &format!("/v2/{repo}/manifests/{reference}"))?
        .header("Accept", ACCEPT_MANIFESTS)
        .send()
        .await
}

/// Fails unless GET and HEAD of `reference` return `manifest` exactly, with its media type,
/// length and digest.
pub(crate) async fn expect_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
) -> Result<(), String> {
    let got = fetch_manifest(reg, Method::GET, repo, reference).await?;
    got.expect_status(&[200])?;
    got.expect_body(&manifest.bytes)?;
    got.expect_content_type(manifest.media_type)?;
    got.expect_header("Docker-Content-Digest", &manifest.digest)?;
    let head = fetch_manifest(reg, Method::HEAD, repo, reference).await?;
    head.expect_status(&[200])?;
    head.expect_content_type(manifest.media_type)?;
    head.expect_content_length(manifest.bytes.len())?;
    head.expect_header("Docker-Content-Digest", &manifest.digest)?;
    if !head.body.is_empty() {
        return Err(head.fail("an empty body for HEAD"));
    }
    Ok(())
}

/// Fails unless `reference` is not found (404, strict: `MANIFEST_UNKNOWN`) by GET.
pub(crate) async fn expect_manifest_gone(
    reg: &Registry,
    repo: &str,
    reference: &str,
) -> Result<(), String> {
    let got = fetch_manifest(reg, Method::GET, repo, reference).await?;
    got.expect_not_found("MANIFEST_UNKNOWN")
}

/// The `tags` of `GET /v2/<repo>/tags/list<query>`, with the response.
pub(crate) async fn list_tags(
    reg: &Registry,
    repo: &str,
    query: &str,
) -> Result<(Vec<String>, Response), String> {
    let response =
        reg.request(Method::GET, &format!("/v2/{repo}/tags/list{query}"))?.send().await?;
    response.expect_status(&[200])?;
    let body = response.json()?;
    if body.get("name").and_then(|n| n.as_str()) != Some(repo) {
        return Err(response.fail(&format!("a tag list with \"name\": {repo:?}")));
    }
    let tags = string_list(&body, "tags")
        .ok_or_else(|| response.fail("a tag list with a \"tags\" array"))?;
    Ok((tags, response))
}

/// `body[key]` as a list of strings; `null` or a missing key reads as empty (some registries
/// write `"tags": null` for an empty page).
pub(crate) fn string_list(body: &serde_json::Value, key: &str) -> Option<Vec<String>> {
    match body.get(key) {
        None | Some(serde_json::Value::Null) => Some(Vec::new()),
        Some(serde_json::Value::Array(items)) => {
            items.iter().map(|t| t.as_str().map(str::to_owned)).collect()
        }
        Some(_) => None,
    }
}

/// Fails unless the blob `digest` in `repo` is not found (404, strict: `BLOB_UNKNOWN` on GET) by
/// HEAD and GET.
pub(crate) async fn expect_blob_gone(
    reg: &Registry,
    repo: &str,
    digest: &str,
) -> Result<(), String> {
    for method in [Method::HEAD, Method::GET] {
        let response = reg.request(method, &format!("/v2/{repo}/blobs/{digest}"))?.send().await?;
        response.expect_not_found("BLOB_UNKNOWN")?;
    }
    Ok(())
}

/// Fails unless GET of the blob returns exactly `blob`.
pub(crate) async fn expect_blob(reg: &Registry, repo: &str, blob: &Blob) -> Result<(), String> {
    let response =
        reg.request(Method::GET, &format!("/v2/{repo}/blobs/{}", blob.digest))?.send().await?;
    response.expect_status(&[200])?;
    response.expect_body(&blob.bytes)
}
