//! Errors of the admin API, each rendered as a JSON body
//! `{"error": "<code>", "message": "<what went wrong>"}` with its HTTP status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use thiserror::Error;

use crate::actors::messages::KeyCommandError;
use crate::amqp::AmqpError;
use keyrelay_core::store::StoreError;

#[derive(Debug, Error)]
pub enum ApiError {
    /// Missing, malformed or wrong token (or no token configured at all).
    #[error("{0}")]
    Unauthorized(String),
    /// A read-only token on an endpoint that changes something.
    #[error("{0}")]
    Forbidden(String),
    /// A bad parameter or body; the message names it.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The broker could not be reached or refused the operation.
    #[error("broker: {0}")]
    Broker(#[from] AmqpError),
    #[error("{0}")]
    Unavailable(String),
    /// Every heavy-read slot is taken (`[admin] max_heavy_reads`); answered
    /// with `Retry-After`.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An operator's command on a key failed in the store; names the key.
    #[error(transparent)]
    KeyStore(KeyCommandError),
    /// The supervisor did not answer (shutting down).
    #[error("the supervisor is not running: {0}")]
    Supervisor(#[from] actix::MailboxError),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Broker(_) | ApiError::Unavailable(_) => "unavailable",
            ApiError::Busy(_) => "busy",
            ApiError::Store(_) | ApiError::KeyStore(_) | ApiError::Supervisor(_) => "internal",
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Broker(_) | ApiError::Unavailable(_) | ApiError::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Store(_) | ApiError::KeyStore(_) | ApiError::Supervisor(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(_) => {
                response.insert_header(("WWW-Authenticate", "Bearer realm=\"keyrelay\""));
            }
            ApiError::Busy(_) => {
                response.insert_header(("Retry-After", RETRY_AFTER_SECS));
            }
            _ => {}
        }
        response.json(serde_json::json!({"error": self.code(), "message": self.to_string()}))
    }
}

/// What a `busy` answer tells the client to wait (`Retry-After`, seconds).
pub const RETRY_AFTER_SECS: u64 = 1;

/// Turn actix's own extractor failures (bad query string, bad path, body too
/// large) into the same JSON shape.
pub fn extractor_error(err: impl std::fmt::Display) -> actix_web::Error {
    ApiError::bad(err.to_string()).into()
}
