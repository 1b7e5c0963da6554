//! The HTTP client one pool shares across its keys.

/// Placeholder until the provider clients land.
pub struct ProviderClient;
