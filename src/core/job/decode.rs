//! Turns an AMQP delivery (body + properties) into a validated [`Job`], or says
//! exactly what is wrong with it. Pure: no I/O, table-tested below.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::schema::{FormatSpec, ResponseFormat};
use super::template::{self, TemplateConfig};
use super::validated::{Job, Priority, ReplyAddress};
use crate::provider::{ChatMessage, MessageContent, ProviderKind, ProviderRequest, Role, registry};

/// The AMQP properties a job's decoding looks at.
#[derive(Debug, Clone, Default)]
pub struct JobProperties {
    /// The job's id when its body carries none (and it is a valid id).
    pub message_id: Option<String>,
    /// Echoed on the result; the job id when absent.
    pub correlation_id: Option<String>,
    /// Queue the result goes to; the pool's results queue when absent or empty.
    pub reply_to: Option<String>,
    /// Must be JSON (`application/json`, `text/json`) when present.
    pub content_type: Option<String>,
    /// The size of the job's batch, when its producer declares it
    /// (AMQP header `x-keyrelay-batch-total`).
    pub batch_total: Option<u64>,
}

/// What decoding needs to know about the pool the job arrived on.
#[derive(Debug, Clone)]
pub struct DecodeContext<'a> {
    /// The pool's name.
    pub pool: &'a str,
    /// Model of jobs that name none (`default_model`).
    pub default_model: &'a str,
    /// The only models jobs may name, when the pool restricts them (`models`).
    pub models: Option<&'a [String]>,
    /// The config's named templates, by name.
    pub templates: &'a BTreeMap<String, TemplateConfig>,
    /// Largest accepted body, in bytes (`jobs.max_body_bytes`).
    pub max_body_bytes: usize,
    /// Reply queue of jobs that carry no `reply_to` (`jobs.results_queue`).
    pub results_queue: &'a str,
    /// Whether jobs that do not say may use the response cache.
    pub cache_by_default: bool,
    /// The pool's provider, which says what it cannot take (`None`: no
    /// provider check, for tests of the contract alone).
    pub provider: Option<ProviderKind>,
}

/// A job that breaks the contract, with what is known of where to reply.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidJob {
    /// The job's id: from the body, else the AMQP `message_id`, else generated.
    pub id: String,
    /// Where the `invalid_job` result goes.
    pub reply: ReplyAddress,
    /// What is wrong with the job, for the result's error message.
    pub reason: String,
}

/// The job body as producers write it (contract v2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobBody {
    id: Option<String>,
    model: Option<String>,
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    template: Option<String>,
    input: Option<Value>,
    response_format: Option<FormatSpec>,
    max_output_tokens: Option<u32>,
    temperature: Option<f32>,
    user: Option<String>,
    metadata: Option<Value>,
    deadline: Option<jiff::Timestamp>,
    cache: Option<bool>,
    batch: Option<String>,
    priority: Option<Priority>,
}

/// Decode and validate one delivery. `generated_id` is used when neither the body
/// nor the AMQP `message_id` carries an id.
pub fn decode(
    body: &[u8],
    props: &JobProperties,
    ctx: &DecodeContext<'_>,
    generated_id: impl Fn() -> String,
) -> Result<Job, InvalidJob> {
    let fallback_id = props.message_id.clone().filter(|id| valid_id(id).is_ok());
    // Until the body is parsed we only know the AMQP-level id and reply address.
    let early = |reason: String, id: Option<String>| {
        let id = id.unwrap_or_else(|| fallback_id.clone().unwrap_or_else(&generated_id));
        InvalidJob {
            reply: reply_address(props, ctx, &id),
            id,
            reason,
        }
    };
    if body.len() > ctx.max_body_bytes {
        let reason = format!(
            "body is {} bytes, over the limit of {}",
            body.len(),
            ctx.max_body_bytes
        );
        return Err(early(reason, None));
    }
    if let Err(reason) = check_content_type(props.content_type.as_deref()) {
        return Err(early(reason, None));
    }
    let parsed: JobBody = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        // The reply still carries the producer's id when the body has one.
        Err(e) => return Err(early(format!("body is not a valid job: {e}"), id_in(body))),
    };
    let id = match parsed.id.clone() {
        Some(id) => match valid_id(&id) {
            Ok(()) => id,
            Err(reason) => return Err(early(reason, None)),
        },
        None => fallback_id.clone().unwrap_or_else(&generated_id),
    };
    let reply = reply_address(props, ctx, &id);
    build(parsed, id.clone(), reply.clone(), ctx).map_err(|reason| InvalidJob { id, reply, reason })
}

fn build(
    body: JobBody,
    id: String,
    reply: ReplyAddress,
    ctx: &DecodeContext<'_>,
) -> Result<Job, String> {
    let (messages, template_format) = messages_of(&body, ctx)?;
    let model = body.model.unwrap_or_else(|| ctx.default_model.to_owned());
    check_model(&model, ctx)?;
    if let Some(t) = body.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(format!("temperature {t} is outside 0.0..=2.0"));
    }
    if body.max_output_tokens == Some(0) {
        return Err("max_output_tokens must be at least 1".into());
    }
    let response_format = match body.response_format {
        Some(spec) => ResponseFormat::compile(spec).map_err(|e| format!("response_format: {e}"))?,
        None => template_format.unwrap_or_default(),
    };
    if let Some(batch) = &body.batch {
        valid_batch(batch)?;
    }
    let request = ProviderRequest {
        model,
        messages,
        output: response_format.output(),
        max_output_tokens: body.max_output_tokens,
        temperature: body.temperature,
        user: body.user.clone(),
    };
    if let Some(kind) = ctx.provider {
        registry::check_request(kind, &request)?;
    }
    Ok(Job {
        id,
        pool: ctx.pool.to_owned(),
        request,
        response_format,
        user: body.user,
        metadata: body.metadata.unwrap_or(Value::Object(Default::default())),
        deadline: body.deadline,
        cache: body.cache.unwrap_or(ctx.cache_by_default),
        batch: body.batch,
        priority: body.priority.unwrap_or_default(),
        reply,
    })
}

/// Exactly one of `prompt`, `messages`, `template`+`input`.
fn messages_of(
    body: &JobBody,
    ctx: &DecodeContext<'_>,
) -> Result<(Vec<ChatMessage>, Option<ResponseFormat>), String> {
    let given = [
        body.prompt.is_some(),
        body.messages.is_some(),
        body.template.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err("exactly one of `prompt`, `messages` or `template` is required".into());
    }
    if body.input.is_some() && body.template.is_none() {
        return Err("`input` is only allowed with `template`".into());
    }
    if let Some(prompt) = &body.prompt {
        if prompt.trim().is_empty() {
            return Err("`prompt` is empty".into());
        }
        return Ok((vec![user_message(prompt.clone())], None));
    }
    if let Some(messages) = &body.messages {
        if !messages.iter().any(|m| m.role != Role::System) {
            return Err("`messages` needs at least one user or assistant message".into());
        }
        check_messages(messages)?;
        return Ok((messages.clone(), None));
    }
    let name = body.template.as_deref().unwrap_or_default();
    let template = ctx
        .templates
        .get(name)
        .ok_or_else(|| format!("unknown template `{name}`"))?;
    let input = body
        .input
        .as_ref()
        .ok_or_else(|| format!("template `{name}` needs `input`"))?;
    let text =
        template::render(&template.text, input).map_err(|e| format!("template `{name}`: {e}"))?;
    let mut messages = Vec::with_capacity(2);
    if let Some(system) = &template.system {
        messages.push(ChatMessage::text(Role::System, system.clone()));
    }
    messages.push(user_message(text));
    Ok((messages, template.compiled.clone()))
}

fn user_message(content: String) -> ChatMessage {
    ChatMessage::text(Role::User, content)
}

/// No empty list of parts; images and documents only in what the user
/// says (providers take them nowhere else).
fn check_messages(messages: &[ChatMessage]) -> Result<(), String> {
    for (i, m) in messages.iter().enumerate() {
        // An empty string stays valid, as in contract v1.
        if matches!(&m.content, MessageContent::Parts(parts) if parts.is_empty()) {
            return Err(format!("messages[{i}] has no content"));
        }
        if m.role != Role::User && m.content.media().next().is_some() {
            return Err(format!(
                "messages[{i}]: images and documents go in `user` messages only"
            ));
        }
    }
    Ok(())
}

fn check_model(model: &str, ctx: &DecodeContext<'_>) -> Result<(), String> {
    match ctx.models {
        Some(models) if !models.iter().any(|m| m == model) => Err(format!(
            "unknown model `{model}` for pool `{}` (known: {})",
            ctx.pool,
            models.join(", ")
        )),
        _ if model.is_empty() => Err("`model` is empty".into()),
        _ => Ok(()),
    }
}

fn check_content_type(content_type: Option<&str>) -> Result<(), String> {
    let Some(ct) = content_type else {
        return Ok(());
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" | "application/json" | "text/json" => Ok(()),
        other => Err(format!(
            "content_type `{other}` is not supported (use application/json)"
        )),
    }
}

/// Ids become sled keys, log fields and reply fields: bounded and printable.
/// Batch names appear in URLs, logs and the store's keys: 1-128 of
/// letters, digits, `-`, `_`, `.`, `:`.
pub fn valid_batch(batch: &str) -> Result<(), String> {
    let ok = !batch.is_empty()
        && batch.len() <= 128
        && batch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`batch` must be 1-128 letters, digits, `-`, `_`, `.` or `:`, not {batch:?}"
        ))
    }
}

fn valid_id(id: &str) -> Result<(), String> {
    // 255 bytes: ids travel as AMQP short strings (message_id, correlation_id).
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err("`id` must be 1-255 bytes of printable characters".into());
    }
    Ok(())
}

/// The valid `id` of a body that is JSON but not a valid job.
fn id_in(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let id = value.get("id")?.as_str()?;
    valid_id(id).is_ok().then(|| id.to_owned())
}

fn reply_address(props: &JobProperties, ctx: &DecodeContext<'_>, id: &str) -> ReplyAddress {
    ReplyAddress {
        queue: props
            .reply_to
            .clone()
            .filter(|q| !q.is_empty())
            .unwrap_or_else(|| ctx.results_queue.to_owned()),
        correlation_id: props
            .correlation_id
            .clone()
            .unwrap_or_else(|| id.to_owned()),
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
