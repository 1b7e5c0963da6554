//! The HTTP client one pool shares across its keys. (Placeholder: replaced by
//! the provider-clients branch.)

use std::time::Duration;

use super::{Outcome, ProviderKind, ProviderRequest};
use crate::secret::ApiKey;

pub struct HttpTimeouts {
    pub connect: Duration,
    pub total: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("bad base URL: {0}")]
    BaseUrl(String),
}

#[derive(Clone)]
pub struct ProviderClient {
    kind: ProviderKind,
}

impl ProviderClient {
    pub fn new(
        kind: ProviderKind,
        _base_url: &str,
        _timeouts: HttpTimeouts,
    ) -> Result<Self, ProviderError> {
        Ok(ProviderClient { kind })
    }
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }
    pub async fn call(&self, _key: &ApiKey, _request: &ProviderRequest) -> Outcome {
        Outcome::Transient {
            message: "placeholder".into(),
        }
    }
}
