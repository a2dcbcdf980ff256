//! Pushing a local OCI image layout to the manager's registry (OCI Distribution v1.1): each blob
//! is asked for first (`HEAD`) and skipped when the registry has it, otherwise uploaded in
//! chunks (`POST`, `PATCH` with `Content-Range`, `PUT ?digest=`) while its SHA-256 is checked;
//! then the manifest is put by tag and its digest compared with the registry's.
//!
//! The registry is reached over plain HTTP only when it is on a loopback address, or when it is the
//! manager's own host and the manager is reached over plain HTTP; over HTTPS otherwise.

use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use crate::ApiKey;

/// Bytes per upload request.
const CHUNK: usize = 8 * 1024 * 1024;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The OCI layout cannot be read or does not hold the asked image.
    #[error("OCI layout {}: {detail}", path.display())]
    Layout {
        /// The layout directory or file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The registry refused a request.
    #[error("registry {url} answered {status}: {message}")]
    Refused {
        /// The URL (without query).
        url: String,
        /// HTTP status.
        status: u16,
        /// The registry's error text.
        message: String,
    },
    /// No answer from the registry.
    #[error("cannot reach the registry at {url}: {detail}")]
    Unreachable {
        /// The URL (without query).
        url: String,
        /// What failed.
        detail: String,
    },
    /// A blob of the layout is not what its digest says.
    #[error("blob {digest} of {} does not match its digest (the layout is damaged)", path.display())]
    DigestMismatch {
        /// The blob's digest.
        digest: String,
        /// Its file.
        path: PathBuf,
    },
}

/// One image of a local OCI layout: `DIR` (the only image in it) or `DIR` with a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutImage {
    /// The layout directory (holds `index.json`).
    pub dir: PathBuf,
    /// The `org.opencontainers.image.ref.name` to pick (`latest`, or `name:latest` as umoci
    /// writes it); `None`: the layout must hold exactly one image.
    pub tag: Option<String>,
}

impl LayoutImage {
    /// Parses `DIR[:TAG]`: the text before the first `:` is the directory when it is one.
    pub fn parse(text: &str) -> LayoutImage {
        if let Some((dir, tag)) = text.split_once(':')
            && Path::new(dir).is_dir()
            && !tag.is_empty()
        {
            return LayoutImage { dir: dir.into(), tag: Some(tag.to_owned()) };
        }
        LayoutImage { dir: text.into(), tag: None }
    }
}

/// Where images go: a registry host and the repository prefix the manager names
/// (`GET /v1/build-config`).
#[derive(Debug, Clone)]
pub struct Destination {
    /// `http://host:port` or `https://host`.
    pub base: String,
    /// The host as image references name it (`host:port`).
    pub host: String,
    /// Repository prefix (`artifacts`).
    pub repository_prefix: String,
}

impl Destination {
    /// The registry `host` with `prefix`, reached the way the module documentation says given
    /// the manager's URL.
    pub fn new(host: &str, prefix: &str, manager_url: &str) -> Destination {
        let manager = url::Url::parse(manager_url).ok();
        let manager_host = manager.as_ref().and_then(|m| {
            let h = m.host_str()?;
            Some(match m.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        });
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_matches(['[', ']']);
        let loopback = name == "localhost"
            || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let same_plain = manager.as_ref().is_some_and(|m| m.scheme() == "http")
            && manager_host.as_deref() == Some(host);
        let scheme = if loopback || same_plain { "http" } else { "https" };
        Destination {
            base: format!("{scheme}://{host}"),
            host: host.to_owned(),
            repository_prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    /// `<prefix>/<name>`.
    pub fn repository(&self, name: &str) -> String {
        if self.repository_prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.repository_prefix)
        }
    }
}

/// What a push reports as it goes (progress bars); every method has a no-op default.
pub trait PushProgress: Send + Sync {
    /// A blob will be looked at.
    fn blob_started(&self, _digest: &str, _size: u64) {}
    /// `sent` bytes of it are uploaded so far.
    fn blob_progress(&self, _digest: &str, _sent: u64) {}
    /// It is in the registry; `skipped`: it was there already.
    fn blob_done(&self, _digest: &str, _skipped: bool) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl PushProgress for NoProgress {}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushedImage {
    /// `host/repository@sha256:...`: the reference a stack uses.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// The repository.
    pub repository: String,
    /// The tag the manifest was put under.
    pub tag: String,
    /// Blobs uploaded.
    pub blobs_pushed: usize,
    /// Blobs the registry had already.
    pub blobs_skipped: usize,
    /// Bytes uploaded.
    pub bytes_pushed: u64,
}

/// Pushes OCI layouts with a bearer key (the manager accepts its tokens on `/v2`), or with the
/// Basic credentials a cloud registry needs ([`Pusher::with_basic`]).
#[derive(Clone)]
pub struct Pusher {
    http: reqwest::Client,
    auth: Auth,
}

/// How a [`Pusher`] authenticates.
#[derive(Clone)]
enum Auth {
    Bearer(ApiKey),
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Pusher");
        match &self.auth {
            Auth::Bearer(key) => out.field("key", key),
            Auth::Basic { username, .. } => out.field("basic", username),
        };
        out.finish_non_exhaustive()
    }
}

/// Adds a [`Pusher`]'s credentials to a request.
trait Authorize {
    fn auth(self, auth: &Auth) -> Self;
}

impl Authorize for reqwest::RequestBuilder {
    fn auth(self, auth: &Auth) -> Self {
        match auth {
            Auth::Bearer(key) => self.bearer_auth(key.expose()),
            Auth::Basic { username, password } => self.basic_auth(username, Some(password)),
        }
    }
}

fn layout_error(path: &Path, detail: impl std::fmt::Display) -> RegistryError {
    RegistryError::Layout { path: path.to_owned(), detail: detail.to_string() }
}

fn blob_path(dir: &Path, descriptor: &Descriptor) -> PathBuf {
    let digest = descriptor.digest();
    dir.join("blobs").join(digest.algorithm().to_string()).join(digest.digest())
}

/// The tag part of a `ref.name` (`hello-app:latest` gives `latest`).
fn tag_of(ref_name: &str) -> String {
    let tag = ref_name.rsplit(':').next().unwrap_or_default();
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !tag.starts_with(['.', '-']);
    if valid { tag.to_owned() } else { "latest".to_owned() }
}

/// The manifest descriptor of `image` in its layout and the tag to push it under.
fn select(image: &LayoutImage) -> Result<(Descriptor, String), RegistryError> {
    let index_path = image.dir.join("index.json");
    let index = ImageIndex::from_file(&index_path).map_err(|e| layout_error(&index_path, e))?;
    let ref_name = |d: &Descriptor| {
        d.annotations().as_ref().and_then(|a| a.get("org.opencontainers.image.ref.name")).cloned()
    };
    let found: Vec<&Descriptor> = match &image.tag {
        Some(tag) => index
            .manifests()
            .iter()
            .filter(|d| ref_name(d).is_some_and(|r| r == *tag || r.ends_with(&format!(":{tag}"))))
            .collect(),
        None => index.manifests().iter().collect(),
    };
    match found.as_slice() {
        [one] => {
            let tag = ref_name(one).map_or_else(|| "latest".to_owned(), |r| tag_of(&r));
            Ok(((*one).clone(), tag))
        }
        [] => Err(layout_error(
            &index_path,
            match &image.tag {
                Some(tag) => format!("no image tagged {tag:?}"),
                None => "holds no image".to_owned(),
            },
        )),
        _ => Err(layout_error(&index_path, "holds several images: name one with DIR:TAG")),
    }
}

impl Pusher {
    /// A pusher calling with `key`.
    pub fn new(key: ApiKey) -> Result<Pusher, RegistryError> {
        // No overall timeout (a layer may be large); a registry that does not answer is an error.
        let http = reqwest::Client::builder()
            .user_agent(concat!("alien-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .read_timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: String::new(),
                detail: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Pusher { http, auth: Auth::Bearer(key) })
    }

    /// This pusher with Basic `username:password` instead of its key: the credentials
    /// `GET /v1/build-config` answers for a registry that does not take manager tokens (ECR).
    #[must_use]
    pub fn with_basic(&self, username: &str, password: &str) -> Pusher {
        let auth = Auth::Basic { username: username.to_owned(), password: password.to_owned() };
        Pusher { http: self.http.clone(), auth }
    }

    /// Pushes `image` to `<destination>/<repository_prefix>/<name>`; blobs the registry has are
    /// not sent again.
    pub async fn push(
        &self,
        image: &LayoutImage,
        destination: &Destination,
        name: &str,
        progress: &dyn PushProgress,
    ) -> Result<PushedImage, RegistryError> {
        let (descriptor, tag) = select(image)?;
        let media_type = descriptor.media_type().to_string();
        if !media_type.contains("manifest.v1") && !media_type.contains("manifest.v2") {
            return Err(layout_error(
                &image.dir,
                format!(
                    "the image is a {media_type}, not an image manifest (multi-platform indexes are not pushed)"
                ),
            ));
        }
        let manifest_path = blob_path(&image.dir, &descriptor);
        let manifest_bytes =
            std::fs::read(&manifest_path).map_err(|e| layout_error(&manifest_path, e))?;
        let digest = descriptor.digest().to_string();
        if format!("sha256:{}", hex::encode(Sha256::digest(&manifest_bytes))) != digest {
            return Err(RegistryError::DigestMismatch { digest, path: manifest_path });
        }
        let manifest = ImageManifest::from_reader(manifest_bytes.as_slice())
            .map_err(|e| layout_error(&manifest_path, e))?;
        let repository = destination.repository(name);
        let mut pushed = PushedImage {
            reference: String::new(),
            digest: digest.clone(),
            repository: repository.clone(),
            tag: tag.clone(),
            blobs_pushed: 0,
            blobs_skipped: 0,
            bytes_pushed: 0,
        };
        let blobs = std::iter::once(manifest.config()).chain(manifest.layers().iter());
        for blob in blobs {
            let blob_digest = blob.digest().to_string();
            progress.blob_started(&blob_digest, blob.size());
            if self.has_blob(destination, &repository, &blob_digest).await? {
                pushed.blobs_skipped += 1;
                progress.blob_done(&blob_digest, true);
                continue;
            }
            let path = blob_path(&image.dir, blob);
            pushed.bytes_pushed +=
                self.upload(destination, &repository, &path, &blob_digest, progress).await?;
            pushed.blobs_pushed += 1;
            progress.blob_done(&blob_digest, false);
        }
        let url = format!("{}/v2/{repository}/manifests/{tag}", destination.base);
        let response = self
            .http
            .put(&url)
            .auth(&self.auth)
            .header(reqwest::header::CONTENT_TYPE, &media_type)
            .body(manifest_bytes)
            .send()
            .await
            .map_err(|e| unreachable(&url, e))?;
        let response = check(&url, response).await?;
        if let Some(answered) = response.headers().get("docker-content-digest")
            && answered.as_bytes() != digest.as_bytes()
        {
            return Err(RegistryError::Refused {
                url,
                status: response.status().as_u16(),
                message: format!(
                    "stored the manifest as {} instead of {digest}",
                    String::from_utf8_lossy(answered.as_bytes())
                ),
            });
        }
        pushed.reference = format!("{}/{repository}@{digest}", destination.host);
        Ok(pushed)
    }

    async fn has_blob(
        &self,
        destination: &Destination,
        repository: &str,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", destination.base);
        let response =
            self.http.head(&url).auth(&self.auth).send().await.map_err(|e| unreachable(&url, e))?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => check(&url, response).await.map(|_| false),
        }
    }

    /// Uploads one blob in chunks, checking its digest as it is read; the bytes sent.
    async fn upload(
        &self,
        destination: &Destination,
        repository: &str,
        path: &Path,
        digest: &str,
        progress: &dyn PushProgress,
    ) -> Result<u64, RegistryError> {
        let start = format!("{}/v2/{repository}/blobs/uploads/", destination.base);
        let response = self
            .http
            .post(&start)
            .auth(&self.auth)
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await
            .map_err(|e| unreachable(&start, e))?;
        let mut location = location(&start, &check(&start, response).await?)?;
        let mut file = tokio::fs::File::open(path).await.map_err(|e| layout_error(path, e))?;
        let mut hasher = Sha256::new();
        let mut sent = 0u64;
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let mut filled = 0;
            while filled < CHUNK {
                let n =
                    file.read(&mut buffer[filled..]).await.map_err(|e| layout_error(path, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            let chunk = buffer[..filled].to_vec();
            hasher.update(&chunk);
            let end = sent + filled as u64 - 1;
            let response = self
                .http
                .patch(&location)
                .auth(&self.auth)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header("Content-Range", format!("{sent}-{end}"))
                .body(chunk)
                .send()
                .await
                .map_err(|e| unreachable(&location, e))?;
            let response = check(&location, response).await?;
            location = self::location(&location, &response)?;
            sent += filled as u64;
            progress.blob_progress(digest, sent);
        }
        if format!("sha256:{}", hex::encode(hasher.finalize())) != digest {
            return Err(RegistryError::DigestMismatch {
                digest: digest.to_owned(),
                path: path.to_owned(),
            });
        }
        let separator = if location.contains('?') { '&' } else { '?' };
        let finish = format!("{location}{separator}digest={digest}");
        let response = self
            .http
            .put(&finish)
            .auth(&self.auth)
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await
            .map_err(|e| unreachable(&finish, e))?;
        check(&finish, response).await?;
        Ok(sent)
    }
}

/// The upload URL a registry answered (`Location`, absolute or relative to `base`).
fn location(base: &str, response: &reqwest::Response) -> Result<String, RegistryError> {
    let refused = |message: &str| RegistryError::Refused {
        url: strip_query(base),
        status: response.status().as_u16(),
        message: message.to_owned(),
    };
    let value = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refused("no Location header on an upload"))?;
    let base = url::Url::parse(base).map_err(|_| refused("bad upload URL"))?;
    base.join(value).map(String::from).map_err(|_| refused("bad Location header"))
}

fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or_default().to_owned()
}

fn unreachable(url: &str, error: reqwest::Error) -> RegistryError {
    RegistryError::Unreachable { url: strip_query(url), detail: crate::describe(error) }
}

/// The response when it is a success; otherwise the registry's error.
async fn check(url: &str, response: reqwest::Response) -> Result<reqwest::Response, RegistryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let first = v.get("errors")?.get(0)?.clone();
            Some(format!(
                "{}: {}",
                first.get("code").and_then(|c| c.as_str()).unwrap_or("ERROR"),
                first.get("message").and_then(|m| m.as_str()).unwrap_or_default()
            ))
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    Err(RegistryError::Refused { url: strip_query(url), status: status.as_u16(), message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_or_the_managers_own_plain_host() {
        let d = |host: &str, manager: &str| Destination::new(host, "artifacts", manager).base;
        assert_eq!(d("localhost:8080", "https://m.example.com"), "http://localhost:8080");
        assert_eq!(d("127.0.0.1:5000", "https://m.example.com"), "http://127.0.0.1:5000");
        assert_eq!(d("[::1]:5000", "https://m.example.com"), "http://[::1]:5000");
        assert_eq!(
            d("m.example.com:8080", "http://m.example.com:8080"),
            "http://m.example.com:8080"
        );
        assert_eq!(d("m.example.com", "https://m.example.com"), "https://m.example.com");
        assert_eq!(
            d("registry.example.com", "http://m.example.com"),
            "https://registry.example.com"
        );
        let dest = Destination::new("h", "/artifacts/", "http://h");
        assert_eq!(dest.repository("web"), "artifacts/web");
    }

    #[test]
    fn tags_come_from_the_ref_name() {
        assert_eq!(tag_of("hello-app:latest"), "latest");
        assert_eq!(tag_of("v1.2"), "v1.2");
        assert_eq!(tag_of("bad tag!"), "latest");
    }

    #[test]
    fn layout_images_parse_dir_and_tag() {
        let dir = tempfile::tempdir().ok();
        let path = dir.as_ref().map(|d| d.path().display().to_string()).unwrap_or_default();
        assert_eq!(
            LayoutImage::parse(&format!("{path}:hello-app:latest")),
            LayoutImage { dir: path.clone().into(), tag: Some("hello-app:latest".into()) }
        );
        assert_eq!(LayoutImage::parse(&path), LayoutImage { dir: path.into(), tag: None });
        assert_eq!(LayoutImage::parse("/missing:x").tag, None);
    }

    #[test]
    fn a_missing_layout_is_a_layout_error_naming_its_index() {
        let image = LayoutImage { dir: "/nonexistent-layout".into(), tag: None };
        let error = select(&image).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("/nonexistent-layout/index.json"), "{error}");
    }
}
