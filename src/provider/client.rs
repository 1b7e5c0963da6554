//! The HTTP client one pool shares across its keys: builds the provider URL and
//! headers, sends one request, reads the answer under a size cap and hands it to
//! [`classify`]. Keys travel in headers only; every message is redacted.

use std::error::Error as _;
use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Response, Url};
use serde::Serialize;

use super::classify::{MAX_MESSAGE_CHARS, classify, limit_until, truncate_chars};
use super::{Outcome, ProviderKind, ProviderRequest, anthropic, gemini, openai};
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
    #[error("invalid provider base URL {url:?}: {reason}")]
    BadBaseUrl { url: String, reason: String },
    #[error("cannot build HTTP client: {0}")]
    ClientBuild(#[source] reqwest::Error),
}

/// One provider endpoint. Cloning is cheap: the connection pool is shared.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    kind: ProviderKind,
    base_url: Url,
    http: reqwest::Client,
    max_response_bytes: usize,
}

impl ProviderClient {
    /// `base_url`: Gemini `https://generativelanguage.googleapis.com`, OpenAI
    /// `https://api.openai.com/v1`, Anthropic `https://api.anthropic.com`.
    pub fn new(
        kind: ProviderKind,
        base_url: &str,
        timeouts: HttpTimeouts,
        version: HttpVersion,
    ) -> Result<Self, ProviderError> {
        let base_url = parse_base_url(base_url)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.total)
            // Redirects would carry the key headers to wherever they point.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keyrelay/", env!("CARGO_PKG_VERSION")));
        if version == HttpVersion::Http2PriorKnowledge {
            builder = builder.http2_prior_knowledge();
        }
        let http = builder.build().map_err(ProviderError::ClientBuild)?;
        Ok(ProviderClient {
            kind,
            base_url,
            http,
            max_response_bytes: MAX_RESPONSE_BYTES,
        })
    }

    pub fn kind(&self) -> ProviderKind {
        self.kind
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
        let Some(auth) = auth_headers(self.kind, key) else {
            return Outcome::Unauthorized {
                message: "API key contains characters not allowed in an HTTP header".to_owned(),
            };
        };
        let sent = match self.kind {
            ProviderKind::Gemini => {
                let url =
                    self.endpoint(&["v1beta", "models", &gemini::method_segment(&request.model)]);
                self.send(url, auth, &gemini::request_body(request)).await
            }
            ProviderKind::Openai => {
                let url = self.endpoint(&["chat", "completions"]);
                self.send(url, auth, &openai::request_body(request)).await
            }
            ProviderKind::Anthropic => {
                let url = self.endpoint(&["v1", "messages"]);
                self.send(url, auth, &anthropic::request_body(request))
                    .await
            }
        };
        let response = match sent {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let outcome = match read_capped(response, self.max_response_bytes).await {
            Ok(body) => {
                // Redact the body before parsing so no message built from it,
                // even a truncated one, can hold part of the key.
                let body = redact_body(body, key);
                let now = Timestamp::now();
                match classify(self.kind, status, &headers, &body, now) {
                    Outcome::Success(mut completion) => {
                        completion.limit_until = limit_until(self.kind, &headers, now);
                        Outcome::Success(completion)
                    }
                    other => other,
                }
            }
            Err(outcome) => outcome,
        };
        billed_if_accepted(status, outcome)
    }

    /// `base_url` with `segments` appended (each percent-encoded as needed).
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        // parse_base_url rejected cannot-be-a-base URLs, so this always applies.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(
        &self,
        url: Url,
        auth: HeaderMap,
        body: &impl Serialize,
    ) -> Result<Response, reqwest::Error> {
        self.http.post(url).headers(auth).json(body).send().await
    }
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

/// The provider's authentication headers, marked sensitive so they are never
/// printed. `None` if the key cannot be a header value.
fn auth_headers(kind: ProviderKind, key: &ApiKey) -> Option<HeaderMap> {
    let (name, value) = match kind {
        ProviderKind::Gemini => ("x-goog-api-key", key.expose().to_owned()),
        ProviderKind::Openai => ("authorization", format!("Bearer {}", key.expose())),
        ProviderKind::Anthropic => ("x-api-key", key.expose().to_owned()),
    };
    let mut value = HeaderValue::from_str(&value).ok()?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static(name), value);
    if kind == ProviderKind::Anthropic {
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(anthropic::API_VERSION),
        );
    }
    Some(headers)
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

/// A transport failure: the error and its causes, without the URL.
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
    let clean = |m: String| truncate_chars(&key.redact(&m), MAX_MESSAGE_CHARS);
    match outcome {
        Outcome::Success(c) => Outcome::Success(c),
        Outcome::RateLimited {
            retry_after,
            message,
        } => Outcome::RateLimited {
            retry_after,
            message: clean(message),
        },
        Outcome::QuotaExhausted { until, message } => Outcome::QuotaExhausted {
            until,
            message: clean(message),
        },
        Outcome::Transient { message } => Outcome::Transient {
            message: clean(message),
        },
        Outcome::Unauthorized { message } => Outcome::Unauthorized {
            message: clean(message),
        },
        Outcome::InvalidResponse { message } => Outcome::InvalidResponse {
            message: clean(message),
        },
        Outcome::BadRequest { message } => Outcome::BadRequest {
            message: clean(message),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ChatMessage, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    const KEY: &str = "AIzaSyFAKE-test-key-0123456789";

    fn timeouts() -> HttpTimeouts {
        HttpTimeouts {
            connect: Duration::from_secs(2),
            total: Duration::from_secs(5),
        }
    }

    fn request() -> ProviderRequest {
        ProviderRequest {
            model: "gemini-2.0-flash".to_owned(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: "hi".to_owned(),
            }],
            json_output: false,
            max_output_tokens: None,
            temperature: None,
            user: None,
        }
    }

    /// Serve one connection with `response`; yield the raw request received.
    async fn one_shot_server(response: String) -> (String, oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the headers and the declared body have arrived.
            while !request_complete(&raw) {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            let _ = tx.send(String::from_utf8_lossy(&raw).into_owned());
        });
        (base, rx)
    }

    fn request_complete(raw: &[u8]) -> bool {
        let text = String::from_utf8_lossy(raw);
        let Some(end) = text.find("\r\n\r\n") else {
            return false;
        };
        let length = text[..end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(str::to_owned)
            })
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        raw.len() >= end + 4 + length
    }

    fn http_response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[tokio::test]
    async fn key_goes_in_header_and_echoed_key_is_redacted() {
        let body = format!(
            r#"{{"error": {{"code": 400, "message": "API key not valid: {KEY}", "status": "INVALID_ARGUMENT"}}}}"#
        );
        let (base, received) = one_shot_server(http_response("400 Bad Request", &body)).await;
        let client = ProviderClient::new(
            ProviderKind::Gemini,
            &base,
            timeouts(),
            HttpVersion::Negotiated,
        )
        .unwrap();
        let key = ApiKey::new(KEY);

        let outcome = client.call(&key, &request()).await;

        let raw = received.await.unwrap();
        let request_line = raw.lines().next().unwrap();
        assert_eq!(
            request_line,
            "POST /v1beta/models/gemini-2.0-flash:generateContent HTTP/1.1"
        );
        assert!(
            raw.to_ascii_lowercase()
                .contains(&format!("x-goog-api-key: {}", KEY.to_ascii_lowercase()))
        );
        let Outcome::Unauthorized { message } = outcome else {
            panic!("expected Unauthorized, got {outcome:?}");
        };
        assert!(!message.contains(KEY), "{message}");
        assert!(message.contains(&key.fingerprint()), "{message}");
    }

    #[tokio::test]
    async fn openai_success_round_trip() {
        let body = r#"{"choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}"#;
        let (base, received) = one_shot_server(http_response("200 OK", body)).await;
        let client = ProviderClient::new(
            ProviderKind::Openai,
            &format!("{base}v1"),
            timeouts(),
            HttpVersion::Negotiated,
        )
        .unwrap();

        let outcome = client
            .call(&ApiKey::new("sk-test-123456"), &request())
            .await;

        let raw = received.await.unwrap();
        assert!(
            raw.starts_with("POST /v1/chat/completions HTTP/1.1"),
            "{raw}"
        );
        assert!(
            raw.to_ascii_lowercase()
                .contains("authorization: bearer sk-test-123456")
        );
        assert!(matches!(outcome, Outcome::Success(c) if c.text == "hello"));
    }

    #[tokio::test]
    async fn oversized_success_body_is_an_invalid_response() {
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
                       8\r\n{\"choice\r\n8\r\ns\": []}  \r\n0\r\n\r\n";
        for response in [http_response("200 OK", &" ".repeat(64)), chunked.to_owned()] {
            let (base, _received) = one_shot_server(response).await;
            let mut client = ProviderClient::new(
                ProviderKind::Openai,
                &base,
                timeouts(),
                HttpVersion::Negotiated,
            )
            .unwrap();
            client.max_response_bytes = 12;
            let outcome = client.call(&ApiKey::new(KEY), &request()).await;
            // A 200 was probably billed: not a transient failure to retry.
            assert_eq!(
                outcome,
                Outcome::InvalidResponse {
                    message: "HTTP 200 with an unusable body: response body too large".to_owned()
                }
            );
        }
    }

    #[tokio::test]
    async fn silent_server_times_out_as_transient() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let short = HttpTimeouts {
            connect: Duration::from_secs(1),
            total: Duration::from_millis(200),
        };
        let client =
            ProviderClient::new(ProviderKind::Gemini, &base, short, HttpVersion::Negotiated)
                .unwrap();
        let outcome = client.call(&ApiKey::new(KEY), &request()).await;
        assert!(
            matches!(&outcome, Outcome::Transient { message } if message.starts_with("timed out")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn prior_knowledge_opens_with_the_http2_preface() {
        // An HTTP/1.1-only server: the client must not fall back to it.
        let (base, received) = one_shot_server(http_response("200 OK", "{}")).await;
        let client = ProviderClient::new(
            ProviderKind::Gemini,
            &base,
            timeouts(),
            HttpVersion::Http2PriorKnowledge,
        )
        .unwrap();

        let outcome = client.call(&ApiKey::new(KEY), &request()).await;

        let raw = received.await.unwrap();
        assert!(
            raw.starts_with("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            "{raw:?}"
        );
        assert!(matches!(outcome, Outcome::Transient { .. }), "{outcome:?}");
    }

    #[tokio::test]
    async fn prior_knowledge_round_trip_with_the_mock() {
        use crate::mock_provider::{MockKey, MockProvider, MockSettings};
        let settings = MockSettings::with_keys(vec![MockKey::new("k", KEY)]);
        let mock = MockProvider::start(settings, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client = ProviderClient::new(
            ProviderKind::Gemini,
            &mock.gemini_base_url(),
            timeouts(),
            HttpVersion::Http2PriorKnowledge,
        )
        .unwrap();

        let (key, request) = (ApiKey::new(KEY), request());
        let calls = (0..4).map(|_| client.call(&key, &request));
        let outcomes = futures_util::future::join_all(calls).await;

        for outcome in outcomes {
            assert!(matches!(outcome, Outcome::Success(_)), "{outcome:?}");
        }
        assert_eq!(mock.stats().key("k").successes, 4);
        mock.stop().await;
    }

    #[tokio::test]
    async fn closed_port_is_transient() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = ProviderClient::new(
            ProviderKind::Anthropic,
            &format!("http://{addr}"),
            timeouts(),
            HttpVersion::Negotiated,
        )
        .unwrap();
        let outcome = client.call(&ApiKey::new(KEY), &request()).await;
        let Outcome::Transient { message } = outcome else {
            panic!("expected Transient, got {outcome:?}");
        };
        assert!(
            !message.contains(&addr.to_string()),
            "URL leaked: {message}"
        );
    }

    #[test]
    fn rejects_bad_base_urls() {
        for bad in [
            "not a url",
            "ftp://x",
            "https://u:p@host",
            "https://host/?key=abc",
            "mailto:a@b",
        ] {
            let result = ProviderClient::new(
                ProviderKind::Openai,
                bad,
                timeouts(),
                HttpVersion::Negotiated,
            );
            assert!(
                matches!(result, Err(ProviderError::BadBaseUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn endpoints_tolerate_trailing_slash() {
        for base in ["https://api.anthropic.com", "https://api.anthropic.com/"] {
            let client = ProviderClient::new(
                ProviderKind::Anthropic,
                base,
                timeouts(),
                HttpVersion::Negotiated,
            )
            .unwrap();
            assert_eq!(
                client.endpoint(&["v1", "messages"]).as_str(),
                "https://api.anthropic.com/v1/messages"
            );
        }
        let client = ProviderClient::new(
            ProviderKind::Openai,
            "https://api.openai.com/v1/",
            timeouts(),
            HttpVersion::Negotiated,
        )
        .unwrap();
        assert_eq!(
            client.endpoint(&["chat", "completions"]).as_str(),
            "https://api.openai.com/v1/chat/completions"
        );
    }

    #[test]
    fn anthropic_headers_carry_key_and_version() {
        let headers = auth_headers(ProviderKind::Anthropic, &ApiKey::new("sk-ant-x")).unwrap();
        assert_eq!(headers["x-api-key"], "sk-ant-x");
        assert!(headers["x-api-key"].is_sensitive());
        assert_eq!(headers["anthropic-version"], "2023-06-01");
        assert!(auth_headers(ProviderKind::Gemini, &ApiKey::new("bad\nkey")).is_none());
    }
}
