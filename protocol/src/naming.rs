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

/// The creation time and retention type a backup name carries (see [`backup_name`]), read
/// back by a data-bunker account, which cannot see the tags of a backup shared with it.
pub fn parse_backup_name(name: &str) -> Option<(Timestamp, String)> {
    let parts: Vec<&str> = name.split('-').collect();
    let hash = parts.last()?;
    if hash.len() != 6 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    // The stamp is the rightmost <8 digits>-<6 digits> pair followed by at least one
    // retention segment (custom types may contain hyphens).
    let i = (0..parts.len().saturating_sub(3)).rev().find(|&i| digits(parts[i], 8) && digits(parts[i + 1], 6))?;
    let retention = parts[i + 2..parts.len() - 1].join("-");
    let (d, t) = (parts[i], parts[i + 1]);
    let n = |s: &str| s.parse::<i16>().ok();
    let date = jiff::civil::Date::new(n(&d[..4])?, n(&d[4..6])? as i8, n(&d[6..])? as i8).ok()?;
    let time = jiff::civil::Time::new(n(&t[..2])? as i8, n(&t[2..4])? as i8, n(&t[4..])? as i8, 0).ok()?;
    let at = date.to_datetime(time).to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    (!retention.is_empty()).then_some((at, retention))
}

/// The name of a backup pulled into a data-bunker account: the source's name, shortened,
/// plus a hash of where it came from, so that equal names from two accounts or regions
/// never collide and a repeated pull finds the same name.
pub fn pulled_name(name: &str, account: &str, region: &str, id: &str) -> String {
    let hash = format!("{:08x}", fnv1a(format!("{account}:{region}:{id}").as_bytes()));
    let mut base = sanitize(name);
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base.insert_str(0, "p-");
    }
    base.truncate(MAX_LEN - 1 - hash.len());
    format!("{}-{hash}", base.trim_end_matches('-'))
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
mod parse_tests {
    use super::*;

    #[test]
    fn names_round_trip_and_pulled_names_are_distinct() {
        let at: Timestamp = "2026-12-01T01:02:03Z".parse().unwrap();
        for retention in ["daily", "monthly", "hourly", "two-hourly"] {
            let n = backup_name("vol-0abc", Some("orders-db"), at, retention);
            assert_eq!(parse_backup_name(&n), Some((at, retention.to_string())), "{n}");
        }
        assert_eq!(parse_backup_name("snap-0123"), None);
        let n = backup_name("vol-0abc", Some(&"x".repeat(80)), at, "daily");
        let a = pulled_name(&n, "111111111111", "us-east-1", "snap-1");
        let b = pulled_name(&n, "222222222222", "us-east-1", "snap-1");
        assert_ne!(a, b);
        assert!(a.len() <= MAX_LEN && !a.contains("--") && a.starts_with(|c: char| c.is_ascii_lowercase()));
        assert_eq!(a, pulled_name(&n, "111111111111", "us-east-1", "snap-1"));
    }
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
