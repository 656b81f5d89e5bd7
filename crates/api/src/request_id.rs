//! `x-request-id`: accepted from the caller when it is a sane token, generated otherwise,
//! put on the request's tracing span and returned on the response.

use axum::extract::Request;
use axum::http::HeaderValue;

pub const HEADER: &str = "x-request-id";

/// The request id of the request being served, for handlers that pass it upstream.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The request's id: the caller's when it is sane, else a new one. It replaces the header
/// and is put in the extensions as a [`RequestId`].
pub fn assign(request: &mut Request) -> HeaderValue {
    let id = match request.headers().get(HEADER) {
        Some(value) if acceptable(value) => value.clone(),
        _ => HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
    };
    request.headers_mut().insert(HEADER, id.clone());
    request.extensions_mut().insert(RequestId(id.clone()));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_request_ids_are_kept() {
        assert!(acceptable(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        assert!(!acceptable(&HeaderValue::from_static("a b")));
        assert!(!acceptable(&HeaderValue::from_static("<script>")));
        let long = "a".repeat(129);
        assert!(!acceptable(&HeaderValue::from_str(&long).unwrap()));
    }
}
