//! In-memory fakes of the ports, for fast tests of actor logic (in addition to the emulator
//! tests, never instead of them). Enabled for other crates with the `testkit` feature.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use bunker_protocol::backup::Backup;
use bunker_protocol::tags::Tags;
use bunker_protocol::ResourceKind;

use crate::ports::{
    BackupControl, BackupDetail, CopyRequest, CreateRequest, Created, ErrorKind, ListedBackup, Notifier, PortError,
    Pull, Replication, Resource, SharedBackup,
};

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
    /// Backup id → accounts it is shared with.
    pub shared: BTreeMap<String, Vec<String>>,
    /// Copy calls still to fail with a quota error.
    pub copy_quota_failures: u32,
    /// Panic in the next copy call (supervision tests).
    pub panic_on_copy: bool,
    /// Copy calls made.
    pub copy_calls: u32,
    /// How long each copy call takes.
    pub copy_delay: std::time::Duration,
    /// Backups other accounts shared with this one (what `list_shared` finds).
    pub shared_in: Vec<SharedBackup>,
    /// Looks do not report shares (as RDS): `shared_with` reads them one backup at a time.
    pub looks_hide_shares: bool,
    /// `shared_with` calls made.
    pub share_reads: u32,
}

impl FakeState {
    /// A new available backup with `tags`; returns its id.
    fn add_backup(&mut self, tags: &Tags) -> String {
        self.next += 1;
        let id = format!("snap-{:08}", self.next);
        let listed =
            ListedBackup { id: id.clone(), tags: tags.clone(), available: true, aws_created_at: None, parts: vec![] };
        self.backups.insert(id.clone(), listed);
        id
    }
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
        let id = s.add_backup(&request.tags);
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

#[async_trait]
impl Replication for FakeControl {
    async fn describe_backup(&self, id: &str) -> Result<Option<BackupDetail>, PortError> {
        let s = self.state.lock().unwrap();
        Ok(s.backups.get(id).map(|b| detail(&s, b)))
    }

    async fn find_copy(&self, tag: &str, value: &str, _name: &str) -> Result<Option<BackupDetail>, PortError> {
        let s = self.state.lock().unwrap();
        let found = s.backups.values().find(|b| b.tags.get(tag).map(String::as_str) == Some(value));
        Ok(found.map(|b| detail(&s, b)))
    }

    async fn copy_backup(&self, request: &CopyRequest) -> Result<String, PortError> {
        let delay = self.state.lock().unwrap().copy_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut s = self.state.lock().unwrap();
        s.copy_calls += 1;
        if s.panic_on_copy {
            s.panic_on_copy = false;
            drop(s);
            panic!("injected panic in copy_backup");
        }
        if s.copy_quota_failures > 0 {
            s.copy_quota_failures -= 1;
            return Err(PortError::new(ErrorKind::Quota, Some("ResourceLimitExceeded"), "injected quota"));
        }
        let id = s.add_backup(&request.tags);
        Ok(id)
    }

    async fn share_backup(&self, backup: &BackupDetail, account: &str) -> Result<(), PortError> {
        let id = backup.id.as_str();
        let mut s = self.state.lock().unwrap();
        if !s.backups.contains_key(id) {
            return Err(PortError::new(ErrorKind::NotFound, Some("InvalidSnapshot.NotFound"), id.to_string()));
        }
        let list = s.shared.entry(id.to_string()).or_default();
        if !list.iter().any(|a| a == account) {
            list.push(account.to_string());
        }
        Ok(())
    }

    fn looks_report_shares(&self) -> bool {
        !self.state.lock().unwrap().looks_hide_shares
    }

    async fn shared_with(&self, id: &str) -> Result<Vec<String>, PortError> {
        let mut s = self.state.lock().unwrap();
        s.share_reads += 1;
        Ok(s.shared.get(id).cloned().unwrap_or_default())
    }
}

#[async_trait]
impl Pull for FakeControl {
    async fn list_shared(&self, accounts: &[String]) -> Result<Vec<SharedBackup>, PortError> {
        let s = self.state.lock().unwrap();
        Ok(s.shared_in.iter().filter(|b| accounts.contains(&b.account)).cloned().collect())
    }
}

fn detail(s: &FakeState, b: &ListedBackup) -> BackupDetail {
    BackupDetail {
        id: b.id.clone(),
        tags: b.tags.clone(),
        available: b.available,
        shared_with: if s.looks_hide_shares { vec![] } else { s.shared.get(&b.id).cloned().unwrap_or_default() },
        encrypted: b.tags.contains_key("test:kms_key"),
        kms_key: b.tags.get("test:kms_key").cloned(),
        parts: vec![],
    }
}

pub use crate::leases::MemoryLeases;

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
