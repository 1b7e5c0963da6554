//! The one trait a provider implements: how a call is addressed and shaped, and
//! what its answers mean. Everything provider-specific lives behind it, in one
//! file per provider; [`super::registry`] says which file serves which kind.

use jiff::Timestamp;
use reqwest::Url;
use reqwest::header::HeaderMap;

use super::outcome::Outcome;
use super::request::ProviderRequest;
use crate::secret::ApiKey;

/// A provider's wire format and error rules.
pub trait ProviderApi: Send + Sync + std::fmt::Debug {
    /// The URL of the call for `request` (`base` is the pool's `base_url`).
    fn endpoint(&self, base: &Url, request: &ProviderRequest) -> Url;

    /// The authentication headers for `key`; `None` if the key cannot be a
    /// header value. Values holding the key must be marked sensitive.
    fn auth_headers(&self, key: &ApiKey) -> Option<HeaderMap>;

    /// The serialized JSON body of the call.
    fn body(&self, request: &ProviderRequest) -> serde_json::Result<Vec<u8>>;

    /// What a 2xx body means: a success, or why it is not one.
    fn parse_success(&self, body: &[u8]) -> Outcome;

    /// What any other answer means. Pure: `now` is passed in.
    fn classify_error(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Outcome;

    /// On a success: the instant before which the rate-limit headers say the
    /// key has nothing left.
    fn limit_until(&self, _headers: &HeaderMap, _now: Timestamp) -> Option<Timestamp> {
        None
    }

    /// Whether the provider counts a request's output allowance
    /// (`max_tokens`) against the key's tokens per minute before running it
    /// (OpenAI does; Gemini counts input only, Anthropic input and output
    /// apart).
    fn tpm_counts_output_allowance(&self) -> bool {
        false
    }

    /// After a rejected call: whether the provider refused the request's shape
    /// (not its content) and the api has adjusted, so the same request should
    /// be sent once more (OpenAI "Unsupported parameter: 'max_tokens'").
    fn adjust_after_rejection(
        &self,
        _request: &ProviderRequest,
        _status: u16,
        _body: &[u8],
    ) -> bool {
        false
    }
}

/// `base` with `segments` appended as path segments (each percent-encoded).
pub fn join_path(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    // The client rejects cannot-be-a-base URLs, so this always applies.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// One sensitive header holding a secret; `None` if it cannot be a header value.
pub fn secret_header(name: &'static str, value: &str) -> Option<HeaderMap> {
    let mut value = reqwest::header::HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(reqwest::header::HeaderName::from_static(name), value);
    Some(headers)
}
