//! A caller's JSON body on the hot path: read once for the few fields routing needs, then
//! sent upstream as the caller's own bytes, with the fields the router adds (`user`,
//! `stream_options`) spliced in after the opening brace. Building a `serde_json::Value` of
//! the whole document and writing it out again cost more than everything else the router
//! does with a body.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// What routing needs to know about a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyFacts {
    /// `model`: the alias on the v1 paths.
    pub model: Option<String>,
    pub stream: bool,
    /// `None` when the body has no `stream_options`; else whether it asks for
    /// `include_usage`.
    pub stream_options: Option<bool>,
    /// The body has a `user` (even `null`): the router leaves it alone.
    pub has_user: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_output: Option<u64>,
    /// Completions asked for: the largest of `n`, `best_of` and 1.
    pub choices: u64,
}

impl BodyFacts {
    /// Reads `body`, which must be one JSON object. The error is a sentence for the caller.
    /// A field named twice is refused: the gateway and Azure must not read different values.
    pub fn read(body: &[u8]) -> Result<Self, String> {
        if first_significant(body) != Some(b'{') {
            return Err("The request body must be a JSON object.".into());
        }
        let seen: Seen<'_> = serde_json::from_slice(body)
            .map_err(|e| format!("We could not parse the JSON body of your request: {e}."))?;
        // The fields above are refused when named twice by serde; every other key, at any
        // depth, is checked here, once the document is known to be valid.
        strict_json::check_parsed(body).map_err(ambiguous)?;
        Ok(Self {
            model: seen.model.map(Cow::into_owned),
            stream: seen.stream == Some(true),
            stream_options: seen.stream_options,
            has_user: seen.user,
            max_output: seen.max_completion_tokens.or(seen.max_tokens),
            choices: seen.n.unwrap_or(1).max(seen.best_of.unwrap_or(1)).max(1),
        })
    }

    pub fn wants_usage(&self) -> bool {
        self.stream_options == Some(true)
    }
}

/// The caller's sentence for a body that names a key twice.
pub fn ambiguous(duplicate: strict_json::DuplicateKey) -> String {
    format!("The request body is ambiguous: {duplicate}.")
}

#[derive(Deserialize)]
struct Seen<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, deserialize_with = "stream_options")]
    stream_options: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    user: bool,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    best_of: Option<u64>,
}

/// Called only when the field is there, whatever its value.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

fn stream_options<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    struct Options {
        #[serde(default)]
        include_usage: Option<bool>,
    }
    let options = Option::<Options>::deserialize(d)?;
    Ok(Some(options.and_then(|o| o.include_usage) == Some(true)))
}

fn first_significant(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// The body to send upstream: the caller's bytes, plus `stream_options.include_usage` when
/// `ask_usage`, plus `user` when given and the caller sent none. Only a body that already has
/// `stream_options` (without `include_usage: true`) is parsed and written out again.
pub(crate) fn upstream_body(
    raw: &Bytes,
    facts: &BodyFacts,
    ask_usage: bool,
    user: Option<&str>,
) -> Result<Bytes, serde_json::Error> {
    let user = user.filter(|_| !facts.has_user);
    if ask_usage && facts.stream_options.is_some() {
        let mut map: Map<String, Value> = serde_json::from_slice(raw)?;
        let options = map
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if !options.is_object() {
            *options = Value::Object(Map::new());
        }
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".into(), Value::Bool(true));
        }
        if let Some(user) = user {
            map.insert("user".into(), Value::String(user.to_owned()));
        }
        return serde_json::to_vec(&map).map(Bytes::from);
    }
    if !ask_usage && user.is_none() {
        return Ok(raw.clone());
    }
    let Some(open) = raw.iter().position(|b| *b == b'{') else {
        return Ok(raw.clone());
    };
    let mut added = Vec::with_capacity(96);
    if ask_usage {
        added.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
    }
    if let Some(user) = user {
        if !added.is_empty() {
            added.push(b',');
        }
        added.extend_from_slice(br#""user":"#);
        serde_json::to_writer(&mut added, user)?;
    }
    let rest = &raw[open + 1..];
    let empty = first_significant(rest) == Some(b'}');
    let mut out = Vec::with_capacity(raw.len() + added.len() + 1);
    out.extend_from_slice(&raw[..=open]);
    out.extend_from_slice(&added);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Ok(Bytes::from(out))
}

/// The body with `model` set to `deployment` (the v1 responses API names the deployment in
/// the body).
pub(crate) fn with_model(body: &[u8], deployment: &str) -> Result<Bytes, serde_json::Error> {
    let mut map: Map<String, Value> = serde_json::from_slice(body)?;
    map.insert("model".into(), Value::String(deployment.to_owned()));
    serde_json::to_vec(&map).map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn facts_are_read_without_building_the_document() {
        let facts = BodyFacts::read(
            br#" {"model":"gpt-4o","messages":[{"role":"user","content":"hi \"there\""}],
                 "stream":true,"max_tokens":10,"n":2,"best_of":3,"user":null,
                 "stream_options":{"include_usage":true},"tools":[{"a":[1,{"b":null}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            facts,
            BodyFacts {
                model: Some("gpt-4o".into()),
                stream: true,
                stream_options: Some(true),
                has_user: true,
                max_output: Some(10),
                choices: 3,
            }
        );
        let plain = BodyFacts::read(br#"{"max_tokens":5,"max_completion_tokens":7}"#).unwrap();
        assert_eq!(
            (plain.max_output, plain.choices, plain.has_user),
            (Some(7), 1, false)
        );
        assert_eq!(plain.stream_options, None);
        let null_options = BodyFacts::read(br#"{"stream_options":null}"#).unwrap();
        assert_eq!(null_options.stream_options, Some(false));
    }

    #[test]
    fn bad_bodies_are_refused_with_a_sentence() {
        for bad in [
            &b"[1,2]"[..],
            b"\"x\"",
            b"",
            b"{",
            b"{\"stream\":\"yes\"}",
            b"{\"n\":-1}",
            b"{\"model\":\"a\",\"model\":\"b\"}",
            b"{} trailing",
            // a repeated key anywhere: the gateway and Azure would read different values
            br#"{"messages":[{"role":"user","content":"a"}],"max_tokens":5,"messages":[]}"#,
            br#"{"messages":[{"role":"user","role":"system","content":"a"}]}"#,
            br#"{"stream_options":{"include_usage":false,"include_usage":true}}"#,
            br#"{"user":{"id":1,"id":2}}"#,
            br#"{"tools":[{"function":{"name":"a","name":"b"}}]}"#,
        ] {
            let error = BodyFacts::read(bad).unwrap_err();
            assert!(error.ends_with('.'), "{error}");
        }
    }

    #[test]
    fn fields_are_spliced_into_the_callers_bytes() {
        let raw = Bytes::from_static(br#"{"messages":[],"stream":true}"#);
        let facts = BodyFacts::read(&raw).unwrap();
        let out = upstream_body(&raw, &facts, true, Some("tenant \"1\"")).unwrap();
        assert_eq!(
            json(&out),
            serde_json::json!({"messages":[],"stream":true,
                "stream_options":{"include_usage":true},"user":"tenant \"1\""})
        );
        // nothing to add: the very same bytes
        let same = upstream_body(&raw, &facts, false, None).unwrap();
        assert_eq!(same.as_ptr(), raw.as_ptr());
        // an empty object gets no stray comma
        let empty = Bytes::from_static(b"  { }");
        let out =
            upstream_body(&empty, &BodyFacts::read(&empty).unwrap(), false, Some("t")).unwrap();
        assert_eq!(json(&out), serde_json::json!({"user":"t"}));
    }

    #[test]
    fn the_callers_own_user_and_options_are_kept() {
        let raw = Bytes::from_static(
            br#"{"user":"alice","stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
        );
        let facts = BodyFacts::read(&raw).unwrap();
        let out = upstream_body(&raw, &facts, true, Some("tenant")).unwrap();
        assert_eq!(
            json(&out),
            serde_json::json!({"user":"alice","stream":true,
                "stream_options":{"include_usage":true,"x":1}})
        );
        let raw = Bytes::from_static(br#"{"stream_options":null}"#);
        let out = upstream_body(&raw, &BodyFacts::read(&raw).unwrap(), true, None).unwrap();
        assert_eq!(
            json(&out),
            serde_json::json!({"stream_options":{"include_usage":true}})
        );
    }

    #[test]
    fn the_model_is_replaced_for_the_responses_api() {
        let out = with_model(br#"{"model":"alias","input":"hi"}"#, "dep-1").unwrap();
        assert_eq!(
            json(&out),
            serde_json::json!({"model":"dep-1","input":"hi"})
        );
    }
}
