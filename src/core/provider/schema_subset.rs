//! Fitting a job's JSON Schema to the subset a provider's structured output
//! takes. Every keyword is one of three things for a provider:
//! - **kept**: sent as it is (subschemas in it are fitted in turn);
//! - **hinted**: a constraint the provider cannot enforce: taken out and
//!   written into the `description` (as Anthropic's SDK does in
//!   `lib/_parse/_transform.py`), and enforced by keyrelay's own validation
//!   of the answer against the original schema;
//! - **refused**: a shape the provider cannot produce: the job is refused
//!   with the keyword and where it is, before any call.
//!
//! Anything else (annotations such as `examples`, `$comment`, `default`) is
//! left out. Two rewrites keep common generated schemas usable: a one-entry
//! `allOf` is merged into its parent (pydantic writes
//! `{"allOf": [{"$ref": ...}], "description": ...}`, openai-python merges it
//! too), and a `$ref` is sent without siblings (Gemini: "if `$ref` is set on
//! a sub-schema, no other properties, except for those starting as a `$`,
//! may be set"; openai-python inlines such refs).
//!
//! What is sent may be looser than the schema (hints, `oneOf` as `anyOf`):
//! keyrelay validates every answer against the schema as written.

use serde_json::{Map, Value};

/// What one provider's structured output takes.
#[derive(Debug)]
pub struct Subset {
    /// How the provider's feature is called, for refusals.
    pub feature: &'static str,
    /// Sent as they are.
    pub kept: &'static [&'static str],
    /// Moved into `description`; checked by keyrelay's validation.
    pub hinted: &'static [&'static [&'static str]],
    /// Refused.
    pub refused: &'static [&'static [&'static str]],
    /// OpenAI strict mode: every object gets `additionalProperties: false`
    /// and lists every property in `required` (as openai-python's
    /// `_ensure_strict_json_schema` does); `oneOf` is sent as `anyOf`.
    pub strict_objects: bool,
    /// The root must be an object schema (a tool's input, OpenAI's root).
    pub object_root: bool,
    /// The `format` values sent as they are (the others are hinted); `None`:
    /// every value.
    pub formats: Option<&'static [&'static str]>,
}

/// Keywords that only narrow the values a schema allows: a provider that
/// cannot enforce them gets them as hints, and keyrelay enforces them.
pub const NARROWING: &[&str] = &[
    "minLength",
    "maxLength",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "contains",
    "minContains",
    "maxContains",
    "not",
    "dependentRequired",
];

/// Keywords that shape the answer in ways neither OpenAI's nor Gemini's
/// structured output can produce.
pub const STRUCTURAL: &[&str] = &[
    "allOf",
    "if",
    "then",
    "else",
    "patternProperties",
    "propertyNames",
    "dependentSchemas",
    "unevaluatedProperties",
    "unevaluatedItems",
];

fn listed(lists: &[&[&str]], keyword: &str) -> bool {
    lists.iter().any(|list| list.contains(&keyword))
}

/// Keywords whose value is a map of subschemas.
const SCHEMA_MAPS: &[&str] = &["properties", "$defs", "definitions"];
/// Keywords whose value is a list of subschemas.
const SCHEMA_LISTS: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems"];
/// Keywords whose value is one subschema.
const SCHEMA_ONE: &[&str] = &["items", "additionalProperties"];

/// `schema` as the provider takes it, or why it cannot.
pub fn fit(schema: &Value, subset: &Subset) -> Result<Value, String> {
    if subset.object_root && !is_object(schema) {
        return Err(format!(
            "{} needs a schema whose root is `\"type\": \"object\"`; wrap the value in an object",
            subset.feature
        ));
    }
    fit_at(schema, subset, "")
}

/// Whether `schema` describes objects: `type` is `object` or a list with
/// it (`["object", "null"]`, an optional nested object), or it has
/// `properties`.
fn is_object(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => schema.get("properties").is_some(),
    }
}

fn fit_at(schema: &Value, subset: &Subset, at: &str) -> Result<Value, String> {
    let Value::Object(map) = schema else {
        // `true`/`false` schemas and malformed values: as they are.
        return Ok(schema.clone());
    };
    let merged;
    let map = match merge_single_all_of(map) {
        Some(m) => {
            merged = m;
            &merged
        }
        None => map,
    };
    if map.contains_key("$ref") {
        // Only `$` keywords beside a `$ref` (the rest is checked locally).
        let refs = map.iter().filter(|(k, _)| k.starts_with('$'));
        return Ok(Value::Object(
            refs.map(|(k, v)| (k.clone(), v.clone())).collect(),
        ));
    }
    if subset.strict_objects && map.contains_key("anyOf") && map.contains_key("oneOf") {
        return Err(format!(
            "{} cannot take `anyOf` and `oneOf` side by side (at {}): nest one in the other",
            subset.feature,
            or_root(at)
        ));
    }
    let mut out = Map::new();
    let mut hints = Map::new();
    for (keyword, value) in map {
        let here = format!("{at}/{keyword}");
        let k = keyword.as_str();
        if listed(subset.refused, k) {
            return Err(refusal(subset, k, at));
        }
        let unknown_format = k == "format"
            && subset
                .formats
                .is_some_and(|known| !value.as_str().is_some_and(|f| known.contains(&f)));
        // A `const` the provider lacks is a one-value `enum` it has (Gemini
        // takes enums of strings and numbers).
        if k == "const"
            && !subset.kept.contains(&"const")
            && subset.kept.contains(&"enum")
            && (value.is_string() || value.is_number())
            && !map.contains_key("enum")
        {
            out.insert("enum".into(), Value::Array(vec![value.clone()]));
            continue;
        }
        if listed(subset.hinted, k) || unknown_format {
            hints.insert(keyword.clone(), value.clone());
            continue;
        }
        if !subset.kept.contains(&k) {
            continue;
        }
        let fitted = fit_keyword(k, value, subset, &here)?;
        let name = if subset.strict_objects && k == "oneOf" {
            "anyOf".to_owned()
        } else {
            keyword.clone()
        };
        out.insert(name, fitted);
    }
    if subset.strict_objects {
        strict_object(&mut out, at, subset)?;
    }
    if !hints.is_empty() {
        let hint = Value::Object(hints).to_string();
        let text = match out.get("description").and_then(Value::as_str) {
            Some(d) => format!("{d}\n\n{hint}"),
            None => hint,
        };
        out.insert("description".into(), Value::String(text));
    }
    Ok(Value::Object(out))
}

fn fit_keyword(k: &str, value: &Value, subset: &Subset, here: &str) -> Result<Value, String> {
    Ok(match value {
        Value::Object(items) if SCHEMA_MAPS.contains(&k) => {
            let mut fitted = Map::new();
            for (name, sub) in items {
                fitted.insert(
                    name.clone(),
                    fit_at(sub, subset, &format!("{here}/{name}"))?,
                );
            }
            Value::Object(fitted)
        }
        Value::Array(items) if SCHEMA_LISTS.contains(&k) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, sub)| fit_at(sub, subset, &format!("{here}/{i}")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(_) if SCHEMA_ONE.contains(&k) => fit_at(value, subset, here)?,
        _ => value.clone(),
    })
}

/// `{"allOf": [one], ...}` as one schema: the entry's keywords, then the
/// parent's (which win).
fn merge_single_all_of(map: &Map<String, Value>) -> Option<Map<String, Value>> {
    let Some(Value::Array(entries)) = map.get("allOf") else {
        return None;
    };
    let [Value::Object(only)] = entries.as_slice() else {
        return None;
    };
    let mut merged = only.clone();
    for (k, v) in map.iter().filter(|(k, _)| *k != "allOf") {
        merged.insert(k.clone(), v.clone());
    }
    Some(merged)
}

/// OpenAI strict mode on one schema: objects are closed and every property
/// is required. A map type (`additionalProperties` with a schema) cannot be
/// closed without changing what it means, nor can an object without
/// `properties` (it could only be `{}`): both refused.
fn strict_object(out: &mut Map<String, Value>, at: &str, subset: &Subset) -> Result<(), String> {
    if !is_object(&Value::Object(out.clone())) {
        return Ok(());
    }
    match out.get("additionalProperties") {
        None | Some(Value::Bool(_)) => {}
        Some(_) => {
            return Err(format!(
                "{} cannot take a map type (`additionalProperties` with a schema) at {}: list the properties instead",
                subset.feature,
                or_root(at)
            ));
        }
    }
    if !out.contains_key("properties") {
        return Err(format!(
            "{} cannot take a free-form object (at {}): list its `properties`",
            subset.feature,
            or_root(at)
        ));
    }
    // `true` narrowed to `false`: any answer it allows, the original allows.
    out.insert("additionalProperties".into(), Value::Bool(false));
    let names: Vec<Value> = out
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().map(Value::String).collect())
        .unwrap_or_default();
    out.insert("required".into(), Value::Array(names));
    Ok(())
}

fn refusal(subset: &Subset, keyword: &str, at: &str) -> String {
    format!(
        "{} does not support the schema keyword `{keyword}` (at {})",
        subset.feature,
        or_root(at)
    )
}

fn or_root(at: &str) -> &str {
    if at.is_empty() { "the root" } else { at }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TEST: Subset = Subset {
        feature: "test output",
        kept: &[
            "type",
            "properties",
            "required",
            "items",
            "anyOf",
            "oneOf",
            "$ref",
            "$defs",
            "description",
            "enum",
            "additionalProperties",
        ],
        hinted: &[&["minLength"]],
        refused: &[&["patternProperties"]],
        strict_objects: true,
        object_root: true,
        formats: None,
    };

    #[test]
    fn strict_objects_are_closed_and_fully_required() {
        let fitted = fit(
            &json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "object", "properties": {"c": {"type": "integer"}}}}, "required": ["a"]}),
            &TEST,
        )
        .unwrap();
        assert_eq!(fitted["additionalProperties"], false);
        assert_eq!(fitted["required"], json!(["a", "b"]));
        assert_eq!(fitted["properties"]["b"]["additionalProperties"], false);
        assert_eq!(fitted["properties"]["b"]["required"], json!(["c"]));
    }

    #[test]
    fn hints_move_into_the_description_and_annotations_go() {
        let fitted = fit(
            &json!({"type": "object", "properties": {"name": {"type": "string", "minLength": 2, "description": "Full name", "examples": ["Ada"]}}}),
            &TEST,
        )
        .unwrap();
        let name = &fitted["properties"]["name"];
        assert_eq!(name["description"], "Full name\n\n{\"minLength\":2}");
        assert!(name.get("minLength").is_none() && name.get("examples").is_none());
    }

    #[test]
    fn refs_defs_and_one_of_survive() {
        let fitted = fit(
            &json!({"type": "object", "properties": {"p": {"$ref": "#/$defs/P"}, "v": {"oneOf": [{"type": "string"}, {"type": "null"}]}}, "$defs": {"P": {"type": "object", "properties": {"x": {"enum": [1, 2]}}}}}),
            &TEST,
        )
        .unwrap();
        assert_eq!(fitted["properties"]["p"]["$ref"], "#/$defs/P");
        assert_eq!(fitted["$defs"]["P"]["additionalProperties"], false);
        assert_eq!(fitted["properties"]["v"]["anyOf"][1]["type"], "null");
    }

    #[test]
    fn refusals_name_keyword_and_place() {
        let err = fit(
            &json!({"type": "object", "properties": {"tags": {"type": "object", "patternProperties": {"^x": {}}}}}),
            &TEST,
        )
        .unwrap_err();
        assert!(
            err.contains("`patternProperties` (at /properties/tags)"),
            "{err}"
        );
        let err = fit(&json!({"type": "array"}), &TEST).unwrap_err();
        assert!(err.contains("root"), "{err}");
        let err = fit(
            &json!({"type": "object", "properties": {}, "additionalProperties": {"type": "integer"}}),
            &TEST,
        )
        .unwrap_err();
        assert!(err.contains("map type"), "{err}");
        let err = fit(&json!({"type": "object"}), &TEST).unwrap_err();
        assert!(err.contains("free-form object"), "{err}");
    }
}
