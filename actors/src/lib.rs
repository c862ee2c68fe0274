//! bunker's behaviour: actors whose logic lives in plain structs over the domain [`ports`],
//! each with a thin actix shell.
//!
//! **Invariant:** this crate never names an AWS SDK crate; it reaches AWS only through
//! [`ports`].

pub mod ports;
pub mod runner;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use runner::{Runner, RunnerActor};
