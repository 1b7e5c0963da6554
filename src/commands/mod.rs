//! The CLI's commands; `main.rs` parses arguments and calls one of these.

pub mod demo;
pub mod enqueue;
pub mod mock;
pub mod run;
pub mod telemetry;
