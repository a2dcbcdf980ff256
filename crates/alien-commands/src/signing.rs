//! Manager-signed URLs: HMAC-SHA256 over a purpose, a subject and an expiry, compared in constant
//! time. Used for presigned response submission (`commands.v1:{id}:{expires}`) and for the local
//! payload store's `/v1/payloads/{key}?exp=&sig=` URLs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Signs and verifies manager URLs with one 32-byte key.
#[derive(Clone)]
pub struct UrlSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(<key>)")
    }
}

impl UrlSigner {
    /// A signer with `key`.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Hex HMAC-SHA256 of `message`.
    pub fn sign(&self, message: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable_mac());
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `signature` (hex) is the HMAC of `message`, in constant time.
    pub fn verify(&self, message: &str, signature: &str) -> bool {
        let Ok(raw) = hex::decode(signature) else { return false };
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable_mac());
        mac.update(message.as_bytes());
        mac.verify_slice(&raw).is_ok()
    }

    /// `(expires, signature)` for `message_of(expires)` valid for `ttl` from `now`.
    pub fn sign_until(
        &self,
        now: SystemTime,
        ttl: Duration,
        message_of: impl Fn(u64) -> String,
    ) -> (u64, String) {
        let expires = unix(now + ttl);
        (expires, self.sign(&message_of(expires)))
    }

    /// Verifies a signature with its expiry against `now`.
    pub fn verify_until(
        &self,
        now: SystemTime,
        expires: u64,
        signature: &str,
        message: &str,
    ) -> bool {
        unix(now) <= expires && self.verify(message, signature)
    }
}

/// HMAC accepts keys of any length; this cannot happen with a 32-byte key.
fn unreachable_mac() -> Hmac<Sha256> {
    #[allow(clippy::expect_used)]
    <Hmac<Sha256> as KeyInit>::new_from_slice(&[0u8; 32]).expect("HMAC takes any key length")
}

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_message_key_and_expiry() {
        let signer = UrlSigner::new([7; 32]);
        let now = SystemTime::now();
        let (exp, sig) =
            signer.sign_until(now, Duration::from_secs(60), |e| format!("commands.v1:cmd_x:{e}"));
        assert!(signer.verify_until(now, exp, &sig, &format!("commands.v1:cmd_x:{exp}")));
        assert!(
            !signer.verify_until(now, exp, &sig, &format!("commands.v1:cmd_y:{exp}")),
            "other subject"
        );
        assert!(
            !signer.verify_until(
                now + Duration::from_secs(120),
                exp,
                &sig,
                &format!("commands.v1:cmd_x:{exp}")
            ),
            "expired"
        );
        assert!(
            !UrlSigner::new([8; 32]).verify(&format!("commands.v1:cmd_x:{exp}"), &sig),
            "other key"
        );
        assert!(!signer.verify("m", "zz"), "not hex");
        let mut tampered = sig.clone();
        tampered.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
        assert!(!signer.verify(&format!("commands.v1:cmd_x:{exp}"), &tampered));
    }
}
