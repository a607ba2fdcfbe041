//! `GET /v1/admin/backup`: streams a backup of this node's state in the format of
//! `store::backup_file` (records, their Merkle root and a checksum). The core hands the records
//! over a few Merkle leaves at a time ([`crate::node::Node::backup_chunk`]), so writes go on
//! while a backup streams: every key is in the backup whole, as it stood at some moment of the
//! backup, and the root in the backup is that of exactly the records in it. A failure part way
//! ends the stream without its end, which `hearsay restore` refuses as cut short.

use super::AppState;
use crate::node::BACKUP_LEAVES_PER_CHUNK;
use crate::runtime::{wall_ms, NodeHandle};
use crate::store::backup_file::{BackupHeader, BackupWriter};
use crate::store::merkle::LEAVES;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::stream;

/// Where a streaming backup stands.
enum Step {
    /// The opening bytes are sent; the next leaf to read.
    Records(Box<BackupWriter>, u32),
    Done,
}

pub async fn backup(State(state): State<AppState>) -> Response {
    let node = state.node.id().clone();
    let started_ms = wall_ms();
    let header = BackupHeader {
        node: node.clone(),
        started_ms,
        codec: crate::wire::VERSION,
    };
    let (writer, opening) = BackupWriter::start(header);
    let handle = state.node.clone();
    let records = stream::unfold(Step::Records(Box::new(writer), 0), move |step| {
        let handle = handle.clone();
        async move { next_piece(&handle, step).await }
    });
    let opening = stream::iter([Ok::<Bytes, std::io::Error>(Bytes::from(opening))]);
    let body = Body::from_stream(futures_util::StreamExt::chain(opening, records));
    let file = format!("attachment; filename=\"hearsay-{node}-{started_ms}.backup\"");
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, file),
        ],
        body,
    )
        .into_response()
}

/// The bytes of the next chunk of leaves, or the end.
async fn next_piece(
    handle: &NodeHandle,
    step: Step,
) -> Option<(Result<Bytes, std::io::Error>, Step)> {
    let Step::Records(mut writer, leaf) = step else {
        return None;
    };
    if leaf >= LEAVES as u32 {
        let (bytes, end) = (*writer).finish();
        tracing::info!(
            records = end.records,
            root = %end.root.hex(),
            "backup streamed"
        );
        return Some((Ok(Bytes::from(bytes)), Step::Done));
    }
    let next = leaf + BACKUP_LEAVES_PER_CHUNK;
    match handle.backup_chunk(leaf..next).await {
        Ok(records) => {
            let mut bytes = Vec::new();
            for (key, state) in records {
                bytes.extend(writer.record(key, state));
            }
            Some((Ok(Bytes::from(bytes)), Step::Records(writer, next)))
        }
        Err(e) => {
            tracing::warn!(error = %e, "backup failed part way; its stream ends without an end");
            let failed = std::io::Error::other(e.to_string());
            Some((Err(failed), Step::Done))
        }
    }
}
