//! The command-line client: `hearsay kv`, `hearsay set`, `hearsay counter`, `hearsay members`,
//! `hearsay status` and `hearsay backup` talk to a running node over its HTTP API (plain http://) and print what it answers. It owns the
//! arguments, the HTTP requests, the output format and the exit codes; it makes no protocol
//! decisions (the node does) and shares no code with the server beyond its limits.

pub(crate) mod address;
pub mod args;
mod backup;
mod commands;
mod error;
pub(crate) mod http;

pub use args::ClientCommand;

use args::ConnectionArgs;
use error::ClientError;
use http::Client;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Runs one client subcommand: its output on stdout, a failure as one line on stderr, and the
/// exit code (0 success, 1 not found, 2 usage, 3 server or connection error).
pub fn run(command: ClientCommand) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result =
        run_with_output(command, &mut out).and_then(|()| out.flush().map_err(ClientError::Stdout));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`hearsay kv ls | head`): nothing left to say to it.
        Err(ClientError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_with_output(command: ClientCommand, out: &mut dyn Write) -> Result<(), ClientError> {
    let connection = match &command {
        ClientCommand::Kv(args) => &args.connection,
        ClientCommand::Set(args) => &args.connection,
        ClientCommand::Counter(args) => &args.connection,
        ClientCommand::Members(args) | ClientCommand::Status(args) => &args.connection,
        ClientCommand::Backup(args) => &args.connection,
    };
    let mut client = client_for(connection)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    runtime.block_on(async move {
        match command {
            ClientCommand::Kv(args) => {
                commands::kv(&mut client, args.command, &args.levels, out).await
            }
            ClientCommand::Set(args) => {
                commands::set(&mut client, args.command, &args.levels, out).await
            }
            ClientCommand::Counter(args) => {
                commands::counter(&mut client, args.command, &args.levels, out).await
            }
            ClientCommand::Members(_) => commands::members(&mut client, out).await,
            ClientCommand::Status(_) => commands::status(&mut client, out).await,
            ClientCommand::Backup(args) => backup::backup(&mut client, &args.out, out).await,
        }
    })
}

/// A client for `--addr`, with the token from `--token-file` if given.
fn client_for(args: &ConnectionArgs) -> Result<Client, ClientError> {
    let token = args
        .token_file
        .as_ref()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ClientError::Usage(format!("cannot read token file {}: {e}", path.display()))
            })?;
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(ClientError::Usage(format!(
                    "token file {} is empty",
                    path.display()
                )));
            }
            Ok(token)
        })
        .transpose()?;
    Client::new(
        args.addr.clone(),
        token.as_deref(),
        Duration::from_millis(args.timeout_ms),
    )
}
