//! Leases in memory: for one process (the CLI's one-shot `replicate-backups`, tests).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::ports::{Leases, PortError};

/// Leases in memory (one process).
#[derive(Debug, Default)]
pub struct MemoryLeases {
    /// key → (holder, until).
    pub held: Mutex<BTreeMap<String, (String, i64)>>,
}

#[async_trait]
impl Leases for MemoryLeases {
    async fn claim(&self, key: &str, holder: &str, now: i64, until: i64) -> Result<bool, PortError> {
        let mut held = self.held.lock().expect("lease lock");
        match held.get(key) {
            Some((h, u)) if *u > now && h != holder => Ok(false),
            _ => {
                held.insert(key.to_string(), (holder.to_string(), until));
                Ok(true)
            }
        }
    }

    async fn release(&self, key: &str, holder: &str) -> Result<(), PortError> {
        let mut held = self.held.lock().expect("lease lock");
        if held.get(key).is_some_and(|(h, _)| h == holder) {
            held.remove(key);
        }
        Ok(())
    }
}
