//! RDS and Aurora snapshot exports to Parquet (`StartExportTask`): the task's status, how
//! often to look at a running task, what AWS's info files say (read case-insensitively,
//! unknown fields ignored), where each data file belongs, and the manifest bunker writes
//! beside a verified export.
//!
//! AWS's layout under the export's `S3Prefix` (RDS user guide, "Exporting DB snapshot data
//! to Amazon S3"): `<task id>/export_info_<task id>.json`,
//! `<task id>/export_tables_info_<task id>_from_<a>_to_<b>.json` (one or more, each with
//! `perTableStatus[]`), and the data as `<task id>/<database>/<schema.table>/…/part-….parquet`.
//! The info files are not documented by AWS; bunker treats them as advisory for table
//! failures and the Parquet listing as the authority for what was exported.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::archive::Source;

/// `format` of a Parquet (RDS / Aurora) export's manifest.
pub const PARQUET_FORMAT: &str = "bunker-parquet-export";
/// `format` of a DynamoDB export's (`ExportTableToPointInTime`) manifest.
pub const DYNAMODB_FORMAT: &str = "bunker-dynamodb-export";
/// The version of both.
pub const FORMAT_VERSION: u32 = 1;
/// Concurrent export tasks AWS allows per account and region.
pub const QUOTA: usize = 5;

/// An export task's status (AWS spells it `STARTING`, `IN_PROGRESS`, `COMPLETE`, …; filters
/// take lowercase; read case-insensitively, an unknown value kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    /// Accepted, not yet writing.
    Starting,
    /// Writing.
    InProgress,
    /// Finished; its files are in S3.
    Complete,
    /// Ended without a usable export.
    Failed,
    /// Being cancelled.
    Canceling,
    /// Cancelled.
    Canceled,
    /// A status this version does not know.
    Other(String),
}

impl TaskStatus {
    /// Reads AWS's spelling, case-insensitively.
    pub fn parse(v: &str) -> TaskStatus {
        match v.to_ascii_uppercase().replace([' ', '-'], "_").as_str() {
            "STARTING" => TaskStatus::Starting,
            "IN_PROGRESS" | "INPROGRESS" => TaskStatus::InProgress,
            "COMPLETE" | "COMPLETED" => TaskStatus::Complete,
            "FAILED" => TaskStatus::Failed,
            "CANCELING" | "CANCELLING" => TaskStatus::Canceling,
            "CANCELED" | "CANCELLED" => TaskStatus::Canceled,
            _ => TaskStatus::Other(v.to_string()),
        }
    }

    /// Whether the task still counts against the quota.
    pub fn running(&self) -> bool {
        matches!(self, TaskStatus::Starting | TaskStatus::InProgress | TaskStatus::Canceling)
    }
}

/// How long to wait before looking at a running task again, after `polls` looks: `first`
/// (`export.task_poll`, one minute by default), doubling, at most 15 times `first` (an export
/// takes minutes to hours; a fixed 30 minutes wastes most of a short one).
pub fn poll_after(first: Duration, polls: u32) -> Duration {
    (first * (1u32 << polls.min(4))).min(first * 15)
}

/// One entry of `perTableStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStatus {
    /// `database.schema.table`, or a database name (database-level entries).
    pub target: String,
    /// As reported (`COMPLETE`, `FAILED`, …).
    pub status: String,
    /// AWS's warning or failure text, if any.
    pub warning: Option<String>,
}

impl TableStatus {
    /// Whether this is a table (not a database-level entry).
    pub fn is_table(&self) -> bool {
        self.target.contains('.')
    }

    /// Whether the table was exported.
    pub fn complete(&self) -> bool {
        TaskStatus::parse(&self.status) == TaskStatus::Complete
    }
}

/// An info file bunker cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {why}")]
pub struct InfoError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub why: String,
}

/// `object[name]`, the key compared case-insensitively.
pub(crate) fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

pub(crate) fn text(v: &Value, name: &str) -> Option<String> {
    field(v, name).and_then(Value::as_str).map(String::from)
}

pub(crate) fn parse(file: &str, bytes: &[u8]) -> Result<Value, InfoError> {
    serde_json::from_slice(bytes).map_err(|e| InfoError { file: file.into(), why: format!("not JSON: {e}") })
}

/// The `status` of `export_info_<task>.json`.
pub fn info_status(file: &str, bytes: &[u8]) -> Result<TaskStatus, InfoError> {
    let v = parse(file, bytes)?;
    text(&v, "status")
        .map(|s| TaskStatus::parse(&s))
        .ok_or_else(|| InfoError { file: file.into(), why: "no status".into() })
}

/// The `perTableStatus` entries of one `export_tables_info_*.json` file.
pub fn table_statuses(file: &str, bytes: &[u8]) -> Result<Vec<TableStatus>, InfoError> {
    let v = parse(file, bytes)?;
    let entries = field(&v, "perTableStatus")
        .and_then(Value::as_array)
        .ok_or_else(|| InfoError { file: file.into(), why: "no perTableStatus list".into() })?;
    entries
        .iter()
        .map(|e| {
            let target = text(e, "target")
                .ok_or_else(|| InfoError { file: file.into(), why: "an entry without target".into() })?;
            let warning = text(e, "warningMessage").or_else(|| text(e, "failureCause"));
            Ok(TableStatus { status: text(e, "status").unwrap_or_default(), target, warning })
        })
        .collect()
}

/// What one object under an export's prefix is, from its key relative to the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportFile {
    /// `export_info_<task>.json`.
    Info,
    /// `export_tables_info_<task>_from_<a>_to_<b>.json`.
    TablesInfo,
    /// A Parquet data file of table `database.schema.table`.
    Data(String),
    /// Anything else inside a table's folder (markers such as `_SUCCESS`), of that table.
    Other(String),
    /// Anything else at the top.
    Unknown,
}

/// Classifies `relative` (a key below `<task id>/`) of task `task`.
pub fn classify(task: &str, relative: &str) -> ExportFile {
    let parts: Vec<&str> = relative.split('/').collect();
    match parts.as_slice() {
        [one] if *one == format!("export_info_{task}.json") => ExportFile::Info,
        [one] if one.starts_with(&format!("export_tables_info_{task}_")) && one.ends_with(".json") => {
            ExportFile::TablesInfo
        }
        [db, table, .., last] if !db.is_empty() && table.contains('.') => {
            let target = format!("{db}.{table}");
            if last.ends_with(".parquet") {
                ExportFile::Data(target)
            } else {
                ExportFile::Other(target)
            }
        }
        _ => ExportFile::Unknown,
    }
}

/// One exported table, as the Parquet footers report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedTable {
    /// `database.schema.table`.
    pub name: String,
    /// Rows over all its data files.
    pub rows: u64,
    /// Its data files.
    pub files: u32,
}

/// One object of the export, as S3 listed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedObject {
    /// Key relative to the export target.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// S3's ETag (quotes removed): the MD5 of a single-part object without SSE-KMS.
    pub etag: Option<String>,
    /// Rows, for a Parquet data file (from its footer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// The manifest bunker writes beside an export AWS made and bunker verified: a Parquet
/// export ([`PARQUET_FORMAT`], `<task id>.manifest.json` next to the `<task id>/` folder RDS
/// wrote) or a DynamoDB export ([`DYNAMODB_FORMAT`], `<table>-<backup id>.manifest.json`
/// next to the `<table>-<backup id>.dynamodb-export/` prefix DynamoDB wrote under).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceManifest {
    /// [`PARQUET_FORMAT`] or [`DYNAMODB_FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// `bunker <version>`.
    pub tool: String,
    /// When it was verified (RFC 3339).
    pub created_at: String,
    /// The snapshot exported, and its recovery point.
    pub source: Source,
    /// The database engine (`postgres`, `aurora-mysql`, …), when AWS said.
    pub engine: Option<String>,
    /// The export task's identifier (RDS) or the export's ARN (DynamoDB).
    pub export_task: String,
    /// Where the export's objects are, relative to the target.
    pub prefix: String,
    /// Every exported table, by name (rows: items, for DynamoDB).
    pub tables: Vec<ExportedTable>,
    /// Every object under the prefix, by key.
    pub objects: Vec<ExportedObject>,
}

impl ServiceManifest {
    /// The format of the manifest in `bytes`, if it is one of these (not an archive's).
    pub fn format_of(bytes: &[u8]) -> Option<&'static str> {
        let v = serde_json::from_slice::<Value>(bytes).ok()?;
        let format = field(&v, "format").and_then(Value::as_str)?;
        [PARQUET_FORMAT, DYNAMODB_FORMAT].into_iter().find(|f| *f == format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_case_insensitively_and_unknown_ones_kept() {
        assert_eq!(TaskStatus::parse("complete"), TaskStatus::Complete);
        assert_eq!(TaskStatus::parse("COMPLETE"), TaskStatus::Complete);
        assert_eq!(TaskStatus::parse("in_progress"), TaskStatus::InProgress);
        assert_eq!(TaskStatus::parse("In-Progress"), TaskStatus::InProgress);
        assert_eq!(TaskStatus::parse("PAUSED"), TaskStatus::Other("PAUSED".into()));
        assert!(TaskStatus::Starting.running() && !TaskStatus::Failed.running());
    }

    #[test]
    fn polls_back_off_from_one_to_fifteen_minutes() {
        let waits: Vec<u64> = (0..7).map(|n| poll_after(Duration::from_secs(60), n).as_secs()).collect();
        assert_eq!(waits, vec![60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(poll_after(Duration::from_secs(2), 9), Duration::from_secs(30));
    }

    #[test]
    fn table_info_is_read_whatever_the_key_casing_and_extra_fields() {
        let a = br#"{"perTableStatus":[{"TableStatistics":{"extractedRows":3},"target":"db.public.a","status":"COMPLETE","sizeGB":0.1},
            {"target":"db","warningMessage":"some tables skipped"}]}"#;
        let b = br#"{"PerTableStatus":[{"Target":"db.public.b","Status":"failed","WarningMessage":"LOB too large"}],"extra":1}"#;
        let a = table_statuses("a.json", a).unwrap();
        let b = table_statuses("b.json", b).unwrap();
        assert_eq!(a.len(), 2);
        assert!(a[0].is_table() && a[0].complete());
        assert!(!a[1].is_table());
        assert_eq!(b[0].target, "db.public.b");
        assert!(!b[0].complete());
        assert_eq!(b[0].warning.as_deref(), Some("LOB too large"));
        let e = table_statuses("c.json", b"{}").unwrap_err();
        assert_eq!(e.to_string(), "c.json: no perTableStatus list");
        assert_eq!(info_status("i.json", br#"{"Status":"complete","x":[]}"#).unwrap(), TaskStatus::Complete);
    }

    #[test]
    fn objects_are_classified_by_place() {
        let t = "bunker-x";
        assert_eq!(classify(t, "export_info_bunker-x.json"), ExportFile::Info);
        assert_eq!(classify(t, "export_tables_info_bunker-x_from_1_to_2.json"), ExportFile::TablesInfo);
        assert_eq!(
            classify(t, "appdb/public.orders/2/part-00002-u-c000.gz.parquet"),
            ExportFile::Data("appdb.public.orders".into())
        );
        // The older naming, without the batch folder.
        assert_eq!(classify(t, "appdb/public.a/part-00000-u.gz.parquet"), ExportFile::Data("appdb.public.a".into()));
        assert_eq!(classify(t, "appdb/public.a/1/_SUCCESS"), ExportFile::Other("appdb.public.a".into()));
        assert_eq!(classify(t, "export_info_other.json"), ExportFile::Unknown);
    }
}
