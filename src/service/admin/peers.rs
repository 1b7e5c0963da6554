//! The other instances of the fleet, as the admin API reaches them: `GET
//! /v1/fleet`, and the plumbing that asks a peer's admin API on behalf of an
//! operator (a key driven elsewhere, a result stored elsewhere). Peers run
//! the same config, so the operator's own token is passed along; `local=1`
//! tells the peer to answer from itself only (no second hop).

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::errors::ApiError;
use crate::fleet::{KeyOwner, Member};
use crate::http::state::HttpState;

/// A peer that does not answer within this long is reported, not waited for.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /v1/fleet`: this instance, the others it hears from, and who drives
/// each key.
pub async fn fleet(state: web::Data<HttpState>) -> HttpResponse {
    let picture = state.fleet.borrow().clone();
    HttpResponse::Ok().json(picture)
}

/// Whether the request asks for this instance's own answer only.
pub fn local_only(req: &HttpRequest) -> bool {
    req.query_string()
        .split('&')
        .any(|pair| pair == "local=1" || pair == "local=true")
}

/// The instance driving `pool/key`, when it is another one.
pub fn driven_elsewhere(state: &HttpState, pool: &str, key: &str) -> Option<Member> {
    let picture = state.fleet.borrow();
    match picture.owners.get(&format!("{pool}/{key}"))? {
        KeyOwner::Other(name) => picture
            .members
            .iter()
            .find(|m| &m.beacon.instance == name)
            .cloned(),
        KeyOwner::Me | KeyOwner::Nobody => None,
    }
}

/// The other live instances.
pub fn others(state: &HttpState) -> Vec<Member> {
    state.fleet.borrow().members.clone()
}

/// `method path` on `peer`'s admin API with the operator's token and
/// `local=1`; its status and JSON body.
pub async fn ask(
    peer: &Member,
    req: &HttpRequest,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Value), ApiError> {
    let separator = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "http://{}{path_and_query}{separator}local=1",
        peer.beacon.http
    );
    let mut call = client().request(method, &url);
    if let Some(token) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        call = call.header(reqwest::header::AUTHORIZATION, token);
    }
    if let Some(body) = body {
        call = call
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let unreachable = |e: reqwest::Error| {
        ApiError::Unavailable(format!(
            "instance `{}` ({}) did not answer: {e}",
            peer.beacon.instance, peer.beacon.http
        ))
    };
    let response = call.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let json = response.json::<Value>().await.map_err(unreachable)?;
    Ok((status, json))
}

/// Pass a peer's answer on as this instance's, saying where it came from.
pub fn relay(peer: &Member, status: u16, mut body: Value) -> HttpResponse {
    if let Value::Object(map) = &mut body {
        map.insert(
            "answered_by".into(),
            Value::String(peer.beacon.instance.clone()),
        );
    }
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    HttpResponse::build(status).json(body)
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(PEER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}
