//! keyrelay: a pool of LLM API keys behind RabbitMQ, one actix actor per key.
//!
//! Start at [`app`] (wiring) and [`actors`] (supervisor and key workers); a job's
//! journey is in [`pipeline`] and described in `docs/architecture.md`.

pub mod actors;
pub mod admin;
pub mod amqp;
pub mod app;
pub mod commands;
pub mod config;
pub mod http;
pub mod job;
pub mod keys;
pub mod metrics;
pub mod mock_provider;
pub mod pipeline;
pub mod provider;
pub mod readiness;
pub mod secret;
pub mod store;
