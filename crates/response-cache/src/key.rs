//! The cache key: which two requests are the same request.
//!
//! The key is a SHA-256 over the key material, each part length-prefixed so that no two
//! different materials write the same bytes: a format version, the tenant id, the alias,
//! the operation, the model the alias reaches, a variant (the tenant's settings that change
//! what goes upstream, such as its context-overflow policy), then the canonical form of the
//! body. The tenant is part of what is hashed, so another tenant's identical request has
//! another key whatever its body says: scoping is by construction, not by a check that could
//! be forgotten. (Entries also carry their tenant, checked on every read: see
//! [`crate::Entry::is_for`].)
//!
//! The canonical body is the caller's JSON with:
//! - object keys sorted (at every depth), insignificant whitespace gone, strings escaped the
//!   one way `serde_json` writes them;
//! - numbers written once: an integral float (`1.0`, `-0.0`) as the integer (`1`, `0`), every
//!   other number as `serde_json` prints it (shortest round-trip form);
//! - the top-level fields of [`IGNORED_FIELDS`] left out: they do not change the answer
//!   (`user` is an end-user id for Azure's abuse monitoring);
//! - `"stream": false` and `"stream": null` the same as no `stream`, and `"stream_options":
//!   null` the same as none (Azure reads them so).
//!
//! Everything else is part of the key, `stream` and `stream_options` included: a streamed
//! answer and a plain one are different bytes, and so is a stream with its usage chunk and
//! one without.

use std::fmt;
use std::io::Write;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Bumped whenever the canonical form or the material changes: old entries are then never
/// read (their keys differ), and expire.
pub const KEY_VERSION: u8 = 1;

/// Top-level body fields that are not part of the key.
pub const IGNORED_FIELDS: &[&str] = &["user"];

/// What, besides the body, decides the answer.
#[derive(Debug, Clone, Copy)]
pub struct KeyMaterial<'a> {
    pub tenant: Uuid,
    /// The alias the caller named.
    pub alias: &'a str,
    /// `chat/completions`, `completions`, `embeddings`.
    pub operation: &'a str,
    /// The model the alias reaches: an alias pointed at another model is another key.
    pub model: &'a str,
    /// The tenant's settings that change the body sent upstream (its context-overflow
    /// policy): another policy may send other messages.
    pub variant: &'a str,
}

/// A request's cache key: its tenant, and the digest of its material and canonical body.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    tenant: Uuid,
    digest: [u8; 32],
}

impl CacheKey {
    pub fn tenant(&self) -> Uuid {
        self.tenant
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The digest in lower-case hex (the entry's name in Redis).
    pub fn hex(&self) -> String {
        hex::encode(self.digest)
    }

    /// A key made of its parts (an entry read back names its own).
    pub(crate) fn from_parts(tenant: Uuid, digest: [u8; 32]) -> Self {
        Self { tenant, digest }
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({}/{})", self.tenant, &self.hex()[..12])
    }
}

/// The body is not a JSON object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the request body is not a JSON object")]
pub struct NotAnObject;

/// The key of `body` (the caller's JSON object) under `material`.
pub fn derive(material: &KeyMaterial<'_>, body: &[u8]) -> Result<CacheKey, NotAnObject> {
    let value: Value = serde_json::from_slice(body).map_err(|_| NotAnObject)?;
    let Value::Object(object) = value else {
        return Err(NotAnObject);
    };
    Ok(derive_value(material, &object))
}

/// The key of an already parsed body.
pub fn derive_value(material: &KeyMaterial<'_>, body: &Map<String, Value>) -> CacheKey {
    let mut hasher = Hashing(Sha256::new());
    hasher.0.update([KEY_VERSION]);
    hasher.0.update(material.tenant.as_bytes());
    for part in [
        material.alias,
        material.operation,
        material.model,
        material.variant,
    ] {
        hasher.0.update((part.len() as u64).to_le_bytes());
        hasher.0.update(part.as_bytes());
    }
    canonical_body(&mut hasher, body);
    CacheKey {
        tenant: material.tenant,
        digest: hasher.0.finalize().into(),
    }
}

/// The canonical body's bytes, for tests and for the README's examples.
pub fn canonical(body: &Map<String, Value>) -> String {
    let mut out = Collect(Vec::new());
    canonical_body(&mut out, body);
    String::from_utf8_lossy(&out.0).into_owned()
}

trait Sink: Write {
    fn put(&mut self, bytes: &[u8]) {
        // Neither sink can fail: a hasher and a vector.
        let _ = self.write_all(bytes);
    }
}

struct Hashing(Sha256);

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for Hashing {}

struct Collect(Vec<u8>);

impl Write for Collect {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for Collect {}

/// The top level: the ignored fields and the `stream` spellings folded, then like any object.
fn canonical_body(out: &mut impl Sink, body: &Map<String, Value>) {
    let kept = |(name, value): &(&String, &Value)| {
        let name = name.as_str();
        if IGNORED_FIELDS.contains(&name) {
            return false;
        }
        match name {
            "stream" => !matches!(value, Value::Null | Value::Bool(false)),
            "stream_options" => !value.is_null(),
            _ => true,
        }
    };
    let mut fields: Vec<(&String, &Value)> = body.iter().filter(kept).collect();
    write_object(out, &mut fields);
}

fn write_object(out: &mut impl Sink, fields: &mut [(&String, &Value)]) {
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.put(b"{");
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        write_string(out, name);
        out.put(b":");
        write_value(out, value);
    }
    out.put(b"}");
}

fn write_value(out: &mut impl Sink, value: &Value) {
    match value {
        Value::Null => out.put(b"null"),
        Value::Bool(true) => out.put(b"true"),
        Value::Bool(false) => out.put(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.put(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                write_value(out, item);
            }
            out.put(b"]");
        }
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            write_object(out, &mut fields);
        }
    }
}

/// Integers as they are; an integral float within 2^53 as the integer it equals.
fn write_number(out: &mut impl Sink, n: &Number) {
    if n.is_f64() {
        if let Some(f) = n.as_f64() {
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                let _ = write!(out, "{}", f as i64);
                return;
            }
        }
    }
    let _ = write!(out, "{n}");
}

fn write_string(out: &mut impl Sink, s: &str) {
    // serde_json escapes one way only; writing into a hasher or a vector cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;
    use serde_json::json;

    fn material(tenant: Uuid) -> KeyMaterial<'static> {
        KeyMaterial {
            tenant,
            alias: "gpt-4o",
            operation: "chat/completions",
            model: "gpt-4o",
            variant: "reject",
        }
    }

    fn key(tenant: Uuid, body: Value) -> CacheKey {
        derive(&material(tenant), body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn spellings_of_the_same_request_share_a_key() {
        let t = Uuid::new_v4();
        let base = key(
            t,
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1}),
        );
        let same = [
            r#"{"temperature":1.0,"messages":[{"content":"hi","role":"user"}]}"#,
            r#"{ "messages" : [ {"role":"user","content":"hi"} ], "temperature": 1, "user": "alice" }"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":1,"stream":false}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":1,"stream":null,"stream_options":null}"#,
            r#"{"messages":[{"role":"user","content":"h\u0069"}],"temperature":1}"#,
        ];
        for body in same {
            assert_eq!(
                derive(&material(t), body.as_bytes()).unwrap(),
                base,
                "{body}"
            );
        }
    }

    #[test]
    fn whatever_changes_the_answer_changes_the_key() {
        let t = Uuid::new_v4();
        let base = json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1});
        let k = key(t, base.clone());
        let mut others = vec![
            json!({"messages": [{"role": "user", "content": "hi!"}], "temperature": 1}),
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1.5}),
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1, "stream": true}),
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1, "seed": 3}),
            json!({"messages": [{"role": "system", "content": "hi"}], "temperature": 1}),
            // a user field below the top level is content, not the caller's id
            json!({"messages": [{"role": "user", "content": "hi", "user": "x"}], "temperature": 1}),
        ];
        let streamed = json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1, "stream": true});
        let mut with_usage = streamed.clone();
        with_usage["stream_options"] = json!({"include_usage": true});
        assert_ne!(key(t, streamed), key(t, with_usage.clone()));
        others.push(with_usage);
        for other in others {
            assert_ne!(key(t, other.clone()), k, "{other}");
        }
        let m = material(t);
        for changed in [
            KeyMaterial {
                alias: "other",
                ..m
            },
            KeyMaterial {
                operation: "completions",
                ..m
            },
            KeyMaterial {
                model: "gpt-4o-mini",
                ..m
            },
            KeyMaterial {
                variant: "truncate_oldest",
                ..m
            },
        ] {
            assert_ne!(derive_value(&changed, base.as_object().unwrap()), k);
        }
    }

    #[test]
    fn another_tenants_identical_request_has_another_key() {
        let body = json!({"input": "the same words", "model": "emb"});
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(key(a, body.clone()), key(b, body.clone()));
        assert_eq!(key(a, body.clone()).tenant(), a);
    }

    #[test]
    fn parts_are_length_prefixed_so_they_cannot_run_into_each_other() {
        let t = Uuid::new_v4();
        let body = json!({});
        let a = KeyMaterial {
            alias: "ab",
            operation: "c",
            ..material(t)
        };
        let b = KeyMaterial {
            alias: "a",
            operation: "bc",
            ..material(t)
        };
        assert_ne!(
            derive_value(&a, body.as_object().unwrap()),
            derive_value(&b, body.as_object().unwrap())
        );
    }

    #[test]
    fn the_canonical_form_is_sorted_compact_and_folds_integral_floats() {
        let body = json!({"b": [1.0, 2.5, -0.0, {"z": 1, "a": "é\n"}], "a": true, "user": "u"});
        assert_eq!(
            canonical(body.as_object().unwrap()),
            r#"{"a":true,"b":[1,2.5,0,{"a":"é\n","z":1}]}"#
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_has_no_key() {
        for body in [&b"[1]"[..], b"\"x\"", b"{", b""] {
            assert_eq!(derive(&material(Uuid::nil()), body), Err(NotAnObject));
        }
    }
}
