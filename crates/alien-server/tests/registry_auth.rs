//! Who may do what on the embedded registry's `/v2`, over HTTP: every verb with every kind of
//! credential, against [`EXPECTED`], one table of the policy (`src/policy.rs` and
//! `src/registry.rs`; `spec/api.md`). Each cell gets fresh content pushed by the admin, checks the
//! status, that a refusal carries the OCI error body (`UNAUTHORIZED` or `DENIED`; a 401 also the
//! `WWW-Authenticate` challenge), and what the admin sees afterwards: an allowed write took
//! effect, a refused one left nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use alien_registry::{Access, RegistryAccess, RegistryError};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Api, fixture};

/// The repository the deployment's release names.
const RELEASE_REPO: &str = "acme/api";
/// A repository the release does not name.
const OTHER_REPO: &str = "secret/thing";
/// Where mounts come from (the admin pushes there).
const MOUNT_SOURCE: &str = "shared/base";
/// The challenge of every 401.
const CHALLENGE: &str = "Basic realm=\"alien-manager\"";
/// A well-formed deployment token the manager never issued.
const UNKNOWN_TOKEN: &str = "ax_deploy_0000000000000000000000000000000000000000";

/// A request on `/v2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    /// `GET /v2/`.
    Base,
    /// `GET /v2/_catalog`.
    Catalog,
    /// `GET /v2/<name>/tags/list`.
    TagsList,
    /// `GET /v2/<name>/manifests/<tag>`.
    ManifestGet,
    /// `HEAD /v2/<name>/manifests/<tag>`.
    ManifestHead,
    /// `PUT /v2/<name>/manifests/<tag>` of a manifest whose blobs are there.
    ManifestPut,
    /// `DELETE /v2/<name>/manifests/<digest>`.
    ManifestDelete,
    /// `GET /v2/<name>/blobs/<digest>`.
    BlobGet,
    /// `HEAD /v2/<name>/blobs/<digest>`.
    BlobHead,
    /// `DELETE /v2/<name>/blobs/<digest>`.
    BlobDelete,
    /// `POST /v2/<name>/blobs/uploads/`.
    UploadStart,
    /// `PATCH` of a chunk to a session the admin opened.
    UploadPatch,
    /// `PUT ?digest=` with the whole body, closing a session the admin opened.
    UploadPut,
    /// `GET` of a session the admin opened.
    UploadStatus,
    /// `DELETE` of a session the admin opened.
    UploadCancel,
    /// `POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<MOUNT_SOURCE>`.
    Mount,
    /// `GET /v2/<name>/referrers/<digest>`.
    Referrers,
}

/// The credential a request carries (HTTP Basic with the token as password, as clients send it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// No `Authorization` header.
    Anonymous,
    /// A deployment token that does not exist.
    UnknownToken,
    /// The admin token.
    Admin,
    /// A deployment-group token.
    Group,
    /// A deployment token, on the repository its release names.
    DeploymentOwnRepo,
    /// The same deployment token, on a repository its release does not name.
    DeploymentOtherRepo,
}

/// The columns of [`EXPECTED`], in order.
const WHO: [Who; 6] = [
    Who::Anonymous,
    Who::UnknownToken,
    Who::Admin,
    Who::Group,
    Who::DeploymentOwnRepo,
    Who::DeploymentOtherRepo,
];

/// What a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The verb's success status, and its effect.
    Allowed,
    /// 401 `UNAUTHORIZED` with the challenge; no effect.
    Unauthorized,
    /// 403 `DENIED`; no effect.
    Denied,
}

use Expect::{Allowed as A, Denied as D, Unauthorized as U};

/// The policy, per verb and credential. Group tokens are held by customer environments, so they
/// can neither push (nor delete, nor mount, nor list the catalog) nor pull; a deployment token
/// pulls (GET and HEAD) only the repositories its release names; every upload request, status
/// included, is a push.
#[rustfmt::skip]
const EXPECTED: [(Verb, [Expect; 6]); 17] = [
    //                     none  unknown  admin  group  deployment: own repo, other repo
    (Verb::Base,           [U,   U,       A,     A,     A,  A]),
    (Verb::Catalog,        [U,   U,       A,     D,     D,  D]),
    (Verb::TagsList,       [U,   U,       A,     D,     A,  D]),
    (Verb::ManifestGet,    [U,   U,       A,     D,     A,  D]),
    (Verb::ManifestHead,   [U,   U,       A,     D,     A,  D]),
    (Verb::ManifestPut,    [U,   U,       A,     D,     D,  D]),
    (Verb::ManifestDelete, [U,   U,       A,     D,     D,  D]),
    (Verb::BlobGet,        [U,   U,       A,     D,     A,  D]),
    (Verb::BlobHead,       [U,   U,       A,     D,     A,  D]),
    (Verb::BlobDelete,     [U,   U,       A,     D,     D,  D]),
    (Verb::UploadStart,    [U,   U,       A,     D,     D,  D]),
    (Verb::UploadPatch,    [U,   U,       A,     D,     D,  D]),
    (Verb::UploadPut,      [U,   U,       A,     D,     D,  D]),
    (Verb::UploadStatus,   [U,   U,       A,     D,     D,  D]),
    (Verb::UploadCancel,   [U,   U,       A,     D,     D,  D]),
    (Verb::Mount,          [U,   U,       A,     D,     D,  D]),
    (Verb::Referrers,      [U,   U,       A,     D,     A,  D]),
];

/// What an allowed request answers.
fn success_status(verb: Verb) -> u16 {
    match verb {
        Verb::Base
        | Verb::Catalog
        | Verb::TagsList
        | Verb::ManifestGet
        | Verb::ManifestHead
        | Verb::BlobGet
        | Verb::BlobHead
        | Verb::Referrers => 200,
        // The admin may pull the source, so the blob is mounted.
        Verb::ManifestPut | Verb::UploadPut | Verb::Mount => 201,
        Verb::ManifestDelete | Verb::BlobDelete | Verb::UploadStart | Verb::UploadPatch => 202,
        Verb::UploadStatus | Verb::UploadCancel => 204,
    }
}

/// What an admin sees after the request: the effect of an allowed write, and its absence after
/// a refused one.
enum Effect {
    /// Nothing to see (reads, and opening a session nobody can find again).
    None,
    /// The tag points at a manifest.
    TagSet { repo: String, tag: String },
    /// The manifest is gone.
    ManifestDeleted { repo: String, digest: String },
    /// The blob is gone from the repository.
    BlobDeleted { repo: String, digest: String },
    /// The blob is in the repository.
    BlobLinked { repo: String, digest: String },
    /// The session holds `len` bytes.
    UploadGrew { location: String, len: usize },
    /// The session is gone.
    UploadCancelled { location: String },
}

/// A request ready to send, with the effect it should have.
struct Prepared {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    effect: Effect,
}

impl Prepared {
    fn new(method: Method, path: String) -> Self {
        Self { method, path, content_type: None, body: Vec::new(), effect: Effect::None }
    }
}

/// The manager, its tokens, and an admin client that makes content for each cell.
struct Registry {
    api: Api,
    http: reqwest::Client,
    group_token: String,
    deployment_token: String,
    counter: AtomicUsize,
}

/// An image the admin pushed.
struct Image {
    tag: String,
    layer: String,
    manifest: String,
}

impl Registry {
    /// A manager with an image in [`RELEASE_REPO`] and [`OTHER_REPO`], a release naming the
    /// first, a group and a deployment of that release.
    async fn start() -> Self {
        let api = Api::start().await;
        let (group, group_token) = api.group("g").await;
        let mut registry = Self {
            api,
            http: reqwest::Client::new(),
            group_token,
            deployment_token: String::new(),
            counter: AtomicUsize::new(0),
        };
        registry.push_image(RELEASE_REPO).await;
        registry.push_image(OTHER_REPO).await;
        let host = registry.api.base.trim_start_matches("http://").to_owned();
        let mut stack = fixture("valid-web.json");
        stack["resources"]["api"]["config"]["code"]["image"] =
            json!(format!("{host}/{RELEASE_REPO}:v1"));
        registry
            .api
            .admin(Method::POST, "/v1/releases", Some(json!({"stack": {"local": stack}})))
            .await;
        let (_, deployment_token) = registry.api.deployment(&group, "d").await;
        registry.deployment_token = deployment_token;
        registry
    }

    fn unique(&self) -> usize {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// `method path` with `who`'s credential, fully read.
    async fn send(
        &self,
        who: Who,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.api.base)
        };
        let mut request = self.http.request(method, url).body(body);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let token = match who {
            Who::Anonymous => None,
            Who::UnknownToken => Some(UNKNOWN_TOKEN),
            Who::Admin => Some(self.api.admin.as_str()),
            Who::Group => Some(self.group_token.as_str()),
            Who::DeploymentOwnRepo | Who::DeploymentOtherRepo => {
                Some(self.deployment_token.as_str())
            }
        };
        if let Some(token) = token {
            request = request.basic_auth("x", Some(token));
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.bytes().await.unwrap().to_vec())
    }

    /// The admin's request, which must answer `expected`.
    async fn admin(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        expected: u16,
    ) -> HeaderMap {
        let (status, headers, body) =
            self.send(Who::Admin, method.clone(), path, content_type, body).await;
        assert_eq!(
            status.as_u16(),
            expected,
            "setup: admin {method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
        headers
    }

    /// Pushes `bytes` to `repo` as the admin in one POST; returns its digest.
    async fn push_blob(&self, repo: &str, bytes: Vec<u8>) -> String {
        let digest = alien_registry::Digest::sha256_of(&bytes).to_string();
        let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        self.admin(Method::POST, &path, Some("application/octet-stream"), bytes, 201).await;
        digest
    }

    /// Pushes a config and a layer to `repo`; returns the manifest of the two (not pushed).
    async fn push_blobs(&self, repo: &str) -> (String, Vec<u8>) {
        let n = self.unique();
        let config = format!(r#"{{"architecture":"amd64","os":"linux","n":{n}}}"#).into_bytes();
        let layer = format!("layer {n}").into_bytes();
        let (config_size, layer_size) = (config.len(), layer.len());
        let config = self.push_blob(repo, config).await;
        let layer = self.push_blob(repo, layer).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config,
                "size": config_size,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer,
                "size": layer_size,
            }],
        });
        (layer, serde_json::to_vec(&manifest).unwrap())
    }

    /// Pushes a fresh image to `repo` as the admin, tagged `t<n>` (and `v1`, which the release
    /// names).
    async fn push_image(&self, repo: &str) -> Image {
        let (layer, manifest) = self.push_blobs(repo).await;
        let digest = alien_registry::Digest::sha256_of(&manifest).to_string();
        let tag = format!("t{}", self.unique());
        for tag in [tag.as_str(), "v1"] {
            let path = format!("/v2/{repo}/manifests/{tag}");
            self.admin(Method::PUT, &path, Some(OCI_MANIFEST), manifest.clone(), 201).await;
        }
        Image { tag, layer, manifest: digest }
    }

    /// Opens an upload session in `repo` as the admin; returns its `Location`.
    async fn open_session(&self, repo: &str) -> String {
        let path = format!("/v2/{repo}/blobs/uploads/");
        let headers = self.admin(Method::POST, &path, None, Vec::new(), 202).await;
        let location = headers["location"].to_str().unwrap();
        format!("{}{location}", self.api.base)
    }

    /// The request of `verb` on `repo`, with the content it needs in place.
    async fn prepare(&self, verb: Verb, repo: &str) -> Prepared {
        let blob_path = |digest: &str| format!("/v2/{repo}/blobs/{digest}");
        match verb {
            Verb::Base => Prepared::new(Method::GET, "/v2/".into()),
            Verb::Catalog => Prepared::new(Method::GET, "/v2/_catalog".into()),
            Verb::TagsList => Prepared::new(Method::GET, format!("/v2/{repo}/tags/list")),
            Verb::ManifestGet | Verb::ManifestHead => {
                let image = self.push_image(repo).await;
                let method = if verb == Verb::ManifestGet { Method::GET } else { Method::HEAD };
                Prepared::new(method, format!("/v2/{repo}/manifests/{}", image.tag))
            }
            Verb::ManifestPut => {
                let (_, manifest) = self.push_blobs(repo).await;
                let tag = format!("put{}", self.unique());
                Prepared {
                    content_type: Some(OCI_MANIFEST),
                    body: manifest,
                    effect: Effect::TagSet { repo: repo.into(), tag: tag.clone() },
                    ..Prepared::new(Method::PUT, format!("/v2/{repo}/manifests/{tag}"))
                }
            }
            Verb::ManifestDelete => {
                let image = self.push_image(repo).await;
                Prepared {
                    effect: Effect::ManifestDeleted {
                        repo: repo.into(),
                        digest: image.manifest.clone(),
                    },
                    ..Prepared::new(
                        Method::DELETE,
                        format!("/v2/{repo}/manifests/{}", image.manifest),
                    )
                }
            }
            Verb::BlobGet | Verb::BlobHead => {
                let image = self.push_image(repo).await;
                let method = if verb == Verb::BlobGet { Method::GET } else { Method::HEAD };
                Prepared::new(method, blob_path(&image.layer))
            }
            Verb::BlobDelete => {
                let image = self.push_image(repo).await;
                Prepared {
                    effect: Effect::BlobDeleted { repo: repo.into(), digest: image.layer.clone() },
                    ..Prepared::new(Method::DELETE, blob_path(&image.layer))
                }
            }
            Verb::UploadStart => Prepared::new(Method::POST, format!("/v2/{repo}/blobs/uploads/")),
            Verb::UploadPatch => {
                let location = self.open_session(repo).await;
                Prepared {
                    content_type: Some("application/octet-stream"),
                    body: vec![7; 10],
                    effect: Effect::UploadGrew { location: location.clone(), len: 10 },
                    ..Prepared::new(Method::PATCH, location)
                }
            }
            Verb::UploadPut => {
                let location = self.open_session(repo).await;
                let bytes = format!("uploaded {}", self.unique()).into_bytes();
                let digest = alien_registry::Digest::sha256_of(&bytes).to_string();
                Prepared {
                    content_type: Some("application/octet-stream"),
                    body: bytes,
                    effect: Effect::BlobLinked { repo: repo.into(), digest: digest.clone() },
                    ..Prepared::new(Method::PUT, format!("{location}?digest={digest}"))
                }
            }
            Verb::UploadStatus => Prepared::new(Method::GET, self.open_session(repo).await),
            Verb::UploadCancel => {
                let location = self.open_session(repo).await;
                Prepared {
                    effect: Effect::UploadCancelled { location: location.clone() },
                    ..Prepared::new(Method::DELETE, location)
                }
            }
            Verb::Mount => {
                let bytes = format!("mounted {}", self.unique()).into_bytes();
                let digest = self.push_blob(MOUNT_SOURCE, bytes).await;
                Prepared {
                    effect: Effect::BlobLinked { repo: repo.into(), digest: digest.clone() },
                    ..Prepared::new(
                        Method::POST,
                        format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={MOUNT_SOURCE}"),
                    )
                }
            }
            Verb::Referrers => {
                let image = self.push_image(repo).await;
                Prepared::new(Method::GET, format!("/v2/{repo}/referrers/{}", image.manifest))
            }
        }
    }

    /// Whether `effect` is what the admin sees now; `None` when it is, else what differs.
    async fn effect_seen(&self, effect: &Effect, happened: bool) -> Option<String> {
        let status = |method: Method, path: String| async move {
            let (status, headers, _) = self.send(Who::Admin, method, &path, None, Vec::new()).await;
            (status.as_u16(), headers)
        };
        let (what, seen) = match effect {
            Effect::None => return None,
            Effect::TagSet { repo, tag } => {
                let (s, _) = status(Method::GET, format!("/v2/{repo}/manifests/{tag}")).await;
                ("the tag is set", s == 200)
            }
            Effect::ManifestDeleted { repo, digest } => {
                let (s, _) = status(Method::GET, format!("/v2/{repo}/manifests/{digest}")).await;
                ("the manifest is deleted", s == 404)
            }
            Effect::BlobDeleted { repo, digest } => {
                let (s, _) = status(Method::HEAD, format!("/v2/{repo}/blobs/{digest}")).await;
                ("the blob is deleted", s == 404)
            }
            Effect::BlobLinked { repo, digest } => {
                let (s, _) = status(Method::HEAD, format!("/v2/{repo}/blobs/{digest}")).await;
                ("the blob is in the repository", s == 200)
            }
            Effect::UploadGrew { location, len } => {
                let (s, headers) = status(Method::GET, location.clone()).await;
                let range = headers.get("range").and_then(|v| v.to_str().ok()).unwrap_or("");
                ("the session holds the chunk", s == 204 && range == format!("0-{}", len - 1))
            }
            Effect::UploadCancelled { location } => {
                let (s, _) = status(Method::GET, location.clone()).await;
                ("the session is cancelled", s == 404)
            }
        };
        (seen != happened).then(|| {
            if happened {
                format!("allowed, but afterwards it is not so that {what}")
            } else {
                format!("refused, yet afterwards {what}")
            }
        })
    }

    /// `verb` as `who`: every difference from `expected`.
    async fn check(&self, verb: Verb, who: Who, expected: Expect) -> Vec<String> {
        let repo = if who == Who::DeploymentOtherRepo { OTHER_REPO } else { RELEASE_REPO };
        let prepared = self.prepare(verb, repo).await;
        let (status, headers, body) = self
            .send(
                who,
                prepared.method.clone(),
                &prepared.path,
                prepared.content_type,
                prepared.body.clone(),
            )
            .await;
        let head = prepared.method == Method::HEAD;
        let mut problems = Vec::new();
        let (want_status, want_code) = match expected {
            Expect::Allowed => (success_status(verb), None),
            Expect::Unauthorized => (401, Some("UNAUTHORIZED")),
            Expect::Denied => (403, Some("DENIED")),
        };
        if status.as_u16() != want_status {
            problems.push(format!(
                "status {status}, expected {want_status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        // A HEAD answer has no body to carry an error code.
        if let Some(code) = want_code.filter(|_| !head) {
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if json["errors"][0]["code"] != code || !json["errors"][0]["message"].is_string() {
                problems.push(format!(
                    "expected an OCI error body with code {code}, got {:?}",
                    String::from_utf8_lossy(&body)
                ));
            }
        }
        let challenge = headers.get("www-authenticate").and_then(|v| v.to_str().ok());
        match expected {
            Expect::Unauthorized if challenge != Some(CHALLENGE) => {
                problems.push(format!("expected WWW-Authenticate: {CHALLENGE}, got {challenge:?}"))
            }
            Expect::Allowed | Expect::Denied if challenge.is_some() => {
                problems.push(format!("a challenge on a {status} answer: {challenge:?}"))
            }
            _ => {}
        }
        problems.extend(self.effect_seen(&prepared.effect, expected == Expect::Allowed).await);
        problems
            .into_iter()
            .map(|p| format!("{verb:?} as {who:?} ({} {}): {p}", prepared.method, prepared.path))
            .collect()
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn the_table_has_every_verb_once() {
    let verbs: Vec<Verb> = EXPECTED.iter().map(|(verb, _)| *verb).collect();
    for (i, verb) in verbs.iter().enumerate() {
        assert!(!verbs[i + 1..].contains(verb), "{verb:?} twice");
        // Every verb has a success status (the match there is exhaustive).
        assert!(success_status(*verb) >= 200);
    }
    assert_eq!(verbs.len(), 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v2_verb_with_every_credential_gets_what_the_policy_says() {
    let registry = Registry::start().await;
    let mut problems = Vec::new();
    for (verb, row) in EXPECTED {
        for (who, expected) in WHO.into_iter().zip(row) {
            problems.extend(registry.check(verb, who, expected).await);
        }
    }
    assert!(problems.is_empty(), "{} differences:\n  {}", problems.len(), problems.join("\n  "));
}

/// Access that lets `pusher` push to any repository but pull only [`MOUNT_TARGET`]: no manager
/// token has that combination today (only the admin pushes, and it pulls everything), but a mount
/// must stay safe for whatever policy an embedder gives the registry.
struct PushWithoutPull;

const MOUNT_TARGET: &str = "team/target";

#[async_trait::async_trait]
impl RegistryAccess for PushWithoutPull {
    async fn check(
        &self,
        headers: &axum::http::HeaderMap,
        access: Access<'_>,
    ) -> Result<(), RegistryError> {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok());
        match (token, access) {
            (Some("Bearer admin"), _) => Ok(()),
            (Some("Bearer pusher"), Access::Pull(repo) | Access::Probe(repo))
                if repo.as_str() != MOUNT_TARGET =>
            {
                Err(RegistryError::denied(format!("pusher may not pull {repo}")))
            }
            (Some("Bearer pusher"), Access::Catalog) => Err(RegistryError::denied("no catalog")),
            (Some("Bearer pusher"), _) => Ok(()),
            _ => Err(RegistryError::unauthorized()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_from_a_repository_the_caller_cannot_pull_mounts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = alien_registry::ObjectBlobStore::local(dir.path()).unwrap();
    let router = alien_registry::router(Arc::new(blobs), Arc::new(PushWithoutPull));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();
    let send = |token: &'static str, method: Method, path: String, body: Vec<u8>| {
        let request = http.request(method, format!("{base}{path}")).bearer_auth(token).body(body);
        async move { request.send().await.unwrap() }
    };

    let secret = b"another team's layer".to_vec();
    let digest = alien_registry::Digest::sha256_of(&secret).to_string();
    let pushed = send(
        "admin",
        Method::POST,
        format!("/v2/secret/source/blobs/uploads/?digest={digest}"),
        secret.clone(),
    )
    .await;
    assert_eq!(pushed.status(), 201);
    let in_target = |token: &'static str| {
        send(token, Method::HEAD, format!("/v2/{MOUNT_TARGET}/blobs/{digest}"), Vec::new())
    };

    // The pusher may write the target but not read the source: no mount, an ordinary session
    // instead (the answer the OCI spec gives for a blob that cannot be mounted).
    let mount = format!("/v2/{MOUNT_TARGET}/blobs/uploads/?mount={digest}&from=secret/source");
    let refused = send("pusher", Method::POST, mount.clone(), Vec::new()).await;
    assert_eq!(refused.status(), 202, "a session, not a mount");
    assert!(refused.headers().get("docker-content-digest").is_none());
    let location = refused.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(in_target("admin").await.status(), 404, "nothing linked into the target");
    assert_eq!(in_target("pusher").await.status(), 404);

    // Nor can the session be closed with that digest without sending the bytes.
    let closed =
        send("pusher", Method::PUT, format!("{location}?digest={digest}"), Vec::new()).await;
    assert_eq!(closed.status(), 400);
    let body: Value = closed.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");
    // Nor by a single POST naming the digest with an empty body.
    let single = send("pusher", Method::POST, format!("{mount}&digest={digest}"), Vec::new()).await;
    assert_eq!(single.status(), 400);
    assert_eq!(in_target("admin").await.status(), 404, "still nothing linked");

    // The same mount by someone who may read the source works: the refusal above was the rule.
    let mounted = send("admin", Method::POST, mount, Vec::new()).await;
    assert_eq!(mounted.status(), 201);
    assert_eq!(in_target("pusher").await.status(), 200);
}
