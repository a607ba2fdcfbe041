//! `hearsay backup --out FILE`: streams a running node's backup (`GET /v1/admin/backup`) into
//! `FILE.partial`, reads it back to check its end (count, Merkle root, checksum), and only then
//! renames it to `FILE`: a backup that was cut short or damaged on the way never takes the name.

use super::error::ClientError;
use super::http::{Call, Client};
use crate::store::backup_file::BackupReader;
use hyper::Method;
use std::io::Write;
use std::path::{Path, PathBuf};

pub async fn backup(
    client: &mut Client,
    file: &Path,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let cannot = |what: &str, path: &Path, e: std::io::Error| {
        ClientError::Usage(format!("cannot {what} {}: {e}", path.display()))
    };
    let mut sink = std::io::BufWriter::new(
        std::fs::File::create(&partial).map_err(|e| cannot("create", &partial, e))?,
    );
    let mut written: u64 = 0;
    let streamed = client
        .stream(
            Call {
                method: Method::GET,
                target: "/v1/admin/backup",
                body: None,
            },
            |chunk| {
                written += chunk.len() as u64;
                sink.write_all(chunk)
                    .map_err(|e| cannot("write", &partial, e))
            },
        )
        .await;
    let flushed = sink
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all());
    let checked = streamed
        .and_then(|()| flushed.map_err(|e| cannot("write", &partial, e)))
        .and_then(|()| check(&partial));
    let (node, records, root, keys) = match checked {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, file).map_err(|e| cannot("rename to", file, e))?;
    writeln!(
        out,
        "backed up {records} records of {node} to {} ({written} bytes, root {root}, {keys} keys)",
        file.display()
    )
    .map_err(ClientError::Stdout)
}

/// Reads a backup file through to its end: (node, records, root hex, key count).
fn check(path: &Path) -> Result<(String, u64, String, u64), ClientError> {
    let damaged = |reason: String| ClientError::BadReply {
        request: "GET /v1/admin/backup".into(),
        reason: format!("the backup received is not whole: {reason}"),
    };
    let file = std::fs::File::open(path)
        .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut reader =
        BackupReader::open(std::io::BufReader::new(file)).map_err(|e| damaged(e.to_string()))?;
    while reader
        .next_record()
        .map_err(|e| damaged(e.to_string()))?
        .is_some()
    {}
    let node = reader.header().node.to_string();
    let end = reader.end().ok_or_else(|| damaged("no end".into()))?;
    Ok((node, end.records, end.root.hex(), end.root.count))
}
