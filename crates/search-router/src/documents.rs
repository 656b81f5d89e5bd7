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

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use bytes::Bytes;

use crate::client::{json_bytes, Answer, SearchClient, ADMIN_API_VERSION};
use crate::rewrite::{batch_request, clean_answer, Boundary, MAX_BATCH_ACTIONS};
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
        body: Option<Bytes>,
        retry: Retry,
    ) -> Result<Answer, SearchError> {
        let query = format!("api-version={ADMIN_API_VERSION}");
        let mut wait = retry.base;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .call_bytes(&target.upstream, method.clone(), path, &query, body.clone())
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
            .call_retrying(
                target,
                Method::PUT,
                &path,
                Some(json_bytes(definition)?),
                retry,
            )
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
        self.page_of(target, after, size, None, retry).await
    }

    /// [`SearchClient::page`] with only the fields of `select` (comma-separated).
    async fn page_of(
        &self,
        target: &Target,
        after: Option<&str>,
        size: usize,
        select: Option<&str>,
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
        if let Some(select) = select {
            body.insert("select".into(), json!(select));
        }
        let path = format!("/indexes('{}')/docs/search.post.search", target.index);
        let answer = self
            .call_retrying(target, Method::POST, &path, Some(json_bytes(&body)?), retry)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(refused(
                &format!("reading index '{}'", target.index),
                &answer,
            ));
        }
        // A page can be megabytes of vectors: parsed on a blocking thread, not a worker.
        let boundary = target.boundary.clone();
        let body = answer.body.clone();
        let docs = self
            .off_worker(move || read_page(&body, boundary.as_ref()))
            .await?;
        docs.map(Some)
            .ok_or_else(|| refused(&format!("reading index '{}'", target.index), &answer))
    }

    /// Writes the tenant's `documents` (its own keys) into the target as they are (`upload`:
    /// a document replaces the stored one whole), in batches of at most 1,000 documents and
    /// 15 MB. Fails if the service refuses any document.
    pub async fn upload(
        &self,
        target: &Target,
        documents: Vec<Map<String, Value>>,
        retry: Retry,
    ) -> Result<(), SearchError> {
        let actions = documents
            .into_iter()
            .map(|mut doc| {
                doc.insert("@search.action".into(), json!("upload"));
                Value::Object(doc)
            })
            .collect();
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
        let actions = keys
            .iter()
            .map(|key| {
                let mut action = Map::new();
                action.insert("@search.action".into(), json!("delete"));
                action.insert(target.key_field.clone(), Value::String(key.clone()));
                Value::Object(action)
            })
            .collect();
        self.batches(target, actions, retry).await
    }

    /// Sends `actions` in as many batches as Azure's limits need. The batches are cut and
    /// serialized on a blocking thread (a page of vectors is megabytes of JSON).
    async fn batches(
        &self,
        target: &Target,
        actions: Vec<Value>,
        retry: Retry,
    ) -> Result<(), SearchError> {
        let (key_field, boundary) = (target.key_field.clone(), target.boundary.clone());
        let bodies = self
            .off_worker(move || batch_bodies(actions, &key_field, boundary.as_ref()))
            .await??;
        for body in bodies {
            self.batch(target, body, retry).await?;
        }
        Ok(())
    }

    async fn batch(&self, target: &Target, body: Bytes, retry: Retry) -> Result<(), SearchError> {
        let path = format!("/indexes('{}')/docs/search.index", target.index);
        let answer = self
            .call_retrying(target, Method::POST, &path, Some(body), retry)
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
            .call_retrying(target, Method::POST, &path, Some(json_bytes(&body)?), retry)
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
            // Only the keys are read: the documents themselves can be megabytes of vectors.
            let Some(page) = self
                .page_of(
                    target,
                    None,
                    MAX_BATCH_ACTIONS,
                    Some(&target.key_field),
                    retry,
                )
                .await?
            else {
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
        let count = page.len() as u64;
        self.upload(target, page, retry).await?;
        Ok(Copied::Page { count, last_key })
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
        let mut src = Pager::new(source);
        let mut dst = Pager::new(target);
        let mut fixed = 0;
        loop {
            // Both sides' next pages are read at once.
            let (s, t) = tokio::join!(src.fill(self, retry, &key), dst.fill(self, retry, &key));
            s?;
            t?;
            if src.page.is_empty() && src.exhausted && dst.page.is_empty() && dst.exhausted {
                break;
            }
            // Comparing (and dropping) megabytes of documents runs off the workers.
            let (mut a, more_a) = (std::mem::take(&mut src.page), !src.exhausted);
            let (mut b, more_b) = (std::mem::take(&mut dst.page), !dst.exhausted);
            let field = key.clone();
            let (a, b, differences) = self
                .off_worker(move || {
                    let found = differences(&mut a, more_a, &mut b, more_b, &field);
                    (a, b, found)
                })
                .await?;
            src.page = a;
            dst.page = b;
            let Differences { upload, delete } = differences;
            if !upload.is_empty() {
                fixed += upload.len() as u64;
                self.upload(target, upload, retry).await?;
            }
            if !delete.is_empty() {
                fixed += delete.len() as u64;
                self.delete_documents(target, &delete, retry).await?;
            }
        }
        Ok(fixed)
    }
}

impl SearchClient {
    /// Runs CPU-heavy work (the JSON of a page) off the async workers: on the client's
    /// [`crate::Offload`], else on tokio's blocking threads.
    async fn off_worker<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, SearchError> {
        let stopped = |what: &str| SearchError::Upstream(format!("page work stopped: {what}"));
        let Some(offload) = &self.offload else {
            return tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| stopped(&e.to_string()));
        };
        let (done, result) = tokio::sync::oneshot::channel();
        let queued = offload.run(Box::new(move || {
            let _ = done.send(work());
        }));
        if !queued {
            return Err(stopped("no thread to run it"));
        }
        result
            .await
            .map_err(|_| stopped("it ended without an answer"))
    }
}

/// The documents of a search answer as the tenant sees them (keys unwrapped, gateway fields,
/// scores and other annotations removed); `None` when the answer is not a JSON object.
fn read_page(body: &[u8], boundary: Option<&Boundary>) -> Option<Vec<Map<String, Value>>> {
    let Ok(Value::Object(mut found)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let Some(Value::Array(mut docs)) = found.remove("value") else {
        return Some(Vec::new());
    };
    let mut out = Vec::with_capacity(docs.len());
    for doc in &mut docs {
        clean_answer(doc, boundary);
        if let Value::Object(mut doc) = std::mem::take(doc) {
            doc.retain(|name, _| !name.starts_with("@search."));
            out.push(doc);
        }
    }
    Some(out)
}

/// Index batch bodies for `actions`: at most [`MAX_BATCH_ACTIONS`] actions and
/// [`MAX_BATCH_BYTES`] each, rewritten for the target (keys wrapped, tenant field set). Each
/// action is serialized once; a body is the actions' JSON joined.
fn batch_bodies(
    actions: Vec<Value>,
    key_field: &str,
    boundary: Option<&Boundary>,
) -> Result<Vec<Bytes>, SearchError> {
    let mut texts: Vec<Vec<u8>> = Vec::with_capacity(actions.len());
    let mut actions = actions.into_iter().peekable();
    while actions.peek().is_some() {
        let mut chunk = Map::new();
        let part: Vec<Value> = actions.by_ref().take(MAX_BATCH_ACTIONS).collect();
        chunk.insert("value".into(), Value::Array(part));
        if let Some(Value::Array(rewritten)) =
            batch_request(&chunk, key_field, boundary)?.remove("value")
        {
            for action in &rewritten {
                texts.push(
                    serde_json::to_vec(action).map_err(|e| SearchError::Upstream(e.to_string()))?,
                );
            }
        }
    }
    const OPEN: &[u8] = b"{\"value\":[";
    const CLOSE: &[u8] = b"]}";
    let mut bodies = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut count = 0;
    for text in texts {
        if count > 0
            && (count >= MAX_BATCH_ACTIONS
                || body.len() + 1 + text.len() + CLOSE.len() > MAX_BATCH_BYTES)
        {
            body.extend_from_slice(CLOSE);
            bodies.push(Bytes::from(std::mem::take(&mut body)));
            count = 0;
        }
        if count == 0 {
            body.extend_from_slice(OPEN);
        } else {
            body.push(b',');
        }
        body.extend_from_slice(&text);
        count += 1;
    }
    if count > 0 {
        body.extend_from_slice(CLOSE);
        bodies.push(Bytes::from(body));
    }
    Ok(bodies)
}

/// What makes a target equal to its source.
#[derive(Debug, Default, PartialEq)]
struct Differences {
    /// Missing from the target, or different there: written again.
    upload: Vec<Map<String, Value>>,
    /// Keys the source does not have: deleted from the target.
    delete: Vec<String>,
}

/// Merges two runs of documents in key order (`source`, `target`) as far as both are known:
/// a side whose run is used up while it has `more` to read stops the merge, and what is left
/// of both stays for the next pages. Equal documents are dropped.
fn differences(
    source: &mut VecDeque<Map<String, Value>>,
    more_source: bool,
    target: &mut VecDeque<Map<String, Value>>,
    more_target: bool,
    key: &str,
) -> Differences {
    let mut found = Differences::default();
    loop {
        let order = match (source.front(), target.front()) {
            (None, _) if more_source => break,
            (_, None) if more_target => break,
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => match key_of(a, key).cmp(&key_of(b, key)) {
                Ordering::Equal if a == b => {
                    source.pop_front();
                    target.pop_front();
                    continue;
                }
                order => order,
            },
        };
        match order {
            Ordering::Less | Ordering::Equal => {
                if order == Ordering::Equal {
                    target.pop_front();
                }
                found.upload.extend(source.pop_front());
            }
            Ordering::Greater => found.delete.extend(
                target
                    .pop_front()
                    .as_ref()
                    .and_then(|d| key_of(d, key))
                    .map(str::to_owned),
            ),
        }
    }
    found
}

/// The key of a document read back.
fn key_of<'d>(doc: &'d Map<String, Value>, key: &str) -> Option<&'d str> {
    doc.get(key).and_then(Value::as_str)
}

/// One side of a comparison, read page by page in key order.
struct Pager<'a> {
    target: &'a Target,
    page: VecDeque<Map<String, Value>>,
    last: Option<String>,
    exhausted: bool,
}

impl<'a> Pager<'a> {
    fn new(target: &'a Target) -> Self {
        Self {
            target,
            page: VecDeque::new(),
            last: None,
            exhausted: false,
        }
    }

    /// Reads the next page when the one in hand is used up.
    async fn fill(
        &mut self,
        search: &SearchClient,
        retry: Retry,
        key: &str,
    ) -> Result<(), SearchError> {
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(i: usize, text: &str) -> Value {
        json!({"@search.action": "upload", "id": format!("d{i:05}"), "text": text})
    }

    fn parsed(body: &Bytes) -> Vec<Value> {
        let value: Value = serde_json::from_slice(body).expect("a body is JSON");
        value["value"].as_array().expect("a value array").clone()
    }

    fn doc(id: &str, v: u32) -> Map<String, Value> {
        match json!({"id": id, "v": v}) {
            Value::Object(doc) => doc,
            _ => unreachable!(),
        }
    }

    #[test]
    fn differences_name_what_to_write_and_delete_and_wait_for_the_next_page() {
        let mut source: VecDeque<_> = [doc("a", 1), doc("b", 1), doc("d", 2), doc("e", 1)].into();
        let mut target: VecDeque<_> = [doc("a", 1), doc("c", 1), doc("d", 1)].into();
        // The target may have more after "d": "e" is not judged yet.
        let found = differences(&mut source, false, &mut target, true, "id");
        assert_eq!(
            found,
            Differences {
                upload: vec![doc("b", 1), doc("d", 2)],
                delete: vec!["c".into()],
            }
        );
        assert_eq!(source, VecDeque::from([doc("e", 1)]));
        assert!(target.is_empty());
        // The target's next page: "e" equal, "f" only in the target.
        target.extend([doc("e", 1), doc("f", 1)]);
        let found = differences(&mut source, false, &mut target, false, "id");
        assert_eq!(
            found,
            Differences {
                upload: vec![],
                delete: vec!["f".into()],
            }
        );
        assert!(source.is_empty() && target.is_empty());
    }

    #[test]
    fn equal_sides_have_no_differences() {
        let mut source: VecDeque<_> = (0..50).map(|i| doc(&format!("k{i:03}"), i)).collect();
        let mut target = source.clone();
        let found = differences(&mut source, false, &mut target, false, "id");
        assert_eq!(found, Differences::default());
    }

    #[test]
    fn batches_hold_at_most_a_thousand_actions_in_order() {
        let actions: Vec<Value> = (0..2_345).map(|i| upload(i, "x")).collect();
        let bodies = batch_bodies(actions.clone(), "id", None).expect("bodies");
        let sizes: Vec<usize> = bodies.iter().map(|b| parsed(b).len()).collect();
        assert_eq!(sizes, vec![1_000, 1_000, 345]);
        let sent: Vec<Value> = bodies.iter().flat_map(parsed).collect();
        assert_eq!(sent, actions);
    }

    #[test]
    fn batches_stay_under_the_byte_limit() {
        // 40 actions of 1 MB: 14 fit in 15 MB.
        let big = "a".repeat(1024 * 1024);
        let actions: Vec<Value> = (0..40).map(|i| upload(i, &big)).collect();
        let bodies = batch_bodies(actions.clone(), "id", None).expect("bodies");
        assert!(bodies.len() >= 3, "{} bodies", bodies.len());
        for body in &bodies {
            assert!(body.len() <= MAX_BATCH_BYTES, "{} bytes", body.len());
        }
        let sent: Vec<Value> = bodies.iter().flat_map(parsed).collect();
        assert_eq!(sent, actions);
    }

    #[test]
    fn batches_for_a_shared_index_carry_the_tenant_and_wrapped_keys() {
        let boundary = Boundary::new(uuid::Uuid::new_v4(), "id").expect("boundary");
        let bodies = batch_bodies(vec![upload(1, "x")], "id", Some(&boundary)).expect("bodies");
        let sent = parsed(&bodies[0]);
        let id = sent[0]["id"].as_str().expect("a key");
        assert_eq!(boundary.unwrap_key(id), Some("d00001"), "{id}");
        assert_eq!(sent[0][crate::schema::PARTITION_FIELD], boundary.code());
    }

    #[test]
    fn a_page_reads_back_as_the_tenant_wrote_it() {
        let boundary = Boundary::new(uuid::Uuid::new_v4(), "id").expect("boundary");
        let bodies = batch_bodies(vec![upload(7, "hello")], "id", Some(&boundary)).expect("bodies");
        let mut stored = parsed(&bodies[0]).remove(0);
        stored["@search.score"] = json!(1.0);
        let object = stored.as_object_mut().expect("object");
        object.remove("@search.action");
        let answer = serde_json::to_vec(&json!({"value": [stored]})).expect("json");
        let docs = read_page(&answer, Some(&boundary)).expect("a page");
        assert_eq!(
            Value::Object(docs[0].clone()),
            json!({"id": "d00007", "text": "hello"})
        );
    }
}
