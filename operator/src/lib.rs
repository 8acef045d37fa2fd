//! raft-operator: reconciles `RaftCluster` resources into running consensus clusters.
//!
//! Layout follows the data flow: [`resources`] builds the owned objects, [`reconcile`] runs the
//! observe → plan → apply → status pipeline, [`controller`] wires it to the API server's watch
//! streams, [`metrics`] exposes what it sees, [`backup`] runs scheduled backups beside the
//! pipeline, [`api_client`] puts a deadline on every API call. The operator links neither
//! RocksDB nor openraft: it talks to sidecars through `raft-api`'s client.

pub mod api_client;
pub mod backup;
pub mod config;
pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod resources;
