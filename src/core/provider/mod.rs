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
mod content;
pub mod gemini;
pub mod openai;
mod options;
mod outcome;
pub mod registry;
mod request;
pub mod schema_subset;
#[cfg(test)]
mod schema_subset_tests;
pub mod token_field;

pub use api::ProviderApi;
pub use client::ProviderClient;
pub use content::{ContentPart, Media, MessageContent, PDF};
pub use options::ProviderOptions;
pub use outcome::{Completion, FailureKind, JobFailure, Outcome, OutcomeClass, Usage};
pub use registry::ProviderKind;
pub use request::{ChatMessage, OutputFormat, OutputSchema, ProviderRequest, Role};
