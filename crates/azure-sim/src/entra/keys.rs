//! The emulator's token-signing key: RSA-2048, made once per process (lazily, or at start by
//! the binary), published as a JWKS and used for RS256 on every token it issues — access
//! tokens and the federated (AKS OIDC issuer) tokens alike.

use std::sync::OnceLock;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

/// A signing key with what verifiers need.
pub struct SigningKey {
    /// Key id (`kid` in token headers and the JWKS): base64url of a SHA-256 prefix of the
    /// modulus, 27 characters like Entra's.
    pub kid: String,
    /// Modulus, base64url (JWK `n`).
    pub n: String,
    /// Public exponent, base64url (JWK `e`).
    pub e: String,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
}

/// Why the key could not be made (never expected; reported rather than panicking).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key generation failed: {0}")]
    Generate(#[from] rsa::Error),
    #[error("RSA key encoding failed: {0}")]
    Encode(#[from] rsa::pkcs1::Error),
    #[error("RSA key import failed: {0}")]
    Import(#[from] jsonwebtoken::errors::Error),
}

impl SigningKey {
    /// Generates a fresh RSA-2048 key.
    pub fn generate() -> Result<Self, KeyError> {
        let started = Instant::now();
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
        let der = private.to_pkcs1_der()?;
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        let n_bytes = private.n().to_bytes_be();
        let e_bytes = private.e().to_bytes_be();
        let decoding = DecodingKey::from_rsa_raw_components(&n_bytes, &e_bytes);
        let digest = Sha256::digest(&n_bytes);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "generated the token signing key"
        );
        Ok(Self {
            kid: URL_SAFE_NO_PAD.encode(&digest[..20]),
            n: URL_SAFE_NO_PAD.encode(&n_bytes),
            e: URL_SAFE_NO_PAD.encode(&e_bytes),
            encoding,
            decoding,
        })
    }

    /// The process-wide key, generated on first use. One key per process keeps in-process
    /// test suites that start many emulators from paying for a key each.
    pub fn shared() -> Result<&'static SigningKey, &'static KeyError> {
        static KEY: OnceLock<Result<SigningKey, KeyError>> = OnceLock::new();
        KEY.get_or_init(SigningKey::generate).as_ref()
    }

    /// The JWKS document (`/discovery/v2.0/keys`).
    pub fn jwks(&self, issuer: Option<&str>) -> serde_json::Value {
        let mut key = serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
            "alg": "RS256",
        });
        if let (Some(issuer), Some(obj)) = (issuer, key.as_object_mut()) {
            obj.insert("issuer".into(), issuer.into());
        }
        serde_json::json!({ "keys": [key] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_has_a_27_character_kid_and_the_usual_exponent() {
        let key = SigningKey::shared().map_err(|e| e.to_string()).unwrap();
        assert_eq!(key.kid.len(), 27);
        assert_eq!(key.e, "AQAB");
        let jwks = key.jwks(None);
        assert_eq!(jwks["keys"][0]["kty"], "RSA");
        assert_eq!(jwks["keys"][0]["alg"], "RS256");
    }
}
