//! `GET /v1/keys` and `POST /v1/keys/{pool}/{name}/disable|enable|probe|reset`.
//! Keys are shown by name and fingerprint, never by value.

use std::collections::BTreeMap;
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::peers;
use crate::actors::messages::{
    DisableKey, EnableKey, GetKeys, KeyCommandError, KeySnapshot, ProbeTarget, ResetKey,
};
use crate::fleet::KeyOwner;
use crate::http::state::HttpState;
use keyrelay_core::keys::KeyState;
use keyrelay_core::metrics as m;
use keyrelay_core::provider::classify::truncate_chars;
use keyrelay_core::provider::{ChatMessage, Outcome, ProviderRequest, Role};

/// One key as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyView {
    pub pool: String,
    pub name: String,
    pub fingerprint: String,
    pub priority: u8,
    pub concurrency: u16,
    pub in_flight: usize,
    /// `active`, `cooling_down`, `exhausted` or `disabled`.
    pub state: String,
    pub reason: Option<String>,
    /// When a cooling-down or exhausted key comes back by itself.
    pub until: Option<Timestamp>,
    pub seconds_until: Option<i64>,
    /// Stored counters: `completed`, `succeeded` and one per error kind.
    pub counters: BTreeMap<String, u64>,
    /// `succeeded / completed`, when anything completed.
    pub success_rate: Option<f64>,
    /// Declared limits (`rpm`, `tpm`, `rpd`, `tpd`; null when not declared).
    pub limits: keyrelay_core::keys::Limits,
    /// Use in the current rate window and quota day.
    pub usage: keyrelay_core::keys::Usage,
    /// Largest share of a declared daily limit used (0.0-1.0).
    pub daily_share: Option<f64>,
    /// Last provider call, last failure class and when (this process).
    pub last_used: Option<Timestamp>,
    pub last_error_class: Option<String>,
    pub last_error_at: Option<Timestamp>,
    /// The instance driving the key (null while it changes hands).
    pub driven_by: Option<String>,
}

impl KeyView {
    pub fn usable(&self) -> bool {
        self.state == "active"
    }
}

/// Every key as this instance knows it, with its stored counters.
pub async fn key_views(state: &HttpState) -> Result<Vec<KeyView>, ApiError> {
    let snapshots = state.supervisor.send(GetKeys).await?;
    let now = Timestamp::now();
    snapshots.into_iter().map(|s| view(state, s, now)).collect()
}

/// Every key, each as the instance driving it knows it: that instance's
/// state, usage and counters are the current ones. A peer that does not
/// answer leaves this instance's (older) view of its keys.
pub async fn fleet_key_views(
    state: &HttpState,
    req: &HttpRequest,
) -> Result<Vec<KeyView>, ApiError> {
    let mut views = key_views(state).await?;
    if peers::local_only(req) {
        return Ok(views);
    }
    for peer in peers::others(state) {
        let Ok((200, body)) = peers::ask(&peer, req, reqwest::Method::GET, "/v1/keys", None).await
        else {
            continue;
        };
        let theirs: Vec<KeyView> = body
            .get("keys")
            .cloned()
            .and_then(|k| serde_json::from_value(k).ok())
            .unwrap_or_default();
        for key in theirs {
            if key.driven_by.as_deref() != Some(peer.beacon.instance.as_str()) {
                continue;
            }
            if let Some(mine) = views
                .iter_mut()
                .find(|v| v.pool == key.pool && v.name == key.name)
            {
                *mine = key;
            }
        }
    }
    Ok(views)
}

/// The instance driving `pool/key`, by name, as this instance sees it.
fn driver(state: &HttpState, pool: &str, key: &str) -> Option<String> {
    let picture = state.fleet.borrow();
    match picture.owners.get(&format!("{pool}/{key}"))? {
        KeyOwner::Me => Some(picture.me.clone()),
        KeyOwner::Other(name) => Some(name.clone()),
        KeyOwner::Nobody => None,
    }
}

fn view(state: &HttpState, s: KeySnapshot, now: Timestamp) -> Result<KeyView, ApiError> {
    let counters: BTreeMap<String, u64> = state
        .store
        .counters(&format!("{}/{}", s.pool, s.name))?
        .into_iter()
        .collect();
    let completed = counters.get("completed").copied().unwrap_or(0);
    let succeeded = counters.get("succeeded").copied().unwrap_or(0);
    let reason = match &s.state {
        KeyState::Active => None,
        KeyState::CoolingDown { reason, .. }
        | KeyState::Exhausted { reason, .. }
        | KeyState::Disabled { reason } => Some(reason.clone()),
    };
    let until = s.state.until();
    Ok(KeyView {
        driven_by: driver(state, &s.pool, &s.name),
        state: s.state.label().to_owned(),
        reason,
        until,
        seconds_until: until.map(|u| u.duration_since(now).as_secs().max(0)),
        success_rate: (completed > 0).then(|| succeeded as f64 / completed as f64),
        counters,
        pool: s.pool,
        name: s.name,
        fingerprint: s.fingerprint,
        priority: s.priority,
        concurrency: s.concurrency,
        in_flight: s.in_flight,
        daily_share: s.usage.daily_share(&s.limits),
        last_used: s.last.used_at,
        last_error_class: s.last.error_class.map(str::to_owned),
        last_error_at: s.last.error_at,
        limits: s.limits,
        usage: s.usage,
    })
}

pub async fn list(state: web::Data<HttpState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let keys = fleet_key_views(&state, &req).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "keys": keys })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisableBody {
    reason: Option<String>,
}

/// `POST /v1/keys/{pool}/{name}/{action}`. A key another instance drives
/// is acted on there (its state follows the key when it changes hands); a
/// probe too, so the key is never called by two instances at once.
pub async fn act(
    state: web::Data<HttpState>,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (pool, key, action) = path.into_inner();
    if !peers::local_only(&req)
        && let Some(owner) = peers::driven_elsewhere(&state, &pool, &key)
    {
        let path = format!("/v1/keys/{pool}/{key}/{action}");
        let (status, answer) = peers::ask(
            &owner,
            &req,
            reqwest::Method::POST,
            &path,
            Some(body.to_vec()),
        )
        .await?;
        return Ok(peers::relay(&owner, status, answer));
    }
    let configured = state
        .config
        .pools
        .iter()
        .any(|p| p.name == pool && p.keys.iter().any(|k| k.name == key));
    if configured && driver(&state, &pool, &key).is_none() {
        return Err(ApiError::Unavailable(format!(
            "key `{pool}/{key}` is changing hands between instances; try again in a few seconds"
        )));
    }
    let supervisor = &state.supervisor;
    let done = match action.as_str() {
        "disable" => {
            let reason = disable_reason(&body)?;
            supervisor
                .send(DisableKey {
                    pool: pool.clone(),
                    key: key.clone(),
                    reason,
                })
                .await?
        }
        "enable" => {
            supervisor
                .send(EnableKey {
                    pool: pool.clone(),
                    key: key.clone(),
                })
                .await?
        }
        "reset" => {
            supervisor
                .send(ResetKey {
                    pool: pool.clone(),
                    key: key.clone(),
                })
                .await?
        }
        "probe" => return probe(&state, pool, key).await,
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown key action `{other}` (disable, enable, probe, reset)"
            )));
        }
    };
    done.map_err(key_command_error)?;
    let view = key_views(&state)
        .await?
        .into_iter()
        .find(|k| k.pool == pool && k.name == key);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "action": action, "key": view })))
}

/// 404 for a key that does not exist, 503 while shutting down, 500 for a
/// store that failed the command.
fn key_command_error(e: KeyCommandError) -> ApiError {
    match e {
        KeyCommandError::NoSuchKey { .. } => ApiError::NotFound(e.to_string()),
        KeyCommandError::ShuttingDown => ApiError::Unavailable(e.to_string()),
        KeyCommandError::Store { .. } => ApiError::KeyStore(e),
    }
}

fn disable_reason(body: &[u8]) -> Result<String, ApiError> {
    let default = "disabled by operator".to_string();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(default);
    }
    let parsed: DisableBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("body must be {{\"reason\": \"...\"}}: {e}")))?;
    let reason = parsed.reason.unwrap_or(default);
    if reason.chars().count() > 200 {
        return Err(ApiError::bad("`reason` is longer than 200 characters"));
    }
    Ok(reason)
}

/// One tiny real request on the key (report only: the key's state is not
/// changed by a probe; enable or reset it after a good one).
async fn probe(state: &HttpState, pool: String, key: String) -> Result<HttpResponse, ApiError> {
    let ctx = state
        .supervisor
        .send(ProbeTarget {
            pool: pool.clone(),
            key: key.clone(),
        })
        .await?
        .map_err(key_command_error)?;
    let request = ProviderRequest {
        model: ctx.pool.default_model.clone(),
        messages: vec![ChatMessage::text(
            Role::User,
            "Reply with the single word OK.",
        )],
        output: Default::default(),
        max_output_tokens: Some(5),
        temperature: Some(0.0),
        user: None,
    };
    let started = Instant::now();
    let outcome = ctx.pool.client.call(&ctx.secret, &request).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let class = outcome.class().as_str();
    metrics::counter!(m::PROBES_TOTAL, "pool" => pool.clone(), "key" => key.clone(), "outcome" => class)
        .increment(1);
    let message = match &outcome {
        Outcome::Success(c) => truncate_chars(&c.text, 200),
        other => truncate_chars(other.message(), 300),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "pool": pool,
        "key": key,
        "fingerprint": ctx.secret.fingerprint(),
        "model": request.model,
        "ok": matches!(outcome, Outcome::Success(_)),
        "outcome": class,
        "message": message,
        "latency_ms": latency_ms,
    })))
}
