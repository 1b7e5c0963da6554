//! Named prompt templates: their definition (`[templates.NAME]` in the
//! config) and their rendering with a job's `input` JSON.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::schema::{DEFAULT_SCHEMA_NAME, FormatSpec, ResponseFormat};
use crate::provider::OutputSchema;

/// `[templates.NAME]`: a named prompt; `{{input}}` is replaced by the job's input JSON,
/// `{{input.FIELD}}` by one top-level field of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// Optional system prompt.
    pub system: Option<String>,
    /// The user prompt text with placeholders.
    pub text: String,
    /// Default `response_format` of jobs using this template (`text`,
    /// `json`, or a `json_schema` table).
    #[serde(default)]
    pub response_format: Option<FormatSpec>,
    /// The JSON Schema of the answer, inline (a TOML table): jobs get
    /// `response_format` json_schema.
    #[serde(default)]
    pub schema: Option<Value>,
    /// The same, read from a JSON file (relative to the working directory).
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
    /// The schema's name (default `output`).
    #[serde(default)]
    pub schema_name: Option<String>,
    /// The format above, compiled when the config is loaded.
    #[serde(skip)]
    pub compiled: Option<ResponseFormat>,
}

impl TemplateConfig {
    /// Read the schema file and compile the template's format; the error
    /// says what is wrong (the caller names the template).
    pub fn compile(&mut self) -> Result<(), String> {
        let schema = match (&self.schema, &self.schema_file) {
            (Some(_), Some(_)) => return Err("give `schema` or `schema_file`, not both".into()),
            (Some(schema), None) => Some(schema.clone()),
            (None, Some(path)) => Some(read_schema_file(path)?),
            (None, None) => None,
        };
        let spec = match (schema, self.response_format.clone()) {
            (Some(_), Some(spec)) if spec != FormatSpec::Text && spec != FormatSpec::Json => {
                return Err(
                    "give the schema in `schema`/`schema_file` or in `response_format`, not both"
                        .into(),
                );
            }
            (Some(_), Some(FormatSpec::Text)) => {
                return Err(
                    "a template with a schema answers JSON: drop `response_format = \"text\"`"
                        .into(),
                );
            }
            (Some(schema), _) => Some(FormatSpec::JsonSchema(OutputSchema {
                name: self
                    .schema_name
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SCHEMA_NAME.to_owned()),
                schema,
            })),
            (None, spec) => {
                if self.schema_name.is_some() {
                    return Err("`schema_name` needs `schema` or `schema_file`".into());
                }
                spec
            }
        };
        self.compiled = spec.map(ResponseFormat::compile).transpose()?;
        Ok(())
    }
}

fn read_schema_file(path: &PathBuf) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `schema_file` {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("`schema_file` {} is not JSON: {e}", path.display()))
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
