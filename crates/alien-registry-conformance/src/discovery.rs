//! Content discovery checks: tag lists (order, `n`/`last`, `Link` pagination), the referrers API
//! (listing, `artifactType` filtering, empty lists, `OCI-Subject` on push) and the catalog
//! (`/v2/_catalog`, from the Docker registry API that the OCI spec grew out of; the embedded
//! registry serves it to admins).

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Registry, Response};
use crate::content::{Blob, Manifest, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, unknown_digest};
use crate::fixtures::{
    Image, list_tags, push_image, push_manifest, put_manifest, string_list, upload_blob,
};
use crate::{Category, Cx, declare_checks};

declare_checks!(Category::ContentDiscovery;
    tags_list,
    tags_list_n_last,
    tags_list_link,
    manifest_put_subject_header,
    referrers_list,
    referrers_filter,
    referrers_empty,
    catalog,
    catalog_pagination,
);

/// Tags pushed out of order, chosen so byte order and "natural" order differ.
const TAGS: [&str; 5] = ["b2", "a10", "c", "a9", "a"];
/// [`TAGS`] in lexical order.
const TAGS_SORTED: [&str; 5] = ["a", "a10", "a9", "b2", "c"];

/// The artifact type of the first referrer.
pub(crate) const SBOM_TYPE: &str = "application/vnd.example.conformance.sbom";
/// The config media type of the second referrer, which has no `artifactType` of its own.
pub(crate) const SIGNATURE_CONFIG_TYPE: &str =
    "application/vnd.example.conformance.signature.config";

/// `GET /v2/<name>/tags/list`: 200, `{"name": <name>, "tags": [...]}` with every tag in lexical
/// order.
async fn tags_list(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    push_tags(cx.reg(), &repo).await?;
    let (tags, response) = list_tags(cx.reg(), &repo, "").await?;
    if tags != TAGS_SORTED {
        return Err(response.fail(&format!("tags {TAGS_SORTED:?} in this order")));
    }
    Ok(())
}

/// `n` and `last` on tags/list: `n=2` gives the first two, `last` starts after the named tag (with
/// or without `n`), past the end is empty, and `n=0` is empty without a `Link`.
async fn tags_list_n_last(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    push_tags(cx.reg(), &repo).await?;
    let cases: [(&str, &[&str], usize); 5] = [
        ("?n=2", &TAGS_SORTED[..], 2),
        ("?n=2&last=a10", &TAGS_SORTED[2..], 2),
        ("?last=b2", &TAGS_SORTED[4..], usize::MAX),
        ("?n=10&last=c", &[], 10),
        ("?n=0", &[], 0),
    ];
    for (query, remaining, n) in cases {
        let (tags, response) = list_tags(cx.reg(), &repo, query).await?;
        expect_page(&response, &tags, remaining, n)?;
        if n == 0 && next_link(&response).is_some() {
            return Err(response.fail("no Link header when n=0"));
        }
    }
    Ok(())
}

/// Pagination by `Link: <...>; rel="next"`: `n=2` over five tags gives three pages, each with a
/// `Link` to the next but the last, together every tag once in order. (A `Link` is a MAY in the
/// spec; the embedded registry sends it.)
async fn tags_list_link(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    push_tags(cx.reg(), &repo).await?;
    let first = cx.reg().url(&format!("/v2/{repo}/tags/list?n=2"))?;
    let pages = follow_links(cx.reg(), first, "tags", 2, 10).await?;
    let all: Vec<String> = pages.iter().flatten().cloned().collect();
    if all != TAGS_SORTED || pages.len() != 3 {
        return Err(format!(
            "GET /v2/{repo}/tags/list?n=2 and its Link pages: \
             expected pages [[a, a10], [a9, b2], [c]], got {pages:?}"
        ));
    }
    Ok(())
}

/// A manifest `PUT` with a `subject` answers `OCI-Subject: <subject digest>`.
async fn manifest_put_subject_header(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let subject = push_image(cx.reg(), &repo, Some("subject"), 64).await?;
    let layer = Blob::random(40)?;
    upload_blob(cx.reg(), &repo, &Blob::empty_json()).await?;
    upload_blob(cx.reg(), &repo, &layer).await?;
    let artifact = Manifest::oci_artifact(
        Some(SBOM_TYPE),
        OCI_EMPTY,
        &layer,
        &subject.manifest,
        &json!({ "org.example.conformance.kind": "sbom" }),
    )?;
    let response = put_manifest(cx.reg(), &repo, &artifact.digest, &artifact).await?;
    response.expect_status(&[201])?;
    response.expect_header("OCI-Subject", &subject.manifest.digest)
}

/// `GET /v2/<name>/referrers/<digest>` lists both manifests pushed with that `subject`: 200, an
/// OCI index (`Content-Type` and body), each descriptor with its media type, size, digest,
/// annotations and `artifactType` (the config media type when the manifest has none).
async fn referrers_list(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let (subject, sbom, signature) = push_referrers(cx.reg(), &repo).await?;
    let (manifests, response) = referrers(cx.reg(), &repo, &subject.manifest.digest, "").await?;
    expect_descriptors(&response, &manifests, &[&sbom, &signature])
}

/// `?artifactType=` keeps only matching referrers and says so with
/// `OCI-Filters-Applied: artifactType`.
async fn referrers_filter(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let (subject, sbom, _signature) = push_referrers(cx.reg(), &repo).await?;
    let query = format!("?artifactType={SBOM_TYPE}");
    let (manifests, response) =
        referrers(cx.reg(), &repo, &subject.manifest.digest, &query).await?;
    let applied = response.require_header("OCI-Filters-Applied")?;
    if !applied.split(',').any(|f| f.trim() == "artifactType") {
        return Err(response.fail("OCI-Filters-Applied: artifactType"));
    }
    expect_descriptors(&response, &manifests, &[&sbom])
}

/// A manifest without referrers, and a digest the registry has never seen, both give 200 with an
/// empty OCI index (never 404 from a registry with the referrers API).
async fn referrers_empty(cx: &Cx<'_>) -> Result<(), String> {
    let repo = cx.repo()?;
    let image = push_image(cx.reg(), &repo, Some("lonely"), 64).await?;
    for digest in [image.manifest.digest.clone(), unknown_digest()?] {
        let (manifests, response) = referrers(cx.reg(), &repo, &digest, "").await?;
        if !manifests.is_empty() {
            return Err(response.fail(&format!("an empty referrers list for {digest}")));
        }
    }
    Ok(())
}

/// `GET /v2/_catalog?n=3&last=<prefix>` lists this check's three repositories, in order.
async fn catalog(cx: &Cx<'_>) -> Result<(), String> {
    let base = cx.repo()?;
    let repos = push_catalog_repos(cx.reg(), &base).await?;
    let query = format!("/v2/_catalog?n=3&last={base}");
    let response = cx.reg().request(Method::GET, &query)?.send().await?;
    let got = catalog_page(&response)?;
    let expected: Vec<&str> = repos.iter().map(String::as_str).collect();
    expect_page(&response, &got, &expected, 3)
}

/// Catalog pagination: `n=2&last=<first>` gives the next two, and `n=1` pages linked by
/// `Link: <...>; rel="next"` walk through the repositories one by one.
async fn catalog_pagination(cx: &Cx<'_>) -> Result<(), String> {
    let base = cx.repo()?;
    let repos = push_catalog_repos(cx.reg(), &base).await?;
    let response = cx
        .reg()
        .request(Method::GET, &format!("/v2/_catalog?n=2&last={}", repos[0]))?
        .send()
        .await?;
    let got = catalog_page(&response)?;
    let rest: Vec<&str> = repos[1..].iter().map(String::as_str).collect();
    expect_page(&response, &got, &rest, 2)?;
    // Other repositories may follow ours, so walk three pages only.
    let first = cx.reg().url(&format!("/v2/_catalog?n=1&last={base}"))?;
    let pages = follow_links(cx.reg(), first, "repositories", 1, 3).await?;
    let walked: Vec<String> = pages.into_iter().flatten().take(3).collect();
    if walked != repos {
        return Err(format!(
            "GET /v2/_catalog?n=1&last={base} and its Link pages: \
             expected {repos:?}, got {walked:?}"
        ));
    }
    Ok(())
}

/// Pushes one image and tags it with every tag of [`TAGS`].
async fn push_tags(reg: &Registry, repo: &str) -> Result<(), String> {
    let image = push_image(reg, repo, Some(TAGS[0]), 64).await?;
    for tag in &TAGS[1..] {
        push_manifest(reg, repo, Some(tag), &image.manifest).await?;
    }
    Ok(())
}

/// Pushes an image to `<base>/a`, `<base>/b` and `<base>/c` and returns the three names.
async fn push_catalog_repos(reg: &Registry, base: &str) -> Result<Vec<String>, String> {
    let repos: Vec<String> = ["a", "b", "c"].iter().map(|leaf| format!("{base}/{leaf}")).collect();
    for repo in &repos {
        push_image(reg, repo, Some("latest"), 32).await?;
    }
    Ok(repos)
}

/// The `repositories` of a catalog response.
fn catalog_page(response: &Response) -> Result<Vec<String>, String> {
    response.expect_status(&[200])?;
    let body = response.json()?;
    string_list(&body, "repositories")
        .ok_or_else(|| response.fail("a catalog with a \"repositories\" array"))
}

/// Fails unless `got` is the first `n` of `remaining`; fewer are allowed only with a `Link`.
fn expect_page(
    response: &Response,
    got: &[String],
    remaining: &[&str],
    n: usize,
) -> Result<(), String> {
    let want = &remaining[..n.min(remaining.len())];
    if got == want {
        return Ok(());
    }
    let prefix = got.len() < want.len() && got.iter().zip(want).all(|(g, w)| g == w);
    if prefix && next_link(response).is_some() {
        return Ok(());
    }
    Err(response.fail(&format!("{want:?} (fewer only with a Link header)")))
}

/// The target of a `Link: <...>; rel="next"` header, if any.
pub(crate) fn next_link(response: &Response) -> Option<String> {
    response.headers_all("Link").into_iter().flat_map(|v| v.split(',')).find_map(|link| {
        let (target, params) = link.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_owned())
    })
}

/// Follows `Link` pages from `first`, collecting `key` of each page (at most `n` entries each,
/// at most `max_pages` pages); the last page must carry no `Link`, unless `max_pages` was reached.
async fn follow_links(
    reg: &Registry,
    first: url::Url,
    key: &str,
    n: usize,
    max_pages: usize,
) -> Result<Vec<Vec<String>>, String> {
    let mut pages = Vec::new();
    let mut url = first;
    loop {
        let response = reg.request_url(Method::GET, url).send().await?;
        response.expect_status(&[200])?;
        let body = response.json()?;
        let page =
            string_list(&body, key).ok_or_else(|| response.fail(&format!("a {key:?} array")))?;
        if page.len() > n {
            return Err(response.fail(&format!("at most {n} entries")));
        }
        pages.push(page);
        let Some(next) = next_link(&response) else {
            if pages.len() == 1 && max_pages > 1 {
                return Err(response.fail("a Link: <...>; rel=\"next\" header to the next page"));
            }
            return Ok(pages);
        };
        if pages.len() >= max_pages {
            return Ok(pages);
        }
        url = reg.resolve(&next)?;
    }
}

/// Pushes a subject image and two referrers: an SBOM (with `artifactType`) and a signature
/// (without, so its config media type stands in).
pub(crate) async fn push_referrers(
    reg: &Registry,
    repo: &str,
) -> Result<(Image, Manifest, Manifest), String> {
    let subject = push_image(reg, repo, Some("subject"), 64).await?;
    let layer = Blob::random(48)?;
    upload_blob(reg, repo, &Blob::empty_json()).await?;
    upload_blob(reg, repo, &layer).await?;
    let sbom = Manifest::oci_artifact(
        Some(SBOM_TYPE),
        OCI_EMPTY,
        &layer,
        &subject.manifest,
        &json!({ "org.example.conformance.kind": "sbom" }),
    )?;
    let signature = Manifest::oci_artifact(
        None,
        SIGNATURE_CONFIG_TYPE,
        &layer,
        &subject.manifest,
        &json!({ "org.example.conformance.kind": "signature" }),
    )?;
    push_manifest(reg, repo, None, &sbom).await?;
    push_manifest(reg, repo, None, &signature).await?;
    Ok((subject, sbom, signature))
}

/// `GET /v2/<repo>/referrers/<digest><query>`: 200 and an OCI index; its `manifests`.
pub(crate) async fn referrers(
    reg: &Registry,
    repo: &str,
    digest: &str,
    query: &str,
) -> Result<(Vec<Value>, Response), String> {
    let response =
        reg.request(Method::GET, &format!("/v2/{repo}/referrers/{digest}{query}"))?.send().await?;
    response.expect_status(&[200])?;
    response.expect_content_type(OCI_INDEX)?;
    let body = response.json()?;
    if body.get("schemaVersion") != Some(&json!(2))
        || body.get("mediaType") != Some(&json!(OCI_INDEX))
    {
        return Err(response
            .fail(&format!("an image index with schemaVersion 2 and mediaType {OCI_INDEX}")));
    }
    let manifests = match body.get("manifests") {
        Some(Value::Array(m)) => m.clone(),
        _ => return Err(response.fail("an image index with a \"manifests\" array")),
    };
    Ok((manifests, response))
}

/// Fails unless `manifests` describes exactly `expected` (any order): media type, digest, size,
/// `artifactType` and annotations as the referrers API must give them.
pub(crate) fn expect_descriptors(
    response: &Response,
    manifests: &[Value],
    expected: &[&Manifest],
) -> Result<(), String> {
    if manifests.len() != expected.len() {
        return Err(response.fail(&format!(
            "{} referrer(s) {:?}, got {} {:?}",
            expected.len(),
            expected.iter().map(|m| &m.digest).collect::<Vec<_>>(),
            manifests.len(),
            manifests.iter().map(|m| &m["digest"]).collect::<Vec<_>>()
        )));
    }
    for manifest in expected {
        let source: Value = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| format!("setup: cannot re-read a manifest the suite made: {e}"))?;
        let artifact_type =
            source.get("artifactType").unwrap_or(&source["config"]["mediaType"]).clone();
        let found = manifests
            .iter()
            .find(|d| d["digest"] == json!(manifest.digest))
            .ok_or_else(|| response.fail(&format!("a descriptor of {}", manifest.digest)))?;
        let checks = [
            ("mediaType", json!(OCI_MANIFEST)),
            ("size", json!(manifest.bytes.len())),
            ("artifactType", artifact_type),
        ];
        for (field, want) in checks {
            if found[field] != want {
                return Err(response.fail(&format!(
                    "descriptor {} with {field} {want}, got {}",
                    manifest.digest, found[field]
                )));
            }
        }
        if let Some(annotations) = source["annotations"].as_object() {
            for (key, value) in annotations {
                if found["annotations"][key] != *value {
                    return Err(response.fail(&format!(
                        "descriptor {} with annotation {key}={value}",
                        manifest.digest
                    )));
                }
            }
        }
    }
    Ok(())
}
