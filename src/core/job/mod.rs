//! The message contract (v2: structured output, images and documents): job bodies in, results out (see `docs/messages.md`).

mod decode;
mod result;
mod schema;
mod template;
mod validated;

pub use decode::{DecodeContext, InvalidJob, JobProperties, decode, valid_batch};
pub use result::{ErrorKind, JobError, JobResult, JobStatus};
pub use schema::{CompiledSchema, FormatSpec, ResponseFormat};
pub use template::TemplateConfig;
pub use validated::{CacheKey, Job, Priority, ReplyAddress};
