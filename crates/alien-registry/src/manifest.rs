//! A pushed manifest on its own: its media type (the `Content-Type`, else the document's), its
//! parse as an OCI image manifest or index, and what it references.
//!
//! Pure, so every byte a client may send reaches it without a store (the `manifest` fuzz target
//! does). Whether the referenced content is in the repository, with the size its descriptor
//! gives, is the PUT route's part, against the [`BlobStore`](crate::BlobStore).

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde_json::Value;

use crate::error::RegistryError;
use crate::reference::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Content a manifest names, which must be in the repository before the manifest is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Referenced {
    /// A blob (an image manifest's config or a layer) of `size` bytes.
    Blob {
        /// Its digest.
        digest: Digest,
        /// The size the descriptor gives.
        size: u64,
    },
    /// A manifest (a child of an index) of `size` bytes.
    Manifest {
        /// Its digest.
        digest: Digest,
        /// The size the descriptor gives.
        size: u64,
    },
}

/// A manifest that parsed, with what the referrers API lists about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    /// Its media type, as stored and served back.
    pub media_type: String,
    /// What it names, in document order (config first, then layers; or the index's children).
    pub references: Vec<Referenced>,
    /// The manifest it refers to (`subject`), if any.
    pub subject: Option<Digest>,
    /// Its artifact type (an image manifest without one: its config's media type).
    pub artifact_type: Option<String>,
    /// Its annotations.
    pub annotations: Option<Value>,
}

/// Parses a manifest body pushed with `content_type` (the raw `Content-Type` header value).
///
/// The media type is the content type's (parameters dropped) unless that is absent, empty or
/// `application/json`; then the document's `mediaType`; then an index if it has `manifests`, else
/// an image manifest. `MANIFEST_INVALID` for anything else that is not a schema 2 manifest of
/// that type, `DIGEST_INVALID` for a descriptor whose digest the registry cannot verify.
pub fn parse_manifest(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<ParsedManifest, RegistryError> {
    let json: Value = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::manifest_invalid(format!("not JSON: {e}")))?;
    let media_type = content_type
        .map(|v| v.split(';').next().unwrap_or(v).trim())
        .filter(|ct| !ct.is_empty() && *ct != "application/json")
        .map(str::to_owned)
        .or_else(|| json.get("mediaType").and_then(Value::as_str).map(str::to_owned))
        .or_else(|| json.get("manifests").map(|_| OCI_INDEX.to_owned()))
        .unwrap_or_else(|| OCI_MANIFEST.to_owned());
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let manifest: ImageManifest = serde_json::from_slice(bytes).map_err(|e| {
                RegistryError::manifest_invalid(format!("invalid image manifest: {e}"))
            })?;
            if manifest.schema_version() != 2 {
                return Err(RegistryError::manifest_invalid("schemaVersion must be 2"));
            }
            let references = std::iter::once(manifest.config())
                .chain(manifest.layers())
                .map(|d| Ok(Referenced::Blob { digest: descriptor_digest(d)?, size: d.size() }))
                .collect::<Result<_, RegistryError>>()?;
            let artifact_type = manifest
                .artifact_type()
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| Some(manifest.config().media_type().to_string()));
            Ok(ParsedManifest {
                references,
                subject: manifest.subject().as_ref().map(descriptor_digest).transpose()?,
                artifact_type,
                annotations: manifest
                    .annotations()
                    .as_ref()
                    .and_then(|a| serde_json::to_value(a).ok()),
                media_type,
            })
        }
        OCI_INDEX | DOCKER_LIST => {
            let index: ImageIndex = serde_json::from_slice(bytes).map_err(|e| {
                RegistryError::manifest_invalid(format!("invalid image index: {e}"))
            })?;
            if index.schema_version() != 2 {
                return Err(RegistryError::manifest_invalid("schemaVersion must be 2"));
            }
            let references = index
                .manifests()
                .iter()
                .map(|d| Ok(Referenced::Manifest { digest: descriptor_digest(d)?, size: d.size() }))
                .collect::<Result<_, RegistryError>>()?;
            Ok(ParsedManifest {
                references,
                subject: index.subject().as_ref().map(descriptor_digest).transpose()?,
                artifact_type: index.artifact_type().as_ref().map(ToString::to_string),
                annotations: index
                    .annotations()
                    .as_ref()
                    .and_then(|a| serde_json::to_value(a).ok()),
                media_type,
            })
        }
        other => {
            Err(RegistryError::manifest_invalid(format!("unsupported manifest media type {other}")))
        }
    }
}

fn descriptor_digest(descriptor: &Descriptor) -> Result<Digest, RegistryError> {
    Digest::parse(descriptor.digest().as_ref())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image() -> String {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest('a'), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest('b'), "size": 7}],
            "annotations": {"org.example": "x"}
        })
        .to_string()
    }

    #[test]
    fn an_image_manifest_names_its_config_and_layers() {
        let parsed = parse_manifest(None, image().as_bytes()).unwrap();
        assert_eq!(parsed.media_type, OCI_MANIFEST);
        let blob = |c, size| Referenced::Blob { digest: Digest::parse(&digest(c)).unwrap(), size };
        assert_eq!(parsed.references, [blob('a', 2), blob('b', 7)]);
        assert_eq!(
            parsed.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(parsed.annotations, Some(serde_json::json!({"org.example": "x"})));
        assert_eq!(parsed.subject, None);
    }

    #[test]
    fn the_media_type_comes_from_the_header_then_the_document() {
        let body = image();
        let with = |ct: Option<&str>| parse_manifest(ct, body.as_bytes()).map(|p| p.media_type);
        assert_eq!(with(Some("application/json; charset=utf-8")).unwrap(), OCI_MANIFEST);
        assert_eq!(with(Some(&format!(" {DOCKER_MANIFEST} ; x=y"))).unwrap(), DOCKER_MANIFEST);
        assert!(with(Some("text/plain")).is_err(), "an unsupported media type");
        let index = serde_json::json!({"schemaVersion": 2, "manifests": []}).to_string();
        assert_eq!(parse_manifest(None, index.as_bytes()).unwrap().media_type, OCI_INDEX);
    }

    #[test]
    fn bad_documents_and_digests_are_refused() {
        for body in [
            "not json".to_owned(),
            image().replace("\"schemaVersion\":2", "\"schemaVersion\":1"),
            image().replace(&digest('b'), "sha256:short"),
            serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": "md5:00", "size": 1}]}).to_string(),
        ] {
            assert!(parse_manifest(None, body.as_bytes()).is_err(), "{body}");
        }
    }
}
