//! `GET /v1/budgets`: every budget with what was spent against it today and
//! this month; `PUT /v1/budgets`: set (raise, lower, clear) the budget of a
//! key, a pool or a user. A budget set here outlives restarts and wins over
//! the config's; keys parked by a budget come back to be checked again.
//!
//! In a fleet, each instance counts what its calls spent and shares the
//! figures in its beacons, so every budget is held by the fleet together
//! (docs/spend.md); a budget set on one instance is passed to the others.

use actix_web::{HttpRequest, HttpResponse, web};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use crate::actors::messages::BudgetsChanged;
use crate::http::state::HttpState;
use keyrelay_core::spend::{Budget, BudgetScope, BudgetStatus};

/// Spent at or past this share of a budget raises a warning alert.
pub const WARN_SHARE: f64 = 0.8;

/// One budget as the API shows it.
#[derive(Debug, Serialize)]
struct BudgetView {
    #[serde(flatten)]
    status: BudgetStatus,
    /// `spent_usd / limit_usd`.
    share: f64,
}

pub async fn list(state: web::Data<HttpState>) -> Result<HttpResponse, ApiError> {
    let budgets: Vec<BudgetView> = state
        .spend
        .status(Timestamp::now())
        .into_iter()
        .map(|status| BudgetView {
            share: status.share(),
            status,
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "budgets": budgets })))
}

/// `PUT /v1/budgets` body. A period left out keeps its budget; `null`
/// means none for that period.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    /// `key`, `pool` or `user`.
    scope: String,
    /// `pool/key`, `pool`, or `pool/user`.
    name: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    usd_per_day: Option<Option<f64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    usd_per_month: Option<Option<f64>>,
}

/// A field that is there, `null` or not: `Some(None)`; absent: `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

pub async fn set(
    state: web::Data<HttpState>,
    req: HttpRequest,
    body: web::Json<SetBudget>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let scope = parse_scope(&body.scope)?;
    check_name(&state, scope, &body.name)?;
    let was = state.spend.budget(scope, &body.name).unwrap_or_default();
    let budget = Budget {
        usd_per_day: match body.usd_per_day {
            Some(day) => dollars("usd_per_day", day)?,
            None => was.usd_per_day,
        },
        usd_per_month: match body.usd_per_month {
            Some(month) => dollars("usd_per_month", month)?,
            None => was.usd_per_month,
        },
    };
    state.store.set_budget(scope, &body.name, &budget)?;
    state.spend.set_budget(scope, &body.name, budget);
    let back = state.supervisor.send(BudgetsChanged).await?;
    tracing::info!(scope = scope.as_str(), name = %body.name, ?budget, keys_back = back, "budget set by operator");
    let fleet = tell_the_fleet(&state, &req, &body).await;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "scope": scope, "name": body.name, "budget": budget, "keys_back_in_rotation": back,
        "fleet": fleet,
    })))
}

/// Pass the budget to every other instance (unless this request was
/// passed on itself): each keeps it in its store. Their answers by name:
/// `ok`, or why not (an instance that missed it keeps its old budget until
/// the operator sets it again).
async fn tell_the_fleet(
    state: &HttpState,
    req: &HttpRequest,
    body: &SetBudget,
) -> serde_json::Map<String, serde_json::Value> {
    let mut answers = serde_json::Map::new();
    if super::peers::local_only(req) {
        return answers;
    }
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    for peer in super::peers::others(state) {
        let asked = super::peers::ask(
            &peer,
            req,
            reqwest::Method::PUT,
            "/v1/budgets",
            Some(bytes.clone()),
        )
        .await;
        let answer = match asked {
            Ok((200, _)) => "ok".to_owned(),
            Ok((status, body)) => format!("refused ({status}): {body}"),
            Err(e) => e.to_string(),
        };
        if answer != "ok" {
            tracing::warn!(instance = %peer.beacon.instance, %answer, "the budget did not reach another instance");
        }
        answers.insert(
            peer.beacon.instance.clone(),
            serde_json::Value::String(answer),
        );
    }
    answers
}

fn parse_scope(scope: &str) -> Result<BudgetScope, ApiError> {
    match scope {
        "key" => Ok(BudgetScope::Key),
        "pool" => Ok(BudgetScope::Pool),
        "user" => Ok(BudgetScope::User),
        other => Err(ApiError::BadRequest(format!(
            "scope `{other}`: expected key, pool or user"
        ))),
    }
}

/// The name must be a configured pool or key (`pool/key`), or a user of a
/// configured pool (`pool/user`).
fn check_name(state: &HttpState, scope: BudgetScope, name: &str) -> Result<(), ApiError> {
    let (pool, rest) = match scope {
        BudgetScope::Pool => (name, None),
        BudgetScope::Key | BudgetScope::User => match name.split_once('/') {
            Some((pool, rest)) if !rest.is_empty() => (pool, Some(rest)),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "name `{name}`: a {} budget is named pool/{}",
                    scope.as_str(),
                    scope.as_str()
                )));
            }
        },
    };
    let Some(config) = state.config.pools.iter().find(|p| p.name == pool) else {
        return Err(ApiError::NotFound(format!("no pool `{pool}`")));
    };
    if scope == BudgetScope::Key
        && let Some(key) = rest
        && !config.keys.iter().any(|k| k.name == key)
    {
        return Err(ApiError::NotFound(format!(
            "no key `{key}` in pool `{pool}`"
        )));
    }
    Ok(())
}

fn dollars(field: &str, value: Option<f64>) -> Result<Option<f64>, ApiError> {
    match value {
        Some(usd) if !(usd.is_finite() && usd >= 0.0) => Err(ApiError::BadRequest(format!(
            "{field}: {usd} is not an amount of US dollars (>= 0; null for no budget)"
        ))),
        other => Ok(other),
    }
}
