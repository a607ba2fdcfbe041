//! `GET /ui`: the cluster dashboard, one page and its script and style sheet, compiled into the
//! binary from `src/api/ui/` (nothing is fetched from elsewhere, and building it needs no
//! toolchain beyond Rust's). `GET /` redirects to it. The page and its assets are served without
//! the API token: the page asks for the token and keeps it for the browser session, and
//! everything it shows comes from the API with it. The page decides nothing: it draws what the
//! members, status, health, watch and fault endpoints say.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// The page may load and fetch only from the node serving it.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; form-action 'self'; \
                      frame-ancestors 'none'; base-uri 'none'";

/// The paths served without the API token.
pub const PUBLIC: [&str; 4] = ["/", "/ui", "/ui/app.js", "/ui/style.css"];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

pub async fn root() -> Redirect {
    Redirect::temporary("/ui")
}
