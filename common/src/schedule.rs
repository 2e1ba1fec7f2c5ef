//! Cron schedules: parsing the forms operators write, and `next_fire`.
//!
//! Accepted forms (all parsed by the `cron` crate after normalisation):
//! - 7 fields, as the original system: `sec min hour dom month dow year`
//! - 6 fields: `sec min hour dom month dow`
//! - 5 fields, classic crontab: `min hour dom month dow` (fires at second 0)
//! - macros: `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//!   `@midnight`, `@hourly`
//!
//! Day-of-week numbers follow crontab and the original system: 0-6 is
//! Sunday-Saturday and 7 is Sunday too. The `cron` crate numbers days 1-7 from
//! Sunday, so numeric days are rewritten to names before parsing.
//!
//! Day of month and day of week combine as in the original system
//! (gorhill/cronexpr) and classic cron: when both are restricted (neither is
//! `*` nor `?`), a day matching either one fires (`0 0 0 13 * FRI *` is every
//! 13th and every Friday); when one is `*` or `?`, the other alone decides.
//! The `cron` crate requires both, so such an expression is kept as two
//! schedules (one per day field) whose fire times are merged.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;

use crate::limits::MAX_CRON_EXPR_LEN;

/// A cron expression that is known to parse, evaluated in a time zone
/// (UTC unless set). Holds the text the operator wrote (to show it back
/// unchanged) and the parsed schedule.
///
/// Fire times are wall-clock times of the zone. Across daylight-saving
/// changes: a local time that does not exist (the skipped hour) does not
/// fire, and a local time that happens twice (the repeated hour) fires once,
/// at its first occurrence.
#[derive(Clone)]
pub struct CronSchedule {
    expr: String,
    /// Shared between all jobs with the same expression (see [`interned`]):
    /// a parsed schedule holds a few kilobytes of sets, and a worker keeps
    /// one per job.
    schedule: Arc<cron::Schedule>,
    /// With both day fields restricted: `schedule` has the day of month
    /// (any weekday) and this the day of week (any day of month).
    by_weekday: Option<Arc<cron::Schedule>>,
    tz: Tz,
}

/// One parsed schedule per distinct normalized expression in the process.
/// Entries are weak, so schedules no job uses any more are dropped (the map
/// sweeps out dead entries whenever it doubles).
fn interned(normalized: &str) -> Result<Arc<cron::Schedule>, cron::error::Error> {
    /// The parsed schedules, and the size at which to sweep dead entries.
    type Cache = (HashMap<String, Weak<cron::Schedule>>, usize);
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new((HashMap::new(), 64)));
    if let Some(found) = cache
        .lock()
        .expect("schedule cache lock")
        .0
        .get(normalized)
        .and_then(Weak::upgrade)
    {
        return Ok(found);
    }
    let parsed = Arc::new(cron::Schedule::from_str(normalized)?);
    let mut guard = cache.lock().expect("schedule cache lock");
    let (map, sweep_at) = &mut *guard;
    map.insert(normalized.to_string(), Arc::downgrade(&parsed));
    if map.len() >= *sweep_at {
        map.retain(|_, w| w.strong_count() > 0);
        *sweep_at = (map.len() * 2).max(64);
    }
    Ok(parsed)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

const MACROS: &[(&str, &str)] = &[
    ("@yearly", "0 0 0 1 1 *"),
    ("@annually", "0 0 0 1 1 *"),
    ("@monthly", "0 0 0 1 * *"),
    ("@weekly", "0 0 0 * * SUN"),
    ("@daily", "0 0 0 * * *"),
    ("@midnight", "0 0 0 * * *"),
    ("@hourly", "0 0 * * * *"),
];

const DAY_NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];

impl CronSchedule {
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(CronError("is empty".into()));
        }
        if trimmed.len() > MAX_CRON_EXPR_LEN {
            return Err(CronError(format!(
                "is longer than {MAX_CRON_EXPR_LEN} characters"
            )));
        }
        let normalized = normalize(trimmed)?;
        let invalid = |e: cron::error::Error| {
            CronError(format!("{trimmed:?} is not a valid cron expression: {e}"))
        };
        let (schedule, by_weekday) = match either_day(&normalized) {
            Some((by_day_of_month, by_weekday)) => (
                interned(&by_day_of_month).map_err(invalid)?,
                Some(interned(&by_weekday).map_err(invalid)?),
            ),
            None => (interned(&normalized).map_err(invalid)?, None),
        };
        let parsed = CronSchedule {
            expr: trimmed.to_string(),
            schedule,
            by_weekday,
            tz: Tz::UTC,
        };
        // A schedule that can never fire (e.g. only in a past year) is almost
        // certainly a mistake; reject it rather than store a job that never runs.
        if parsed.next_wall_clock(&Utc::now()).is_none() {
            return Err(CronError(format!("{trimmed:?} never fires in the future")));
        }
        Ok(parsed)
    }

    /// The first wall-clock fire time strictly after `after` (times of the
    /// zone, in a UTC wrapper): the earlier of the two day schedules'.
    fn next_wall_clock(&self, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first = self.schedule.after(after).next();
        match &self.by_weekday {
            None => first,
            Some(other) => match (first, other.after(after).next()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// The same schedule read in time zone `tz`.
    pub fn in_timezone(mut self, tz: Tz) -> Self {
        self.tz = tz;
        self
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The expression as the operator wrote it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first fire time strictly after `after`, or `None` if the schedule
    /// has no more fire times.
    pub fn next_fire(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.tz == Tz::UTC {
            return self.next_wall_clock(&after);
        }
        // Walk the schedule over wall-clock times of the zone (represented as
        // naive times in a UTC wrapper), and map each to its instant.
        let mut candidate = Utc.from_utc_datetime(&after.with_timezone(&self.tz).naive_local());
        // The repeated hour can put at most an hour of candidates behind
        // `after`; skipped hours yield none. Bound the walk all the same.
        for _ in 0..100_000 {
            candidate = self.next_wall_clock(&candidate)?;
            let instant = match self.tz.from_local_datetime(&candidate.naive_utc()) {
                LocalResult::Single(t) => t,
                LocalResult::Ambiguous(first, _) => first,
                LocalResult::None => continue,
            };
            let instant = instant.with_timezone(&Utc);
            if instant > after {
                return Some(instant);
            }
        }
        None
    }

    /// The next `n` fire times strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_fire(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// Whether `t` is itself one of the schedule's fire times.
    pub fn fires_at(&self, t: DateTime<Utc>) -> bool {
        let just_before = t - chrono::Duration::milliseconds(1);
        self.next_fire(just_before) == Some(t)
    }
}

/// What a worker does when its timer wakes at `now` for a job whose next
/// unattempted tick is `next`: the ticks to attempt now (oldest first) and the
/// next tick to wait for. Ticks older than `now - max_lateness` are skipped,
/// not attempted: a worker that stalled or was cut off does not run stale
/// ticks (another worker ran them, or nobody could).
pub fn due_ticks(
    schedule: &CronSchedule,
    mut next: DateTime<Utc>,
    now: DateTime<Utc>,
    max_lateness: chrono::Duration,
) -> (Vec<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let oldest_allowed = now - max_lateness;
    if next < oldest_allowed {
        // Jump instead of walking every missed tick of a long outage.
        match schedule.next_fire(oldest_allowed - chrono::Duration::milliseconds(1)) {
            Some(t) => next = t,
            None => return (Vec::new(), None),
        }
    }
    let mut due = Vec::new();
    let mut upcoming = Some(next);
    while let Some(t) = upcoming.filter(|t| *t <= now) {
        due.push(t);
        upcoming = schedule.next_fire(t);
    }
    (due, upcoming)
}

#[cfg(test)]
mod interning_tests {
    use super::*;

    #[test]
    fn equal_expressions_share_one_parsed_schedule() {
        let a = CronSchedule::parse("*/7 * * * * * *").unwrap();
        let b = CronSchedule::parse(" */7 * * * * * * ").unwrap();
        let c = CronSchedule::parse("*/8 * * * * * *").unwrap();
        assert!(Arc::ptr_eq(&a.schedule, &b.schedule));
        assert!(!Arc::ptr_eq(&a.schedule, &c.schedule));
        assert_eq!(a.next_fire(Utc::now()), b.next_fire(Utc::now()));
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronSchedule").field(&self.expr).finish()
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr && self.tz == other.tz
    }
}

/// Turns any accepted form into the 6- or 7-field form the `cron` crate reads.
fn normalize(expr: &str) -> Result<String, CronError> {
    if expr.starts_with('@') {
        let lower = expr.to_ascii_lowercase();
        return MACROS
            .iter()
            .find(|(name, _)| *name == lower)
            .map(|(_, fields)| fields.to_string())
            .ok_or_else(|| {
                let names: Vec<&str> = MACROS.iter().map(|(n, _)| *n).collect();
                CronError(format!(
                    "unknown macro {expr:?}; expected one of {}",
                    names.join(", ")
                ))
            });
    }
    let mut fields: Vec<String> = expr.split_whitespace().map(str::to_string).collect();
    match fields.len() {
        5 => fields.insert(0, "0".to_string()),
        6 | 7 => {}
        n => {
            return Err(CronError(format!(
                "has {n} fields; expected 5 (min hour dom month dow), \
                 6 (sec min hour dom month dow) or 7 (sec min hour dom month dow year)"
            )))
        }
    }
    fields[5] = day_of_week_to_names(&fields[5])?;
    Ok(fields.join(" "))
}

/// For a normalized expression whose day of month and day of week are both
/// restricted: the expression with any weekday, and the one with any day of
/// month (see the module documentation).
fn either_day(normalized: &str) -> Option<(String, String)> {
    let fields: Vec<&str> = normalized.split(' ').collect();
    let restricted = |f: &str| f != "*" && f != "?";
    if fields.len() < 6 || !restricted(fields[3]) || !restricted(fields[5]) {
        return None;
    }
    let with = |i: usize| {
        let mut f = fields.clone();
        f[i] = "*";
        f.join(" ")
    };
    Some((with(5), with(3)))
}

/// Rewrites the numbers of a day-of-week field (0-7, Sunday = 0 or 7) as day
/// names, leaving `*`, `?`, names and step values alone.
fn day_of_week_to_names(field: &str) -> Result<String, CronError> {
    let mut out = String::with_capacity(field.len() + 8);
    let mut chars = field.chars().peekable();
    let mut after_slash = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut num = String::from(c);
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                num.push(*d);
                chars.next();
            }
            if after_slash {
                out.push_str(&num);
                continue;
            }
            let day: usize = num.parse().unwrap_or(usize::MAX);
            let name = DAY_NAMES.get(day).ok_or_else(|| {
                CronError(format!(
                    "day of week {num} is out of range; use 0-7 (0 and 7 are Sunday) or SUN-SAT"
                ))
            })?;
            out.push_str(name);
        } else {
            after_slash = c == '/';
            if c == ',' || c == '-' {
                after_slash = false;
            }
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn seven_six_and_five_fields_agree() {
        let after = at("2030-01-01T00:00:00Z");
        let seven = CronSchedule::parse("0 */5 * * * * *").unwrap();
        let six = CronSchedule::parse("0 */5 * * * *").unwrap();
        let five = CronSchedule::parse("*/5 * * * *").unwrap();
        let want = at("2030-01-01T00:05:00Z");
        assert_eq!(seven.next_fire(after), Some(want));
        assert_eq!(six.next_fire(after), Some(want));
        assert_eq!(five.next_fire(after), Some(want));
    }

    #[test]
    fn every_second_fires_each_second() {
        let s = CronSchedule::parse("* * * * * * *").unwrap();
        let t0 = Utc.timestamp_millis_opt(1_900_000_000_500).unwrap();
        let fires = s.upcoming(t0, 3);
        let secs: Vec<i64> = fires.iter().map(|t| t.timestamp_millis()).collect();
        assert_eq!(
            secs,
            vec![1_900_000_001_000, 1_900_000_002_000, 1_900_000_003_000]
        );
    }

    #[test]
    fn macros_parse() {
        let after = at("2030-01-01T00:30:00Z");
        let hourly = CronSchedule::parse("@hourly").unwrap();
        assert_eq!(hourly.next_fire(after), Some(at("2030-01-01T01:00:00Z")));
        let daily = CronSchedule::parse("@DAILY").unwrap();
        assert_eq!(daily.next_fire(after), Some(at("2030-01-02T00:00:00Z")));
        assert!(CronSchedule::parse("@fortnightly").is_err());
    }

    #[test]
    fn day_of_week_zero_and_seven_are_sunday() {
        // 2030-01-01 is a Tuesday; the next Sunday is 2030-01-06.
        let after = at("2030-01-01T00:00:00Z");
        for expr in ["0 0 * * 0", "0 0 * * 7", "0 0 * * SUN"] {
            let s = CronSchedule::parse(expr).unwrap();
            assert_eq!(
                s.next_fire(after),
                Some(at("2030-01-06T00:00:00Z")),
                "{expr}"
            );
        }
        let weekdays = CronSchedule::parse("0 0 * * 1-5").unwrap();
        assert_eq!(weekdays.next_fire(after), Some(at("2030-01-02T00:00:00Z")));
        let stepped = CronSchedule::parse("0 0 0 * * 1-5/2").unwrap();
        assert!(stepped.next_fire(after).is_some());
    }

    #[test]
    fn rejections_say_why() {
        let cases = [
            ("", "empty"),
            ("* * *", "3 fields"),
            ("* * * * * * * *", "8 fields"),
            ("61 * * * * *", "not a valid cron expression"),
            ("0 0 * * 9", "out of range"),
            ("0 0 0 1 1 * 2001", "never fires"),
        ];
        for (expr, want) in cases {
            let err = CronSchedule::parse(expr).unwrap_err().to_string();
            assert!(err.contains(want), "{expr:?}: {err}");
        }
    }

    #[test]
    fn due_ticks_in_order_and_skips_stale_ones() {
        let s = CronSchedule::parse("* * * * * *").unwrap();
        let lateness = chrono::Duration::seconds(10);
        // On time: exactly the one tick.
        let (due, next) = due_ticks(
            &s,
            at("2030-01-01T00:00:05Z"),
            at("2030-01-01T00:00:05.002Z"),
            lateness,
        );
        assert_eq!(due, vec![at("2030-01-01T00:00:05Z")]);
        assert_eq!(next, Some(at("2030-01-01T00:00:06Z")));
        // Woke 3 s late: the three missed ticks, oldest first.
        let (due, next) = due_ticks(
            &s,
            at("2030-01-01T00:00:05Z"),
            at("2030-01-01T00:00:07.5Z"),
            lateness,
        );
        assert_eq!(due.len(), 3);
        assert_eq!(due[0], at("2030-01-01T00:00:05Z"));
        assert_eq!(next, Some(at("2030-01-01T00:00:08Z")));
        // Woke an hour late: only ticks inside the lateness window.
        let (due, _) = due_ticks(
            &s,
            at("2030-01-01T00:00:05Z"),
            at("2030-01-01T01:00:05Z"),
            lateness,
        );
        assert_eq!(due.len(), 11);
        assert_eq!(due[0], at("2030-01-01T00:59:55Z"));
        // Early wake-up: nothing due.
        let (due, next) = due_ticks(
            &s,
            at("2030-01-01T00:00:05Z"),
            at("2030-01-01T00:00:04.9Z"),
            lateness,
        );
        assert!(due.is_empty());
        assert_eq!(next, Some(at("2030-01-01T00:00:05Z")));
    }

    fn tz(name: &str) -> Tz {
        name.parse().unwrap()
    }

    #[test]
    fn berlin_spring_forward_skips_the_missing_hour() {
        // 2030-03-31: clocks go from 02:00 to 03:00 CET->CEST in Berlin.
        let s = CronSchedule::parse("30 2 * * *")
            .unwrap()
            .in_timezone(tz("Europe/Berlin"));
        let fires = s.upcoming(at("2030-03-29T12:00:00Z"), 3);
        // 02:30 local on the 30th (CET, +1) = 01:30Z; none on the 31st; 02:30 CEST on 1 April = 00:30Z.
        assert_eq!(fires[0], at("2030-03-30T01:30:00Z"));
        assert_eq!(fires[1], at("2030-04-01T00:30:00Z"));
        let hourly = CronSchedule::parse("0 * * * *")
            .unwrap()
            .in_timezone(tz("Europe/Berlin"));
        let fires = hourly.upcoming(at("2030-03-31T00:30:00Z"), 2); // 01:30 CET
                                                                    // 02:00 local does not exist; next is 03:00 CEST = 01:00Z.
        assert_eq!(
            fires,
            vec![at("2030-03-31T01:00:00Z"), at("2030-03-31T02:00:00Z")]
        );
    }

    #[test]
    fn berlin_fall_back_fires_the_repeated_hour_once() {
        // 2030-10-27: clocks go from 03:00 CEST back to 02:00 CET.
        let s = CronSchedule::parse("30 2 * * *")
            .unwrap()
            .in_timezone(tz("Europe/Berlin"));
        let fires = s.upcoming(at("2030-10-26T12:00:00Z"), 2);
        // First 02:30 (CEST, +2) = 00:30Z; not again at 02:30 CET (01:30Z).
        assert_eq!(
            fires,
            vec![at("2030-10-27T00:30:00Z"), at("2030-10-28T01:30:00Z")]
        );
        // Asked from inside the repeated hour's second pass: no second run.
        let fires = s.upcoming(at("2030-10-27T01:10:00Z"), 1);
        assert_eq!(fires, vec![at("2030-10-28T01:30:00Z")]);
    }

    #[test]
    fn new_york_transitions() {
        // 2030-03-10 spring forward at 02:00 EST; 2030-11-03 fall back at 02:00 EDT.
        let ny = tz("America/New_York");
        let s = CronSchedule::parse("0 30 2 * * *").unwrap().in_timezone(ny);
        let spring = s.upcoming(at("2030-03-09T12:00:00Z"), 2);
        assert_eq!(
            spring,
            vec![at("2030-03-11T06:30:00Z"), at("2030-03-12T06:30:00Z")]
        );
        // 10 March has no 02:30; 11 March 02:30 EDT = 06:30Z.
        let fall = s.upcoming(at("2030-11-02T12:00:00Z"), 2);
        // 3 November 01:30.. 02:30 exists once (EST, -5) = 07:30Z.
        assert_eq!(
            fall,
            vec![at("2030-11-03T07:30:00Z"), at("2030-11-04T07:30:00Z")]
        );
        let at_1_30 = CronSchedule::parse("30 1 * * *").unwrap().in_timezone(ny);
        // 01:30 happens twice on 3 November: fires once, at the first (EDT, -4) = 05:30Z.
        let fall = at_1_30.upcoming(at("2030-11-02T12:00:00Z"), 2);
        assert_eq!(
            fall,
            vec![at("2030-11-03T05:30:00Z"), at("2030-11-04T06:30:00Z")]
        );
    }

    /// As the original system (gorhill/cronexpr) and classic cron: when both
    /// day of month and day of week are restricted, a day matching either
    /// fires; when one is `*` or `?`, the other alone decides.
    #[test]
    fn restricted_day_of_month_and_day_of_week_fire_on_either() {
        let days = |expr: &str, from: &str, n: usize| -> Vec<String> {
            CronSchedule::parse(expr)
                .unwrap()
                .upcoming(at(from), n)
                .iter()
                .map(|t| t.format("%a %d").to_string())
                .collect()
        };
        // From Saturday 2026-10-31 noon; 1 November is a Sunday, and its
        // Fridays are the 6th, 13th, 20th and 27th.
        let start = "2026-10-31T12:00:00Z";
        assert_eq!(
            days("0 0 0 13 * FRI *", start, 4),
            ["Fri 06", "Fri 13", "Fri 20", "Fri 27"]
        );
        assert_eq!(
            days("0 0 0 10,13 * 5 *", start, 5),
            ["Fri 06", "Tue 10", "Fri 13", "Fri 20", "Fri 27"]
        );
        assert_eq!(
            days("0 0 0 1-3 * MON *", start, 5),
            ["Sun 01", "Mon 02", "Tue 03", "Mon 09", "Mon 16"]
        );
        // `*` or `?` in either field: the other alone.
        assert_eq!(days("0 0 0 ? * FRI *", start, 2), ["Fri 06", "Fri 13"]);
        assert_eq!(days("0 0 0 * * FRI", start, 2), ["Fri 06", "Fri 13"]);
        assert_eq!(days("0 0 0 13 * ? *", start, 2), ["Fri 13", "Sun 13"]);
        assert_eq!(days("0 0 0 13 * *", start, 1), ["Fri 13"]);
        // `*/1` is restricted (as in the original): with a weekday, every day.
        assert_eq!(
            days("0 0 0 */1 * FRI *", start, 3),
            ["Sun 01", "Mon 02", "Tue 03"]
        );
        // fires_at and a time zone follow the same rule.
        let s = CronSchedule::parse("0 0 0 13 * FRI *").unwrap();
        assert!(s.fires_at(at("2026-11-06T00:00:00Z")));
        assert!(s.fires_at(at("2026-12-13T00:00:00Z")));
        assert!(!s.fires_at(at("2026-12-14T00:00:00Z")));
        let berlin = s.in_timezone(tz("Europe/Berlin"));
        assert_eq!(
            berlin.next_fire(at("2026-11-01T00:00:00Z")),
            Some(at("2026-11-05T23:00:00Z"))
        );
    }

    #[test]
    fn fires_at_matches_only_fire_times() {
        let s = CronSchedule::parse("*/10 * * * * *").unwrap();
        assert!(s.fires_at(at("2030-01-01T00:00:10Z")));
        assert!(!s.fires_at(at("2030-01-01T00:00:11Z")));
    }
}
