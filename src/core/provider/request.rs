//! What keyrelay asks a provider for: the provider-neutral request and its chat
//! messages, as every provider file reads them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::content::{ContentPart, MessageContent};

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
    /// What is said: text, or text, images and documents.
    pub content: MessageContent,
}

impl ChatMessage {
    /// A message of plain text.
    pub fn text(role: Role, text: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: MessageContent::Text(text.into()),
        }
    }
}

/// What shape of answer a call asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum OutputFormat {
    /// Whatever text the model writes.
    #[default]
    Text,
    /// Any JSON (OpenAI `json_object`, Gemini `responseMimeType`, Anthropic:
    /// an instruction in the system prompt).
    Json,
    /// JSON conforming to a schema, by each provider's native structured
    /// output (OpenAI `json_schema`, Gemini `responseJsonSchema`, Anthropic a
    /// forced tool).
    Schema(Arc<OutputSchema>),
}

/// A named JSON Schema the answer must conform to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSchema {
    /// Its name (OpenAI's `json_schema.name`, Anthropic's tool name).
    pub name: String,
    /// The JSON Schema, as the producer wrote it.
    pub schema: Value,
}

impl ProviderRequest {
    /// The first image media type of the request not in `accepted`: what a
    /// provider that reads only those refuses.
    pub fn image_type_outside(&self, accepted: &[&str]) -> Option<&str> {
        self.messages
            .iter()
            .flat_map(|m| m.content.media())
            .find_map(|part| match part {
                ContentPart::Image(media) => media
                    .media_type
                    .as_deref()
                    .filter(|t| !accepted.contains(t)),
                _ => None,
            })
    }
}

impl OutputFormat {
    /// Whether the answer must be JSON (with or without a schema).
    pub fn is_json(&self) -> bool {
        !matches!(self, OutputFormat::Text)
    }

    /// The schema, when there is one.
    pub fn schema(&self) -> Option<&OutputSchema> {
        match self {
            OutputFormat::Schema(schema) => Some(schema),
            _ => None,
        }
    }
}

/// What keyrelay asks a provider for: provider-neutral, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRequest {
    /// The model to call (the job's, else the pool's default).
    pub model: String,
    /// The conversation, in order: the job's messages, its prompt, or its rendered template.
    pub messages: Vec<ChatMessage>,
    /// The shape of answer asked for: text, JSON, or JSON of a schema.
    pub output: OutputFormat,
    /// Most tokens the answer may have; the provider's default when `None`.
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature (0.0 to 2.0); the provider's default when `None`.
    pub temperature: Option<f32>,
    /// End-user id, forwarded where the provider accepts one.
    pub user: Option<String>,
}
