//! Azure OpenAI: OpenAI's chat format on a deployment URL
//! (`{base}/openai/deployments/{deployment}/chat/completions?api-version=V`),
//! an `api-key` header, and Azure's own errors: content-filter 400s with an
//! `innererror`, 429s whose delay is in `retry-after` or "Please retry after N
//! seconds", and `{"statusCode": 401, "message": ...}` from the gateway.
//!
//! A job's `model` names the deployment.

use jiff::Timestamp;
use reqwest::Url;
use reqwest::header::HeaderMap;

use super::api::{ProviderApi, join_path, secret_header};
use super::classify::{self, by_status, message_or_body};
use super::openai::{self, OpenAi};
use super::options::ProviderOptions;
use super::outcome::{FailureKind, JobFailure, Outcome};
use super::request::ProviderRequest;
use crate::secret::ApiKey;

/// The GA data-plane API version used when a pool names none.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// One Azure OpenAI resource: OpenAI's wire format at another address.
#[derive(Debug)]
pub struct AzureOpenAi {
    api_version: String,
    openai: OpenAi,
}

impl AzureOpenAi {
    /// The api for a pool's options: its `api-version` (else
    /// [`DEFAULT_API_VERSION`]) and its token fields.
    pub fn new(options: &ProviderOptions) -> AzureOpenAi {
        AzureOpenAi {
            api_version: options
                .api_version
                .clone()
                .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned()),
            openai: OpenAi::new(options.token_fields.clone()),
        }
    }
}

impl ProviderApi for AzureOpenAi {
    fn endpoint(&self, base: &Url, request: &ProviderRequest) -> Url {
        let mut url = join_path(
            base,
            &[
                "openai",
                "deployments",
                &request.model,
                "chat",
                "completions",
            ],
        );
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version);
        url
    }

    fn auth_headers(&self, key: &ApiKey) -> Option<HeaderMap> {
        secret_header("api-key", key.expose())
    }

    fn body(&self, request: &ProviderRequest) -> serde_json::Result<Vec<u8>> {
        self.openai.body(request)
    }

    fn parse_success(&self, body: &[u8]) -> Outcome {
        self.openai.parse_success(body)
    }

    fn classify_error(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Outcome {
        classify_error(status, headers, body, now)
    }

    fn limit_until(&self, headers: &HeaderMap, now: Timestamp) -> Option<Timestamp> {
        self.openai.limit_until(headers, now)
    }

    fn tpm_counts_output_allowance(&self) -> bool {
        self.openai.tpm_counts_output_allowance()
    }

    fn adjust_after_rejection(&self, request: &ProviderRequest, status: u16, body: &[u8]) -> bool {
        self.openai.adjust_after_rejection(request, status, body)
    }
}

/// Azure's rules for a non-2xx answer; what Azure shares with OpenAI
/// (context length, quota codes) falls through to OpenAI's rules.
pub fn classify_error(status: u16, headers: &HeaderMap, body: &[u8], now: Timestamp) -> Outcome {
    let fields = openai::error_fields(body);
    let message = message_or_body(fields.message.as_deref(), status, body);
    if fields.code == "content_filter" || fields.inner_code == "ResponsibleAIPolicyViolation" {
        return Outcome::JobFailed(JobFailure {
            reason: Some("content_filter".to_owned()),
            ..JobFailure::new(FailureKind::Blocked, message)
        });
    }
    if status == 429 && !is_quota(&fields.code, &message) {
        let retry_after = classify::retry_after_from_headers(headers, now)
            .or_else(|| classify::retry_hint_in(&message));
        return Outcome::RateLimited {
            retry_after,
            message,
        };
    }
    match status {
        // Gateway answers: a wrong key or endpoint, a firewall or network rule.
        401 | 403 => Outcome::Unauthorized { message },
        404 => Outcome::job_failed(FailureKind::BadRequest, message),
        _ if status >= 500 || status == 408 => by_status(status, headers, message, now),
        _ => openai::classify_error(status, headers, body, now),
    }
}

/// An Azure 429 that is about money or a subscription's quota, not a rate.
fn is_quota(code: &str, message: &str) -> bool {
    code == "insufficient_quota" || message.contains("exceeded your current quota")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_names_the_deployment_and_api_version() {
        let api = AzureOpenAi::new(&ProviderOptions::default());
        let base = Url::parse("https://my-res.openai.azure.com/").unwrap();
        let request = ProviderRequest {
            model: "gpt-4o prod".to_owned(),
            messages: Vec::new(),
            output: Default::default(),
            max_output_tokens: None,
            temperature: None,
            user: None,
        };
        assert_eq!(
            api.endpoint(&base, &request).as_str(),
            "https://my-res.openai.azure.com/openai/deployments/gpt-4o%20prod/chat/completions?api-version=2024-10-21"
        );
    }
}
