use super::*;
use crate::provider::{ChatMessage, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

const KEY: &str = "AIzaSyFAKE-test-key-0123456789";

fn timeouts() -> HttpTimeouts {
    HttpTimeouts {
        connect: Duration::from_secs(2),
        total: Duration::from_secs(5),
    }
}

/// HTTP/2 in clear text over `lanes` connections.
fn h2c(lanes: usize) -> HttpSettings {
    HttpSettings {
        version: HttpVersion::Http2PriorKnowledge,
        lanes,
        ..HttpSettings::new(timeouts())
    }
}

fn request() -> ProviderRequest {
    ProviderRequest {
        model: "gemini-2.0-flash".to_owned(),
        messages: vec![ChatMessage {
            role: Role::User,
            content: "hi".into(),
        }],
        output: Default::default(),
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
    let client =
        ProviderClient::new(ProviderKind::Gemini, &base, HttpSettings::new(timeouts())).unwrap();
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
        HttpSettings::new(timeouts()),
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
        let mut client =
            ProviderClient::new(ProviderKind::Openai, &base, HttpSettings::new(timeouts()))
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
        ProviderClient::new(ProviderKind::Gemini, &base, HttpSettings::new(short)).unwrap();
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
    let client = ProviderClient::new(ProviderKind::Gemini, &base, h2c(1)).unwrap();

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
    use keyrelay_mock::{MockKey, MockProvider, MockSettings};
    let settings = MockSettings::with_keys(vec![MockKey::new("k", KEY)]);
    let mock = MockProvider::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client =
        ProviderClient::new(ProviderKind::Gemini, &mock.gemini_base_url(), h2c(1)).unwrap();

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
        HttpSettings::new(timeouts()),
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
        let result = ProviderClient::new(ProviderKind::Openai, bad, HttpSettings::new(timeouts()));
        assert!(
            matches!(result, Err(ProviderError::BadBaseUrl { .. })),
            "{bad}"
        );
    }
}

#[test]
fn endpoints_tolerate_trailing_slash() {
    use crate::provider::{ProviderOptions, registry};
    let request = ProviderRequest {
        model: "m".to_owned(),
        messages: Vec::new(),
        output: Default::default(),
        max_output_tokens: None,
        temperature: None,
        user: None,
    };
    let endpoint = |kind, base: &str| {
        let api = registry::build(kind, &ProviderOptions::default());
        api.endpoint(&reqwest::Url::parse(base).unwrap(), &request)
            .to_string()
    };
    for base in ["https://api.anthropic.com", "https://api.anthropic.com/"] {
        assert_eq!(
            endpoint(ProviderKind::Anthropic, base),
            "https://api.anthropic.com/v1/messages"
        );
    }
    assert_eq!(
        endpoint(ProviderKind::Openai, "https://api.openai.com/v1/"),
        "https://api.openai.com/v1/chat/completions"
    );
}

#[test]
fn anthropic_headers_carry_key_and_version() {
    use crate::provider::{ProviderOptions, registry};
    let api = |kind| registry::build(kind, &ProviderOptions::default());
    let headers = api(ProviderKind::Anthropic)
        .auth_headers(&ApiKey::new("sk-ant-x"))
        .unwrap();
    assert_eq!(headers["x-api-key"], "sk-ant-x");
    assert!(headers["x-api-key"].is_sensitive());
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(
        api(ProviderKind::Gemini)
            .auth_headers(&ApiKey::new("bad\nkey"))
            .is_none()
    );
}

const OPENAI_SUCCESS: &str = r#"{"choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}"#;

/// An h2c server that allows `max_streams` streams per connection, like a
/// provider's front end, and answers nothing until `release_at` requests are
/// open at once. Yields its base URL and the number of connections accepted.
async fn stream_capped_server(
    max_streams: u32,
    release_at: usize,
) -> (String, watch::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let (connections, connections_rx) = watch::channel(0);
    let (open, _) = watch::channel(0usize);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            connections.send_modify(|n| *n += 1);
            let open = open.clone();
            tokio::spawn(async move {
                let mut h2 = h2::server::Builder::new()
                    .max_concurrent_streams(max_streams)
                    .handshake::<_, bytes::Bytes>(socket)
                    .await
                    .unwrap();
                while let Some(Ok((_request, respond))) = h2.accept().await {
                    tokio::spawn(answer_when_released(open.clone(), release_at, respond));
                }
            });
        }
    });
    (base, connections_rx)
}

async fn answer_when_released(
    open: watch::Sender<usize>,
    release_at: usize,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
) {
    open.send_modify(|n| *n += 1);
    let _ = open.subscribe().wait_for(|&n| n >= release_at).await;
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    if let Ok(mut body) = respond.send_response(response, false) {
        let _ = body.send_data(OPENAI_SUCCESS.into(), true);
    }
}

/// Four calls at once against two streams per connection.
async fn four_calls(lanes: usize) -> (Vec<Outcome>, usize) {
    let (base, connections) = stream_capped_server(2, 4).await;
    let settings = HttpSettings {
        timeouts: HttpTimeouts {
            connect: Duration::from_secs(2),
            total: Duration::from_secs(2),
        },
        ..h2c(lanes)
    };
    let client = ProviderClient::new(ProviderKind::Openai, &base, settings).unwrap();
    let (key, request) = (ApiKey::new(KEY), request());
    let outcomes =
        futures_util::future::join_all((0..4).map(|_| client.call(&key, &request))).await;
    let accepted = *connections.borrow();
    (outcomes, accepted)
}

#[tokio::test]
async fn lanes_open_streams_past_one_connection_limit() {
    let (outcomes, connections) = four_calls(2).await;

    assert_eq!(connections, 2);
    for outcome in outcomes {
        assert!(matches!(outcome, Outcome::Success(_)), "{outcome:?}");
    }
}

#[tokio::test]
async fn one_connection_queues_calls_past_its_stream_limit() {
    // The control: with one lane the 3rd and 4th calls wait for a stream, the
    // server waits for them, and every call times out.
    let (outcomes, connections) = four_calls(1).await;

    assert_eq!(connections, 1);
    for outcome in outcomes {
        assert!(
            matches!(&outcome, Outcome::Transient { message } if message.starts_with("timed out")),
            "{outcome:?}"
        );
    }
}
