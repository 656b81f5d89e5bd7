//! Index definitions: the shared-index schema the gateway provisions (the template plus the
//! partition field) and the schema a caller is shown (without any gateway field).

use serde_json::{json, Map, Value};

/// Field names starting with this are the gateway's; templates cannot define them and callers
/// cannot name them (compared case-insensitively).
pub const RESERVED_PREFIX: &str = "bulkhead";

/// The partition field of a shared index: filterable only, never retrievable, searchable,
/// facetable or sortable.
pub const PARTITION_FIELD: &str = "bulkheadTenant";

/// Whether `name` (a field name or one segment of a path) is reserved for the gateway.
pub fn is_reserved(name: &str) -> bool {
    name.len() >= RESERVED_PREFIX.len()
        && name.as_bytes()[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes())
}

/// The name of the template's key field.
pub fn key_field(definition: &Map<String, Value>) -> Option<String> {
    definition
        .get("fields")?
        .as_array()?
        .iter()
        .find(|f| f.get("key").and_then(Value::as_bool) == Some(true))?
        .get("name")?
        .as_str()
        .map(ToOwned::to_owned)
}

/// The index definition to PUT on the service: the template's definition named `name`, and for
/// a shared index the partition field added and the key made filterable (lookups in a shared
/// index are filtered searches).
pub fn physical_definition(
    template: &Map<String, Value>,
    name: &str,
    shared: bool,
) -> Map<String, Value> {
    let mut def = template.clone();
    def.insert("name".into(), Value::String(name.to_owned()));
    for skip in ["id", "created_at", "@odata.context", "@odata.etag"] {
        def.remove(skip);
    }
    if shared {
        if let Some(Value::Array(fields)) = def.get_mut("fields") {
            fields.retain(|f| {
                !f.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(is_reserved)
            });
            for field in fields.iter_mut() {
                if field.get("key").and_then(Value::as_bool) == Some(true) {
                    if let Some(obj) = field.as_object_mut() {
                        obj.insert("filterable".into(), Value::Bool(true));
                    }
                }
            }
            fields.push(json!({
                "name": PARTITION_FIELD,
                "type": "Edm.String",
                "key": false,
                "filterable": true,
                "retrievable": false,
                "searchable": false,
                "facetable": false,
                "sortable": false,
            }));
        }
    }
    def
}

/// The definition a caller sees for its logical index: named by the logical name, without
/// gateway fields or registry bookkeeping.
pub fn caller_view(template: &Map<String, Value>, logical: &str) -> Map<String, Value> {
    let mut def = physical_definition(template, logical, false);
    if let Some(Value::Array(fields)) = def.get_mut("fields") {
        fields.retain(|f| {
            !f.get("name")
                .and_then(Value::as_str)
                .is_some_and(is_reserved)
        });
    }
    def
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn template() -> Map<String, Value> {
        json!({"fields": [
            {"name": "id", "type": "Edm.String", "key": true, "filterable": false},
            {"name": "title", "type": "Edm.String", "searchable": true}
        ], "suggesters": [{"name": "sg", "sourceFields": ["title"]}],
          "id": "0000", "created_at": "2026-01-01T00:00:00Z"})
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn the_shared_schema_has_a_hidden_filterable_partition_field() {
        let def = physical_definition(&template(), "shared-docs", true);
        assert_eq!(def["name"], "shared-docs");
        assert!(def.get("id").is_none() && def.get("created_at").is_none());
        let fields = def["fields"].as_array().unwrap();
        let tenant = fields
            .iter()
            .find(|f| f["name"] == PARTITION_FIELD)
            .unwrap();
        assert_eq!(tenant["filterable"], true);
        for flag in ["retrievable", "searchable", "facetable", "sortable"] {
            assert_eq!(tenant[flag], false, "{flag}");
        }
        assert_eq!(fields[0]["filterable"], true, "the key is filterable");
        assert_eq!(def["suggesters"], template()["suggesters"]);
    }

    #[test]
    fn callers_never_see_gateway_fields() {
        let shared = physical_definition(&template(), "x", true);
        let view = caller_view(&shared, "docs");
        assert_eq!(view["name"], "docs");
        let text = Value::Object(view).to_string();
        assert!(!text.to_lowercase().contains("bulkhead"), "{text}");
    }

    #[test]
    fn reserved_names_are_matched_without_case() {
        for name in ["bulkheadTenant", "BULKHEADtenant", "bulkhead", "BulkHeadX"] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["bulkhea", "tenant", "xbulkhead", "é"] {
            assert!(!is_reserved(name), "{name}");
        }
        assert_eq!(key_field(&template()).as_deref(), Some("id"));
    }
}
