//! In-memory fakes of the ports, for fast tests of actor logic (in addition to the emulator
//! tests, never instead of them). Enabled for other crates with the `testkit` feature.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use bunker_protocol::backup::Backup;
use bunker_protocol::ResourceKind;

use crate::ports::{BackupControl, CreateRequest, Created, ErrorKind, ListedBackup, Notifier, PortError, Resource};

/// What a [`FakeControl`] holds.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Resources by id.
    pub resources: BTreeMap<String, Resource>,
    /// Backups by id.
    pub backups: BTreeMap<String, ListedBackup>,
    /// Resource ids whose create fails.
    pub fail_create: BTreeSet<String>,
    /// Counter for ids.
    pub next: u64,
}

/// An in-memory region of one kind.
#[derive(Debug)]
pub struct FakeControl {
    kind: ResourceKind,
    region: String,
    /// The state, for tests to seed and inspect.
    pub state: Mutex<FakeState>,
}

impl FakeControl {
    /// An empty region.
    pub fn new(kind: ResourceKind, region: &str) -> Self {
        FakeControl { kind, region: region.into(), state: Mutex::new(FakeState::default()) }
    }

    /// Adds a resource with tags.
    pub fn add_resource(&self, id: &str, tags: &[(&str, &str)]) {
        let tags = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.state.lock().unwrap().resources.insert(id.into(), Resource { id: id.into(), tags, not_ready: None });
    }

    /// Ids of the backups that exist.
    pub fn backup_ids(&self) -> Vec<String> {
        self.state.lock().unwrap().backups.keys().cloned().collect()
    }
}

#[async_trait]
impl BackupControl for FakeControl {
    fn kind(&self) -> ResourceKind {
        self.kind
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn list_resources(&self) -> Result<Vec<Resource>, PortError> {
        Ok(self.state.lock().unwrap().resources.values().cloned().collect())
    }

    async fn create_backup(&self, request: &CreateRequest) -> Result<Created, PortError> {
        let mut s = self.state.lock().unwrap();
        if s.fail_create.contains(&request.resource.id) {
            return Err(PortError::new(ErrorKind::Invalid, Some("InvalidState"), "injected failure"));
        }
        s.next += 1;
        let id = format!("snap-{:08}", s.next);
        s.backups.insert(
            id.clone(),
            ListedBackup { id: id.clone(), tags: request.tags.clone(), available: true, parts: vec![] },
        );
        Ok(Created { id, note: None })
    }

    async fn list_backups(&self, _shelvery: bool) -> Result<Vec<ListedBackup>, PortError> {
        Ok(self.state.lock().unwrap().backups.values().cloned().collect())
    }

    async fn delete_backup(&self, backup: &Backup) -> Result<(), PortError> {
        match self.state.lock().unwrap().backups.remove(&backup.id) {
            Some(_) => Ok(()),
            None => Err(PortError::new(ErrorKind::NotFound, Some("InvalidSnapshot.NotFound"), backup.id.clone())),
        }
    }
}

/// Records every publish.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    /// (topic, subject, message) in order.
    pub published: Mutex<Vec<(String, String, String)>>,
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn publish(&self, topic_arn: &str, subject: &str, message: &str) -> Result<(), PortError> {
        self.published.lock().unwrap().push((topic_arn.into(), subject.into(), message.into()));
        Ok(())
    }
}
