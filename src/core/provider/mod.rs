//! Provider clients: turn a rendered job into one HTTP call and decide what the
//! answer means.
//!
//! A provider is one file behind one trait ([`ProviderApi`]: address and shape
//! the call, parse a success, classify an error), registered in [`registry`].
//! [`classify`] holds the rules and parsers every provider shares; [`client`]
//! sends the call and reads the answer.

pub mod anthropic;
pub mod api;
pub mod azure;
pub mod classify;
pub mod client;
pub mod connections;
pub mod gemini;
pub mod openai;
mod outcome;
pub mod registry;
pub mod token_field;

use serde::{Deserialize, Serialize};

pub use api::ProviderApi;
pub use client::ProviderClient;
pub use outcome::{Completion, FailureKind, JobFailure, Outcome, OutcomeClass, Usage};
pub use registry::{ProviderKind, ProviderOptions};

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
