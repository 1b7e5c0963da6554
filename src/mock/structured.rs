//! Structured output and media, as the providers take them: an answer that
//! conforms to the requested schema, OpenAI's strict-mode schema rules, and
//! the checks each provider makes of image and document parts.

use serde_json::{Map, Value, json};

/// What a request carried besides text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MediaSeen {
    pub images: usize,
    pub documents: usize,
}

impl MediaSeen {
    /// Prompt tokens of the media: 258 an image or a page (Gemini's figure,
    /// one page a document): the mock does not decode them.
    pub fn tokens(&self) -> u64 {
        258 * (self.images + self.documents) as u64
    }

    /// Appended to the echo, so a test sees the provider received them.
    pub fn note(&self) -> String {
        if self.images + self.documents == 0 {
            return String::new();
        }
        format!(
            " [saw {} image(s), {} document(s)]",
            self.images, self.documents
        )
    }
}

/// A value conforming to `schema` (best effort for the keywords the
/// providers take): strings carry `echo`, objects every property.
pub(crate) fn instance(schema: &Value, echo: &str) -> Value {
    instance_at(schema, schema, echo, 0)
}

fn instance_at(root: &Value, schema: &Value, echo: &str, depth: usize) -> Value {
    let Value::Object(s) = schema else {
        return Value::Null;
    };
    if depth > 12 {
        return Value::Null;
    }
    if let Some(Value::String(r)) = s.get("$ref") {
        let target = r.strip_prefix('#').and_then(|p| root.pointer(p));
        return target.map_or(Value::Null, |t| instance_at(root, t, echo, depth + 1));
    }
    if let Some(v) = s.get("const") {
        return v.clone();
    }
    if let Some(Value::Array(values)) = s.get("enum") {
        return values.first().cloned().unwrap_or(Value::Null);
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        // Every entry at once: their objects merged.
        let mut merged = Map::new();
        for entry in all {
            match instance_at(root, entry, echo, depth + 1) {
                Value::Object(o) => merged.extend(o),
                other if all.len() == 1 => return other,
                _ => {}
            }
        }
        return Value::Object(merged);
    }
    for k in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = s.get(k)
            && let Some(first) = options.first()
        {
            return instance_at(root, first, echo, depth + 1);
        }
    }
    let kind = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(Value::Object(props)) = s.get("properties") {
                for (name, sub) in props {
                    out.insert(name.clone(), instance_at(root, sub, echo, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = s
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            let item = s.get("items").cloned().unwrap_or(json!({}));
            Value::Array(
                (0..n)
                    .map(|_| instance_at(root, &item, echo, depth + 1))
                    .collect(),
            )
        }
        "integer" => json!(s.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
        "number" => json!(s.get("minimum").and_then(Value::as_f64).unwrap_or(1.5)),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::String(echo.to_owned()),
    }
}

/// OpenAI's strict-mode rules for `response_format.json_schema.schema`, with
/// its error text (tests/fixtures/providers/openai.json,
/// `openai_400_strict_schema_additional_properties`).
pub(crate) fn openai_strict_error(name: &str, schema: &Value) -> Option<String> {
    let problem = strict_problem(schema, &mut Vec::new())?;
    Some(format!(
        "Invalid schema for response_format '{name}': {problem}"
    ))
}

fn strict_problem(schema: &Value, context: &mut Vec<String>) -> Option<String> {
    let Value::Object(s) = schema else {
        return None;
    };
    let at = || {
        let quoted: Vec<String> = context.iter().map(|c| format!("'{c}'")).collect();
        match quoted.len() {
            0 => "()".to_owned(),
            1 => format!("({},)", quoted[0]),
            _ => format!("({})", quoted.join(", ")),
        }
    };
    for unsupported in [
        "allOf",
        "oneOf",
        "not",
        "if",
        "patternProperties",
        "minLength",
        "maxLength",
    ] {
        if s.contains_key(unsupported) {
            return Some(format!(
                "In context={}, '{unsupported}' is not permitted.",
                at()
            ));
        }
    }
    let is_object = match s.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    if is_object && s.get("additionalProperties") != Some(&Value::Bool(false)) {
        return Some(format!(
            "In context={}, 'additionalProperties' is required to be supplied and to be false.",
            at()
        ));
    }
    if let Some(Value::Object(props)) = s.get("properties") {
        let required: Vec<&str> = s
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(missing) = props.keys().find(|k| !required.contains(&k.as_str())) {
            return Some(format!(
                "In context={}, 'required' is required to be supplied and to be an array including every key in properties. Missing '{missing}'.",
                at()
            ));
        }
        for (name, sub) in props {
            context.extend(["properties".to_owned(), name.clone()]);
            let found = strict_problem(sub, context);
            context.truncate(context.len() - 2);
            if found.is_some() {
                return found;
            }
        }
    }
    for k in [
        "items",
        "anyOf",
        "$defs",
        "definitions",
        "additionalProperties",
    ] {
        let subs: Vec<(String, &Value)> = match s.get(k) {
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            Some(Value::Object(m)) if k == "$defs" || k == "definitions" => {
                m.iter().map(|(n, v)| (n.clone(), v)).collect()
            }
            Some(v @ Value::Object(_)) => vec![(String::new(), v)],
            _ => Vec::new(),
        };
        for (name, sub) in subs {
            context.push(k.to_owned());
            if !name.is_empty() {
                context.push(name.clone());
            }
            let found = strict_problem(sub, context);
            context.truncate(context.len() - 1 - usize::from(!name.is_empty()));
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

/// The OpenAI models that read images (the others answer the 400 in
/// tests/fixtures/providers/openai.json, `openai_400_image_unsupported_model`).
fn openai_reads_images(model: &str) -> bool {
    !model.starts_with("gpt-3.5") && !model.starts_with("o1-mini")
}

/// OpenAI's content parts: `text`, `image_url`, `file`. Err is the 400's
/// message.
pub(crate) fn openai_parts(
    model: &str,
    message: usize,
    parts: &[Value],
    seen: &mut MediaSeen,
) -> Result<(), String> {
    for (i, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("image_url") => {
                if !openai_reads_images(model) {
                    return Err(
                        "Invalid content type. image_url is only supported by certain models."
                            .into(),
                    );
                }
                let url = part.pointer("/image_url/url").and_then(Value::as_str);
                let readable = url.is_some_and(|u| {
                    u.starts_with("https://")
                        || u.starts_with("http://")
                        || u.starts_with("data:image/")
                });
                if !readable {
                    return Err(format!(
                        "Missing required parameter: 'messages[{message}].content[{i}].image_url.url'."
                    ));
                }
                seen.images += 1;
            }
            Some("file") => {
                let data = part.pointer("/file/file_data").and_then(Value::as_str);
                if !data.is_some_and(|d| d.starts_with("data:application/pdf;base64,")) {
                    return Err(format!(
                        "Invalid value for 'messages[{message}].content[{i}].file.file_data': expected a base64 data URL."
                    ));
                }
                seen.documents += 1;
            }
            other => {
                return Err(format!(
                    "Invalid value: '{}'. Supported values are: 'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'.",
                    other.unwrap_or("")
                ));
            }
        }
    }
    Ok(())
}

/// The image types Anthropic takes, and its words for any other
/// (tests/fixtures/providers/anthropic.json, `anthropic_400_image_media_type`).
const ANTHROPIC_IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Anthropic's content blocks: `text`, `image`, `document`.
pub(crate) fn anthropic_blocks(
    message: usize,
    blocks: &[Value],
    seen: &mut MediaSeen,
) -> Result<(), String> {
    for (i, block) in blocks.iter().enumerate() {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "text" {
            continue;
        }
        if kind != "image" && kind != "document" {
            return Err(format!(
                "messages.{message}.content.{i}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
            ));
        }
        let source = block.get("source").unwrap_or(&Value::Null);
        match source.get("type").and_then(Value::as_str) {
            Some("base64") => {
                let media_type = source
                    .get("media_type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if kind == "image" && !ANTHROPIC_IMAGE_TYPES.contains(&media_type) {
                    return Err(format!(
                        "messages.{message}.content.{i}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
                    ));
                }
                if kind == "document" && media_type != "application/pdf" {
                    return Err(format!(
                        "messages.{message}.content.{i}.document.source.base64.media_type: Input should be 'application/pdf'"
                    ));
                }
            }
            Some("url") if source.get("url").and_then(Value::as_str).is_some() => {}
            _ => {
                return Err(format!(
                    "messages.{message}.content.{i}.{kind}.source: Field required"
                ));
            }
        }
        if kind == "image" {
            seen.images += 1;
        } else {
            seen.documents += 1;
        }
    }
    Ok(())
}

/// Gemini's parts: `text`, `inlineData`, `fileData`.
pub(crate) fn gemini_parts(parts: &[Value], seen: &mut MediaSeen) -> Result<(), String> {
    for part in parts {
        let media = part.get("inlineData").or_else(|| part.get("fileData"));
        let Some(media) = media else {
            continue;
        };
        let mime = media.get("mimeType").and_then(Value::as_str).unwrap_or("");
        if mime.is_empty() {
            return Err("* GenerateContentRequest.contents[0].parts[0].inline_data.mime_type: mime_type is not specified\n".into());
        }
        if mime == "application/pdf" {
            seen.documents += 1;
        } else if mime == "image/gif" {
            // Gemini reads no GIF (image understanding docs list png, jpeg,
            // webp, heic, heif).
            return Err(format!("Unsupported MIME type: {mime}"));
        } else if mime.starts_with("image/") {
            seen.images += 1;
        } else {
            return Err(format!("Unsupported MIME type: {mime}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_conform_to_their_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 3},
                "kind": {"enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "p": {"$ref": "#/$defs/P"},
                "maybe": {"type": ["number", "null"]},
            },
            "$defs": {"P": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
        });
        let v = instance(&schema, "hi");
        assert_eq!(
            v,
            json!({"name": "hi", "age": 3, "kind": "a", "tags": ["hi", "hi"], "p": {"ok": true}, "maybe": 1.5})
        );
    }

    #[test]
    fn strict_rules_name_the_context() {
        let open =
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
        assert_eq!(
            openai_strict_error("x", &open).unwrap(),
            "Invalid schema for response_format 'x': In context=(), 'additionalProperties' is required to be supplied and to be false."
        );
        let nested = json!({"type": "object", "additionalProperties": false, "required": ["b"], "properties": {"b": {"type": "object", "additionalProperties": false, "properties": {"c": {"type": "string"}}}}});
        assert!(
            openai_strict_error("x", &nested)
                .unwrap()
                .contains("In context=('properties', 'b'), 'required'")
        );
    }
}
