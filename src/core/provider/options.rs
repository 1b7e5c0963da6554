//! The per-pool settings a provider reads when it is built (token fields,
//! Azure's `api-version`), apart from the registry that builds it.

use super::token_field::TokenFields;

/// Per-pool settings some providers read.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// OpenAI and Azure: which field carries the output allowance.
    pub token_fields: TokenFields,
    /// Azure: the `api-version` query parameter (None: [`super::azure::DEFAULT_API_VERSION`]).
    pub api_version: Option<String>,
}
