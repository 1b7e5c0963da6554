//! Maps a provider's HTTP answer (status, headers, body) onto an [`Outcome`], and
//! parses the retry hints providers send (`retry-after`, Go-style durations).
//!
//! [`classify`] is pure: the per-provider error rules live beside each wire
//! format (`gemini.rs`, `openai.rs`, `anthropic.rs`, `azure.rs`); the
//! fallbacks and the parsers they share live here.

use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::HeaderMap;

use super::api::ProviderApi;
use super::outcome::{FailureKind, Outcome};

/// Longest provider message kept in an [`Outcome`], in chars.
pub const MAX_MESSAGE_CHARS: usize = 500;

/// Classify one non-transport answer with `api`'s rules: 2xx goes to its
/// success parser, everything else to its error rules (which fall back on
/// [`by_status`]).
pub fn classify(
    api: &dyn ProviderApi,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Outcome {
    if (200..300).contains(&status) {
        return match api.parse_success(body) {
            Outcome::Success(mut completion) => {
                completion.limit_until = api.limit_until(headers, now);
                Outcome::Success(completion)
            }
            other => other,
        };
    }
    api.classify_error(status, headers, body, now)
}

/// The rules shared by every provider, for answers its own rules do not know.
pub fn by_status(status: u16, headers: &HeaderMap, message: String, now: Timestamp) -> Outcome {
    match status {
        429 => Outcome::RateLimited {
            retry_after: retry_after_from_headers(headers, now).or_else(|| retry_hint_in(&message)),
            message,
        },
        401 | 403 => Outcome::Unauthorized { message },
        // Payment Required is about the account behind the key, never the job.
        402 => Outcome::QuotaExhausted {
            until: None,
            message,
        },
        // Timeouts and conflicts go away on their own.
        408 | 409 => Outcome::Transient { message },
        413 => Outcome::job_failed(FailureKind::TooLarge, message),
        400..=499 => Outcome::job_failed(FailureKind::BadRequest, message),
        // 5xx, 529 and anything outside 4xx (a redirect we refused to follow, 1xx).
        _ => Outcome::Transient { message },
    }
}

/// `message` truncated, or a description of the status and raw body when the
/// provider gave no message (non-JSON bodies from proxies and gateways).
pub fn message_or_body(message: Option<&str>, status: u16, body: &[u8]) -> String {
    if let Some(m) = message.map(str::trim).filter(|m| !m.is_empty()) {
        return truncate_chars(m, MAX_MESSAGE_CHARS);
    }
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unknown status");
    let text = String::from_utf8_lossy(body);
    let snippet: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if snippet.is_empty() {
        format!("HTTP {status} {reason}")
    } else {
        truncate_chars(
            &format!("HTTP {status} {reason}: {snippet}"),
            MAX_MESSAGE_CHARS,
        )
    }
}

/// At most `max` chars of `s`, with an ellipsis when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// A header's value as text, if present and visible ASCII.
pub fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// `retry-after-ms` (OpenAI, fractional milliseconds) or else `retry-after`.
pub fn retry_after_from_headers(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let from_ms = header_str(headers, "retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok());
    from_ms.or_else(|| parse_retry_after(header_str(headers, "retry-after")?, now))
}

/// `retry-after`: delay-seconds (fractions tolerated) or an HTTP-date.
/// A date in the past means "now".
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    let at = PARSER.parse_timestamp(value).ok()?;
    Some(until(at, now))
}

/// Time from `now` to `at`, zero if `at` has passed.
pub fn until(at: Timestamp, now: Timestamp) -> Duration {
    let ms = at.as_millisecond().saturating_sub(now.as_millisecond());
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// An RFC 3339 timestamp header (Anthropic `*-reset`) as a delay from `now`.
pub fn rfc3339_header_delay(headers: &HeaderMap, name: &str, now: Timestamp) -> Option<Duration> {
    let at: Timestamp = header_str(headers, name)?.parse().ok()?;
    Some(until(at, now))
}

/// Whether a rate-limit "remaining" header says the limit is used up.
pub fn is_spent(headers: &HeaderMap, name: &str) -> bool {
    header_str(headers, name).and_then(|v| v.parse::<u64>().ok()) == Some(0)
}

/// `now + delay`, for a limit a success's headers say is used up; at most a
/// day out, so an absurd reset header cannot park a key for years.
pub fn limit_instant(now: Timestamp, delay: Option<Duration>) -> Option<Timestamp> {
    after(now, delay?.min(Duration::from_secs(24 * 3600)))
}

/// `now + wait`, if representable.
pub fn after(now: Timestamp, wait: Duration) -> Option<Timestamp> {
    now.checked_add(jiff::SignedDuration::try_from(wait).ok()?)
        .ok()
}

/// The whole number right after the first `marker` in `text` ("Limit 30000,
/// Requested 50000": `number_after(m, "Limit ")` is 30000). Thousands
/// separators are skipped.
pub fn number_after(text: &str, marker: &str) -> Option<u64> {
    let start = text.find(marker)? + marker.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Parse a Go `time.Duration` string (`"17s"`, `"0.5s"`, `"6m0s"`, `"20ms"`,
/// `"1h2m3.5s"`), which is also protobuf's JSON `Duration` (`"17s"`).
/// Negative, empty or unknown units give `None`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = num.parse().ok()?;
        let unit_secs = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total = total.checked_add(Duration::try_from_secs_f64(value * unit_secs).ok()?)?;
        rest = tail;
    }
    Some(total)
}

/// A delay quoted in a message: "Please try again in 6s." (OpenAI), "Please
/// retry in 20.04466179s." (Gemini), "Please retry after 6 seconds." or "Try
/// again in 50 seconds." (Azure). The last resort for a 429.
pub fn retry_hint_in(message: &str) -> Option<Duration> {
    let lower = message.to_ascii_lowercase();
    let start = ["try again in ", "retry in ", "retry after "]
        .iter()
        .find_map(|p| lower.find(p).map(|i| i + p.len()))?;
    let mut words = lower[start..].split_whitespace();
    let token = words.next()?.trim_end_matches(['.', ',', ')']);
    if let Some(delay) = parse_go_duration(token) {
        return Some(delay);
    }
    let value: f64 = token.parse().ok()?;
    let unit = match words.next()?.trim_end_matches(['.', ',', ')']) {
        "second" | "seconds" => 1.0,
        "minute" | "minutes" => 60.0,
        "hour" | "hours" => 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(value * unit).ok()
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
