//! Shared helpers for the integration tests: an in-process server on a port-0 listener, and the
//! real binary as a child process that is killed when its handle drops.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // tests and benchmarks measure real time

pub mod flood;

use hearsay::clock::NodeId;
use hearsay::server::{self, ServerConfig};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A server running inside the test process.
pub struct TestServer {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub dir: tempfile::TempDir,
}

pub struct TestServerParts {
    pub dir: tempfile::TempDir,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    start_in(tempfile::tempdir().unwrap(), tweak).await
}

/// Starts node `n1` with its data in `dir/n1`.
pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let mut config = ServerConfig::new(NodeId::new("n1").unwrap(), dir.path().join("n1"));
    tweak(&mut config);
    let any = "127.0.0.1:0".parse().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let node = server::spawn(config, any, any, async move {
        // A dropped sender (see `into_parts`) does not stop the server; only a sent signal does.
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await
    .unwrap();
    let base = format!("http://{}", node.http_addr);
    let task = node.task;
    TestServer {
        base,
        stop: Some(stop),
        task: Some(task),
        dir,
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The data directory and the server task, for tests that let the server stop by itself.
    pub fn into_parts(mut self) -> TestServerParts {
        TestServerParts {
            dir: std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()),
            task: self.task.take().unwrap(),
        }
    }

    /// Stops the server and waits until the store is checkpointed and closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// The real `hearsay` binary, running as a child process.
pub struct Proc {
    child: Child,
    pub base: String,
    /// The node's cluster address.
    pub gossip: String,
    /// The data directory made for it when the test gave none (removed with it).
    _data: Option<tempfile::TempDir>,
    /// Its log lines after the one saying it serves.
    log: std::sync::Mutex<mpsc::Receiver<String>>,
}

impl Proc {
    /// Starts `hearsay serve` with `args` (plus `--http 127.0.0.1:0` and `--gossip
    /// 127.0.0.1:0` unless given) and waits until it serves. `base` and `gossip` are the
    /// addresses it is bound to, or those it advertises when it is bound to every interface.
    pub fn serve(args: &[&str]) -> Proc {
        Self::serve_with(args, |_| {})
    }

    /// [`Proc::serve`] started through a wrapper command (`via`, e.g. `ip netns exec <ns>`)
    /// that ends by executing the binary it is given.
    pub fn serve_via(via: &[&str], args: &[&str]) -> Proc {
        Self::serve_binary_via(via, env!("CARGO_BIN_EXE_hearsay"), args)
    }

    /// [`Proc::serve_via`] with another `hearsay` binary (an earlier release).
    pub fn serve_binary_via(via: &[&str], binary: &str, args: &[&str]) -> Proc {
        let (program, wrapper_args) = via.split_first().expect("a wrapper command");
        let mut command = Command::new(program);
        command.args(wrapper_args).arg(binary);
        Self::start(command, args)
    }

    /// [`Proc::serve`] with extra environment variables for the child.
    pub fn serve_with_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::serve_with(args, move |command| {
            command.envs(env);
        })
    }

    /// As [`Proc::serve`], with the process's open-file limit (`RLIMIT_NOFILE`) lowered to
    /// `limit`, as on a host with a low `ulimit -n`.
    pub fn serve_with_open_file_limit(args: &[&str], limit: u64) -> Proc {
        Self::serve_with(args, |command| {
            use std::os::unix::process::CommandExt;
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the child being started.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        })
    }

    fn serve_with(args: &[&str], tweak: impl FnOnce(&mut Command)) -> Proc {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hearsay"));
        tweak(&mut command);
        Self::start(command, args)
    }

    fn start(mut command: Command, args: &[&str]) -> Proc {
        let unless_given = |flag: &'static str| -> &'static [&'static str] {
            match (args.contains(&flag), flag) {
                (true, _) => &[],
                (false, "--http") => &["--http", "127.0.0.1:0"],
                (false, _) => &["--gossip", "127.0.0.1:0"],
            }
        };
        // Without --data, a temporary directory that goes with the process (never the
        // default, which is relative to where the tests run).
        let data = (!args.contains(&"--data")).then(|| tempfile::tempdir().expect("temp dir"));
        let data_args: Vec<String> = match &data {
            Some(dir) => vec!["--data".into(), dir.path().display().to_string()],
            None => Vec::new(),
        };
        let mut child = command
            .arg("serve")
            .args(["--log", "info"])
            .args(unless_given("--http"))
            .args(unless_given("--gossip"))
            .args(&data_args)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hearsay");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[child] {line}");
                let _ = tx.send(line);
            }
        });
        // From here on, dropping `proc` (also by a panic) kills the child.
        let mut proc = Proc {
            child,
            base: String::new(),
            gossip: String::new(),
            _data: data,
            log: std::sync::Mutex::new(rx),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = proc.log.lock().unwrap().recv_timeout(left);
            let line = match received {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = proc.child.wait();
                    panic!("hearsay exited before serving ({status:?}); its log is above")
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("hearsay did not start serving in time")
                }
            };
            let field = |name: &str| {
                line.split(&format!(" {name}="))
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_string)
            };
            // Only the node's own "serving" line: a "member joined" line, which may come first,
            // names another node's addresses.
            if !line.contains(" serving node=") {
                continue;
            }
            // The bound address, unless it means every interface: then the advertised one.
            let reachable = |name: &str| {
                let bound = field(name)?;
                let every = bound.starts_with("0.0.0.0:") || bound.starts_with("[::]:");
                if every {
                    field(&format!("advertise_{name}"))
                } else {
                    Some(bound)
                }
            };
            if let (Some(http), Some(gossip)) = (reachable("http"), reachable("gossip")) {
                proc.base = format!("http://{http}");
                proc.gossip = gossip;
                return proc;
            }
        }
    }

    /// The first log line from now on containing every one of `needles`, waiting up to
    /// `within` (lines before it are consumed).
    pub fn log_line(&self, needles: &[&str], within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let log = self.log.lock().unwrap();
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = log.recv_timeout(left).ok()?;
            if needles.iter().all(|n| line.contains(n)) {
                return Some(line);
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The child's process id (for reading `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's resident memory in MiB, from `/proc/<pid>/status` (`None` once it is gone).
    pub fn rss_mib(&self) -> Option<f64> {
        self.status_mib("VmRSS:")
    }

    /// The child's peak resident memory so far in MiB (`None` once it is gone).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.status_mib("VmHWM:")
    }

    fn status_mib(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// Sends a signal (SIGSTOP, SIGCONT, SIGTERM...).
    pub fn signal(&self, signal: i32) {
        // SAFETY: a signal to our own child, which has not been reaped while `self` lives.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `hearsay` to completion (killing it after `timeout`) and returns (exit code, stderr).
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hearsay");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "hearsay {args:?} did not exit within {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GETs `url` and decodes its JSON body: `None` on a connection error or a status other than 2xx.
pub async fn get_json(c: &reqwest::Client, url: String) -> Option<serde_json::Value> {
    let resp = c.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// GETs `url`'s body as text: `None` on a connection error or a status other than 200.
pub async fn get_text(c: &reqwest::Client, url: String) -> Option<String> {
    let resp = c.get(url).send().await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.text().await.ok()
}

/// The state `observer` lists for member `id`, and its incarnation.
pub async fn member_state(c: &reqwest::Client, observer: &Proc, id: &str) -> Option<(String, u64)> {
    let members = get_json(c, observer.url("/v1/cluster/members")).await?;
    members["members"].as_array()?.iter().find_map(|m| {
        (m["id"] == id).then(|| {
            (
                m["state"].as_str().unwrap_or_default().to_string(),
                m["incarnation"].as_u64().unwrap_or_default(),
            )
        })
    })
}

/// The value of the metric `series` (its name and labels, as exposed) on `node`, if exposed.
pub async fn metric(c: &reqwest::Client, node: &Proc, series: &str) -> Option<u64> {
    let text = get_text(c, node.url("/metrics")).await?;
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The Merkle root `node` reports (`/v1/cluster/digest`), as hex.
pub async fn digest(c: &reqwest::Client, node: &Proc) -> Option<String> {
    let d = get_json(c, node.url("/v1/cluster/digest")).await?;
    Some(d["root"].as_str()?.to_string())
}

/// Waits until every one of `nodes` reports the same digest; returns it.
pub async fn converged(c: &reqwest::Client, nodes: &[&Proc], within: Duration) -> String {
    eventually("equal digests", within, || async {
        let mut roots = Vec::new();
        for n in nodes {
            roots.push(digest(c, n).await?);
        }
        roots
            .windows(2)
            .all(|w| w[0] == w[1])
            .then(|| roots[0].clone())
    })
    .await
}

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub mod raw_http;

/// Opens the sled database of the data directory `dir` directly, as an older build left it or to
/// alter it. A node that just closed the directory still holds sled's lock until sled's own
/// threads let it go, so a lock refusal is retried for up to five seconds.
pub fn open_sled(dir: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(dir.join("db")) {
            Err(sled::Error::Io(e))
                if e.to_string().contains("lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.expect("open the sled database"),
        }
    }
}
