//! The daemon API (docs/sidecar.md "Daemon API"), loopback only by default: operations,
//! journal, journal watch, consensus state and events. Handlers translate HTTP to `Node` calls
//! and back; the rules live in `raft` and `journal`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use bytes::Bytes;
use raft_api::ErrorCode;
use raft_api::daemon::{
    BatchFailure, BatchItem, BatchResult, ConsensusState, Consistency, JournalPage, MemberRole,
    MemberState, OperationState, OperationStatus, SubmitResult,
};
use serde::Deserialize;
use warp::Filter;
use warp::reply::{Reply, Response};

use super::error::ApiError;
use super::journal::{compacted, journal_entry};
use super::sse;
use crate::journal::StoredOperation;
use crate::operation;
pub use crate::operation::{MAX_ID_BYTES, canonical_json};
use crate::raft::node::Node;
use crate::raft::{read, submit};
use crate::store::state_machine::JournalSlice;

/// Largest journal page.
pub const MAX_PAGE: usize = 1000;
/// Failures remembered for `GET /v1/operations/{id}`.
const RECENT_FAILURES: usize = 10_000;

/// An operation id this node is handling: how many submits of it are in flight here, and
/// (journal index, term) once the leader committed it.
#[derive(Debug, Default)]
struct Handling {
    submits: usize,
    committed_at: Option<(u64, u64)>,
}

/// What this node knows about operations it is handling or recently refused.
#[derive(Default)]
pub struct Tracker {
    handling: Mutex<HashMap<String, Handling>>,
    /// Reasons of recent non-retryable failures by id, and the ids oldest first.
    failures: Mutex<(HashMap<String, String>, VecDeque<String>)>,
}

impl Tracker {
    fn begin(&self, id: &str) {
        self.handling
            .lock()
            .entry(id.to_string())
            .or_default()
            .submits += 1;
    }

    /// The leader committed `id` at journal `index` in `term`; not yet applied here.
    fn replicated(&self, id: &str, index: u64, term: u64) {
        if let Some(h) = self.handling.lock().get_mut(id) {
            h.committed_at = Some((index, term));
        }
    }

    fn end(&self, id: &str, failure: Option<String>) {
        {
            let mut map = self.handling.lock();
            if let Some(h) = map.get_mut(id) {
                h.submits -= 1;
                if h.submits == 0 {
                    map.remove(id);
                }
            }
        }
        let mut guard = self.failures.lock();
        let (reasons, order) = &mut *guard;
        match failure {
            Some(reason) => {
                if reasons.insert(id.to_string(), reason).is_none() {
                    order.push_back(id.to_string());
                }
                while order.len() > RECENT_FAILURES {
                    if let Some(old) = order.pop_front() {
                        reasons.remove(&old);
                    }
                }
            }
            None => {
                reasons.remove(id);
            }
        }
    }

    fn status(&self, id: &str) -> Option<OperationState> {
        let handling = self.handling.lock().get(id).map(|h| h.committed_at);
        match handling {
            Some(Some((index, term))) => {
                return Some(state(
                    id,
                    OperationStatus::Replicated,
                    Some(index),
                    Some(term),
                    None,
                ));
            }
            Some(None) => return Some(state(id, OperationStatus::Pending, None, None, None)),
            None => {}
        }
        self.failures.lock().0.get(id).map(|reason| {
            state(
                id,
                OperationStatus::Failed,
                None,
                None,
                Some(reason.clone()),
            )
        })
    }
}

fn state(
    id: &str,
    status: OperationStatus,
    index: Option<u64>,
    term: Option<u64>,
    reason: Option<String>,
) -> OperationState {
    OperationState {
        operation_id: id.to_string(),
        status,
        log_index: index,
        term,
        reason,
    }
}

/// Parse and validate a submitted operation (400 INVALID_OPERATION or 413 PAYLOAD_TOO_LARGE
/// with the reason otherwise).
pub fn parse_operation(body: &[u8], max_bytes: usize) -> Result<StoredOperation, ApiError> {
    operation::parse(body, max_bytes).map_err(|e| ApiError::new(e.code(), e.to_string()))
}

#[derive(Debug, Deserialize)]
struct JournalQuery {
    from: Option<u64>,
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Deserialize)]
struct ReadQuery {
    #[serde(default)]
    consistency: Consistency,
}

/// For `?consistency=linearizable`: wait until this node's applied state reflects every write
/// acknowledged before the read (see `raft::read`); `local` reads at once.
async fn consistent(node: &Node, consistency: Consistency) -> Result<(), ApiError> {
    match consistency {
        Consistency::Local => Ok(()),
        Consistency::Linearizable => read::linearizable(node).await.map_err(ApiError::from),
    }
}

pub fn routes(
    node: Arc<Node>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let tracker = Arc::new(Tracker::default());
    let with_node = {
        let node = node.clone();
        warp::any().map(move || node.clone())
    };
    let with_tracker = {
        let tracker = tracker.clone();
        warp::any().map(move || tracker.clone())
    };
    let limit = u64::try_from(node.cfg.max_operation_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(64 * 1024);

    let submit = posted_body(
        warp::path!("v1" / "operations"),
        Bound::operation(&node, limit),
        (node.clone(), tracker.clone()),
        submit,
    );
    let batch = posted_body(
        warp::path!("v1" / "operations:batch"),
        Bound::batch(&node, limit.saturating_mul(BATCH_FACTOR)),
        (node.clone(), tracker.clone()),
        submit_batch,
    );
    let get_op = warp::path!("v1" / "operations" / String)
        .and(warp::get())
        .and(warp::query::<ReadQuery>())
        .and(with_node.clone())
        .and(with_tracker)
        .then(get_operation);
    let journal = warp::path!("v1" / "journal")
        .and(warp::get())
        .and(warp::query::<JournalQuery>())
        .and(with_node.clone())
        .then(journal_page);
    let watch = warp::path!("v1" / "journal" / "watch")
        .and(warp::get())
        .and(warp::query::<JournalQuery>())
        .and(warp::header::optional::<u64>("last-event-id"))
        .and(with_node.clone())
        .then(
            |q: JournalQuery, last: Option<u64>, node: Arc<Node>| async move {
                // Resume after the last event seen; after u64::MAX nothing can come, and the
                // watch just waits (no overflow).
                let from = last.map(|l| l.saturating_add(1)).or(q.from);
                sse::journal_watch(node, from)
            },
        );
    let state = warp::path!("v1" / "state")
        .and(warp::get())
        .and(warp::query::<ReadQuery>())
        .and(with_node.clone())
        .then(|q: ReadQuery, n: Arc<Node>| async move {
            match consistent(&n, q.consistency).await {
                Ok(()) => warp::reply::json(&consensus_state(&n)).into_response(),
                Err(e) => e.into_response(),
            }
        });
    let events = warp::path!("v1" / "events")
        .and(warp::get())
        .and(with_node)
        .map(sse::events);
    submit
        .or(batch)
        .unify()
        .or(get_op)
        .unify()
        .or(journal)
        .unify()
        .or(watch)
        .unify()
        .or(state)
        .unify()
        .or(events)
        .unify()
}

fn respond<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => warp::reply::json(&body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A submit body over the limit but within this many times it is read and discarded before
/// the 413 goes out: a client that sends the whole body before reading (Node's `fetch`) then
/// gets the answer instead of a reset connection. Larger ones are refused unread.
const DISCARD_FACTOR: u64 = 4;

/// A batch body may be this many times a single operation's.
const BATCH_FACTOR: u64 = 4;

/// A POST of `path` whose body, read under `bound` (413 past it), goes to `handle`.
fn posted_body<H, Fut>(
    path: impl Filter<Extract = (), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    bound: Bound,
    (node, tracker): (Arc<Node>, Arc<Tracker>),
    handle: H,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone
where
    H: Fn(Bytes, Arc<Node>, Arc<Tracker>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send,
{
    path.and(warp::post())
        .and(warp::body::content_length_limit(
            bound.limit.saturating_mul(DISCARD_FACTOR),
        ))
        .and(warp::header::<u64>("content-length"))
        .and(warp::body::stream())
        .then(move |length: u64, body| {
            let (node, tracker, handle) = (node.clone(), tracker.clone(), handle.clone());
            let bound = bound.clone();
            async move {
                match read_body(length, body, &bound).await {
                    Ok(body) => handle(body, node, tracker).await,
                    Err(e) => {
                        node.metrics.count_failure(e.code());
                        e.into_response()
                    }
                }
            }
        })
}

/// How large a body may be, and how to say so when it is larger.
#[derive(Debug, Clone)]
struct Bound {
    /// Bytes kept (the limit plus room for the JSON around the operation).
    limit: u64,
    /// What the body is ("operation", "batch").
    what: &'static str,
    /// The limit as the user set it, and the flag that sets it.
    max_bytes: u64,
    flag: &'static str,
}

impl Bound {
    fn operation(node: &Node, limit: u64) -> Self {
        Bound {
            limit,
            what: "operation",
            max_bytes: node.cfg.max_operation_bytes as u64,
            flag: "--max-operation-bytes",
        }
    }

    fn batch(node: &Node, limit: u64) -> Self {
        Bound {
            limit,
            what: "batch",
            max_bytes: (node.cfg.max_operation_bytes as u64).saturating_mul(BATCH_FACTOR),
            flag: "4 × --max-operation-bytes",
        }
    }
}

/// The submit body, whole, if it is within `bound`; otherwise `PAYLOAD_TOO_LARGE` (naming the
/// limit and its flag), once the body has been read and thrown away.
async fn read_body<S, B>(length: u64, body: S, bound: &Bound) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    let mut body = body;
    let keep = length <= bound.limit;
    let mut out = bytes::BytesMut::with_capacity(if keep {
        usize::try_from(length).unwrap_or(0)
    } else {
        0
    });
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::invalid(format!("could not read the body: {e}")))?;
        if keep {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                out.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        } else {
            chunk.advance(chunk.remaining());
        }
    }
    if !keep {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "{} is {length} bytes; the limit ({}) is {}",
                bound.what, bound.flag, bound.max_bytes
            ),
        ));
    }
    Ok(out.freeze())
}

async fn submit(body: Bytes, node: Arc<Node>, tracker: Arc<Tracker>) -> Response {
    respond(submit_one(&body, &node, &tracker).await)
}

/// Parse, submit and wait for one operation (a submit, or one operation of a batch).
async fn submit_one(body: &[u8], node: &Node, tracker: &Tracker) -> Result<SubmitResult, ApiError> {
    let op = parse_operation(body, node.cfg.max_operation_bytes).inspect_err(|e| {
        node.metrics.count_failure(e.code());
    })?;
    let id = op.id.clone();
    tracker.begin(&id);
    let result = submit::submit(node, op, |s| tracker.replicated(&id, s.index, s.term)).await;
    tracker.end(
        &id,
        result
            .as_ref()
            .err()
            .filter(|f| !f.code.is_retryable())
            .map(|f| f.to_string()),
    );
    let s = result.map_err(ApiError::from)?;
    Ok(SubmitResult {
        operation_id: id,
        status: OperationStatus::Committed,
        replicated: true,
        committed: true,
        log_index: s.index,
        term: s.term,
        duplicate: s.duplicate,
    })
}

/// `POST /v1/operations:batch`: every operation submitted at once (the batcher puts concurrent
/// operations into few Raft entries), each answered as it would be alone, in order. Only a body
/// that is not a batch, or too many operations, fails the whole request.
async fn submit_batch(body: Bytes, node: Arc<Node>, tracker: Arc<Tracker>) -> Response {
    #[derive(Deserialize)]
    struct RawBatch<'a> {
        #[serde(borrow)]
        operations: Vec<&'a serde_json::value::RawValue>,
    }
    let refuse = |e: ApiError| {
        node.metrics.count_failure(e.code());
        e.into_response()
    };
    let raw: RawBatch = match serde_json::from_slice(&body) {
        Ok(raw) => raw,
        Err(e) => {
            return refuse(ApiError::invalid(format!(
                "a batch is {{\"operations\": [operation, ...]}}: {e}"
            )));
        }
    };
    let max = node.cfg.max_batch_operations;
    if raw.operations.is_empty() || raw.operations.len() > max {
        return refuse(ApiError::new(
            if raw.operations.is_empty() {
                ErrorCode::InvalidOperation
            } else {
                ErrorCode::PayloadTooLarge
            },
            format!(
                "a batch has 1 to {max} operations (--max-batch-operations); this one has {}",
                raw.operations.len()
            ),
        ));
    }
    let items = raw.operations.iter().map(|op| {
        let (node, tracker) = (&node, &tracker);
        async move {
            let text = op.get();
            match submit_one(text.as_bytes(), node, tracker).await {
                Ok(done) => BatchItem::Committed(done),
                Err(e) => BatchItem::Failed(BatchFailure {
                    operation_id: operation_id_of(text),
                    error: e.detail(),
                }),
            }
        }
    });
    let results = futures_util::future::join_all(items).await;
    warp::reply::json(&BatchResult { results }).into_response()
}

/// The `id` of an operation that did not parse, if it has a string one.
fn operation_id_of(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("id")?.as_str().map(str::to_owned)
}

async fn get_operation(
    raw_id: String,
    q: ReadQuery,
    node: Arc<Node>,
    tracker: Arc<Tracker>,
) -> Response {
    // warp hands the path segment over still percent-encoded; ids may hold any character.
    let id = match percent_encoding::percent_decode_str(&raw_id).decode_utf8() {
        Ok(id) => id.into_owned(),
        Err(_) => {
            return ApiError::new(
                ErrorCode::InvalidOperation,
                "operation id in the path is not valid UTF-8 after percent-decoding",
            )
            .into_response();
        }
    };
    if let Err(e) = consistent(&node, q.consistency).await {
        return e.into_response();
    }
    let result = match node.journal.lookup(id.clone()).await {
        Ok(Some(rec)) => Ok(state(
            &id,
            OperationStatus::Committed,
            Some(rec.index),
            Some(rec.term),
            None,
        )),
        Ok(None) => tracker.status(&id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no operation with id {id:?} is known"),
            )
        }),
        Err(e) => Err(ApiError::internal(e)),
    };
    respond(result)
}

async fn journal_page(q: JournalQuery, node: Arc<Node>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let result = async {
        consistent(&node, q.consistency).await?;
        let slice = node
            .journal
            .page(q.from, limit)
            .await
            .map_err(ApiError::internal)?;
        let (journal, records) = match slice {
            JournalSlice::Records { journal, records } => (journal, records),
            JournalSlice::Compacted { first_index } => {
                return Err(compacted(q.from.unwrap_or(0), first_index));
            }
        };
        let from = q.from.unwrap_or(journal.first_index).max(1);
        let next_index = records.last().map_or(from, |(i, _)| i + 1);
        let entries = records
            .into_iter()
            .map(|(i, r)| journal_entry(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JournalPage {
            entries,
            next_index,
            first_index: journal.first_index,
            commit_index: journal.last_index(),
        })
    }
    .await;
    respond(result)
}

/// `GET /v1/state`: `getConsensusState()` of the UNRDF daemon's Raft integration guide.
pub fn consensus_state(node: &Node) -> ConsensusState {
    let m = node.raft_metrics();
    let health = node.health();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let replication = m.replication.clone().unwrap_or_default();
    let members = membership
        .nodes()
        .map(|(id, member)| MemberState {
            node_id: id.to_string(),
            name: member.name.clone(),
            address: member.peer_addr.clone(),
            role: if voters.contains(id) {
                MemberRole::Voter
            } else {
                MemberRole::Learner
            },
            healthy: *id == node.id
                || health
                    .last_contact
                    .get(id)
                    .is_some_and(|d| *d <= node.cfg.partition_detection),
            matched_index: replication.get(id).copied().flatten().map(|l| l.index),
            last_contact_ms: health
                .last_contact
                .get(id)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
        .collect();
    let last = m.last_log_index.unwrap_or(0);
    let purged = m.purged.map(|p| p.index + 1).unwrap_or(0);
    let applied = m.last_applied.map_or(0, |l| l.index);
    ConsensusState {
        node_id: node.id.to_string(),
        node_name: node.cfg.name.clone(),
        cluster_id: node.cfg.cluster_id.clone(),
        leader_id: node.leader_name(&m),
        is_leader: node.is_leader(&m),
        current_term: m.current_term,
        partition_state: health.partition,
        log_size: if m.last_log_index.is_some() {
            last + 1 - purged.min(last + 1)
        } else {
            0
        },
        last_log_index: last,
        // openraft 0.9 does not publish the commit index in its metrics; everything applied is
        // committed, so this is the applied index (a lower bound of the commit index).
        commit_index: applied,
        applied_index: applied,
        snapshot_index: m.snapshot.map_or(0, |s| s.index),
        quorum_available: health.quorum_available,
        members,
    }
}
