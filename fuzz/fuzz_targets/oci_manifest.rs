//! A manifest PUT (`/v2/<name>/manifests/<reference>`) on untrusted bytes: `parse_manifest`, what
//! the route runs on the body and `Content-Type` before it looks anything up in the store.
//!
//! Input: a body starting with `{` is sent without a `Content-Type`; otherwise the first line is
//! the header's value and the rest the body.

#![no_main]

use alien_registry::manifest::{
    DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Referenced, parse_manifest,
};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(end) if data.first() != Some(&b'{') => (Some(&data[..end]), &data[end + 1..]),
        _ => (None, data),
    };
    // As the route reads the header: a value that is not visible ASCII counts as absent.
    let content_type = content_type
        .and_then(|v| HeaderValue::from_bytes(v).ok())
        .and_then(|v| v.to_str().ok().map(str::to_owned));
    let Ok(parsed) = parse_manifest(content_type.as_deref(), body) else { return };
    let index = match parsed.media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        OCI_INDEX | DOCKER_LIST => true,
        other => panic!("accepted a manifest of media type {other:?}"),
    };
    for reference in &parsed.references {
        assert_eq!(matches!(reference, Referenced::Manifest { .. }), index, "{reference:?}");
    }
    assert!(index || !parsed.references.is_empty(), "an image manifest names its config");
});
