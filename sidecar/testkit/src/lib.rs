//! Test support for raft-sidecar, shared by its cluster tests, the example daemon's tests,
//! `raft-sidecar dev` and `raft-bench`: [`local_cluster`] starts real `raft-sidecar run`
//! processes on loopback (the binary is given by path; this crate does not link the sidecar),
//! [`wait`] holds the polling helpers with a deadline, and [`modules`] reads a crate's
//! module graph so each crate's architecture test can refuse import cycles.

pub mod local_cluster;
pub mod modules;
pub mod wait;
