//! Unambiguous JSON: no object in the document names a key twice.
//!
//! RFC 8259 says only that names "SHOULD be unique", and parsers disagree on a repeated one:
//! serde_json keeps the last, others the first or refuse. A gateway that reads a field of a
//! body and forwards the same bytes must therefore refuse a repeated key, or it may count,
//! check or route by one value while Azure acts on another (`{"messages":[short],
//! "messages":[long]}`).
//!
//! [`check`] parses and checks; [`check_parsed`] only checks a document that a parser has
//! already accepted (the hot path parses once for the fields it needs, then scans: jumping
//! from quote to quote is several times cheaper than decoding every string again).

use std::borrow::Cow;
use std::collections::HashSet;

use smallvec::SmallVec;

/// A key named twice in one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duplicate key `{shown}` in the JSON body (a key may appear only once in an object)")]
pub struct DuplicateKey {
    /// The key, cut to 100 characters.
    shown: String,
}

impl DuplicateKey {
    fn new(key: &[u8]) -> Self {
        Self {
            shown: String::from_utf8_lossy(key).chars().take(100).collect(),
        }
    }

    pub fn key(&self) -> &str {
        &self.shown
    }
}

/// Why a document is not unambiguous JSON.
#[derive(Debug, thiserror::Error)]
pub enum StrictJsonError {
    #[error(transparent)]
    Syntax(#[from] serde_json::Error),
    #[error(transparent)]
    Duplicate(#[from] DuplicateKey),
}

/// Checks that `body` is one JSON value in which no object names a key twice.
pub fn check(body: &[u8]) -> Result<(), StrictJsonError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
    Ok(check_parsed(body)?)
}

/// Objects up to this many keys are checked by comparing with each earlier key; past it, a
/// hash set keeps a hostile object with a million keys linear.
const LINEAR_KEYS: usize = 16;

/// One open object or array.
#[derive(Clone, Copy)]
struct Frame {
    /// Where this object's keys start in the shared key list; `None` for an array.
    keys_from: Option<u32>,
    /// The next string in this object is a key.
    expecting_key: bool,
    /// Past [`LINEAR_KEYS`] keys: the index of this object's set in `sets`.
    set: Option<u32>,
}

/// Nesting this deep and keys this many live on the stack (no allocation for the usual
/// body); deeper documents spill to the heap.
type Frames = SmallVec<[Frame; 32]>;
type Keys<'a> = SmallVec<[Cow<'a, [u8]>; 32]>;

/// Checks a document that a JSON parser has already accepted. On any input it terminates in
/// time linear in its length and never panics; on valid JSON it finds every object that
/// names a key twice, at any depth, keys compared after unescaping (`"a"` and `"\u0061"` are
/// the same key).
pub fn check_parsed(body: &[u8]) -> Result<(), DuplicateKey> {
    let mut stack = Frames::new();
    let mut keys = Keys::new();
    let mut sets: Vec<HashSet<Cow<'_, [u8]>>> = Vec::new();
    let mut at = 0;
    while let Some(&byte) = body.get(at) {
        at += 1;
        match byte {
            b'"' => {
                let start = at;
                let (end, escaped) = string_end(body, start);
                at = end + 1;
                let Some(frame) = stack.last_mut() else {
                    continue;
                };
                let (Some(from), true) = (frame.keys_from, frame.expecting_key) else {
                    continue;
                };
                frame.expecting_key = false;
                let raw = body.get(start..end).unwrap_or_default();
                let key = if escaped {
                    unescaped(raw, body.get(start - 1..=end).unwrap_or_default())
                } else {
                    Cow::Borrowed(raw)
                };
                remember(frame, from as usize, &mut keys, &mut sets, key)?;
            }
            b'{' => stack.push(Frame {
                keys_from: Some(u32::try_from(keys.len()).unwrap_or(u32::MAX)),
                expecting_key: true,
                set: None,
            }),
            b'[' => stack.push(Frame {
                keys_from: None,
                expecting_key: false,
                set: None,
            }),
            b'}' | b']' => {
                if let Some(frame) = stack.pop() {
                    if let Some(from) = frame.keys_from {
                        keys.truncate(from as usize);
                    }
                    if frame.set.is_some() {
                        sets.pop();
                    }
                }
            }
            b',' => {
                if let Some(frame) = stack.last_mut() {
                    frame.expecting_key = frame.keys_from.is_some();
                }
            }
            _ => {}
        }
    }
    Ok(())
}

const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
const QUOTES: u64 = u64::from_le_bytes([b'"'; 8]);
const BACKSLASHES: u64 = u64::from_le_bytes([b'\\'; 8]);

/// Whether any byte of `word` is zero (the classic bit trick; no false negatives, and a
/// false positive only above a true zero byte, so the first hit is exact).
fn zero_byte(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// The index of the quote that closes the string starting at `from` (just after its
/// opening quote), or the end of the input; and whether the string has an escape. Eight
/// bytes at a time: a library search pays a dispatch on every short string (most keys are).
fn string_end(body: &[u8], mut from: usize) -> (usize, bool) {
    let mut escaped = false;
    loop {
        let rest = body.get(from..).unwrap_or_default();
        let mut offset = 0;
        let mut hit = None;
        for chunk in rest.chunks_exact(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let word = u64::from_le_bytes(word);
            let found = zero_byte(word ^ QUOTES) | zero_byte(word ^ BACKSLASHES);
            if found != 0 {
                hit = Some(offset + (found.trailing_zeros() / 8) as usize);
                break;
            }
            offset += 8;
        }
        if hit.is_none() {
            hit = rest
                .get(offset..)
                .unwrap_or_default()
                .iter()
                .position(|b| *b == b'"' || *b == b'\\')
                .map(|p| offset + p);
        }
        match hit {
            None => return (body.len(), escaped),
            Some(offset) => {
                let found = from + offset;
                if body.get(found) == Some(&b'\\') {
                    escaped = true;
                    from = found + 2; // the escaped character, whatever it is
                } else {
                    return (found, escaped);
                }
            }
        }
    }
}

/// A key's bytes after unescaping.
fn unescaped<'a>(raw: &'a [u8], quoted: &[u8]) -> Cow<'a, [u8]> {
    match serde_json::from_slice::<String>(quoted) {
        Ok(decoded) => Cow::Owned(decoded.into_bytes()),
        // Not valid JSON after all: the parser has refused (or will refuse) the document.
        Err(_) => Cow::Borrowed(raw),
    }
}

fn remember<'a>(
    frame: &mut Frame,
    from: usize,
    keys: &mut Keys<'a>,
    sets: &mut Vec<HashSet<Cow<'a, [u8]>>>,
    key: Cow<'a, [u8]>,
) -> Result<(), DuplicateKey> {
    if frame.set.is_some() {
        // An object's set is the last one: a nested object's is popped when it closes.
        let Some(set) = sets.last_mut() else {
            return Ok(());
        };
        if set.contains(&key) {
            return Err(DuplicateKey::new(&key));
        }
        set.insert(key);
        return Ok(());
    }
    let own = keys.get(from..).unwrap_or_default();
    if own.contains(&key) {
        return Err(DuplicateKey::new(&key));
    }
    if own.len() < LINEAR_KEYS {
        keys.push(key);
    } else {
        let mut set: HashSet<Cow<'a, [u8]>> = keys.drain(from..).collect();
        set.insert(key);
        sets.push(set);
        frame.set = Some(u32::try_from(sets.len()).unwrap_or(u32::MAX));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate_in(body: &[u8]) -> Option<String> {
        match check(body) {
            Ok(()) => None,
            Err(StrictJsonError::Duplicate(d)) => Some(d.key().to_owned()),
            Err(StrictJsonError::Syntax(e)) => panic!("{e}"),
        }
    }

    #[test]
    fn documents_without_a_repeated_key_pass_at_any_depth() {
        for good in [
            &br#"{"a":1,"b":[{"a":1,"b":2},{"a":{"a":{"a":null}}}],"c":"a"}"#[..],
            b"[]",
            b"[1,2,3]",
            b"\"x\"",
            b"{}",
            br#"{"a\u0062":1,"ab2":2}"#,
            // keys of sibling and nested objects are separate
            br#"{"x":{"k":1},"y":{"k":2},"k":[{"k":{"k":3}}]}"#,
            // quotes, backslashes and braces inside strings are text
            br#"{"a":"\"k\":1,\"k\":2 {[,","b":"\\","c":"}],{\"d\":"}"#,
            br#"{"a":"\\\"","a\\":1}"#,
        ] {
            assert_eq!(
                duplicate_in(good),
                None,
                "{}",
                String::from_utf8_lossy(good)
            );
        }
    }

    #[test]
    fn a_repeated_key_is_refused_wherever_it_is_and_named() {
        for (bad, key) in [
            (
                &br#"{"messages":[1],"max_tokens":5,"messages":[2]}"#[..],
                "messages",
            ),
            (br#"{"a":[{"role":"user","role":"system"}]}"#, "role"),
            (br#"{"a":{"b":{"c":1,"c":2}}}"#, "c"),
            (br#"{"a":{"b":1},"a":2}"#, "a"),
            (br#"[{"x":1},{"y":[{"z":"}","z":"{"}]}]"#, "z"),
            // The same key spelled with an escape is the same key.
            (br#"{"model":"a","mod\u0065l":"b"}"#, "model"),
            (br#"{"a\\b":1,"a\u005cb":2}"#, "a\\b"),
        ] {
            assert_eq!(
                duplicate_in(bad).as_deref(),
                Some(key),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_large_object_is_checked_through_the_hash_set() {
        let keys: Vec<String> = (0..1000).map(|i| format!("\"k{i}\":{i}")).collect();
        let good = format!("{{{}}}", keys.join(","));
        assert_eq!(duplicate_in(good.as_bytes()), None);
        for repeated in ["k999", "k3", "k16", "k17"] {
            let bad = format!("{{{},\"{repeated}\":0}}", keys.join(","));
            assert_eq!(duplicate_in(bad.as_bytes()).as_deref(), Some(repeated));
        }
        // nested after a large sibling: the sibling's set does not leak into it
        let nested = format!("{{\"big\":{{{}}},\"k1\":{{\"k1\":1}}}}", keys.join(","));
        assert_eq!(duplicate_in(nested.as_bytes()), None);
    }

    #[test]
    fn syntax_errors_stay_errors_and_garbage_never_panics() {
        for bad in [&b"{"[..], b"", b"{} x", b"{\"a\":}"] {
            assert!(matches!(check(bad), Err(StrictJsonError::Syntax(_))));
        }
        for garbage in [
            &b"}}}]]]"[..],
            b"\"",
            b"{\"\\",
            b"{\"a\\\"",
            b",,,{,\"a\",\"a\"",
            b"\\",
        ] {
            let _ = check_parsed(garbage);
        }
    }
}
