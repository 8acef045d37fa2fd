//! The Raft node: openraft wiring and the safety gaps of openraft 0.9 we cover ourselves
//! (batching, quorum-gated writes with deadlines, split-vote watchdog, removed-node shutdown,
//! deadlines around membership calls).
//!
//! Dependencies point one way: `launch` starts a node and its tasks (`peer`, `monitor`,
//! `bootstrap`, `batch`); those and the write path (`submit`) and `membership` borrow the
//! shared `node`; the decisions they act on are pure functions in `health` and `events`.

mod batch;
mod bootstrap;
mod clock;
pub mod events;
pub mod handoff;
pub mod health;
pub mod launch;
pub mod membership;
mod monitor;
pub mod node;
mod peer;
pub mod read;
pub mod settings;
pub mod submit;
pub mod timeline;
