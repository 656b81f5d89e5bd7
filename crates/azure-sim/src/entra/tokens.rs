//! Access tokens and federated assertions: their claims, minting them, and checking them the
//! way a resource (or Entra, for an assertion) does. Time is always passed in (the emulator's
//! clock, which `POST /_sim/clock/advance` moves), so expiry is testable without sleeping.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::SigningKey;

/// Audience of Azure OpenAI (Cognitive Services) data-plane tokens.
pub const COGNITIVE_SERVICES_AUDIENCE: &str = "https://cognitiveservices.azure.com";
/// Audience of Azure AI Search data-plane tokens.
pub const SEARCH_AUDIENCE: &str = "https://search.azure.com";

/// The claims of an access token, as Entra's v1.0 app-only tokens carry them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Client id of the caller.
    pub appid: String,
    /// How the client authenticated: "1" secret, "2" certificate or assertion.
    pub appidacr: String,
    pub idp: String,
    /// Object id of the principal: what role assignments are checked against.
    pub oid: String,
    pub sub: String,
    pub tid: String,
    /// Unique token id.
    pub uti: String,
    pub ver: String,
}

/// Who a token is for.
#[derive(Debug, Clone, Copy)]
pub struct TokenSubject<'a> {
    pub tenant_id: &'a str,
    pub client_id: &'a str,
    pub object_id: &'a str,
    /// "1" for a client secret, "2" for an assertion or a managed identity.
    pub appidacr: &'a str,
}

/// `https://sts.windows.net/{tid}/`, the issuer of v1.0 access tokens.
pub fn v1_issuer(tenant_id: &str) -> String {
    format!("https://sts.windows.net/{tenant_id}/")
}

/// Signs an access token for `resource`, valid from `now` for `lifetime` seconds.
pub fn mint_access_token(
    key: &SigningKey,
    subject: TokenSubject<'_>,
    resource: &str,
    now: i64,
    lifetime: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let issuer = v1_issuer(subject.tenant_id);
    let claims = AccessClaims {
        aud: resource.to_owned(),
        iss: issuer.clone(),
        iat: now,
        nbf: now,
        exp: now.saturating_add(lifetime),
        appid: subject.client_id.to_owned(),
        appidacr: subject.appidacr.to_owned(),
        idp: issuer,
        oid: subject.object_id.to_owned(),
        sub: subject.object_id.to_owned(),
        tid: subject.tenant_id.to_owned(),
        uti: uuid::Uuid::new_v4().simple().to_string(),
        ver: "1.0".to_owned(),
    };
    jsonwebtoken::encode(&header(key), &claims, &key.encoding)
}

fn header(key: &SigningKey) -> Header {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    header.x5t = Some(key.kid.clone());
    header
}

/// Why a bearer token was refused. Azure answers all of them alike; the variant is for
/// tests and debugging.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's signature does not verify with the emulator's key")]
    BadSignature,
    #[error("the token's audience is not {0}")]
    WrongAudience(String),
    #[error("the token's issuer is not the one of its tenant")]
    WrongIssuer,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
}

/// Whether a bearer value has the shape of a JWT (three dot-separated parts), as opposed to
/// an API key sent as a bearer token.
pub fn looks_like_jwt(value: &str) -> bool {
    let parts: Vec<&str> = value.split('.').collect();
    parts.len() == 3 && parts.iter().take(2).all(|p| !p.is_empty())
}

/// Checks an access token as a resource with audience `audience` does: signature, audience
/// (with or without a trailing slash), issuer of the token's tenant, and `nbf <= now < exp`.
pub fn verify_access_token(
    key: &SigningKey,
    token: &str,
    audience: &str,
    now: i64,
) -> Result<AccessClaims, TokenRejection> {
    let claims: AccessClaims = decode_verified(key, token)?;
    if claims.aud.trim_end_matches('/') != audience.trim_end_matches('/') {
        return Err(TokenRejection::WrongAudience(audience.to_owned()));
    }
    let v2_issuer = format!("https://login.microsoftonline.com/{}/v2.0", claims.tid);
    if claims.iss != v1_issuer(&claims.tid) && claims.iss != v2_issuer {
        return Err(TokenRejection::WrongIssuer);
    }
    check_times(claims.nbf, claims.exp, now)?;
    Ok(claims)
}

fn check_times(nbf: i64, exp: i64, now: i64) -> Result<(), TokenRejection> {
    if now >= exp {
        Err(TokenRejection::Expired)
    } else if now < nbf {
        Err(TokenRejection::NotYetValid)
    } else {
        Ok(())
    }
}

/// Decodes a token signed by the emulator's key; times and audience are left to the caller.
fn decode_verified<T: serde::de::DeserializeOwned>(
    key: &SigningKey,
    token: &str,
) -> Result<T, TokenRejection> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature
            | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenRejection::BadSignature,
            _ => TokenRejection::Malformed,
        })
}

/// The claims of a federated assertion (e.g. a Kubernetes service-account token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    /// One audience or several (Kubernetes sends a list).
    pub aud: Audience,
    #[serde(default)]
    pub iat: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    pub exp: i64,
}

/// `aud` as a string or a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(all) => all.iter().any(|a| a == audience),
        }
    }

    /// The audiences, comma-separated (for error messages).
    pub fn joined(&self) -> String {
        match self {
            Audience::One(a) => a.clone(),
            Audience::Many(all) => all.join(","),
        }
    }
}

/// Signs a federated token as the emulated OIDC issuer (the AKS cluster) would.
pub fn mint_federated_token(
    key: &SigningKey,
    issuer: &str,
    subject: &str,
    audience: &str,
    now: i64,
    lifetime: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = AssertionClaims {
        iss: issuer.to_owned(),
        sub: subject.to_owned(),
        aud: Audience::Many(vec![audience.to_owned()]),
        iat: now,
        nbf: Some(now),
        exp: now.saturating_add(lifetime),
    };
    jsonwebtoken::encode(&header(key), &claims, &key.encoding)
}

/// Reads an assertion's claims without checking its signature (to find which federated
/// credential it claims to match, as Entra does before fetching the issuer's keys).
pub fn peek_assertion(token: &str) -> Result<AssertionClaims, TokenRejection> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.insecure_disable_signature_validation();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let any_key = jsonwebtoken::DecodingKey::from_secret(&[]);
    jsonwebtoken::decode::<AssertionClaims>(token, &any_key, &validation)
        .map(|data| data.claims)
        .map_err(|_| TokenRejection::Malformed)
}

/// Checks an assertion's signature (the emulator's key) and lifetime.
pub fn verify_assertion(
    key: &SigningKey,
    token: &str,
    now: i64,
) -> Result<AssertionClaims, TokenRejection> {
    let claims: AssertionClaims = decode_verified(key, token)?;
    check_times(claims.nbf.unwrap_or(claims.iat), claims.exp, now)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> &'static SigningKey {
        match SigningKey::shared() {
            Ok(key) => key,
            Err(e) => panic!("no key: {e}"),
        }
    }

    const SUBJECT: TokenSubject<'static> = TokenSubject {
        tenant_id: "tenant-1",
        client_id: "client-1",
        object_id: "object-1",
        appidacr: "1",
    };

    fn token(resource: &str, now: i64, lifetime: i64) -> String {
        match mint_access_token(key(), SUBJECT, resource, now, lifetime) {
            Ok(token) => token,
            Err(e) => panic!("cannot mint: {e}"),
        }
    }

    #[test]
    fn a_minted_token_verifies_for_its_audience_and_carries_the_principal() {
        let t = token(COGNITIVE_SERVICES_AUDIENCE, 1_000, 3600);
        let claims = verify_access_token(key(), &t, COGNITIVE_SERVICES_AUDIENCE, 1_001);
        let claims = claims.map_err(|e| e.to_string());
        assert_eq!(claims.as_ref().map(|c| c.oid.as_str()), Ok("object-1"));
        assert_eq!(
            claims.as_ref().map(|c| c.iss.as_str()),
            Ok("https://sts.windows.net/tenant-1/")
        );
        assert_eq!(claims.map(|c| c.exp), Ok(4_600));
    }

    #[test]
    fn tokens_are_refused_for_another_audience_after_expiry_and_when_tampered_with() {
        let t = token(SEARCH_AUDIENCE, 1_000, 60);
        assert_eq!(
            verify_access_token(key(), &t, COGNITIVE_SERVICES_AUDIENCE, 1_001),
            Err(TokenRejection::WrongAudience(
                COGNITIVE_SERVICES_AUDIENCE.to_owned()
            ))
        );
        assert_eq!(
            verify_access_token(key(), &t, SEARCH_AUDIENCE, 1_060),
            Err(TokenRejection::Expired)
        );
        assert_eq!(
            verify_access_token(key(), &t, SEARCH_AUDIENCE, 999),
            Err(TokenRejection::NotYetValid)
        );
        // A character inside the signature (the last one carries padding bits, and a changed
        // padding bit is a decoding error, not a bad signature).
        let at = t.rfind('.').unwrap() + 2;
        let mut tampered = t.clone();
        let swapped = if &t[at..=at] == "A" { "B" } else { "A" };
        tampered.replace_range(at..=at, swapped);
        assert_eq!(
            verify_access_token(key(), &tampered, SEARCH_AUDIENCE, 1_001),
            Err(TokenRejection::BadSignature)
        );
        assert_eq!(
            verify_access_token(key(), "a.b.c", SEARCH_AUDIENCE, 1_001),
            Err(TokenRejection::Malformed)
        );
    }

    #[test]
    fn a_trailing_slash_on_the_audience_does_not_matter() {
        let t = token("https://search.azure.com/", 1_000, 60);
        assert!(verify_access_token(key(), &t, SEARCH_AUDIENCE, 1_001).is_ok());
    }

    #[test]
    fn jwt_shaped_values_are_told_from_keys() {
        assert!(looks_like_jwt("aaa.bbb.ccc"));
        assert!(!looks_like_jwt("aoai-eastus-key-1"));
        assert!(!looks_like_jwt("a.b"));
    }

    #[test]
    fn federated_tokens_round_trip_and_expire() {
        let t = mint_federated_token(
            key(),
            "https://oidc",
            "system:serviceaccount:ns:sa",
            "api://AzureADTokenExchange",
            100,
            10,
        );
        let t = t.map_err(|e| e.to_string()).unwrap_or_default();
        let peeked = peek_assertion(&t).map_err(|e| e.to_string());
        assert_eq!(
            peeked.as_ref().map(|c| c.sub.as_str()),
            Ok("system:serviceaccount:ns:sa")
        );
        assert!(peeked
            .map(|c| c.aud.contains("api://AzureADTokenExchange"))
            .unwrap_or(false));
        assert!(verify_assertion(key(), &t, 105).is_ok());
        assert_eq!(
            verify_assertion(key(), &t, 110),
            Err(TokenRejection::Expired)
        );
    }
}
