//! The retention planner over 1,000,000 backups (target: < 1 s on one core).
//! `cargo bench -p bunker-protocol --bench planner`; prints the median of 7 runs.

use std::collections::BTreeMap;
use std::time::Instant;

use bunker_protocol::backup::{Backup, Owner};
use bunker_protocol::retention::{plan, Candidate, Keep, Policy, RetentionType};
use bunker_protocol::ResourceKind;
use jiff::{SignedDuration, Timestamp};

fn main() {
    let n: usize = std::env::var("BENCH_BACKUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let start = Timestamp::from_second(1_700_000_000).unwrap();
    // 10,000 sources × 100 backups each, one a day, types by a GFS-like mix.
    let backups: Vec<Backup> = (0..n)
        .map(|i| {
            let day = (i % 100) as i64;
            let retention = match day % 30 {
                0 => RetentionType::Monthly,
                7 | 14 | 21 | 28 => RetentionType::Weekly,
                _ if i % 997 == 0 => RetentionType::Custom("hourly".into()),
                _ => RetentionType::Daily,
            };
            Backup {
                id: format!("snap-{i:017x}"),
                name: String::new(),
                kind: ResourceKind::Ebs,
                region: "us-east-1".into(),
                account: "123456789012".into(),
                source: format!("vol-{:017x}", i / 100),
                created_at: start.checked_add(SignedDuration::from_hours(24 * day)).unwrap(),
                aws_created_at: None,
                retention,
                owner: if i % 50 == 0 { Owner::Foreign } else { Owner::Ours },
                available: true,
                overrides: BTreeMap::new(),
                parts: vec![],
                copy_of: None,
                pulled_from: None,
            }
        })
        .collect();
    let policy = Policy {
        keep: Keep { daily: 14, weekly: 8, monthly: 12, yearly: 10 },
        custom: [("hourly".to_string(), SignedDuration::from_hours(48))].into(),
        ..Policy::default()
    };
    let candidates: Vec<Candidate<'_>> =
        backups.iter().map(|b| Candidate { backup: b, policy: Ok(&policy), source_exists: true }).collect();
    let now = start.checked_add(SignedDuration::from_hours(24 * 100)).unwrap();
    let mut times = Vec::new();
    let mut deletes = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let decisions = plan(now, &candidates);
        times.push(t.elapsed().as_secs_f64());
        deletes = decisions.iter().filter(|d| d.action == bunker_protocol::retention::Action::Delete).count();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "planner: {n} backups, {deletes} to delete; median {:.3} s (min {:.3}, max {:.3}) over {} runs, one thread",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
}
