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
    /// A sign-in that failed; deliberately vague about which part was wrong.
    #[error("invalid user name, password or code")]
    InvalidCredentials,
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
    /// Allowed, but only after signing in again (destructive actions from a console session).
    #[error("this action requires signing in again (POST /api/v1/auth/reauthenticate)")]
    Reauthenticate,
    /// Too many failed sign-ins from this account or address.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: i64 },
    /// A service the appliance depends on (the directory) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
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
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::DeviceUnauthorized(_) => "device_unauthorized",
            ApiError::Gone(_) => "gone",
            ApiError::Conflict(_) => "conflict",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Reauthenticate => "reauthentication_required",
            ApiError::TooManyRequests { .. } => "too_many_attempts",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Store(_) => "store_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unauthorized | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::DeviceUnauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) | ApiError::Reauthenticate => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Store(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Details of server-side failures go to the log, not to the client.
        match self {
            ApiError::Store(e) => tracing::error!(error = %e, "store error"),
            ApiError::Internal(e) => tracing::error!(error = %e, "internal error"),
            ApiError::Unavailable(e) => tracing::error!(error = %e, "dependency unavailable"),
            ApiError::DeviceUnauthorized(e) => tracing::warn!(reason = %e, "device request refused"),
            _ => tracing::info!(error = %self, "request refused"),
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::TooManyRequests { retry_after_secs, .. } = self {
            response.insert_header((
                actix_web::http::header::RETRY_AFTER,
                retry_after_secs.max(&1).to_string(),
            ));
        }
        response.json(ErrorBody {
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
            ApiError::Store(_) | ApiError::Internal(_) | ApiError::Unavailable(_) => {
                crate::audit::Outcome::Failure
            }
            _ => crate::audit::Outcome::Denied,
        }
    }
}
