//! Journal reads shared by the page (`GET /v1/journal`) and the watch
//! (`GET /v1/journal/watch`): the record as the API shows it, and the `410 COMPACTED` refusal.

use raft_api::ErrorCode;
use raft_api::daemon::{JournalEntry, Operation};

use super::error::ApiError;
use crate::journal::JournalRecord;

/// A journal record as the API shows it.
pub fn journal_entry(index: u64, record: JournalRecord) -> Result<JournalEntry, ApiError> {
    let op = record.operation;
    let payload = match op.payload {
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            ApiError::internal(format!(
                "journal entry {index} holds an undecodable payload: {e}"
            ))
        })?),
        None => None,
    };
    Ok(JournalEntry {
        log_index: index,
        term: record.term,
        operation: Operation {
            id: op.id,
            op_type: op.op_type,
            payload,
            daemon_id: op.daemon_id,
            timestamp: op.timestamp,
        },
    })
}

/// Reject a `from` below the oldest retained index with 410 COMPACTED.
pub fn check_compacted(from: u64, first_index: u64) -> Result<(), ApiError> {
    if from.max(1) < first_index {
        return Err(compacted(from, first_index));
    }
    Ok(())
}

/// `410 COMPACTED`: `from` is below the journal's first retained index.
pub fn compacted(from: u64, first_index: u64) -> ApiError {
    let mut err = ApiError::new(
        ErrorCode::Compacted,
        format!(
            "index {from} was compacted; the journal starts at {first_index}: resynchronise and resume from there"
        ),
    );
    err.0.error.first_index = Some(first_index);
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_below_the_first_index_is_compacted() {
        assert!(check_compacted(0, 1).is_ok());
        assert!(check_compacted(1, 1).is_ok());
        assert!(check_compacted(5, 3).is_ok());
        let err = check_compacted(2, 3).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Compacted);
        assert_eq!(err.0.error.first_index, Some(3));
    }
}
