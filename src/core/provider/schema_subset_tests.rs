//! Schema fitting's edge cases against the providers' real subsets (apart
//! from schema_subset.rs, which the providers import).

use super::schema_subset::fit;
use crate::provider::gemini::JSON_SCHEMA_SUBSET as GEMINI;
use crate::provider::openai::STRICT_SUBSET as OPENAI;
use serde_json::{Value, json};

fn object(props: Value) -> Value {
    json!({"type": "object", "properties": props})
}

#[test]
fn nullable_enums_and_recursion() {
    // Nullable as a type list, an enum with null, a recursive $ref: kept.
    let schema = json!({
        "type": "object",
        "properties": {
            "maybe": {"type": ["string", "null"]},
            "level": {"enum": ["low", "high", null]},
            "children": {"type": "array", "items": {"$ref": "#"}},
        },
    });
    for subset in [&OPENAI, &GEMINI] {
        let fitted = fit(&schema, subset).unwrap();
        assert_eq!(
            fitted["properties"]["maybe"]["type"],
            json!(["string", "null"])
        );
        assert_eq!(
            fitted["properties"]["level"]["enum"],
            json!(["low", "high", null])
        );
        assert_eq!(fitted["properties"]["children"]["items"]["$ref"], "#");
    }
    // OpenAI closes the object and requires all three; Gemini leaves it open.
    let openai = fit(&schema, &OPENAI).unwrap();
    assert_eq!(openai["required"], json!(["children", "level", "maybe"]));
    let gemini = fit(&schema, &GEMINI).unwrap();
    assert!(gemini.get("required").is_none() && gemini.get("additionalProperties").is_none());
}

#[test]
fn additional_properties() {
    let open = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": true});
    assert_eq!(fit(&open, &OPENAI).unwrap()["additionalProperties"], false);
    assert_eq!(fit(&open, &GEMINI).unwrap()["additionalProperties"], true);
    let map = json!({"type": "object", "additionalProperties": {"type": "integer"}});
    let root = object(json!({"counts": map}));
    let err = fit(&root, &OPENAI).unwrap_err();
    assert!(
        err.contains("map type") && err.contains("/properties/counts"),
        "{err}"
    );
    // Gemini takes a map type as it is.
    assert_eq!(
        fit(&root, &GEMINI).unwrap()["properties"]["counts"]["additionalProperties"]["type"],
        "integer"
    );
}

#[test]
fn keywords_per_provider() {
    let with = |k: &str, v: Value| object(json!({"x": {"type": "string", k: v}}));
    // const: OpenAI keeps it, Gemini gets a one-value enum (a hint for
    // what an enum cannot say).
    let c = with("const", json!("a"));
    assert_eq!(fit(&c, &OPENAI).unwrap()["properties"]["x"]["const"], "a");
    assert_eq!(
        fit(&c, &GEMINI).unwrap()["properties"]["x"]["enum"],
        json!(["a"])
    );
    let t = with("const", json!(true));
    assert_eq!(
        fit(&t, &GEMINI).unwrap()["properties"]["x"]["description"],
        "{\"const\":true}"
    );
    // pattern: OpenAI keeps it, Gemini hints it.
    let p = with("pattern", json!("^a"));
    assert_eq!(
        fit(&p, &OPENAI).unwrap()["properties"]["x"]["pattern"],
        "^a"
    );
    assert!(
        fit(&p, &GEMINI).unwrap()["properties"]["x"]
            .get("pattern")
            .is_none()
    );
    // allOf: refused by both, named with its place.
    let all = object(json!({"x": {"allOf": [{"type": "string"}, {"minLength": 1}]}}));
    for subset in [&OPENAI, &GEMINI] {
        let err = fit(&all, subset).unwrap_err();
        assert!(err.contains("`allOf` (at /properties/x)"), "{err}");
    }
    // A property called like a keyword is a property, not a keyword.
    let named = object(json!({"pattern": {"type": "string"}, "allOf": {"type": "integer"}}));
    for subset in [&OPENAI, &GEMINI] {
        let fitted = fit(&named, subset).unwrap();
        assert_eq!(fitted["properties"]["allOf"]["type"], "integer");
    }
}

#[test]
fn defs_are_fitted_too() {
    let schema = json!({
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}},
        "$defs": {"A": {"type": "object", "properties": {"s": {"type": "string", "maxLength": 3}}}},
    });
    let fitted = fit(&schema, &OPENAI).unwrap();
    let a = &fitted["$defs"]["A"];
    assert_eq!(a["additionalProperties"], false);
    assert_eq!(a["required"], json!(["s"]));
    assert_eq!(a["properties"]["s"]["description"], "{\"maxLength\":3}");
}

#[test]
fn generated_schemas_fit() {
    // pydantic's described reference, and a draft-07 `definitions` ref.
    let schema = json!({
        "type": "object",
        "properties": {
            "owner": {"allOf": [{"$ref": "#/$defs/Person"}], "description": "Who owns it"},
            "old": {"$ref": "#/definitions/Old", "title": "Old"},
        },
        "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "definitions": {"Old": {"type": "string"}},
    });
    for subset in [&OPENAI, &GEMINI] {
        let fitted = fit(&schema, subset).unwrap();
        assert_eq!(
            fitted["properties"]["owner"],
            json!({"$ref": "#/$defs/Person"})
        );
        assert_eq!(
            fitted["properties"]["old"],
            json!({"$ref": "#/definitions/Old"})
        );
        assert_eq!(fitted["definitions"]["Old"]["type"], "string");
    }
}

#[test]
fn optional_nested_objects_are_closed_for_openai() {
    let schema = object(
        json!({"addr": {"type": ["object", "null"], "properties": {"city": {"type": "string"}}}}),
    );
    let fitted = fit(&schema, &OPENAI).unwrap();
    assert_eq!(fitted["properties"]["addr"]["additionalProperties"], false);
    assert_eq!(fitted["properties"]["addr"]["required"], json!(["city"]));
}

#[test]
fn openai_formats_outside_its_list_become_hints() {
    let schema = object(
        json!({"when": {"type": "string", "format": "date"}, "site": {"type": "string", "format": "uri"}}),
    );
    let fitted = fit(&schema, &OPENAI).unwrap();
    assert_eq!(fitted["properties"]["when"]["format"], "date");
    assert!(fitted["properties"]["site"].get("format").is_none());
    assert_eq!(
        fitted["properties"]["site"]["description"],
        "{\"format\":\"uri\"}"
    );
}

#[test]
fn any_of_beside_one_of_is_refused_for_openai() {
    let schema =
        object(json!({"x": {"anyOf": [{"type": "string"}], "oneOf": [{"type": "integer"}]}}));
    let err = fit(&schema, &OPENAI).unwrap_err();
    assert!(err.contains("side by side (at /properties/x)"), "{err}");
    assert!(fit(&schema, &GEMINI).is_ok());
}
