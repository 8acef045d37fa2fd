//! raft-operator: reconciles `RaftCluster` resources into running consensus clusters.
//!
//! Layout follows the data flow: [`resources`] builds the owned objects, [`reconcile`] runs the
//! observe → plan → apply → status pipeline, [`controller`] wires it to the API server's watch
//! streams, [`metrics`] exposes what it sees.

pub mod reconcile;
pub mod resources;
