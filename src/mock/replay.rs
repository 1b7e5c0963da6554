//! Recorded real answers, replayed: the corpus in `tests/fixtures/providers/`
//! (each entry naming its public source) served byte for byte, status and
//! headers included. A request asks for one with `[[mock:replay=NAME]]`; a key
//! configured with `replay = "NAME"` gets it for every request (a disabled
//! organisation, a billing problem) or for its first `replay_times` requests.
//!
//! It depends on no mock module but `api`, so settings validation can ask
//! [`exists`] without reaching the request handling above it.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::api::Api;

const GEMINI: &str = include_str!("../../tests/fixtures/providers/gemini.json");
const OPENAI: &str = include_str!("../../tests/fixtures/providers/openai.json");
const ANTHROPIC: &str = include_str!("../../tests/fixtures/providers/anthropic.json");
const AZURE: &str = include_str!("../../tests/fixtures/providers/azure.json");

#[derive(Debug, Deserialize)]
struct Corpus {
    fixtures: Vec<Recorded>,
}

/// One recorded answer (the corpus's other fields are for its table test).
#[derive(Debug, Deserialize)]
struct Recorded {
    name: String,
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    body_text: Option<String>,
}

type Index = HashMap<String, Recorded>;

fn corpus(text: &str) -> Index {
    // The corpus is checked by its own table test; a broken file replays nothing.
    serde_json::from_str::<Corpus>(text)
        .map(|c| {
            c.fixtures
                .into_iter()
                .map(|f| (f.name.clone(), f))
                .collect()
        })
        .unwrap_or_default()
}

fn index(api: Api) -> &'static Index {
    static INDEXES: OnceLock<[Index; 4]> = OnceLock::new();
    let all = INDEXES.get_or_init(|| {
        [
            corpus(GEMINI),
            corpus(OPENAI),
            corpus(ANTHROPIC),
            corpus(AZURE),
        ]
    });
    match api {
        Api::Gemini => &all[0],
        Api::Openai => &all[1],
        Api::Anthropic => &all[2],
        Api::Azure => &all[3],
    }
}

/// Whether any provider's corpus has an answer called `name`.
pub(crate) fn exists(name: &str) -> bool {
    Api::ALL
        .into_iter()
        .any(|api| index(api).contains_key(name))
}

/// The recorded answer `name` of `api`, or None when the corpus has none.
pub(crate) fn respond(api: Api, name: &str) -> Option<HttpResponse> {
    let recorded = index(api).get(name)?;
    let status = StatusCode::from_u16(recorded.status).ok()?;
    let mut builder = HttpResponse::build(status);
    for (header, value) in &recorded.headers {
        builder.insert_header((header.as_str(), value.as_str()));
    }
    let body = match (&recorded.body, &recorded.body_text) {
        (Some(json), _) => {
            if !recorded.headers.contains_key("content-type") {
                builder.content_type("application/json");
            }
            json.to_string()
        }
        (None, Some(text)) => text.clone(),
        (None, None) => String::new(),
    };
    Some(builder.body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_corpus_loads_and_serves() {
        for api in Api::ALL {
            assert!(index(api).len() >= 15, "{api:?}");
            for name in index(api).keys() {
                assert!(respond(api, name).is_some(), "{api:?} {name}");
            }
        }
        assert!(respond(Api::Gemini, "no_such_answer").is_none());
    }
}
