//! DynamoDB exports to S3 (`ExportTableToPointInTime`, `export.dynamodb_mode = "pitr"`): what
//! AWS's manifests say, read case-insensitively with unknown fields ignored, and where each
//! named object is relative to the export target.
//!
//! AWS's layout (DynamoDB developer guide, "DynamoDB table export output format"): under the
//! request's `S3Prefix`, `AWSDynamoDB/<ExportId>/manifest-summary.json` (`itemCount`,
//! `manifestFilesS3Key`, `outputFormat`, …), `manifest-files.json` (JSON lines, one per data
//! file: `itemCount`, `md5Checksum` (base64 MD5), `etag`, `dataFileS3Key`) and
//! `data/<random>.json.gz`; empty partitions leave files with no item.

use crate::rds_export::{field, parse, text, InfoError};

/// What `manifest-summary.json` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `exportArn`.
    pub export_arn: Option<String>,
    /// `itemCount`.
    pub items: u64,
    /// `manifestFilesS3Key`: the key of `manifest-files.json` in the bucket.
    pub files_key: String,
    /// `outputFormat` (`DYNAMODB_JSON` or `ION`).
    pub format: String,
}

/// One line of `manifest-files.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// `dataFileS3Key`: the key in the bucket (AWS's own example leaves the `S3Prefix` out).
    pub key: String,
    /// `itemCount`.
    pub items: u64,
    /// `md5Checksum`: base64 MD5 of the object.
    pub md5: String,
}

fn count(v: &serde_json::Value, name: &str) -> Option<u64> {
    let f = field(v, name)?;
    f.as_u64().or_else(|| f.as_str()?.parse().ok())
}

fn missing(file: &str, what: &str) -> InfoError {
    InfoError { file: file.into(), why: format!("no {what}") }
}

/// Reads `manifest-summary.json`.
pub fn summary(file: &str, bytes: &[u8]) -> Result<Summary, InfoError> {
    let v = parse(file, bytes)?;
    Ok(Summary {
        export_arn: text(&v, "exportArn"),
        items: count(&v, "itemCount").ok_or_else(|| missing(file, "itemCount"))?,
        files_key: text(&v, "manifestFilesS3Key").ok_or_else(|| missing(file, "manifestFilesS3Key"))?,
        format: text(&v, "outputFormat").unwrap_or_else(|| "DYNAMODB_JSON".into()),
    })
}

/// Reads `manifest-files.json` (JSON lines; blank lines skipped).
pub fn data_files(file: &str, bytes: &[u8]) -> Result<Vec<DataFile>, InfoError> {
    let text_of =
        std::str::from_utf8(bytes).map_err(|e| InfoError { file: file.into(), why: format!("not UTF-8: {e}") })?;
    text_of
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            let at = format!("{file} line {}", n + 1);
            let v = parse(&at, line.as_bytes())?;
            Ok(DataFile {
                key: text(&v, "dataFileS3Key").ok_or_else(|| missing(&at, "dataFileS3Key"))?,
                items: count(&v, "itemCount").ok_or_else(|| missing(&at, "itemCount"))?,
                md5: text(&v, "md5Checksum").ok_or_else(|| missing(&at, "md5Checksum"))?,
            })
        })
        .collect()
}

/// The key, relative to an export target at bucket prefix `target`, of `key` as an AWS
/// manifest names it: a whole bucket key under `target`, or (as AWS's example shows) a key
/// that leaves out the export's `S3Prefix`, which `export` (relative to the target) restores.
pub fn relative_key(key: &str, target: &str, export: &str) -> String {
    let target = target.trim_matches('/');
    let export = export.trim_matches('/');
    if let Some(rest) = key.strip_prefix(target).and_then(|r| r.strip_prefix('/')).filter(|_| !target.is_empty()) {
        return rest.to_string();
    }
    if target.is_empty() && key.starts_with(&format!("{export}/")) {
        return key.to_string();
    }
    format!("{export}/{}", key.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_read_whatever_the_casing_with_counts_as_numbers_or_strings() {
        let s = br#"{"version":"2020-06-30","ExportArn":"arn:x","itemCount":"12","manifestFilesS3Key":"p/AWSDynamoDB/1/manifest-files.json","outputFormat":"DYNAMODB_JSON","extra":{}}"#;
        let s = summary("s.json", s).unwrap();
        assert_eq!(
            (s.items, s.files_key.as_str(), s.export_arn.as_deref()),
            (12, "p/AWSDynamoDB/1/manifest-files.json", Some("arn:x"))
        );
        let f = b"{\"itemCount\":5,\"md5Checksum\":\"q1w2\",\"etag\":\"e-1\",\"dataFileS3Key\":\"AWSDynamoDB/1/data/a.json.gz\"}\n\n{\"ItemCount\":0,\"MD5Checksum\":\"z\",\"DataFileS3Key\":\"k\"}\n";
        let f = data_files("f.json", f).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].items, f[0].md5.as_str()), (5, "q1w2"));
        assert_eq!(f[1].key, "k");
        let e = data_files("f.json", b"{\"itemCount\":1}\n").unwrap_err();
        assert_eq!(e.to_string(), "f.json line 1: no dataFileS3Key");
        assert!(summary("s.json", b"{}").is_err());
    }

    #[test]
    fn keys_are_found_with_or_without_the_export_prefix() {
        let (target, export) = ("arch/recovery-points/V", "t-1.dynamodb-export");
        let full = "arch/recovery-points/V/t-1.dynamodb-export/AWSDynamoDB/9/data/a.json.gz";
        assert_eq!(relative_key(full, target, export), "t-1.dynamodb-export/AWSDynamoDB/9/data/a.json.gz");
        assert_eq!(
            relative_key("AWSDynamoDB/9/data/a.json.gz", target, export),
            "t-1.dynamodb-export/AWSDynamoDB/9/data/a.json.gz"
        );
        assert_eq!(
            relative_key("t-1.dynamodb-export/AWSDynamoDB/9/x", "", export),
            "t-1.dynamodb-export/AWSDynamoDB/9/x"
        );
    }
}
