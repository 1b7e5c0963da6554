//! Gemini `models/{model}:generateContent` wire format: key, request, success and the
//! google.rpc error bodies (QuotaFailure + RetryInfo, ErrorInfo API_KEY_INVALID).

use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use serde_json::{Value, json};

use super::common::{self, Failure, Parsed, Usage};
use super::structured::{self, MediaSeen};

const CONTENT_TYPE: &str = "application/json; charset=UTF-8";
const RATE_LIMIT_DOCS: &str = "https://ai.google.dev/gemini-api/docs/rate-limits";
const QUOTA_METRIC: &str = "generativelanguage.googleapis.com/generate_content_free_tier_requests";

/// The key from `x-goog-api-key`, else from `?key=`.
pub(crate) fn key(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get("x-goog-api-key") {
        return value.to_str().ok().map(str::to_string);
    }
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("key").cloned())
}

/// Parses a generateContent body for the model named in the path.
pub(crate) fn parse(model: &str, body: &[u8]) -> Result<Parsed, String> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON payload received. {e}"))?;
    let contents = request
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("* GenerateContentRequest.contents: contents is not specified\n")?;
    let mut input_chars = 0;
    let mut last_user = None;
    let mut media = MediaSeen::default();
    for content in contents {
        if let Some(Value::Array(parts)) = content.get("parts") {
            structured::gemini_parts(parts, &mut media)?;
        }
        let text = parts_text(content);
        input_chars += text.chars().count();
        // A content without role is a user turn, as in the real API.
        if content
            .get("role")
            .and_then(Value::as_str)
            .is_none_or(|r| r == "user")
        {
            last_user = Some(text);
        }
    }
    let last_user =
        last_user.ok_or("* GenerateContentRequest.contents: must contain a user turn\n")?;
    let system = request
        .get("systemInstruction")
        .or_else(|| request.get("system_instruction"));
    input_chars += system.map_or(0, |s| parts_text(s).chars().count());
    let config = request
        .get("generationConfig")
        .or_else(|| request.get("generation_config"));
    let mime = config.and_then(|c| {
        c.get("responseMimeType")
            .or_else(|| c.get("response_mime_type"))
    });
    let schema = config.and_then(|c| {
        [
            "responseJsonSchema",
            "response_json_schema",
            "responseSchema",
            "response_schema",
        ]
        .iter()
        .find_map(|k| c.get(*k))
        .cloned()
    });
    let json_output = mime.and_then(Value::as_str) == Some("application/json");
    if schema.is_some() && !json_output {
        // The API's own words when a schema comes without the JSON mime type.
        return Err("* GenerateContentRequest.generation_config.response_mime_type: response_schema is only supported with response_mime_type application/json\n".into());
    }
    Ok(Parsed {
        model: model.to_string(),
        last_user,
        input_chars,
        json_output,
        schema,
        forced_tool: None,
        media,
    })
}

fn parts_text(content: &Value) -> String {
    content
        .get("parts")
        .and_then(common::content_text)
        .unwrap_or_default()
}

/// A GenerateContentResponse carrying `text`.
pub(crate) fn success(parsed: &Parsed, text: &str, usage: Usage) -> Value {
    let mut meta = json!({
        "promptTokenCount": usage.input,
        "candidatesTokenCount": usage.output,
        "totalTokenCount": usage.total(),
        "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": usage.input }]
    });
    // Present only when non-zero, as Gemini sends them: cached content is
    // part of promptTokenCount, thoughts are not part of candidatesTokenCount.
    if usage.cached > 0 {
        meta["cachedContentTokenCount"] = json!(usage.cached);
    }
    if usage.reasoning > 0 {
        meta["thoughtsTokenCount"] = json!(usage.reasoning);
    }
    json!({
        "candidates": [{
            "content": { "parts": [{ "text": text }], "role": "model" },
            "finishReason": "STOP",
            "index": 0
        }],
        "usageMetadata": meta,
        "modelVersion": parsed.model,
        "responseId": common::fresh_id("")
    })
}

/// Removes the candidate's content, as when a candidate is blocked.
pub(crate) fn strip_text(body: &mut Value) {
    if let Some(candidate) = body
        .pointer_mut("/candidates/0")
        .and_then(Value::as_object_mut)
    {
        candidate.remove("content");
    }
}

/// A 200 with Gemini's headers (Gemini sends no rate-limit headers).
pub(crate) fn ok() -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder
        .content_type(CONTENT_TYPE)
        .insert_header(("vary", "Origin, X-Origin, Referer"))
        .insert_header(("server", "scaffolding on HTTPServer2"));
    builder
}

/// Gemini's answer to a failure.
pub(crate) fn failure(failure: &Failure) -> HttpResponse {
    let (code, status, message, details) = match failure {
        Failure::MissingKey => (
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API."
                .to_string(),
            vec![],
        ),
        Failure::InvalidKey { .. } => invalid_key(),
        Failure::RateLimited { limited, model } => quota(limited, model, "PerMinute"),
        Failure::Exhausted { limited, model } => quota(limited, model, "PerDay"),
        Failure::Status(code) => {
            let (status, message) = status_text(*code);
            (*code, status, message.to_string(), vec![])
        }
        Failure::BadRequest(message) => (400, "INVALID_ARGUMENT", message.clone(), vec![]),
    };
    let mut error = json!({ "code": code, "message": message, "status": status });
    // The real API omits `details` when it has none.
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    common::json_response(code, CONTENT_TYPE, &json!({ "error": error }))
}

fn invalid_key() -> (u16, &'static str, String, Vec<Value>) {
    let message = "API key not valid. Please pass a valid API key.";
    let details = vec![
        json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": { "service": "generativelanguage.googleapis.com" }
        }),
        json!({
            "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
            "locale": "en-US",
            "message": message
        }),
    ];
    (400, "INVALID_ARGUMENT", message.to_string(), details)
}

/// 429 RESOURCE_EXHAUSTED; `period` ("PerMinute" or "PerDay") goes into the quotaId.
fn quota(
    limited: &super::state::Limited,
    model: &str,
    period: &str,
) -> (u16, &'static str, String, Vec<Value>) {
    let retry = limited.retry_after;
    let message = format!(
        "You exceeded your current quota, please check your plan and billing details. \
         For more information on this error, head to: {RATE_LIMIT_DOCS}. \
         To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \n\
         * Quota exceeded for metric: {QUOTA_METRIC}, limit: {}, model: {model}\n\
         Please retry in {}s.",
        limited.limit,
        retry.as_secs_f64()
    );
    let details = vec![
        json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{
                "quotaMetric": QUOTA_METRIC,
                "quotaId": format!("GenerateRequests{period}PerProjectPerModel-FreeTier"),
                "quotaDimensions": { "location": "global", "model": model },
                "quotaValue": limited.limit.to_string()
            }]
        }),
        json!({
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{ "description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOCS }]
        }),
        json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{}s", common::ceil_secs(retry))
        }),
    ];
    (429, "RESOURCE_EXHAUSTED", message, details)
}

/// google.rpc status name and message the real API uses for an HTTP status.
fn status_text(code: u16) -> (&'static str, &'static str) {
    match code {
        400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401 => (
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        ),
        403 => ("PERMISSION_DENIED", "The caller does not have permission"),
        404 => ("NOT_FOUND", "Requested entity was not found."),
        429 => (
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
        ),
        500 => (
            "INTERNAL",
            "An internal error has occurred. Please retry or report in \
             https://developers.generativeai.google/guide/troubleshooting",
        ),
        503 => (
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
        ),
        504 => (
            "DEADLINE_EXCEEDED",
            "Deadline expired before operation could complete.",
        ),
        _ if code < 500 => ("FAILED_PRECONDITION", "Precondition check failed."),
        _ => ("UNAVAILABLE", "The service is currently unavailable."),
    }
}
