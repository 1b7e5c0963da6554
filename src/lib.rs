//! keyrelay: a pool of LLM API keys behind RabbitMQ, one actix actor per key.
//!
//! Start at [`app`] (wiring) and [`actors`] (supervisor and key workers); a job's
//! journey is described in `docs/architecture.md`.

pub mod mock_provider;
pub mod provider;
pub mod secret;
