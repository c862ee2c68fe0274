//! The `bunker` binary's library: CLI, configuration loading, wiring, and the AWS adapters.
//!
//! **Invariant:** `src/aws/` is the only place an AWS SDK crate is named.

pub mod archive_cli;
pub mod aws;
pub mod cli;
pub mod disk;
pub mod doctor;
pub mod dump_cli;
mod ebs_files;
pub mod exit;
mod ext4_tar;
mod fat_tar;
pub mod files;
mod fs_tar;
pub mod leases;
pub mod local;
pub mod lvm;
pub mod mounted;
pub mod serve;
pub mod services;
pub mod settings;
pub mod tree_restore;
pub mod vault_cli;
