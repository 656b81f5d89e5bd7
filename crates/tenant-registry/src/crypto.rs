//! Secrets at rest and tenant API keys.
//!
//! Upstream credentials are sealed with AES-256-GCM under the master key; the associated data
//! names the row a ciphertext belongs to, so a ciphertext copied onto another row does not
//! open. API keys are never stored: only the SHA-256 of the high-entropy secret is.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::RegistryError;

/// Every tenant API key starts with this, so scanners and humans can recognise one.
pub const API_KEY_PREFIX: &str = "bk_";
const SEALED_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// The key that seals upstream credentials. Debug never prints it.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
    /// Derived from the master key; makes the nonce of [`MasterKey::seal_stable`].
    nonce_key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Parses a base64-encoded 32-byte key.
    pub fn from_base64(encoded: &SecretString) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.expose_secret().trim())
            .map_err(|_| "the master key is not valid base64".to_owned())?;
        if bytes.len() != 32 {
            return Err("the master key must be 32 bytes (base64 of 32 random bytes)".into());
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| "the master key has the wrong length".to_owned())?;
        let mut derive = Sha256::new();
        derive.update(b"bulkhead synthetic nonce key\0");
        derive.update(&bytes);
        Ok(Self {
            cipher,
            nonce_key: derive.finalize().into(),
        })
    }

    /// A fresh random key, base64-encoded, for first start.
    pub fn generate_base64() -> SecretString {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SecretString::from(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Seals `secret` for the row named by `context` (e.g. `openai_resources:aoai-eastus`).
    pub fn seal(&self, context: &str, secret: &SecretString) -> Result<Vec<u8>, RegistryError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.seal_with(nonce, context, secret)
    }

    /// Seals deterministically: the same `secret` and `context` always give the same bytes
    /// (the nonce is a keyed hash of them, as in SIV). For identifiers that must be stable,
    /// such as response ids shown to tenants; it reveals only that two values are equal.
    pub fn seal_stable(
        &self,
        context: &str,
        secret: &SecretString,
    ) -> Result<Vec<u8>, RegistryError> {
        let mut hash = Sha256::new();
        hash.update(self.nonce_key);
        hash.update(context.as_bytes());
        hash.update([0u8]);
        hash.update(secret.expose_secret().as_bytes());
        let digest = hash.finalize();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&digest[..NONCE_LEN]);
        self.seal_with(nonce, context, secret)
    }

    fn seal_with(
        &self,
        nonce: [u8; NONCE_LEN],
        context: &str,
        secret: &SecretString,
    ) -> Result<Vec<u8>, RegistryError> {
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| RegistryError::Crypto)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`MasterKey::seal`] sealed for the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<SecretString, RegistryError> {
        let (version, rest) = sealed.split_first().ok_or(RegistryError::Crypto)?;
        if *version != SEALED_VERSION || rest.len() < NONCE_LEN {
            return Err(RegistryError::Crypto);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| RegistryError::Crypto)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| RegistryError::Crypto)
    }
}

/// SHA-256 of a presented API key: the only form in which keys are stored or looked up.
pub type KeyHash = [u8; 32];

pub fn hash_api_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// A new API key: `bk_` followed by 256 random bits, base64url.
pub fn generate_api_key() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(format!(
        "{API_KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// A random URL-safe token of 256 bits (admin tokens, JWT secrets on first start).
pub fn generate_token() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64(&MasterKey::generate_base64()).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_own_row() {
        let key = key();
        let sealed = key
            .seal("openai_resources:a", &SecretString::from("s3cret"))
            .unwrap();
        assert_eq!(
            key.open("openai_resources:a", &sealed)
                .unwrap()
                .expose_secret(),
            "s3cret"
        );
        assert!(key.open("openai_resources:b", &sealed).is_err());
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
    }

    #[test]
    fn stable_sealing_repeats_itself_and_still_opens_only_in_its_context() {
        let key = key();
        let secret = SecretString::from("resp_123");
        let a = key.seal_stable("ids", &secret).unwrap();
        assert_eq!(a, key.seal_stable("ids", &secret).unwrap());
        assert_ne!(
            a,
            key.seal_stable("ids", &SecretString::from("resp_124"))
                .unwrap()
        );
        assert_ne!(a, key.seal("ids", &secret).unwrap());
        assert_eq!(key.open("ids", &a).unwrap().expose_secret(), "resp_123");
        assert!(key.open("other", &a).is_err());
    }

    #[test]
    fn another_master_key_cannot_open_a_secret() {
        let sealed = key().seal("x", &SecretString::from("s3cret")).unwrap();
        assert!(key().open("x", &sealed).is_err());
        assert!(key().open("x", &[]).is_err());
    }

    #[test]
    fn master_keys_must_be_32_bytes_of_base64() {
        assert!(MasterKey::from_base64(&SecretString::from("c2hvcnQ=")).is_err());
        assert!(MasterKey::from_base64(&SecretString::from("not base64!")).is_err());
    }

    #[test]
    fn api_keys_are_prefixed_and_distinct() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert!(a.expose_secret().starts_with(API_KEY_PREFIX));
        assert_eq!(a.expose_secret().len(), 3 + 43);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(
            hash_api_key(a.expose_secret()),
            hash_api_key(b.expose_secret())
        );
    }
}
