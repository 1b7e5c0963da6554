//! Azure OpenAI: OpenAI's chat format at
//! `/openai/deployments/{deployment}/chat/completions?api-version=V` with an
//! `api-key` header, and Azure's own error bodies (`{"error": {"code": "429",
//! ...}}` with "Please retry after N seconds", the gateway's
//! `{"statusCode": 401, ...}`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use super::common::{self, Failure, Parsed};
use super::openai;

const CONTENT_TYPE: &str = "application/json";

/// The key from the `api-key` header.
pub(crate) fn key(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("api-key")?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// Parses a chat completion request for `deployment`; Azure needs `api-version`.
pub(crate) fn parse(req: &HttpRequest, deployment: &str, body: &[u8]) -> Result<Parsed, String> {
    if !req
        .query_string()
        .split('&')
        .any(|p| p.starts_with("api-version="))
    {
        return Err("Missing required query parameter: api-version".to_string());
    }
    // The deployment, not the body's `model`, picks the model.
    let mut parsed = openai::parse_without_model(body)?;
    parsed.model = deployment.to_string();
    Ok(parsed)
}

/// Azure's answer to a failure.
pub(crate) fn failure(failure: &Failure) -> HttpResponse {
    match failure {
        Failure::MissingKey | Failure::InvalidKey { .. } => gateway(
            401,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to \
             provide a valid key for an active subscription and use a correct regional API \
             endpoint for your resource.",
        ),
        Failure::RateLimited { limited, .. } | Failure::Exhausted { limited, .. } => {
            let secs = common::ceil_secs(limited.retry_after).max(1);
            let body = json!({"error": {
                "code": "429",
                "message": format!(
                    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API \
                     version 2024-10-21 have exceeded call rate limit of your current OpenAI S0 \
                     pricing tier. Please retry after {secs} seconds. Please go here: \
                     https://aka.ms/oai/quotaincrease if you would like to further increase the \
                     default rate limit."
                ),
            }});
            HttpResponse::TooManyRequests()
                .content_type(CONTENT_TYPE)
                .insert_header(("retry-after", secs.to_string()))
                .insert_header(("retry-after-ms", (secs * 1000).to_string()))
                .body(body.to_string())
        }
        Failure::Status(404) => error(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment \
             within the last 5 minutes, please wait a moment and try again.",
        ),
        Failure::Status(code) if *code >= 500 => error(
            *code,
            "InternalServerError",
            "The server had an error while processing your request. Sorry about that!",
        ),
        Failure::Status(code) => error(*code, "BadRequest", "Invalid request."),
        Failure::BadRequest(message) => error(400, "BadRequest", message),
    }
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    let body = json!({"error": {"code": code, "message": message, "param": null, "type": null}});
    respond(status, &body)
}

/// The API gateway's own shape, in front of the model.
fn gateway(status: u16, message: &str) -> HttpResponse {
    respond(status, &json!({"statusCode": status, "message": message}))
}

fn respond(status: u16, body: &Value) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type(CONTENT_TYPE)
        .insert_header(("apim-request-id", common::fresh_id("")))
        .body(body.to_string())
}
