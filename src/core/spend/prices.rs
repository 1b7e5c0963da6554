//! The price table: USD per million tokens for each provider's models,
//! shipped as `config/prices.toml` (dated, each entry naming its source),
//! replaceable by a file of the same shape (`spend.prices_file`) and
//! extended per pool (`[pools.prices."model"]`). A model without a price
//! costs `null`: never a guess.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::provider::ProviderKind;

/// The table keyrelay ships (`config/prices.toml`).
const DEFAULT_TABLE: &str = include_str!("../../../config/prices.toml");

/// USD per million tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached prompt tokens.
    pub input: f64,
    /// Output tokens, reasoning included.
    pub output: f64,
    /// Prompt tokens read from the provider's cache (default: `input`).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the cache (Anthropic; default: `input`).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Prompts longer than this many tokens are priced at the `*_long`
    /// rates, the whole request (Gemini 2.5 Pro, Claude Sonnet 4 over 200k).
    #[serde(default)]
    pub long_context_threshold: Option<u64>,
    /// `input` above the threshold.
    #[serde(default)]
    pub input_long: Option<f64>,
    /// `output` above the threshold.
    #[serde(default)]
    pub output_long: Option<f64>,
    /// `cached_input` above the threshold.
    #[serde(default)]
    pub cached_input_long: Option<f64>,
}

/// One `[[price]]` entry of a price file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    provider: ProviderKind,
    model: String,
    #[serde(flatten)]
    price: Price,
    /// Where the price was read; documentation only.
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    as_of: String,
    #[serde(default)]
    price: Vec<Entry>,
}

/// Why a price file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// The file cannot be read.
    #[error("cannot read the price file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a price table.
    #[error("the price file {path} is not a price table: {message}")]
    Parse {
        /// The file (`<built-in>` for the shipped table).
        path: PathBuf,
        /// The parser's words.
        message: String,
    },
    /// A price is negative or not a number.
    #[error("the price file {path}: {provider}/{model}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The entry's provider.
        provider: String,
        /// The entry's model.
        model: String,
        /// What is wrong.
        message: String,
    },
}

/// Prices by provider and model.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// The date the table's prices were read (`as_of`).
    pub as_of: String,
    prices: HashMap<(ProviderKind, String), Price>,
}

impl PriceTable {
    /// The table keyrelay ships.
    pub fn built_in() -> Result<PriceTable, PriceError> {
        PriceTable::parse(DEFAULT_TABLE, Path::new("<built-in config/prices.toml>"))
    }

    /// A table from a file of the shipped table's shape.
    pub fn from_file(path: &Path) -> Result<PriceTable, PriceError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Read {
            path: path.to_owned(),
            source,
        })?;
        PriceTable::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<PriceTable, PriceError> {
        let file: File = toml::from_str(text).map_err(|e| PriceError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut prices = HashMap::new();
        for entry in file.price {
            check(&entry.price).map_err(|message| PriceError::Invalid {
                path: path.to_owned(),
                provider: entry.provider.as_str().to_owned(),
                model: entry.model.clone(),
                message,
            })?;
            prices.insert((entry.provider, entry.model), entry.price);
        }
        Ok(PriceTable {
            as_of: file.as_of,
            prices,
        })
    }

    /// The price of `model` on `provider`: exact model ids only (a dated
    /// snapshot may be priced apart from its alias).
    pub fn get(&self, provider: ProviderKind, model: &str) -> Option<&Price> {
        self.prices.get(&(provider, model.to_owned()))
    }

    /// How many models have a price.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }
}

/// A price must be a finite, non-negative number of dollars.
pub fn check(price: &Price) -> Result<(), String> {
    let rates = [
        ("input", Some(price.input)),
        ("output", Some(price.output)),
        ("cached_input", price.cached_input),
        ("cache_write", price.cache_write),
        ("input_long", price.input_long),
        ("output_long", price.output_long),
        ("cached_input_long", price.cached_input_long),
    ];
    for (name, rate) in rates {
        if let Some(rate) = rate
            && !(rate.is_finite() && rate >= 0.0)
        {
            return Err(format!(
                "{name} = {rate} is not a price (USD per 1M tokens, >= 0)"
            ));
        }
    }
    if price.long_context_threshold.is_some()
        && (price.input_long.is_none() || price.output_long.is_none())
    {
        return Err("long_context_threshold needs input_long and output_long".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_prices_each_provider() {
        let table = PriceTable::built_in().unwrap();
        assert!(table.len() >= 30, "{} prices", table.len());
        assert!(
            table
                .get(ProviderKind::Gemini, "gemini-2.5-flash")
                .is_some()
        );
        assert!(table.get(ProviderKind::Openai, "gpt-4o-mini").is_some());
        assert!(
            table
                .get(ProviderKind::Anthropic, "claude-sonnet-4-20250514")
                .is_some()
        );
        // Exact ids only: no price is guessed for an unknown snapshot.
        assert!(
            table
                .get(ProviderKind::Openai, "gpt-4o-2099-01-01")
                .is_none()
        );
        assert!(table.get(ProviderKind::Gemini, "gpt-4o-mini").is_none());
    }

    #[test]
    fn a_negative_price_is_refused_with_its_model() {
        let text = "as_of = \"2026-01-01\"\n[[price]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = -1\noutput = 2\n";
        let e = PriceTable::parse(text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("openai/m") && e.contains("input = -1"), "{e}");
    }

    #[test]
    fn a_long_context_tier_needs_its_rates() {
        let text = "as_of = \"2026-01-01\"\n[[price]]\nprovider = \"gemini\"\nmodel = \"m\"\ninput = 1\noutput = 2\nlong_context_threshold = 10\n";
        let e = PriceTable::parse(text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("input_long"), "{e}");
    }
}
