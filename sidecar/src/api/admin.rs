//! The admin API (docs/sidecar.md "Admin API") on `--admin-addr`: open probes and metrics, and
//! `/admin/v1/…` behind a client certificate of the cluster CA and the token for status, membership, settings and snapshots. Membership
//! and settings changes go to the leader; a follower answers `421 NOT_LEADER` naming the leader and its admin address (no
//! forwarding).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::ServerState;
use raft_api::ErrorCode;
use raft_api::admin::{
    ClusterMember, ClusterView, InitializeRequest, InitializeResult, MemberSpec, NodeRole,
    NodeStatus, RestoredFrom, SettingsUpdate, SnapshotResult, TransferRequest,
};
use raft_api::daemon::MemberRole;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::error::ApiError;
use super::listener::ClientCertificate;
use crate::raft::handoff;
use crate::raft::membership::{self, MembershipError};
use crate::raft::node::{Lifecycle, Node};
use crate::raft::settings;
use crate::store::restore::{RestoreKind, RestoredFrom as RestoredFromRecord};
use crate::store::{Cf, MetaKey};
use crate::transport::token_matches;

/// Largest admin request body.
const MAX_ADMIN_BODY: u64 = 64 * 1024;

fn respond<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => warp::reply::json(&body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("malformed request JSON: {e}")))
}

fn parse_node_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(format!("{raw:?} is not a node id")))
}

/// The checks of `/admin/v1/…`: with TLS a client certificate of the cluster CA (verified at
/// the handshake), and the bearer token unless `--insecure`.
fn authorized(
    token: Option<String>,
    tls: bool,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::ext::optional::<ClientCertificate>()
        .and(warp::header::optional::<String>("authorization"))
        .and_then(
            move |cert: Option<ClientCertificate>, presented: Option<String>| {
                let token = token.clone();
                async move {
                    if tls && cert.is_none() {
                        return Err(warp::reject::custom(ApiError::new(
                            ErrorCode::Unauthorized,
                            "a client certificate of the cluster's CA is required",
                        )));
                    }
                    let Some(expected) = token else { return Ok(()) };
                    let given = presented
                        .as_deref()
                        .and_then(|h| h.strip_prefix("Bearer "))
                        .unwrap_or("");
                    if token_matches(&expected, given) {
                        Ok(())
                    } else {
                        Err(warp::reject::custom(ApiError::new(
                            ErrorCode::Unauthorized,
                            "missing or wrong bearer token",
                        )))
                    }
                }
            },
        )
        .untuple_one()
}

pub fn routes(
    node: Arc<Node>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_node = {
        let node = node.clone();
        warp::any().map(move || node.clone())
    };
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::with_status("ok", StatusCode::OK).into_response());
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_node.clone())
        .map(|n: Arc<Node>| {
            if n.lifecycle() == Lifecycle::Stopping {
                warp::reply::with_status("stopping", StatusCode::SERVICE_UNAVAILABLE)
                    .into_response()
            } else {
                warp::reply::with_status("ready", StatusCode::OK).into_response()
            }
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_node.clone())
        .map(|n: Arc<Node>| {
            warp::reply::with_header(
                n.metrics.render(),
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .into_response()
        });
    let admin = warp::path("admin").and(warp::path("v1")).and(authorized(
        node.cfg.token.as_ref().map(|t| t.expose().to_owned()),
        node.tls.is_some(),
    ));
    let body = warp::body::content_length_limit(MAX_ADMIN_BODY).and(warp::body::bytes());

    let status = warp::path!("status")
        .and(warp::get())
        .and(with_node.clone())
        .map(|n: Arc<Node>| warp::reply::json(&node_status(&n)).into_response());
    let cluster = warp::path!("cluster")
        .and(warp::get())
        .and(with_node.clone())
        .map(|n: Arc<Node>| respond(cluster_view(&n)));
    let initialize = warp::path!("initialize")
        .and(warp::post())
        .and(body)
        .and(with_node.clone())
        .then(|body: Bytes, n: Arc<Node>| async move {
            let result = async {
                let req: InitializeRequest = parse(&body)?;
                let initialized = membership::initialize(&n, &req.members).await?;
                Ok(InitializeResult { initialized })
            }
            .await;
            respond(result)
        });
    let add = warp::path!("members")
        .and(warp::post())
        .and(body)
        .and(with_node.clone())
        .then(|body: Bytes, n: Arc<Node>| async move {
            let result = async {
                let spec: MemberSpec = parse(&body)?;
                Ok(membership::add_learner(&n, &spec).await?)
            }
            .await;
            respond(result)
        });
    let promote = warp::path!("members" / String / "promote")
        .and(warp::post())
        .and(with_node.clone())
        .then(|id: String, n: Arc<Node>| async move {
            let result = async { Ok(membership::promote(&n, parse_node_id(&id)?).await?) }.await;
            respond(result)
        });
    let remove = warp::path!("members" / String)
        .and(warp::delete())
        .and(with_node.clone())
        .then(|id: String, n: Arc<Node>| async move {
            let result =
                async { Ok(membership::remove_member(&n, parse_node_id(&id)?).await?) }.await;
            respond(result)
        });
    let transfer = warp::path!("leadership" / "transfer")
        .and(warp::post())
        .and(body)
        .and(with_node.clone())
        .then(|body: Bytes, n: Arc<Node>| async move {
            let result = async {
                let request: TransferRequest = if body.is_empty() {
                    TransferRequest::default()
                } else {
                    parse(&body)?
                };
                let to = request
                    .to_node_id
                    .as_deref()
                    .map(parse_node_id)
                    .transpose()?;
                Ok(handoff::hand_off(&n, to, handoff::Purpose::Transfer).await?)
            }
            .await;
            respond(result)
        });
    let settings_get = warp::path!("settings")
        .and(warp::get())
        .and(with_node.clone())
        .map(|n: Arc<Node>| warp::reply::json(&settings::current(&n)).into_response());
    let settings_put = warp::path!("settings")
        .and(warp::put())
        .and(body)
        .and(with_node.clone())
        .then(|body: Bytes, n: Arc<Node>| async move {
            let result = async {
                let update: SettingsUpdate = parse(&body)?;
                Ok(settings::set_dedupe_window(&n, update.dedupe_window_ms).await?)
            }
            .await;
            respond(result)
        });
    let snapshot_now = warp::path!("snapshot")
        .and(warp::post())
        .and(with_node.clone())
        .then(|n: Arc<Node>| async move { respond(snapshot_now(&n).await) });
    let snapshot_get = warp::path!("snapshot")
        .and(warp::get())
        .and(with_node.clone())
        .then(|n: Arc<Node>| async move { super::backup::download(&n).await });
    let restore = warp::path!("restore")
        .and(warp::post())
        .and(warp::header::optional::<String>(
            raft_api::backup::header::MANIFEST,
        ))
        .and(warp::body::stream())
        .and(with_node.clone())
        .then(|manifest, body, n: Arc<Node>| async move {
            respond(super::restore::restore(&n, manifest, body).await)
        });
    let recover = warp::path!("recover")
        .and(warp::post())
        .and(body)
        .and(with_node)
        .then(|body: Bytes, n: Arc<Node>| async move {
            let result = async { super::restore::recover(&n, parse(&body)?).await }.await;
            respond(result)
        });
    let protected = status
        .or(cluster)
        .unify()
        .or(initialize)
        .unify()
        .or(add)
        .unify()
        .or(promote)
        .unify()
        .or(remove)
        .unify()
        .or(transfer)
        .unify()
        .or(settings_get)
        .unify()
        .or(settings_put)
        .unify()
        .or(snapshot_now)
        .unify()
        .or(snapshot_get)
        .unify()
        .or(restore)
        .unify()
        .or(recover)
        .unify();
    healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(admin.and(protected))
        .unify()
}

/// `GET /admin/v1/status`.
pub fn node_status(node: &Node) -> NodeStatus {
    let m = node.raft_metrics();
    let member = node.is_member(&m);
    let role = match node.lifecycle() {
        Lifecycle::Removed => NodeRole::Removed,
        Lifecycle::Stopping => NodeRole::Stopping,
        Lifecycle::Running if !member => NodeRole::Uninitialized,
        Lifecycle::Running => match m.state {
            ServerState::Leader => NodeRole::Leader,
            ServerState::Candidate => NodeRole::Candidate,
            ServerState::Learner => NodeRole::Learner,
            ServerState::Follower | ServerState::Shutdown => NodeRole::Follower,
        },
    };
    NodeStatus {
        node_id: node.id.to_string(),
        name: node.cfg.name.clone(),
        cluster_id: node.cfg.cluster_id.clone(),
        initialized: member,
        role,
        term: m.current_term,
        leader_id: node.leader_name(&m),
        leader_node_id: m.current_leader.map(|l| l.to_string()),
        last_log_index: m.last_log_index.unwrap_or(0),
        last_log_term: crate::store::log::last_log_id(&node.db)
            .ok()
            .flatten()
            .map_or(0, |id| id.leader_id.term),
        last_applied_index: m.last_applied.map_or(0, |l| l.index),
        partition_state: node.health().partition,
        peer_address: node.cfg.advertise_peer.clone(),
        admin_address: node.cfg.advertise_admin.clone(),
        tls: node.tls.as_ref().map(|t| t.current().in_use.clone()),
        restored_from: restored_from(node),
    }
}

/// What the store says it was restored from; a store it cannot read is reported by the
/// node's own storage errors, not here.
fn restored_from(node: &Node) -> Option<RestoredFrom> {
    let from: RestoredFromRecord = node
        .db
        .get(Cf::Meta, MetaKey::RestoredFrom.key())
        .ok()
        .flatten()?;
    Some(RestoredFrom {
        kind: match from.kind {
            RestoreKind::Backup => raft_api::admin::RestoreKind::Backup,
            RestoreKind::Recovery => raft_api::admin::RestoreKind::Recovery,
        },
        parent_cluster_id: from.parent_cluster_id,
        snapshot_id: from.snapshot_id,
        last_log_index: from.last_log_id.index,
        last_log_term: from.last_log_id.leader_id.term,
        sha256: from.sha256,
    })
}

/// `GET /admin/v1/cluster`: only the leader has replication progress, so followers send the
/// caller to it.
fn cluster_view(node: &Node) -> Result<ClusterView, ApiError> {
    let m = node.raft_metrics();
    if !node.is_leader(&m) {
        let leader = m.current_leader.and_then(|l| node.member(&m, l));
        return Err(MembershipError::NotLeader { leader }.into());
    }
    let health = node.health();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    let replication = m.replication.clone().unwrap_or_default();
    let healthy: std::collections::HashMap<u64, bool> = membership::node_voter_health(node, &m)
        .into_iter()
        .map(|v| (v.id, v.healthy))
        .collect();
    let members = membership
        .nodes()
        .map(|(id, member)| {
            let matched = if *id == node.id {
                Some(last)
            } else {
                replication.get(id).copied().flatten().map(|l| l.index)
            };
            let contact = health.last_contact.get(id).copied();
            ClusterMember {
                node_id: id.to_string(),
                name: member.name.clone(),
                address: member.peer_addr.clone(),
                admin_address: Some(member.admin_addr.clone()).filter(|a| !a.is_empty()),
                role: if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                },
                healthy: healthy
                    .get(id)
                    .copied()
                    .unwrap_or_else(|| contact.is_some_and(|d| d <= node.cfg.partition_detection)),
                matched_index: matched,
                lag: matched.map(|mi| last.saturating_sub(mi)),
                lag_ms: matched
                    .and_then(|mi| node.behind(mi))
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                last_contact_ms: if *id == node.id {
                    Some(0)
                } else {
                    contact.map(|d| d.as_millis() as u64)
                },
            }
        })
        .collect();
    Ok(ClusterView {
        leader_id: node.leader_name(&m),
        leader_node_id: m.current_leader.map(|l| l.to_string()),
        term: m.current_term,
        last_log_index: last,
        commit_index: m.last_applied.map_or(0, |l| l.index),
        joint: m.membership_config.membership().get_joint_config().len() > 1,
        members,
    })
}

/// `POST /admin/v1/snapshot`: build a snapshot of everything applied now and wait for it.
async fn snapshot_now(node: &Node) -> Result<SnapshotResult, ApiError> {
    let stopped = || {
        ApiError::new(
            ErrorCode::ShuttingDown,
            "Raft stopped while building the snapshot",
        )
    };
    let m = node.raft_metrics();
    if !node.is_member(&m) {
        return Err(ApiError::new(
            ErrorCode::NotInitialized,
            "node is not a member of a cluster",
        ));
    }
    let target = m.last_applied.map_or(0, |l| l.index);
    // The request skips the wait between builds (`--snapshot-build-share`). One hurry is
    // enough: a waiting build takes it (its view then covers `target`); with a build running,
    // the next one takes it. A running build may have taken its view before `target`, and
    // openraft ignores a trigger meanwhile: ask again until a snapshot covers it.
    node.snapshot_pace.hurry();
    let built = tokio::time::timeout(Duration::from_secs(30), async {
        let mut rx = node.raft.metrics();
        loop {
            node.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|_| stopped())?;
            let covered = tokio::time::timeout(
                Duration::from_millis(500),
                rx.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= target)),
            )
            .await;
            // Clone out of the watch at once: holding its guard across an await can stall Raft.
            match covered.map(|r| r.map(|m| m.snapshot.map_or(0, |s| s.index))) {
                Ok(Ok(index)) => return Ok(index),
                Ok(Err(_)) => return Err(stopped()),
                Err(_) => {}
            }
        }
    })
    .await;
    let snapshot_index = match built {
        Ok(result) => result?,
        Err(_) => {
            return Err(ApiError::new(
                ErrorCode::Timeout,
                "snapshot not built within 30 s",
            ));
        }
    };
    // Compact now: purge the log up to the snapshot (openraft delays the purge while a
    // replication stream still reads those entries; lagging followers then get the snapshot).
    node.raft
        .trigger()
        .purge_log(snapshot_index)
        .await
        .map_err(ApiError::internal)?;
    let mut rx = node.raft.metrics();
    let purged = tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|m| m.purged.is_some_and(|p| p.index >= snapshot_index)),
    )
    .await
    .map(|r| r.map(|m| m.purged.map(|p| p.index)));
    let purged_up_to = match purged {
        Ok(Ok(index)) => index,
        _ => node.raft_metrics().purged.map(|p| p.index),
    };
    Ok(SnapshotResult {
        snapshot_index,
        purged_up_to,
    })
}
