//! Reading an OTLP/HTTP request body: content type, content encoding, and bounded inflation.

use std::io::Read;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};

use super::IngestError;

/// How an OTLP/HTTP body is encoded; responses use the request's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (the OTLP/JSON mapping).
    Json,
}

impl PayloadFormat {
    /// The media type to send in `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            PayloadFormat::Protobuf => "application/x-protobuf",
            PayloadFormat::Json => "application/json",
        }
    }

    /// The format named by a request's `Content-Type` (parameters such as `charset` ignored).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, IngestError> {
        let value = headers.get(CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()));
        let media_type = value
            .as_deref()
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        match media_type.as_deref() {
            Some("application/x-protobuf") | Some("application/protobuf") => {
                Ok(PayloadFormat::Protobuf)
            }
            Some("application/json") => Ok(PayloadFormat::Json),
            _ => Err(IngestError::UnsupportedMediaType { content_type: value.map(Into::into) }),
        }
    }
}

/// The body's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentEncoding {
    Identity,
    Gzip,
}

impl ContentEncoding {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, IngestError> {
        let mut result = ContentEncoding::Identity;
        for value in headers.get_all(CONTENT_ENCODING) {
            let text = String::from_utf8_lossy(value.as_bytes());
            for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                match coding.to_ascii_lowercase().as_str() {
                    "identity" => {}
                    "gzip" | "x-gzip" if result == ContentEncoding::Identity => {
                        result = ContentEncoding::Gzip;
                    }
                    _ => {
                        return Err(IngestError::UnsupportedEncoding { encoding: text.into() });
                    }
                }
            }
        }
        Ok(result)
    }
}

/// The body as plain bytes, at most `limit` of them: a gzip body is inflated in small steps
/// and abandoned as soon as its output passes `limit`, so a gzip bomb costs at most `limit`.
pub(crate) fn decoded_body(
    body: Bytes,
    encoding: ContentEncoding,
    limit: usize,
) -> Result<Bytes, IngestError> {
    if body.len() > limit {
        return Err(IngestError::TooLarge { limit });
    }
    match encoding {
        ContentEncoding::Identity => Ok(body),
        ContentEncoding::Gzip => inflate_bounded(&body, limit).map(Bytes::from),
    }
}

fn inflate_bounded(gzip: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    const CHUNK: usize = 64 * 1024;
    let mut decoder = MultiGzDecoder::new(gzip);
    // Start from a guess (typical OTLP compresses 5-10x) and grow by doubling, never past limit.
    let mut out: Vec<u8> = Vec::with_capacity(gzip.len().saturating_mul(8).max(CHUNK).min(limit));
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = decoder.read(&mut chunk).map_err(|e| IngestError::BadGzip(e.to_string()))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(IngestError::TooLarge { limit });
        }
        if out.capacity() - out.len() < n {
            let target = out.capacity().saturating_mul(2).min(limit).max(out.len() + n);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use http::HeaderValue;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn content_type_accepts_parameters_and_case() {
        let h = headers(&[("content-type", "Application/JSON; charset=utf-8")]);
        assert_eq!(PayloadFormat::from_headers(&h).unwrap(), PayloadFormat::Json);
        let h = headers(&[("content-type", "application/x-protobuf")]);
        assert_eq!(PayloadFormat::from_headers(&h).unwrap(), PayloadFormat::Protobuf);
    }

    #[test]
    fn content_type_other_or_missing_is_415() {
        for h in [headers(&[("content-type", "text/plain")]), HeaderMap::new()] {
            let err = PayloadFormat::from_headers(&h).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }

    #[test]
    fn content_encoding_gzip_identity_or_415() {
        assert_eq!(
            ContentEncoding::from_headers(&HeaderMap::new()).unwrap(),
            ContentEncoding::Identity
        );
        let h = headers(&[("content-encoding", "GZIP")]);
        assert_eq!(ContentEncoding::from_headers(&h).unwrap(), ContentEncoding::Gzip);
        let h = headers(&[("content-encoding", "identity")]);
        assert_eq!(ContentEncoding::from_headers(&h).unwrap(), ContentEncoding::Identity);
        for bad in ["br", "deflate", "zstd", "gzip, gzip"] {
            let h = headers(&[("content-encoding", bad)]);
            let err = ContentEncoding::from_headers(&h).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
        }
    }

    #[test]
    fn gzip_inflates_and_concatenated_members_are_read() {
        let mut two = gzip(b"hello ");
        two.extend(gzip(b"world"));
        let out = decoded_body(two.into(), ContentEncoding::Gzip, 1024).unwrap();
        assert_eq!(&out[..], b"hello world");
    }

    #[test]
    fn gzip_bomb_is_cut_at_the_limit() {
        // 64 MiB of zeros compresses to about 64 KiB; with a 1 MiB limit the inflation must stop
        // right after 1 MiB of output instead of producing all of it.
        let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 1024 * 1024);
        let err = inflate_bounded(&bomb, 1024 * 1024).unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { limit } if limit == 1024 * 1024));
    }

    #[test]
    fn exact_limit_passes_and_one_more_byte_fails() {
        let data = vec![7u8; 4096];
        assert_eq!(inflate_bounded(&gzip(&data), 4096).unwrap(), data);
        assert!(matches!(
            inflate_bounded(&gzip(&[7u8; 4097]), 4096),
            Err(IngestError::TooLarge { .. })
        ));
        let big: Bytes = vec![0u8; 4097].into();
        assert!(matches!(
            decoded_body(big, ContentEncoding::Identity, 4096),
            Err(IngestError::TooLarge { .. })
        ));
    }

    #[test]
    fn corrupt_gzip_is_400() {
        let mut data = gzip(b"some telemetry body that is long enough");
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
        data.truncate(data.len() - 4);
        let err = decoded_body(data.into(), ContentEncoding::Gzip, 1024).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }
}
