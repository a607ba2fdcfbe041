//! `hearsay cluster`: a local N-node cluster on 127.0.0.1 for trying hearsay out. Each node is a
//! child `hearsay serve` process (so one can be killed, paused or cut off like a real node), with
//! its own data directory, consecutive ports and its log lines prefixed with its id. Ctrl-C (or
//! SIGTERM) stops every node gracefully.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How the local cluster is laid out.
#[derive(Clone, Debug)]
pub struct LocalCluster {
    pub nodes: u16,
    /// Node `i` (from 1) serves HTTP on `http_base + i - 1`.
    pub http_base: u16,
    /// Node `i` talks to the cluster on `gossip_base + i - 1`.
    pub gossip_base: u16,
    /// Node `i` keeps its data in `data/n<i>`.
    pub data: PathBuf,
    /// Extra arguments passed to every `hearsay serve`.
    pub extra: Vec<String>,
}

impl LocalCluster {
    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Starts the nodes and waits for Ctrl-C or SIGTERM, then stops them all.
    pub async fn run(&self) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let gossip: Vec<SocketAddr> = (0..self.nodes)
            .map(|i| Self::addr(self.gossip_base + i))
            .collect();
        let mut children: Vec<(String, Child)> = Vec::new();
        println!(
            "hearsay: starting a {}-node cluster on 127.0.0.1",
            self.nodes
        );
        for i in 0..self.nodes {
            let id = format!("n{}", i + 1);
            let http = Self::addr(self.http_base + i);
            let seeds: Vec<String> = gossip
                .iter()
                .filter(|g| **g != gossip[i as usize])
                .map(|g| g.to_string())
                .collect();
            let data = self.data.join(&id);
            let mut child = Command::new(&exe)
                .arg("serve")
                .args(["--node-id", &id])
                .args(["--http", &http.to_string()])
                .args(["--gossip", &gossip[i as usize].to_string()])
                .args(["--seeds", &seeds.join(",")])
                .arg("--data")
                .arg(&data)
                .arg("--fault-injection")
                .args(&self.extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            if let Some(stderr) = child.stderr.take() {
                let prefix = format!("[{id}]");
                std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        eprintln!("{prefix} {line}");
                    }
                });
            }
            println!(
                "  {id}: http://{http}  cluster {}  data {}",
                gossip[i as usize],
                data.display()
            );
            children.push((id, child));
        }
        println!(
            "Try: curl -X PUT localhost:{}/v1/kv/hello -d world",
            self.http_base
        );
        println!(
            "     curl localhost:{}/v1/kv/hello",
            self.http_base + self.nodes - 1
        );
        println!("Ctrl-C stops the cluster.");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut exited = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = exited.tick() => {
                    for (id, child) in &mut children {
                        if let Ok(Some(status)) = child.try_wait() {
                            eprintln!("hearsay: node {id} exited ({status}); the others keep running");
                        }
                    }
                    children.retain_mut(|(_, c)| !matches!(c.try_wait(), Ok(Some(_))));
                }
            }
        }
        println!("hearsay: stopping the cluster");
        stop_all(children);
        Ok(())
    }
}

/// SIGTERM to every node (each leaves the cluster and closes its store), then waits; a node that
/// does not stop within 10 s is killed.
fn stop_all(mut children: Vec<(String, Child)>) {
    for (_, child) in &children {
        // SAFETY: sending a signal to a child process we started and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    for (id, child) in &mut children {
        let mut waited = Duration::ZERO;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if waited >= Duration::from_secs(10) => {
                    eprintln!("hearsay: node {id} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => {
                    std::thread::sleep(Duration::from_millis(50));
                    waited += Duration::from_millis(50);
                }
            }
        }
    }
}
