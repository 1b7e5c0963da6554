//! The classifier must turn any provider answer (status, headers, body) into
//! an outcome without panicking, with a bounded message.
#![no_main]

use keyrelay::provider::{Outcome, ProviderKind};
use keyrelay::provider::classify::{MAX_MESSAGE_CHARS, classify};
use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

const HEADERS: [&str; 6] = [
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let kind = match data[0] % 3 {
        0 => ProviderKind::Gemini,
        1 => ProviderKind::Openai,
        _ => ProviderKind::Anthropic,
    };
    let status = 100 + u16::from_le_bytes([data[1], data[2]]) % 500;
    // data[3] bytes of header value, then the body.
    let rest = &data[4..];
    let split = usize::from(data[3]).min(rest.len());
    let (header, body) = rest.split_at(split);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(header) {
        let name = HEADERS[usize::from(data[0] / 3) % HEADERS.len()];
        headers.insert(HeaderName::from_static(name), value);
    }
    let now = jiff::Timestamp::from_second(1_790_000_000).unwrap();
    let outcome = classify(kind, status, &headers, body, now);
    let message = match &outcome {
        Outcome::Success(_) => return,
        Outcome::RateLimited { message, .. }
        | Outcome::QuotaExhausted { message, .. }
        | Outcome::Transient { message }
        | Outcome::Unauthorized { message }
        | Outcome::BadRequest { message }
        | Outcome::InvalidResponse { message } => message,
    };
    // Messages are capped (plus an ellipsis).
    assert!(message.chars().count() <= MAX_MESSAGE_CHARS + 1, "{message}");
});
