//! The message contract v1: job bodies in, results out (see `docs/messages.md`).

mod decode;
mod result;
mod template;
mod validated;

pub use decode::{DecodeContext, InvalidJob, JobProperties, decode, valid_batch};
pub use result::{ErrorKind, JobError, JobResult, JobStatus};
pub use template::TemplateConfig;
pub use validated::{CacheKey, Job, Priority, ReplyAddress, ResponseFormat};
