//! The driver loop: owns the core ([`Node`]) on a dedicated thread, feeds it commands from the
//! HTTP handlers, reads the wall clock, fires the store's timer, and implements group commit:
//! every write that arrives while the previous sync runs is applied, then one commit makes the
//! whole group durable, then all of them are acknowledged. No protocol decisions live here.

use crate::clock::NodeId;
use crate::node::{Node, Write, WriteAck};
use crate::store::{Leaf, Store, StoreError, StoreRead};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Most commands handled per group commit.
const MAX_GROUP: usize = 1024;

/// The wall clock in milliseconds since the Unix epoch: the one place the core's time comes from.
#[allow(clippy::disallowed_methods)] // the driver's wall clock, by design
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

enum Command {
    Write(Write, oneshot::Sender<Result<WriteAck, StoreError>>),
    Digest(oneshot::Sender<Leaf>),
    Tick,
    Shutdown(oneshot::Sender<()>),
}

/// The error a handler gets when the core is gone (shutting down, or stopped by a storage error).
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("the node is shutting down")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cheap, cloneable handle for the HTTP side: sends commands to the core and reads the store.
#[derive(Clone)]
pub struct NodeHandle {
    id: NodeId,
    commands: mpsc::Sender<Command>,
    reader: Arc<dyn StoreRead>,
}

impl NodeHandle {
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    pub fn reader(&self) -> &dyn StoreRead {
        self.reader.as_ref()
    }

    /// Applies a write and returns once it is durable (per the durability mode).
    pub async fn write(&self, write: Write) -> Result<WriteAck, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Write(write, tx)).await?;
        Ok(rx.await.map_err(|_| CoreError::Stopped)??)
    }

    /// The Merkle root of all replicated state.
    pub async fn digest(&self) -> Result<Leaf, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Digest(tx)).await?;
        rx.await.map_err(|_| CoreError::Stopped)
    }

    /// Stops the core after checkpointing the store; returns when it is done.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn send(&self, command: Command) -> Result<(), CoreError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| CoreError::Stopped)
    }
}

/// Starts the core thread and its store timer (`tick` apart). Must be called inside a tokio
/// runtime.
pub fn start<S: Store>(node: Node<S>, tick: Duration) -> NodeHandle {
    let (commands, rx) = mpsc::channel(4 * MAX_GROUP);
    let handle = NodeHandle {
        id: node.id().clone(),
        commands: commands.clone(),
        reader: node.store().reader(),
    };
    std::thread::Builder::new()
        .name("hearsay-core".into())
        .spawn(move || run_core(node, rx))
        .map(drop)
        .unwrap_or_else(|e| panic!("cannot start the core thread: {e}"));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            // A full queue already wakes the core; a missed tick is harmless.
            if let Err(mpsc::error::TrySendError::Closed(_)) = commands.try_send(Command::Tick) {
                break;
            }
        }
    });
    handle
}

fn run_core<S: Store>(mut node: Node<S>, mut rx: mpsc::Receiver<Command>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        let mut shutdown = None;
        let mut tick = false;
        for command in group.drain(..) {
            match command {
                Command::Write(write, reply) => {
                    acks.push((reply, node.handle_write(wall_ms(), write)));
                }
                Command::Digest(reply) => {
                    let _ = reply.send(node.digest());
                }
                Command::Tick => tick = true,
                Command::Shutdown(reply) => shutdown = Some(reply),
            }
        }
        if !acks.is_empty() {
            // Group commit: one sync makes every write of the group durable.
            if let Err(e) = node.commit() {
                tracing::error!(error = %e, "commit failed; the writes of this group are not acknowledged");
                for (reply, _) in acks.drain(..) {
                    let _ = reply.send(Err(StoreError::Io(e.to_string())));
                }
            }
            for (reply, result) in acks.drain(..) {
                let _ = reply.send(result);
            }
        }
        if tick {
            if let Err(e) = node.tick() {
                tracing::error!(error = %e, "store housekeeping failed");
            }
        }
        if let Some(reply) = shutdown {
            if let Err(e) = node.checkpoint() {
                tracing::error!(error = %e, "final checkpoint failed; the log will be replayed at the next start");
            }
            // Close the store before answering, so the data directory is free once shutdown
            // returns (readers still held by HTTP handlers keep only their own handles).
            drop(node);
            let _ = reply.send(());
            return;
        }
    }
}
