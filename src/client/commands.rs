//! What each client subcommand asks the node and prints. Requests and replies are the HTTP API's
//! (README "The HTTP API"); nothing here decides anything the node does not.

use super::address::path_segment;
use super::args::{CounterCommand, KvCommand, LevelArgs, SetCommand};
use super::error::ClientError;
use super::http::{Body, Call, Client};
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::Method;
use serde::Deserialize;
use std::ffi::OsString;
use std::io::{Read, Write};

/// Most bytes `kv put` reads from stdin: the largest value any node accepts.
const MAX_STDIN_VALUE: usize = crate::wire::MAX_STATE_BYTES;

/// `path` with the query parameters given (`None`s left out).
fn with_query(path: String, parameters: &[(&str, Option<String>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in parameters {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    match query.finish() {
        query if query.is_empty() => path,
        query => format!("{path}?{query}"),
    }
}

pub async fn kv(
    client: &mut Client,
    command: KvCommand,
    levels: &LevelArgs,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let w = || ("w", levels.w.clone());
    match command {
        KvCommand::Put {
            key,
            value,
            content_type,
            ttl,
        } => {
            let body = put_body(value, content_type)?;
            let path = format!("/v1/kv/{}", path_segment(&key));
            let target = with_query(path, &[("ttl", ttl.map(|t| t.to_string())), w()]);
            client.call(call(Method::PUT, &target, Some(body))).await?;
        }
        KvCommand::Get { key } => {
            let path = format!("/v1/kv/{}", path_segment(&key));
            let target = with_query(path, &[("r", levels.r.clone())]);
            let value = client.call(call(Method::GET, &target, None)).await?;
            out.write_all(&value).map_err(ClientError::Stdout)?;
        }
        KvCommand::Del { key } => {
            let path = format!("/v1/kv/{}", path_segment(&key));
            let target = with_query(path, &[w()]);
            client.call(call(Method::DELETE, &target, None)).await?;
        }
        KvCommand::Ls { prefix, page_size } => list(client, prefix, page_size, out).await?,
        KvCommand::Watch { prefix, since } => watch(client, prefix, since, out).await?,
    }
    Ok(())
}

/// Follows `GET /v1/watch` and prints each kv change as one JSON line, flushed at once.
async fn watch(
    client: &mut Client,
    prefix: Option<String>,
    since: Option<u64>,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(prefix) = &prefix {
        query.append_pair("prefix", prefix);
    }
    if let Some(since) = since {
        query.append_pair("since", &since.to_string());
    }
    let target = format!("/v1/watch?{}", query.finish());
    let target = target.trim_end_matches('?').to_string();
    let request = client.describe(&Method::GET, &target);
    let mut events = EventReader::default();
    let mut last_id = since;
    let mut print = |bytes: &[u8]| {
        for event in events.feed(bytes) {
            last_id = event.id.or(last_id);
            match event.kind.as_str() {
                "kv" => {
                    let mut line: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(&event.data).map_err(|e| ClientError::BadReply {
                            request: request.clone(),
                            reason: format!("an event is not the JSON a node sends: {e}"),
                        })?;
                    let id = event.id.map(|id| id.to_string());
                    line.insert("id".into(), id.into());
                    writeln!(out, "{}", serde_json::Value::Object(line))
                        .and_then(|()| out.flush())
                        .map_err(ClientError::Stdout)?;
                }
                "reset" => eprintln!(
                    "reset: the node no longer holds the changes after the position asked for; list the keys again (following on from id {})",
                    event.id.map_or("?".into(), |id| id.to_string())
                ),
                _ => {}
            }
        }
        Ok(())
    };
    client
        .stream(call(Method::GET, &target, None), &mut print)
        .await?;
    Err(ClientError::BadReply {
        request: client.describe(&Method::GET, &target),
        reason: format!(
            "the node ended the stream (stopping?); resume with --since {}",
            last_id.map_or("<the last id printed>".into(), |id| id.to_string())
        ),
    })
}

/// One server-sent event.
struct ServerEvent {
    id: Option<u64>,
    kind: String,
    data: String,
}

/// Splits a `text/event-stream` into events as its bytes arrive (comments are skipped).
#[derive(Default)]
struct EventReader {
    pending: Vec<u8>,
}

impl EventReader {
    fn feed(&mut self, bytes: &[u8]) -> Vec<ServerEvent> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            let mut event = ServerEvent {
                id: None,
                kind: "message".into(),
                data: String::new(),
            };
            for line in String::from_utf8_lossy(&block).lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => event.id = value.parse().ok(),
                    "event" => event.kind = value.to_string(),
                    "data" => event.data.push_str(value),
                    _ => {}
                }
            }
            if !event.data.is_empty() {
                events.push(event);
            }
        }
        events
    }
}

/// The value and its Content-Type: the argument as text/plain, or stdin as octet-stream.
fn put_body(value: Option<OsString>, content_type: Option<String>) -> Result<Body, ClientError> {
    let (bytes, default_type) = match value {
        Some(value) if value != "-" => (
            std::os::unix::ffi::OsStringExt::into_vec(value),
            "text/plain",
        ),
        _ => (read_stdin()?, "application/octet-stream"),
    };
    let content_type = content_type.as_deref().unwrap_or(default_type);
    let content_type = HeaderValue::from_str(content_type).map_err(|_| {
        ClientError::Usage(format!(
            "--content-type {content_type:?} is not a valid header value"
        ))
    })?;
    Ok(Body {
        content_type,
        bytes: Bytes::from(bytes),
    })
}

fn read_stdin() -> Result<Vec<u8>, ClientError> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_VALUE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::Usage(format!("cannot read the value from stdin: {e}")))?;
    if bytes.len() > MAX_STDIN_VALUE {
        return Err(ClientError::Usage(format!(
            "the value on stdin is over {MAX_STDIN_VALUE} bytes, more than any node accepts"
        )));
    }
    Ok(bytes)
}

/// Prints every live key under `prefix`, page after page, as each page arrives.
async fn list(
    client: &mut Client,
    prefix: Option<String>,
    page_size: Option<u16>,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    #[derive(Deserialize)]
    struct Page {
        keys: Vec<String>,
        next: Option<String>,
    }
    let mut after: Option<String> = None;
    loop {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(prefix) = &prefix {
            query.append_pair("prefix", prefix);
        }
        if let Some(limit) = page_size {
            query.append_pair("limit", &limit.to_string());
        }
        if let Some(after) = &after {
            query.append_pair("after", after);
        }
        let target = format!("/v1/kv?{}", query.finish());
        let target = target.trim_end_matches('?');
        let page: Page = client.call_json(call(Method::GET, target, None)).await?;
        for key in &page.keys {
            writeln!(out, "{key}").map_err(ClientError::Stdout)?;
        }
        match page.next {
            None => return Ok(()),
            // A cursor that does not move would page forever.
            Some(next) if after.as_ref().is_some_and(|a| *a >= next) => {
                return Err(ClientError::BadReply {
                    request: client.describe(&Method::GET, target),
                    reason: format!("the listing's next key {next:?} does not move forward"),
                })
            }
            Some(next) => after = Some(next),
        }
    }
}

pub async fn set(
    client: &mut Client,
    command: SetCommand,
    levels: &LevelArgs,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let (key, elements, method, field) = match command {
        SetCommand::Get { key } => {
            #[derive(Deserialize)]
            struct Set {
                elements: Vec<String>,
            }
            let path = format!("/v1/sets/{}", path_segment(&key));
            let target = with_query(path, &[("r", levels.r.clone())]);
            let set: Set = client.call_json(call(Method::GET, &target, None)).await?;
            for element in &set.elements {
                writeln!(out, "{element}").map_err(ClientError::Stdout)?;
            }
            return Ok(());
        }
        SetCommand::Add { key, elements } => (key, elements, Method::PUT, "add"),
        SetCommand::Rm { key, elements } => (key, elements, Method::DELETE, "remove"),
    };
    let set = path_segment(&key);
    if let [element] = elements.as_slice() {
        // One element: its own path, as with curl.
        let path = format!("/v1/sets/{set}/{}", path_segment(element));
        let target = with_query(path, &[("w", levels.w.clone())]);
        client.call(call(method, &target, None)).await?;
    } else {
        // Several: one batch, applied together.
        let batch = serde_json::json!({ field: elements });
        let body = Body {
            content_type: HeaderValue::from_static("application/json"),
            bytes: Bytes::from(batch.to_string()),
        };
        let target = with_query(format!("/v1/sets/{set}"), &[("w", levels.w.clone())]);
        client.call(call(Method::POST, &target, Some(body))).await?;
    }
    Ok(())
}

/// Adds to or reads a counter and prints its value on the node.
pub async fn counter(
    client: &mut Client,
    command: CounterCommand,
    levels: &LevelArgs,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    #[derive(Deserialize)]
    struct Counter {
        value: serde_json::Number,
    }
    let (key, body) = match command {
        CounterCommand::Get { key } => (key, None),
        CounterCommand::Add { key, amount } => {
            let add = serde_json::json!({ "add": amount });
            let body = Body {
                content_type: HeaderValue::from_static("application/json"),
                bytes: Bytes::from(add.to_string()),
            };
            (key, Some(body))
        }
    };
    let (method, level) = match body {
        Some(_) => (Method::POST, ("w", levels.w.clone())),
        None => (Method::GET, ("r", levels.r.clone())),
    };
    let target = with_query(format!("/v1/counters/{}", path_segment(&key)), &[level]);
    let counter: Counter = client.call_json(call(method, &target, body)).await?;
    writeln!(out, "{}", counter.value).map_err(ClientError::Stdout)
}

/// Prints the members as a table: id, state, incarnation, cluster and HTTP addresses.
pub async fn members(client: &mut Client, out: &mut dyn Write) -> Result<(), ClientError> {
    #[derive(Deserialize)]
    struct Members {
        members: Vec<Member>,
    }
    #[derive(Deserialize)]
    struct Member {
        id: String,
        state: String,
        incarnation: u64,
        gossip_addr: String,
        http_addr: String,
    }
    let reply: Members = client
        .call_json(call(Method::GET, "/v1/cluster/members", None))
        .await?;
    let mut rows =
        vec![["ID", "STATE", "INCARNATION", "GOSSIP_ADDR", "HTTP_ADDR"].map(String::from)];
    rows.extend(reply.members.into_iter().map(|m| {
        [
            m.id,
            m.state,
            m.incarnation.to_string(),
            m.gossip_addr,
            m.http_addr,
        ]
    }));
    table(&rows, out)
}

/// The heal report of `/v1/cluster/status`.
#[derive(Deserialize)]
struct Heal {
    members: Vec<String>,
    keys_repaired: u64,
    bytes: u64,
    conflicts: u64,
    converged_after_ms: Option<u64>,
}

/// One line telling a heal: in progress, or how it went.
fn heal_line(heal: &Heal) -> String {
    let back = heal.members.join(", ");
    let moved = format!(
        "{} keys repaired here, {} bytes moved, {} conflicts",
        heal.keys_repaired, heal.bytes, heal.conflicts
    );
    match heal.converged_after_ms {
        Some(ms) => format!("last heal: {back} back, converged in {ms} ms ({moved})"),
        None => format!("healing: {back} back, catching up ({moved} so far)"),
    }
}

/// Prints every member's digest and health as the node gathered them, then `converged` or
/// `diverged`, and the node's last heal, if any.
pub async fn status(client: &mut Client, out: &mut dyn Write) -> Result<(), ClientError> {
    #[derive(Deserialize)]
    struct Status {
        converged: bool,
        nodes: Vec<Node>,
        #[serde(default)]
        heal: Option<Heal>,
    }
    #[derive(Deserialize)]
    struct Node {
        id: String,
        state: String,
        root: Option<String>,
        keys: Option<u64>,
        #[serde(default)]
        health: Option<String>,
        #[serde(default)]
        reasons: Option<Vec<String>>,
    }
    let reply: Status = client
        .call_json(call(Method::GET, "/v1/cluster/status", None))
        .await?;
    let mut rows = vec![["ID", "STATE", "KEYS", "ROOT", "HEALTH"].map(String::from)];
    rows.extend(reply.nodes.into_iter().map(|n| {
        let unknown = || "-".to_string();
        let health = match (n.health, n.reasons) {
            (Some(health), Some(reasons)) if !reasons.is_empty() => {
                format!("{health} ({})", reasons.join(", "))
            }
            (Some(health), _) => health,
            (None, _) => unknown(),
        };
        [
            n.id,
            n.state,
            n.keys.map_or_else(unknown, |k| k.to_string()),
            n.root
                .map_or_else(unknown, |r| r.chars().take(16).collect()),
            health,
        ]
    }));
    table(&rows, out)?;
    let verdict = if reply.converged {
        "converged"
    } else {
        "diverged"
    };
    writeln!(out, "{verdict}").map_err(ClientError::Stdout)?;
    if let Some(heal) = &reply.heal {
        writeln!(out, "{}", heal_line(heal)).map_err(ClientError::Stdout)?;
    }
    Ok(())
}

/// Prints `rows` as left-aligned columns two spaces apart.
fn table<const N: usize>(rows: &[[String; N]], out: &mut dyn Write) -> Result<(), ClientError> {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (width, cell) in widths.iter().zip(row) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        writeln!(out, "{}", line.trim_end()).map_err(ClientError::Stdout)?;
    }
    Ok(())
}

fn call(method: Method, target: &str, body: Option<Body>) -> Call<'_> {
    Call {
        method,
        target,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heal_reads_as_one_line() {
        let mut heal = Heal {
            members: vec!["n2".into(), "n3".into()],
            keys_repaired: 4,
            bytes: 828,
            conflicts: 1,
            converged_after_ms: None,
        };
        assert_eq!(
            heal_line(&heal),
            "healing: n2, n3 back, catching up (4 keys repaired here, 828 bytes moved, 1 conflicts so far)"
        );
        heal.converged_after_ms = Some(57);
        assert_eq!(
            heal_line(&heal),
            "last heal: n2, n3 back, converged in 57 ms (4 keys repaired here, 828 bytes moved, 1 conflicts)"
        );
    }
}
