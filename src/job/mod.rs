//! The message contract v1: job bodies in, results out (see `docs/messages.md`).

mod decode;
mod result;
pub mod retry;
mod template;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::provider::ProviderRequest;

pub use decode::{DecodeContext, InvalidJob, JobProperties, decode};
pub use result::{ErrorKind, JobError, JobResult, JobStatus};

/// `response_format` of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseFormat {
    #[default]
    Text,
    Json,
}

/// A validated job, ready to be sent to any key of its pool.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub pool: String,
    pub request: ProviderRequest,
    pub response_format: ResponseFormat,
    pub user: Option<String>,
    /// Echoed back verbatim in the result.
    pub metadata: Value,
    /// Past this instant the job is failed with `deadline_exceeded`, not run.
    pub deadline: Option<jiff::Timestamp>,
    pub reply: ReplyAddress,
}

/// Where and how the result of a job is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAddress {
    /// Queue name (published through the default exchange).
    pub queue: String,
    pub correlation_id: String,
}
