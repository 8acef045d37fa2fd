//! `kubectl raft`: a kubectl plugin for `RaftCluster` resources (`consensus.unrdf.io/v1alpha1`).
//!
//! - [`cli`]: the command line (clap) and what each command does against the API server;
//! - [`status`]: a RaftCluster's status as readable text (pure: status in, lines out);
//! - [`logs`]: the sidecar logs of every member merged into one timeline (pure merge);
//! - [`restore`]: a new RaftCluster from an old one's backup (pure: old spec in, new out).
//!
//! kubectl runs any `kubectl-<name>` binary on `$PATH` as `kubectl <name>`; the plugin reads the
//! same kubeconfig (`$KUBECONFIG`, its current context and namespace) as kubectl does.

pub mod cli;
pub mod logs;
pub mod restore;
pub mod status;
