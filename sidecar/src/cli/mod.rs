//! The subcommands behind `main`: `run` (one node), `dev` (a local cluster), `ctl` (a client),
//! `restore` (a data dir from a backup), `recover` (a survivor of a lost majority).

pub mod ctl;
pub mod dev;
pub mod recover;
pub mod restore;
pub mod run;
