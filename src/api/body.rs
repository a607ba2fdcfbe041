//! Request bodies, bounded in size and in time before they are read whole, and JSON bodies that
//! must be objects. A body over the limit gets a 413 JSON error, a body that does not arrive
//! within `--http-body-timeout-ms` a 408, a body the server would have to decode (a content or
//! transfer coding other than identity and chunked) a 415: nothing is ever stored still encoded.
//! When the client is already sending a body it refuses (no `Expect: 100-continue`), the rest is
//! read and discarded up to [`DRAIN_CAP`] first, so the client reads the error instead of a
//! connection reset (the "lingering close" of mature HTTP servers); nothing refused is ever kept.

use super::error::ApiError;
use super::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Most bytes read and discarded from a refused body before the connection is dropped.
const DRAIN_CAP: usize = 64 << 20;
/// Longest time spent discarding a refused body.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The whole request body, at most `--max-value-bytes` long, as sent (never decoded).
pub struct BoundedBody(pub Bytes);

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body exceeds the limit of {limit} bytes (--max-value-bytes)"),
    )
}

fn too_slow(timeout: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "the request body did not arrive within {} ms (--http-body-timeout-ms)",
            timeout.as_millis()
        ),
    )
}

/// Refuses a body hearsay would have to decode: values are stored byte for byte, so a gzipped
/// body stored as if it were the value would be silently wrong.
fn refuse_codings(headers: &HeaderMap) -> Result<(), ApiError> {
    let codings = |name| {
        headers
            .get_all(name)
            .into_iter()
            .flat_map(|v| v.to_str().unwrap_or("(not ASCII)").split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let unsupported = |coding: &str, name: &header::HeaderName| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("{name}: {coding} is not supported; send the body unencoded"),
        )
    };
    if let Some(c) = codings(header::CONTENT_ENCODING).find(|c| !c.eq_ignore_ascii_case("identity"))
    {
        return Err(unsupported(c, &header::CONTENT_ENCODING));
    }
    // The HTTP layer decodes chunked framing and nothing else.
    if let Some(c) = codings(header::TRANSFER_ENCODING).find(|c| !c.eq_ignore_ascii_case("chunked"))
    {
        return Err(unsupported(c, &header::TRANSFER_ENCODING));
    }
    Ok(())
}

/// Why a body was not read whole.
enum Unread {
    TooLarge,
    Broken(String),
}

/// Reads `body` into `buf`, stopping as soon as it would exceed `limit`.
async fn read_bounded(body: &mut Body, limit: usize, buf: &mut Vec<u8>) -> Result<(), Unread> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Unread::Broken(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(Unread::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(())
}

impl FromRequest<AppState> for BoundedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.settings.max_value_bytes;
        let timeout = state.settings.body_timeout;
        let headers = request.headers();
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let refused = refuse_codings(headers).err().or_else(|| {
            declared
                .is_some_and(|n| n > limit as u64)
                .then(|| too_large(limit))
        });
        let mut body = request.into_body();
        if let Some(error) = refused {
            if !expects_continue {
                drain(body).await;
            }
            return Err(error);
        }
        let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
        match tokio::time::timeout(timeout, read_bounded(&mut body, limit, &mut buf)).await {
            Ok(Ok(())) => Ok(BoundedBody(Bytes::from(buf))),
            Ok(Err(Unread::TooLarge)) => {
                drain(body).await;
                Err(too_large(limit))
            }
            Ok(Err(Unread::Broken(e))) => Err(ApiError::bad_request(
                "bad_body",
                format!("reading the body failed: {e}"),
            )),
            // The connection is closed after the answer: the rest of the body is never read.
            Err(_) => Err(too_slow(timeout)),
        }
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

/// Parses a JSON body that must be one object of type `T`, described to the client as
/// `expected`. serde would also read a struct from an array of its fields' values
/// (`[["a"], ["b"]]` for `{"add": ["a"], "remove": ["b"]}`); the API takes objects only.
pub fn json_object<T: DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, ApiError> {
    let bad =
        |why: String| ApiError::bad_request("bad_json", format!("expected {expected}: {why}"));
    let first = body.iter().find(|b| !b" \t\r\n".contains(b));
    if first != Some(&b'{') {
        return Err(bad("the body must be a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| bad(e.to_string()))
}

/// The largest whole number a float holds exactly (2^53).
const EXACT_IN_A_FLOAT: f64 = 9_007_199_254_740_992.0;

/// A JSON number as JSON Schema's `integer`: also written with a zero fraction or an exponent
/// (`5.0`, `5e0`), taken when a float holds it exactly (up to 2^53), so no digit changes.
fn whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<serde_json::Number, D::Error> {
    use serde::Deserialize;
    let number = serde_json::Number::deserialize(deserializer)?;
    if number.is_f64() {
        return match number.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT_IN_A_FLOAT => {
                // Exact in both types by the bound above.
                Ok(if f < 0.0 {
                    (f as i64).into()
                } else {
                    (f as u64).into()
                })
            }
            _ => Err(serde::de::Error::custom(format!(
                "{number} is not an integer"
            ))),
        };
    }
    Ok(number)
}

/// A signed 64-bit integer, as [`whole_number`] reads it (`deserialize_with`).
pub(super) fn whole_i64<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<i64, D::Error> {
    let number = whole_number(deserializer)?;
    number
        .as_i64()
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a signed 64-bit integer")))
}

/// An unsigned 64-bit integer, as [`whole_number`] reads it (`deserialize_with`).
pub(super) fn whole_u64<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<u64, D::Error> {
    let number = whole_number(deserializer)?;
    number.as_u64().ok_or_else(|| {
        serde::de::Error::custom(format!("{number} is not an unsigned 64-bit integer"))
    })
}
