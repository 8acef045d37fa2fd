//! The reconcile pipeline for one `RaftCluster`: observe → plan → apply → status.
//! `plan` and the condition logic in `status` are pure; `observe` and `apply` do the I/O.

pub mod model;
pub mod plan;
