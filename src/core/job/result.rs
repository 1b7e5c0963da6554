//! The result record: stored in sled and published to the job's reply queue.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::provider::Usage;

/// Whether a job produced an answer (`status` of a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// The provider answered: `text` (and `json`) hold it.
    Succeeded,
    /// No usable answer: `error` says why.
    Failed,
}

/// Why a job failed; a bounded set, also used as a metric label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The job body broke the contract; it is also dead-lettered.
    #[default]
    InvalidJob,
    /// `response_format` json or json_schema, but the model's text is not
    /// JSON, or breaks the schema (`violations` say where).
    InvalidOutput,
    /// The provider rejected the request itself (HTTP 400-style).
    BadRequest,
    /// The prompt (plus its output allowance) is larger than the model's
    /// context or every key's tokens per minute; `limit` and `requested` say
    /// by how much when known.
    TooLarge,
    /// A safety filter, recitation check or blocklist stopped the answer, or
    /// the model refused; `reason` is the provider's code.
    Blocked,
    /// The model finished without any text.
    EmptyOutput,
    /// The output allowance ran out before any text.
    Truncated,
    /// Transient provider failures outlasted `jobs.max_attempts`.
    Upstream,
    /// No key of the pool could run the job.
    AllKeysUnavailable,
    /// The job's `deadline` passed before it could run.
    DeadlineExceeded,
    /// A spend budget (the job's user's, or its pool's when the pool fails
    /// jobs at its budget) would be exceeded; `message` names it and when it
    /// resets. Dead-lettered, so it can be replayed then.
    BudgetExceeded,
    /// An operator cancelled the job, or its batch, before it ran: no call
    /// was made. Final.
    Cancelled,
}

impl ErrorKind {
    /// Every kind, for labels registered up front.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidJob,
        ErrorKind::InvalidOutput,
        ErrorKind::BadRequest,
        ErrorKind::TooLarge,
        ErrorKind::Blocked,
        ErrorKind::EmptyOutput,
        ErrorKind::Truncated,
        ErrorKind::Upstream,
        ErrorKind::AllKeysUnavailable,
        ErrorKind::DeadlineExceeded,
        ErrorKind::BudgetExceeded,
        ErrorKind::Cancelled,
    ];

    /// The kind as it appears in results and metric labels (`invalid_job`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidJob => "invalid_job",
            ErrorKind::InvalidOutput => "invalid_output",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Blocked => "blocked",
            ErrorKind::EmptyOutput => "empty_output",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Upstream => "upstream",
            ErrorKind::AllKeysUnavailable => "all_keys_unavailable",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

/// Why a job failed, as `error` of its result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JobError {
    /// The bounded category (`error.kind`).
    pub kind: ErrorKind,
    /// What happened, for people: keyrelay's words or the provider's message (redacted).
    pub message: String,
    /// The provider's own reason code (`SAFETY`, `content_filter`, `refusal`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `too_large`: the limit the job exceeded (tokens, or bytes for a payload limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `too_large`: what the job needed, in the same unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
    /// `invalid_output` of a `json_schema` job: where the answer breaks the
    /// schema ("at /path: message"), at most ten and a count of the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<String>,
}

impl JobError {
    /// An error of `kind` with no provider code or sizes.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> JobError {
        JobError {
            kind,
            message: message.into(),
            ..JobError::default()
        }
    }
}

impl From<crate::provider::FailureKind> for ErrorKind {
    fn from(kind: crate::provider::FailureKind) -> ErrorKind {
        use crate::provider::FailureKind as F;
        match kind {
            F::BadRequest => ErrorKind::BadRequest,
            F::TooLarge => ErrorKind::TooLarge,
            F::Blocked => ErrorKind::Blocked,
            F::EmptyOutput => ErrorKind::EmptyOutput,
            F::Truncated => ErrorKind::Truncated,
        }
    }
}

/// One job's outcome, exactly as producers receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job's id.
    pub id: String,
    /// Whether the job produced an answer.
    pub status: JobStatus,
    /// The model's text; also on `invalid_output` and on a `blocked` answer cut short.
    pub text: Option<String>,
    /// The text parsed as JSON, for `response_format: json` jobs that succeeded.
    pub json: Option<Value>,
    /// Why the job failed; `None` on success.
    pub error: Option<JobError>,
    /// The pool the job was consumed from.
    pub pool: String,
    /// The model the job asked for (or the pool's default); `None` for an invalid job.
    pub model: Option<String>,
    /// Configured name of the key that produced the answer (never the key).
    pub key: Option<String>,
    /// Tokens the provider billed for the job (zero when answered from the cache).
    pub usage: Usage,
    /// Provider calls charged to the job: transient failures and the final call
    /// (calls refused because of the key do not count).
    pub attempts: u32,
    /// Milliseconds from the delivery's arrival to the result.
    pub latency_ms: u64,
    /// The job's `metadata`, echoed verbatim.
    pub metadata: Value,
    /// The job's `user`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// True when the answer came from the response cache (no provider call).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// The job's `batch`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// When the result was made.
    pub completed_at: Timestamp,
}

impl JobResult {
    /// Whether the job succeeded.
    pub fn is_success(&self) -> bool {
        self.status == JobStatus::Succeeded
    }

    /// Whether the result answers the job for good. Failures that only mean
    /// "not now" (transient errors outlasted the retries, no key could run it)
    /// do not: such a job is dead-lettered, and when an operator replays it,
    /// it runs again instead of being answered with the old failure. Nor
    /// does `invalid_job`: a corrected job sent with the same id runs.
    pub fn is_final(&self) -> bool {
        !matches!(
            self.error.as_ref().map(|e| e.kind),
            Some(
                ErrorKind::Upstream
                    | ErrorKind::AllKeysUnavailable
                    | ErrorKind::BudgetExceeded
                    | ErrorKind::InvalidJob
            )
        )
    }

    /// Outcome label for logs and metrics: `succeeded` or the error kind.
    pub fn outcome_label(&self) -> &'static str {
        match &self.error {
            None => "succeeded",
            Some(e) => e.kind.as_str(),
        }
    }
}
