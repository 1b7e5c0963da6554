//! What a provider's answer means: the decision type every provider's parser and
//! error classifier returns, and the payloads it carries.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Token usage as reported by the provider, and what it cost.
///
/// One meaning whatever the provider: `input_tokens` counts every prompt
/// token, cached or not (Anthropic reports cache reads and writes apart from
/// its `input_tokens`; they are added here), and `output_tokens` every
/// output token, reasoning included (Gemini reports `thoughtsTokenCount`
/// apart; it is added here). The `*_tokens` below are parts of those.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
pub struct Usage {
    /// Tokens of the prompt, cached ones included.
    pub input_tokens: u64,
    /// Tokens of the answer, reasoning included.
    pub output_tokens: u64,
    /// Of `input_tokens`, read from the provider's prompt cache (Gemini
    /// `cachedContentTokenCount`, OpenAI `prompt_tokens_details.cached_tokens`,
    /// Anthropic `cache_read_input_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    /// Of `input_tokens`, written to the prompt cache (Anthropic
    /// `cache_creation_input_tokens`), priced apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// Of `output_tokens`, spent on reasoning (Gemini `thoughtsTokenCount`,
    /// OpenAI `completion_tokens_details.reasoning_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// What the call cost in US dollars, from keyrelay's price table (not the
    /// provider's word); `None` when the model has no price (never a guess).
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Prompt plus output tokens, as limits count them.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Whether the provider reported no tokens at all.
    pub fn is_empty(&self) -> bool {
        self.input_tokens == 0 && self.output_tokens == 0
    }
}

/// A successful completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The model's answer.
    pub text: String,
    /// Tokens the call used.
    pub usage: Usage,
    /// The provider's rate-limit headers say the key has nothing left until
    /// then (OpenAI `x-ratelimit-remaining-*: 0`, Anthropic
    /// `anthropic-ratelimit-*-remaining: 0`): the key's budget tightens.
    pub limit_until: Option<Timestamp>,
    /// The output allowance ran out before the model finished (OpenAI
    /// `length`, Gemini `MAX_TOKENS`, Anthropic `max_tokens`): the text is
    /// what it wrote until then, and JSON there is likely cut off.
    pub cut_short: bool,
}

/// Why a job fails because of the job itself (never because of its key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The provider rejected the request (bad argument, unknown model, ...).
    #[default]
    BadRequest,
    /// The prompt or the request is larger than the model or the key can ever take.
    TooLarge,
    /// A safety filter, recitation check, blocklist or the model refused.
    Blocked,
    /// The model finished normally without any text.
    EmptyOutput,
    /// The output allowance ran out before any text (reasoning models spend
    /// it all on thoughts).
    Truncated,
}

impl FailureKind {
    /// The kind as a label value (`bad_request`, ...), as job results name it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::BadRequest => "bad_request",
            FailureKind::TooLarge => "too_large",
            FailureKind::Blocked => "blocked",
            FailureKind::EmptyOutput => "empty_output",
            FailureKind::Truncated => "truncated",
        }
    }
}

/// A job-caused failure, with what the provider said about it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobFailure {
    /// Why the job cannot succeed.
    pub kind: FailureKind,
    /// The provider's message, or keyrelay's when the answer itself was the problem.
    pub message: String,
    /// The provider's own reason code (`SAFETY`, `content_filter`, `refusal`, ...).
    pub reason: Option<String>,
    /// Text the answer did carry (a partly filtered or cut answer).
    pub partial_text: Option<String>,
    /// Tokens the call was billed for (a blocked answer still costs its prompt).
    pub usage: Usage,
    /// For `too_large`: the limit the provider named (tokens, or bytes for a
    /// payload limit).
    pub limit: Option<u64>,
    /// For `too_large`: what the job needed, in the same unit.
    pub requested: Option<u64>,
}

impl JobFailure {
    /// A failure of `kind` with only a message.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> JobFailure {
        JobFailure {
            kind,
            message: message.into(),
            ..JobFailure::default()
        }
    }

    /// The provider's reason code.
    pub fn with_reason(mut self, reason: impl Into<String>) -> JobFailure {
        self.reason = Some(reason.into());
        self
    }
}

/// Everything a provider answer can mean for the key and the job:
/// the job succeeds or fails, the key cools for a while, is out until a date,
/// is dead, or the job is retried elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The provider answered.
    Success(Completion),
    /// Per-minute style limit: the key may be used again after `retry_after`
    /// (None: the provider did not say).
    RateLimited {
        /// How long the provider asked to wait, if it said.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// Per-day quota, spend limit or empty balance: the key is out until
    /// `until` (None: until the pool's next daily reset).
    QuotaExhausted {
        /// When the provider said the quota returns, if it did.
        until: Option<Timestamp>,
        /// The provider's message.
        message: String,
    },
    /// 5xx, 529, timeouts, connection errors: retry, preferably elsewhere.
    Transient {
        /// The provider's message, or what went wrong with the call.
        message: String,
    },
    /// The key or its account is unusable until a human acts: invalid, revoked
    /// or leaked key, disabled organisation, billing not active, region refused.
    Unauthorized {
        /// The provider's message.
        message: String,
    },
    /// The job itself cannot succeed: the job fails, the key is fine.
    JobFailed(JobFailure),
    /// A success status with a body that cannot be used (malformed, truncated,
    /// too large). The call was probably billed, so it is not retried.
    InvalidResponse {
        /// What is wrong with the body.
        message: String,
    },
}

impl Outcome {
    /// A job failure of `kind` with only a message.
    pub fn job_failed(kind: FailureKind, message: impl Into<String>) -> Outcome {
        Outcome::JobFailed(JobFailure::new(kind, message))
    }

    /// Bounded label value for metrics and logs.
    pub fn class(&self) -> OutcomeClass {
        match self {
            Outcome::Success(_) => OutcomeClass::Success,
            Outcome::RateLimited { .. } => OutcomeClass::RateLimited,
            Outcome::QuotaExhausted { .. } => OutcomeClass::QuotaExhausted,
            Outcome::Transient { .. } => OutcomeClass::Transient,
            Outcome::Unauthorized { .. } => OutcomeClass::Unauthorized,
            Outcome::InvalidResponse { .. } => OutcomeClass::InvalidResponse,
            Outcome::JobFailed(f) => match f.kind {
                FailureKind::BadRequest => OutcomeClass::BadRequest,
                FailureKind::TooLarge => OutcomeClass::TooLarge,
                FailureKind::Blocked => OutcomeClass::Blocked,
                FailureKind::EmptyOutput => OutcomeClass::EmptyOutput,
                FailureKind::Truncated => OutcomeClass::Truncated,
            },
        }
    }

    /// The answer's text on a success, else the provider's message.
    pub fn message(&self) -> &str {
        match self {
            Outcome::Success(c) => &c.text,
            Outcome::JobFailed(f) => &f.message,
            Outcome::RateLimited { message, .. }
            | Outcome::QuotaExhausted { message, .. }
            | Outcome::Transient { message }
            | Outcome::Unauthorized { message }
            | Outcome::InvalidResponse { message } => message,
        }
    }

    /// The same outcome with its message passed through `f` (redaction, bounds).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Outcome {
        match self {
            Outcome::Success(c) => Outcome::Success(c),
            Outcome::JobFailed(mut failure) => {
                failure.message = f(failure.message);
                Outcome::JobFailed(failure)
            }
            Outcome::RateLimited {
                retry_after,
                message,
            } => Outcome::RateLimited {
                retry_after,
                message: f(message),
            },
            Outcome::QuotaExhausted { until, message } => Outcome::QuotaExhausted {
                until,
                message: f(message),
            },
            Outcome::Transient { message } => Outcome::Transient {
                message: f(message),
            },
            Outcome::Unauthorized { message } => Outcome::Unauthorized {
                message: f(message),
            },
            Outcome::InvalidResponse { message } => Outcome::InvalidResponse {
                message: f(message),
            },
        }
    }

    /// Tokens the provider billed for the call: a success's, and a failed
    /// answer's (a blocked or cut answer still costs its prompt).
    pub fn billed_usage(&self) -> Usage {
        match self {
            Outcome::Success(c) => c.usage,
            Outcome::JobFailed(f) => f.usage,
            _ => Usage::default(),
        }
    }

    /// The billed usage, to write its cost into (`None`: nothing billed).
    pub fn billed_usage_mut(&mut self) -> Option<&mut Usage> {
        match self {
            Outcome::Success(c) => Some(&mut c.usage),
            Outcome::JobFailed(f) => Some(&mut f.usage),
            _ => None,
        }
    }

    /// Whether the key, not the job, caused the outcome: such a job moves to
    /// another key without spending one of its attempts.
    pub fn is_the_keys_fault(&self) -> bool {
        matches!(
            self,
            Outcome::RateLimited { .. }
                | Outcome::QuotaExhausted { .. }
                | Outcome::Unauthorized { .. }
        )
    }
}

/// The class of an [`Outcome`], without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeClass {
    /// [`Outcome::Success`].
    Success,
    /// [`Outcome::RateLimited`].
    RateLimited,
    /// [`Outcome::QuotaExhausted`].
    QuotaExhausted,
    /// [`Outcome::Transient`].
    Transient,
    /// [`Outcome::Unauthorized`].
    Unauthorized,
    /// [`Outcome::JobFailed`] with [`FailureKind::BadRequest`].
    BadRequest,
    /// [`Outcome::InvalidResponse`].
    InvalidResponse,
    /// [`Outcome::JobFailed`] with [`FailureKind::TooLarge`].
    TooLarge,
    /// [`Outcome::JobFailed`] with [`FailureKind::Blocked`].
    Blocked,
    /// [`Outcome::JobFailed`] with [`FailureKind::EmptyOutput`].
    EmptyOutput,
    /// [`Outcome::JobFailed`] with [`FailureKind::Truncated`].
    Truncated,
}

impl OutcomeClass {
    /// Every class, in declaration order (tallies index by `class as usize`).
    pub const ALL: [OutcomeClass; 11] = [
        OutcomeClass::Success,
        OutcomeClass::RateLimited,
        OutcomeClass::QuotaExhausted,
        OutcomeClass::Transient,
        OutcomeClass::Unauthorized,
        OutcomeClass::BadRequest,
        OutcomeClass::InvalidResponse,
        OutcomeClass::TooLarge,
        OutcomeClass::Blocked,
        OutcomeClass::EmptyOutput,
        OutcomeClass::Truncated,
    ];

    /// The class as a label value (`rate_limited`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Success => "success",
            OutcomeClass::RateLimited => "rate_limited",
            OutcomeClass::QuotaExhausted => "quota_exhausted",
            OutcomeClass::Transient => "transient",
            OutcomeClass::Unauthorized => "unauthorized",
            OutcomeClass::BadRequest => "bad_request",
            OutcomeClass::InvalidResponse => "invalid_response",
            OutcomeClass::TooLarge => "too_large",
            OutcomeClass::Blocked => "blocked",
            OutcomeClass::EmptyOutput => "empty_output",
            OutcomeClass::Truncated => "truncated",
        }
    }
}
