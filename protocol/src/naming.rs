//! Backup names: unique to the second plus a short hash of the source id, and valid for
//! every kind's identifier rules at once (RDS / DocumentDB / Redshift snapshot identifiers:
//! 1–63 characters, first a letter, only letters, digits and hyphens, no two consecutive
//! hyphens, no trailing hyphen; AMI names are a superset).

use jiff::Timestamp;

/// The longest name any kind accepts (DB cluster snapshot identifiers).
pub const MAX_LEN: usize = 63;

/// `<base>-<yyyymmdd>-<hhmmss>-<retention>-<hash6>`, e.g.
/// `data-vol-20261121-010000-daily-3f2a9c`. `base` is the source's `Name` tag, else its id.
pub fn backup_name(source_id: &str, source_name: Option<&str>, created_at: Timestamp, retention: &str) -> String {
    let stamp = created_at.to_zoned(jiff::tz::TimeZone::UTC).strftime("%Y%m%d-%H%M%S").to_string();
    let mut retention = sanitize(retention);
    retention.truncate(16);
    let mut retention = retention.trim_end_matches('-').to_string();
    if retention.is_empty() {
        retention = "custom".into();
    }
    let hash = format!("{:06x}", fnv1a(source_id.as_bytes()) & 0xff_ffff);
    let fixed = 1 + stamp.len() + 1 + retention.len() + 1 + hash.len();
    let mut base = sanitize(source_name.filter(|n| !sanitize(n).is_empty()).unwrap_or(source_id));
    if base.is_empty() {
        base = "backup".into();
    }
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base.insert_str(0, "b-");
    }
    base.truncate(MAX_LEN - fixed);
    let base = base.trim_end_matches('-');
    format!("{base}-{stamp}-{retention}-{hash}")
}

/// Lowercase; anything but `[a-z0-9]` becomes one hyphen; no leading/trailing hyphen.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Whether `name` satisfies the RDS-style identifier rules above.
pub fn is_valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LEN
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.ends_with('-')
        && !name.contains("--")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        let t: Timestamp = "2026-11-21T01:00:00Z".parse().unwrap();
        let n = backup_name("vol-0abc", Some("Data Vol #1"), t, "daily");
        assert!(n.starts_with("data-vol-1-20261121-010000-daily-"), "{n}");
        let n = backup_name("db1", Some("42 ünïcode__name"), t, "hourly");
        assert!(n.starts_with("b-42-n-code-name-20261121-010000-hourly-"), "{n}");
        assert_ne!(backup_name("a", Some("x"), t, "daily"), backup_name("b", Some("x"), t, "daily"));
    }

    proptest! {
        #[test]
        fn always_a_valid_identifier(id in ".{0,80}", name in proptest::option::of(".{0,200}"), ret in "[a-z0-9_-]{1,32}", secs in 0i64..4_000_000_000) {
            let n = backup_name(&id, name.as_deref(), Timestamp::from_second(secs).unwrap(), &ret);
            prop_assert!(is_valid_identifier(&n), "{}", n);
        }
    }
}
