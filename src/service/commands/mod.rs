//! The CLI's commands; `main.rs` parses arguments and calls one of these.

pub mod admin_client;
pub mod batch_run;
pub mod batch_watch;
pub mod dead_letters;
pub mod demo;
pub mod dev_token;
pub mod enqueue;
pub mod keys;
pub mod mock_process;
pub mod pool_queues;
pub mod results;
pub mod run;
pub mod spend;
pub mod status;
pub mod table;
pub mod telemetry;
