//! The calendar: create daily at 01:00 and clean daily at 02:00 over 420 simulated days, then
//! compare what exists in the emulator with an expectation computed here, independently of
//! bunker's planner. Run twice: once with the host in UTC, once with TZ=Pacific/Kiritimati
//! (UTC+14), which must not change anything (Shelvery's staleness test used local time).

mod common;

use std::collections::BTreeSet;

use common::{tag_values, Account};
use jiff::civil::{Date, Weekday};
use jiff::{ToSpan, Zoned};

const DAYS: i64 = 420;
const KEEP: [(&str, &str); 4] = [
    ("BUNKER_KEEP_DAILY", "7"),
    ("BUNKER_KEEP_WEEKLY", "5"),
    ("BUNKER_KEEP_MONTHLY", "3"),
    ("BUNKER_KEEP_YEARLY", "1"),
];

/// The expected survivors, by direct simulation: each day's backup gets its calendar type;
/// each clean removes every backup whose age reached its keep period, except the newest.
fn expected(start: Date) -> BTreeSet<String> {
    let mut alive: Vec<(Zoned, &str)> = Vec::new();
    for d in 0..DAYS {
        let day = start.checked_add(d.days()).unwrap();
        let created = day.at(1, 0, 0, 0).in_tz("UTC").unwrap();
        let kind = match (day.month(), day.day(), day.weekday()) {
            (1, 1, _) => "yearly",
            (_, 1, _) => "monthly",
            (_, _, Weekday::Sunday) => "weekly",
            _ => "daily",
        };
        alive.push((created, kind));
        let clean = day.at(2, 0, 0, 0).in_tz("UTC").unwrap();
        let newest = alive.last().unwrap().0.clone();
        alive.retain(|(c, k)| {
            let keep_until = match *k {
                "daily" => c.checked_add(7.days()),
                "weekly" => c.checked_add(5.weeks()),
                "monthly" => c.checked_add(3.months()),
                _ => c.checked_add(1.years()),
            }
            .unwrap();
            *c == newest || clean < keep_until
        });
    }
    alive.iter().map(|(c, _)| c.timestamp().to_string()).collect()
}

async fn run_calendar(account: &str, tz: &str) {
    let a = Account::new(account).await;
    a.volume(&[("bunker:create_backup", "true")]).await;
    let start = jiff::civil::date(2053, 12, 20);
    let mut env: Vec<(&str, &str)> = KEEP.to_vec();
    env.push(("TZ", tz));
    for d in 0..DAYS {
        let day = start.checked_add(d.days()).unwrap();
        let create = format!("{day}T01:00:00Z");
        let clean = format!("{day}T02:00:00Z");
        let r = a.bunker_with(&["ebs", "create-backups", "--now", &create, "--json"], &env);
        assert_eq!(r.code, 0, "{r:#?}");
        let r = a.bunker_with(&["ebs", "clean-backups", "--now", &clean, "--json"], &env);
        assert_eq!(r.code, 0, "{r:#?}");
    }
    let snapshots = a.snapshots().await;
    let actual: BTreeSet<String> = tag_values(&snapshots, "bunker:created_at").into_iter().map(String::from).collect();
    let expected = expected(start);
    assert_eq!(actual, expected);
    // The shape by hand, on the last day (2055-02-12): the yearly of 2055-01-01; monthlies of
    // 2054-12-01 and 2055-02-01 (2054-11-01 expired 2055-02-01); weeklies 2055-01-10 … 02-07;
    // dailies 2055-02-06 … 02-12 without Sunday the 7th.
    let retention = tag_values(&snapshots, "bunker:retention");
    let count = |t: &str| retention.iter().filter(|r| **r == t).count();
    assert_eq!([count("yearly"), count("monthly"), count("weekly"), count("daily")], [1, 2, 5, 6], "{actual:#?}");
}

#[tokio::test]
async fn calendar_420_days_utc() {
    run_calendar("200000000001", "UTC").await;
}

#[tokio::test]
async fn calendar_420_days_host_in_kiritimati() {
    run_calendar("200000000002", "Pacific/Kiritimati").await;
}
