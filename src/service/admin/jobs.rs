//! `GET /v1/jobs/{id}` (a stored result), `GET /v1/jobs` (history, newest
//! first, cursor pagination) and `POST /v1/jobs` (submit a job over HTTP: it is
//! validated like a delivery, then published to the pool's queue with confirms).

use actix_web::{HttpRequest, HttpResponse, web};
use jiff::Timestamp;
use lapin::BasicProperties;
use lapin::types::ShortString;

use super::errors::ApiError;
use super::heavy::HeavyReads;
use super::params::Params;
use super::peers;
use crate::amqp::{PublishOutcome, Publisher};
use crate::http::state::HttpState;
use keyrelay_core::job::{DecodeContext, JobProperties, JobStatus};
use keyrelay_core::store::history::{HistoryQuery, decode_cursor};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// `GET /v1/jobs/{id}[?pool=P]`: results are kept per pool, so without
/// `pool` every configured pool is looked in (the newest result wins).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    pool: Option<String>,
    /// `1`: look in this instance's store only (see `peers`).
    #[allow(dead_code)]
    local: Option<String>,
}

pub async fn get(
    state: web::Data<HttpState>,
    id: web::Path<String>,
    params: web::Query<GetParams>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let pools: Vec<&str> = match &params.pool {
        Some(pool) => vec![pool.as_str()],
        None => state.config.pools.iter().map(|p| p.name.as_str()).collect(),
    };
    let mut newest: Option<keyrelay_core::job::JobResult> = None;
    for pool in pools {
        if let Some(found) = state.store.result_of(pool, &id)?
            && newest
                .as_ref()
                .is_none_or(|n| found.completed_at > n.completed_at)
        {
            newest = Some(found);
        }
    }
    if let Some(result) = newest {
        return Ok(HttpResponse::Ok().json(result));
    }
    if peers::local_only(&req) {
        return Err(ApiError::NotFound(format!(
            "no stored result for job `{id}`"
        )));
    }
    ask_the_fleet(&state, &req, &id).await
}

/// Results stay in the store of the instance that ran the job: ask the
/// others. Not found anywhere reachable is a 404 that names who was asked.
async fn ask_the_fleet(
    state: &HttpState,
    req: &HttpRequest,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let path = match req.uri().query() {
        Some(query) => format!("{}?{query}", req.uri().path()),
        None => req.uri().path().to_owned(),
    };
    let mut asked = Vec::new();
    let mut silent = Vec::new();
    for peer in peers::others(state) {
        match peers::ask(&peer, req, reqwest::Method::GET, &path, None).await {
            Ok((200, body)) => return Ok(peers::relay(&peer, 200, body)),
            Ok((404, _)) => asked.push(peer.beacon.instance.clone()),
            Ok((status, body)) => silent.push(format!(
                "{} ({}) answered {status} {}",
                peer.beacon.instance, peer.beacon.http, body["message"]
            )),
            Err(_) => silent.push(format!("{} ({})", peer.beacon.instance, peer.beacon.http)),
        }
    }
    let mut message = format!("no stored result for job `{id}` on this instance");
    if !asked.is_empty() {
        message += &format!(" nor on {}", asked.join(", "));
    }
    if !silent.is_empty() {
        message += &format!("; could not ask, try them directly: {}", silent.join(", "));
    }
    Err(ApiError::NotFound(message))
}

/// A page of history: a heavy read (it may walk 50,000 index entries and
/// serialize 1,000 results), so it takes a slot and runs off the HTTP worker.
pub async fn list(
    state: web::Data<HttpState>,
    heavy: web::Data<HeavyReads>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(
        req.query_string(),
        &[
            "user", "pool", "batch", "since", "until", "status", "limit", "cursor",
        ],
    )?;
    let now = Timestamp::now();
    let status = match p.choice("status", &["succeeded", "failed", "any"], "any")? {
        "succeeded" => Some(JobStatus::Succeeded),
        "failed" => Some(JobStatus::Failed),
        _ => None,
    };
    let (since, until) = (p.time("since", now)?, p.time("until", now)?);
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::bad("`since` is after `until`"));
    }
    let cursor = p
        .text("cursor")
        .map(|c| {
            decode_cursor(c)
                .ok_or_else(|| ApiError::bad("`cursor` is not a cursor this API returned"))
        })
        .transpose()?;
    let query = HistoryQuery {
        user: p.text("user").map(str::to_owned),
        pool: p.text("pool").map(str::to_owned),
        batch: p.text("batch").map(str::to_owned),
        status,
        since,
        until,
        limit: p.count("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
        cursor,
    };
    let slot = heavy.enter().await?;
    let store = state.store.clone();
    let body = slot
        .run("the history query", move || {
            let page = store.history(&query)?;
            serde_json::to_vec(&serde_json::json!({
                "jobs": page.results,
                "next_cursor": page.next_cursor,
            }))
            .map_err(|e| ApiError::Unavailable(format!("the history page did not serialize: {e}")))
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// `POST /v1/jobs?pool=P[&reply_to=Q]` with a job body (message contract v1).
pub async fn submit(
    state: web::Data<HttpState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let p = Params::parse(req.query_string(), &["pool", "reply_to"])?;
    let pool_name = p
        .text("pool")
        .ok_or_else(|| ApiError::bad("parameter `pool` is required"))?;
    let config = &state.config;
    let pool = config
        .pools
        .iter()
        .find(|c| c.name == pool_name)
        .ok_or_else(|| ApiError::bad(format!("no pool named `{pool_name}`")))?;
    let reply_to = p.text("reply_to").map(str::to_owned);
    let ctx = DecodeContext {
        pool: &pool.name,
        default_model: &pool.default_model,
        models: pool.models.as_deref(),
        templates: &config.templates,
        max_body_bytes: config.jobs.max_body_bytes,
        results_queue: &config.jobs.results_queue,
        cache_by_default: config.jobs.cache_by_default,
        provider: Some(pool.provider),
    };
    let props = JobProperties {
        reply_to: reply_to.clone(),
        content_type: Some("application/json".into()),
        ..JobProperties::default()
    };
    let job = keyrelay_core::job::decode(&body, &props, &ctx, || uuid::Uuid::now_v7().to_string())
        .map_err(|invalid| ApiError::bad(format!("invalid job: {}", invalid.reason)))?;
    let properties = amqp_properties(&job.id, &job.reply.correlation_id, reply_to.as_deref())?;
    // A high-priority job goes to the pool's high queue, ahead of its backlog.
    let queue = match job.priority {
        keyrelay_core::job::Priority::High => config.high_queue(&pool.name),
        keyrelay_core::job::Priority::Normal => config.job_queue(&pool.name),
    };
    let publisher = Publisher::new(state.broker.clone()).await?;
    match publisher.publish(&queue, &body, properties, true).await? {
        PublishOutcome::Delivered => Ok(HttpResponse::Accepted().json(serde_json::json!({
            "id": job.id,
            "pool": pool.name,
            "queue": queue,
            "reply_to": job.reply.queue,
            "result": format!("/v1/jobs/{}", job.id),
        }))),
        PublishOutcome::Unroutable => Err(ApiError::Unavailable(format!(
            "queue `{queue}` does not exist on the broker; the job was not accepted"
        ))),
    }
}

fn amqp_properties(
    id: &str,
    correlation_id: &str,
    reply_to: Option<&str>,
) -> Result<BasicProperties, ApiError> {
    let short = |name: &str, v: &str| {
        ShortString::try_new(v)
            .map_err(|_| ApiError::bad(format!("`{name}` is longer than 255 bytes")))
    };
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(short("id", id)?)
        .with_correlation_id(short("correlation id", correlation_id)?);
    if let Some(queue) = reply_to {
        props = props.with_reply_to(short("reply_to", queue)?);
    }
    Ok(props)
}
