//! Content management checks: deleting manifests by digest (and with them their tags), deleting a
//! tag alone, deleting blobs, and the referrers list forgetting a deleted referrer.

use reqwest::Method;

use crate::content::{Blob, unknown_digest};
use crate::discovery::{expect_descriptors, push_referrers, referrers};
use crate::fixtures::{
    expect_blob_gone, expect_manifest, expect_manifest_gone, list_tags, push_image, push_manifest,
    upload_blob,
};
use crate::{Category, Cx, declare_checks};

declare_checks!(Category::ContentManagement;
    delete_manifest_by_digest,
    delete_tag,
    delete_blob,
    delete_blob_unknown,
    delete_referrer,
);

/// `DELETE /v2/<name>/manifests/<digest>`: 202; the manifest is then 404 by digest and by its tag,
/// and the tag list no longer has the tag; another manifest of the repository is untouched.
async fn delete_manifest_by_digest(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let doomed = push_image(cx.reg(), &repo, Some("doomed"), 64).await?;
    let kept = push_image(cx.reg(), &repo, Some("kept"), 64).await?;
    let path = format!("/v2/{repo}/manifests/{}", doomed.manifest.digest);
    let response = cx.reg().request(Method::DELETE, &path)?.send().await?;
    response.expect_status(&[202])?;
    expect_manifest_gone(cx.reg(), &repo, &doomed.manifest.digest).await?;
    expect_manifest_gone(cx.reg(), &repo, "doomed").await?;
    let (tags, listing) = list_tags(cx.reg(), &repo, "").await?;
    if tags != ["kept"] {
        return Err(listing.fail(&format!(
            "tags [\"kept\"] after deleting the manifest tagged \"doomed\", got {tags:?}"
        )));
    }
    expect_manifest(cx.reg(), &repo, "kept", &kept.manifest).await
}

/// `DELETE /v2/<name>/manifests/<tag>`: 202, after which the tag is 404 while the manifest and its
/// other tag remain. Lenient: where tag deletion is disabled, 400 or 405 with the tag still there
/// also passes. Strict: 202 only (the embedded registry deletes tags).
async fn delete_tag(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let image = push_image(cx.reg(), &repo, Some("first"), 64).await?;
    push_manifest(cx.reg(), &repo, Some("second"), &image.manifest).await?;
    let response =
        cx.reg().request(Method::DELETE, &format!("/v2/{repo}/manifests/first"))?.send().await?;
    response.expect_status(if cx.strict() { &[202] } else { &[202, 400, 405] })?;
    if response.status.as_u16() != 202 {
        return expect_manifest(cx.reg(), &repo, "first", &image.manifest).await;
    }
    expect_manifest_gone(cx.reg(), &repo, "first").await?;
    expect_manifest(cx.reg(), &repo, "second", &image.manifest).await?;
    expect_manifest(cx.reg(), &repo, &image.manifest.digest, &image.manifest).await
}

/// `DELETE /v2/<name>/blobs/<digest>`: 202; the blob is then 404 by GET and HEAD.
async fn delete_blob(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let blob = Blob::random(900)?;
    upload_blob(cx.reg(), &repo, &blob).await?;
    let response = cx
        .reg()
        .request(Method::DELETE, &format!("/v2/{repo}/blobs/{}", blob.digest))?
        .send()
        .await?;
    response.expect_status(&[202])?;
    expect_blob_gone(cx.reg(), &repo, &blob.digest).await
}

/// Deleting a blob the repository does not have: 404 `BLOB_UNKNOWN`.
async fn delete_blob_unknown(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    upload_blob(cx.reg(), &repo, &Blob::random(10)?).await?;
    let digest = unknown_digest()?;
    let response =
        cx.reg().request(Method::DELETE, &format!("/v2/{repo}/blobs/{digest}"))?.send().await?;
    response.expect_error(&[404], &["BLOB_UNKNOWN"])
}

/// Deleting a referrer by digest (202) removes it from its subject's referrers list.
async fn delete_referrer(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let (subject, sbom, signature) = push_referrers(cx.reg(), &repo).await?;
    let (before, response) = referrers(cx.reg(), &repo, &subject.manifest.digest, "").await?;
    expect_descriptors(&response, &before, &[&sbom, &signature])?;
    let deleted = cx
        .reg()
        .request(Method::DELETE, &format!("/v2/{repo}/manifests/{}", sbom.digest))?
        .send()
        .await?;
    deleted.expect_status(&[202])?;
    let (after, response) = referrers(cx.reg(), &repo, &subject.manifest.digest, "").await?;
    expect_descriptors(&response, &after, &[&signature])
}
