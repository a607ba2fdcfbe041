//! Why a client command failed, as one line for stderr and an exit code (0 success, 1 not found,
//! 2 usage, 3 server or connection).

use std::fmt;

pub const EXIT_NOT_FOUND: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_SERVER: u8 = 3;

/// A reply with a status other than 2xx, with the node's JSON error when it sent one.
#[derive(Debug)]
pub struct HttpFailure {
    /// Method and URL, e.g. `GET http://127.0.0.1:7001/v1/kv/a%2Fb`.
    pub request: String,
    pub status: u16,
    /// The node's `code` and `error` fields; `None` when the body was not such JSON.
    pub error: Option<(String, String)>,
    /// The start of a body that was not a JSON error.
    pub body_excerpt: String,
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            request, status, ..
        } = self;
        match &self.error {
            Some((code, message)) => write!(f, "{request}: HTTP {status} {code}: {message}"),
            None if self.body_excerpt.is_empty() => write!(f, "{request}: HTTP {status}"),
            None => write!(f, "{request}: HTTP {status}: {}", self.body_excerpt),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad arguments or local input (token file, stdin).
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Http(Box<HttpFailure>),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{request}: no reply within {timeout_ms} ms")]
    Timeout { request: String, timeout_ms: u64 },
    /// The connection broke, or the reply is not what a node sends.
    #[error("{request}: {reason}")]
    BadReply { request: String, reason: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Http(failure) => match failure.status {
                404 => EXIT_NOT_FOUND,
                // A timeout or a rate limit is the server's state, not the user's input.
                408 | 429 => EXIT_SERVER,
                400..=499 => EXIT_USAGE,
                _ => EXIT_SERVER,
            },
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::BadReply { .. }
            | Self::Runtime(_)
            | Self::Stdout(_) => EXIT_SERVER,
        }
    }
}

/// `text` on one line: control characters (newlines above all) become spaces.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An error and its sources, joined with ": " (hyper's own message is often just "error").
pub fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    one_line(&text)
}
