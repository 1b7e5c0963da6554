//! URL layout: the four provider endpoints and the `/_mock/*` control endpoints.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::api::Api;
use super::common::Failure;
use super::handler;
use super::state::MockState;

type State = web::Data<MockState>;

/// Registers every route on an actix `App`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg
        // `{target}` is `MODEL:generateContent`: one path segment, split in the handler
        // so other `:method`s get Gemini's 404 instead of a routing miss.
        .route("/v1beta/models/{target}", web::post().to(gemini))
        .route("/v1/chat/completions", web::post().to(openai))
        .route("/v1/messages", web::post().to(anthropic))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            web::post().to(azure),
        )
        .route("/_mock/stats", web::get().to(stats))
        .route("/_mock/calls", web::get().to(calls))
        .route("/_mock/reset", web::post().to(reset))
        .route("/_mock/keys/{label}/{action}", web::post().to(key_action));
}

async fn gemini(
    state: State,
    req: HttpRequest,
    target: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    match target.rsplit_once(':') {
        Some((model, "generateContent")) if !model.is_empty() => {
            handler::serve(Api::Gemini, &state, &req, model, &body).await
        }
        _ => Api::Gemini.failure(&Failure::Status(404)),
    }
}

async fn openai(state: State, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handler::serve(Api::Openai, &state, &req, "", &body).await
}

async fn anthropic(state: State, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    handler::serve(Api::Anthropic, &state, &req, "", &body).await
}

async fn azure(
    state: State,
    req: HttpRequest,
    deployment: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    handler::serve(Api::Azure, &state, &req, &deployment, &body).await
}

async fn stats(state: State) -> HttpResponse {
    HttpResponse::Ok().json(state.stats())
}

async fn calls(state: State) -> HttpResponse {
    HttpResponse::Ok().json(state.calls.calls())
}

async fn reset(state: State) -> HttpResponse {
    state.reset();
    HttpResponse::Ok().json(json!({ "reset": true }))
}

async fn key_action(state: State, path: web::Path<(String, String)>) -> HttpResponse {
    let (label, action) = path.into_inner();
    let found = match action.as_str() {
        "exhaust" => state.exhaust(&label),
        "revoke" => state.revoke(&label),
        "restore" => state.restore(&label),
        _ => {
            return HttpResponse::NotFound()
                .json(json!({ "error": format!("unknown action {action:?}: exhaust, revoke or restore") }));
        }
    };
    if found {
        HttpResponse::Ok().json(json!({ "label": label, "action": action }))
    } else {
        HttpResponse::NotFound().json(json!({ "error": format!("unknown key label {label:?}") }))
    }
}
