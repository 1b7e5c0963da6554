//! Environment overrides: `KEYRELAY__BROKER__URL=...` sets `broker.url`.
//!
//! Arrays of tables are addressed by their `name` field:
//! `KEYRELAY__POOLS__GEMINI__BASE_URL` and
//! `KEYRELAY__POOLS__GEMINI__KEYS__PRIMARY__CONCURRENCY`. Names match
//! case-insensitively, with `-` written as `_`.

use toml::{Table, Value};

use super::error::ConfigError;

const PREFIX: &str = "KEYRELAY__";

/// Apply every `KEYRELAY__*` variable of `env` onto `root`.
pub(super) fn apply(
    root: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX))
        .collect();
    // Deterministic order, whatever the environment's.
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        set(root, &path, parse_scalar(&raw)).map_err(|message| ConfigError::Env {
            variable: name.clone(),
            message,
        })?;
    }
    Ok(())
}

fn set(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    match path {
        [] => Err("empty path".into()),
        [field] => {
            table.insert(field.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => match table
            .entry(head.clone())
            .or_insert_with(|| Value::Table(Table::new()))
        {
            Value::Table(inner) => set(inner, rest, value),
            Value::Array(items) => set_in_named(items, rest, value),
            _ => Err(format!("`{head}` is not a section")),
        },
    }
}

/// `rest[0]` names an element of an array of tables by its `name` field.
fn set_in_named(items: &mut [Value], rest: &[String], value: Value) -> Result<(), String> {
    let [name, rest @ ..] = rest else {
        return Err("an array of tables needs an element name".into());
    };
    let element = items
        .iter_mut()
        .filter_map(Value::as_table_mut)
        .find(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.replace('-', "_").eq_ignore_ascii_case(name))
        })
        .ok_or_else(|| format!("no element named `{name}`"))?;
    set(element, rest, value)
}

/// Environment values are strings; read them as TOML scalars when they are one
/// (`4`, `true`, `0.5`), as plain strings otherwise.
fn parse_scalar(raw: &str) -> Value {
    raw.parse::<i64>()
        .map(Value::Integer)
        .or_else(|_| raw.parse::<bool>().map(Value::Boolean))
        .or_else(|_| raw.parse::<f64>().map(Value::Float))
        .unwrap_or_else(|_| Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        toml::from_str(text).expect("test TOML")
    }

    fn var(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn overrides_section_fields_and_named_elements() {
        let mut root = table(
            r#"
            [broker]
            url = "amqp://a"
            [[pools]]
            name = "gemini-eu"
            base_url = "http://x"
              [[pools.keys]]
              name = "primary"
              concurrency = 4
            "#,
        );
        apply(
            &mut root,
            [
                var("KEYRELAY__BROKER__URL", "amqp://b"),
                var("KEYRELAY__POOLS__GEMINI_EU__BASE_URL", "http://y"),
                var(
                    "KEYRELAY__POOLS__GEMINI_EU__KEYS__PRIMARY__CONCURRENCY",
                    "9",
                ),
                var("UNRELATED", "1"),
            ],
        )
        .expect("overlay");
        assert_eq!(root["broker"]["url"].as_str(), Some("amqp://b"));
        let pool = &root["pools"][0];
        assert_eq!(pool["base_url"].as_str(), Some("http://y"));
        assert_eq!(pool["keys"][0]["concurrency"].as_integer(), Some(9));
    }

    #[test]
    fn unknown_element_is_an_error_naming_the_variable() {
        let mut root = table("[[pools]]\nname = \"a\"\n");
        let err = apply(&mut root, [var("KEYRELAY__POOLS__B__BASE_URL", "x")]).unwrap_err();
        assert!(err.to_string().contains("KEYRELAY__POOLS__B__BASE_URL"));
    }

    #[test]
    fn creates_missing_sections() {
        let mut root = Table::new();
        apply(&mut root, [var("KEYRELAY__STORE__PATH", "/tmp/x")]).expect("overlay");
        assert_eq!(root["store"]["path"].as_str(), Some("/tmp/x"));
    }
}
