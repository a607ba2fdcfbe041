//! Checks every request passes before a handler runs: percent-escapes in the path and the query
//! are well formed, and a route gets only the query parameters it takes with its method
//! ([`super::query_parameters`]). Reads the request line only: never a body, never the store.

use super::error::ApiError;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn check_request(request: Request, next: Next) -> Response {
    match check(&request) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn check(request: &Request) -> Result<(), ApiError> {
    let uri = request.uri();
    if let Some(escape) = malformed_escape(uri.path()) {
        return Err(ApiError::bad_request(
            "bad_path",
            format!("malformed percent-escape {escape:?} in the path (write '%' itself as %25)"),
        ));
    }
    // An unknown path is a 404 (or an empty name), whatever its query.
    let Some(route) = request.extensions().get::<MatchedPath>() else {
        return Ok(());
    };
    let query = uri.query().unwrap_or("");
    if let Some(escape) = malformed_escape(query) {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("malformed percent-escape {escape:?} in the query (write '%' itself as %25)"),
        ));
    }
    let allowed = super::query_parameters(route.as_str(), request.method());
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        if !allowed.contains(&name.as_ref()) {
            let takes = if allowed.is_empty() {
                "no query parameters".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(ApiError::bad_request(
                "bad_query",
                format!("unknown query parameter {name:?}; this endpoint takes {takes}"),
            ));
        }
    }
    Ok(())
}

/// The first `%` not followed by two hex digits, with what follows it (decoders pass such a
/// sequence through literally, so `a%ZZ` would be taken as the key "a%ZZ").
fn malformed_escape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let at = (0..bytes.len()).find(|&i| {
        bytes[i] == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })?;
    let end = (at + 3).min(bytes.len());
    Some(String::from_utf8_lossy(&bytes[at..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::malformed_escape;

    #[test]
    fn malformed_escapes_are_found_and_good_ones_pass() {
        for good in ["", "a", "caf%C3%A9", "%2F%2f", "a%25b", "100%25"] {
            assert_eq!(malformed_escape(good), None, "{good}");
        }
        for (bad, found) in [
            ("%", "%"),
            ("a%ZZ", "%ZZ"),
            ("a%2", "%2"),
            ("%g0", "%g0"),
            ("ok%41%4", "%4"),
            ("x%%41", "%%4"),
        ] {
            assert_eq!(malformed_escape(bad).as_deref(), Some(found), "{bad}");
        }
    }
}
