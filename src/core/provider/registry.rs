//! Which file serves which provider: the one place a provider is registered.
//! Adding a provider is a file beside this one, a variant here and its line in
//! [`build`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::api::ProviderApi;
use super::content::ContentPart;
pub use super::options::ProviderOptions;
use super::request::ProviderRequest;
use super::{anthropic, azure, gemini, openai};

/// Which wire protocol a pool speaks (`provider = "..."` in a pool's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Google Gemini `models/{model}:generateContent`.
    Gemini,
    /// Any OpenAI-compatible `chat/completions` endpoint (OpenAI, vLLM, Ollama, ...).
    Openai,
    /// Anthropic `v1/messages`.
    Anthropic,
    /// Azure OpenAI: `openai/deployments/{deployment}/chat/completions`.
    Azure,
}

impl ProviderKind {
    /// The name as the config writes it (`gemini`, `openai`, `anthropic`, `azure`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Gemini => "gemini",
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Azure => "azure",
        }
    }

    /// The public endpoint of a built-in provider, used when a pool names no
    /// `base_url` (Azure has none: every resource has its own).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Azure => None,
        }
    }
}

/// What the provider of `kind` cannot take of `request` (a schema keyword,
/// a kind of part), found before any call: the job is refused with it.
pub fn check_request(kind: ProviderKind, request: &ProviderRequest) -> Result<(), String> {
    match kind {
        ProviderKind::Gemini => gemini::check_request(request),
        ProviderKind::Openai | ProviderKind::Azure => openai::check_request(request),
        ProviderKind::Anthropic => anthropic::check_request(request),
    }
}

/// The prompt tokens the provider of `kind` counts for an image or a PDF
/// (0 for text), estimated before the call.
pub fn media_tokens(kind: ProviderKind, part: &ContentPart) -> u64 {
    match kind {
        ProviderKind::Gemini => gemini::media_tokens(part),
        ProviderKind::Openai | ProviderKind::Azure => openai::media_tokens(part),
        ProviderKind::Anthropic => anthropic::media_tokens(part),
    }
}

/// The provider implementation for `kind`.
pub fn build(kind: ProviderKind, options: &ProviderOptions) -> Arc<dyn ProviderApi> {
    match kind {
        ProviderKind::Gemini => Arc::new(gemini::Gemini),
        ProviderKind::Openai => Arc::new(openai::OpenAi::new(options.token_fields.clone())),
        ProviderKind::Anthropic => Arc::new(anthropic::Anthropic),
        ProviderKind::Azure => Arc::new(azure::AzureOpenAi::new(options)),
    }
}
