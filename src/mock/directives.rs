//! Per-request fault directives: `[[mock:...]]` markers in the last user message.
//!
//! One marker may hold several comma-separated items (`[[mock:sleep_ms=50,status=503]]`)
//! and a message may hold several markers. An unknown item is an error so that a typo
//! in a test fails loudly instead of silently testing the happy path.

use std::time::Duration;

use super::state::Forced;

const OPEN: &str = "[[mock:";
const CLOSE: &str = "]]";

/// Default time over which `slow_body` dribbles its body.
pub(crate) const SLOW_BODY_DEFAULT: Duration = Duration::from_secs(3);

/// How the body of an otherwise normal answer is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFault {
    /// 200 whose body is not JSON.
    Malformed,
    /// 200 JSON without the text fields.
    MissingFields,
    /// Declares a longer Content-Length than it sends, then closes.
    Truncate,
    /// Closes the connection without answering.
    Reset,
    /// A 12 MiB success body.
    Huge,
    /// Headers at once, then the body in pieces over this long.
    SlowBody(Duration),
}

/// Everything the markers of one message ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    /// Answer with this error status and the provider's matching body.
    pub status: Option<u16>,
    /// Extra delay before answering an admitted request (refusals at the
    /// door, rate limits included, come back at once).
    pub sleep: Option<Duration>,
    /// Success whose text is not JSON.
    pub invalid_json: bool,
    /// JSON that ignores the requested schema (the model did not follow it).
    pub off_schema: bool,
    pub body: Option<BodyFault>,
    pub forced: Option<Forced>,
    /// Answer with this recorded real answer (see `replay`).
    pub replay: Option<String>,
    /// Report this many prompt tokens as read from the provider's cache.
    pub cached_tokens: Option<u64>,
    /// Report this many reasoning tokens spent besides the answer's text.
    pub reasoning_tokens: Option<u64>,
}

/// Parses every marker in `text`; Err names the first item it does not understand.
pub(crate) fn parse(text: &str) -> Result<Directives, String> {
    let mut directives = Directives::default();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else {
            return Err(format!("unterminated mock directive {:?}", &rest[start..]));
        };
        for item in after[..end]
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            apply(&mut directives, item)?;
        }
        rest = &after[end + CLOSE.len()..];
    }
    Ok(directives)
}

fn apply(d: &mut Directives, item: &str) -> Result<(), String> {
    let (name, value) = match item.split_once('=') {
        Some((name, value)) => (name.trim(), Some(value.trim())),
        None => (item, None),
    };
    match name {
        "status" => d.status = Some(status(value)?),
        "sleep_ms" => d.sleep = Some(required_ms(name, value)?),
        "invalid_json" => d.invalid_json = true,
        "off_schema" => d.off_schema = true,
        "malformed" => d.body = Some(BodyFault::Malformed),
        "missing_fields" => d.body = Some(BodyFault::MissingFields),
        "truncate" => d.body = Some(BodyFault::Truncate),
        "reset" => d.body = Some(BodyFault::Reset),
        "huge" => d.body = Some(BodyFault::Huge),
        "slow_body" => {
            let over = optional_ms(name, value)?.unwrap_or(SLOW_BODY_DEFAULT);
            d.body = Some(BodyFault::SlowBody(over));
        }
        "rate_limit" => d.forced = Some(Forced::RateLimit(optional_ms(name, value)?)),
        "exhausted" => d.forced = Some(Forced::Exhausted(optional_ms(name, value)?)),
        "cached" => d.cached_tokens = Some(count(name, value)?),
        "reasoning" => d.reasoning_tokens = Some(count(name, value)?),
        "replay" => {
            let fixture = value.filter(|v| !v.is_empty());
            d.replay = Some(
                fixture
                    .ok_or("replay needs a recorded answer's name")?
                    .to_string(),
            );
        }
        _ => return Err(format!("unknown mock directive {item:?}")),
    }
    Ok(())
}

fn count(name: &str, value: Option<&str>) -> Result<u64, String> {
    value
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| format!("{name} needs a number of tokens, got {value:?}"))
}

fn status(value: Option<&str>) -> Result<u16, String> {
    let code = value
        .and_then(|v| v.parse::<u16>().ok())
        .ok_or_else(|| format!("status needs a number, got {value:?}"))?;
    // Only error statuses: a "status=200" would be a success without a body.
    if (400..=599).contains(&code) {
        Ok(code)
    } else {
        Err(format!("status={code} is not an error status (400..=599)"))
    }
}

fn optional_ms(name: &str, value: Option<&str>) -> Result<Option<Duration>, String> {
    value
        .map(|v| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{name} needs milliseconds, got {v:?}"))
        })
        .transpose()
}

fn required_ms(name: &str, value: Option<&str>) -> Result<Duration, String> {
    optional_ms(name, value)?.ok_or_else(|| format!("{name} needs a value in milliseconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_has_no_directives() {
        assert_eq!(parse("hello [[not:mock]]"), Ok(Directives::default()));
    }

    #[test]
    fn several_markers_and_items() {
        let d = parse("a [[mock:sleep_ms=20, status=503]] b [[mock:truncate]]").unwrap();
        assert_eq!(d.status, Some(503));
        assert_eq!(d.sleep, Some(Duration::from_millis(20)));
        assert_eq!(d.body, Some(BodyFault::Truncate));
        let d = parse("[[mock:rate_limit=1500]][[mock:invalid_json]]").unwrap();
        assert_eq!(
            d.forced,
            Some(Forced::RateLimit(Some(Duration::from_millis(1500))))
        );
        assert!(d.invalid_json);
        assert_eq!(
            parse("[[mock:slow_body]]").unwrap().body,
            Some(BodyFault::SlowBody(SLOW_BODY_DEFAULT))
        );
    }

    #[test]
    fn bad_directives_are_errors() {
        assert!(parse("[[mock:statu=503]]").is_err());
        assert!(parse("[[mock:status=200]]").is_err());
        assert!(parse("[[mock:sleep_ms]]").is_err());
        assert!(parse("[[mock:cached]]").is_err());
        let d = parse("[[mock:cached=40,reasoning=7]]").unwrap();
        assert_eq!((d.cached_tokens, d.reasoning_tokens), (Some(40), Some(7)));
        assert!(parse("[[mock:reset").is_err());
    }
}
