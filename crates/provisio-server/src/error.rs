//! The one API error type: a stable `code`, a human `message` and per-field
//! messages, as `{"error": {"code", "message", "fields"}}`. Server faults are
//! logged with their cause and answered with a bland message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use provisio_core::FieldErrors;
use provisio_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: FieldErrors,
}

/// The error body, for the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `malformed`, `unauthorized`, `not_found`,
    /// `method_not_allowed`, `conflict`, `too_large`, `invalid`, `internal`,
    /// `unavailable`.
    pub code: &'static str,
    pub message: String,
    /// Field name → what is wrong with it (only for `invalid`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fields: std::collections::BTreeMap<String, String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: FieldErrors::new(),
        }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} not found", what.into()),
        )
    }

    /// 405; the router adds the `Allow` header.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not take this method; the Allow header lists those it takes",
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 422 with one message per field.
    pub fn invalid(fields: FieldErrors) -> Self {
        let message = format!("invalid input: {}", fields.summary());
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message,
            fields,
        }
    }

    /// 422 about one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut fields = FieldErrors::new();
        fields.add(field, message);
        Self::invalid(fields)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A fault of ours: logged in full, answered without detail.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn fields(&self) -> &FieldErrors {
        &self.fields
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::Conflict(message) => ApiError::conflict(message),
            err if err.is_unavailable() => {
                tracing::error!(error = %err, "database unavailable");
                ApiError::unavailable("the database is unavailable; try again shortly")
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<provisio_engine::EngineError> for ApiError {
    fn from(err: provisio_engine::EngineError) -> Self {
        match err {
            provisio_engine::EngineError::Store(e) => e.into(),
            provisio_engine::EngineError::ShuttingDown => {
                ApiError::unavailable("the server is shutting down")
            }
        }
    }
}

impl From<provisio_engine::OpError> for ApiError {
    fn from(err: provisio_engine::OpError) -> Self {
        use provisio_engine::OpError;
        match err {
            OpError::Invalid(fields) => ApiError::invalid(fields),
            OpError::NotFound(what) => ApiError::not_found(what),
            OpError::Conflict(message) => ApiError::conflict(message),
            OpError::Unavailable(message) => ApiError::unavailable(message),
            OpError::Engine(e) => e.into(),
        }
    }
}

impl From<provisio_engine::EmitError> for ApiError {
    fn from(err: provisio_engine::EmitError) -> Self {
        provisio_engine::OpError::from(err).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                fields: self
                    .fields
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
