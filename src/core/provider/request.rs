//! What keyrelay asks a provider for: the provider-neutral request and its chat
//! messages, as every provider file reads them.

use serde::{Deserialize, Serialize};

/// Role of one chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message of a rendered job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// What keyrelay asks a provider for: provider-neutral, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Ask the provider for JSON output (OpenAI `response_format`, Gemini
    /// `responseMimeType`, Anthropic: an instruction in the system prompt).
    pub json_output: bool,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// End-user id, forwarded where the provider accepts one.
    pub user: Option<String>,
}
