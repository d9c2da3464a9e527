//! Errors a client can see, and the one place where they become HTTP statuses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("authentication required")]
    Unauthorized,
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A device whose identity is missing, invalid or not the one bound to its enrollment.
    #[error("device not authorised: {0}")]
    DeviceUnauthorized(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Conflict(String),
    /// Authenticated, but this may not be done (e.g. privacy rules forbid it).
    #[error("{0}")]
    Forbidden(String),
    #[error("the store is unavailable")]
    Store(#[from] StoreError),
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::DeviceUnauthorized(_) => "device_unauthorized",
            ApiError::Gone(_) => "gone",
            ApiError::Conflict(_) => "conflict",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Store(_) => "store_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::DeviceUnauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Details of server-side failures go to the log, not to the client.
        match self {
            ApiError::Store(e) => tracing::error!(error = %e, "store error"),
            ApiError::Internal(e) => tracing::error!(error = %e, "internal error"),
            ApiError::DeviceUnauthorized(e) => tracing::warn!(reason = %e, "device request refused"),
            _ => tracing::info!(error = %self, "request refused"),
        }
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}

impl ApiError {
    /// How the audit log classes a request that ended in this error: refused (the caller's
    /// request was not allowed or not valid) or failed (the appliance could not do it).
    pub fn audit_outcome(&self) -> crate::audit::Outcome {
        match self {
            ApiError::Store(_) | ApiError::Internal(_) => crate::audit::Outcome::Failure,
            _ => crate::audit::Outcome::Denied,
        }
    }
}
