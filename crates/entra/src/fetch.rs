//! One token request to the identity platform, per credential kind. Nothing here logs: the
//! broker reports outcomes without the secrets, assertions or tokens involved.

use std::time::Duration;

use http::HeaderValue;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::broker::{IdentitySettings, TokenError};
use crate::CredentialSpec;

/// A token as the identity platform gave it.
pub(crate) struct Fetched {
    /// `Bearer <token>`, marked sensitive (hyper and `Debug` never show it).
    pub header: HeaderValue,
    pub lifetime: Duration,
}

/// The longest answer read from the identity platform (a token is a few KB).
const MAX_ANSWER: usize = 64 * 1024;

pub(crate) async fn fetch(
    http: &reqwest::Client,
    settings: &IdentitySettings,
    spec: &CredentialSpec,
    scope: &str,
) -> Result<Fetched, TokenError> {
    let request = match spec {
        CredentialSpec::ClientSecret {
            tenant_id,
            client_id,
            client_secret,
        } => http.post(token_url(settings, tenant_id)).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.expose_secret()),
            ("scope", scope),
        ]),
        CredentialSpec::WorkloadIdentity {
            tenant_id,
            client_id,
        } => {
            let workload = &settings.workload;
            let tenant = tenant_id
                .as_deref()
                .or(workload.tenant_id.as_deref())
                .ok_or(TokenError::Misconfigured("AZURE_TENANT_ID is not set"))?;
            let client = client_id
                .as_deref()
                .or(workload.client_id.as_deref())
                .ok_or(TokenError::Misconfigured("AZURE_CLIENT_ID is not set"))?;
            let file = workload
                .token_file
                .as_ref()
                .ok_or(TokenError::Misconfigured(
                    "AZURE_FEDERATED_TOKEN_FILE is not set",
                ))?;
            // Read on every request: the kubelet rotates the file.
            let assertion = tokio::fs::read_to_string(file).await.map_err(|_| {
                TokenError::Misconfigured("the federated token file cannot be read")
            })?;
            http.post(token_url(settings, tenant)).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.trim()),
                ("scope", scope),
            ])
        }
        CredentialSpec::ManagedIdentity { client_id } => {
            let resource = scope.strip_suffix("/.default").unwrap_or(scope);
            let mut query = vec![("resource", resource)];
            if let Some(client) = client_id {
                query.push(("client_id", client));
            }
            match (&settings.identity_endpoint, &settings.identity_header) {
                (Some(endpoint), Some(header)) => {
                    query.push(("api-version", "2019-08-01"));
                    http.get(endpoint.as_str())
                        .query(&query)
                        .header("X-IDENTITY-HEADER", header.expose_secret())
                }
                _ => {
                    query.push(("api-version", "2018-02-01"));
                    http.get(settings.imds_endpoint.as_str())
                        .query(&query)
                        .header("Metadata", "true")
                }
            }
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| TokenError::Unreachable(without_url(e)))?;
    let status = response.status();
    let body = read_capped(response).await?;
    if !status.is_success() {
        return Err(refusal(status.as_u16(), &body));
    }
    let answer: Answer = serde_json::from_slice(&body).map_err(|_| TokenError::Refused {
        status: status.as_u16(),
        error: "the identity platform's answer is not a token".into(),
    })?;
    let mut header =
        HeaderValue::try_from(format!("Bearer {}", answer.access_token)).map_err(|_| {
            TokenError::Refused {
                status: status.as_u16(),
                error: "the identity platform's token is not a valid header value".into(),
            }
        })?;
    header.set_sensitive(true);
    let lifetime = answer
        .expires_in
        .and_then(|s| s.seconds())
        .or_else(|| {
            let on = answer.expires_on.and_then(|s| s.seconds())?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            Some(on.saturating_sub(now))
        })
        .unwrap_or(0);
    Ok(Fetched {
        header,
        lifetime: Duration::from_secs(lifetime),
    })
}

fn token_url(settings: &IdentitySettings, tenant: &str) -> String {
    format!(
        "{}/{tenant}/oauth2/v2.0/token",
        settings.authority_host.trim_end_matches('/')
    )
}

/// reqwest's errors carry the URL; a managed identity's has no secret in it, but keep the
/// message to its kind so no query string ever reaches a log.
fn without_url(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, TokenError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TokenError::Unreachable(without_url(e)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(TokenError::Unreachable("answer too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The identity platform's refusal, reduced to what is safe and useful to show: the OAuth
/// error and its first line of description (`AADSTS7000215: Invalid client secret provided.`).
fn refusal(status: u16, body: &[u8]) -> TokenError {
    #[derive(Deserialize)]
    struct Refusal {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
    }
    let error = match serde_json::from_slice::<Refusal>(body) {
        Ok(Refusal {
            error,
            error_description,
        }) => {
            let first_line = error_description
                .as_deref()
                .and_then(|d| d.lines().next())
                .map(|line| line.chars().take(200).collect::<String>());
            match (error, first_line) {
                (Some(e), Some(d)) => format!("{e}: {d}"),
                (Some(e), None) => e,
                (None, Some(d)) => d,
                (None, None) => "refused".into(),
            }
        }
        Err(_) => "refused".into(),
    };
    TokenError::Refused { status, error }
}

#[derive(Deserialize)]
struct Answer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Seconds>,
    #[serde(default)]
    expires_on: Option<Seconds>,
}

/// Entra answers `expires_in` as a number; IMDS and App Service as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(u64),
    Text(String),
}

impl Seconds {
    fn seconds(&self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Text(t) => t.trim().parse().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_the_error_and_the_first_line_only() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: abc\r\nCorrelation ID: def","error_codes":[7000215]}"#;
        let TokenError::Refused { status, error } = refusal(401, body) else {
            panic!("not a refusal")
        };
        assert_eq!(status, 401);
        assert_eq!(
            error,
            "invalid_client: AADSTS7000215: Invalid client secret provided."
        );
    }

    #[test]
    fn lifetimes_come_as_numbers_or_strings() {
        let entra: Answer =
            serde_json::from_str(r#"{"access_token":"t","expires_in":3599}"#).unwrap();
        let imds: Answer =
            serde_json::from_str(r#"{"access_token":"t","expires_in":"86399"}"#).unwrap();
        assert_eq!(entra.expires_in.and_then(|s| s.seconds()), Some(3599));
        assert_eq!(imds.expires_in.and_then(|s| s.seconds()), Some(86399));
    }
}
