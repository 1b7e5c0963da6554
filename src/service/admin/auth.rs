//! Bearer-token auth for `/v1/*`: the admin token may do anything, the
//! read-only token may only read (GET/HEAD). Tokens are compared in constant
//! time (SHA-256 of both sides, then a constant-time equality of the digests,
//! so neither content nor length leaks through timing).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::errors::ApiError;
use crate::http::state::HttpState;
use keyrelay_core::config::AdminConfig;
use keyrelay_core::metrics as m;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Admin,
}

/// Middleware on the `/v1` scope.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let verdict = match req.app_data::<web::Data<HttpState>>() {
        Some(state) => authorize(
            req.headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            req.method(),
            &state.config.admin,
        ),
        None => Err(ApiError::Unauthorized("admin API not configured".into())),
    };
    let outcome = match &verdict {
        Ok(_) => "ok",
        Err(ApiError::Forbidden(_)) => "forbidden",
        Err(_) => "unauthorized",
    };
    metrics::counter!(m::ADMIN_REQUESTS_TOTAL, "result" => outcome).increment(1);
    match verdict {
        Ok(_) => Ok(next.call(req).await?.map_into_left_body()),
        Err(e) => Ok(req.into_response(e.error_response()).map_into_right_body()),
    }
}

/// Check an `Authorization` header value for `method`.
pub fn authorize(
    header: Option<&str>,
    method: &Method,
    admin: &AdminConfig,
) -> Result<Access, ApiError> {
    if admin.read_token.is_none() && admin.admin_token.is_none() {
        return Err(ApiError::Unauthorized(
            "the admin API is disabled: no token is configured ([admin] in the config)".into(),
        ));
    }
    let Some(header) = header else {
        return Err(ApiError::Unauthorized(
            "missing `Authorization: Bearer <token>` header".into(),
        ));
    };
    let Some(token) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
    else {
        return Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`".into(),
        ));
    };
    let token = token.trim();
    let is = |known: &Option<keyrelay_core::secret::ApiKey>| {
        known.as_ref().is_some_and(|k| same(k.expose(), token))
    };
    // Both comparisons always run: which token matched does not show in timing.
    let (admin_ok, read_ok) = (is(&admin.admin_token), is(&admin.read_token));
    if admin_ok {
        return Ok(Access::Admin);
    }
    if read_ok {
        if method == Method::GET || method == Method::HEAD {
            return Ok(Access::Read);
        }
        return Err(ApiError::Forbidden(
            "the read-only token may only read; this needs the admin token".into(),
        ));
    }
    Err(ApiError::Unauthorized("invalid token".into()))
}

fn same(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyrelay_core::secret::ApiKey;

    fn config() -> AdminConfig {
        AdminConfig {
            read_token: Some(ApiKey::new("read-token-0123456789")),
            admin_token: Some(ApiKey::new("admin-token-0123456789")),
            ..AdminConfig::default()
        }
    }

    #[test]
    fn tokens_and_methods() {
        let c = config();
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            authorize(Some("Bearer admin-token-0123456789"), &post, &c).unwrap(),
            Access::Admin
        );
        assert_eq!(
            authorize(Some("Bearer read-token-0123456789"), &get, &c).unwrap(),
            Access::Read
        );
        assert!(matches!(
            authorize(Some("Bearer read-token-0123456789"), &post, &c),
            Err(ApiError::Forbidden(_))
        ));
        for bad in [None, Some("Basic x"), Some("Bearer nope"), Some("Bearer ")] {
            assert!(matches!(
                authorize(bad, &get, &c),
                Err(ApiError::Unauthorized(_))
            ));
        }
        assert!(matches!(
            authorize(
                Some("Bearer admin-token-0123456789"),
                &get,
                &AdminConfig::default()
            ),
            Err(ApiError::Unauthorized(_))
        ));
    }
}
