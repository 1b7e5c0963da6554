//! One provider request from start to answer: key, parse, directives, admission,
//! fault or success, counting, delay. Provider specifics are dispatched through [`Api`].

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use serde_json::Value;

use super::api::Api;
use super::bodies;
use super::common::{self, Failure, Parsed, Usage};
use super::directives::{self, BodyFault, Directives};
use super::state::{Admission, MockState, Window};
use super::stats::Tally;
use super::{anthropic, azure, gemini, openai, replay};

/// Each provider's specifics, dispatched here: the providers' modules sit below
/// [`Api`], which knows none of them.
impl Api {
    fn key(self, req: &HttpRequest) -> Option<String> {
        match self {
            Api::Gemini => gemini::key(req),
            Api::Openai => openai::key(req),
            Api::Anthropic => anthropic::key(req),
            Api::Azure => azure::key(req),
        }
    }

    fn parse(self, req: &HttpRequest, path_model: &str, body: &[u8]) -> Result<Parsed, String> {
        match self {
            Api::Gemini => gemini::parse(path_model, body),
            Api::Openai => openai::parse(body),
            Api::Anthropic => anthropic::parse(req, body),
            Api::Azure => azure::parse(req, path_model, body),
        }
    }

    fn success(self, parsed: &Parsed, text: &str, usage: Usage) -> Value {
        match self {
            Api::Gemini => gemini::success(parsed, text, usage),
            Api::Openai | Api::Azure => openai::success(parsed, text, usage),
            Api::Anthropic => anthropic::success(parsed, text, usage),
        }
    }

    fn strip_text(self) -> fn(&mut Value) {
        match self {
            Api::Gemini => gemini::strip_text,
            Api::Openai | Api::Azure => openai::strip_text,
            Api::Anthropic => anthropic::strip_text,
        }
    }

    fn ok(self, window: &Window) -> HttpResponseBuilder {
        match self {
            Api::Gemini => gemini::ok(),
            Api::Openai | Api::Azure => openai::ok(window),
            Api::Anthropic => anthropic::ok(window),
        }
    }

    pub(crate) fn failure(self, failure: &Failure) -> HttpResponse {
        match self {
            Api::Gemini => gemini::failure(failure),
            Api::Openai => openai::failure(failure),
            Api::Anthropic => anthropic::failure(failure),
            Api::Azure => azure::failure(failure),
        }
    }
}

/// A parsed request with its directives, or why it could not be understood.
type Understood = Result<(Parsed, Directives), String>;

/// Answers one provider request; `path_model` is the model named in the URL, if any.
pub(crate) async fn serve(
    api: Api,
    state: &MockState,
    req: &HttpRequest,
    path_model: &str,
    body: &[u8],
) -> HttpResponse {
    let arrived = Instant::now();
    let secret = api.key(req);
    let understood: Understood = api
        .parse(req, path_model, body)
        .and_then(|parsed| directives::parse(&parsed.last_user).map(|d| (parsed, d)));
    let directives = understood.as_ref().ok().map(|(_, d)| d);
    let forced = directives.and_then(|d| d.forced);
    let admission = state.admit(secret.as_deref(), forced, Instant::now());
    // A directive's sleep is the model's time on an admitted request; a
    // refusal at the door (a 429, a bad key) comes back at once, as real
    // providers' do.
    let working = directives
        .and_then(|d| d.sleep)
        .filter(|_| matches!(admission, Admission::Admitted { .. }));
    let delay = state.latency + working.unwrap_or_default();
    let label = admission.label().to_string();
    let (response, tally) = answer(api, state, admission, secret, understood, path_model);
    // Counted before the delay: like a real provider, a request is billed even when
    // the client gives up waiting for its answer.
    state.count(&label, tally);
    if !delay.is_zero() {
        actix_web::rt::time::sleep(delay).await;
    }
    let caller = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    state.calls.record(&label, caller, arrived);
    response
}

fn answer(
    api: Api,
    state: &MockState,
    admission: Admission,
    secret: Option<String>,
    understood: Understood,
    path_model: &str,
) -> (HttpResponse, Tally) {
    let model = understood
        .as_ref()
        .map_or_else(|_| path_model.to_string(), |(p, _)| p.model.clone());
    match admission {
        Admission::Unauthorized { .. } => {
            let failure = match secret {
                None => Failure::MissingKey,
                Some(secret) => Failure::InvalidKey { secret },
            };
            (api.failure(&failure), Tally::Unauthorized)
        }
        Admission::RateLimited { limited, .. } => (
            api.failure(&Failure::RateLimited { limited, model }),
            Tally::RateLimited,
        ),
        Admission::Exhausted { limited, .. } => (
            api.failure(&Failure::Exhausted { limited, model }),
            Tally::Exhausted,
        ),
        Admission::Replay { fixture, .. } => replayed(api, &fixture),
        Admission::Admitted { window, .. } => match understood {
            Err(message) => (
                api.failure(&Failure::BadRequest(message)),
                Tally::BadRequest,
            ),
            Ok((parsed, directives)) => admitted(api, state, &parsed, &directives, &window),
        },
    }
}

/// The answer to an admitted, understood request.
fn admitted(
    api: Api,
    state: &MockState,
    parsed: &Parsed,
    directives: &Directives,
    window: &Window,
) -> (HttpResponse, Tally) {
    if let Some(code) = directives.status {
        return (api.failure(&Failure::Status(code)), Tally::Fault);
    }
    if let Some(name) = &directives.replay {
        return replayed(api, name);
    }
    // Random faults only hit plain requests, so a directive's outcome stays certain.
    let plain = directives.body.is_none() && !directives.invalid_json && !directives.off_schema;
    if plain && state.fault_rate > 0.0 && rand::random_bool(state.fault_rate) {
        return (random_fault(api), Tally::Fault);
    }
    let mut text = common::answer_text(parsed, directives.invalid_json, directives.off_schema);
    if directives.body == Some(BodyFault::Huge) {
        text = bodies::huge_text(&text);
    }
    let usage = Usage::of(parsed, &text)
        .with_details(directives.cached_tokens, directives.reasoning_tokens);
    let body = api.success(parsed, &text, usage);
    let mut ok = api.ok(window);
    match directives.body {
        None => {
            let prompt = parsed.last_user.clone();
            (ok.body(body.to_string()), Tally::Success { prompt })
        }
        Some(fault) => (
            bodies::faulty(fault, ok, body, api.strip_text()),
            Tally::Fault,
        ),
    }
}

/// A recorded real answer; an unknown name is the provider's 400 so a typo
/// in a test fails loudly.
fn replayed(api: Api, name: &str) -> (HttpResponse, Tally) {
    match replay::respond(api, name) {
        Some(response) => (response, Tally::Replayed),
        None => {
            let message = format!("mock: no recorded {api:?} answer named {name:?}");
            (
                api.failure(&Failure::BadRequest(message)),
                Tally::BadRequest,
            )
        }
    }
}

fn random_fault(api: Api) -> HttpResponse {
    let statuses = api.transient_statuses();
    match rand::random_range(0..=statuses.len()) {
        pick if pick < statuses.len() => api.failure(&Failure::Status(statuses[pick])),
        _ => bodies::reset(),
    }
}
