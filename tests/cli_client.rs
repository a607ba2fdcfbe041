//! The command-line client (`hearsay kv`, `hearsay set`, `hearsay members`) run as a real process
//! against a real node, or against a fake server where the node cannot misbehave on demand:
//! output, byte-exact values, key encoding, paging, and the exit codes 0 / 1 / 2 / 3 with one
//! line on stderr.

#![allow(clippy::disallowed_methods)] // tests wait on real time

mod common;

use common::{path_str, Proc};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// What one run of the client printed, and how it exited.
struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("UTF-8 output")
    }

    fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }

    /// Asserts a failure with `code` and exactly one line on stderr, mentioning `needle`.
    fn assert_fails(&self, code: i32, needle: &str) {
        assert_eq!(self.code, Some(code), "stderr: {}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got: {:?}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{}", lines[0]);
        assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
    }

    fn assert_ok(&self) {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        assert!(self.stderr.is_empty(), "stderr: {}", self.stderr);
    }
}

/// Runs `hearsay args...` with `env` (client variables not given are removed) and `stdin`.
fn run_env(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hearsay"));
    for name in ["HEARSAY_ADDR", "HEARSAY_TOKEN_FILE", "HEARSAY_TIMEOUT_MS"] {
        command.env_remove(name);
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn hearsay");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(bytes).unwrap();
        // Dropping the pipe closes it: the client sees the end of its input.
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the client against `node` (through `HEARSAY_ADDR`).
fn run(node: &Proc, args: &[&str]) -> Run {
    run_env(args, &[("HEARSAY_ADDR", &node.base)], None)
}

fn run_stdin(node: &Proc, args: &[&str], stdin: &[u8]) -> Run {
    run_env(args, &[("HEARSAY_ADDR", &node.base)], Some(stdin))
}

/// A node with its own data directory, removed after the node is killed.
struct TestNode {
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestNode {
    type Target = Proc;

    fn deref(&self) -> &Proc {
        &self.proc
    }
}

fn node() -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let proc = Proc::serve(&["--durability", "none", "--data", path_str(&data)]);
    TestNode { proc, _dir: dir }
}

/// The `Content-Type` the node stores for `encoded_key` (already percent-encoded).
fn stored_content_type(node: &Proc, encoded_key: &str) -> String {
    let url = node.url(&format!("/v1/kv/{encoded_key}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.headers()["content-type"].to_str().unwrap().to_string()
    })
}

#[test]
fn values_round_trip_byte_exact() {
    let node = node();
    // On the command line, with newlines and no trailing newline: text/plain.
    run(&node, &["kv", "put", "text", "line one\nline two\n\nend"]).assert_ok();
    let got = run(&node, &["kv", "get", "text"]);
    got.assert_ok();
    assert_eq!(got.stdout, b"line one\nline two\n\nend");
    assert_eq!(stored_content_type(&node, "text"), "text/plain");

    // Every byte value on stdin, VALUE left out: application/octet-stream.
    let binary: Vec<u8> = (0..=255u8).chain([0, b'\n', 0xff, b'\r']).collect();
    run_stdin(&node, &["kv", "put", "bin"], &binary).assert_ok();
    let got = run(&node, &["kv", "get", "bin"]);
    got.assert_ok();
    assert_eq!(got.stdout, binary);
    assert_eq!(
        stored_content_type(&node, "bin"),
        "application/octet-stream"
    );

    // `-` reads stdin too, and --content-type wins over either default.
    run_stdin(
        &node,
        &[
            "kv",
            "put",
            "json",
            "-",
            "--content-type",
            "application/json",
        ],
        b"{\"a\": 1}\n",
    )
    .assert_ok();
    assert_eq!(run(&node, &["kv", "get", "json"]).stdout, b"{\"a\": 1}\n");
    assert_eq!(stored_content_type(&node, "json"), "application/json");

    // An empty value is a value.
    run_stdin(&node, &["kv", "put", "empty"], b"").assert_ok();
    let got = run(&node, &["kv", "get", "empty"]);
    got.assert_ok();
    assert!(got.stdout.is_empty());

    // A value starting with `-` after `--`.
    run(&node, &["kv", "put", "--", "neg", "-5"]).assert_ok();
    assert_eq!(run(&node, &["kv", "get", "neg"]).stdout, b"-5");
}

#[test]
fn keys_with_slashes_percents_spaces_and_accents_are_one_key_each() {
    let node = node();
    let keys = [
        "a/b",
        "a/b/",
        "100%",
        "%2F",
        "with space",
        "café",
        "q?x=1#y",
        "+plus",
    ];
    for (i, key) in keys.iter().enumerate() {
        run(&node, &["kv", "put", key, &format!("value {i}")]).assert_ok();
    }
    for (i, key) in keys.iter().enumerate() {
        let got = run(&node, &["kv", "get", key]);
        got.assert_ok();
        assert_eq!(got.text(), format!("value {i}"), "key {key:?}");
    }
    // The node holds exactly these keys, spelled as given.
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    let listed = run(&node, &["kv", "ls"]);
    listed.assert_ok();
    assert_eq!(listed.lines(), expected);
    // A prefix with a space and a slash is encoded in the query.
    assert_eq!(run(&node, &["kv", "ls", "a/"]).lines(), ["a/b", "a/b/"]);
    assert_eq!(run(&node, &["kv", "ls", "with "]).lines(), ["with space"]);
}

#[test]
fn a_missing_or_deleted_key_exits_1() {
    let node = node();
    run(&node, &["kv", "get", "never"]).assert_fails(1, "404 not_found");
    run(&node, &["kv", "put", "k", "v"]).assert_ok();
    let deleted = run(&node, &["kv", "del", "k"]);
    deleted.assert_ok();
    assert!(deleted.stdout.is_empty());
    let got = run(&node, &["kv", "get", "k"]);
    got.assert_fails(1, "/v1/kv/k");
    assert!(got.stdout.is_empty());
    // Deleting again is fine (idempotent).
    run(&node, &["kv", "del", "k"]).assert_ok();
}

#[test]
fn ls_follows_next_through_every_page() {
    let node = node();
    // More than the node's default page of 100.
    let mut keys: Vec<String> = (0..130).map(|i| format!("page/{i:03}")).collect();
    for key in &keys {
        run(&node, &["kv", "put", key, "x"]).assert_ok();
    }
    run(&node, &["kv", "put", "other", "x"]).assert_ok();
    let all = run(&node, &["kv", "ls", "page/"]);
    all.assert_ok();
    assert_eq!(all.lines(), keys);
    // Small pages, and no prefix.
    keys.insert(0, "other".into());
    let small = run(&node, &["kv", "ls", "--page-size", "7"]);
    small.assert_ok();
    assert_eq!(small.lines(), keys);
    // Nothing under a prefix: no output, success.
    let none = run(&node, &["kv", "ls", "nothing/"]);
    none.assert_ok();
    assert!(none.stdout.is_empty());
    run(&node, &["kv", "ls", "--page-size", "0"]).assert_fails(2, "--page-size");
}

#[test]
fn set_add_rm_and_get() {
    let node = node();
    run(&node, &["set", "get", "team"]).assert_fails(1, "not_found");
    // Several elements in one batch, one element on its own path; odd names in both.
    run(&node, &["set", "add", "team/a", "carol", "bob", "a/b c%é"]).assert_ok();
    run(&node, &["set", "add", "team/a", "dave"]).assert_ok();
    let got = run(&node, &["set", "get", "team/a"]);
    got.assert_ok();
    assert_eq!(got.lines(), ["a/b c%é", "bob", "carol", "dave"]);
    run(&node, &["set", "rm", "team/a", "a/b c%é"]).assert_ok();
    run(&node, &["set", "rm", "team/a", "bob", "carol"]).assert_ok();
    assert_eq!(run(&node, &["set", "get", "team/a"]).lines(), ["dave"]);
    // The set is `team/a`, not `team`.
    run(&node, &["set", "get", "team"]).assert_fails(1, "not_found");
    // `set add` needs an element: a usage error from the argument parser.
    run(&node, &["set", "add", "team/a"]).assert_fails(2, "required");
}

#[test]
fn counter_add_and_get() {
    let node = node();
    run(&node, &["counter", "get", "hits/today"]).assert_fails(1, "not_found");
    let got = run(&node, &["counter", "add", "hits/today", "5"]);
    got.assert_ok();
    assert_eq!(got.lines(), ["5"]);
    assert_eq!(
        run(&node, &["counter", "add", "hits/today", "-7"]).lines(),
        ["-2"]
    );
    assert_eq!(
        run(&node, &["counter", "get", "hits/today"]).lines(),
        ["-2"]
    );
    // Not a 64-bit integer: a usage error from the argument parser.
    run(&node, &["counter", "add", "hits/today", "1.5"]).assert_fails(2, "invalid");
    assert_eq!(
        run(&node, &["counter", "get", "hits/today"]).lines(),
        ["-2"]
    );
}

#[test]
fn consistency_levels_pass_through_and_an_unmet_one_exits_3() {
    let node = node();
    // Alone, `all` and `majority` are this node.
    run(&node, &["kv", "put", "--w", "all", "k", "v"]).assert_ok();
    assert_eq!(
        run(&node, &["kv", "get", "--r", "majority", "k"]).text(),
        "v"
    );
    run(&node, &["set", "add", "--w", "all", "s", "a", "b"]).assert_ok();
    assert_eq!(
        run(&node, &["set", "get", "--r", "all", "s"]).lines(),
        ["a", "b"]
    );
    assert_eq!(
        run(&node, &["counter", "add", "--w", "1", "c", "2"]).lines(),
        ["2"]
    );
    // Two members cannot answer on a one-node cluster: the node says so at once.
    run(&node, &["kv", "put", "--w", "2", "k", "v2"]).assert_fails(3, "write_timeout");
    run(&node, &["kv", "get", "--r", "2", "k"]).assert_fails(3, "read_timeout");
    run(&node, &["counter", "get", "--r", "2", "c"]).assert_fails(3, "read_timeout");
    // The timed-out write stayed applied.
    assert_eq!(run(&node, &["kv", "get", "k"]).text(), "v2");
    run(&node, &["kv", "put", "--w", "most", "k", "v"]).assert_fails(2, "majority or all");
}

#[test]
fn put_with_a_ttl_expires() {
    let node = node();
    run(&node, &["kv", "put", "--ttl", "1", "lease", "held"]).assert_ok();
    assert_eq!(run(&node, &["kv", "get", "lease"]).text(), "held");
    run(&node, &["kv", "put", "--ttl", "0", "lease", "x"]).assert_fails(2, "0");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = run(&node, &["kv", "get", "lease"]);
        if got.code == Some(1) {
            got.assert_fails(1, "expired");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never expired");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn watch_prints_one_json_line_per_change_and_resumes_with_since() {
    let node = node();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["kv", "watch", "app/", "--addr", &node.base])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next = || -> serde_json::Value {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a line within 10 s");
        serde_json::from_str(&line).unwrap()
    };
    // The watch is open once a change made after it starts is printed: retry the first write.
    let first = loop {
        run(&node, &["kv", "put", "app/a", "1"]).assert_ok();
        if let Ok(line) = lines.recv_timeout(std::time::Duration::from_millis(500)) {
            break serde_json::from_str::<serde_json::Value>(&line).unwrap();
        }
    };
    assert_eq!(
        (first["key"].as_str(), first["deleted"].as_bool()),
        (Some("app/a"), Some(false))
    );
    run(&node, &["kv", "put", "other", "x"]).assert_ok();
    run(&node, &["kv", "del", "app/a"]).assert_ok();
    let deleted = next();
    assert_eq!(
        (deleted["key"].as_str(), deleted["deleted"].as_bool()),
        (Some("app/a"), Some(true))
    );
    assert!(deleted["timestamp"].as_str().is_some() && deleted["node"].as_str().is_some());
    let _ = child.kill();
    let _ = child.wait();

    // Resuming after the first change brings the delete again.
    let since = first["id"].as_str().unwrap().to_string();
    let mut resumed = Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args([
            "kv", "watch", "app/", "--since", &since, "--addr", &node.base,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(resumed.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let again: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(again, deleted);
    let _ = resumed.kill();
    let _ = resumed.wait();
    run(&node, &["kv", "watch", "--since", "x"]).assert_fails(2, "invalid");
}

#[test]
fn status_shows_each_members_digest_and_whether_they_agree() {
    let node = node();
    run(&node, &["kv", "put", "k", "v"]).assert_ok();
    let got = run(&node, &["status"]);
    got.assert_ok();
    let lines = got.lines();
    assert_eq!(
        lines.len(),
        3,
        "a header, one member, the verdict: {lines:?}"
    );
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["ID", "STATE", "KEYS", "ROOT", "HEALTH"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..3], ["n1", "alive", "1"], "{row:?}");
    assert_eq!(row[3].len(), 16, "{row:?}");
    assert_eq!(row[4], "ok", "{row:?}");
    assert_eq!(lines[2], "converged");
}

#[test]
fn members_shows_the_node_alive() {
    let node = node();
    let got = run(&node, &["members"]);
    got.assert_ok();
    let lines = got.lines();
    assert_eq!(lines.len(), 2, "a header and one member: {lines:?}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "STATE", "INCARNATION", "GOSSIP_ADDR", "HTTP_ADDR"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row.len(), 5, "{row:?}");
    assert_eq!(row[0], "n1");
    assert_eq!(row[1], "alive");
    assert!(row[2].parse::<u64>().is_ok(), "{row:?}");
    assert_eq!(row[3], node.gossip);
    assert_eq!(row[4], node.base.trim_start_matches("http://"));
}

#[test]
fn a_node_that_refuses_bad_input_gives_exit_2_with_its_code() {
    let node = node();
    let long_key = "k".repeat(2000);
    let got = run(&node, &["kv", "put", &long_key, "v"]);
    got.assert_fails(2, "HTTP 400 name_too_long");
    assert!(
        got.stderr.len() < 500,
        "the request is cut short: {}",
        got.stderr
    );
    run(
        &node,
        &["kv", "put", "k", "v", "--content-type", "a\u{7f}b"],
    )
    .assert_fails(2, "--content-type");
}

#[test]
fn addr_comes_from_the_flag_or_hearsay_addr() {
    let node = node();
    run(&node, &["kv", "put", "k", "v"]).assert_ok();
    // The flag, after or before the subcommand, wins over the environment.
    let dead = dead_addr();
    for args in [
        ["kv", "get", "k", "--addr", node.base.as_str()],
        ["kv", "--addr", node.base.as_str(), "get", "k"],
    ] {
        let got = run_env(&args, &[("HEARSAY_ADDR", &dead)], None);
        got.assert_ok();
        assert_eq!(got.stdout, b"v");
    }
    // The environment alone, with a trailing slash.
    let with_slash = format!("{}/", node.base);
    let got = run_env(&["kv", "get", "k"], &[("HEARSAY_ADDR", &with_slash)], None);
    got.assert_ok();
    assert_eq!(got.stdout, b"v");
}

/// An address where nothing listens (a port just released).
fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[test]
fn connection_refused_exits_3_with_one_line() {
    let dead = dead_addr();
    for args in [
        vec!["kv", "get", "k"],
        vec!["kv", "ls"],
        vec!["set", "add", "s", "e"],
        vec!["members"],
    ] {
        let got = run_env(&args, &[("HEARSAY_ADDR", &dead)], None);
        got.assert_fails(3, &format!("cannot connect to {dead}"));
    }
}

#[test]
fn a_bad_addr_is_a_usage_error() {
    for (addr, needle) in [
        ("nope", "http://"),
        ("127.0.0.1:7001", "http://"),
        ("https://127.0.0.1:7001", "https"),
        ("http://127.0.0.1:7001/prefix", "path"),
    ] {
        let got = run_env(&["kv", "get", "k", "--addr", addr], &[], None);
        got.assert_fails(2, needle);
        assert!(got.stderr.contains(addr), "{}", got.stderr);
        let got = run_env(&["members"], &[("HEARSAY_ADDR", addr)], None);
        got.assert_fails(2, needle);
    }
}

#[test]
fn hearsay_alone_prints_the_subcommands_and_exits_2() {
    let got = run_env(&[], &[], None);
    assert_eq!(got.code, Some(2), "{}", got.stderr);
    for command in ["serve", "cluster", "sim", "kv", "set", "members"] {
        assert!(
            got.stderr
                .lines()
                .any(|l| l.trim_start().starts_with(command)),
            "{command} missing from: {}",
            got.stderr
        );
    }
    // `hearsay kv` alone lists kv's subcommands and the exit codes.
    let got = run_env(&["kv"], &[], None);
    assert_eq!(got.code, Some(2));
    for needle in ["put", "get", "del", "ls", "Exit codes"] {
        assert!(got.stderr.contains(needle), "{needle}: {}", got.stderr);
    }
    // Asking for help is not an error.
    let got = run_env(&["members", "--help"], &[], None);
    assert_eq!(got.code, Some(0));
    assert!(got.text().contains("--token-file"));
}

/// A one-connection HTTP server on a thread: it hands the request head it reads to the test,
/// then answers with `reply`, a status line and a JSON body (or, with `None`, never answers
/// while the test runs).
struct FakeServer {
    base: String,
    head: mpsc::Receiver<String>,
    _hold: mpsc::Sender<()>,
}

fn fake_server(reply: Option<(&'static str, &'static str)>) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (head_tx, head) = mpsc::channel();
    let (hold, held) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            text.push_str(&line);
        }
        let _ = head_tx.send(text);
        match reply {
            Some((status, body)) => respond(stream, status, body),
            // Holds the connection open until the test drops the server.
            None => while held.recv().is_ok() {},
        }
    });
    FakeServer {
        base,
        head,
        _hold: hold,
    }
}

fn respond(mut stream: TcpStream, status: &str, body: &str) {
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.flush();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

#[test]
fn token_file_sends_a_bearer_header() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "  s3cret-token-of-16+ \n").unwrap();
    let token_path = token_file.to_str().unwrap();

    let fake = fake_server(Some(("200 OK", r#"{"self":"n9","members":[]}"#)));
    run_env(
        &["members", "--addr", &fake.base, "--token-file", token_path],
        &[],
        None,
    )
    .assert_ok();
    let head = fake.head.recv().unwrap();
    assert!(
        head.starts_with("GET /v1/cluster/members HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: Bearer s3cret-token-of-16+")),
        "{head}"
    );

    // A real node that requires the token (--api-token-file) takes requests carrying it
    // (through HEARSAY_TOKEN_FILE too) and refuses the others.
    let node_dir = tempfile::tempdir().unwrap();
    let data = node_dir.path().join("n1");
    let proc = Proc::serve(&[
        "--durability",
        "none",
        "--data",
        path_str(&data),
        "--api-token-file",
        token_path,
    ]);
    let node = TestNode {
        proc,
        _dir: node_dir,
    };
    let env = [
        ("HEARSAY_ADDR", node.base.as_str()),
        ("HEARSAY_TOKEN_FILE", token_path),
    ];
    run_env(&["kv", "put", "k", "v"], &env, None).assert_ok();
    assert_eq!(run_env(&["kv", "get", "k"], &env, None).stdout, b"v");
    run_env(&["kv", "get", "k"], &env[..1], None).assert_fails(2, "unauthorized");

    // A token file that cannot be read is a usage error.
    let missing = dir.path().join("missing");
    let got = run_env(
        &["members", "--token-file", missing.to_str().unwrap()],
        &[("HEARSAY_ADDR", &node.base)],
        None,
    );
    got.assert_fails(2, "token file");
}

#[test]
fn a_node_that_does_not_answer_times_out_with_exit_3() {
    let fake = fake_server(None);
    let got = run_env(
        &[
            "kv",
            "get",
            "k",
            "--addr",
            &fake.base,
            "--timeout-ms",
            "300",
        ],
        &[],
        None,
    );
    got.assert_fails(3, "no reply within 300 ms");
    assert!(fake.head.recv().unwrap().starts_with("GET /v1/kv/k "));
}

#[test]
fn server_errors_and_strange_replies_exit_3() {
    let fake = fake_server(Some((
        "507 Insufficient Storage",
        r#"{"error":"disk full","code":"insufficient_storage"}"#,
    )));
    let got = run_env(&["kv", "put", "k", "v", "--addr", &fake.base], &[], None);
    got.assert_fails(3, "HTTP 507 insufficient_storage: disk full");

    let fake = fake_server(Some(("200 OK", "hello")));
    let got = run_env(&["set", "get", "s", "--addr", &fake.base], &[], None);
    got.assert_fails(3, "not the JSON a node sends");
}
