//! Push checks: every blob upload flow (single POST, POST then PUT, chunked PATCHes with the last
//! chunk in a PATCH or in the PUT), upload status, out-of-order chunks, cancel, digest mismatches,
//! cross-repository mounts, manifest PUT responses, and the rejection of manifests that reference
//! missing content, of invalid names, tags and digests.

use reqwest::Method;
use url::Url;

use crate::client::{Registry, Response};
use crate::content::{Blob, Manifest, random_token, sha256_digest, unknown_digest};
use crate::fixtures::{
    expect_blob, expect_blob_gone, expect_manifest, expect_manifest_gone, list_tags, push_image,
    put_manifest, start_upload, upload_blob, with_digest,
};
use crate::{Category, Cx, declare_checks};

declare_checks!(Category::Push;
    blob_push_single_post,
    blob_push_post_put,
    blob_push_chunked,
    blob_push_chunked_final_in_put,
    blob_push_streamed,
    blob_push_empty,
    blob_push_sha512,
    blob_upload_status,
    blob_chunk_out_of_order,
    blob_upload_cancel,
    blob_upload_unknown,
    blob_digest_mismatch,
    blob_digest_invalid,
    blob_mount,
    blob_mount_missing,
    manifest_put_by_tag,
    manifest_put_by_digest,
    tag_overwrite,
    manifest_digest_mismatch,
    manifest_blob_unknown,
    index_manifest_unknown,
    manifest_subject_missing,
    name_invalid,
    name_too_long,
    tag_invalid,
);

/// Smallest chunk the chunked checks send when the registry states no minimum.
const DEFAULT_CHUNK: usize = 1000;
/// Largest `OCI-Chunk-Min-Length` the suite is willing to honour (it keeps whole blobs in memory).
const MAX_CHUNK: usize = 32 << 20;

/// Single-request monolithic upload, `POST .../blobs/uploads/?digest=<d>` with the body: 201 with a
/// `Location` that serves the blob. (Optional in the spec, where a registry may answer 202 and
/// expect a PUT; required here because the embedded registry offers it.)
async fn blob_push_single_post(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let blob = Blob::random(2049)?;
    let response = cx
        .reg()
        .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest))?
        .header("Content-Type", "application/octet-stream")
        .body(blob.bytes.clone())
        .send()
        .await?;
    response.expect_status(&[201])?;
    expect_location_serves(cx.reg(), &response, &blob).await?;
    expect_blob(cx.reg(), &repo, &blob).await
}

/// `POST` opens a session (202 + `Location`), `PUT <location>?digest=` with the whole body
/// finishes it (201 + `Location` serving the blob).
async fn blob_push_post_put(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let blob = Blob::random(5000)?;
    let location = start_upload(cx.reg(), &repo).await?;
    let response = cx
        .reg()
        .request_url(Method::PUT, with_digest(location, &blob.digest))
        .header("Content-Type", "application/octet-stream")
        .body(blob.bytes.clone())
        .send()
        .await?;
    response.expect_status(&[201])?;
    response.expect_optional_header("Docker-Content-Digest", &[&blob.digest])?;
    expect_location_serves(cx.reg(), &response, &blob).await?;
    expect_blob(cx.reg(), &repo, &blob).await
}

/// Three `PATCH` chunks (each 202 with `Location` and `Range: 0-<end>`), then a `PUT ?digest=`
/// without a body: 201, and the blob is the concatenation.
async fn blob_push_chunked(cx: &Cx<'_>) -> Result<(), String> {
    push_chunked(cx, false).await
}

/// Two `PATCH` chunks, then the last chunk in the closing `PUT` (with `Content-Range`): 201.
async fn blob_push_chunked_final_in_put(cx: &Cx<'_>) -> Result<(), String> {
    push_chunked(cx, true).await
}

async fn push_chunked(cx: &Cx<'_>, final_in_put: bool) -> Result<(), String> {
    let repo = cx.repo()?;
    let mut session = Session::start(cx.reg(), &repo).await?;
    let blob = Blob::random(session.chunk * 3 - 5)?;
    let chunks: Vec<&[u8]> = blob.bytes.chunks(session.chunk).collect();
    let (last, init) = chunks.split_last().ok_or("setup: empty blob")?;
    for chunk in init {
        session.patch(chunk).await?;
    }
    let response = if final_in_put {
        session.put(&blob.digest, last).await?
    } else {
        session.patch(last).await?;
        session.put(&blob.digest, &[]).await?
    };
    response.expect_status(&[201])?;
    expect_location_serves(cx.reg(), &response, &blob).await?;
    expect_blob(cx.reg(), &repo, &blob).await
}

/// A "streamed" upload as `docker push` does it: one `PATCH` with the whole body and no
/// `Content-Range` (202, `Range: 0-<end>`), then `PUT ?digest=` without a body (201).
async fn blob_push_streamed(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let session = Session::start(cx.reg(), &repo).await?;
    let blob = Blob::random(50_000)?;
    let response = cx
        .reg()
        .request_url(Method::PATCH, session.location.clone())
        .header("Content-Type", "application/octet-stream")
        .body(blob.bytes.clone())
        .send()
        .await?;
    response.expect_status(&[202])?;
    response.expect_header("Range", &format!("0-{}", blob.bytes.len() - 1))?;
    let location = response.location(cx.reg())?;
    let done = cx
        .reg()
        .request_url(Method::PUT, with_digest(location, &blob.digest))
        .body(Vec::new())
        .send()
        .await?;
    done.expect_status(&[201])?;
    expect_location_serves(cx.reg(), &done, &blob).await?;
    expect_blob(cx.reg(), &repo, &blob).await
}

/// The empty blob (zero bytes) can be pushed (201) and is served with `Content-Length: 0`.
async fn blob_push_empty(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let blob = Blob::new(Vec::new());
    let location = start_upload(cx.reg(), &repo).await?;
    let response = cx
        .reg()
        .request_url(Method::PUT, with_digest(location, &blob.digest))
        .body(Vec::new())
        .send()
        .await?;
    response.expect_status(&[201])?;
    let head = cx
        .reg()
        .request(Method::HEAD, &format!("/v2/{repo}/blobs/{}", blob.digest))?
        .send()
        .await?;
    head.expect_status(&[200])?;
    head.expect_content_length(0)?;
    expect_blob(cx.reg(), &repo, &blob).await
}

/// A blob pushed and pulled by a `sha512:` digest; a `Docker-Content-Digest`, when sent, matches
/// the content (in either algorithm).
async fn blob_push_sha512(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let bytes = crate::content::random_bytes(3000)?;
    let digest = crate::content::sha512_digest(&bytes);
    let location = start_upload(cx.reg(), &repo).await?;
    let response = cx
        .reg()
        .request_url(Method::PUT, with_digest(location, &digest))
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await?;
    response.expect_status(&[201])?;
    let got = cx.reg().request(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))?.send().await?;
    got.expect_status(&[200])?;
    got.expect_body(&bytes)?;
    got.expect_optional_header("Docker-Content-Digest", &[&digest, &sha256_digest(&bytes)])
}

/// `GET <location>` of an open session: 204 with `Location`, and after a chunk `Range: 0-<end>`.
async fn blob_upload_status(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let mut session = Session::start(cx.reg(), &repo).await?;
    let fresh = session.status().await?;
    fresh.expect_status(&[204])?;
    fresh.require_header("Location")?;
    let data = crate::content::random_bytes(session.chunk)?;
    session.patch(&data).await?;
    let status = session.status().await?;
    status.expect_status(&[204])?;
    status.require_header("Location")?;
    status.expect_header("Range", &format!("0-{}", data.len() - 1))
}

/// A chunk that does not start where the upload ends is refused with 416 (both a first chunk not
/// at 0 and a later chunk that skips ahead); the status still shows the old end, and the upload
/// can go on from there and complete.
async fn blob_chunk_out_of_order(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let first = Session::start(cx.reg(), &repo).await?;
    let blob = Blob::random(first.chunk * 3)?;
    let chunk = first.chunk;
    let not_at_zero = first.patch_raw(&blob.bytes[10..20], 10).await?;
    not_at_zero
        .expect_status(&[416])
        .map_err(|e| format!("{e} (a first chunk with Content-Range: 10-19)"))?;

    let mut session = Session::start(cx.reg(), &repo).await?;
    session.patch(&blob.bytes[..chunk]).await?;
    let skipping = session.patch_raw(&blob.bytes[2 * chunk..], 2 * chunk).await?;
    skipping.expect_status(&[416]).map_err(|e| {
        format!("{e} (Content-Range: {}-{} after 0-{})", 2 * chunk, 3 * chunk - 1, chunk - 1)
    })?;
    let status = session.status().await?;
    status.expect_status(&[204])?;
    status.expect_header("Range", &format!("0-{}", chunk - 1))?;
    session.location = status.location(cx.reg())?;
    session.offset = chunk;
    session.patch(&blob.bytes[chunk..2 * chunk]).await?;
    session.patch(&blob.bytes[2 * chunk..]).await?;
    let done = session.put(&blob.digest, &[]).await?;
    done.expect_status(&[201])?;
    expect_blob(cx.reg(), &repo, &blob).await
}

/// `DELETE <location>` cancels a session (204); its status is then 404 `BLOB_UPLOAD_UNKNOWN`.
async fn blob_upload_cancel(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let mut session = Session::start(cx.reg(), &repo).await?;
    let data = crate::content::random_bytes(session.chunk)?;
    session.patch(&data).await?;
    let cancelled = cx
        .reg()
        .request_url(Method::DELETE, session.location.clone())
        .body(Vec::new())
        .send()
        .await?;
    cancelled.expect_status(&[204])?;
    let status = session.status().await?;
    status.expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])?;
    expect_blob_gone(cx.reg(), &repo, &sha256_digest(&data)).await
}

/// A session id the registry never issued: status and PATCH are 404 `BLOB_UPLOAD_UNKNOWN`.
async fn blob_upload_unknown(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    upload_blob(cx.reg(), &repo, &Blob::random(10)?).await?;
    let id = format!(
        "{}-{}-4{}-8{}-{}",
        hex_token(8)?,
        hex_token(4)?,
        hex_token(3)?,
        hex_token(3)?,
        hex_token(12)?
    );
    let path = format!("/v2/{repo}/blobs/uploads/{id}");
    let status = cx.reg().request(Method::GET, &path)?.send().await?;
    status.expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])?;
    let patch = cx
        .reg()
        .request(Method::PATCH, &path)?
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", "0-9")
        .body(vec![7u8; 10])
        .send()
        .await?;
    patch.expect_error(&[404], &["BLOB_UPLOAD_UNKNOWN"])
}

/// Closing an upload with a digest of other content: 400 `DIGEST_INVALID`, and neither the
/// claimed nor the actual digest is then retrievable.
async fn blob_digest_mismatch(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let blob = Blob::random(1500)?;
    let claimed = unknown_digest()?;
    let location = start_upload(cx.reg(), &repo).await?;
    let response = cx
        .reg()
        .request_url(Method::PUT, with_digest(location, &claimed))
        .header("Content-Type", "application/octet-stream")
        .body(blob.bytes.clone())
        .send()
        .await?;
    response.expect_error(&[400], &["DIGEST_INVALID"])?;
    expect_blob_gone(cx.reg(), &repo, &claimed).await?;
    expect_blob_gone(cx.reg(), &repo, &blob.digest).await
}

/// Closing an upload with a malformed digest (not hex; too short): 400 `DIGEST_INVALID`.
async fn blob_digest_invalid(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let blob = Blob::random(100)?;
    let short = blob.digest[..blob.digest.len() - 1].to_owned();
    for digest in ["sha256:not-a-hex-digest".to_owned(), short] {
        let location = start_upload(cx.reg(), &repo).await?;
        let response = cx
            .reg()
            .request_url(Method::PUT, with_digest(location, &digest))
            .header("Content-Type", "application/octet-stream")
            .body(blob.bytes.clone())
            .send()
            .await?;
        response
            .expect_error(&[400], &["DIGEST_INVALID"])
            .map_err(|e| format!("{e} (digest {digest:?})"))?;
    }
    Ok(())
}

/// `POST /v2/<target>/blobs/uploads/?mount=<d>&from=<source>` of a blob the source has: 201 with a
/// `Location` serving it, and the blob is then in the target repository.
async fn blob_mount(cx: &Cx<'_>) -> Result<(), String> {
    let base = cx.repo()?;
    let (source, target) = (format!("{base}/source/deep"), format!("{base}/target"));
    let blob = Blob::random(4000)?;
    upload_blob(cx.reg(), &source, &blob).await?;
    let response = cx
        .reg()
        .request(
            Method::POST,
            &format!("/v2/{target}/blobs/uploads/?mount={}&from={source}", blob.digest),
        )?
        .body(Vec::new())
        .send()
        .await?;
    response.expect_status(&[201])?;
    response.expect_optional_header("Docker-Content-Digest", &[&blob.digest])?;
    expect_location_serves(cx.reg(), &response, &blob).await?;
    expect_blob(cx.reg(), &target, &blob).await
}

/// A mount of a blob the source does not have opens an ordinary session instead (202 +
/// `Location`), which a PUT then completes.
async fn blob_mount_missing(cx: &Cx<'_>) -> Result<(), String> {
    let base = cx.repo()?;
    let (source, target) = (format!("{base}/source"), format!("{base}/target"));
    upload_blob(cx.reg(), &source, &Blob::random(100)?).await?;
    let blob = Blob::random(700)?;
    let response = cx
        .reg()
        .request(
            Method::POST,
            &format!("/v2/{target}/blobs/uploads/?mount={}&from={source}", blob.digest),
        )?
        .body(Vec::new())
        .send()
        .await?;
    response.expect_status(&[202])?;
    let location = response.location(cx.reg())?;
    let done = cx
        .reg()
        .request_url(Method::PUT, with_digest(location, &blob.digest))
        .header("Content-Type", "application/octet-stream")
        .body(blob.bytes.clone())
        .send()
        .await?;
    done.expect_status(&[201])?;
    expect_blob(cx.reg(), &target, &blob).await
}

/// Manifest `PUT` by tag: 201 with a `Location` serving the manifest and a
/// `Docker-Content-Digest` equal to the digest of the bytes sent.
async fn manifest_put_by_tag(cx: &Cx<'_>) -> Result<(), String> {
    manifest_put(cx, Some("v1")).await
}

/// Manifest `PUT` by digest: 201 with `Location` and `Docker-Content-Digest`.
async fn manifest_put_by_digest(cx: &Cx<'_>) -> Result<(), String> {
    manifest_put(cx, None).await
}

async fn manifest_put(cx: &Cx<'_>, tag: Option<&str>) -> Result<(), String> {
    let repo = cx.repo()?;
    let config = Blob::config()?;
    let layer = Blob::random(800)?;
    upload_blob(cx.reg(), &repo, &config).await?;
    upload_blob(cx.reg(), &repo, &layer).await?;
    let manifest = Manifest::oci_image(&config, &[&layer])?;
    let reference = tag.unwrap_or(&manifest.digest);
    let response = put_manifest(cx.reg(), &repo, reference, &manifest).await?;
    response.expect_status(&[201])?;
    response.expect_header("Docker-Content-Digest", &manifest.digest)?;
    let location = response.location(cx.reg())?;
    let got = cx
        .reg()
        .request_url(Method::GET, location)
        .header("Accept", crate::content::ACCEPT_MANIFESTS)
        .send()
        .await?;
    got.expect_status(&[200])?;
    got.expect_body(&manifest.bytes)?;
    got.expect_content_type(manifest.media_type)?;
    expect_manifest(cx.reg(), &repo, reference, &manifest).await
}

/// Pushing another manifest to an existing tag moves the tag; the old manifest stays
/// reachable by digest and the tag is listed once.
async fn tag_overwrite(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let old = push_image(cx.reg(), &repo, Some("moving"), 64).await?;
    let new = push_image(cx.reg(), &repo, Some("moving"), 64).await?;
    expect_manifest(cx.reg(), &repo, "moving", &new.manifest).await?;
    expect_manifest(cx.reg(), &repo, &old.manifest.digest, &old.manifest).await?;
    let (tags, response) = list_tags(cx.reg(), &repo, "").await?;
    if tags != ["moving"] {
        return Err(response.fail("tags [\"moving\"]"));
    }
    Ok(())
}

/// A manifest `PUT` to a digest that is not the digest of the body: 400 `DIGEST_INVALID`, and
/// nothing is stored under that digest.
async fn manifest_digest_mismatch(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let image = push_image(cx.reg(), &repo, Some("real"), 64).await?;
    let mut altered = image.manifest.bytes.clone();
    altered.extend_from_slice(b"  ");
    let claimed = sha256_digest(&altered);
    let response = put_manifest(cx.reg(), &repo, &claimed, &image.manifest).await?;
    response.expect_error(&[400], &["DIGEST_INVALID"])?;
    expect_manifest_gone(cx.reg(), &repo, &claimed).await
}

/// An image manifest whose layer was never pushed: 400 `MANIFEST_BLOB_UNKNOWN`, and the tag does
/// not exist afterwards. (The spec lets a registry accept it; the embedded registry must not.)
async fn manifest_blob_unknown(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let config = Blob::config()?;
    upload_blob(cx.reg(), &repo, &config).await?;
    let missing = Blob::random(512)?;
    let manifest = Manifest::oci_image(&config, &[&missing])?;
    let response = put_manifest(cx.reg(), &repo, "dangling", &manifest).await?;
    response.expect_error(&[400], &["MANIFEST_BLOB_UNKNOWN"])?;
    expect_manifest_gone(cx.reg(), &repo, "dangling").await
}

/// An image index naming a manifest that was never pushed: 400 `MANIFEST_BLOB_UNKNOWN`.
async fn index_manifest_unknown(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let present = push_image(cx.reg(), &repo, None, 64).await?;
    let config = Blob::config()?;
    let layer = Blob::random(64)?;
    upload_blob(cx.reg(), &repo, &config).await?;
    upload_blob(cx.reg(), &repo, &layer).await?;
    let never_pushed = Manifest::oci_image(&config, &[&layer])?;
    let index = Manifest::oci_index(&[&present.manifest, &never_pushed])?;
    let response = put_manifest(cx.reg(), &repo, "dangling", &index).await?;
    response.expect_error(&[400], &["MANIFEST_BLOB_UNKNOWN"])?;
    expect_manifest_gone(cx.reg(), &repo, "dangling").await
}

/// A manifest whose `subject` does not exist (yet) must be accepted (201) and served as pushed.
async fn manifest_subject_missing(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let layer = Blob::random(32)?;
    upload_blob(cx.reg(), &repo, &Blob::empty_json()).await?;
    upload_blob(cx.reg(), &repo, &layer).await?;
    let absent_subject = Manifest::oci_image(&Blob::config()?, &[&Blob::random(16)?])?;
    let artifact = Manifest::oci_artifact(
        Some("application/vnd.example.conformance.sbom"),
        crate::content::OCI_EMPTY,
        &layer,
        &absent_subject,
        &serde_json::json!({ "org.example.conformance": "subject-missing" }),
    )?;
    let response = put_manifest(cx.reg(), &repo, "orphan", &artifact).await?;
    response.expect_status(&[201])?;
    expect_manifest(cx.reg(), &repo, "orphan", &artifact).await
}

/// Repository names outside the grammar (upper case, a doubled `.`, a leading or trailing `-`)
/// are refused, while a valid name gets its upload session. Lenient: 400 `NAME_INVALID`, or 404
/// (a registry may route such a path nowhere; the spec lists 404 as the failure of every
/// endpoint). Strict: 400 `NAME_INVALID`.
async fn name_invalid(cx: &Cx<'_>) -> Result<(), String> {
    let valid = cx.repo()?;
    expect_name_accepted(cx, &valid).await?;
    let token = random_token()?;
    let names = [
        format!("conformance/Upper-{token}"),
        format!("conformance/dots..{token}"),
        format!("conformance/-lead-{token}"),
        format!("conformance/trail-{token}-"),
    ];
    for name in &names {
        expect_name_refused(cx, name).await?;
    }
    Ok(())
}

/// A name of 255 characters is accepted and one of 256, every component valid, is refused like
/// any invalid name (lenient: 400 `NAME_INVALID` or 404; strict: 400 `NAME_INVALID`): names must
/// be shorter than 256 characters.
async fn name_too_long(cx: &Cx<'_>) -> Result<(), String> {
    let base = cx.repo()?;
    expect_name_accepted(cx, &name_of_length(&base, 255)).await?;
    expect_name_refused(cx, &name_of_length(&base, 256)).await
}

/// `base` extended with valid components to exactly `len` characters.
fn name_of_length(base: &str, len: usize) -> String {
    let mut name = base.to_owned();
    while name.len() < len {
        match len - name.len() {
            // Lengthen the last component, which ends in a letter or digit.
            1 => name.push('z'),
            room => {
                name.push('/');
                name.push_str(&"abcdefghi"[..(room - 1).min(9)]);
            }
        }
    }
    name
}

/// `POST /v2/<name>/blobs/uploads/` opens a session (202): the request is sound, so a refusal of
/// the same request with another name is about the name.
async fn expect_name_accepted(cx: &Cx<'_>, name: &str) -> Result<(), String> {
    start_upload(cx.reg(), name)
        .await
        .map(drop)
        .map_err(|e| format!("{e} (a valid name of {} characters)", name.len()))
}

/// `POST /v2/<name>/blobs/uploads/` is 400 `NAME_INVALID`, or (lenient) 404.
async fn expect_name_refused(cx: &Cx<'_>, name: &str) -> Result<(), String> {
    let response = cx
        .reg()
        .request(Method::POST, &format!("/v2/{name}/blobs/uploads/"))?
        .body(Vec::new())
        .send()
        .await?;
    if !cx.strict() && response.status.as_u16() == 404 {
        return Ok(());
    }
    response
        .expect_error(&[400], &["NAME_INVALID"])
        .map_err(|e| format!("{e} (a name of {} characters)", name.len()))
}

/// Tags outside `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` (leading `.` or `-`, 129 characters) are
/// refused and none shows up in the tag list, while the same manifest is pushed with a valid tag.
/// Lenient: 400 `TAG_INVALID` or `MANIFEST_INVALID`, or 404. Strict: 400 `TAG_INVALID`.
async fn tag_invalid(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let image = push_image(cx.reg(), &repo, Some("valid"), 64).await?;
    let tags = [".dot".to_owned(), "-dash".to_owned(), "t".repeat(129)];
    for tag in &tags {
        let response = put_manifest(cx.reg(), &repo, tag, &image.manifest).await?;
        let outcome = if cx.strict() {
            response.expect_error(&[400], &["TAG_INVALID"])
        } else if response.status.as_u16() == 404 {
            Ok(())
        } else {
            response.expect_error(&[400], &["TAG_INVALID", "MANIFEST_INVALID"])
        };
        outcome.map_err(|e| format!("{e} (tag of {} chars)", tag.len()))?;
    }
    let (listed, response) = list_tags(cx.reg(), &repo, "").await?;
    if listed != ["valid"] {
        return Err(
            response.fail(&format!("tags [\"valid\"] only after refused pushes to {tags:?}"))
        );
    }
    Ok(())
}

/// Fails unless the response's `Location` serves exactly `blob`.
async fn expect_location_serves(
    reg: &Registry,
    response: &Response,
    blob: &Blob,
) -> Result<(), String> {
    let location = response.location(reg)?;
    let got = reg.request_url(Method::GET, location).send().await?;
    got.expect_status(&[200])
        .map_err(|e| format!("{e} (following the Location of {})", response.what))?;
    got.expect_body(&blob.bytes)
}

/// `n` random hex digits.
fn hex_token(n: usize) -> Result<String, String> {
    let mut s = hex::encode(crate::content::random_bytes(n.div_ceil(2))?);
    s.truncate(n);
    Ok(s)
}

/// An open chunked upload: where to send the next request, and how much it holds.
struct Session<'a> {
    reg: &'a Registry,
    location: Url,
    offset: usize,
    /// Chunk size to use: at least the registry's `OCI-Chunk-Min-Length`.
    chunk: usize,
}

impl<'a> Session<'a> {
    /// `POST` with `Content-Length: 0`: 202 with a `Location`.
    async fn start(reg: &'a Registry, repo: &str) -> Result<Self, String> {
        let response = reg
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))?
            .body(Vec::new())
            .send()
            .await?;
        response.expect_status(&[202])?;
        let location = response.location(reg)?;
        let minimum = match response.header("OCI-Chunk-Min-Length") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| response.fail("a numeric OCI-Chunk-Min-Length"))?,
            None => 0,
        };
        if minimum > MAX_CHUNK {
            return Err(response.fail(&format!("an OCI-Chunk-Min-Length of at most {MAX_CHUNK}")));
        }
        Ok(Self { reg, location, offset: 0, chunk: minimum.max(DEFAULT_CHUNK) })
    }

    /// `PATCH` of `data` at `start` (a `Content-Range` of `start-(start+len-1)`), unchecked.
    async fn patch_raw(&self, data: &[u8], start: usize) -> Result<Response, String> {
        self.reg
            .request_url(Method::PATCH, self.location.clone())
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", &format!("{start}-{}", start + data.len() - 1))
            .body(data.to_vec())
            .send()
            .await
    }

    /// The next chunk: 202, `Location` (followed from now on) and `Range: 0-<end>`.
    async fn patch(&mut self, data: &[u8]) -> Result<(), String> {
        let response = self.patch_raw(data, self.offset).await?;
        response.expect_status(&[202])?;
        let end = self.offset + data.len() - 1;
        response.expect_header("Range", &format!("0-{end}"))?;
        self.location = response.location(self.reg)?;
        self.offset = end + 1;
        Ok(())
    }

    /// The closing `PUT ?digest=`, with the last chunk (and its `Content-Range`) when not empty.
    async fn put(&self, digest: &str, last: &[u8]) -> Result<Response, String> {
        let mut request =
            self.reg.request_url(Method::PUT, with_digest(self.location.clone(), digest));
        if !last.is_empty() {
            request = request.header("Content-Type", "application/octet-stream").header(
                "Content-Range",
                &format!("{}-{}", self.offset, self.offset + last.len() - 1),
            );
        }
        request.body(last.to_vec()).send().await
    }

    /// `GET <location>`: the session's status, unchecked.
    async fn status(&self) -> Result<Response, String> {
        self.reg.request_url(Method::GET, self.location.clone()).send().await
    }
}

#[cfg(test)]
mod tests {
    use super::name_of_length;

    #[test]
    fn names_of_a_given_length_keep_every_component_valid() {
        for base_len in 30..45 {
            let base = format!("conformance/{}", "x".repeat(base_len - 12));
            for len in [255, 256] {
                let name = name_of_length(&base, len);
                assert_eq!(name.len(), len, "{name}");
                assert!(name.starts_with(&base));
                for component in name.split('/') {
                    assert!(!component.is_empty(), "{name}");
                    assert!(component.bytes().all(|b| b.is_ascii_lowercase()), "{name}");
                }
            }
        }
    }
}
