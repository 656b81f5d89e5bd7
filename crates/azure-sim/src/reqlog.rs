//! The request log behind `GET /_sim/requests`: a bounded ring of what the emulator received,
//! with secrets replaced by a fingerprint so tests can check which key was sent without the
//! log holding it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// Headers whose values are secrets.
const SECRET_HEADERS: &[&str] = &["api-key", "authorization", "ocp-apim-subscription-key"];

/// The fingerprint shown in place of a secret: the first 8 hex characters of its SHA-256.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    hex::encode(&digest[..4])
}

/// How a secret header value appears in the log: `<masked:1a2b3c4d>`, or
/// `Bearer <masked:1a2b3c4d>` where the fingerprint covers the token only.
pub fn mask_secret(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            format!("{scheme} <masked:{}>", fingerprint(token.trim()))
        }
        _ => format!("<masked:{}>", fingerprint(value)),
    }
}

/// One received request.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub seq: u64,
    pub time: chrono::DateTime<chrono::Utc>,
    pub request_id: String,
    pub resource: String,
    pub method: String,
    /// Path below the resource's base URL, with the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl LoggedRequest {
    /// A header as logged (secrets masked), by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The JSON shape served by `GET /_sim/requests`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut headers = serde_json::Map::new();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), serde_json::Value::String(value.clone()));
        }
        let body = if self.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&self.body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&self.body).into_owned())
            })
        };
        serde_json::json!({
            "seq": self.seq,
            "time": self.time.to_rfc3339(),
            "request_id": self.request_id,
            "resource": self.resource,
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": body,
        })
    }
}

/// A bounded log of requests; the oldest entries are dropped first.
pub struct RequestLog {
    capacity: usize,
    entries: parking_lot::Mutex<VecDeque<LoggedRequest>>,
    seq: AtomicU64,
}

/// A filter for [`RequestLog::list`].
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct LogFilter {
    pub resource: Option<String>,
    /// Only entries with `seq` greater than this.
    pub since: Option<u64>,
    /// At most this many (the most recent ones).
    pub limit: Option<usize>,
}

impl RequestLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: parking_lot::Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            seq: AtomicU64::new(0),
        }
    }

    /// Records a request, masking secret headers.
    pub fn record(
        &self,
        request_id: &str,
        resource: &str,
        method: &http::Method,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) {
        if self.capacity == 0 {
            return;
        }
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes());
                let value = if SECRET_HEADERS.contains(&name.as_str()) {
                    mask_secret(&value)
                } else {
                    value.into_owned()
                };
                (name.as_str().to_owned(), value)
            })
            .collect();
        let entry = LoggedRequest {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time: chrono::Utc::now(),
            request_id: request_id.to_owned(),
            resource: resource.to_owned(),
            method: method.as_str().to_owned(),
            path: path.to_owned(),
            headers,
            body: body.clone(),
        };
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Entries matching `filter`, oldest first.
    pub fn list(&self, filter: &LogFilter) -> Vec<LoggedRequest> {
        let entries = self.entries.lock();
        let mut out: Vec<LoggedRequest> = entries
            .iter()
            .filter(|e| filter.resource.as_deref().is_none_or(|r| r == e.resource))
            .filter(|e| filter.since.is_none_or(|s| e.seq > s))
            .cloned()
            .collect();
        if let Some(limit) = filter.limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        out
    }

    pub fn clear(&self) {
        self.entries.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_fingerprinted_without_the_scheme() {
        assert_eq!(
            mask_secret("Bearer abc"),
            format!("Bearer <masked:{}>", fingerprint("abc"))
        );
        assert_eq!(
            mask_secret("abc"),
            format!("<masked:{}>", fingerprint("abc"))
        );
        assert_eq!(fingerprint("abc").len(), 8);
    }

    #[test]
    fn the_log_keeps_only_the_most_recent_entries() {
        let log = RequestLog::new(2);
        for _ in 0..3 {
            log.record(
                "id",
                "r",
                &http::Method::GET,
                "/",
                &HeaderMap::new(),
                &Bytes::new(),
            );
        }
        let seqs: Vec<u64> = log
            .list(&LogFilter::default())
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![2, 3]);
    }
}
