//! Which request field carries an OpenAI-style call's output allowance.
//!
//! Chat Completions took `max_tokens`; the o-series and gpt-5 models reject it
//! and want `max_completion_tokens`, which most compatible servers (vLLM,
//! Ollama, llama.cpp) do not know. The field is chosen by model, configurable
//! per pool and per model, and learned when a provider answers "Unsupported
//! parameter" for one of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::Deserialize;

/// A configured choice of field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenField {
    /// By model name: `max_completion_tokens` for o1/o3/o4 and gpt-5 models,
    /// `max_tokens` for every other.
    #[default]
    Auto,
    /// Always `max_tokens`.
    MaxTokens,
    /// Always `max_completion_tokens`.
    MaxCompletionTokens,
}

/// Model name prefixes that reject `max_tokens` (OpenAI reasoning models).
const COMPLETION_TOKEN_MODELS: &[&str] = &["o1", "o3", "o4", "gpt-5"];

impl TokenField {
    /// `Auto` resolved for `model`.
    fn resolve(self, model: &str) -> TokenField {
        match self {
            TokenField::Auto => {
                let name = model.rsplit('/').next().unwrap_or(model);
                if COMPLETION_TOKEN_MODELS.iter().any(|p| name.starts_with(p)) {
                    TokenField::MaxCompletionTokens
                } else {
                    TokenField::MaxTokens
                }
            }
            chosen => chosen,
        }
    }

    fn other(self) -> TokenField {
        match self {
            TokenField::MaxCompletionTokens => TokenField::MaxTokens,
            _ => TokenField::MaxCompletionTokens,
        }
    }
}

/// A pool's policy plus what its provider taught it. Clones share what is learned.
#[derive(Debug, Clone, Default)]
pub struct TokenFields {
    pool: TokenField,
    by_model: BTreeMap<String, TokenField>,
    learned: Arc<RwLock<HashMap<String, TokenField>>>,
}

impl TokenFields {
    /// The pool's `max_tokens_field` and its per-model overrides, nothing learned yet.
    pub fn new(pool: TokenField, by_model: BTreeMap<String, TokenField>) -> TokenFields {
        TokenFields {
            pool,
            by_model,
            learned: Arc::default(),
        }
    }

    /// The field to send for `model`: what the provider taught, else the
    /// model's configured field, else the pool's.
    pub fn for_model(&self, model: &str) -> TokenField {
        let learned = self.learned.read().ok().and_then(|l| l.get(model).copied());
        learned.unwrap_or_else(|| {
            let configured = self.by_model.get(model).copied().unwrap_or(self.pool);
            configured.resolve(model)
        })
    }

    /// The provider refused `field` for `model`: use the other one from now
    /// on. Idempotent, so calls refused at once all land on the same field.
    /// True when the field to send now differs from the refused one.
    pub fn switch_from(&self, model: &str, field: TokenField) -> bool {
        let refused = field.resolve(model);
        if let Ok(mut learned) = self.learned.write() {
            learned.insert(model.to_owned(), refused.other());
        }
        self.for_model(model) != refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_by_model_family() {
        let fields = TokenFields::default();
        for model in [
            "o1-mini",
            "o3",
            "o4-mini-2025-04-16",
            "gpt-5",
            "gpt-5-nano",
            "openai/o3",
        ] {
            assert_eq!(
                fields.for_model(model),
                TokenField::MaxCompletionTokens,
                "{model}"
            );
        }
        for model in ["gpt-4o", "gpt-4.1-mini", "llama3", "omni-moderation"] {
            assert_eq!(fields.for_model(model), TokenField::MaxTokens, "{model}");
        }
    }

    #[test]
    fn configuration_and_learning_override_the_guess() {
        let by_model = BTreeMap::from([(
            "my-o3-deployment".to_owned(),
            TokenField::MaxCompletionTokens,
        )]);
        let fields = TokenFields::new(TokenField::MaxTokens, by_model);
        assert_eq!(
            fields.for_model("o3"),
            TokenField::MaxTokens,
            "pool setting wins over auto"
        );
        assert_eq!(
            fields.for_model("my-o3-deployment"),
            TokenField::MaxCompletionTokens
        );
        let shared = fields.clone();
        assert!(fields.switch_from("o3", TokenField::MaxTokens));
        assert_eq!(
            shared.for_model("o3"),
            TokenField::MaxCompletionTokens,
            "clones share"
        );
        assert!(
            fields.switch_from("o3", TokenField::MaxTokens),
            "already switched"
        );
        assert_eq!(fields.for_model("o3"), TokenField::MaxCompletionTokens);
    }
}
