//! The client subcommands' arguments (clap derives) and their help text. Parsing only: no I/O.

use super::address::Endpoint;
use std::ffi::OsString;
use std::path::PathBuf;

/// Shown under every client subcommand's help.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  not found (HTTP 404)
  2  usage error: bad arguments, or a request the node refused as bad input (any other 4xx,
     such as a key over 1 KiB or a value over the node's limit)
  3  server or connection error: a 5xx, a 408 or 429, no connection, no reply within
     --timeout-ms, or a reply that is not what hearsay sends
Every failure prints one line on stderr naming the request and, for an HTTP error, the node's
error code and message.";

/// The subcommands that talk to a running node over HTTP.
#[derive(clap::Subcommand)]
pub enum ClientCommand {
    /// Write, read, delete and list keys on a running node.
    Kv(KvArgs),
    /// Add, remove and read set elements on a running node.
    Set(SetArgs),
    /// Add to and read counters on a running node.
    Counter(CounterArgs),
    /// Show the cluster's members as a running node sees them.
    Members(MembersArgs),
    /// Ask a running node for every member's digest and say whether they all agree.
    Status(MembersArgs),
    /// Stream a backup of a running node's state into a file (checked before it takes the
    /// name); `hearsay restore` makes a data directory of it.
    Backup(BackupArgs),
}

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The file to write (`FILE.partial` until the backup is whole).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// How to reach the node; accepted before or after the subcommand.
#[derive(clap::Args)]
pub struct ConnectionArgs {
    /// The node's HTTP address (plain http:// only).
    #[arg(
        long,
        global = true,
        env = "HEARSAY_ADDR",
        default_value = "http://127.0.0.1:7001",
        value_name = "URL",
        value_parser = Endpoint::parse
    )]
    pub addr: Endpoint,
    /// File holding an API token, sent as `Authorization: Bearer <token>` (surrounding
    /// whitespace trimmed).
    #[arg(long, global = true, env = "HEARSAY_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Give up on a request that has not been answered within this many milliseconds.
    #[arg(
        long,
        global = true,
        env = "HEARSAY_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout_ms: u64,
}

/// Consistency levels (`?w=` and `?r=`); accepted before or after the subcommand.
#[derive(clap::Args, Clone, Default)]
pub struct LevelArgs {
    /// Writes wait until this many members hold them durably: a number, `majority` or `all`
    /// (else exit 3 with `write_timeout`; the write stays applied and still spreads).
    #[arg(long, global = true, value_name = "LEVEL", value_parser = level)]
    pub w: Option<String>,
    /// Reads merge the state of this many members first: a number, `majority` or `all` (else
    /// exit 3 with `read_timeout`).
    #[arg(long, global = true, value_name = "LEVEL", value_parser = level)]
    pub r: Option<String>,
}

fn level(text: &str) -> Result<String, String> {
    crate::node::Level::parse(text)
        .map(|_| text.to_string())
        .ok_or_else(|| "a number of members from 1 to 1000, majority or all".to_string())
}

#[derive(clap::Args)]
#[command(arg_required_else_help = true, after_help = EXIT_CODES)]
pub struct KvArgs {
    #[command(subcommand)]
    pub command: KvCommand,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub levels: LevelArgs,
}

#[derive(clap::Subcommand)]
pub enum KvCommand {
    /// Write a value. Put `--` before a key or value that starts with `-`.
    Put {
        key: String,
        /// The value, byte-exact; `-` or none reads it from stdin.
        value: Option<OsString>,
        /// Content-Type stored with the value [default: text/plain for a VALUE argument,
        /// application/octet-stream for stdin].
        #[arg(long, value_name = "T")]
        content_type: Option<String>,
        /// The value expires this many seconds after the write, on every node.
        #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
        ttl: Option<u64>,
    },
    /// Print a value to stdout exactly as stored, with no newline added.
    Get { key: String },
    /// Delete a key (a tombstone; deleting an absent key succeeds).
    Del { key: String },
    /// List live keys, sorted, one per line, following every page.
    Ls {
        /// Only keys that start with this.
        prefix: Option<String>,
        /// Keys asked for per request [default: the node's, 100].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
        page_size: Option<u16>,
    },
    /// Follow changes to keys as the node makes them durable (from any node), one JSON line
    /// per change: {"id", "key", "timestamp", "node", "deleted"[, "expires"]}. Runs until
    /// interrupted or the node stops (exit 3; resume with --since and the last id printed).
    Watch {
        /// Only keys that start with this.
        prefix: Option<String>,
        /// Resume after this event id (the node says "reset" on stderr when it no longer
        /// holds changes that old: list the keys again).
        #[arg(long, value_name = "ID")]
        since: Option<u64>,
    },
}

#[derive(clap::Args)]
#[command(arg_required_else_help = true, after_help = EXIT_CODES)]
pub struct SetArgs {
    #[command(subcommand)]
    pub command: SetCommand,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub levels: LevelArgs,
}

#[derive(clap::Subcommand)]
pub enum SetCommand {
    /// Add elements to a set, all in one request.
    Add {
        key: String,
        #[arg(required = true)]
        elements: Vec<String>,
    },
    /// Remove elements from a set (the adds this node has seen), all in one request.
    Rm {
        key: String,
        #[arg(required = true)]
        elements: Vec<String>,
    },
    /// Print a set's elements, sorted, one per line.
    Get { key: String },
}

#[derive(clap::Args)]
#[command(arg_required_else_help = true, after_help = EXIT_CODES)]
pub struct CounterArgs {
    #[command(subcommand)]
    pub command: CounterCommand,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub levels: LevelArgs,
}

#[derive(clap::Subcommand)]
pub enum CounterCommand {
    /// Add N (negative subtracts; write `-- -5` or `=-5`) and print the value on that node.
    Add {
        key: String,
        #[arg(allow_negative_numbers = true)]
        amount: i64,
    },
    /// Print a counter's value.
    Get { key: String },
}

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct MembersArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
}
