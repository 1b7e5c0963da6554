//! keyrelay-core: what keyrelay knows and decides, without actors, AMQP or an HTTP server.
//!
//! - [`job`]: the job contract (what producers send, what they get back).
//! - [`keys`]: a key's state, its quota windows, and the routing decisions.
//! - [`provider`]: one file per provider behind one trait, and the classification
//!   of every answer into an [`provider::Outcome`].
//! - [`store`]: the sled facade (results, response cache, usage, history).
//! - [`route`]: where a job goes next, as one pure decision.
//! - [`lease`]: several instances on one broker (key hand-over, balance).
//! - [`spend`]: prices, what each call cost, and budgets.
//! - [`config`], [`secret`], [`metrics`], [`readiness`].
//!
//! The service crate (`keyrelay`, in `src/service`) drives these from its actors.

#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod job;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod provider;
pub mod readiness;
pub mod route;
pub mod secret;
pub mod spend;
pub mod store;
