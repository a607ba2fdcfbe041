//! API errors: every failure the HTTP layer returns is an [`ApiError`], rendered as
//! `{"error": "...", "code": "..."}` with a fitting status. Client mistakes are 4xx; only a broken
//! disk or a stopping node gives a 5xx.

use crate::runtime::CoreError;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// More fields of the body, beside `error` and `code`.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Headers of the response (an `ETag` beside a 412).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: serde_json::Map::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a field to the body.
    pub fn with(mut self, name: &str, value: serde_json::Value) -> Self {
        self.fields.insert(name.to_string(), value);
        self
    }

    /// Adds a header to the response.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.fields;
        body.insert("error".into(), self.message.into());
        body.insert("code".into(), self.code.into());
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Stopped => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            CoreError::Store(e) => {
                tracing::error!(error = %e, "storage error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_error",
                    e.to_string(),
                )
            }
            CoreError::ClockSkew(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "clock_skew",
                format!("{e}; this node refuses writes until its clock is back in bounds: write to another node"),
            ),
            CoreError::DiskFull(_) => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                format!("{e}; free space on this node's disk, or write to another node"),
            ),
            CoreError::TooLarge(_) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("{e}: a state that large could never replicate"),
            ),
            CoreError::PreconditionFailed { ref current } => {
                let current = current.clone();
                let error = Self::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition_failed",
                    format!("{e}; conditions are checked against this node's value only"),
                )
                .with("etag", current.clone().into());
                match current.and_then(|tag| HeaderValue::from_str(&tag).ok()) {
                    Some(tag) => error.with_header(header::ETAG, tag),
                    None => error,
                }
            }
            CoreError::NoSuchSet(_) => Self::not_found(format!(
                "{e}: a remove only removes what this node has observed, and it observed nothing"
            )),
            CoreError::CounterOverflow(_) => Self::new(
                StatusCode::CONFLICT,
                "counter_overflow",
                format!("{e}: add on another node, or to another counter"),
            ),
            CoreError::NotApplied(_) => {
                tracing::error!(error = %e, "the core refused a client write");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        CoreError::Store(e).into()
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request("bad_path", e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request("bad_query", e.body_text())
    }
}

/// The machine-readable code for an error status produced outside our handlers.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    }
}

/// Gives error responses that did not come from our handlers (unknown path, wrong method,
/// framework rejections) the same JSON shape, keeping their status and headers (`Allow`).
pub fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let message = match status {
        StatusCode::NOT_FOUND => "no such endpoint".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this endpoint".to_string(),
        other => other
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let body = serde_json::json!({ "error": message, "code": code_for(status) }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}
