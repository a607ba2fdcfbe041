//! The command line's failure modes: each gets one clear line on stderr and a non-zero exit,
//! never a panic or a hang.

mod common;

use common::{path_str, run_to_exit, Proc};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn assert_one_line_error(args: &[&str], needle: &str) -> String {
    // Never the default cluster port: tests run in parallel.
    let mut args = args.to_vec();
    if args[0] == "serve" && args.len() > 2 && !args.contains(&"--gossip") {
        args.extend(["--gossip", "127.0.0.1:0"]);
    }
    let args = args.as_slice();
    let (code, stderr) = run_to_exit(args, WAIT);
    assert!(
        matches!(code, Some(c) if c != 0),
        "{args:?} exited with {code:?}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    assert!(
        lines[0].contains(needle),
        "{:?} does not mention {needle:?}",
        lines[0]
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_string()
}

#[test]
fn unknown_flag_and_bad_values_are_one_line_errors() {
    assert_one_line_error(&["serve", "--bogus"], "--bogus");
    assert_one_line_error(&["serve", "--durability", "sometimes"], "sometimes");
    assert_one_line_error(&["serve", "--node-id", "has space"], "node id");
    assert_one_line_error(&["serve", "--http", "nowhere"], "nowhere");
}

#[test]
fn an_api_token_file_that_is_missing_or_too_short_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let missing = dir.path().join("missing");
    for (file, needle) in [(&short, "at least 16"), (&missing, "cannot read")] {
        assert_one_line_error(
            &[
                "serve",
                "--node-id",
                "n1",
                "--http",
                "127.0.0.1:0",
                "--data",
                path_str(&data),
                "--api-token-file",
                path_str(file),
            ],
            needle,
        );
    }
}

#[test]
fn a_max_value_bytes_that_could_not_replicate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = path_str(dir.path());
    for too_big in ["4194305", "8388608", "1000000000"] {
        let line = assert_one_line_error(
            &[
                "serve",
                "--max-value-bytes",
                too_big,
                "--http",
                "127.0.0.1:0",
                "--data",
                data,
            ],
            "--max-value-bytes",
        );
        assert!(line.contains("4194304") && line.contains(too_big), "{line}");
    }
    // The cap itself is accepted.
    let node = Proc::serve(&["--max-value-bytes", "4194304", "--data", data]);
    assert_eq!(reqwest::blocking_get(&node.url("/v1/health")), 200);
}

#[test]
fn http_limits_that_cannot_work_are_refused() {
    for (flag, value) in [
        ("--http-max-connections", "0"),
        ("--http-max-in-flight", "0"),
        ("--http-header-timeout-ms", "0"),
        ("--http-body-timeout-ms", "0"),
        ("--http-idle-timeout-ms", "0"),
    ] {
        assert_one_line_error(&["serve", flag, value, "--http", "127.0.0.1:0"], flag);
    }
    assert_one_line_error(
        &[
            "serve",
            "--http-max-in-flight",
            "many",
            "--http",
            "127.0.0.1:0",
        ],
        "many",
    );
}

#[test]
fn unwritable_data_dir_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data = file.join("n1");
    let line = assert_one_line_error(
        &["serve", "--http", "127.0.0.1:0", "--data", path_str(&data)],
        "cannot use data directory",
    );
    assert!(line.contains(path_str(&data)));
}

#[test]
fn port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let line = assert_one_line_error(
        &["serve", "--http", &addr, "--data", path_str(dir.path())],
        "cannot listen on",
    );
    assert!(
        line.contains(&addr) && line.to_lowercase().contains("in use"),
        "{line}"
    );
}

#[test]
fn data_dir_from_a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = common::open_sled(dir.path());
        db.insert(hearsay::store::migrate::LAYOUT_KEY, &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    assert_one_line_error(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--data",
            path_str(dir.path()),
        ],
        "newer hearsay (layout 99",
    );
}

#[test]
fn data_dir_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Proc::serve(&[
        "--node-id",
        "n1",
        "--data",
        path_str(dir.path()),
    ]));
    assert_one_line_error(
        &[
            "serve",
            "--node-id",
            "n2",
            "--http",
            "127.0.0.1:0",
            "--data",
            path_str(dir.path()),
        ],
        "belongs to node",
    );
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Proc::serve(&["--data", path_str(dir.path())]);
    assert_one_line_error(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--data",
            path_str(dir.path()),
        ],
        "in use by another hearsay process",
    );
}

#[test]
fn damaged_database_names_the_recovery_and_recover_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    std::fs::create_dir_all(&data).unwrap();
    // sled cannot open a database whose directory is a plain file.
    std::fs::write(data.join("db"), b"garbage").unwrap();
    let line = assert_one_line_error(
        &["serve", "--http", "127.0.0.1:0", "--data", path_str(&data)],
        "--recover",
    );
    assert!(line.contains(path_str(&data)), "{line}");
    let node = Proc::serve(&["--data", path_str(&data), "--recover"]);
    let health = reqwest::blocking_get(&node.url("/v1/health"));
    assert_eq!(health, 200);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("n1.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged directory is kept aside");
}

mod reqwest {
    /// A tiny blocking GET returning the status code (the tests here are synchronous).
    pub fn blocking_get(url: &str) -> u16 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { ::reqwest::get(url).await.unwrap().status().as_u16() })
    }
}

#[test]
fn sim_prints_its_figures_as_json_on_the_last_line() {
    let args = [
        "--workload",
        "broadcast",
        "--nodes",
        "5",
        "--latency-ms",
        "10",
        "--rate",
        "50",
        "--duration-s",
        "2",
        "--seed",
        "3",
        "--json",
    ];
    let report = sim_json(&args);
    assert_eq!(report["ops"], 100);
    assert_eq!(report["unfinished"], 0);
    assert!(report["msgs_per_op"].as_f64().unwrap() > 0.0);
    assert!(
        report["latency_ms_max"].as_u64().unwrap() >= report["latency_ms_p50"].as_u64().unwrap()
    );
    // The same seed gives the same figures.
    assert_eq!(sim_json(&args), report);
}

#[test]
fn sim_ends_quietly_when_its_reader_is_gone() {
    // `hearsay sim ... | head -1` after head exited: the write fails, the command exits 0.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["sim", "--nodes", "100", "--seed", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn sim_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .arg("sim")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn sim_round_model_reaches_every_node_and_reports_its_costs() {
    let args = ["--nodes", "300", "--seed", "5", "--loss", "0.1", "--json"];
    let mut report = sim_json(&args);
    assert_eq!(report["nodes"], 300);
    assert_eq!(report["seed"], 5);
    assert_eq!(report["fanout"], 3, "the production default");
    assert_eq!(report["loss"], 0.1);
    assert_eq!(report["informed"], 300, "every node got the update");
    let rounds = report["rounds_to_full"].as_u64().unwrap();
    assert!(rounds > 0);
    let bound = report["bound"].as_f64().unwrap();
    assert!((bound - (300f64.log(3.0) + 300f64.ln().ln() + 2.0)).abs() < 1e-9);
    let msgs = report["msgs_per_node"].as_f64().unwrap();
    let parts = report["pushes_per_node"].as_f64().unwrap()
        + report["pull_answers_per_node"].as_f64().unwrap();
    assert!(msgs > 1.0 && (msgs - parts).abs() < 1e-9, "{report}");
    // One pull request per node per round, the last round excepted.
    assert_eq!(
        report["pull_requests_per_node"].as_f64().unwrap(),
        rounds as f64
    );
    assert!(report["elapsed_ms"].is_u64());
    // The same seed gives the same figures, apart from the driver's measurements.
    let mut again = sim_json(&args);
    for field in ["elapsed_ms", "peak_rss_kib"] {
        report.as_object_mut().unwrap().remove(field);
        again.as_object_mut().unwrap().remove(field);
    }
    assert_eq!(again, report);
}

#[test]
fn sim_writes_the_dissemination_figure() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("figure.svg");
    let runs = sim_json(&["--svg", path_str(&file), "--seed", "1", "--json"]);
    let runs = runs.as_array().unwrap();
    let sizes: Vec<u64> = runs.iter().map(|r| r["nodes"].as_u64().unwrap()).collect();
    assert_eq!(sizes.first(), Some(&10));
    assert_eq!(sizes.last(), Some(&100_000));
    assert!(runs.iter().all(|r| r["informed"] == r["nodes"]));
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Karp"));
}

#[test]
fn sim_rejects_an_unknown_workload_and_a_bad_loss() {
    assert_one_line_error(&["sim", "--workload", "nope"], "unknown workload");
    assert_one_line_error(&["sim", "--loss", "2"], "--loss");
    assert_one_line_error(
        &["sim", "--workload", "broadcast", "--svg", "x.svg"],
        "round model",
    );
    assert_one_line_error(
        &["sim", "--workload", "broadcast", "--loss", "1.5"],
        "--loss",
    );
}

#[test]
fn sim_broadcast_reports_its_settings_and_paced_pushes_send_fewer_messages() {
    let base = [
        "--workload",
        "broadcast",
        "--nodes",
        "8",
        "--latency-ms",
        "20",
        "--rate",
        "100",
        "--duration-s",
        "2",
        "--seed",
        "4",
        "--json",
    ];
    let defaults = sim_json(&base);
    assert_eq!(defaults["fanout"], 3);
    // Not fixed: the fanout (one more while paced) and half the measured round trip.
    assert!(defaults["origin_fanout"].is_null());
    assert!(defaults["push_interval_ms"].is_null());
    let mut at_once_args = base.to_vec();
    at_once_args.extend(["--push-interval-ms", "0"]);
    let at_once = sim_json(&at_once_args);
    assert_eq!(at_once["push_interval_ms"], 0);
    let mut paced_args = base.to_vec();
    paced_args.extend(["--push-interval-ms", "100", "--origin-fanout", "5"]);
    let paced = sim_json(&paced_args);
    assert_eq!(paced["origin_fanout"], 5);
    assert_eq!(paced["push_interval_ms"], 100);
    for report in [&at_once, &paced] {
        assert_eq!(report["ops"], 200);
        assert_eq!(report["unfinished"], 0, "every write reached every node");
    }
    assert!(
        paced["messages"].as_u64().unwrap() < at_once["messages"].as_u64().unwrap(),
        "{paced} vs {at_once}"
    );
}
