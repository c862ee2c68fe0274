//! bunker's behaviour: actors whose logic lives in plain structs over the domain [`ports`],
//! each with a thin actix shell.
//!
//! **Invariant:** this crate never names an AWS SDK crate; it reaches AWS only through
//! [`ports`].

pub mod ddb_export;
pub mod dump;
pub mod engine;
pub mod guard;
pub mod health;
pub mod leases;
pub mod metrics;
pub mod outcomes;
pub mod ports;
pub mod puller;
pub mod rds_export;
pub mod replicator;
pub mod retry;
pub mod runner;
pub mod scheduler;
pub mod stream;
pub mod system;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod vault_export;
pub mod volume_files;
pub mod watcher;

pub use runner::{Runner, RunnerActor};
