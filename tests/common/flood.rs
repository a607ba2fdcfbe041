//! An attacker on the cluster port for tests and benchmarks: keeps connections open to each
//! target, each declaring an 8 MiB frame and sending only part of it; a connection the node
//! closes is opened again at once. Stops when dropped.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A frame length the node accepts (8 MiB, the codec's limit).
pub const DECLARED: u32 = 8 << 20;

pub struct Flood {
    /// Connections opened so far.
    pub opened: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    /// `per_target` connections to each target, each sending the length prefix and `body`
    /// bytes; with `trickle`, every open connection then sends a few more bytes every 20 ms.
    pub fn start(targets: &[SocketAddr], per_target: usize, body: usize, trickle: bool) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let opened = Arc::new(AtomicUsize::new(0));
        let count = opened.clone();
        let open = move |to: &SocketAddr| -> Option<TcpStream> {
            count.fetch_add(1, Ordering::Relaxed);
            let mut s = TcpStream::connect_timeout(to, Duration::from_secs(1)).ok()?;
            s.write_all(&DECLARED.to_be_bytes()).ok()?;
            s.write_all(&vec![0x41; body]).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        };
        let mut conns: Vec<(SocketAddr, Option<TcpStream>)> = targets
            .iter()
            .flat_map(|t| std::iter::repeat_n(*t, per_target))
            .map(|t| (t, None))
            .collect();
        let thread = std::thread::spawn(move || {
            while !running.load(Ordering::Relaxed) {
                for (to, conn) in conns.iter_mut() {
                    let closed = match conn {
                        None => true,
                        Some(s) => {
                            let mut probe = [0u8; 1];
                            let gone = !matches!(
                                s.peek(&mut probe),
                                Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
                            );
                            // The trickle: a few more bytes of the never-ending frame.
                            gone || (trickle && s.write_all(&[0x42; 16]).is_err())
                        }
                    };
                    if closed {
                        *conn = open(to);
                    }
                }
                // Pacing of the attacker, not a wait for anything.
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Flood {
            opened,
            stop,
            thread: Some(thread),
        }
    }

    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
