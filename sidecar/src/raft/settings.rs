//! The cluster's replicated settings: today the dedupe window, changed as a committed entry
//! (`PUT /admin/v1/settings`) so every node applies the change at the same journal position.

use std::sync::Arc;

use raft_api::admin::ClusterSettings;

use super::health::millis;
use super::membership::{MembershipError, deadline, require_leader, write_error};
use super::node::Node;
use crate::journal::Proposal;

/// `GET /admin/v1/settings`: the settings this node has applied.
pub fn current(node: &Node) -> ClusterSettings {
    let journal = node.journal.applied().journal;
    ClusterSettings {
        dedupe_window_ms: journal.dedupe_window_ms,
        dedupe_clock_ms: journal.clock_ms,
    }
}

/// `PUT /admin/v1/settings`: on the leader, commit a new dedupe window. Refused when it is
/// not longer than this node's write timeout (a client retrying a timed-out write must still
/// find its id). Answers once the entry is committed and applied here.
pub async fn set_dedupe_window(
    node: &Node,
    window_ms: u64,
) -> Result<ClusterSettings, MembershipError> {
    let write_timeout_ms = millis(node.cfg.write_timeout);
    if window_ms <= write_timeout_ms {
        return Err(MembershipError::Refused(format!(
            "a dedupe window of {window_ms} ms is not longer than --write-timeout-ms \
             ({write_timeout_ms} ms): a client that retries a write which timed out must still \
             find its id remembered"
        )));
    }
    let _turn = deadline(node.proposals.read()).await?;
    require_leader(node)?;
    // No operations and no clock reading (0 never moves the clock): only the window changes.
    let proposal = Proposal {
        operations: Vec::new(),
        clock_ms: 0,
        initial_window_ms: window_ms,
        set_window_ms: Some(window_ms),
    };
    let resp = deadline(node.raft.client_write(Arc::new(proposal)))
        .await?
        .map_err(write_error)?;
    let index = resp.log_id.index;
    if !deadline(node.applied_through(index)).await? {
        return Err(MembershipError::Internal("Raft has stopped".into()));
    }
    Ok(current(node))
}
