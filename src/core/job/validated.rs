//! A validated job: what decoding produces and every later stage reads (the
//! provider request, the answer's format, where to reply) and its identity in
//! the response cache.

use serde_json::Value;

use super::schema::ResponseFormat;
use crate::provider::{MessageContent, OutputFormat, ProviderRequest};

/// A validated job, ready to be sent to any key of its pool.
#[derive(Debug, Clone)]
pub struct Job {
    /// The producer's id (or the AMQP `message_id`, or a generated one).
    pub id: String,
    /// The pool whose queue the job came from.
    pub pool: String,
    /// What is sent to the provider: model, rendered messages, parameters.
    pub request: ProviderRequest,
    /// The job's, else its template's, else `text`.
    pub response_format: ResponseFormat,
    /// End-user id: forwarded to the provider and echoed in the result.
    pub user: Option<String>,
    /// Echoed back verbatim in the result.
    pub metadata: Value,
    /// Past this instant the job is failed with `deadline_exceeded`, not run.
    pub deadline: Option<jiff::Timestamp>,
    /// Whether an identical earlier request's answer may be reused.
    pub cache: bool,
    /// The batch the job belongs to, if any (counted in `/v1/batches`).
    pub batch: Option<String>,
    /// `high` or `normal`.
    pub priority: Priority,
    /// Where the result goes.
    pub reply: ReplyAddress,
}

/// A job's priority: `high` jobs go ahead of a backlog of `normal` ones
/// (docs/batches.md says how).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal jobs.
    High,
}

/// Key of a request in the response cache.
pub type CacheKey = [u8; 16];

impl Job {
    /// Identity of the request for the response cache: pool, model, rendered
    /// messages and every parameter that changes the answer (the first 128
    /// bits of a SHA-256: collisions are out of reach at any realistic size).
    pub fn cache_key(&self) -> CacheKey {
        use sha2::{Digest, Sha256};
        let r = &self.request;
        let mut h = Sha256::new();
        h.update(self.pool.as_bytes());
        h.update([0]);
        h.update(r.model.as_bytes());
        // Each content tagged and length-prefixed: no text can pass for
        // parts, nor for a message boundary.
        for m in &r.messages {
            h.update([0, m.role as u8]);
            let parts;
            let (tag, bytes) = match &m.content {
                MessageContent::Text(text) => (b't', text.as_bytes()),
                other => {
                    parts = serde_json::to_vec(other).unwrap_or_default();
                    (b'p', parts.as_slice())
                }
            };
            h.update([tag]);
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
        match &r.output {
            OutputFormat::Text => h.update([0, 0]),
            OutputFormat::Json => h.update([0, 1]),
            OutputFormat::Schema(schema) => {
                h.update([0, 2]);
                h.update(schema.name.as_bytes());
                h.update(serde_json::to_vec(&schema.schema).unwrap_or_default());
            }
        }
        h.update(r.max_output_tokens.unwrap_or(0).to_be_bytes());
        h.update(
            r.temperature
                .map(f32::to_bits)
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        let digest = h.finalize();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }
}

/// Where and how the result of a job is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAddress {
    /// Queue name (published through the default exchange).
    pub queue: String,
    /// The delivery's `correlation_id`, else the job id.
    pub correlation_id: String,
}
