//! keyrelay's configuration: the TOML schema, defaults, and loading.
//!
//! Layers: built-in defaults < TOML file < environment (`KEYRELAY__SECTION__FIELD`,
//! see `env_overlay.rs`). Loading validates everything and resolves key secrets, so a
//! config that loads is a config that runs.

mod admin;
mod defaults;
mod env_overlay;
mod error;
mod load;
mod pool;
mod schema;
mod validate;

pub use admin::AdminConfig;
pub use error::ConfigError;
pub use pool::{KeyConfig, OnBudgetExceeded, PoolConfig};
pub use schema::{
    BrokerConfig, Config, InstanceConfig, JobsConfig, MetricsConfig, OnDamage, QueueType,
    SpendConfig, StoreConfig,
};
// `[templates.NAME]` is defined with the job contract, which renders it.
pub use crate::job::TemplateConfig;

#[cfg(test)]
mod tests;
