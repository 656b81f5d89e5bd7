//! One index's documents with their analysed text and BM25 statistics, and the index batch
//! operations (upload, merge, mergeOrUpload, delete).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::analysis::AnalyzedField;
use super::schema::{valid_key, Schema};

/// Most actions in one index batch.
pub const MAX_BATCH_ACTIONS: usize = 1000;

/// A stored document.
#[derive(Debug, Clone)]
pub struct StoredDoc {
    /// Insertion order: the tie-breaker when scores are equal.
    pub seq: u64,
    /// The document's fields (validated; nulls dropped).
    pub fields: Map<String, Value>,
    /// Searchable text fields by path.
    pub analyzed: HashMap<String, AnalyzedField>,
}

/// Per-field statistics for BM25.
#[derive(Debug, Clone, Default)]
pub struct FieldStats {
    /// Documents with at least one token in the field.
    pub docs: u64,
    /// Sum of field lengths.
    pub total_len: u64,
    /// Documents containing each term.
    pub df: HashMap<String, u64>,
}

impl FieldStats {
    pub fn avg_len(&self) -> f64 {
        if self.docs == 0 {
            1.0
        } else {
            #[expect(clippy::cast_precision_loss, reason = "statistics")]
            let avg = self.total_len as f64 / self.docs as f64;
            avg.max(1.0)
        }
    }
}

/// An index: its schema and its documents.
pub struct Index {
    pub schema: Schema,
    /// Bumped on every change of the definition; sent as `@odata.etag`.
    pub etag: u64,
    docs: HashMap<String, StoredDoc>,
    next_seq: u64,
    stats: HashMap<String, FieldStats>,
    searchable: Vec<String>,
}

/// The outcome of one action of a batch, as Azure reports it.
#[derive(Debug, Clone)]
pub struct ItemResult {
    pub key: String,
    pub status_code: u16,
    pub error: Option<String>,
}

impl ItemResult {
    pub fn to_json(&self) -> Value {
        json!({
            "key": self.key,
            "status": self.error.is_none(),
            "errorMessage": self.error,
            "statusCode": self.status_code,
        })
    }
}

/// Every value at `path`, flattening collections along the way.
pub fn values_at<'a>(fields: &'a Map<String, Value>, path: &str) -> Vec<&'a Value> {
    let mut current: Vec<&Value> = Vec::new();
    let mut segments = path.split('/');
    let Some(first) = segments.next() else {
        return current;
    };
    if let Some(v) = fields.get(first) {
        current.push(v);
    }
    for seg in segments {
        let mut next = Vec::new();
        for v in current {
            match v {
                Value::Object(o) => next.extend(o.get(seg)),
                Value::Array(items) => {
                    next.extend(items.iter().filter_map(|i| i.as_object()?.get(seg)));
                }
                _ => {}
            }
        }
        current = next;
    }
    let mut flat = Vec::new();
    for v in current {
        match v {
            Value::Array(items) => flat.extend(items.iter()),
            Value::Null => {}
            other => flat.push(other),
        }
    }
    flat
}

impl Index {
    pub fn new(schema: Schema) -> Self {
        let searchable = schema.searchable_text_fields();
        Self {
            schema,
            etag: 1,
            docs: HashMap::new(),
            next_seq: 0,
            stats: HashMap::new(),
            searchable,
        }
    }

    /// Replaces the schema (fields were only added) and re-analyses every document.
    pub fn redefine(&mut self, schema: Schema) {
        let docs: Vec<StoredDoc> = self.docs.drain().map(|(_, d)| d).collect();
        let etag = self.etag + 1;
        let next_seq = self.next_seq;
        *self = Index::new(schema);
        self.etag = etag;
        self.next_seq = next_seq;
        for doc in docs {
            self.insert(doc.fields, Some(doc.seq));
        }
    }

    /// The definition as returned by GET, with its etag.
    pub fn definition(&self) -> Value {
        let mut def = self.schema.definition.clone();
        if let Some(obj) = def.as_object_mut() {
            obj.insert(
                "@odata.etag".into(),
                Value::String(format!("\"0x{:X}\"", self.etag)),
            );
        }
        def
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&StoredDoc> {
        self.docs.get(key)
    }

    /// Every document, in insertion order.
    pub fn docs(&self) -> Vec<&StoredDoc> {
        let mut all: Vec<&StoredDoc> = self.docs.values().collect();
        all.sort_by_key(|d| d.seq);
        all
    }

    /// Paths of the searchable text fields.
    pub fn searchable_fields(&self) -> &[String] {
        &self.searchable
    }

    pub fn field_stats(&self, path: &str) -> Option<&FieldStats> {
        self.stats.get(path)
    }

    /// Approximate storage size in bytes, for `search.stats`.
    pub fn storage_size(&self) -> usize {
        self.docs
            .values()
            .map(|d| serde_json::to_vec(&d.fields).map_or(0, |v| v.len()))
            .sum()
    }

    fn analyze(&self, fields: &Map<String, Value>) -> HashMap<String, AnalyzedField> {
        self.searchable
            .iter()
            .map(|path| {
                let values = values_at(fields, path);
                let texts = values.iter().filter_map(|v| v.as_str());
                (path.clone(), AnalyzedField::from_values(texts))
            })
            .collect()
    }

    fn insert(&mut self, fields: Map<String, Value>, seq: Option<u64>) {
        let key = fields
            .get(&self.schema.key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let seq = seq.unwrap_or_else(|| {
            self.next_seq += 1;
            self.next_seq
        });
        self.next_seq = self.next_seq.max(seq);
        let analyzed = self.analyze(&fields);
        for (path, field) in &analyzed {
            let stats = self.stats.entry(path.clone()).or_default();
            if field.len > 0 {
                stats.docs += 1;
                stats.total_len += u64::from(field.len);
            }
            for term in field.postings.keys() {
                *stats.df.entry(term.clone()).or_default() += 1;
            }
        }
        self.docs.insert(
            key,
            StoredDoc {
                seq,
                fields,
                analyzed,
            },
        );
    }

    fn remove(&mut self, key: &str) -> Option<StoredDoc> {
        let doc = self.docs.remove(key)?;
        for (path, field) in &doc.analyzed {
            if let Some(stats) = self.stats.get_mut(path) {
                if field.len > 0 {
                    stats.docs = stats.docs.saturating_sub(1);
                    stats.total_len = stats.total_len.saturating_sub(u64::from(field.len));
                }
                for term in field.postings.keys() {
                    if let Some(n) = stats.df.get_mut(term) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            stats.df.remove(term);
                        }
                    }
                }
            }
        }
        Some(doc)
    }

    /// Applies one index batch; one result per action, in order.
    pub fn apply_batch(&mut self, actions: &[Value]) -> Vec<ItemResult> {
        actions.iter().map(|a| self.apply_action(a)).collect()
    }

    fn apply_action(&mut self, action: &Value) -> ItemResult {
        let fail = |key: &str, code: u16, message: String| ItemResult {
            key: key.to_owned(),
            status_code: code,
            error: Some(message),
        };
        let Some(doc) = action.as_object() else {
            return fail("", 400, "Each action must be a JSON object.".into());
        };
        let key_field = self.schema.key.clone();
        let key = match doc.get(&key_field) {
            Some(Value::String(k)) => k.clone(),
            _ => {
                return fail(
                    "",
                    400,
                    format!("Document key cannot be missing or empty: the key field '{key_field}' must be a string."),
                )
            }
        };
        if !valid_key(&key) {
            return fail(
                &key,
                400,
                format!("Invalid document key: '{key}'. Keys can only contain letters, digits, underscore (_), dash (-), or equal sign (=), and cannot start with an underscore."),
            );
        }
        let verb = doc
            .get("@search.action")
            .and_then(Value::as_str)
            .unwrap_or("upload");
        if verb == "delete" {
            self.remove(&key);
            return ItemResult {
                key,
                status_code: 200,
                error: None,
            };
        }
        if !matches!(verb, "upload" | "merge" | "mergeOrUpload") {
            return fail(&key, 400, format!("Unknown indexing action '{verb}'."));
        }
        let checked = match self.schema.check_document(doc) {
            Ok(c) => c,
            Err(e) => return fail(&key, 400, e.0),
        };
        let existing = self.docs.contains_key(&key);
        match (verb, existing) {
            ("merge", false) => fail(&key, 404, "Document not found.".into()),
            ("upload", _) | ("mergeOrUpload", false) => {
                let seq = self.remove(&key).map(|d| d.seq);
                let fields = checked.into_iter().filter(|(_, v)| !v.is_null()).collect();
                self.insert(fields, seq);
                ItemResult {
                    key,
                    status_code: if existing { 200 } else { 201 },
                    error: None,
                }
            }
            _ => {
                let Some(old) = self.remove(&key) else {
                    return fail(&key, 404, "Document not found.".into());
                };
                let mut fields = old.fields;
                for (name, value) in checked {
                    if value.is_null() {
                        fields.remove(&name);
                    } else {
                        fields.insert(name, value);
                    }
                }
                self.insert(fields, Some(old.seq));
                ItemResult {
                    key,
                    status_code: 200,
                    error: None,
                }
            }
        }
    }

    /// The persisted form: definition, etag and documents in insertion order.
    pub fn to_json(&self) -> Value {
        let docs: Vec<&Map<String, Value>> = self.docs().into_iter().map(|d| &d.fields).collect();
        json!({
            "definition": self.schema.definition,
            "etag": self.etag,
            "documents": docs,
        })
    }

    /// Restores an index saved by [`Index::to_json`].
    pub fn from_json(value: &Value) -> Option<Index> {
        let definition = value.get("definition")?;
        let name = definition.get("name")?.as_str()?;
        let schema = Schema::parse(name, definition).ok()?;
        let mut index = Index::new(schema);
        index.etag = value.get("etag").and_then(Value::as_u64).unwrap_or(1);
        for doc in value.get("documents")?.as_array()? {
            if let Some(fields) = doc.as_object() {
                index.insert(fields.clone(), None);
            }
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        let def = json!({"name": "hotels", "fields": [
            {"name": "id", "type": "Edm.String", "key": true},
            {"name": "name", "type": "Edm.String"},
            {"name": "tags", "type": "Collection(Edm.String)"},
            {"name": "rooms", "type": "Collection(Edm.ComplexType)", "fields": [
                {"name": "description", "type": "Edm.String"}
            ]}
        ]});
        Index::new(Schema::parse("hotels", &def).unwrap())
    }

    #[test]
    fn batch_actions_follow_azure_statuses() {
        let mut ix = index();
        let results = ix.apply_batch(&[
            json!({"@search.action": "upload", "id": "1", "name": "Blue Hotel"}),
            json!({"@search.action": "upload", "id": "1", "name": "Blue Hotel 2"}),
            json!({"@search.action": "merge", "id": "2", "name": "x"}),
            json!({"@search.action": "mergeOrUpload", "id": "2", "name": "Red"}),
            json!({"@search.action": "merge", "id": "2", "tags": ["a"]}),
            json!({"@search.action": "delete", "id": "3"}),
            json!({"@search.action": "upload", "id": "bad key!"}),
            json!({"@search.action": "upload", "id": "4", "nope": 1}),
            json!({"@search.action": "upload", "name": "no key"}),
        ]);
        let codes: Vec<u16> = results.iter().map(|r| r.status_code).collect();
        assert_eq!(codes, [201, 200, 404, 201, 200, 200, 400, 400, 400]);
        assert_eq!(ix.len(), 2);
        let two = ix.get("2").unwrap();
        assert_eq!(two.fields["name"], "Red");
        assert_eq!(two.fields["tags"], json!(["a"]));
    }

    #[test]
    fn statistics_follow_updates_and_deletes() {
        let mut ix = index();
        ix.apply_batch(&[
            json!({"id": "1", "name": "blue sea", "rooms": [{"description": "sea view"}]}),
            json!({"id": "2", "name": "blue sky"}),
        ]);
        assert_eq!(ix.field_stats("name").unwrap().df["blue"], 2);
        assert_eq!(ix.field_stats("rooms/description").unwrap().df["view"], 1);
        ix.apply_batch(&[json!({"@search.action": "delete", "id": "1"})]);
        let stats = ix.field_stats("name").unwrap();
        assert_eq!((stats.docs, stats.total_len, stats.df["blue"]), (1, 2, 1));
        assert!(!stats.df.contains_key("sea"));
    }

    #[test]
    fn values_at_walks_complex_collections() {
        let doc = json!({"rooms": [{"d": "a"}, {"d": "b"}, {"x": 1}], "tags": ["t1", "t2"]});
        let doc = doc.as_object().unwrap();
        assert_eq!(values_at(doc, "rooms/d"), [&json!("a"), &json!("b")]);
        assert_eq!(values_at(doc, "tags").len(), 2);
        assert!(values_at(doc, "missing").is_empty());
    }
}
