//! The Raft node: openraft wiring and the safety gaps of openraft 0.9 we cover ourselves
//! (batching, quorum-gated writes with deadlines, split-vote watchdog, removed-node shutdown,
//! deadlines around membership calls).

mod bootstrap;
pub mod membership;
mod monitor;
pub mod node;
pub mod submit;
pub mod types;
pub mod write;
