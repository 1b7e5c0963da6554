//! Query-string parameters: parsed strictly (an unknown or malformed parameter
//! is a 400 naming it), times as RFC 3339 or relative to now (`90s`, `15m`,
//! `6h`, `7d` ago).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::errors::ApiError;

/// The parameters of one request, checked against what the endpoint accepts.
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parse `query`, refusing names outside `allowed` and repeated names.
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Params, ApiError> {
        let pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| ApiError::bad(format!("malformed query string: {e}")))?
            .into_inner();
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                return Err(ApiError::bad(format!(
                    "unknown parameter `{name}` (accepted: {})",
                    allowed.join(", ")
                )));
            }
            if map.insert(name.clone(), value).is_some() {
                return Err(ApiError::bad(format!("parameter `{name}` given twice")));
            }
        }
        Ok(Params(map))
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A time parameter.
    pub fn time(&self, name: &str, now: Timestamp) -> Result<Option<Timestamp>, ApiError> {
        self.text(name)
            .map(|v| parse_time(name, v, now))
            .transpose()
    }

    /// An integer in `1..=max`.
    pub fn count(&self, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        let Some(raw) = self.text(name) else {
            return Ok(default);
        };
        match raw.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(format!(
                "`{name}` must be an integer from 1 to {max}, not `{raw}`"
            ))),
        }
    }

    /// One of `choices`.
    pub fn choice<'a>(
        &self,
        name: &str,
        choices: &[&'a str],
        default: &'a str,
    ) -> Result<&'a str, ApiError> {
        let Some(raw) = self.text(name) else {
            return Ok(default);
        };
        choices.iter().copied().find(|c| *c == raw).ok_or_else(|| {
            ApiError::bad(format!(
                "`{name}` must be one of {}, not `{raw}`",
                choices.join(", ")
            ))
        })
    }

    /// Like [`Params::choice`], `None` when the parameter is absent.
    pub fn optional_choice<'a>(
        &self,
        name: &str,
        choices: &[&'a str],
    ) -> Result<Option<&'a str>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(_) => self.choice(name, choices, "").map(Some),
        }
    }
}

/// RFC 3339 (`2026-05-01T12:00:00Z`) or a duration ago (`30s`, `15m`, `6h`, `7d`).
pub fn parse_time(name: &str, value: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    if let Ok(at) = value.parse::<Timestamp>() {
        return Ok(at);
    }
    let bad = || {
        ApiError::bad(format!(
            "`{name}` must be an RFC 3339 time (2026-05-01T12:00:00Z) or a duration ago (30s, 15m, 6h, 7d), not `{value}`"
        ))
    };
    let split = value.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(bad)?,
        "h" => n.checked_mul(3600).ok_or_else(bad)?,
        "d" => n.checked_mul(86_400).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if !(0..=10 * 366 * 86_400).contains(&secs) {
        return Err(bad());
    }
    now.checked_sub(SignedDuration::from_secs(secs))
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parameters() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let p = Params::parse("since=1h&limit=10", &["since", "limit"]).unwrap();
        assert_eq!(
            p.time("since", now).unwrap(),
            Some(Timestamp::from_second(1_000_000 - 3600).unwrap())
        );
        assert_eq!(p.count("limit", 50, 100).unwrap(), 10);
        assert!(Params::parse("nope=1", &["since"]).is_err());
        assert!(Params::parse("since=1&since=2", &["since"]).is_err());
        let p = Params::parse("since=yesterday&limit=0", &["since", "limit"]).unwrap();
        assert!(p.time("since", now).is_err());
        assert!(p.count("limit", 50, 100).is_err());
        let p = Params::parse("since=2026-05-01T12:00:00Z", &["since"]).unwrap();
        assert!(p.time("since", now).unwrap().is_some());
    }
}
