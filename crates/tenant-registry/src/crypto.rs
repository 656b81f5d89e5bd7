//! Secrets at rest and tenant API keys.
//!
//! Upstream credentials (and the response ids shown to tenants) are sealed with
//! AES-256-GCM-SIV (RFC 8452), a misuse-resistant AEAD, under the master key; the associated
//! data names the row a ciphertext belongs to, so a ciphertext copied onto another row does
//! not open. Every sealed value names the key that sealed it, so the master key can rotate:
//! a new key becomes primary for sealing while earlier ones still open what they sealed, until
//! [`crate::Registry::reseal_credentials`] has moved every stored credential to the new one.
//! API keys are never stored: only the SHA-256 of the high-entropy secret is.
//!
//! Sealed formats (the first byte says which):
//! - 1 (before key ids, open only): AES-256-GCM, `1 | nonce(12) | ciphertext+tag`;
//! - 2 (random nonce): `2 | key id(4) | nonce(12) | ciphertext+tag`;
//! - 3 (deterministic, [`MasterKey::seal_stable`]): `3 | key id(4) | ciphertext+tag`, under
//!   the all-zero nonce. GCM-SIV's nonce misuse resistance makes that a deterministic AEAD
//!   that reveals only whether two values are equal.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aes_gcm_siv::Aes256GcmSiv;
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::RegistryError;

/// Every tenant API key starts with this, so scanners and humans can recognise one.
pub const API_KEY_PREFIX: &str = "bk_";
const LEGACY_GCM: u8 = 1;
const SIV_RANDOM: u8 = 2;
const SIV_STABLE: u8 = 3;
const NONCE_LEN: usize = 12;
const KEY_ID_LEN: usize = 4;

/// A key's id: the first bytes of a hash of it (never the key itself).
pub type KeyId = [u8; KEY_ID_LEN];

/// One 32-byte master key with the ciphers of every format it opens.
#[derive(Clone)]
struct SealingKey {
    id: KeyId,
    siv: Aes256GcmSiv,
    /// Only to open format 1.
    legacy: Aes256Gcm,
}

impl SealingKey {
    fn from_base64(encoded: &SecretString) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.expose_secret().trim())
            .map_err(|_| "the master key is not valid base64".to_owned())?;
        if bytes.len() != 32 {
            return Err("the master key must be 32 bytes (base64 of 32 random bytes)".into());
        }
        let siv = Aes256GcmSiv::new_from_slice(&bytes)
            .map_err(|_| "the master key has the wrong length".to_owned())?;
        let legacy = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| "the master key has the wrong length".to_owned())?;
        let mut hash = Sha256::new();
        hash.update(b"bulkhead master key id\0");
        hash.update(&bytes);
        let digest = hash.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Ok(Self { id, siv, legacy })
    }
}

/// The master keys: the primary seals, every one opens what it sealed. Debug never prints a
/// key (nor its id).
#[derive(Clone)]
pub struct MasterKey {
    primary: SealingKey,
    previous: Vec<SealingKey>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(primary, {} previous)", self.previous.len())
    }
}

impl MasterKey {
    /// Parses a base64-encoded 32-byte key: a keyring of one.
    pub fn from_base64(encoded: &SecretString) -> Result<Self, String> {
        Self::with_previous(encoded, &[])
    }

    /// The primary key and the earlier keys that must still open what they sealed.
    pub fn with_previous(
        primary: &SecretString,
        previous: &[SecretString],
    ) -> Result<Self, String> {
        let primary = SealingKey::from_base64(primary)?;
        let previous = previous
            .iter()
            .enumerate()
            .map(|(i, key)| {
                SealingKey::from_base64(key)
                    .map_err(|e| format!("previous master key {}: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { primary, previous })
    }

    /// A fresh random key, base64-encoded, for first start.
    pub fn generate_base64() -> SecretString {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SecretString::from(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// The primary key's id, as sealed values carry it.
    pub fn primary_id(&self) -> KeyId {
        self.primary.id
    }

    /// Seals `secret` for the row named by `context` (e.g. `openai_resources:aoai-eastus`)
    /// under the primary key, with a random nonce.
    pub fn seal(&self, context: &str, secret: &SecretString) -> Result<Vec<u8>, RegistryError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .primary
            .siv
            .encrypt(
                aes_gcm_siv::Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| RegistryError::Crypto)?;
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + sealed.len());
        out.push(SIV_RANDOM);
        out.extend_from_slice(&self.primary.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Seals deterministically under the primary key: the same `secret` and `context` always
    /// give the same bytes. For identifiers that must be stable, such as response ids shown
    /// to tenants; it reveals only that two values are equal.
    pub fn seal_stable(
        &self,
        context: &str,
        secret: &SecretString,
    ) -> Result<Vec<u8>, RegistryError> {
        let sealed = self
            .primary
            .siv
            .encrypt(
                aes_gcm_siv::Nonce::from_slice(&[0u8; NONCE_LEN]),
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| RegistryError::Crypto)?;
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + sealed.len());
        out.push(SIV_STABLE);
        out.extend_from_slice(&self.primary.id);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what any of these keys sealed for the same `context`, in any format.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<SecretString, RegistryError> {
        self.open_with_id(context, sealed).map(|(secret, _)| secret)
    }

    /// Whether `sealed` should be sealed again: it opens, but not in the current format under
    /// the primary key.
    pub fn needs_reseal(&self, sealed: &[u8]) -> bool {
        match sealed.split_first() {
            Some((&SIV_RANDOM, rest)) => rest.get(..KEY_ID_LEN) != Some(&self.primary.id[..]),
            _ => true,
        }
    }

    fn keys(&self) -> impl Iterator<Item = &SealingKey> {
        std::iter::once(&self.primary).chain(&self.previous)
    }

    fn open_with_id(
        &self,
        context: &str,
        sealed: &[u8],
    ) -> Result<(SecretString, KeyId), RegistryError> {
        let (format, rest) = sealed.split_first().ok_or(RegistryError::Crypto)?;
        let plain = match *format {
            LEGACY_GCM => {
                let (nonce, ciphertext) = split(rest, NONCE_LEN)?;
                // No key id in this format: whichever key opens it sealed it.
                self.keys().find_map(|key| {
                    key.legacy
                        .decrypt(
                            Nonce::from_slice(nonce),
                            Payload {
                                msg: ciphertext,
                                aad: context.as_bytes(),
                            },
                        )
                        .ok()
                        .map(|plain| (plain, key.id))
                })
            }
            SIV_RANDOM | SIV_STABLE => {
                let (id, rest) = split(rest, KEY_ID_LEN)?;
                let (nonce, ciphertext) = if *format == SIV_RANDOM {
                    split(rest, NONCE_LEN)?
                } else {
                    (&[0u8; NONCE_LEN][..], rest)
                };
                self.keys().filter(|key| key.id[..] == *id).find_map(|key| {
                    key.siv
                        .decrypt(
                            aes_gcm_siv::Nonce::from_slice(nonce),
                            Payload {
                                msg: ciphertext,
                                aad: context.as_bytes(),
                            },
                        )
                        .ok()
                        .map(|plain| (plain, key.id))
                })
            }
            _ => None,
        };
        let (plain, id) = plain.ok_or(RegistryError::Crypto)?;
        String::from_utf8(plain)
            .map(|text| (SecretString::from(text), id))
            .map_err(|_| RegistryError::Crypto)
    }
}

fn split(bytes: &[u8], at: usize) -> Result<(&[u8], &[u8]), RegistryError> {
    if bytes.len() < at {
        return Err(RegistryError::Crypto);
    }
    Ok(bytes.split_at(at))
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

    /// What the code before key ids wrote (format 1: AES-256-GCM, random or derived nonce),
    /// rebuilt here to prove that such values still open.
    fn legacy_seal(
        encoded: &SecretString,
        nonce: [u8; 12],
        context: &str,
        secret: &str,
    ) -> Vec<u8> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.expose_secret())
            .unwrap();
        let cipher = Aes256Gcm::new_from_slice(&bytes).unwrap();
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .unwrap();
        [&[1u8][..], &nonce, &sealed].concat()
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_own_row() {
        let key = key();
        let sealed = key
            .seal("openai_resources:a", &SecretString::from("s3cret"))
            .unwrap();
        assert_eq!(sealed[0], 2);
        assert_eq!(&sealed[1..5], &key.primary_id());
        assert_eq!(
            key.open("openai_resources:a", &sealed)
                .unwrap()
                .expose_secret(),
            "s3cret"
        );
        assert!(key.open("openai_resources:b", &sealed).is_err());
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_ne!(
            sealed,
            key.seal("openai_resources:a", &SecretString::from("s3cret"))
                .unwrap()
        );
    }

    #[test]
    fn stable_sealing_repeats_itself_and_still_opens_only_in_its_context() {
        let key = key();
        let secret = SecretString::from("resp_123");
        let a = key.seal_stable("ids", &secret).unwrap();
        assert_eq!(a[0], 3);
        assert_eq!(a, key.seal_stable("ids", &secret).unwrap());
        assert_ne!(
            a,
            key.seal_stable("ids", &SecretString::from("resp_124"))
                .unwrap()
        );
        assert_ne!(a, key.seal_stable("other", &secret).unwrap());
        assert_ne!(a, key.seal("ids", &secret).unwrap());
        assert_eq!(key.open("ids", &a).unwrap().expose_secret(), "resp_123");
        assert!(key.open("other", &a).is_err());
    }

    #[test]
    fn tampering_with_any_byte_fails_to_open() {
        let key = key();
        for sealed in [
            key.seal("ctx", &SecretString::from("value")).unwrap(),
            key.seal_stable("ctx", &SecretString::from("value"))
                .unwrap(),
        ] {
            for i in 0..sealed.len() {
                let mut bad = sealed.clone();
                bad[i] ^= 0x01;
                assert!(key.open("ctx", &bad).is_err(), "byte {i}");
            }
            assert!(key.open("ctx", &sealed[..sealed.len() - 1]).is_err());
        }
    }

    #[test]
    fn another_master_key_cannot_open_a_secret() {
        let sealed = key().seal("x", &SecretString::from("s3cret")).unwrap();
        assert!(key().open("x", &sealed).is_err());
        assert!(key().open("x", &[]).is_err());
        assert!(key().open("x", &[2, 0, 0]).is_err());
        assert!(key().open("x", &[9; 40]).is_err());
    }

    #[test]
    fn a_rotated_keyring_seals_with_the_new_key_and_opens_with_both() {
        let old_b64 = MasterKey::generate_base64();
        let new_b64 = MasterKey::generate_base64();
        let old = MasterKey::from_base64(&old_b64).unwrap();
        let sealed_old = old.seal("ctx", &SecretString::from("one")).unwrap();
        let stable_old = old
            .seal_stable("ids", &SecretString::from("resp_1"))
            .unwrap();
        let legacy = legacy_seal(&old_b64, [7; 12], "ctx", "legacy");

        let rotated = MasterKey::with_previous(&new_b64, std::slice::from_ref(&old_b64)).unwrap();
        assert_ne!(rotated.primary_id(), old.primary_id());
        for (sealed, context, plain) in [
            (&sealed_old, "ctx", "one"),
            (&stable_old, "ids", "resp_1"),
            (&legacy, "ctx", "legacy"),
        ] {
            assert_eq!(
                rotated.open(context, sealed).unwrap().expose_secret(),
                plain
            );
            assert!(rotated.needs_reseal(sealed));
        }
        let sealed_new = rotated.seal("ctx", &SecretString::from("two")).unwrap();
        assert_eq!(&sealed_new[1..5], &rotated.primary_id());
        assert!(!rotated.needs_reseal(&sealed_new));
        // The old key alone cannot open what the new one sealed...
        assert!(old.open("ctx", &sealed_new).is_err());
        // ...and once the old key is dropped, what it sealed no longer opens.
        let new_only = MasterKey::from_base64(&new_b64).unwrap();
        assert!(new_only.open("ctx", &sealed_old).is_err());
        assert!(new_only.open("ctx", &legacy).is_err());
        assert_eq!(
            new_only.open("ctx", &sealed_new).unwrap().expose_secret(),
            "two"
        );
    }

    #[test]
    fn values_sealed_by_the_first_format_still_open() {
        let encoded = MasterKey::generate_base64();
        let key = MasterKey::from_base64(&encoded).unwrap();
        let legacy = legacy_seal(&encoded, [3; 12], "openai_resources:a", "s3cret");
        assert_eq!(
            key.open("openai_resources:a", &legacy)
                .unwrap()
                .expose_secret(),
            "s3cret"
        );
        assert!(key.open("openai_resources:b", &legacy).is_err());
        assert!(key.needs_reseal(&legacy));
    }

    #[test]
    fn master_keys_must_be_32_bytes_of_base64() {
        assert!(MasterKey::from_base64(&SecretString::from("c2hvcnQ=")).is_err());
        assert!(MasterKey::from_base64(&SecretString::from("not base64!")).is_err());
        let good = MasterKey::generate_base64();
        let error = MasterKey::with_previous(&good, &[good.clone(), SecretString::from("bad")])
            .unwrap_err();
        assert!(error.starts_with("previous master key 2"), "{error}");
        assert!(
            !format!("{:?}", MasterKey::from_base64(&good).unwrap()).contains(good.expose_secret())
        );
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
