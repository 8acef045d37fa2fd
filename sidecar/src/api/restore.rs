//! Restores and recoveries through the admin API, each carried out at the node's next start.
//!
//! `POST /admin/v1/restore`: a backup image streamed in the request body, with its manifest in
//! the `x-raft-backup-manifest` header, restored into a node that has never been a member of a
//! cluster. The image is checked and staged as `raft-sidecar restore` would (`store::staged`),
//! the answer says what was restored, and the node then stops to start again on it as the only
//! member of its cluster (the operator's `spec.bootstrap.fromBackup`).
//!
//! Refused (409 `REFUSED`): a node that has a vote, a log or members; a restore already
//! running; a damaged image or one that does not match its manifest. A node that staged one
//! already (or is stopping) answers 503 `SHUTTING_DOWN`: it is about to restart. An upload that
//! breaks off or stalls answers 504 `TIMEOUT` naming why; nothing is staged then. Every answer
//! waits until the client has sent the rest of its upload (read and discarded, within a bound), so
//! a client still sending gets the answer and not a reset connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use raft_api::ErrorCode;
use raft_api::admin::{RecoverRequest, RecoverResult, RestoreResult};
use raft_api::backup::{BackupManifest, MANIFEST_FORMAT};
use raft_api::daemon::PartitionState;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::error::ApiError;
use crate::raft::node::{Lifecycle, Node};
use crate::store::restore::{Outcome, Request, RestoreError};
use crate::store::{recover, staged};
use crate::types::Member;

/// Longest wait for the next chunk of the body: a stalled upload must not hold the node's one
/// restore turn for ever.
const STALL: Duration = Duration::from_secs(30);

/// Longest time spent reading and discarding what is left of an upload once the answer is
/// known: a client that sends its whole body before it reads (as most do) then gets the
/// answer instead of a reset connection. A longer upload is cut off and gets the reset.
const DISCARD: Duration = Duration::from_secs(30);

/// The request body, shared between the stager and the discarding of what it left unread.
type Upload<S> = Arc<tokio::sync::Mutex<Pin<Box<S>>>>;

pub async fn restore<S, B>(
    node: &Arc<Node>,
    manifest: Option<String>,
    body: S,
) -> Result<RestoreResult, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    let body: Upload<S> = Arc::new(tokio::sync::Mutex::new(Box::pin(body)));
    let result = stage_upload(node, manifest, body.clone()).await;
    discard_rest(&body).await;
    result
}

/// Reads and discards the rest of the upload, for at most [`DISCARD`] and only while chunks
/// keep coming.
async fn discard_rest<S, B>(body: &Upload<S>)
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
{
    let mut body = body.lock().await;
    let read = async {
        let mut discarded = 0_usize;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(STALL, body.next()).await {
            discarded += 1;
        }
        discarded
    };
    match tokio::time::timeout(DISCARD, read).await {
        Ok(0) => {}
        Ok(chunks) => tracing::debug!(chunks, "discarded the rest of a restore upload"),
        Err(_) => tracing::info!(
            "a restore upload went on for {DISCARD:?} after its answer was known; cut off"
        ),
    }
}

async fn stage_upload<S, B>(
    node: &Arc<Node>,
    manifest: Option<String>,
    body: Upload<S>,
) -> Result<RestoreResult, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    let manifest = parse_manifest(manifest)?;
    let turn = take_turn(node)?;
    if staged::is_staged(&node.cfg.data_dir) {
        // An earlier call's: the node restarts onto it (503, like any stopping node).
        node.request_restart("a restore is staged in the data dir");
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "a restore is staged on this node; it restarts onto it",
        ));
    }
    refuse_unless_blank(node)?;
    // On a task of its own: a client that goes away must not cut staging short, nor release
    // the turn while it runs, nor leave a staged restore without the restart that adopts it.
    let node = node.clone();
    let task = tokio::spawn(async move {
        let _turn = turn;
        let upload = Arc::new(parking_lot::Mutex::new(None));
        let chunks = Box::pin(
            stalling(body, upload.clone())
                .map(|chunk| chunk.map(|mut b| b.copy_to_bytes(b.remaining()))),
        );
        let input = SyncIoBridge::new(StreamReader::new(chunks));
        let (data_dir, cluster_id) = (node.cfg.data_dir.clone(), node.cfg.cluster_id.clone());
        let member = Member {
            name: node.cfg.name.clone(),
            peer_addr: node.cfg.advertise_peer.clone(),
            admin_addr: node.cfg.advertise_admin.clone(),
        };
        let node_id = node.id;
        let outcome = tokio::task::spawn_blocking(move || {
            let request = Request {
                data_dir: &data_dir,
                cluster_id: &cluster_id,
                member,
                node_id: Some(node_id),
                manifest: Some(&manifest),
                recovery: None,
            };
            staged::stage(io::BufReader::with_capacity(256 << 10, input), &request)
        })
        .await
        .map_err(ApiError::internal)?;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // The bytes never all arrived: not the backup's fault.
            Err(_) if let Some(why) = upload.lock().take() => {
                return Err(ApiError::new(
                    ErrorCode::Timeout,
                    format!("the upload of the image failed: {why}; nothing was staged"),
                ));
            }
            Err(e @ (RestoreError::Store(_) | RestoreError::Io { .. })) => {
                return Err(ApiError::internal(e));
            }
            Err(other) => return Err(refused(other.to_string())),
        };
        let Outcome::Restored {
            from,
            journal_first_index,
            journal_next_index,
            size_bytes,
            ..
        } = outcome
        else {
            return Err(ApiError::internal("the staged restore reported no restore"));
        };
        tracing::info!(
            snapshot = %from.snapshot_id,
            last_log_index = from.last_log_id.index,
            parent = ?from.parent_cluster_id,
            "restore staged; restarting onto it"
        );
        node.request_restart("a restore was staged through the admin API");
        Ok(RestoreResult {
            node_id,
            snapshot_id: from.snapshot_id,
            last_log_index: from.last_log_id.index,
            last_log_term: from.last_log_id.leader_id.term,
            journal_first_index,
            journal_next_index,
            size_bytes,
            restarting: true,
        })
    });
    task.await.map_err(ApiError::internal)?
}

fn parse_manifest(raw: Option<String>) -> Result<BackupManifest, ApiError> {
    let raw = raw.ok_or_else(|| {
        ApiError::invalid(format!(
            "the {} header (the backup's manifest as JSON) is required",
            raft_api::backup::header::MANIFEST
        ))
    })?;
    let manifest: BackupManifest = serde_json::from_str(&raw)
        .map_err(|e| ApiError::invalid(format!("malformed backup manifest: {e}")))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(refused(format!(
            "the manifest has format {:?}; this raft-sidecar reads {MANIFEST_FORMAT:?}",
            manifest.format
        )));
    }
    Ok(manifest)
}

/// A restore goes into a node that never took part in a cluster: no vote, no log, no members.
fn refuse_unless_blank(node: &Node) -> Result<(), ApiError> {
    let m = node.raft_metrics();
    let member = node.is_member(&m);
    let voted = m.vote.leader_id().term > 0;
    if member || voted || m.last_log_index.is_some() {
        return Err(refused(format!(
            "this node has taken part in a cluster (member: {member}, term {}, last log index \
             {:?}): a restore goes only into a node that never did",
            m.vote.leader_id().term,
            m.last_log_index
        )));
    }
    Ok(())
}

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Refused, message)
}

/// The body's chunks, failing with `TimedOut` when the next one takes longer than [`STALL`];
/// a failure of the upload itself is also kept in `failed`, to tell it from a damaged image.
fn stalling<S, B>(
    body: Upload<S>,
    failed: Arc<parking_lot::Mutex<Option<String>>>,
) -> impl Stream<Item = io::Result<B>> + Send
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Send + 'static,
{
    futures_util::stream::unfold(Some(body), move |state| {
        let failed = failed.clone();
        async move {
            let body = state?;
            let next = tokio::time::timeout(STALL, body.lock().await.next()).await;
            let why = match next {
                Ok(Some(Ok(chunk))) => return Some((Ok(chunk), Some(body))),
                Ok(None) => return None,
                Ok(Some(Err(e))) => e.to_string(),
                Err(_) => format!("it stalled for {STALL:?}"),
            };
            *failed.lock() = Some(why.clone());
            Some((Err(io::Error::new(io::ErrorKind::TimedOut, why)), None))
        }
    })
}

/// The node's one turn for a restore or a recovery: refused while it stops or while another
/// holds it.
fn take_turn(node: &Node) -> Result<tokio::sync::OwnedMutexGuard<()>, ApiError> {
    if node.lifecycle() != Lifecycle::Running {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "the node is stopping",
        ));
    }
    node.restore_turn
        .clone()
        .try_lock_owned()
        .map_err(|_| refused("a restore or recovery is already running on this node"))
}

/// `POST /admin/v1/recover` (`{"force": true}`): this member, a survivor of a lost majority,
/// becomes the only voter of its cluster at its next start, keeping everything its store holds
/// (`store::recover`); it restarts at once. Refused unless its monitor finds it cut off from a
/// quorum (partition state `minority`): anything else could fork the cluster.
pub async fn recover(node: &Arc<Node>, request: RecoverRequest) -> Result<RecoverResult, ApiError> {
    if !request.force {
        return Err(ApiError::invalid(
            "recovery discards the rest of the membership and may lose entries only the lost \
             members held: send {\"force\": true}",
        ));
    }
    let turn = take_turn(node)?;
    if recover::is_requested(&node.cfg.data_dir) {
        node.request_restart("a recovery is requested in the data dir");
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "a recovery is requested on this node; it restarts to carry it out",
        ));
    }
    let m = node.raft_metrics();
    if !node.is_member(&m) {
        return Err(refused(
            "this node is not a member of a cluster: nothing to recover",
        ));
    }
    // Only a minority: `leaderless` means a majority answered lately, without a leader yet.
    let health = node.health();
    if health.quorum_available || health.partition != PartitionState::Minority {
        return Err(refused(format!(
            "this node is not cut off from a quorum (partition state {}; only {} allows a \
             recovery): recovering it could fork the cluster",
            health.partition.as_str(),
            PartitionState::Minority.as_str()
        )));
    }
    let last_log_term = crate::store::log::last_log_id(&node.db)
        .ok()
        .flatten()
        .map_or(0, |id| id.leader_id.term);
    let requested = recover::Requested {
        node_id: node.id,
        last_log_index: m.last_log_index,
        at_unix_secs: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let node = node.clone();
    // On a task of its own: a request once written is always followed by the restart.
    let task = tokio::spawn(async move {
        let _turn = turn;
        let data_dir = node.cfg.data_dir.clone();
        tokio::task::spawn_blocking(move || recover::request(&data_dir, &requested))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        tracing::warn!(
            last_log_index = ?m.last_log_index,
            partition = health.partition.as_str(),
            "recovery requested through the admin API; restarting to become the only voter"
        );
        node.request_restart("a recovery was requested through the admin API");
        Ok(RecoverResult {
            node_id: node.id,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_log_term,
            last_applied_index: m.last_applied.map_or(0, |l| l.index),
            restarting: true,
        })
    });
    task.await.map_err(ApiError::internal)?
}
