//! Five-field cron expressions (`minute hour day-of-month month day-of-week`), evaluated in
//! UTC, and the schedule-slot arithmetic the scheduler needs: the newest slot at or before a
//! time (for catch-up) and the next slot after it (for the timer).
//!
//! Fields accept `*`, numbers, ranges `a-b`, lists `a,b`, and steps `*/n` or `a-b/n`.
//! Day of week is 0–7 (0 and 7 are Sunday). As in Vixie cron, when both day fields are
//! restricted a day matches if either does.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// A cron expression that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron expression {text:?}: {problem}")]
pub struct CronError {
    /// The expression.
    pub text: String,
    /// What is wrong.
    pub problem: String,
}

fn field(text: &str, spec: &str, name: &str, lo: u32, hi: u32) -> Result<(u64, bool), CronError> {
    let err = |p: String| CronError { text: text.to_string(), problem: p };
    let mut bits = 0u64;
    let restricted = spec != "*";
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| err(format!("{name}: step {s:?} is not a number")))?;
                if s == 0 {
                    return Err(err(format!("{name}: step 0")));
                }
                (r, s)
            }
            None => (part, 1),
        };
        let num = |v: &str| -> Result<u32, CronError> {
            let n: u32 = v.parse().map_err(|_| err(format!("{name}: {v:?} is not a number")))?;
            if n < lo || n > hi {
                return Err(err(format!("{name}: {n} is outside {lo}-{hi}")));
            }
            Ok(n)
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if step > 1 => (num(r)?, hi),
                None => {
                    let n = num(r)?;
                    (n, n)
                }
            },
        };
        if a > b {
            return Err(err(format!("{name}: range {a}-{b} is backwards")));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, restricted))
}

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Cron, CronError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [mi, h, dom, mon, dow] = parts[..] else {
            return Err(CronError {
                text: text.into(),
                problem: format!("expected 5 fields (minute hour day month weekday), found {}", parts.len()),
            });
        };
        let (minutes, _) = field(text, mi, "minute", 0, 59)?;
        let (hours, _) = field(text, h, "hour", 0, 23)?;
        let (days, days_restricted) = field(text, dom, "day of month", 1, 31)?;
        let (months, _) = field(text, mon, "month", 1, 12)?;
        let (mut weekdays, weekdays_restricted) = field(text, dow, "day of week", 0, 7)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Cron { text: parts.join(" "), minutes, hours, days, months, weekdays, days_restricted, weekdays_restricted })
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Cron {
    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    fn times(&self) -> impl DoubleEndedIterator<Item = Time> + '_ {
        (0..24i8).filter(|h| self.hours & (1 << h) != 0).flat_map(move |h| {
            (0..60i8).filter(|m| self.minutes & (1 << m) != 0).map(move |m| Time::constant(h, m, 0, 0))
        })
    }

    fn at(d: Date, t: Time) -> Timestamp {
        DateTime::from_parts(d, t).to_zoned(TimeZone::UTC).expect("UTC has no gaps").timestamp()
    }

    /// The newest slot at or before `now`, searching back up to about 5 years.
    pub fn latest_at_or_before(&self, now: Timestamp) -> Option<Timestamp> {
        let mut day = now.to_zoned(TimeZone::UTC).date();
        for _ in 0..(366 * 5) {
            if self.day_matches(day) {
                if let Some(t) = self.times().rev().map(|t| Self::at(day, t)).find(|t| *t <= now) {
                    return Some(t);
                }
            }
            day = day.checked_sub(1.day()).ok()?;
        }
        None
    }

    /// The first slot strictly after `now`, searching up to about 5 years ahead.
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        let mut day = now.to_zoned(TimeZone::UTC).date();
        for _ in 0..(366 * 5) {
            if self.day_matches(day) {
                if let Some(t) = self.times().map(|t| Self::at(day, t)).find(|t| *t > now) {
                    return Some(t);
                }
            }
            day = day.checked_add(1.day()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn daily_at_one() {
        let c: Cron = "0 1 * * *".parse().unwrap();
        assert_eq!(c.latest_at_or_before(ts("2026-12-01T00:59:59Z")), Some(ts("2026-11-30T01:00:00Z")));
        assert_eq!(c.latest_at_or_before(ts("2026-12-01T01:00:00Z")), Some(ts("2026-12-01T01:00:00Z")));
        assert_eq!(c.next_after(ts("2026-12-01T01:00:00Z")), Some(ts("2026-12-02T01:00:00Z")));
    }

    #[test]
    fn steps_lists_ranges_and_weekdays() {
        let c: Cron = "*/15 9-17 * * 1-5".parse().unwrap();
        // 2026-12-05 is a Saturday.
        assert_eq!(c.next_after(ts("2026-12-04T17:45:00Z")), Some(ts("2026-12-07T09:00:00Z")));
        assert_eq!(c.next_after(ts("2026-12-07T09:00:00Z")), Some(ts("2026-12-07T09:15:00Z")));
        let sunday: Cron = "30 2 * * 7".parse().unwrap();
        assert_eq!(sunday.next_after(ts("2026-12-01T00:00:00Z")), Some(ts("2026-12-06T02:30:00Z")));
        let first: Cron = "0 0 1,15 * *".parse().unwrap();
        assert_eq!(first.latest_at_or_before(ts("2026-12-10T00:00:00Z")), Some(ts("2026-12-01T00:00:00Z")));
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for (text, needle) in [
            ("0 25 * * *", "hour: 25 is outside 0-23"),
            ("0 1 * *", "expected 5 fields"),
            ("x 1 * * *", "minute: \"x\" is not a number"),
            ("0 1 5-2 * *", "backwards"),
            ("*/0 1 * * *", "step 0"),
        ] {
            let e = text.parse::<Cron>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
