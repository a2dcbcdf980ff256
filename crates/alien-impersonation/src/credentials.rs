//! Short-lived credentials, as handed to platform deployers and returned by
//! `POST /v1/credentials/mint`. They serialize with their secrets (that is their purpose); their
//! `Debug` never shows one.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::target::Cloud;

/// Credentials for one identity, tagged by `kind` on the wire:
/// `{"kind": "aws", "accessKeyId", "secretAccessKey", "sessionToken", "expiresAt"}`,
/// `{"kind": "gcp" | "azure", "accessToken", "expiresAt"}` or `{"kind": "ambient"}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Credentials {
    /// Temporary AWS credentials (STS).
    Aws {
        /// Access key id (an identifier, not a secret; it shows in CloudTrail).
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
        /// Session token.
        session_token: String,
        /// When they stop working.
        expires_at: DateTime<Utc>,
    },
    /// A GCP OAuth2 access token.
    Gcp {
        /// Bearer token.
        access_token: String,
        /// When it stops working.
        expires_at: DateTime<Utc>,
    },
    /// An Azure (Entra ID) access token.
    Azure {
        /// Bearer token.
        access_token: String,
        /// When it stops working.
        expires_at: DateTime<Utc>,
    },
    /// No secret: use the credentials of your own environment (instance role, workload
    /// identity, managed identity, `~/.aws`...).
    Ambient,
}

impl Credentials {
    /// When they stop working; `None` for [`Credentials::Ambient`] (the environment refreshes
    /// its own).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Credentials::Aws { expires_at, .. }
            | Credentials::Gcp { expires_at, .. }
            | Credentials::Azure { expires_at, .. } => Some(*expires_at),
            Credentials::Ambient => None,
        }
    }

    /// The cloud they are for; `None` for [`Credentials::Ambient`].
    pub fn cloud(&self) -> Option<Cloud> {
        match self {
            Credentials::Aws { .. } => Some(Cloud::Aws),
            Credentials::Gcp { .. } => Some(Cloud::Gcp),
            Credentials::Azure { .. } => Some(Cloud::Azure),
            Credentials::Ambient => None,
        }
    }

    /// The wire tag: `aws`, `gcp`, `azure` or `ambient`.
    pub fn kind(&self) -> &'static str {
        match self.cloud() {
            Some(cloud) => cloud.as_str(),
            None => "ambient",
        }
    }
}

/// Prints in place of a secret.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Shows the kind, the access key id and the expiry; secrets print as `<redacted>`.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Aws { access_key_id, expires_at, .. } => f
                .debug_struct("Aws")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &Redacted)
                .field("session_token", &Redacted)
                .field("expires_at", expires_at)
                .finish(),
            Credentials::Gcp { expires_at, .. } => f
                .debug_struct("Gcp")
                .field("access_token", &Redacted)
                .field("expires_at", expires_at)
                .finish(),
            Credentials::Azure { expires_at, .. } => f
                .debug_struct("Azure")
                .field("access_token", &Redacted)
                .field("expires_at", expires_at)
                .finish(),
            Credentials::Ambient => f.write_str("Ambient"),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap()
    }

    fn aws() -> Credentials {
        Credentials::Aws {
            access_key_id: "ASIAEXAMPLEKEYID".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRET".into(),
            session_token: "FwoGZXIvYXdzEBYaDSESSIONTOKEN".into(),
            expires_at: at(),
        }
    }

    #[test]
    fn debug_redacts_every_secret() {
        let aws = format!("{:?}", aws());
        assert!(!aws.contains("SECRET"), "{aws}");
        assert!(!aws.contains("SESSIONTOKEN"), "{aws}");
        assert!(aws.contains("ASIAEXAMPLEKEYID"), "the key id helps find the session: {aws}");
        assert!(aws.contains("2030-01-02"), "{aws}");

        for credentials in [
            Credentials::Gcp { access_token: "ya29.GCPTOKEN".into(), expires_at: at() },
            Credentials::Azure { access_token: "eyJ0eXAiAZURETOKEN".into(), expires_at: at() },
        ] {
            let debug = format!("{credentials:?}");
            let pretty = format!("{credentials:#?}");
            assert!(!debug.contains("TOKEN") && !pretty.contains("TOKEN"), "{pretty}");
            assert!(debug.contains("<redacted>"), "{debug}");
        }
        assert_eq!(format!("{:?}", Credentials::Ambient), "Ambient");
    }

    #[test]
    fn wire_form_is_tagged_camel_case() {
        assert_eq!(
            serde_json::to_value(aws()).unwrap(),
            json!({
                "kind": "aws",
                "accessKeyId": "ASIAEXAMPLEKEYID",
                "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRET",
                "sessionToken": "FwoGZXIvYXdzEBYaDSESSIONTOKEN",
                "expiresAt": "2030-01-02T03:04:05Z",
            })
        );
        let gcp = Credentials::Gcp { access_token: "t".into(), expires_at: at() };
        assert_eq!(
            serde_json::to_value(&gcp).unwrap(),
            json!({"kind": "gcp", "accessToken": "t", "expiresAt": "2030-01-02T03:04:05Z"})
        );
        let azure = Credentials::Azure { access_token: "t".into(), expires_at: at() };
        assert_eq!(serde_json::to_value(&azure).unwrap()["kind"], "azure");
        assert_eq!(serde_json::to_value(Credentials::Ambient).unwrap(), json!({"kind": "ambient"}));

        for credentials in [aws(), gcp, azure, Credentials::Ambient] {
            let json = serde_json::to_string(&credentials).unwrap();
            let back: Credentials = serde_json::from_str(&json).unwrap();
            assert_eq!(back, credentials, "{json}");
            assert_eq!(serde_json::to_value(&back).unwrap()["kind"], back.kind());
        }
    }

    #[test]
    fn expiry_and_cloud_of_each_kind() {
        assert_eq!(aws().expires_at(), Some(at()));
        assert_eq!(aws().cloud(), Some(Cloud::Aws));
        let azure = Credentials::Azure { access_token: "t".into(), expires_at: at() };
        assert_eq!((azure.expires_at(), azure.cloud()), (Some(at()), Some(Cloud::Azure)));
        assert_eq!(Credentials::Ambient.expires_at(), None);
        assert_eq!(Credentials::Ambient.cloud(), None);
    }
}
