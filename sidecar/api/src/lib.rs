//! Wire types of the raft-sidecar's two HTTP APIs: the daemon API (loopback, `/v1/…`) and the
//! admin API (`/admin/v1/…`). They are shared by the sidecar (which serves them), its `ctl`
//! client, the operator and the test harnesses, so none of those link openraft or RocksDB.
//!
//! JSON field names are camelCase, exactly as docs/sidecar.md ("Daemon API", "Admin API")
//! documents them.

pub mod admin;
pub mod backup;
pub mod daemon;
pub mod error;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};

#[cfg(feature = "client")]
pub mod client;
