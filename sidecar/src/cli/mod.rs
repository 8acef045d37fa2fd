//! The subcommands behind `main`: `run` (one node), `dev` (a local cluster), `ctl` (a client).

pub mod ctl;
pub mod dev;
pub mod run;
