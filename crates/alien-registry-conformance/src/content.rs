//! Test content made in-process: random blobs, sha256 digests, and manifests of the four media
//! types the suite pushes. Manifests are serialised pretty-printed with a trailing newline, a form
//! no registry produces by re-encoding, so a byte-for-byte round trip shows the registry stored
//! what the client sent.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256, Sha512};

/// OCI image manifest.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub(crate) const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The OCI empty descriptor's media type (`{}`), used as the config of artifacts.
pub(crate) const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Docker image manifest, schema 2.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub(crate) const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// What a manifest GET/HEAD accepts: every type the suite pushes.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// `n` random bytes from the OS.
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(bytes)
}

/// A short lowercase token, valid in repository names and tags.
pub(crate) fn random_token() -> Result<String, String> {
    Ok(hex::encode(random_bytes(5)?))
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha512:<hex>` of `bytes`.
pub(crate) fn sha512_digest(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(bytes)))
}

/// A digest of random bytes: content no registry holds.
pub(crate) fn unknown_digest() -> Result<String, String> {
    Ok(sha256_digest(&random_bytes(64)?))
}

/// Bytes and their digest.
#[derive(Clone)]
pub(crate) struct Blob {
    /// The content.
    pub(crate) bytes: Vec<u8>,
    /// `sha256:` digest of `bytes`.
    pub(crate) digest: String,
}

impl Blob {
    /// Wraps `bytes`.
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        let digest = sha256_digest(&bytes);
        Self { bytes, digest }
    }

    /// `size` random bytes.
    pub(crate) fn random(size: usize) -> Result<Self, String> {
        Ok(Self::new(random_bytes(size)?))
    }

    /// A small JSON image config, unique per call so repositories never share it by accident.
    pub(crate) fn config() -> Result<Self, String> {
        let value = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "org.example.conformance.nonce": random_token()? } },
            "rootfs": { "type": "layers", "diff_ids": [] }
        });
        Ok(Self::new(pretty(&value)?))
    }

    /// The OCI empty blob, `{}`.
    pub(crate) fn empty_json() -> Self {
        Self::new(b"{}".to_vec())
    }

    /// A descriptor of this blob with `media_type`.
    pub(crate) fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// A manifest's exact bytes, digest and media type.
#[derive(Clone)]
pub(crate) struct Manifest {
    /// The bytes pushed (and expected back).
    pub(crate) bytes: Vec<u8>,
    /// `sha256:` digest of `bytes`.
    pub(crate) digest: String,
    /// The media type, sent as `Content-Type`.
    pub(crate) media_type: &'static str,
}

impl Manifest {
    /// Serialises `value` as the manifest of `media_type`.
    pub(crate) fn from_json(media_type: &'static str, value: &Value) -> Result<Self, String> {
        let bytes = pretty(value)?;
        let digest = sha256_digest(&bytes);
        Ok(Self { bytes, digest, media_type })
    }

    /// A descriptor of this manifest.
    pub(crate) fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len() })
    }

    /// OCI image manifest of `config` and `layers`.
    pub(crate) fn oci_image(config: &Blob, layers: &[&Blob]) -> Result<Self, String> {
        let layers: Vec<Value> = layers.iter().map(|b| b.descriptor(OCI_LAYER)).collect();
        Self::from_json(
            OCI_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(OCI_CONFIG),
                "layers": layers,
            }),
        )
    }

    /// OCI index of `manifests`, each given a distinct platform.
    pub(crate) fn oci_index(manifests: &[&Manifest]) -> Result<Self, String> {
        Self::from_json(
            OCI_INDEX,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": with_platforms(manifests),
            }),
        )
    }

    /// Docker schema 2 manifest of `config` and `layers`.
    pub(crate) fn docker_image(config: &Blob, layers: &[&Blob]) -> Result<Self, String> {
        let layers: Vec<Value> = layers.iter().map(|b| b.descriptor(DOCKER_LAYER)).collect();
        Self::from_json(
            DOCKER_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": config.descriptor(DOCKER_CONFIG),
                "layers": layers,
            }),
        )
    }

    /// Docker manifest list of `manifests`, each given a distinct platform.
    pub(crate) fn docker_list(manifests: &[&Manifest]) -> Result<Self, String> {
        Self::from_json(
            DOCKER_MANIFEST_LIST,
            &json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST_LIST,
                "manifests": with_platforms(manifests),
            }),
        )
    }

    /// An OCI artifact manifest (empty config) with one layer, a `subject`, an optional
    /// `artifactType` and annotations.
    pub(crate) fn oci_artifact(
        artifact_type: Option<&str>,
        config_media_type: &str,
        layer: &Blob,
        subject: &Manifest,
        annotations: &Value,
    ) -> Result<Self, String> {
        let mut value = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": Blob::empty_json().descriptor(config_media_type),
            "layers": [layer.descriptor("application/vnd.example.conformance.layer")],
            "subject": subject.descriptor(),
            "annotations": annotations,
        });
        if let (Some(t), Some(object)) = (artifact_type, value.as_object_mut()) {
            object.insert("artifactType".to_owned(), Value::from(t));
        }
        Self::from_json(OCI_MANIFEST, &value)
    }
}

/// Descriptors of `manifests` with `platform`s (linux/amd64, linux/arm64, ...).
fn with_platforms(manifests: &[&Manifest]) -> Vec<Value> {
    const ARCHITECTURES: [&str; 4] = ["amd64", "arm64", "ppc64le", "s390x"];
    manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut d = m.descriptor();
            if let Some(object) = d.as_object_mut() {
                let arch = ARCHITECTURES[i % ARCHITECTURES.len()];
                object
                    .insert("platform".to_owned(), json!({ "architecture": arch, "os": "linux" }));
            }
            d
        })
        .collect()
}

/// Pretty JSON with a trailing newline.
fn pretty(value: &Value) -> Result<Vec<u8>, String> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| format!("cannot serialise JSON: {e}"))?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn random_tokens_are_valid_name_components() {
        let token = random_token().unwrap();
        assert_eq!(token.len(), 10);
        assert!(token.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    }

    #[test]
    fn manifests_keep_their_exact_bytes_and_digest() {
        let config = Blob::config().unwrap();
        let layer = Blob::random(10).unwrap();
        let m = Manifest::oci_image(&config, &[&layer]).unwrap();
        assert_eq!(m.digest, sha256_digest(&m.bytes));
        assert!(m.bytes.ends_with(b"}\n"));
        let parsed: Value = serde_json::from_slice(&m.bytes).unwrap();
        assert_eq!(parsed["layers"][0]["digest"], layer.digest.as_str());
        assert_eq!(parsed["config"]["size"], config.bytes.len());
    }
}
