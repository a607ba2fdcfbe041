//! The client's HTTP/1.1 over one TCP connection (hyper's client connection API): one request at
//! a time, with a timeout, and a non-2xx reply turned into an error naming the node's code.

use super::address::Endpoint;
use super::error::{one_line, with_sources, ClientError, HttpFailure};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// Largest reply body read (a value is at most 4 MiB; a large set can be more).
const MAX_REPLY_BYTES: usize = 256 << 20;

/// A request body and its `Content-Type`.
pub struct Body {
    pub content_type: HeaderValue,
    pub bytes: Bytes,
}

/// One request to the node.
pub struct Call<'a> {
    pub method: Method,
    /// Path and query, already encoded.
    pub target: &'a str,
    pub body: Option<Body>,
}

/// Talks to one node, keeping its connection open between requests.
pub struct Client {
    endpoint: Endpoint,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(
        endpoint: Endpoint,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let authorization = token
            .map(|token| {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        ClientError::Usage(
                            "the token holds characters an HTTP header cannot carry".into(),
                        )
                    })?;
                value.set_sensitive(true);
                Ok::<_, ClientError>(value)
            })
            .transpose()?;
        Ok(Client {
            endpoint,
            authorization,
            timeout,
            sender: None,
        })
    }

    /// A request as error messages name it: `GET http://127.0.0.1:7001/v1/kv/a%2Fb`.
    /// A target over 120 characters (a long key) is cut short.
    pub fn describe(&self, method: &Method, target: &str) -> String {
        // `target` is percent-encoded: ASCII, so any byte index is a character boundary.
        match target.get(..120) {
            Some(start) if target.len() > 120 => format!("{method} {}{start}...", self.endpoint),
            _ => format!("{method} {}{target}", self.endpoint),
        }
    }

    /// Sends `call` and decodes its JSON reply.
    pub async fn call_json<T: serde::de::DeserializeOwned>(
        &mut self,
        call: Call<'_>,
    ) -> Result<T, ClientError> {
        let request = self.describe(&call.method, call.target);
        let body = self.call(call).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::BadReply {
            request,
            reason: format!("the reply is not the JSON a node sends: {e}"),
        })
    }

    /// Sends `call` and returns the reply body of a 2xx; any other status is an error.
    pub async fn call(&mut self, call: Call<'_>) -> Result<Bytes, ClientError> {
        let request = self.describe(&call.method, call.target);
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        match tokio::time::timeout(self.timeout, self.exchange(call, &request)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may still carry the unanswered request.
                self.sender = None;
                Err(ClientError::Timeout {
                    request,
                    timeout_ms,
                })
            }
        }
    }

    /// Sends `call` and hands the body of its 2xx reply to `chunk` piece by piece as it arrives,
    /// until the node ends it. The timeout covers the reply's head only: a stream may last.
    pub async fn stream(
        &mut self,
        call: Call<'_>,
        mut chunk: impl FnMut(&[u8]) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let request = self.describe(&call.method, call.target);
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let reply = match tokio::time::timeout(self.timeout, self.send(call, &request)).await {
            Ok(reply) => reply?,
            Err(_) => {
                self.sender = None;
                return Err(ClientError::Timeout {
                    request,
                    timeout_ms,
                });
            }
        };
        let (head, mut body) = reply.into_parts();
        if !head.status.is_success() {
            let body = Limited::new(body, MAX_REPLY_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(ClientError::Http(Box::new(failure(
                &request,
                head.status.as_u16(),
                &body,
            ))));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::BadReply {
                request: request.clone(),
                reason: format!("the stream broke: {}", with_sources(&e)),
            })?;
            if let Some(data) = frame.data_ref() {
                chunk(data)?;
            }
        }
        Ok(())
    }

    async fn exchange(&mut self, call: Call<'_>, request: &str) -> Result<Bytes, ClientError> {
        let bad_reply = |reason: String| ClientError::BadReply {
            request: request.to_string(),
            reason,
        };
        let reply = self.send(call, request).await?;
        let (head, body) = reply.into_parts();
        let body = Limited::new(body, MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| bad_reply(format!("cannot read the reply: {}", with_sources(&*e))))?
            .to_bytes();
        if head.status.is_success() {
            return Ok(body);
        }
        Err(ClientError::Http(Box::new(failure(
            request,
            head.status.as_u16(),
            &body,
        ))))
    }

    /// Sends `call` (described as `request` in errors) and returns the reply with its body
    /// unread.
    async fn send(
        &mut self,
        call: Call<'_>,
        request: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let mut builder = Request::builder()
            .method(call.method)
            .uri(call.target)
            .header(HOST, &self.endpoint.authority);
        if let Some(authorization) = &self.authorization {
            builder = builder.header(AUTHORIZATION, authorization);
        }
        let body = match call.body {
            Some(body) => {
                builder = builder.header(CONTENT_TYPE, body.content_type);
                body.bytes
            }
            None => Bytes::new(),
        };
        let http_request = builder
            .body(Full::new(body))
            .map_err(|e| ClientError::Usage(format!("{request}: cannot build the request: {e}")))?;
        let sender = self.connected().await?;
        sender
            .send_request(http_request)
            .await
            .map_err(|e| ClientError::BadReply {
                request: request.to_string(),
                reason: format!("the request failed: {}", with_sources(&e)),
            })
    }

    /// The open connection, or a new one when there is none or the node closed it.
    async fn connected(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        if let Some(mut sender) = self.sender.take() {
            if sender.ready().await.is_ok() {
                return Ok(self.sender.insert(sender));
            }
        }
        let endpoint = &self.endpoint;
        let cannot_connect = |reason: String| ClientError::Connect {
            addr: endpoint.to_string(),
            reason,
        };
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| cannot_connect(one_line(&e.to_string())))?;
        // Nagle would hold a small body back behind the request head.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| cannot_connect(with_sources(&e)))?;
        tokio::spawn(async move {
            // Its errors reach the caller through `send_request`.
            let _ = connection.await;
        });
        Ok(self.sender.insert(sender))
    }
}

/// The node's `{"error", "code"}` body, or the start of whatever else it sent.
fn failure(request: &str, status: u16, body: &[u8]) -> HttpFailure {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        code: String,
    }
    let error = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|e| (one_line(&e.code), one_line(&e.error)));
    let excerpt = if error.is_some() {
        String::new()
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        one_line(text.trim())
    };
    HttpFailure {
        request: request.to_string(),
        status,
        error,
        body_excerpt: excerpt,
    }
}
