//! What the `/v2/` routes parse from a request line and headers: repository names, tags and
//! digests (`RepoName::parse`, `Reference::parse`, `Digest::parse`), a blob GET's `Range`
//! (`parse_range`) and an upload chunk's `Content-Range` (`content_range`).
//!
//! Invariants: what parses is what was given (names, tags and digests print back as the input);
//! a chunk's range has a length, and its last byte is a `u64`.

#![no_main]

use alien_registry::reference::{Digest, MAX_NAME_LEN, Reference, RepoName, valid_tag};
use alien_registry::routes::{content_range, parse_range};
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(name) = RepoName::parse(text) {
            assert_eq!(name.as_str(), text);
            assert!(text.len() <= MAX_NAME_LEN && text.is_ascii());
        }
        match Reference::parse(text) {
            Ok(Reference::Digest(digest)) => assert_eq!(digest.to_string(), text),
            Ok(Reference::Tag(tag)) => assert!(tag == text && valid_tag(&tag)),
            Err(_) => {}
        }
        if let Ok(digest) = Digest::parse(text) {
            assert_eq!(digest.to_string(), text);
            assert_eq!(Digest::parse(&digest.to_string()).ok(), Some(digest));
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, value.clone());
        headers.insert(header::CONTENT_RANGE, value);
        if let Ok(Some((start, Some(end)))) = parse_range(&headers) {
            let _ = end.saturating_add(1).saturating_sub(start);
        }
        if let Ok(Some((start, length))) = content_range(&headers) {
            assert!(length >= 1, "a chunk of no bytes");
            assert!(start.checked_add(length - 1).is_some(), "a chunk past the last offset");
        }
    }
});
