//! Pull checks: the API version endpoint, blobs (HEAD, GET, ranges, unknown digests) and
//! manifests of every supported media type, by tag and by digest, returned byte for byte as pushed.

use reqwest::Method;

use crate::content::{Blob, Manifest, unknown_digest};
use crate::fixtures::{expect_manifest, fetch_manifest, push_image, push_manifest, upload_blob};
use crate::{Category, Cx, declare_checks};

declare_checks!(Category::Pull;
    api_version,
    api_version_challenge,
    blob_head,
    blob_get,
    blob_get_range,
    blob_unknown,
    manifest_get_by_tag,
    manifest_get_by_digest,
    manifest_head,
    manifest_unknown,
    oci_index_round_trip,
    docker_manifest_round_trip,
    docker_manifest_list_round_trip,
    multi_segment_name,
    content_repository_scoped,
    repository_unknown,
);

/// `GET /v2/` answers 200 to the target's client (with its credentials, when it has any).
async fn api_version(cx: &Cx<'_>) -> Result<(), String> {
    let response = cx.reg().request(Method::GET, "/v2/")?.send().await?;
    response.expect_status(&[200])
}

/// Without credentials `GET /v2/` is 401 with a `WWW-Authenticate` challenge when the target
/// needs credentials, wrong ones are refused too, and the target's own are accepted; an open
/// registry answers 200. Strict: credentials are required (the embedded registry always demands
/// them) and each 401 carries `UNAUTHORIZED`.
async fn api_version_challenge(cx: &Cx<'_>) -> Result<(), String> {
    let reg = cx.reg();
    let anonymous = reg.anonymous(Method::GET, "/v2/")?.send().await?;
    if !reg.has_credentials() {
        if cx.strict() {
            return Err("a strict run needs the target's credentials: the embedded registry \
                        demands them"
                .to_owned());
        }
        return anonymous.expect_status(&[200]);
    }
    let refused = |response: &crate::client::Response| {
        if cx.strict() {
            response.expect_error(&[401], &["UNAUTHORIZED"])
        } else {
            response.expect_status(&[401])
        }
    };
    refused(&anonymous)?;
    anonymous.require_header("WWW-Authenticate")?;
    let wrong = ("conformance".to_owned(), format!("wrong-{}", crate::content::random_token()?));
    let wrong = reg.with_credentials(Method::GET, "/v2/", &wrong)?.send().await?;
    refused(&wrong)?;
    wrong.require_header("WWW-Authenticate")?;
    // The challenge means something only if the right credentials get in.
    let accepted = reg.request(Method::GET, "/v2/")?.send().await?;
    accepted.expect_status(&[200])
}

/// `HEAD` of a pushed blob: 200, its `Content-Length` and `Docker-Content-Digest`, no body.
async fn blob_head(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let blob = Blob::random(3001)?;
    upload_blob(cx.reg(), &repo, &blob).await?;
    let response = cx
        .reg()
        .request(Method::HEAD, &format!("/v2/{repo}/blobs/{}", blob.digest))?
        .send()
        .await?;
    response.expect_status(&[200])?;
    response.expect_content_length(blob.bytes.len())?;
    response.expect_header("Docker-Content-Digest", &blob.digest)?;
    if !response.body.is_empty() {
        return Err(response.fail("an empty body for HEAD"));
    }
    Ok(())
}

/// `GET` of a pushed blob: 200 with exactly its bytes, `Content-Length` and
/// `Docker-Content-Digest`.
async fn blob_get(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let blob = Blob::random(70_001)?;
    upload_blob(cx.reg(), &repo, &blob).await?;
    let response =
        cx.reg().request(Method::GET, &format!("/v2/{repo}/blobs/{}", blob.digest))?.send().await?;
    response.expect_status(&[200])?;
    response.expect_body(&blob.bytes)?;
    response.expect_content_length(blob.bytes.len())?;
    response.expect_header("Docker-Content-Digest", &blob.digest)
}

/// `Range: bytes=a-b` and `bytes=a-` on a blob: 206, exactly that slice, and a matching
/// `Content-Range: bytes a-b/size`.
async fn blob_get_range(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let blob = Blob::random(4096)?;
    upload_blob(cx.reg(), &repo, &blob).await?;
    let size = blob.bytes.len();
    for (range, start, end) in [("bytes=100-1099", 100, 1099), ("bytes=4000-", 4000, size - 1)] {
        let response = cx
            .reg()
            .request(Method::GET, &format!("/v2/{repo}/blobs/{}", blob.digest))?
            .header("Range", range)
            .send()
            .await?;
        response.expect_status(&[206]).map_err(|e| format!("{e} (Range: {range})"))?;
        response.expect_header("Content-Range", &format!("bytes {start}-{end}/{size}"))?;
        response.expect_body(&blob.bytes[start..=end]).map_err(|e| {
            format!("{e} (Range: {range} asks for bytes {start} to {end} inclusive)")
        })?;
    }
    Ok(())
}

/// An unknown digest in a repository that exists: GET and HEAD are 404; GET carries
/// `BLOB_UNKNOWN`.
async fn blob_unknown(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    upload_blob(cx.reg(), &repo, &Blob::random(100)?).await?;
    let digest = unknown_digest()?;
    let path = format!("/v2/{repo}/blobs/{digest}");
    let get = cx.reg().request(Method::GET, &path)?.send().await?;
    get.expect_error(&[404], &["BLOB_UNKNOWN"])?;
    let head = cx.reg().request(Method::HEAD, &path)?.send().await?;
    head.expect_status(&[404])
}

/// An OCI image manifest pulled by tag: exactly the pushed bytes, its media type and digest.
async fn manifest_get_by_tag(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let image = push_image(cx.reg(), &repo, Some("v1.0"), 512).await?;
    let response = fetch_manifest(cx.reg(), Method::GET, &repo, "v1.0").await?;
    response.expect_status(&[200])?;
    response.expect_body(&image.manifest.bytes)?;
    response.expect_content_type(image.manifest.media_type)?;
    response.expect_header("Docker-Content-Digest", &image.manifest.digest)
}

/// An OCI image manifest pushed by digest and pulled by digest: exact bytes, type and digest.
async fn manifest_get_by_digest(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let image = push_image(cx.reg(), &repo, None, 512).await?;
    let response = fetch_manifest(cx.reg(), Method::GET, &repo, &image.manifest.digest).await?;
    response.expect_status(&[200])?;
    response.expect_body(&image.manifest.bytes)?;
    response.expect_content_type(image.manifest.media_type)?;
    response.expect_header("Docker-Content-Digest", &image.manifest.digest)
}

/// `HEAD` of a manifest by tag and by digest: 200, type, length, digest, no body.
async fn manifest_head(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let image = push_image(cx.reg(), &repo, Some("latest"), 512).await?;
    for reference in ["latest", image.manifest.digest.as_str()] {
        let response = fetch_manifest(cx.reg(), Method::HEAD, &repo, reference).await?;
        response.expect_status(&[200])?;
        response.expect_content_type(image.manifest.media_type)?;
        response.expect_content_length(image.manifest.bytes.len())?;
        response.expect_header("Docker-Content-Digest", &image.manifest.digest)?;
        if !response.body.is_empty() {
            return Err(response.fail("an empty body for HEAD"));
        }
    }
    Ok(())
}

/// In a repository that exists, an unknown tag and an unknown digest are 404 `MANIFEST_UNKNOWN`
/// (GET) and 404 (HEAD).
async fn manifest_unknown(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    push_image(cx.reg(), &repo, Some("present"), 64).await?;
    for reference in ["absent".to_owned(), unknown_digest()?] {
        let get = fetch_manifest(cx.reg(), Method::GET, &repo, &reference).await?;
        get.expect_error(&[404], &["MANIFEST_UNKNOWN"])?;
        let head = fetch_manifest(cx.reg(), Method::HEAD, &repo, &reference).await?;
        head.expect_status(&[404])?;
    }
    Ok(())
}

/// An OCI image index over two images round-trips byte for byte with its media type, by tag and
/// by digest.
async fn oci_index_round_trip(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let amd64 = push_image(cx.reg(), &repo, None, 256).await?;
    let arm64 = push_image(cx.reg(), &repo, None, 256).await?;
    let index = Manifest::oci_index(&[&amd64.manifest, &arm64.manifest])?;
    push_manifest(cx.reg(), &repo, Some("multi"), &index).await?;
    expect_manifest(cx.reg(), &repo, "multi", &index).await?;
    expect_manifest(cx.reg(), &repo, &index.digest, &index).await
}

/// A Docker schema 2 manifest round-trips byte for byte with its media type.
async fn docker_manifest_round_trip(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let manifest = push_docker_image(cx, &repo, Some("docker")).await?;
    expect_manifest(cx.reg(), &repo, "docker", &manifest).await?;
    expect_manifest(cx.reg(), &repo, &manifest.digest, &manifest).await
}

/// A Docker manifest list over two schema 2 manifests round-trips byte for byte.
async fn docker_manifest_list_round_trip(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let first = push_docker_image(cx, &repo, None).await?;
    let second = push_docker_image(cx, &repo, None).await?;
    let list = Manifest::docker_list(&[&first, &second])?;
    push_manifest(cx.reg(), &repo, Some("list"), &list).await?;
    expect_manifest(cx.reg(), &repo, "list", &list).await?;
    expect_manifest(cx.reg(), &repo, &list.digest, &list).await
}

/// A name of many components using every separator of the grammar (`.`, `_`, `__`, `-`, `--`)
/// can be pushed to and pulled from.
async fn multi_segment_name(cx: &Cx<'_>) -> Result<(), String> {
    let repo = format!("{}/a.b/c_d/e__f/g--h/i-j/0", cx.repo()?);
    let image = push_image(cx.reg(), &repo, Some("deep"), 128).await?;
    expect_manifest(cx.reg(), &repo, "deep", &image.manifest).await?;
    crate::fixtures::expect_blob(cx.reg(), &repo, &image.layer).await
}

/// A blob and a manifest pushed to one repository are 404 in another repository of the same
/// registry (content is shared by digest in storage, but visible per repository).
async fn content_repository_scoped(cx: &Cx<'_>) -> Result<(), String> {
    let base = cx.repo()?;
    let (owner, other) = (format!("{base}/owner"), format!("{base}/other"));
    let image = push_image(cx.reg(), &owner, Some("mine"), 256).await?;
    push_image(cx.reg(), &other, Some("theirs"), 256).await?;
    let blob = cx
        .reg()
        .request(Method::GET, &format!("/v2/{other}/blobs/{}", image.layer.digest))?
        .send()
        .await?;
    blob.expect_error(&[404], &["BLOB_UNKNOWN"])?;
    let manifest = fetch_manifest(cx.reg(), Method::GET, &other, &image.manifest.digest).await?;
    manifest.expect_error(&[404], &["MANIFEST_UNKNOWN"])?;
    let tag = fetch_manifest(cx.reg(), Method::GET, &other, "mine").await?;
    tag.expect_error(&[404], &["MANIFEST_UNKNOWN"])
}

/// A repository nothing was ever pushed to: the manifest and blob that a sibling repository holds
/// are 404 there (with `NAME_UNKNOWN` or the object's own unknown code), and so is its tag list
/// (`NAME_UNKNOWN`). The sibling answers 200 to the same requests first.
async fn repository_unknown(cx: &Cx<'_>) -> Result<(), String> {
    let base = cx.repo()?;
    let (known, unknown) = (format!("{base}/known"), format!("{base}/unknown"));
    let image = push_image(cx.reg(), &known, Some("latest"), 64).await?;
    expect_manifest(cx.reg(), &known, "latest", &image.manifest)
        .await
        .map_err(|e| format!("setup: {e}"))?;
    crate::fixtures::list_tags(cx.reg(), &known, "").await.map_err(|e| format!("setup: {e}"))?;
    let manifest = fetch_manifest(cx.reg(), Method::GET, &unknown, "latest").await?;
    manifest.expect_error(&[404], &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"])?;
    let blob = cx
        .reg()
        .request(Method::GET, &format!("/v2/{unknown}/blobs/{}", image.layer.digest))?
        .send()
        .await?;
    blob.expect_error(&[404], &["NAME_UNKNOWN", "BLOB_UNKNOWN"])?;
    let tags = cx.reg().request(Method::GET, &format!("/v2/{unknown}/tags/list"))?.send().await?;
    tags.expect_error(&[404], &["NAME_UNKNOWN"])
}

/// Pushes a Docker schema 2 image (config + one layer) and returns its manifest.
async fn push_docker_image(cx: &Cx<'_>, repo: &str, tag: Option<&str>) -> Result<Manifest, String> {
    let config = Blob::config()?;
    let layer = Blob::random(300)?;
    upload_blob(cx.reg(), repo, &config).await?;
    upload_blob(cx.reg(), repo, &layer).await?;
    let manifest = Manifest::docker_image(&config, &[&layer])?;
    push_manifest(cx.reg(), repo, tag, &manifest).await?;
    Ok(manifest)
}
