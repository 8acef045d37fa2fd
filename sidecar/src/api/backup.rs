//! `GET /admin/v1/snapshot`: the node's current snapshot image, streamed from its file in
//! chunks (never read whole), with what a backup manifest needs in the response headers
//! (`raft_api::backup::header`).

use std::io::SeekFrom;

use bytes::Bytes;
use raft_api::ErrorCode;
use raft_api::backup::header;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use warp::reply::{Reply, Response};

use super::error::ApiError;
use crate::raft::node::Node;
use crate::store::snapshot::{Head, IMAGE_VERSION, ImageReader};

/// Size of one chunk of the download.
const CHUNK: usize = 256 << 10;

pub async fn download(node: &Node) -> Response {
    match stream(node).await {
        Ok(reply) => reply,
        Err(e) => e.into_response(),
    }
}

async fn stream(node: &Node) -> Result<Response, ApiError> {
    let Some(snapshot) = node.raft.get_snapshot().await.map_err(ApiError::internal)? else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no snapshot yet; POST /admin/v1/snapshot builds one",
        ));
    };
    let mut file = snapshot.snapshot;
    let head = read_head(&mut file).await?;
    let (index, term) = head
        .last_applied
        .map_or((0, 0), |id| (id.index, id.leader_id.term));
    let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    });
    let mut reply = warp::reply::stream(chunks).into_response();
    let headers = reply.headers_mut();
    let journal_last = head.journal.next_index.saturating_sub(1);
    for (name, value) in [
        ("content-type", "application/octet-stream".to_owned()),
        (header::SNAPSHOT_ID, head.snapshot_id.clone()),
        (header::CLUSTER_ID, node.cfg.cluster_id.clone()),
        (header::LAST_LOG_INDEX, index.to_string()),
        (header::LAST_LOG_TERM, term.to_string()),
        (
            header::JOURNAL_FIRST_INDEX,
            head.journal.first_index.to_string(),
        ),
        (header::JOURNAL_LAST_INDEX, journal_last.to_string()),
        (header::IMAGE_FORMAT, IMAGE_VERSION.to_string()),
        (
            header::SIDECAR_VERSION,
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ] {
        let value = warp::http::HeaderValue::from_str(&value).map_err(ApiError::internal)?;
        headers.insert(name, value);
    }
    Ok(reply)
}

/// The image's head row, read through a second handle on the file; the download then starts
/// again from the first byte.
async fn read_head(file: &mut tokio::fs::File) -> Result<Head, ApiError> {
    let clone = file.try_clone().await.map_err(ApiError::internal)?;
    let std_file = clone.into_std().await;
    let head = tokio::task::spawn_blocking(move || {
        ImageReader::open(std::io::BufReader::new(std_file)).map(|(_, head)| head)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    file.seek(SeekFrom::Start(0))
        .await
        .map_err(ApiError::internal)?;
    Ok(head)
}
