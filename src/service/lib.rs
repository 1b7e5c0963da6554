//! keyrelay: a pool of LLM API keys behind RabbitMQ, one actix actor per key.
//!
//! This crate is the service: the actors, the AMQP edge, the admin HTTP surface and
//! the CLI. What it knows and decides (job contract, key state, providers, store)
//! is in `keyrelay-core`. Start at [`app`] (wiring) and [`actors`] (supervisor and
//! key workers); a job's journey is in [`pipeline`] and described in
//! `docs/architecture.md`.

pub mod actors;
pub mod admin;
pub mod amqp;
pub mod app;
pub mod commands;
pub mod fleet;
pub mod http;
pub mod pipeline;
