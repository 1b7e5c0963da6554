//! `response_format`: text, any JSON, or JSON conforming to a JSON Schema
//! that is compiled once (when the job or its template is read) and checks
//! every answer.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::provider::{OutputFormat, OutputSchema};

/// `response_format` as a job or a template writes it: `"text"`, `"json"`,
/// `{"type": "json_schema", "name": ..., "schema": {...}}`, or OpenAI's own
/// form, `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
#[derive(Debug, Clone, PartialEq)]
pub enum FormatSpec {
    /// The model's text as it is.
    Text,
    /// Any JSON.
    Json,
    /// JSON conforming to the schema.
    JsonSchema(OutputSchema),
}

/// A job's `response_format`, ready to check answers.
#[derive(Debug, Clone, Default)]
pub enum ResponseFormat {
    /// The model's text as it is (`text` of the result).
    #[default]
    Text,
    /// JSON output is asked of the provider and parsed into the result's
    /// `json`; text that is not JSON fails the job with `invalid_output`.
    Json,
    /// As `Json`, and the JSON must conform to the schema.
    JsonSchema(Arc<CompiledSchema>),
}

/// A schema with its validator.
pub struct CompiledSchema {
    /// The schema as written.
    pub spec: Arc<OutputSchema>,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

/// Most validation errors a result reports (the rest are counted).
const MAX_REPORTED_ERRORS: usize = 10;
/// Longest violation reported, in characters: the validator's message
/// quotes the offending value, which may be the whole answer (kept in `text`).
const MAX_VIOLATION_CHARS: usize = 200;

impl ResponseFormat {
    /// Compile `spec`; the error names what is wrong with the schema.
    pub fn compile(spec: FormatSpec) -> Result<ResponseFormat, String> {
        Ok(match spec {
            FormatSpec::Text => ResponseFormat::Text,
            FormatSpec::Json => ResponseFormat::Json,
            FormatSpec::JsonSchema(schema) => ResponseFormat::JsonSchema(compiled(schema)?),
        })
    }

    /// Whether the answer must be JSON.
    pub fn is_json(&self) -> bool {
        !matches!(self, ResponseFormat::Text)
    }

    /// What the provider is asked for.
    pub fn output(&self) -> OutputFormat {
        match self {
            ResponseFormat::Text => OutputFormat::Text,
            ResponseFormat::Json => OutputFormat::Json,
            ResponseFormat::JsonSchema(c) => OutputFormat::Schema(c.spec.clone()),
        }
    }

    /// The name the format goes by in results and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResponseFormat::Text => "text",
            ResponseFormat::Json => "json",
            ResponseFormat::JsonSchema(_) => "json_schema",
        }
    }
}

impl CompiledSchema {
    fn new(spec: OutputSchema) -> Result<CompiledSchema, String> {
        check_name(&spec.name)?;
        if !spec.schema.is_object() {
            return Err("`schema` must be a JSON Schema object".into());
        }
        if let Some(r) = remote_ref(&spec.schema) {
            return Err(format!(
                "`schema` refers to `{r}`: only local `$ref`s (`#/...`) are supported"
            ));
        }
        let validator = jsonschema::validator_for(&spec.schema)
            .map_err(|e| format!("`schema` is not a valid JSON Schema: {e}"))?;
        Ok(CompiledSchema {
            spec: Arc::new(spec),
            validator,
        })
    }

    /// Where `answer` breaks the schema: "at /path: message" each, at most
    /// ten and a count of the rest; empty when it conforms.
    pub fn violations(&self, answer: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let mut more = 0;
        for error in self.validator.iter_errors(answer) {
            if out.len() < MAX_REPORTED_ERRORS {
                let at = error.instance_path().to_string();
                let at = if at.is_empty() { "/".to_owned() } else { at };
                out.push(shorten(format!("at {at}: {error}")));
            } else {
                more += 1;
            }
        }
        if more > 0 {
            out.push(format!("and {more} more"));
        }
        out
    }
}

fn shorten(text: String) -> String {
    match text.char_indices().nth(MAX_VIOLATION_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Schemas compiled lately, by a digest of their name and text: a batch
/// sends one schema with every job, and compiling it costs ~55 µs (a
/// 20-property schema, measured) against ~0.4 µs to validate an answer.
/// Bounded: emptied when full.
static COMPILED: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<CompiledSchema>>>,
> = std::sync::LazyLock::new(Default::default);

/// Most schemas kept compiled.
const COMPILED_CAP: usize = 256;

/// `spec` compiled, from [`COMPILED`] when it was lately.
fn compiled(spec: OutputSchema) -> Result<Arc<CompiledSchema>, String> {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update(spec.name.as_bytes());
    digest.update([0]);
    digest.update(serde_json::to_vec(&spec.schema).unwrap_or_default());
    let key: [u8; 32] = digest.finalize().into();
    let cache = || {
        COMPILED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(hit) = cache().get(&key) {
        return Ok(hit.clone());
    }
    let fresh = Arc::new(CompiledSchema::new(spec)?);
    let mut cache = cache();
    if cache.len() >= COMPILED_CAP {
        cache.clear();
    }
    cache.insert(key, fresh.clone());
    Ok(fresh)
}

/// OpenAI's rule for `json_schema.name`, which the other providers accept.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the schema's `name` must be 1-64 letters, digits, `_` or `-`, not {name:?}"
        ))
    }
}

/// The first `$ref` that leaves the document, if any.
fn remote_ref(schema: &Value) -> Option<String> {
    match schema {
        Value::Object(map) => map.iter().find_map(|(k, v)| match (k.as_str(), v) {
            ("$ref", Value::String(r)) if !r.starts_with('#') => Some(r.clone()),
            _ => remote_ref(v),
        }),
        Value::Array(items) => items.iter().find_map(remote_ref),
        _ => None,
    }
}

/// The schema's name when the producer gives none.
pub(crate) const DEFAULT_SCHEMA_NAME: &str = "output";

impl<'de> Deserialize<'de> for FormatSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FormatSpec, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(d)?;
        parse_spec(value).map_err(D::Error::custom)
    }
}

fn parse_spec(value: Value) -> Result<FormatSpec, String> {
    let kind = match &value {
        Value::String(s) => s.as_str(),
        Value::Object(map) => map
            .get("type")
            .and_then(Value::as_str)
            .ok_or("`response_format` needs a `type`")?,
        _ => return Err("`response_format` must be a string or an object".into()),
    };
    match kind {
        "text" => Ok(FormatSpec::Text),
        "json" | "json_object" => Ok(FormatSpec::Json),
        "json_schema" => schema_spec(&value).map(FormatSpec::JsonSchema),
        other => Err(format!(
            "unknown response_format `{other}` (text, json or json_schema)"
        )),
    }
}

/// `{"type": "json_schema", "name", "schema"}`, or OpenAI's nesting of the
/// same under `json_schema` (its `strict` is implied: keyrelay always asks
/// for strict output where the provider has it).
fn schema_spec(value: &Value) -> Result<OutputSchema, String> {
    let Value::Object(outer) = value else {
        return Err("`json_schema` needs a `schema`: use {\"type\": \"json_schema\", \"name\": ..., \"schema\": {...}}".into());
    };
    let inner = match outer.get("json_schema") {
        Some(Value::Object(inner)) => inner,
        Some(_) => return Err("`json_schema` must be an object".into()),
        None => outer,
    };
    let allowed = [
        "type",
        "name",
        "schema",
        "strict",
        "description",
        "json_schema",
    ];
    for map in [outer, inner] {
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!("unknown field `{k}` in `response_format`"));
        }
    }
    let schema = inner
        .get("schema")
        .cloned()
        .ok_or("`response_format` of type json_schema needs `schema`")?;
    let name = match inner.get("name") {
        None => DEFAULT_SCHEMA_NAME.to_owned(),
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err("the schema's `name` must be a string".into()),
    };
    Ok(OutputSchema { name, schema })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(v: Value) -> Result<ResponseFormat, String> {
        let spec: FormatSpec = serde_json::from_value(v).map_err(|e| e.to_string())?;
        ResponseFormat::compile(spec)
    }

    #[test]
    fn every_form_parses() {
        assert!(matches!(compile(json!("text")), Ok(ResponseFormat::Text)));
        assert!(matches!(compile(json!("json")), Ok(ResponseFormat::Json)));
        assert!(matches!(
            compile(json!({"type": "json"})),
            Ok(ResponseFormat::Json)
        ));
        let ours = json!({"type": "json_schema", "name": "person", "schema": {"type": "object"}});
        let openai = json!({"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {"type": "object"}}});
        for v in [ours, openai] {
            let Ok(ResponseFormat::JsonSchema(c)) = compile(v) else {
                panic!()
            };
            assert_eq!(c.spec.name, "person");
        }
        let Ok(ResponseFormat::JsonSchema(c)) =
            compile(json!({"type": "json_schema", "schema": {"type": "object"}}))
        else {
            panic!()
        };
        assert_eq!(c.spec.name, DEFAULT_SCHEMA_NAME);
    }

    #[test]
    fn bad_formats_are_named() {
        let cases = [
            (json!("xml"), "unknown response_format `xml`"),
            (json!({"type": "json_schema"}), "needs `schema`"),
            (
                json!({"type": "json_schema", "schema": {"type": "object"}, "extra": 1}),
                "unknown field `extra`",
            ),
            (
                json!({"type": "json_schema", "name": "a b", "schema": {}}),
                "`name` must be",
            ),
            (
                json!({"type": "json_schema", "schema": true}),
                "must be a JSON Schema object",
            ),
            (
                json!({"type": "json_schema", "schema": {"type": "nope"}}),
                "not a valid JSON Schema",
            ),
            (
                json!({"type": "json_schema", "schema": {"$ref": "https://example.com/s.json"}}),
                "only local `$ref`s",
            ),
        ];
        for (v, wanted) in cases {
            let err = compile(v.clone()).unwrap_err();
            assert!(err.contains(wanted), "{v}: {err}");
        }
    }

    #[test]
    fn a_schema_seen_lately_is_not_compiled_again() {
        let spec = |t: &str| OutputSchema {
            name: "cached".into(),
            schema: json!({"type": "object", "properties": {"x": {"type": t}}}),
        };
        let a = compiled(spec("string")).unwrap();
        let b = compiled(spec("string")).unwrap();
        let c = compiled(spec("integer")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn violations_name_the_path() {
        let Ok(ResponseFormat::JsonSchema(c)) = compile(json!({"type": "json_schema", "schema": {
            "type": "object",
            "properties": {"age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
            "required": ["age"],
        }})) else {
            panic!()
        };
        assert!(c.violations(&json!({"age": 3, "tags": ["a"]})).is_empty());
        let found = c.violations(&json!({"tags": ["c"]}));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found
                .iter()
                .any(|v| v.starts_with("at /:") && v.contains("age"))
        );
        assert!(found.iter().any(|v| v.starts_with("at /tags/0:")));
        // A violation quoting a long answer is cut short.
        let long = c.violations(&json!("x".repeat(5_000)));
        assert!(
            long[0].chars().count() <= MAX_VIOLATION_CHARS + 1,
            "{}",
            long[0]
        );
    }
}
