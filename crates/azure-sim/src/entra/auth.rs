//! Telling a data-plane credential apart: an `api-key` header is a key; a bearer value is a
//! key when it is one of the resource's keys (the OpenAI client sends keys as bearer tokens on
//! the v1 paths) and a token when it has the shape of a JWT; anything else is a (wrong) key.

use http::HeaderMap;

use super::tokens::looks_like_jwt;

/// What the caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    Missing,
    Key(&'a str),
    Token(&'a str),
}

/// Classifies the request's credential; `is_key` says whether a value is a configured key.
pub fn presented<'a>(headers: &'a HeaderMap, is_key: impl Fn(&str) -> bool) -> Credential<'a> {
    if let Some(key) = headers
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return Credential::Key(key);
    }
    let Some(bearer) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
    else {
        return Credential::Missing;
    };
    if !is_key(bearer) && looks_like_jwt(bearer) {
        Credential::Token(bearer)
    } else {
        Credential::Key(bearer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn credentials_are_classified_as_azure_does() {
        let is_key = |v: &str| v == "k.e.y";
        assert_eq!(presented(&headers(&[]), is_key), Credential::Missing);
        assert_eq!(
            presented(&headers(&[("api-key", "abc")]), is_key),
            Credential::Key("abc")
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer abc")]), is_key),
            Credential::Key("abc")
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer a.b.c")]), is_key),
            Credential::Token("a.b.c")
        );
        // A configured key that happens to look like a JWT stays a key.
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer k.e.y")]), is_key),
            Credential::Key("k.e.y")
        );
        // api-key wins over a bearer token.
        assert_eq!(
            presented(
                &headers(&[("authorization", "Bearer a.b.c"), ("api-key", "abc")]),
                is_key
            ),
            Credential::Key("abc")
        );
    }
}
