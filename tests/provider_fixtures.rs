//! The corpus of real provider answers (tests/fixtures/providers/*.json, each
//! entry naming its public source) run through each provider's classifier:
//! every answer must lead to the decision the corpus expects.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use keyrelay_core::provider::classify::classify;
use keyrelay_core::provider::{FailureKind, Outcome, ProviderKind, ProviderOptions, registry};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
struct Corpus {
    provider: ProviderKind,
    now: Timestamp,
    fixtures: Vec<Fixture>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    name: String,
    source: String,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    body_text: Option<String>,
    expect: Expect,
}

/// What keyrelay must do with the answer.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
enum Expect {
    Success {
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        message_contains: Option<String>,
    },
    JobFails {
        kind: FailureKind,
        #[serde(default)]
        limit: Option<u64>,
        #[serde(default)]
        requested: Option<u64>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        partial_text: Option<String>,
        #[serde(default)]
        message_contains: Option<String>,
    },
    KeyCools {
        retry_after_secs: Option<f64>,
        #[serde(default)]
        message_contains: Option<String>,
    },
    KeyOutUntil {
        until: Option<Timestamp>,
        #[serde(default)]
        message_contains: Option<String>,
    },
    KeyDead {
        #[serde(default)]
        message_contains: Option<String>,
    },
    RetryElsewhere {
        #[serde(default)]
        message_contains: Option<String>,
    },
    InvalidResponse {
        #[serde(default)]
        message_contains: Option<String>,
    },
}

impl Expect {
    fn message_contains(&self) -> Option<&str> {
        match self {
            Expect::Success {
                message_contains, ..
            }
            | Expect::JobFails {
                message_contains, ..
            }
            | Expect::KeyCools {
                message_contains, ..
            }
            | Expect::KeyOutUntil {
                message_contains, ..
            }
            | Expect::KeyDead { message_contains }
            | Expect::RetryElsewhere { message_contains }
            | Expect::InvalidResponse { message_contains } => message_contains.as_deref(),
        }
    }
}

/// The decision an outcome amounts to, in the corpus's terms (only the
/// fields the corpus entry states are compared).
fn matches(expect: &Expect, outcome: &Outcome) -> bool {
    match (expect, outcome) {
        (Expect::Success { text, .. }, Outcome::Success(c)) => {
            text.as_ref().is_none_or(|t| *t == c.text)
        }
        (
            Expect::JobFails {
                kind,
                limit,
                requested,
                reason,
                partial_text,
                ..
            },
            Outcome::JobFailed(f),
        ) => {
            *kind == f.kind
                && (limit.is_none() || *limit == f.limit)
                && (requested.is_none() || *requested == f.requested)
                && (reason.is_none() || *reason == f.reason)
                && (partial_text.is_none() || *partial_text == f.partial_text)
        }
        (
            Expect::KeyCools {
                retry_after_secs, ..
            },
            Outcome::RateLimited { retry_after, .. },
        ) => *retry_after == retry_after_secs.map(Duration::from_secs_f64),
        (Expect::KeyOutUntil { until: want, .. }, Outcome::QuotaExhausted { until, .. }) => {
            want == until
        }
        (Expect::KeyDead { .. }, Outcome::Unauthorized { .. })
        | (Expect::RetryElsewhere { .. }, Outcome::Transient { .. })
        | (Expect::InvalidResponse { .. }, Outcome::InvalidResponse { .. }) => true,
        _ => false,
    }
}

fn headers(pairs: &BTreeMap<String, String>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes()).expect("header name");
        map.insert(name, HeaderValue::from_str(v).expect("header value"));
    }
    map
}

fn body(fixture: &Fixture) -> Vec<u8> {
    match (&fixture.body, &fixture.body_text) {
        (Some(json), None) => json.to_string().into_bytes(),
        (None, Some(text)) => text.clone().into_bytes(),
        _ => panic!("{}: exactly one of body and body_text", fixture.name),
    }
}

fn corpus(provider: &str) -> Corpus {
    let path = format!(
        "{}/tests/fixtures/providers/{provider}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("fixture file");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every entry of one provider's corpus; all mismatches reported at once.
fn check(provider: &str) {
    let corpus = corpus(provider);
    let api = registry::build(corpus.provider, &ProviderOptions::default());
    assert!(
        corpus.fixtures.len() >= 15,
        "{provider}: at least 15 entries"
    );
    let mut failures = Vec::new();
    for fixture in &corpus.fixtures {
        assert!(
            !fixture.source.trim().is_empty(),
            "{}: no source",
            fixture.name
        );
        let outcome = classify(
            &*api,
            fixture.status,
            &headers(&fixture.headers),
            &body(fixture),
            corpus.now,
        );
        let message_ok = fixture
            .expect
            .message_contains()
            .is_none_or(|needle| outcome.message().contains(needle));
        if !matches(&fixture.expect, &outcome) || !message_ok {
            failures.push(format!(
                "{}: expected {:?}\n    got {:?}",
                fixture.name, fixture.expect, outcome
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{provider}: {} of {} fixtures:\n{}",
        failures.len(),
        corpus.fixtures.len(),
        failures.join("\n")
    );
}

#[test]
fn gemini_answers() {
    check("gemini");
}

#[test]
fn openai_answers() {
    check("openai");
}

#[test]
fn anthropic_answers() {
    check("anthropic");
}

#[test]
fn azure_answers() {
    check("azure");
}
