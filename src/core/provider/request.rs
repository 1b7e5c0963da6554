//! What keyrelay asks a provider for: the provider-neutral request and its chat
//! messages, as every provider file reads them.

use serde::{Deserialize, Serialize};

/// Role of one chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model (Gemini and Anthropic take them apart from
    /// the conversation).
    System,
    /// The end user's turn.
    User,
    /// An earlier answer of the model.
    Assistant,
}

/// One chat message of a rendered job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said (plain text).
    pub content: String,
}

/// What keyrelay asks a provider for: provider-neutral, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRequest {
    /// The model to call (the job's, else the pool's default).
    pub model: String,
    /// The conversation, in order: the job's messages, its prompt, or its rendered template.
    pub messages: Vec<ChatMessage>,
    /// Ask the provider for JSON output (OpenAI `response_format`, Gemini
    /// `responseMimeType`, Anthropic: an instruction in the system prompt).
    pub json_output: bool,
    /// Most tokens the answer may have; the provider's default when `None`.
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature (0.0 to 2.0); the provider's default when `None`.
    pub temperature: Option<f32>,
    /// End-user id, forwarded where the provider accepts one.
    pub user: Option<String>,
}
