//! The admin API under `/v1` (operations issue): pools, keys, jobs, stats, alerts.

use actix_web::web;

/// Mount the admin routes (none yet).
pub fn routes(_cfg: &mut web::ServiceConfig) {}
