//! The HTTP surface on `metrics.listen`: `/metrics`, `/healthz`, `/readyz`, and
//! the admin API under `/v1` (see [`crate::admin`]).

mod probes;
mod server;
pub mod state;

pub use server::{ListenError, bind, serve};
pub use state::HttpState;
