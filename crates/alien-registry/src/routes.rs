//! The `/v2/` routes of the OCI Distribution Specification v1.1.
//!
//! Names may have any number of path segments, so one wildcard route parses the rest of the path
//! itself (`<name>/blobs/...`, `<name>/manifests/<ref>`, `<name>/tags/list`,
//! `<name>/referrers/<digest>`, `_catalog`). Bodies stream through [`BlobStore`]; only manifests
//! (at most 4 MiB) are read whole.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::error::RegistryError;
use crate::manifest::{OCI_INDEX, Referenced, parse_manifest};
use crate::reference::{Digest, Reference, RepoName};
use crate::storage::{BlobStore, ByteStream};

/// Largest manifest accepted.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// What a request wants to do, for [`RegistryAccess`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// `GET /v2/`: any valid credential.
    Base,
    /// Read from a repository.
    Pull(&'a RepoName),
    /// Ask whether a blob or manifest exists (HEAD), as pushing clients do before uploading:
    /// allowed to whoever may push or pull the repository.
    Probe(&'a RepoName),
    /// Write to a repository.
    Push(&'a RepoName),
    /// Delete from a repository.
    Delete(&'a RepoName),
    /// List every repository.
    Catalog,
}

/// Decides whether a request's credentials allow an access: 401 `UNAUTHORIZED` without valid
/// credentials, 403 `DENIED` when they do not reach that far.
#[async_trait::async_trait]
pub trait RegistryAccess: Send + Sync {
    /// `Ok` when allowed.
    async fn check(&self, headers: &HeaderMap, access: Access<'_>) -> Result<(), RegistryError>;
}

#[derive(Clone)]
struct Registry {
    blobs: Arc<dyn BlobStore>,
    access: Arc<dyn RegistryAccess>,
}

/// The `/v2` routes over `blobs`, guarded by `access`.
pub fn router(blobs: Arc<dyn BlobStore>, access: Arc<dyn RegistryAccess>) -> Router {
    Router::new()
        .route("/v2/", any(base))
        .route("/v2", any(base))
        .route("/v2/{*rest}", any(dispatch))
        .with_state(Registry { blobs, access })
}

async fn base(State(reg): State<Registry>, method: Method, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return RegistryError::unsupported(format!("{method} /v2/")).into_response();
    }
    match reg.access.check(&headers, Access::Base).await {
        Ok(()) => with_api_version((StatusCode::OK, axum::Json(json!({}))).into_response()),
        Err(e) => with_api_version(e.into_response()),
    }
}

fn with_api_version(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    response
}

/// What the path after `/v2/` names.
enum Route {
    Catalog,
    Tags(String),
    Manifest(String, String),
    Uploads(String, Option<String>),
    Blob(String, String),
    Referrers(String, String),
}

fn parse_route(rest: &str) -> Option<Route> {
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name.to_owned()));
    }
    if let Some(i) = rest.rfind("/blobs/uploads") {
        let name = &rest[..i];
        let tail = &rest[i + "/blobs/uploads".len()..];
        let id = tail.trim_start_matches('/');
        return Some(Route::Uploads(name.to_owned(), (!id.is_empty()).then(|| id.to_owned())));
    }
    for (marker, make) in [
        ("/manifests/", Route::Manifest as fn(String, String) -> Route),
        ("/blobs/", Route::Blob),
        ("/referrers/", Route::Referrers),
    ] {
        if let Some(i) = rest.rfind(marker) {
            return Some(make(rest[..i].to_owned(), rest[i + marker.len()..].to_owned()));
        }
    }
    None
}

async fn dispatch(
    State(reg): State<Registry>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let result = handle(&reg, &rest, &query, request).await;
    with_api_version(result.unwrap_or_else(IntoResponse::into_response))
}

async fn handle(
    reg: &Registry,
    rest: &str,
    query: &HashMap<String, String>,
    request: Request,
) -> Result<Response, RegistryError> {
    let method = request.method().clone();
    let headers = request.headers().clone();
    let route = parse_route(rest).ok_or_else(|| RegistryError::name_invalid(rest))?;
    if let Route::Catalog = route {
        reg.access.check(&headers, Access::Catalog).await?;
        return match method {
            Method::GET => catalog(reg, query).await,
            _ => Err(RegistryError::unsupported(format!("{method} on the catalog"))),
        };
    }
    let name = match &route {
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Uploads(n, _)
        | Route::Blob(n, _)
        | Route::Referrers(n, _) => n,
        Route::Catalog => return Err(RegistryError::name_invalid(rest)),
    };
    let repo = RepoName::parse(name)?;
    let access = match (&route, &method) {
        // Every request on an upload session is part of pushing, its status GET included.
        (Route::Uploads(..), _) => Access::Push(&repo),
        (_, &Method::HEAD) => Access::Probe(&repo),
        (_, &Method::GET) => Access::Pull(&repo),
        (_, &Method::DELETE) => Access::Delete(&repo),
        _ => Access::Push(&repo),
    };
    reg.access.check(&headers, access).await?;
    match (route, method.clone()) {
        (Route::Tags(_), Method::GET) => tags(reg, &repo, query).await,
        (Route::Manifest(_, r), Method::GET) => get_manifest(reg, &repo, &r, true).await,
        (Route::Manifest(_, r), Method::HEAD) => get_manifest(reg, &repo, &r, false).await,
        (Route::Manifest(_, r), Method::PUT) => put_manifest(reg, &repo, &r, request).await,
        (Route::Manifest(_, r), Method::DELETE) => delete_manifest(reg, &repo, &r).await,
        (Route::Blob(_, d), Method::GET) => get_blob(reg, &repo, &d, &headers, true).await,
        (Route::Blob(_, d), Method::HEAD) => get_blob(reg, &repo, &d, &headers, false).await,
        (Route::Blob(_, d), Method::DELETE) => delete_blob(reg, &repo, &d).await,
        (Route::Uploads(_, None), Method::POST) => {
            start_upload(reg, &repo, query, &headers, request).await
        }
        (Route::Uploads(_, Some(id)), Method::PATCH) => {
            patch_upload(reg, &repo, &id, request).await
        }
        (Route::Uploads(_, Some(id)), Method::PUT) => {
            put_upload(reg, &repo, &id, query, request).await
        }
        (Route::Uploads(_, Some(id)), Method::GET) => upload_status(reg, &repo, &id).await,
        (Route::Uploads(_, Some(id)), Method::DELETE) => {
            reg.blobs.cancel_upload(&id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Route::Referrers(_, d), Method::GET) => referrers(reg, &repo, &d, query).await,
        (_, method) => {
            Err(RegistryError::unsupported(format!("{method} is not supported on /v2/{rest}")))
        }
    }
}

fn header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn body_stream(request: Request) -> ByteStream {
    request.into_body().into_data_stream().map(|r| r.map_err(std::io::Error::other)).boxed()
}

/// `n` and `last` of list routes.
fn page<'a>(
    items: &'a [String],
    query: &HashMap<String, String>,
) -> Result<(&'a [String], bool), RegistryError> {
    let start = match query.get("last") {
        Some(last) => items.partition_point(|t| t.as_str() <= last.as_str()),
        None => 0,
    };
    let rest = &items[start..];
    match query.get("n") {
        Some(n) => {
            let n: usize = n
                .parse()
                .map_err(|_| RegistryError::size_invalid(format!("n={n} is not a number")))?;
            Ok((&rest[..n.min(rest.len())], n < rest.len()))
        }
        None => Ok((rest, false)),
    }
}

fn link_next(response: &mut Response, path: &str, n: &str, last: Option<&String>) {
    if let Some(last) = last {
        header(response, "link", &format!("<{path}?n={n}&last={last}>; rel=\"next\""));
    }
}

async fn tags(
    reg: &Registry,
    repo: &RepoName,
    query: &HashMap<String, String>,
) -> Result<Response, RegistryError> {
    let all = reg.blobs.list_tags(repo).await?;
    if all.is_empty() && !reg.blobs.repository_exists(repo).await? {
        return Err(RegistryError::name_unknown(repo));
    }
    let (page, more) = page(&all, query)?;
    let mut response = axum::Json(json!({"name": repo.as_str(), "tags": page})).into_response();
    if more {
        link_next(
            &mut response,
            &format!("/v2/{repo}/tags/list"),
            query.get("n").map_or("", String::as_str),
            page.last(),
        );
    }
    Ok(response)
}

async fn catalog(
    reg: &Registry,
    query: &HashMap<String, String>,
) -> Result<Response, RegistryError> {
    let all = reg.blobs.list_repositories().await?;
    let (page, more) = page(&all, query)?;
    let mut response = axum::Json(json!({"repositories": page})).into_response();
    if more {
        link_next(
            &mut response,
            "/v2/_catalog",
            query.get("n").map_or("", String::as_str),
            page.last(),
        );
    }
    Ok(response)
}

/// The digest a manifest reference names in `repo`, if the manifest is there.
async fn resolve(
    reg: &Registry,
    repo: &RepoName,
    reference: &str,
) -> Result<(Digest, String), RegistryError> {
    let digest = match Reference::parse(reference)? {
        Reference::Digest(d) => d,
        Reference::Tag(tag) => reg
            .blobs
            .resolve_tag(repo, &tag)
            .await?
            .ok_or_else(|| RegistryError::manifest_unknown(reference))?,
    };
    let media_type = reg
        .blobs
        .manifest_media_type(repo, &digest)
        .await?
        .ok_or_else(|| RegistryError::manifest_unknown(reference))?;
    Ok((digest, media_type))
}

async fn get_manifest(
    reg: &Registry,
    repo: &RepoName,
    reference: &str,
    with_body: bool,
) -> Result<Response, RegistryError> {
    let (digest, media_type) = resolve(reg, repo, reference).await?;
    let bytes = reg
        .blobs
        .read_small(&digest, MAX_MANIFEST_BYTES)
        .await?
        .ok_or_else(|| RegistryError::manifest_unknown(reference))?;
    let length = bytes.len();
    let mut response =
        if with_body { Body::from(bytes).into_response() } else { Body::empty().into_response() };
    header(&mut response, "content-type", &media_type);
    header(&mut response, "docker-content-digest", &digest.to_string());
    header(&mut response, "content-length", &length.to_string());
    Ok(response)
}

async fn put_manifest(
    reg: &Registry,
    repo: &RepoName,
    reference: &str,
    request: Request,
) -> Result<Response, RegistryError> {
    let reference = Reference::parse(reference)?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limit = usize::try_from(MAX_MANIFEST_BYTES).unwrap_or(usize::MAX);
    let bytes = axum::body::to_bytes(request.into_body(), limit).await.map_err(|_| {
        RegistryError::size_invalid(format!(
            "manifest larger than {MAX_MANIFEST_BYTES} bytes or body failed"
        ))
    })?;
    let checked = parse_manifest(content_type.as_deref(), &bytes)?;
    check_references(reg, repo, &checked.references).await?;
    let media_type = checked.media_type.as_str();
    let digest = Digest::sha256_of(&bytes);
    if let Reference::Digest(claimed) = &reference
        && claimed.to_string() != digest.to_string()
    {
        let actual = match claimed.algorithm() {
            crate::reference::Algorithm::Sha256 => digest.clone(),
            crate::reference::Algorithm::Sha512 => {
                use sha2::Digest as _;
                Digest::from_raw(crate::reference::Algorithm::Sha512, &sha2::Sha512::digest(&bytes))
            }
        };
        if actual != *claimed {
            return Err(RegistryError::digest_invalid(claimed));
        }
    }
    let size = bytes.len() as u64;
    reg.blobs.put_small(bytes).await?;
    let stored = match &reference {
        Reference::Digest(d) => d.clone(),
        Reference::Tag(_) => digest.clone(),
    };
    reg.blobs.link_manifest(repo, &stored, media_type).await?;
    if stored != digest {
        reg.blobs.link_manifest(repo, &digest, media_type).await?;
    }
    if let Reference::Tag(tag) = &reference {
        reg.blobs.set_tag(repo, tag, &digest).await?;
    }
    let mut response = StatusCode::CREATED.into_response();
    if let Some(subject) = &checked.subject {
        let descriptor = json!({
            "mediaType": media_type,
            "digest": stored.to_string(),
            "size": size,
            "artifactType": checked.artifact_type,
            "annotations": checked.annotations,
        });
        let mut descriptor = descriptor;
        if let Some(obj) = descriptor.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
        }
        reg.blobs.add_referrer(repo, subject, &stored, &descriptor).await?;
        header(&mut response, "oci-subject", &subject.to_string());
    }
    header(&mut response, "location", &format!("/v2/{repo}/manifests/{stored}"));
    header(&mut response, "docker-content-digest", &stored.to_string());
    Ok(response)
}

/// A descriptor's `size` must be the size of the content it names: a client trusting the
/// manifest would otherwise read a different length than it was told (Distribution accepts the
/// mismatch; this registry does not).
async fn check_size(reg: &Registry, digest: &Digest, declared: u64) -> Result<(), RegistryError> {
    match reg.blobs.blob_size(digest).await? {
        Some(stored) if stored != declared => Err(RegistryError::manifest_invalid(format!(
            "the descriptor of {digest} says {declared} bytes; the content holds {stored}"
        ))),
        _ => Ok(()),
    }
}

/// Every reference of a manifest exists in `repo` (a blob linked to it, or a manifest in it),
/// with the size its descriptor gives.
async fn check_references(
    reg: &Registry,
    repo: &RepoName,
    references: &[Referenced],
) -> Result<(), RegistryError> {
    for reference in references {
        let (digest, size, present) = match reference {
            Referenced::Blob { digest, size } => {
                (digest, *size, reg.blobs.has_blob_link(repo, digest).await?)
            }
            Referenced::Manifest { digest, size } => {
                (digest, *size, reg.blobs.manifest_media_type(repo, digest).await?.is_some())
            }
        };
        if !present {
            return Err(RegistryError::manifest_blob_unknown(digest));
        }
        check_size(reg, digest, size).await?;
    }
    Ok(())
}

async fn delete_manifest(
    reg: &Registry,
    repo: &RepoName,
    reference: &str,
) -> Result<Response, RegistryError> {
    match Reference::parse(reference)? {
        Reference::Tag(tag) => {
            if !reg.blobs.delete_tag(repo, &tag).await? {
                return Err(RegistryError::manifest_unknown(reference));
            }
        }
        Reference::Digest(digest) => {
            if !reg.blobs.unlink_manifest(repo, &digest).await? {
                return Err(RegistryError::manifest_unknown(reference));
            }
        }
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The `Range` of a blob GET: `bytes=a-b` or `bytes=a-` as `(a, Some(b))` or `(a, None)`; `None`
/// without the header; `RANGE_NOT_SATISFIABLE` for any other value.
pub fn parse_range(headers: &HeaderMap) -> Result<Option<(u64, Option<u64>)>, RegistryError> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let spec = value
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(|| RegistryError::range_not_satisfiable(0))?;
    let (a, b) = spec.split_once('-').ok_or_else(|| RegistryError::range_not_satisfiable(0))?;
    let start: u64 = a.trim().parse().map_err(|_| RegistryError::range_not_satisfiable(0))?;
    let end = if b.trim().is_empty() {
        None
    } else {
        Some(b.trim().parse::<u64>().map_err(|_| RegistryError::range_not_satisfiable(0))?)
    };
    Ok(Some((start, end)))
}

async fn get_blob(
    reg: &Registry,
    repo: &RepoName,
    digest: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Response, RegistryError> {
    let digest = Digest::parse(digest)?;
    if !reg.blobs.has_blob_link(repo, &digest).await?
        && reg.blobs.manifest_media_type(repo, &digest).await?.is_none()
    {
        return Err(RegistryError::blob_unknown(&digest));
    }
    let range = parse_range(headers)?;
    if !with_body {
        let size = reg
            .blobs
            .blob_size(&digest)
            .await?
            .ok_or_else(|| RegistryError::blob_unknown(&digest))?;
        let mut response = StatusCode::OK.into_response();
        header(&mut response, "content-length", &size.to_string());
        header(&mut response, "docker-content-digest", &digest.to_string());
        header(&mut response, "content-type", "application/octet-stream");
        header(&mut response, "accept-ranges", "bytes");
        return Ok(response);
    }
    let wanted: Option<Range<u64>> =
        range.map(|(start, end)| start..end.map_or(u64::MAX, |e| e.saturating_add(1)));
    let read = reg
        .blobs
        .read_blob(&digest, wanted)
        .await?
        .ok_or_else(|| RegistryError::blob_unknown(&digest))?;
    let partial = range.is_some();
    let length = read.range.end - read.range.start;
    let mut response = Response::new(Body::from_stream(read.body));
    if partial {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        header(
            &mut response,
            "content-range",
            &format!(
                "bytes {}-{}/{}",
                read.range.start,
                read.range.end.saturating_sub(1),
                read.size
            ),
        );
    }
    header(&mut response, "content-length", &length.to_string());
    header(&mut response, "docker-content-digest", &digest.to_string());
    header(&mut response, "content-type", "application/octet-stream");
    header(&mut response, "accept-ranges", "bytes");
    Ok(response)
}

async fn delete_blob(
    reg: &Registry,
    repo: &RepoName,
    digest: &str,
) -> Result<Response, RegistryError> {
    let digest = Digest::parse(digest)?;
    if !reg.blobs.unlink_blob(repo, &digest).await? {
        return Err(RegistryError::blob_unknown(&digest));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

fn upload_response(status: StatusCode, repo: &RepoName, id: &str, offset: u64) -> Response {
    let mut response = status.into_response();
    header(&mut response, "location", &format!("/v2/{repo}/blobs/uploads/{id}"));
    header(&mut response, "docker-upload-uuid", id);
    header(&mut response, "range", &format!("0-{}", offset.saturating_sub(1)));
    header(&mut response, "content-length", "0");
    response
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    header(&mut response, "location", &format!("/v2/{repo}/blobs/{digest}"));
    header(&mut response, "docker-content-digest", &digest.to_string());
    header(&mut response, "content-length", "0");
    response
}

async fn start_upload(
    reg: &Registry,
    repo: &RepoName,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    request: Request,
) -> Result<Response, RegistryError> {
    if let (Some(mount), Some(from)) = (query.get("mount"), query.get("from")) {
        let digest = Digest::parse(mount)?;
        let source = RepoName::parse(from)?;
        // Mounting reads the source: the caller must be allowed to pull it.
        if reg.access.check(headers, Access::Pull(&source)).await.is_ok()
            && reg.blobs.has_blob_link(&source, &digest).await?
            && reg.blobs.blob_size(&digest).await?.is_some()
        {
            reg.blobs.link_blob(repo, &digest).await?;
            return Ok(blob_created(repo, &digest));
        }
    }
    let id = reg.blobs.start_upload().await?;
    if let Some(digest) = query.get("digest") {
        let digest = Digest::parse(digest)?;
        reg.blobs.append_upload(&id, 0, body_stream(request), None).await?;
        reg.blobs.finish_upload(&id, &digest).await?;
        reg.blobs.link_blob(repo, &digest).await?;
        return Ok(blob_created(repo, &digest));
    }
    Ok(upload_response(StatusCode::ACCEPTED, repo, &id, 0))
}

/// `(start, length)` of a chunk upload's `Content-Range: <start>-<end>` header (inclusive end), if
/// given; `RANGE_INVALID` for a value that is not one.
pub fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, RegistryError> {
    let Some(value) = headers.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let value = value.trim().trim_start_matches("bytes").trim_start_matches([' ', '=']);
    let bad = || RegistryError::range_invalid_header(value);
    let (start, end) = value.split_once('-').ok_or_else(bad)?;
    let start: u64 = start.trim().parse().map_err(|_| bad())?;
    let end: u64 = end.split('/').next().unwrap_or_default().trim().parse().map_err(|_| bad())?;
    // `0-18446744073709551615` is 2^64 bytes: more than a length can say.
    let length = end.checked_sub(start).and_then(|n| n.checked_add(1)).ok_or_else(bad)?;
    Ok(Some((start, length)))
}

async fn patch_upload(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
    request: Request,
) -> Result<Response, RegistryError> {
    let current = reg.blobs.upload_offset(id).await?;
    let range = content_range(request.headers())?;
    let offset = range.map_or(current, |(start, _)| start);
    let end = reg
        .blobs
        .append_upload(id, offset, body_stream(request), range.map(|(_, len)| len))
        .await?;
    Ok(upload_response(StatusCode::ACCEPTED, repo, id, end))
}

async fn put_upload(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
    query: &HashMap<String, String>,
    request: Request,
) -> Result<Response, RegistryError> {
    let digest =
        query.get("digest").ok_or_else(|| RegistryError::digest_invalid("(missing ?digest=)"))?;
    let digest = Digest::parse(digest)?;
    let current = reg.blobs.upload_offset(id).await?;
    let range = content_range(request.headers())?;
    let offset = range.map_or(current, |(start, _)| start);
    reg.blobs.append_upload(id, offset, body_stream(request), range.map(|(_, len)| len)).await?;
    reg.blobs.finish_upload(id, &digest).await?;
    reg.blobs.link_blob(repo, &digest).await?;
    Ok(blob_created(repo, &digest))
}

async fn upload_status(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
) -> Result<Response, RegistryError> {
    let offset = reg.blobs.upload_offset(id).await?;
    Ok(upload_response(StatusCode::NO_CONTENT, repo, id, offset))
}

async fn referrers(
    reg: &Registry,
    repo: &RepoName,
    digest: &str,
    query: &HashMap<String, String>,
) -> Result<Response, RegistryError> {
    let subject = Digest::parse(digest)?;
    let mut manifests = reg.blobs.list_referrers(repo, &subject).await?;
    let filter = query.get("artifactType");
    if let Some(wanted) = filter {
        manifests
            .retain(|d| d.get("artifactType").and_then(Value::as_str) == Some(wanted.as_str()));
    }
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut response = axum::Json(body).into_response();
    header(&mut response, "content-type", OCI_INDEX);
    if filter.is_some() {
        header(&mut response, "oci-filters-applied", "artifactType");
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn content_ranges_give_start_and_length() {
        let range = |v| content_range(&with(header::CONTENT_RANGE, v));
        assert_eq!(content_range(&HeaderMap::new()).unwrap(), None);
        assert_eq!(range("0-9").unwrap(), Some((0, 10)));
        assert_eq!(range("bytes 5-5/100").unwrap(), Some((5, 1)));
        for bad in ["9-0", "a-b", "5", "-", "0-18446744073709551616"] {
            assert!(range(bad).is_err(), "{bad}");
        }
    }

    /// Found by review while writing the `oci_reference` fuzz target: `end - start + 1` overflowed
    /// (a panic where overflow checks are on, a zero length where they are not).
    #[test]
    fn a_content_range_of_two_to_the_64_bytes_is_refused() {
        for value in ["0-18446744073709551615", "bytes 0-18446744073709551615/*"] {
            let err = content_range(&with(header::CONTENT_RANGE, value)).unwrap_err();
            assert_eq!(err.status, StatusCode::RANGE_NOT_SATISFIABLE, "{value}");
        }
        let last = content_range(&with(header::CONTENT_RANGE, "1-18446744073709551615"));
        assert_eq!(last.unwrap(), Some((1, u64::MAX)));
    }

    #[test]
    fn ranges_are_start_and_optional_end() {
        let range = |v| parse_range(&with(header::RANGE, v));
        assert_eq!(parse_range(&HeaderMap::new()).unwrap(), None);
        assert_eq!(range("bytes=0-9").unwrap(), Some((0, Some(9))));
        assert_eq!(range("bytes=7-").unwrap(), Some((7, None)));
        for bad in ["0-9", "bytes=", "bytes=-5", "bytes=x-1"] {
            assert!(range(bad).is_err(), "{bad}");
        }
    }
}
