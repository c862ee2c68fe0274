//! bunker's vocabulary: resource kinds, backup records, tags, the configuration schema,
//! backup naming, the retention planner and the run report.
//!
//! **Invariant:** nothing in this crate does I/O or is async. Every function is a pure
//! function of its arguments (time comes in as a [`jiff::Timestamp`] argument, never from
//! the host clock or the host time zone), so the planner can be property-tested and
//! benchmarked in isolation.

pub mod archive;
pub mod backup;
pub mod bus;
pub mod catalog;
pub mod config;
pub mod cron;
pub mod ddb_export;
pub mod doctor;
pub mod dump;
pub mod dump_plan;
pub mod events;
pub mod file_restore;
pub mod job;
pub mod kind;
pub mod naming;
pub mod rds_export;
pub mod replication;
pub mod report;
pub mod retention;
pub mod roles;
pub mod tags;
pub mod vault;
pub mod volume_plan;

pub use backup::{Backup, Owner};
pub use kind::ResourceKind;
pub use retention::RetentionType;
