//! The HTTP client one pool shares across its keys: builds the provider URL and
//! headers, sends one request, reads the answer under a size cap and hands it to
//! [`classify`]. Keys travel in headers only; every message is redacted.

use std::error::Error as _;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Response, Url};

use super::api::ProviderApi;
use super::classify::{MAX_MESSAGE_CHARS, classify, truncate_chars};
use super::connections::Lanes;
use super::options::ProviderOptions;
use super::outcome::{FailureKind, Outcome};
use super::registry::{self, ProviderKind};
use super::request::ProviderRequest;
use crate::secret::ApiKey;

/// Largest response body read; more is treated as a broken answer.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Timeouts for every call of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// TCP + TLS connection establishment.
    pub connect: Duration,
    /// The whole call: connect, send, and read the full body.
    pub total: Duration,
}

/// How a client connects to its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Connect and whole-call timeouts.
    pub timeouts: HttpTimeouts,
    /// Which HTTP version to speak.
    pub version: HttpVersion,
    /// Independent connection pools the calls are spread over; with HTTP/2,
    /// one connection each (see [`super::connections`]).
    pub lanes: usize,
    /// Sent in the User-Agent (`keyrelay/VERSION (instance NAME)`), so a
    /// provider's logs tell the instances of a fleet apart.
    pub instance: Option<String>,
}

impl HttpSettings {
    /// One lane, HTTP version negotiated.
    pub fn new(timeouts: HttpTimeouts) -> Self {
        HttpSettings {
            timeouts,
            version: HttpVersion::Negotiated,
            lanes: 1,
            instance: None,
        }
    }
}

/// Which HTTP version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// HTTP/2 where TLS negotiates it (ALPN), HTTP/1.1 otherwise.
    #[default]
    Negotiated,
    /// HTTP/2 from the first byte, for clear-text (h2c) endpoints.
    Http2PriorKnowledge,
}

/// Why a [`ProviderClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The base URL cannot be used: not http(s), no host, or credentials, a
    /// query or a fragment in it.
    #[error("invalid provider base URL {url:?}: {reason}")]
    BadBaseUrl {
        /// The URL as configured.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// reqwest could not build a client (TLS backend, settings).
    #[error("cannot build HTTP client: {0}")]
    ClientBuild(#[source] reqwest::Error),
    /// No base URL was given and the provider (named here) has no public one.
    #[error("provider {0} has no public endpoint: set the pool's base_url")]
    NoBaseUrl(&'static str),
}

/// One provider endpoint. Cloning is cheap: the connection pools are shared.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    kind: ProviderKind,
    api: Arc<dyn ProviderApi>,
    base_url: Url,
    lanes: Arc<Lanes>,
    max_response_bytes: usize,
}

impl ProviderClient {
    /// A client with the provider's default options; see [`Self::with_options`].
    pub fn new(
        kind: ProviderKind,
        base_url: &str,
        settings: HttpSettings,
    ) -> Result<Self, ProviderError> {
        Self::with_options(kind, Some(base_url), settings, &ProviderOptions::default())
    }

    /// `base_url`: None for the provider's public endpoint (Gemini
    /// `https://generativelanguage.googleapis.com`, OpenAI
    /// `https://api.openai.com/v1`, Anthropic `https://api.anthropic.com`).
    pub fn with_options(
        kind: ProviderKind,
        base_url: Option<&str>,
        settings: HttpSettings,
        options: &ProviderOptions,
    ) -> Result<Self, ProviderError> {
        let base_url = base_url
            .or(kind.default_base_url())
            .ok_or(ProviderError::NoBaseUrl(kind.as_str()))?;
        let base_url = parse_base_url(base_url)?;
        let lanes = Lanes::new(settings.lanes, || http_client(&settings))
            .map_err(ProviderError::ClientBuild)?;
        Ok(ProviderClient {
            kind,
            api: registry::build(kind, options),
            base_url,
            lanes: Arc::new(lanes),
            max_response_bytes: MAX_RESPONSE_BYTES,
        })
    }

    /// How many independent connection pools the calls are spread over.
    pub fn lanes(&self) -> usize {
        self.lanes.count()
    }

    /// Which provider this client speaks to.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// See [`ProviderApi::tpm_counts_output_allowance`].
    pub fn tpm_counts_output_allowance(&self) -> bool {
        self.api.tpm_counts_output_allowance()
    }

    /// Send `request` with `key` and classify the answer. Never panics; no
    /// message in the result contains the key.
    pub async fn call(&self, key: &ApiKey, request: &ProviderRequest) -> Outcome {
        let outcome = self.call_unredacted(key, request).await;
        let outcome = redact_outcome(outcome, key);
        tracing::debug!(
            provider = self.kind.as_str(),
            key = %key.fingerprint(),
            model = %request.model,
            outcome = outcome.class().as_str(),
            "provider call finished"
        );
        outcome
    }

    async fn call_unredacted(&self, key: &ApiKey, request: &ProviderRequest) -> Outcome {
        let Some(auth) = self.api.auth_headers(key) else {
            return Outcome::Unauthorized {
                message: "API key contains characters not allowed in an HTTP header".to_owned(),
            };
        };
        let first = self.call_once(&auth, key, request).await;
        match first {
            // The provider refused the request's shape and the api adjusted:
            // one more call, no more.
            Answer::Read(status, ref body, _)
                if self.api.adjust_after_rejection(request, status, body) =>
            {
                tracing::info!(
                    provider = self.kind.as_str(),
                    model = %request.model,
                    "provider refused a parameter; sending once more in the shape it asked for"
                );
                self.call_once(&auth, key, request)
                    .await
                    .into_outcome(&*self.api)
            }
            other => other.into_outcome(&*self.api),
        }
    }

    /// One HTTP exchange; the body is redacted before anyone parses it.
    async fn call_once(&self, auth: &HeaderMap, key: &ApiKey, request: &ProviderRequest) -> Answer {
        let body = match self.api.body(request) {
            Ok(body) => body,
            Err(e) => {
                return Answer::Failed(Outcome::job_failed(
                    FailureKind::BadRequest,
                    format!("cannot encode the request: {e}"),
                ));
            }
        };
        let url = self.api.endpoint(&self.base_url, request);
        // Held until the body is read: the HTTP/2 stream is open until then.
        let lane = self.lanes.acquire();
        let response = match send(lane.http(), url, auth.clone(), body).await {
            Ok(r) => r,
            Err(e) => return Answer::Failed(transport_error(e)),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        match read_capped(response, self.max_response_bytes).await {
            // Redact the body before parsing so no message built from it,
            // even a truncated one, can hold part of the key.
            Ok(body) => Answer::Read(status, redact_body(body, key), headers),
            Err(outcome) => Answer::Failed(billed_if_accepted(status, outcome)),
        }
    }
}

/// What one HTTP exchange produced.
enum Answer {
    /// Status, redacted body, headers.
    Read(u16, Vec<u8>, HeaderMap),
    /// No usable answer (transport error, body over the cap).
    Failed(Outcome),
}

impl Answer {
    fn into_outcome(self, api: &dyn ProviderApi) -> Outcome {
        match self {
            Answer::Read(status, body, headers) => {
                let outcome = classify(api, status, &headers, &body, Timestamp::now());
                billed_if_accepted(status, outcome)
            }
            Answer::Failed(outcome) => outcome,
        }
    }
}

fn http_client(settings: &HttpSettings) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(settings.timeouts.connect)
        .timeout(settings.timeouts.total)
        // Redirects would carry the key headers to wherever they point.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent(settings.instance.as_deref()));
    if settings.version == HttpVersion::Http2PriorKnowledge {
        builder = builder.http2_prior_knowledge();
    }
    builder.build()
}

/// `keyrelay/VERSION`, with the instance's name when it has one.
fn user_agent(instance: Option<&str>) -> String {
    let product = concat!("keyrelay/", env!("CARGO_PKG_VERSION"));
    match instance {
        Some(name) => format!("{product} (instance {name})"),
        None => product.to_owned(),
    }
}

async fn send(
    http: &reqwest::Client,
    url: Url,
    mut headers: HeaderMap,
    body: Vec<u8>,
) -> Result<Response, reqwest::Error> {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    http.post(url).headers(headers).body(body).send().await
}

/// Accept only http(s) URLs with no credentials, query or fragment: keys go
/// in headers, and nothing else secret should sit in configuration URLs.
fn parse_base_url(raw: &str) -> Result<Url, ProviderError> {
    let bad = |reason: &str| ProviderError::BadBaseUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("scheme must be http or https"));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials are not allowed in the URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("query and fragment are not allowed"));
    }
    Ok(url)
}

/// Read the whole body, giving up past `cap` bytes.
async fn read_capped(mut response: Response, cap: usize) -> Result<Vec<u8>, Outcome> {
    let too_large = || Outcome::Transient {
        message: "response body too large".to_owned(),
    };
    let declared = response.content_length().unwrap_or(0);
    if usize::try_from(declared).map_or(true, |n| n > cap) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > cap => return Err(too_large()),
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(e) => return Err(transport_error(e)),
        }
    }
}

/// A 2xx answer whose body cannot be used (malformed, truncated, too large)
/// was most likely billed: it must not be retried like a transient failure.
fn billed_if_accepted(status: u16, outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Transient { message } if (200..300).contains(&status) => {
            Outcome::InvalidResponse {
                message: format!("HTTP {status} with an unusable body: {message}"),
            }
        }
        other => other,
    }
}

/// A transport failure: the error and its causes, without the URL.
fn transport_error(e: reqwest::Error) -> Outcome {
    let e = e.without_url();
    let mut message = if e.is_timeout() {
        format!("timed out: {e}")
    } else {
        e.to_string()
    };
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    Outcome::Transient { message }
}

/// Replace the key wherever the provider echoed it.
fn redact_body(body: Vec<u8>, key: &ApiKey) -> Vec<u8> {
    let redacted = {
        let text = String::from_utf8_lossy(&body);
        text.contains(key.expose()).then(|| key.redact(&text))
    };
    redacted.map_or(body, String::into_bytes)
}

/// Redact and bound the message of any non-success outcome.
fn redact_outcome(outcome: Outcome, key: &ApiKey) -> Outcome {
    let outcome = match outcome {
        Outcome::JobFailed(mut failure) => {
            // A partial answer is the model's text, but it may echo the prompt.
            failure.partial_text = failure.partial_text.map(|t| key.redact(&t));
            Outcome::JobFailed(failure)
        }
        other => other,
    };
    outcome.map_message(|m| truncate_chars(&key.redact(&m), MAX_MESSAGE_CHARS))
}

#[cfg(test)]
mod tests;
