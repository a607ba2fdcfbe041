//! The API token (`--api-token-file`): with one set, every request but `GET /v1/health`,
//! `GET /metrics` and the dashboard's page and assets (`/`, `/ui`, which ask for the token in the
//! browser) must carry `Authorization: Bearer <token>`, else 401 `unauthorized`. Checked
//! before the in-flight limit, so requests without the token never take a slot. Reads headers
//! only.

use super::error::ApiError;
use super::{HEALTH, METRICS};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The token every request must carry (`None`: no token required).
#[derive(Clone, Default)]
pub struct ApiToken(pub Option<Arc<str>>);

/// Never prints the token itself.
impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() {
            "ApiToken(set)"
        } else {
            "ApiToken(none)"
        };
        f.write_str(shown)
    }
}

pub async fn require_token(
    State(token): State<ApiToken>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token.0.as_deref() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if [HEALTH, METRICS].contains(&path) || super::ui::PUBLIC.contains(&path) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.trim().as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this node requires `Authorization: Bearer <token>` (--api-token-file)",
        )
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
        .into_response(),
    }
}

/// Compares in time independent of where the two differ (the length aside).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
