//! Named prompt templates: their definition (`[templates.NAME]` in the
//! config) and their rendering with a job's `input` JSON.

use serde::Deserialize;
use serde_json::Value;

use super::validated::ResponseFormat;

/// `[templates.NAME]`: a named prompt; `{{input}}` is replaced by the job's input JSON,
/// `{{input.FIELD}}` by one top-level field of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// Optional system prompt.
    pub system: Option<String>,
    /// The user prompt text with placeholders.
    pub text: String,
    /// Default `response_format` of jobs using this template (`text` or `json`).
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
}

/// Replace `{{input}}` with the whole input as JSON and `{{input.FIELD}}` with one
/// top-level field (strings raw, anything else as JSON). Unknown placeholders and
/// missing fields are errors, so a typo never reaches the provider.
pub(crate) fn render(text: &str, input: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed `{{` in template".to_string())?;
        out.push_str(&substitute(after[..end].trim(), input)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn substitute(placeholder: &str, input: &Value) -> Result<String, String> {
    if placeholder == "input" {
        return serde_json::to_string_pretty(input).map_err(|e| e.to_string());
    }
    let Some(field) = placeholder.strip_prefix("input.") else {
        return Err(format!("unknown placeholder `{{{{{placeholder}}}}}`"));
    };
    match input.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(format!("input has no field `{field}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_whole_input_and_fields() {
        let input = json!({"name": "Ada", "steps": 1200});
        let text = render("Hi {{ input.name }}: {{input.steps}} / {{input}}", &input).unwrap();
        assert!(text.starts_with("Hi Ada: 1200 / {"));
        assert!(text.contains("\"steps\": 1200"));
    }

    #[test]
    fn rejects_missing_fields_unknown_and_unclosed_placeholders() {
        let input = json!({"a": 1});
        assert!(render("{{input.b}}", &input).unwrap_err().contains("`b`"));
        assert!(render("{{other}}", &input).unwrap_err().contains("unknown"));
        assert!(render("{{input", &input).unwrap_err().contains("unclosed"));
    }
}
