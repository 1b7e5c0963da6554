//! Provider clients: turn a rendered job into one HTTP call and classify the answer.
//!
//! Each provider has its own file (wire format only); `classify` holds the pure
//! function that maps any HTTP answer or transport error onto an [`Outcome`].

pub mod anthropic;
pub mod classify;
pub mod client;
pub mod connections;
pub mod gemini;
pub mod openai;

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use client::ProviderClient;

/// Which wire protocol a pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Google Gemini `models/{model}:generateContent`.
    Gemini,
    /// Any OpenAI-compatible `chat/completions` endpoint (OpenAI, vLLM, Ollama, ...).
    Openai,
    /// Anthropic `v1/messages`.
    Anthropic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Gemini => "gemini",
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }
}

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

/// Token usage as reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A successful completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub usage: Usage,
    /// The provider's rate-limit headers say the key has nothing left until
    /// then (OpenAI `x-ratelimit-remaining-*: 0`, Anthropic
    /// `anthropic-ratelimit-*-remaining: 0`): the key's budget tightens.
    pub limit_until: Option<Timestamp>,
}

/// Everything a provider answer can mean for the key and the job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Completion),
    /// Per-minute style limit: the key may be used again after `retry_after`
    /// (None: the provider did not say).
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Per-day quota or spend limit: the key is spent until `until`
    /// (None: until the pool's next daily reset).
    QuotaExhausted {
        until: Option<Timestamp>,
        message: String,
    },
    /// 5xx, 529, timeouts, connection errors.
    Transient {
        message: String,
    },
    /// Invalid, revoked or unauthorised key.
    Unauthorized {
        message: String,
    },
    /// The request itself was rejected: the job's fault, not the key's.
    BadRequest {
        message: String,
    },
    /// A success status with a body that cannot be used (malformed, truncated,
    /// too large). The call was probably billed, so it is not retried.
    InvalidResponse {
        message: String,
    },
}

impl Outcome {
    /// Bounded label value for metrics and logs.
    pub fn class(&self) -> OutcomeClass {
        match self {
            Outcome::Success(_) => OutcomeClass::Success,
            Outcome::RateLimited { .. } => OutcomeClass::RateLimited,
            Outcome::QuotaExhausted { .. } => OutcomeClass::QuotaExhausted,
            Outcome::Transient { .. } => OutcomeClass::Transient,
            Outcome::Unauthorized { .. } => OutcomeClass::Unauthorized,
            Outcome::BadRequest { .. } => OutcomeClass::BadRequest,
            Outcome::InvalidResponse { .. } => OutcomeClass::InvalidResponse,
        }
    }
}

/// The class of an [`Outcome`], without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeClass {
    Success,
    RateLimited,
    QuotaExhausted,
    Transient,
    Unauthorized,
    BadRequest,
    InvalidResponse,
}

impl OutcomeClass {
    pub const ALL: [OutcomeClass; 7] = [
        OutcomeClass::Success,
        OutcomeClass::RateLimited,
        OutcomeClass::QuotaExhausted,
        OutcomeClass::Transient,
        OutcomeClass::Unauthorized,
        OutcomeClass::BadRequest,
        OutcomeClass::InvalidResponse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Success => "success",
            OutcomeClass::RateLimited => "rate_limited",
            OutcomeClass::QuotaExhausted => "quota_exhausted",
            OutcomeClass::Transient => "transient",
            OutcomeClass::Unauthorized => "unauthorized",
            OutcomeClass::BadRequest => "bad_request",
            OutcomeClass::InvalidResponse => "invalid_response",
        }
    }
}
