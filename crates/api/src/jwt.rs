//! Tenant JSON Web Tokens: the gateway's own (HS256, issued by the admin API) and an external
//! identity provider's (RS256/ES256, keys from its JWKS).
//!
//! The algorithm a token claims chooses the key family, and each family accepts exactly its
//! algorithms: an HS256 token is never checked against a JWKS public key (algorithm
//! confusion), and `none` or any other algorithm is refused before any key is looked at.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};
use tenant_registry::model::KeyScope;
use uuid::Uuid;

/// The `aud` of gateway-issued tokens.
pub const GATEWAY_AUDIENCE: &str = "bulkhead";
/// The longest lifetime a gateway-issued token may have.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;
/// How often the JWKS is fetched again when a token names a key id it does not know.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);

/// Why a token was refused (never shown in detail to the caller, logged at debug).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("no key to verify this token")]
    NoKey,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the token names no tenant")]
    NoTenant,
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    /// The tenant, by id or slug, as the token named it.
    pub tenant: String,
    pub scope: KeyScope,
    pub token_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExternalIdp {
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
}

pub struct JwtAuthority {
    gateway: Option<(EncodingKey, DecodingKey)>,
    issuer: String,
    tenant_claim: String,
    external: Option<External>,
}

struct External {
    idp: ExternalIdp,
    http: reqwest::Client,
    keys: ArcSwap<HashMap<String, (DecodingKey, Algorithm)>>,
    last_fetch: Mutex<Option<Instant>>,
}

impl JwtAuthority {
    pub fn new(
        secret: Option<&SecretString>,
        issuer: String,
        tenant_claim: String,
        external: Option<ExternalIdp>,
    ) -> Self {
        let gateway = secret.map(|s| {
            let bytes = s.expose_secret().as_bytes();
            (
                EncodingKey::from_secret(bytes),
                DecodingKey::from_secret(bytes),
            )
        });
        let external = external.map(|idp| External {
            idp,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            keys: ArcSwap::from_pointee(HashMap::new()),
            last_fetch: Mutex::new(None),
        });
        Self {
            gateway,
            issuer,
            tenant_claim,
            external,
        }
    }

    pub fn can_issue(&self) -> bool {
        self.gateway.is_some()
    }

    /// Signs a token for `tenant_id`. `None` when issuance is not configured.
    pub fn issue(
        &self,
        tenant_id: Uuid,
        slug: &str,
        scope: KeyScope,
        ttl: Duration,
    ) -> Option<Result<(SecretString, DateTime<Utc>), TokenError>> {
        let (encoding, _) = self.gateway.as_ref()?;
        let now = Utc::now();
        let expires_at = now + chrono::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(0));
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(GATEWAY_AUDIENCE));
        claims.insert("sub".into(), json!(slug));
        claims.insert(self.tenant_claim.clone(), json!(tenant_id.to_string()));
        claims.insert("scope".into(), json!(scope.as_str()));
        claims.insert("iat".into(), json!(now.timestamp()));
        claims.insert("exp".into(), json!(expires_at.timestamp()));
        claims.insert("jti".into(), json!(Uuid::new_v4().to_string()));
        Some(
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)
                .map(|token| (SecretString::from(token), expires_at))
                .map_err(TokenError::from),
        )
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let (_, key) = self.gateway.as_ref().ok_or(TokenError::NoKey)?;
                let mut validation = Validation::new(Algorithm::HS256);
                validation.set_issuer(&[&self.issuer]);
                validation.set_audience(&[GATEWAY_AUDIENCE]);
                decode(token, key, &validation)?
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let external = self.external.as_ref().ok_or(TokenError::NoKey)?;
                let kid = header.kid.ok_or(TokenError::NoKey)?;
                let (key, alg) = external.key(&kid).await.ok_or(TokenError::NoKey)?;
                if alg != header.alg {
                    return Err(TokenError::Algorithm);
                }
                let mut validation = Validation::new(alg);
                validation.set_issuer(&[&external.idp.issuer]);
                validation.set_audience(&[&external.idp.audience]);
                decode(token, &key, &validation)?
            }
            _ => return Err(TokenError::Algorithm),
        };
        let tenant = claims
            .get(&self.tenant_claim)
            .and_then(Value::as_str)
            .ok_or(TokenError::NoTenant)?
            .to_owned();
        let scope = match claims.get("scope").and_then(Value::as_str) {
            Some(scope) if scope.split(' ').any(|s| s == KeyScope::ReadWrite.as_str()) => {
                KeyScope::ReadWrite
            }
            _ => KeyScope::Read,
        };
        Ok(TokenClaims {
            tenant,
            scope,
            token_id: claims
                .get("jti")
                .and_then(Value::as_str)
                .map(ToOwned::to_owned),
        })
    }

    /// Fetches the external JWKS now (at start-up, and periodically).
    pub async fn refresh_jwks(&self) -> anyhow::Result<usize> {
        match &self.external {
            Some(external) => external.fetch().await,
            None => Ok(0),
        }
    }
}

fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, TokenError> {
    let mut validation = validation.clone();
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    // `nbf` is optional, but when present it is enforced with the same leeway as `exp`
    // (jsonwebtoken ignores it unless told).
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECONDS;
    Ok(jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)?.claims)
}

impl External {
    async fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        if let Some(found) = self.keys.load().get(kid) {
            return Some(found.clone());
        }
        // An unknown key id may be a rotated key: fetch again, but not more than once per
        // JWKS_MIN_REFRESH, so garbage key ids cannot make us hammer the provider.
        let due = {
            let mut last = self.last_fetch.lock();
            let due = last.is_none_or(|at| at.elapsed() >= JWKS_MIN_REFRESH);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            if let Err(error) = self.fetch().await {
                tracing::warn!(%error, "JWKS fetch failed");
            }
        }
        self.keys.load().get(kid).cloned()
    }

    async fn fetch(&self) -> anyhow::Result<usize> {
        let set: JwkSet = self
            .http
            .get(&self.idp.jwks_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)
                    if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (key, alg));
            }
        }
        let count = keys.len();
        self.keys.store(Arc::new(keys));
        *self.last_fetch.lock() = Some(Instant::now());
        Ok(count)
    }
}
