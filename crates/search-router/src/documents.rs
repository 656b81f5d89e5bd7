//! The gateway's own calls on a tenant's indexes and documents, for provisioning, moves and
//! offboarding: indexes created and deleted, documents read in key order, written and
//! deleted in batches. Every call is retried when the service throttles (429, 503: index
//! management is limited to about 12 creations a minute per search unit) after its
//! `Retry-After`, and on connection errors, a bounded number of times.
//!
//! Documents cross a shared index's boundary through the same rewrites as the tenant's own
//! calls (`rewrite`): keys namespaced on the way in, unwrapped on the way out, the
//! partition field set and never shown. What this module reads and writes are the tenant's
//! documents as the tenant sees them, whatever the placement.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::client::{Answer, SearchClient, ADMIN_API_VERSION};
use crate::rewrite::{batch_request, clean_answer, MAX_BATCH_ACTIONS};
use crate::target::Target;
use crate::SearchError;

/// Most bytes in one index batch (Azure's limit is 16 MB; a margin for the rewrite).
pub const MAX_BATCH_BYTES: usize = 15 * 1024 * 1024;

/// How throttled or failed calls are retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    /// The first wait when the service says nothing; doubled each time.
    pub base: Duration,
    /// The longest wait, whatever the service asks.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 8,
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

/// The wait an answer asks for (`retry-after-ms`, then `retry-after` in seconds).
fn asked_wait(answer: &Answer) -> Option<Duration> {
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    header("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| header("retry-after").map(Duration::from_secs_f64))
}

/// The failure of a call the service answered, with a sentence.
fn refused(what: &str, answer: &Answer) -> SearchError {
    let detail: String = String::from_utf8_lossy(&answer.body)
        .chars()
        .take(300)
        .collect();
    SearchError::Upstream(format!(
        "{what}: the service answered {}: {detail}",
        answer.status
    ))
}

impl SearchClient {
    /// [`SearchClient::call`], retried on 429, 503 and connection errors.
    pub async fn call_retrying(
        &self,
        target: &Target,
        method: Method,
        path: &str,
        body: Option<&Map<String, Value>>,
        retry: Retry,
    ) -> Result<Answer, SearchError> {
        let query = format!("api-version={ADMIN_API_VERSION}");
        let mut wait = retry.base;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .call(&target.upstream, method.clone(), path, &query, body)
                .await;
            let retry_in = match &result {
                Ok(answer)
                    if answer.status == StatusCode::TOO_MANY_REQUESTS
                        || answer.status == StatusCode::SERVICE_UNAVAILABLE =>
                {
                    Some(asked_wait(answer).unwrap_or(wait))
                }
                Err(SearchError::Upstream(_) | SearchError::UpstreamTimeout) => Some(wait),
                _ => None,
            };
            match retry_in {
                Some(pause) if attempt < retry.attempts => {
                    tracing::info!(
                        path,
                        attempt,
                        wait_ms = pause.as_millis() as u64,
                        "search service busy; retrying"
                    );
                    tokio::time::sleep(pause.min(retry.max)).await;
                    wait = (wait * 2).min(retry.max);
                }
                _ => return result,
            }
        }
    }

    /// Creates (or updates) the target's index with `definition` (idempotent).
    pub async fn put_index(
        &self,
        target: &Target,
        definition: &Map<String, Value>,
        retry: Retry,
    ) -> Result<(), SearchError> {
        let path = format!("/indexes('{}')", target.index);
        let answer = self
            .call_retrying(target, Method::PUT, &path, Some(definition), retry)
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(refused(&format!("index '{}'", target.index), &answer))
        }
    }

    /// Deletes the target's index; an absent one is not an error.
    pub async fn delete_index(&self, target: &Target, retry: Retry) -> Result<(), SearchError> {
        let path = format!("/indexes('{}')", target.index);
        let answer = self
            .call_retrying(target, Method::DELETE, &path, None, retry)
            .await?;
        if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(refused(
                &format!("deleting index '{}'", target.index),
                &answer,
            ))
        }
    }

    /// The tenant's documents in the target, in key order, after the key `after`: at most
    /// `size`, as the tenant sees them (keys unwrapped, gateway fields and scores removed).
    /// Paged on the key, never with `skip` (capped at 100,000 by Azure, and unstable while
    /// documents change). `None` when the index does not exist.
    pub async fn page(
        &self,
        target: &Target,
        after: Option<&str>,
        size: usize,
        retry: Retry,
    ) -> Result<Option<Vec<Map<String, Value>>>, SearchError> {
        let key = &target.key_field;
        let after_filter = after.map(|k| format!("{key} gt '{}'", k.replace('\'', "''")));
        let filter = match &target.boundary {
            Some(boundary) => Some(boundary.filter(after_filter.as_deref())?),
            None => after_filter,
        };
        let mut body = Map::new();
        body.insert("search".into(), json!("*"));
        body.insert("orderby".into(), json!(format!("{key} asc")));
        body.insert("top".into(), json!(size));
        if let Some(filter) = filter {
            body.insert("filter".into(), Value::String(filter));
        }
        let path = format!("/indexes('{}')/docs/search.post.search", target.index);
        let answer = self
            .call_retrying(target, Method::POST, &path, Some(&body), retry)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let mut found = answer
            .json()
            .filter(|_| answer.status.is_success())
            .ok_or_else(|| refused(&format!("reading index '{}'", target.index), &answer))?;
        let Some(Value::Array(mut docs)) = found.remove("value") else {
            return Ok(Some(Vec::new()));
        };
        let mut out = Vec::with_capacity(docs.len());
        for doc in &mut docs {
            clean_answer(doc, target.boundary.as_ref());
            if let Value::Object(doc) = std::mem::take(doc) {
                let mut doc = doc;
                doc.retain(|name, _| !name.starts_with("@search."));
                out.push(doc);
            }
        }
        Ok(Some(out))
    }

    /// Writes the tenant's `documents` (its own keys) into the target as they are (`upload`:
    /// a document replaces the stored one whole), in batches of at most 1,000 documents and
    /// 15 MB. Fails if the service refuses any document.
    pub async fn upload(
        &self,
        target: &Target,
        documents: &[Map<String, Value>],
        retry: Retry,
    ) -> Result<(), SearchError> {
        let actions = documents.iter().map(|doc| {
            let mut action = doc.clone();
            action.insert("@search.action".into(), json!("upload"));
            Value::Object(action)
        });
        self.batches(target, actions, retry).await
    }

    /// Deletes the tenant's documents with these keys from the target (absent ones are
    /// not an error).
    pub async fn delete_documents(
        &self,
        target: &Target,
        keys: &[String],
        retry: Retry,
    ) -> Result<(), SearchError> {
        let actions = keys.iter().map(|key| {
            let mut action = Map::new();
            action.insert("@search.action".into(), json!("delete"));
            action.insert(target.key_field.clone(), Value::String(key.clone()));
            Value::Object(action)
        });
        self.batches(target, actions, retry).await
    }

    async fn batches(
        &self,
        target: &Target,
        actions: impl Iterator<Item = Value>,
        retry: Retry,
    ) -> Result<(), SearchError> {
        let mut batch: Vec<Value> = Vec::new();
        let mut bytes = 0;
        for action in actions {
            let size = action.to_string().len();
            if !batch.is_empty()
                && (batch.len() >= MAX_BATCH_ACTIONS || bytes + size > MAX_BATCH_BYTES)
            {
                self.batch(target, std::mem::take(&mut batch), retry)
                    .await?;
                bytes = 0;
            }
            bytes += size;
            batch.push(action);
        }
        if !batch.is_empty() {
            self.batch(target, batch, retry).await?;
        }
        Ok(())
    }

    async fn batch(
        &self,
        target: &Target,
        actions: Vec<Value>,
        retry: Retry,
    ) -> Result<(), SearchError> {
        let mut body = Map::new();
        body.insert("value".into(), Value::Array(actions));
        let body = batch_request(&body, &target.key_field, target.boundary.as_ref())?;
        let path = format!("/indexes('{}')/docs/search.index", target.index);
        let answer = self
            .call_retrying(target, Method::POST, &path, Some(&body), retry)
            .await?;
        if answer.status == StatusCode::OK {
            return Ok(());
        }
        if answer.status == StatusCode::MULTI_STATUS {
            // Some documents were refused (or throttled: 503 per item near capacity).
            let failed: Vec<String> = answer
                .json()
                .and_then(|mut o| o.remove("value"))
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter(|r| r.get("status").and_then(Value::as_bool) == Some(false))
                .filter_map(|r| {
                    r.get("errorMessage")
                        .and_then(Value::as_str)
                        .map(ToOwned::to_owned)
                })
                .take(3)
                .collect();
            return Err(SearchError::Upstream(format!(
                "writing to index '{}': some documents were refused: {}",
                target.index,
                failed.join("; ")
            )));
        }
        Err(refused(
            &format!("writing to index '{}'", target.index),
            &answer,
        ))
    }

    /// How many documents of the tenant the target holds (`None`: no such index).
    pub async fn count(&self, target: &Target, retry: Retry) -> Result<Option<u64>, SearchError> {
        let mut body = Map::new();
        body.insert("search".into(), json!("*"));
        body.insert("count".into(), json!(true));
        body.insert("top".into(), json!(0));
        if let Some(boundary) = &target.boundary {
            body.insert("filter".into(), Value::String(boundary.filter(None)?));
        }
        let path = format!("/indexes('{}')/docs/search.post.search", target.index);
        let answer = self
            .call_retrying(target, Method::POST, &path, Some(&body), retry)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        answer
            .json()
            .filter(|_| answer.status.is_success())
            .and_then(|o| o.get("@odata.count").and_then(Value::as_u64))
            .map(Some)
            .ok_or_else(|| refused(&format!("counting index '{}'", target.index), &answer))
    }

    /// Removes every document of the tenant from the target: the index is deleted when the
    /// tenant owns it, its documents deleted page by page from a shared one. Returns the
    /// documents removed from a shared index (0 for a deleted index).
    pub async fn purge(&self, target: &Target, retry: Retry) -> Result<u64, SearchError> {
        if target.boundary.is_none() {
            self.delete_index(target, retry).await?;
            return Ok(0);
        }
        let mut removed = 0;
        loop {
            let Some(page) = self.page(target, None, MAX_BATCH_ACTIONS, retry).await? else {
                return Ok(removed);
            };
            if page.is_empty() {
                return Ok(removed);
            }
            let keys: Vec<String> = page
                .iter()
                .filter_map(|d| d.get(&target.key_field).and_then(Value::as_str))
                .map(ToOwned::to_owned)
                .collect();
            self.delete_documents(target, &keys, retry).await?;
            removed += keys.len() as u64;
        }
    }
}

/// Documents read or written per page of a copy or a comparison (Azure's batch limit).
pub const PAGE: usize = MAX_BATCH_ACTIONS;

/// What [`SearchClient::copy_page`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copied {
    /// `count` documents copied; the last one's key, to resume after.
    Page { count: u64, last_key: String },
    /// Nothing left after the key given.
    Done,
}

impl SearchClient {
    /// Copies the next page of the tenant's documents (after `after`, in key order) from
    /// `source` to `target` as they are.
    pub async fn copy_page(
        &self,
        source: &Target,
        target: &Target,
        after: Option<&str>,
        retry: Retry,
    ) -> Result<Copied, SearchError> {
        let page = self
            .page(source, after, PAGE, retry)
            .await?
            .unwrap_or_default();
        let Some(last_key) = page
            .last()
            .and_then(|d| d.get(&source.key_field))
            .and_then(Value::as_str)
            .map(ToOwned::to_owned)
        else {
            return Ok(Copied::Done);
        };
        self.upload(target, &page, retry).await?;
        Ok(Copied::Page {
            count: page.len() as u64,
            last_key,
        })
    }

    /// Makes `target` hold exactly the tenant's documents of `source`: both are read in key
    /// order side by side; a document missing from the target or different in any field is
    /// written again, one the source does not have is deleted. Returns how many were
    /// corrected (0: they were equal). Assumes both services order keys the same way
    /// (ordinal; document keys are ASCII letters, digits, `_`, `-` and `=`).
    pub async fn reconcile(
        &self,
        source: &Target,
        target: &Target,
        retry: Retry,
    ) -> Result<u64, SearchError> {
        let key = source.key_field.clone();
        let key_of =
            |doc: &Map<String, Value>| doc.get(&key).and_then(Value::as_str).map(ToOwned::to_owned);
        let mut src = Pager::new(source);
        let mut dst = Pager::new(target);
        let mut upload: Vec<Map<String, Value>> = Vec::new();
        let mut delete: Vec<String> = Vec::new();
        let mut fixed = 0;
        loop {
            let s = src.peek(self, retry, &key).await?;
            let t = dst.peek(self, retry, &key).await?;
            match (s, t) {
                (None, None) => break,
                (Some(doc), None) => {
                    upload.push(doc);
                    src.advance();
                }
                (None, Some(doc)) => {
                    if let Some(k) = key_of(&doc) {
                        delete.push(k);
                    }
                    dst.advance();
                }
                (Some(a), Some(b)) => {
                    let (ka, kb) = (key_of(&a), key_of(&b));
                    if ka < kb {
                        upload.push(a);
                        src.advance();
                    } else if ka > kb {
                        if let Some(k) = kb {
                            delete.push(k);
                        }
                        dst.advance();
                    } else {
                        if a != b {
                            upload.push(a);
                        }
                        src.advance();
                        dst.advance();
                    }
                }
            }
            if upload.len() >= PAGE {
                fixed += upload.len() as u64;
                self.upload(target, &std::mem::take(&mut upload), retry)
                    .await?;
            }
            if delete.len() >= PAGE {
                fixed += delete.len() as u64;
                self.delete_documents(target, &std::mem::take(&mut delete), retry)
                    .await?;
            }
        }
        if !upload.is_empty() {
            fixed += upload.len() as u64;
            self.upload(target, &upload, retry).await?;
        }
        if !delete.is_empty() {
            fixed += delete.len() as u64;
            self.delete_documents(target, &delete, retry).await?;
        }
        Ok(fixed)
    }
}

/// One side of a comparison, read page by page in key order.
struct Pager<'a> {
    target: &'a Target,
    page: std::collections::VecDeque<Map<String, Value>>,
    last: Option<String>,
    exhausted: bool,
}

impl<'a> Pager<'a> {
    fn new(target: &'a Target) -> Self {
        Self {
            target,
            page: std::collections::VecDeque::new(),
            last: None,
            exhausted: false,
        }
    }

    async fn peek(
        &mut self,
        search: &SearchClient,
        retry: Retry,
        key: &str,
    ) -> Result<Option<Map<String, Value>>, SearchError> {
        if self.page.is_empty() && !self.exhausted {
            let page = search
                .page(self.target, self.last.as_deref(), PAGE, retry)
                .await?
                .unwrap_or_default();
            if page.len() < PAGE {
                self.exhausted = true;
            }
            if let Some(last) = page.last().and_then(|d| d.get(key)).and_then(Value::as_str) {
                self.last = Some(last.to_owned());
            }
            self.page.extend(page);
        }
        Ok(self.page.front().cloned())
    }

    fn advance(&mut self) {
        self.page.pop_front();
    }
}
