//! Index definitions: parsing and validating the JSON an index is created with, the defaults
//! Azure fills in, and checking documents against the fields.

use std::collections::HashMap;

use chrono::SecondsFormat;
use serde_json::{Map, Value};

/// The element type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    String,
    Int32,
    Int64,
    Double,
    /// Only as `Collection(Edm.Single)`: a vector.
    Single,
    Boolean,
    DateTimeOffset,
    GeographyPoint,
    Complex,
}

/// `Edm.X` or `Collection(Edm.X)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldType {
    pub scalar: Scalar,
    pub collection: bool,
}

impl FieldType {
    fn parse(text: &str) -> Option<Self> {
        let (inner, collection) = match text
            .strip_prefix("Collection(")
            .and_then(|t| t.strip_suffix(')'))
        {
            Some(inner) => (inner, true),
            None => (text, false),
        };
        let scalar = match inner {
            "Edm.String" => Scalar::String,
            "Edm.Int32" => Scalar::Int32,
            "Edm.Int64" => Scalar::Int64,
            "Edm.Double" => Scalar::Double,
            "Edm.Single" if collection => Scalar::Single,
            "Edm.Boolean" => Scalar::Boolean,
            "Edm.DateTimeOffset" => Scalar::DateTimeOffset,
            "Edm.GeographyPoint" => Scalar::GeographyPoint,
            "Edm.ComplexType" => Scalar::Complex,
            _ => return None,
        };
        Some(Self { scalar, collection })
    }

    pub fn is_vector(self) -> bool {
        self.scalar == Scalar::Single
    }

    pub fn is_text(self) -> bool {
        self.scalar == Scalar::String
    }
}

/// One field of an index (possibly a sub-field of a complex field).
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub key: bool,
    pub searchable: bool,
    pub filterable: bool,
    pub retrievable: bool,
    pub sortable: bool,
    pub facetable: bool,
    pub dimensions: Option<usize>,
    pub vector_profile: Option<String>,
    /// Sub-fields of an `Edm.ComplexType` field.
    pub fields: Vec<Field>,
}

/// Vector similarity of a vector profile's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Cosine,
    Euclidean,
    DotProduct,
}

/// A suggester: the fields suggest and autocomplete look at.
#[derive(Debug, Clone)]
pub struct Suggester {
    pub name: String,
    pub source_fields: Vec<String>,
}

/// A validated index definition.
#[derive(Debug, Clone)]
pub struct Schema {
    pub name: String,
    pub fields: Vec<Field>,
    pub key: String,
    pub suggesters: Vec<Suggester>,
    /// Vector profile name to the metric of its algorithm.
    pub profiles: HashMap<String, Metric>,
    /// The definition as Azure would return it (defaults filled in), without the etag.
    pub definition: Value,
}

/// Why an index definition or a document was refused (a 400).
#[derive(Debug, Clone)]
pub struct Invalid(pub String);

fn invalid<T>(message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(message.into()))
}

/// Index names: lowercase letters, digits and dashes, starting with a letter or digit, no
/// double dash, at most 128 characters.
pub fn valid_index_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=128).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(|c| *c != b'-')
        && b.last().is_some_and(|c| *c != b'-')
        && !name.contains("--")
}

fn valid_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
        && !name.starts_with("azureSearch")
}

/// Document keys: letters, digits, `_`, `-`, `=`; at most 1024 characters; no leading `_`.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '='))
}

fn flag(obj: &Map<String, Value>, name: &str, default: bool) -> Result<bool, Invalid> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => invalid(format!("'{name}' must be a boolean.")),
    }
}

impl Schema {
    /// Validates `definition` (the body of a create or update) for index `name`.
    pub fn parse(name: &str, definition: &Value) -> Result<Schema, Invalid> {
        let Some(obj) = definition.as_object() else {
            return invalid("The index definition must be a JSON object.");
        };
        if let Some(given) = obj.get("name").and_then(Value::as_str) {
            if given != name {
                return invalid(format!(
                    "The index name '{given}' in the body does not match the name '{name}' in the URL."
                ));
            }
        }
        if !valid_index_name(name) {
            return invalid(format!(
                "Index name '{name}' is invalid: use 2 to 128 lowercase letters, digits or dashes, starting and ending with a letter or digit, without consecutive dashes."
            ));
        }
        let profiles = vector_profiles(obj)?;
        let Some(Value::Array(raw_fields)) = obj.get("fields") else {
            return invalid("The index must have a 'fields' array.");
        };
        let mut normalized = Vec::new();
        let fields = parse_fields(raw_fields, &profiles, true, &mut normalized)?;
        let keys: Vec<&Field> = fields.iter().filter(|f| f.key).collect();
        let key = match keys.as_slice() {
            [k] => k.name.clone(),
            [] => return invalid("The index must have exactly one key field; none was found."),
            _ => return invalid("The index must have exactly one key field; several were found."),
        };
        let mut schema = Schema {
            name: name.to_owned(),
            fields,
            key,
            suggesters: Vec::new(),
            profiles,
            definition: Value::Null,
        };
        schema.suggesters = parse_suggesters(obj, &schema)?;
        let mut def = obj.clone();
        def.remove("@odata.etag");
        def.remove("@odata.context");
        def.insert("name".into(), Value::String(name.to_owned()));
        def.insert("fields".into(), Value::Array(normalized));
        for list in [
            "suggesters",
            "scoringProfiles",
            "analyzers",
            "tokenizers",
            "tokenFilters",
            "charFilters",
            "normalizers",
        ] {
            def.entry(list).or_insert_with(|| Value::Array(Vec::new()));
        }
        schema.definition = Value::Object(def);
        Ok(schema)
    }

    /// The field at a `/`-separated path, through complex fields.
    pub fn field(&self, path: &str) -> Option<&Field> {
        let mut fields = &self.fields;
        let mut found = None;
        for segment in path.split('/') {
            let field = fields.iter().find(|f| f.name == segment)?;
            fields = &field.fields;
            found = Some(field);
        }
        found
    }

    /// Paths of every searchable text field (leaves), in definition order.
    pub fn searchable_text_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_leaves(&self.fields, "", &mut |path, f| {
            if f.searchable && f.ty.is_text() {
                out.push(path.to_owned());
            }
        });
        out
    }

    /// Checks that an existing index may be redefined as `self`: fields may be added but not
    /// removed or changed.
    pub fn check_update(&self, old: &Schema) -> Result<(), Invalid> {
        if self.key != old.key {
            return invalid("The key field of an existing index cannot be changed.");
        }
        check_fields_kept(&old.fields, &self.fields, "")
    }

    /// Validates a document of an index batch (not a delete) and normalises its values
    /// (date-times to UTC). `partial`: a merge, which may omit fields.
    pub fn check_document(&self, doc: &Map<String, Value>) -> Result<Map<String, Value>, Invalid> {
        check_object(&self.fields, doc, "")
    }
}

fn collect_leaves(fields: &[Field], prefix: &str, visit: &mut dyn FnMut(&str, &Field)) {
    for f in fields {
        let path = if prefix.is_empty() {
            f.name.clone()
        } else {
            format!("{prefix}/{}", f.name)
        };
        if f.ty.scalar == Scalar::Complex {
            collect_leaves(&f.fields, &path, visit);
        } else {
            visit(&path, f);
        }
    }
}

fn check_fields_kept(old: &[Field], new: &[Field], prefix: &str) -> Result<(), Invalid> {
    for o in old {
        let path = format!("{prefix}{}", o.name);
        let Some(n) = new.iter().find(|n| n.name == o.name) else {
            return invalid(format!(
                "Existing field '{path}' cannot be removed from the index."
            ));
        };
        if n.ty != o.ty
            || n.searchable != o.searchable
            || n.filterable != o.filterable
            || n.sortable != o.sortable
            || n.facetable != o.facetable
            || n.dimensions != o.dimensions
        {
            return invalid(format!(
                "Existing field '{path}' cannot be changed; only new fields can be added."
            ));
        }
        check_fields_kept(&o.fields, &n.fields, &format!("{path}/"))?;
    }
    Ok(())
}

fn vector_profiles(obj: &Map<String, Value>) -> Result<HashMap<String, Metric>, Invalid> {
    let mut metrics = HashMap::new();
    let vs = obj.get("vectorSearch").and_then(Value::as_object);
    let algorithms = vs
        .and_then(|v| v.get("algorithms"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for a in &algorithms {
        let name = a.get("name").and_then(Value::as_str).unwrap_or_default();
        let params = a
            .get("hnswParameters")
            .or_else(|| a.get("exhaustiveKnnParameters"));
        let metric = match params.and_then(|p| p.get("metric")).and_then(Value::as_str) {
            None | Some("cosine") => Metric::Cosine,
            Some("euclidean") => Metric::Euclidean,
            Some("dotProduct") => Metric::DotProduct,
            Some(other) => return invalid(format!("Unsupported vector metric '{other}'.")),
        };
        metrics.insert(name.to_owned(), metric);
    }
    let mut profiles = HashMap::new();
    for p in vs
        .and_then(|v| v.get("profiles"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        let algorithm = p
            .get("algorithm")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(metric) = metrics.get(algorithm) else {
            return invalid(format!(
                "Vector profile '{name}' refers to unknown algorithm '{algorithm}'."
            ));
        };
        profiles.insert(name.to_owned(), *metric);
    }
    Ok(profiles)
}

fn parse_fields(
    raw: &[Value],
    profiles: &HashMap<String, Metric>,
    top_level: bool,
    normalized: &mut Vec<Value>,
) -> Result<Vec<Field>, Invalid> {
    let mut fields: Vec<Field> = Vec::new();
    for value in raw {
        let Some(obj) = value.as_object() else {
            return invalid("Each field must be a JSON object.");
        };
        let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
        if !valid_field_name(name) {
            return invalid(format!("Field name '{name}' is invalid."));
        }
        if fields.iter().any(|f| f.name == name) {
            return invalid(format!("The field '{name}' is defined more than once."));
        }
        let type_text = obj.get("type").and_then(Value::as_str).unwrap_or_default();
        let Some(ty) = FieldType::parse(type_text) else {
            return invalid(format!(
                "Field '{name}' has unsupported type '{type_text}'."
            ));
        };
        let mut out = obj.clone();
        if ty.scalar == Scalar::Complex {
            let Some(Value::Array(sub)) = obj.get("fields") else {
                return invalid(format!("Complex field '{name}' must have 'fields'."));
            };
            let mut sub_norm = Vec::new();
            let sub_fields = parse_fields(sub, profiles, false, &mut sub_norm)?;
            out.insert("fields".into(), Value::Array(sub_norm));
            fields.push(Field {
                name: name.to_owned(),
                ty,
                key: false,
                searchable: false,
                filterable: false,
                retrievable: true,
                sortable: false,
                facetable: false,
                dimensions: None,
                vector_profile: None,
                fields: sub_fields,
            });
            normalized.push(Value::Object(out));
            continue;
        }
        let vector = ty.is_vector();
        let key = flag(obj, "key", false)?;
        // `hidden` is the older name of `retrievable: false`.
        let hidden = flag(obj, "hidden", false)?;
        let retrievable = flag(obj, "retrievable", !hidden)?;
        let field = Field {
            name: name.to_owned(),
            ty,
            key,
            searchable: flag(obj, "searchable", ty.is_text() || vector)?,
            filterable: flag(obj, "filterable", !vector)?,
            retrievable,
            sortable: flag(obj, "sortable", !ty.collection)?,
            facetable: flag(
                obj,
                "facetable",
                !vector && ty.scalar != Scalar::GeographyPoint,
            )?,
            dimensions: obj
                .get("dimensions")
                .and_then(Value::as_u64)
                .and_then(|d| usize::try_from(d).ok()),
            vector_profile: obj
                .get("vectorSearchProfile")
                .and_then(Value::as_str)
                .map(str::to_owned),
            fields: Vec::new(),
        };
        check_field(&field, profiles, top_level)?;
        for (attr, v) in [
            ("key", field.key),
            ("retrievable", field.retrievable),
            ("searchable", field.searchable),
            ("filterable", field.filterable),
            ("sortable", field.sortable),
            ("facetable", field.facetable),
        ] {
            out.insert(attr.into(), Value::Bool(v));
        }
        out.remove("hidden");
        out.entry("stored").or_insert(Value::Bool(true));
        for attr in ["analyzer", "searchAnalyzer", "indexAnalyzer", "normalizer"] {
            out.entry(attr).or_insert(Value::Null);
        }
        out.entry("synonymMaps")
            .or_insert_with(|| Value::Array(Vec::new()));
        normalized.push(Value::Object(out));
        fields.push(field);
    }
    Ok(fields)
}

fn check_field(
    f: &Field,
    profiles: &HashMap<String, Metric>,
    top_level: bool,
) -> Result<(), Invalid> {
    let name = &f.name;
    if f.key && (f.ty.scalar != Scalar::String || f.ty.collection || !top_level) {
        return invalid(format!(
            "The key field '{name}' must be a top-level field of type Edm.String."
        ));
    }
    if f.ty.is_vector() {
        let Some(dims) = f.dimensions else {
            return invalid(format!("Vector field '{name}' must set 'dimensions'."));
        };
        if !(2..=4096).contains(&dims) {
            return invalid(format!(
                "Vector field '{name}' must have between 2 and 4096 dimensions."
            ));
        }
        let Some(profile) = &f.vector_profile else {
            return invalid(format!(
                "Vector field '{name}' must set 'vectorSearchProfile'."
            ));
        };
        if !profiles.contains_key(profile) {
            return invalid(format!(
                "Vector field '{name}' refers to unknown vector profile '{profile}'."
            ));
        }
        if !f.searchable || f.filterable || f.sortable || f.facetable {
            return invalid(format!(
                "Vector field '{name}' must be searchable and cannot be filterable, sortable or facetable."
            ));
        }
        return Ok(());
    }
    if f.dimensions.is_some() || f.vector_profile.is_some() {
        return invalid(format!(
            "Only vector fields can set 'dimensions' or 'vectorSearchProfile' ('{name}')."
        ));
    }
    if f.searchable && !f.ty.is_text() {
        return invalid(format!(
            "Field '{name}' cannot be searchable: only string fields are."
        ));
    }
    if f.sortable && f.ty.collection {
        return invalid(format!("Collection field '{name}' cannot be sortable."));
    }
    if f.facetable && f.ty.scalar == Scalar::GeographyPoint {
        return invalid(format!(
            "Field '{name}' of type Edm.GeographyPoint cannot be facetable."
        ));
    }
    Ok(())
}

fn parse_suggesters(obj: &Map<String, Value>, schema: &Schema) -> Result<Vec<Suggester>, Invalid> {
    let mut out: Vec<Suggester> = Vec::new();
    for s in obj
        .get("suggesters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() || out.iter().any(|o| o.name == name) {
            return invalid(format!("Suggester name '{name}' is missing or used twice."));
        }
        if let Some(mode) = s.get("searchMode").and_then(Value::as_str) {
            if mode != "analyzingInfixMatching" {
                return invalid(format!(
                    "Suggester '{name}' has unsupported searchMode '{mode}'."
                ));
            }
        }
        let mut source_fields = Vec::new();
        for f in s
            .get("sourceFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = f.as_str().unwrap_or_default();
            match schema.field(path) {
                Some(field) if field.ty.is_text() && field.searchable => {
                    source_fields.push(path.to_owned());
                }
                _ => {
                    return invalid(format!(
                    "Suggester '{name}' source field '{path}' must be a searchable string field."
                ))
                }
            }
        }
        if source_fields.is_empty() {
            return invalid(format!("Suggester '{name}' must have source fields."));
        }
        out.push(Suggester {
            name: name.to_owned(),
            source_fields,
        });
    }
    Ok(out)
}

fn check_object(
    fields: &[Field],
    doc: &Map<String, Value>,
    prefix: &str,
) -> Result<Map<String, Value>, Invalid> {
    let mut out = Map::new();
    for (name, value) in doc {
        if prefix.is_empty() && name.starts_with("@search.") {
            continue;
        }
        let Some(field) = fields.iter().find(|f| &f.name == name) else {
            return invalid(format!(
                "The property '{prefix}{name}' does not exist on type 'search.documentFields'. Make sure to only use property names that are defined by the type."
            ));
        };
        let path = format!("{prefix}{name}");
        out.insert(name.clone(), check_value(field, value, &path)?);
    }
    Ok(out)
}

fn check_value(field: &Field, value: &Value, path: &str) -> Result<Value, Invalid> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    if field.ty.collection {
        let Some(items) = value.as_array() else {
            return invalid(format!("Field '{path}' expects a JSON array."));
        };
        if field.ty.is_vector() {
            if items.iter().any(|v| !v.is_number()) {
                return invalid(format!(
                    "Vector field '{path}' expects an array of numbers."
                ));
            }
            if Some(items.len()) != field.dimensions {
                return invalid(format!(
                    "Vector field '{path}' expects {} dimensions but the document has {}.",
                    field.dimensions.unwrap_or_default(),
                    items.len()
                ));
            }
            return Ok(value.clone());
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if item.is_null() {
                return invalid(format!("Collection field '{path}' cannot contain null."));
            }
            out.push(check_scalar(field, item, path)?);
        }
        return Ok(Value::Array(out));
    }
    check_scalar(field, value, path)
}

fn check_scalar(field: &Field, value: &Value, path: &str) -> Result<Value, Invalid> {
    let wrong = |expected: &str| invalid(format!("Field '{path}' expects {expected}."));
    match field.ty.scalar {
        Scalar::String => match value {
            Value::String(_) => Ok(value.clone()),
            _ => wrong("a string"),
        },
        Scalar::Int32 => match value.as_i64() {
            Some(v) if i32::try_from(v).is_ok() => Ok(value.clone()),
            _ => wrong("a 32-bit integer"),
        },
        Scalar::Int64 => match value {
            Value::Number(n) if n.is_i64() => Ok(value.clone()),
            Value::String(s) => s
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| wrong("a 64-bit integer")),
            _ => wrong("a 64-bit integer"),
        },
        Scalar::Double | Scalar::Single => match value {
            Value::Number(_) => Ok(value.clone()),
            Value::String(s) if matches!(s.as_str(), "NaN" | "INF" | "-INF") => Ok(value.clone()),
            _ => wrong("a number"),
        },
        Scalar::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            _ => wrong("a boolean"),
        },
        Scalar::DateTimeOffset => {
            let parsed = value
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            match parsed {
                Some(dt) => Ok(Value::String(
                    dt.with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(SecondsFormat::AutoSi, true),
                )),
                None => wrong("an ISO 8601 date-time with an offset"),
            }
        }
        Scalar::GeographyPoint => {
            if odata_filter::GeoPoint::from_geojson(value).is_some() {
                Ok(value.clone())
            } else {
                wrong("a GeoJSON point")
            }
        }
        Scalar::Complex => match value.as_object() {
            Some(obj) => Ok(Value::Object(check_object(
                &field.fields,
                obj,
                &format!("{path}/"),
            )?)),
            None => wrong("a JSON object"),
        },
    }
}
