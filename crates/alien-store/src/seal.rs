//! Sealing of sensitive column values at rest (`spec/config.md` "Encryption at rest").
//!
//! A [`Sealer`] turns a plaintext into `v1:` + base64(32-byte nonce || ciphertext || 32-byte tag)
//! with AEGIS-256 under a 256-bit [`EncryptionKey`], a fresh random nonce per value, and the
//! associated data `table/column/row-id` so that a sealed value cannot be moved to another row or
//! column. [`load_or_generate`] picks the configured key or the key file in the state directory,
//! generating that file (mode 0600) on first start. Keys never appear in `Debug` output or errors.
//! The column helpers ([`seal_column`], [`open_column`], the AADs, the `key_check` row) are what
//! every backend seals with, so a database moved between backends opens with the same key.
//! Behind the `seal` feature: crates that seal nothing link no aegis.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use aegis::aegis256::Aegis256;
use alien_core::{EnvironmentVariable, RawToken, TokenType, VariableType};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{StoreError, StoreResult};

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of the random nonce in front of every sealed value.
pub const NONCE_LEN: usize = 32;
/// Bytes of the authentication tag at the end of every sealed value.
pub const TAG_LEN: usize = 32;
/// Prefix of the current sealed format.
pub const SEALED_PREFIX: &str = "v1:";
/// Name of the generated key file in the state directory.
pub const KEY_FILE_NAME: &str = "encryption.key";

/// Why sealing, opening or loading a key failed. Never contains key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A key that is not 64 hex characters.
    #[error("invalid encryption key: {0}")]
    InvalidKey(String),
    /// The OS random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Random(String),
    /// The sealed value is not in the `v1:` format.
    #[error("sealed value for {aad} is malformed: {reason}")]
    Malformed {
        /// The associated data the value was opened with.
        aad: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Wrong key, wrong associated data, or tampered value.
    #[error(
        "sealed value for {aad} does not open with this key (wrong key, moved or tampered value)"
    )]
    Open {
        /// The associated data the value was opened with.
        aad: String,
    },
    /// Reading, creating or writing the key file failed.
    #[error("encryption key file {}: {message}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What went wrong and what to do.
        message: String,
    },
}

/// A 256-bit AEGIS-256 key. `Debug` shows no key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey([u8; KEY_LEN]);

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

impl EncryptionKey {
    /// A new random key from the OS random number generator.
    pub fn generate() -> Result<EncryptionKey, SealError> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| SealError::Random(e.to_string()))?;
        Ok(EncryptionKey(key))
    }

    /// A key from 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(hex_key: &str) -> Result<EncryptionKey, SealError> {
        let hex_key = hex_key.trim();
        if hex_key.len() != 2 * KEY_LEN {
            return Err(SealError::InvalidKey(format!(
                "expected {} hex characters, got {}",
                2 * KEY_LEN,
                hex_key.len()
            )));
        }
        let mut key = [0u8; KEY_LEN];
        hex::decode_to_slice(hex_key, &mut key).map_err(|_| {
            SealError::InvalidKey(format!(
                "expected {} hex characters (0-9, a-f), found another character",
                2 * KEY_LEN
            ))
        })?;
        Ok(EncryptionKey(key))
    }

    /// A key from raw bytes.
    pub fn from_bytes(key: [u8; KEY_LEN]) -> EncryptionKey {
        EncryptionKey(key)
    }

    /// The key as 64 lowercase hex characters: only for writing the key file or showing it once.
    pub fn expose_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Seals and opens column values with one key. `Debug` shows no key bytes.
#[derive(Clone)]
pub struct Sealer {
    key: EncryptionKey,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer { key: <redacted> }")
    }
}

impl Sealer {
    /// A 32-byte key for `purpose` derived from the encryption key (SHA-256 of a domain label
    /// and the key), e.g. for signing URLs: no second secret to store, and one rotation covers it.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"alien-manager derived key v1\0");
        hasher.update(purpose.as_bytes());
        hasher.update(b"\0");
        hasher.update(self.key.0);
        hasher.finalize().into()
    }

    /// A sealer over `key`.
    pub fn new(key: EncryptionKey) -> Sealer {
        Sealer { key }
    }

    /// Seals `plaintext` bound to `aad` (`table/column/row-id`): `v1:` + base64(nonce || ct || tag).
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let (ciphertext, tag) =
            Aegis256::<TAG_LEN>::new(&self.key.0, &nonce).encrypt(plaintext, aad.as_bytes());
        let mut raw = Vec::with_capacity(NONCE_LEN + ciphertext.len() + TAG_LEN);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ciphertext);
        raw.extend_from_slice(&tag);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(raw)))
    }

    /// Opens a value sealed with this key and `aad`; any mismatch or damage is an error.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let malformed = |reason| SealError::Malformed { aad: aad.to_owned(), reason };
        let encoded =
            sealed.strip_prefix(SEALED_PREFIX).ok_or_else(|| malformed("no v1: prefix"))?;
        let raw = STANDARD.decode(encoded).map_err(|_| malformed("not base64"))?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(malformed("too short"));
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| malformed("bad nonce"))?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| malformed("bad tag"))?;
        Aegis256::<TAG_LEN>::new(&self.key.0, &nonce)
            .decrypt(ciphertext, &tag, aad.as_bytes())
            .map_err(|_| SealError::Open { aad: aad.to_owned() })
    }

    /// Opens a value that was sealed from UTF-8 text.
    pub fn open_string(&self, aad: &str, sealed: &str) -> Result<String, SealError> {
        String::from_utf8(self.open(aad, sealed)?)
            .map_err(|_| SealError::Malformed { aad: aad.to_owned(), reason: "not UTF-8" })
    }
}

/// Where the key in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `encryption-key` was configured.
    Configured,
    /// Read from the existing key file next to the data.
    KeyFile(PathBuf),
    /// Generated now and written to this key file next to the data: warn the operator.
    Generated(PathBuf),
}

impl KeySource {
    /// Whether the key lives in the state directory next to the data it protects.
    pub fn is_next_to_data(&self) -> bool {
        !matches!(self, KeySource::Configured)
    }
}

/// The configured key, else `{state_dir}/encryption.key`, generated (mode 0600) when missing.
pub fn load_or_generate(
    state_dir: &Path,
    configured: Option<&str>,
) -> Result<(Sealer, KeySource), SealError> {
    if let Some(hex_key) = configured {
        return Ok((Sealer::new(EncryptionKey::from_hex(hex_key)?), KeySource::Configured));
    }
    let path = state_dir.join(KEY_FILE_NAME);
    match read_key_file(&path)? {
        Some(key) => Ok((Sealer::new(key), KeySource::KeyFile(path))),
        None => {
            let key = EncryptionKey::generate()?;
            match write_new_key_file(state_dir, &path, &key) {
                Ok(()) => Ok((Sealer::new(key), KeySource::Generated(path))),
                // Another process generated it meanwhile: use theirs.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    match read_key_file(&path)? {
                        Some(key) => Ok((Sealer::new(key), KeySource::KeyFile(path))),
                        None => Err(key_file_error(&path, "disappeared while being created")),
                    }
                }
                Err(err) => Err(key_file_error(&path, format!("cannot create it: {err}"))),
            }
        }
    }
}

/// The configured key, else the key in `{state_dir}/encryption.key`; `None` when there is neither
/// (nothing is generated: `restore` needs the key the data was sealed with).
pub fn load_existing(
    state_dir: &Path,
    configured: Option<&str>,
) -> Result<Option<(Sealer, KeySource)>, SealError> {
    if let Some(hex_key) = configured {
        return Ok(Some((Sealer::new(EncryptionKey::from_hex(hex_key)?), KeySource::Configured)));
    }
    let path = state_dir.join(KEY_FILE_NAME);
    Ok(read_key_file(&path)?.map(|key| (Sealer::new(key), KeySource::KeyFile(path))))
}

fn key_file_error(path: &Path, message: impl Into<String>) -> SealError {
    SealError::KeyFile { path: path.to_owned(), message: message.into() }
}

/// The key in `path`, `None` when the file does not exist.
fn read_key_file(path: &Path) -> Result<Option<EncryptionKey>, SealError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(key_file_error(path, format!("cannot read it: {err}"))),
    };
    if text.trim().is_empty() {
        return Err(key_file_error(
            path,
            "it is empty (an interrupted first start?); restore it from a backup, or delete it \
             if the database holds no sealed data yet",
        ));
    }
    EncryptionKey::from_hex(&text).map(Some).map_err(|err| {
        key_file_error(path, format!("{err}; restore the file or configure encryption-key"))
    })
}

/// Creates `path` exclusively with mode 0600 and the key in hex, then syncs file and directory.
fn write_new_key_file(state_dir: &Path, path: &Path, key: &EncryptionKey) -> io::Result<()> {
    crate::private_fs::create_dir(state_dir)?;
    let mut file = crate::private_fs::new_file_options().open(path)?;
    file.write_all(format!("{}\n", key.expose_hex()).as_bytes())?;
    file.sync_all()?;
    // Make the new directory entry durable too.
    #[cfg(unix)]
    std::fs::File::open(state_dir)?.sync_all()?;
    Ok(())
}

// ---- sealed columns, shared by the backends ----

/// Plaintext of the `key_check` row: opening it proves the key opens the data.
pub const KEY_CHECK_PLAINTEXT: &[u8] = b"alien-manager key check v1";
/// Associated data of the `key_check` row.
pub const KEY_CHECK_AAD: &str = "meta/value/key_check";

/// The associated data of a deployment's sealed token (`deployments.token`).
pub fn token_aad(deployment_id: &str) -> String {
    format!("deployments/token/{deployment_id}")
}

/// The associated data of a secret variable's sealed value (`deployment_variables.value`).
pub fn variable_aad(deployment_id: &str, name: &str) -> String {
    format!("deployment_variables/value/{deployment_id}/{name}")
}

/// Seals a column value bound to `aad`, as a store error.
pub fn seal_column(sealer: &Sealer, aad: &str, plaintext: &[u8]) -> StoreResult<String> {
    sealer.seal(aad, plaintext).map_err(|e| StoreError::Database(format!("sealing {aad}: {e}")))
}

/// Opens a sealed column value bound to `aad`; a value that does not open is
/// [`StoreError::Corrupt`].
pub fn open_column(sealer: &Sealer, aad: &str, sealed: &str) -> StoreResult<String> {
    sealer.open_string(aad, sealed).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Opens a value sealed with `old` and seals it again with `new` (key rotation).
pub fn reseal_column(old: &Sealer, new: &Sealer, aad: &str, sealed: &str) -> StoreResult<String> {
    let plain = old.open(aad, sealed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    seal_column(new, aad, &plain)
}

/// The `type` and `value` columns of a deployment's variable, a secret's value sealed.
pub fn seal_variable(
    sealer: &Sealer,
    dep: &str,
    var: &EnvironmentVariable,
) -> StoreResult<(&'static str, String)> {
    Ok(match var.var_type {
        VariableType::Plain => ("plain", var.value.clone()),
        VariableType::Secret => {
            ("secret", seal_column(sealer, &variable_aad(dep, &var.name), var.value.as_bytes())?)
        }
    })
}

/// A deployment's variables from their rows (`name`, `type`, sealed or plain `value`), secret
/// values unsealed.
pub fn open_variables(
    sealer: &Sealer,
    dep: &str,
    rows: Vec<(String, String, String)>,
) -> StoreResult<Vec<EnvironmentVariable>> {
    rows.into_iter()
        .map(|(name, kind, value)| {
            let (var_type, value) = match kind.as_str() {
                "plain" => (VariableType::Plain, value),
                "secret" => {
                    let plain = open_column(sealer, &variable_aad(dep, &name), &value)?;
                    (VariableType::Secret, plain)
                }
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "deployment_variables.type: unknown {other:?}"
                    )));
                }
            };
            Ok(EnvironmentVariable { name, value, var_type })
        })
        .collect()
}

/// A deployment's token sealed for `deployments.token`.
pub fn seal_token(sealer: &Sealer, dep: &str, token: &RawToken) -> StoreResult<String> {
    seal_column(sealer, &token_aad(dep), token.expose().as_bytes())
}

/// A deployment's sealed token (`deployments.token`), unsealed.
pub fn open_token(
    sealer: &Sealer,
    dep: &str,
    sealed: Option<String>,
) -> StoreResult<Option<RawToken>> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let raw = open_column(sealer, &token_aad(dep), &sealed)?;
    RawToken::parse(TokenType::Deployment, &raw)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("deployments.token of {dep}: {e}")))
}

/// A new sealed `key_check` value for `sealer`'s key.
pub fn seal_key_check(sealer: &Sealer) -> StoreResult<String> {
    seal_column(sealer, KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)
}

/// [`StoreError::WrongKey`] unless `sealer` opens the stored `key_check` value `sealed`.
pub fn verify_key_check(sealer: &Sealer, sealed: &str) -> StoreResult<()> {
    match sealer.open(KEY_CHECK_AAD, sealed) {
        Ok(plain) if plain == KEY_CHECK_PLAINTEXT => Ok(()),
        _ => Err(StoreError::WrongKey(
            "the database was sealed with another key; start with the key it was created with \
             (encryption-key or {state-dir}/encryption.key), or rotate keys with rotate-key"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(EncryptionKey::generate().unwrap())
    }

    #[test]
    fn round_trip_with_a_fresh_nonce_each_time() {
        let s = sealer();
        let a = s.seal("deployments/token/dep_1", b"ax_deploy_secret").unwrap();
        let b = s.seal("deployments/token/dep_1", b"ax_deploy_secret").unwrap();
        assert!(a.starts_with("v1:"));
        assert_ne!(a, b);
        assert!(!a.contains("secret"));
        assert_eq!(s.open("deployments/token/dep_1", &a).unwrap(), b"ax_deploy_secret");
        assert_eq!(s.open_string("deployments/token/dep_1", &b).unwrap(), "ax_deploy_secret");
        let empty = s.seal("x", b"").unwrap();
        assert_eq!(s.open("x", &empty).unwrap(), b"");
        let raw = STANDARD.decode(&a[3..]).unwrap();
        assert_eq!(raw.len(), NONCE_LEN + b"ax_deploy_secret".len() + TAG_LEN);
    }

    #[test]
    fn the_value_is_bound_to_its_row_and_column() {
        let s = sealer();
        let sealed = s.seal("deployment_variables/value/dep_1/A", b"v").unwrap();
        for other in
            ["deployment_variables/value/dep_1/B", "deployment_variables/value/dep_2/A", ""]
        {
            assert!(matches!(s.open(other, &sealed), Err(SealError::Open { .. })), "{other}");
        }
    }

    #[test]
    fn tampering_and_garbage_are_errors_not_panics() {
        let s = sealer();
        let sealed = s.seal("t/c/r", b"hello").unwrap();
        let mut raw = STANDARD.decode(&sealed[3..]).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            let tampered = format!("v1:{}", STANDARD.encode(&raw));
            assert!(matches!(s.open("t/c/r", &tampered), Err(SealError::Open { .. })));
            raw[i] ^= 1;
        }
        let truncated = format!("v1:{}", STANDARD.encode(&raw[..raw.len() - 1]));
        assert!(s.open("t/c/r", &truncated).is_err());
        for garbage in ["", "v1:", "v1:!!!", "v2:AAAA", "hello", "v1:AAAA", &sealed[3..]] {
            assert!(
                matches!(s.open("t/c/r", garbage), Err(SealError::Malformed { .. })),
                "{garbage}"
            );
        }
    }

    #[test]
    fn another_key_does_not_open() {
        let sealed = sealer().seal("t/c/r", b"hello").unwrap();
        assert!(matches!(sealer().open("t/c/r", &sealed), Err(SealError::Open { .. })));
    }

    #[test]
    fn hex_keys_are_64_hex_chars_and_never_shown() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let key = EncryptionKey::from_hex(hex_key).unwrap();
        assert_eq!(key.expose_hex(), hex_key);
        assert_eq!(EncryptionKey::from_hex(&format!(" {hex_key}\n")).unwrap(), key);
        assert_eq!(EncryptionKey::from_hex(&hex_key.to_uppercase()).unwrap(), key);
        for bad in
            ["", "zz", &hex_key[1..], &format!("{}zz", &hex_key[2..]), &format!("{hex_key}00")]
        {
            let err = EncryptionKey::from_hex(bad).unwrap_err();
            assert!(err.to_string().contains("64 hex characters"), "{err}");
        }
        let sealer = Sealer::new(key.clone());
        for shown in [format!("{key:?}"), format!("{sealer:?}")] {
            assert!(!shown.contains("0011") && !shown.contains("aabb"), "{shown}");
        }
    }

    #[test]
    fn configured_key_wins_and_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let hex_key = EncryptionKey::generate().unwrap().expose_hex();
        let (_, source) = load_or_generate(dir.path(), Some(&hex_key)).unwrap();
        assert_eq!(source, KeySource::Configured);
        assert!(!dir.path().join(KEY_FILE_NAME).exists());
        assert!(matches!(load_or_generate(dir.path(), Some("zz")), Err(SealError::InvalidKey(_))));
    }

    #[test]
    fn generated_key_file_is_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (first, source) = load_or_generate(&state, None).unwrap();
        let path = state.join(KEY_FILE_NAME);
        assert_eq!(source, KeySource::Generated(path.clone()));
        assert!(source.is_next_to_data());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = std::fs::metadata(&state).unwrap().permissions().mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
        let content = std::fs::read_to_string(&path).unwrap();
        assert_eq!(content.trim().len(), 64);

        let sealed = first.seal("t/c/r", b"kept").unwrap();
        let (second, source) = load_or_generate(&state, None).unwrap();
        assert_eq!(source, KeySource::KeyFile(path.clone()));
        assert_eq!(second.open("t/c/r", &sealed).unwrap(), b"kept");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
    }

    #[test]
    fn a_damaged_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        std::fs::write(&path, "").unwrap();
        let err = load_or_generate(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        std::fs::write(&path, "not a key").unwrap();
        let err = load_or_generate(dir.path(), None).unwrap_err();
        assert!(matches!(err, SealError::KeyFile { .. }), "{err}");
        assert!(err.to_string().contains("encryption.key"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }
}
