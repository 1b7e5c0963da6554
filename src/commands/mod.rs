//! The CLI's commands; `main.rs` parses arguments and calls one of these.

pub mod enqueue;
pub mod run;
pub mod telemetry;
