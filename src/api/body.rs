//! Request bodies, bounded before they are read whole. A body over the limit gets a 413 JSON
//! error. When the client is already sending it (no `Expect: 100-continue`), the rest is read and
//! discarded up to [`DRAIN_CAP`] first, so the client reads the 413 instead of a connection reset
//! (the "lingering close" of mature HTTP servers); nothing over the limit is ever kept.

use super::error::ApiError;
use super::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;

/// Most bytes read and discarded from an oversized body before the connection is dropped.
const DRAIN_CAP: usize = 64 << 20;
/// Longest time spent discarding an oversized body.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The whole request body, at most `--max-value-bytes` long.
pub struct BoundedBody(pub Bytes);

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body exceeds the limit of {limit} bytes (--max-value-bytes)"),
    )
}

impl FromRequest<AppState> for BoundedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.settings.max_value_bytes;
        let expects_continue = request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = request.into_body();
        if declared.is_some_and(|n| n > limit as u64) {
            if !expects_continue {
                drain(body).await;
            }
            return Err(too_large(limit));
        }
        let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::bad_request("bad_body", format!("reading the body failed: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    drain(body).await;
                    return Err(too_large(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(BoundedBody(Bytes::from(buf)))
    }
}

async fn drain(mut body: Body) {
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_CAP {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}
