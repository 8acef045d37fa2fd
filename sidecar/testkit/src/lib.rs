//! Test support for raft-sidecar, shared by its cluster tests, the example daemon's tests,
//! `raft-sidecar dev` and `raft-bench`: [`local_cluster`] starts real `raft-sidecar run`
//! processes on loopback (the binary is given by path; this crate does not link the sidecar),
//! [`pki`] keeps the throwaway CA those clusters use for mutual TLS,
//! [`wait`] holds the polling helpers with a deadline, and [`modules`] reads a crate's
//! module graph so each crate's architecture test can refuse import cycles. With the
//! `volatile-fs` feature, [`volatile_fs`] mounts a FUSE filesystem that loses unsynced writes
//! at a simulated power cut.

pub mod local_cluster;
pub mod modules;
pub mod pki;
pub mod s3;
#[cfg(feature = "volatile-fs")]
pub mod volatile_fs;
pub mod wait;
