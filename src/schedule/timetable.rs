//! A schedule's timing, compiled: the next tick after a time.

use std::str::FromStr;

use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::Timing;
use crate::{Error, Result};

/// A [`Timing`], compiled: see [`Timetable::next_after`].
#[derive(Debug, Clone)]
pub struct Timetable(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Cron {
        cron: Box<Cron>,
        zone: Tz,
        /// An expression with a wildcard or step in its hours (or finer): it fires in both
        /// passes of a repeated local hour.
        interval: bool,
    },
    Interval {
        micros: i64,
    },
}

/// The shortest interval a schedule may have, in milliseconds: one second, as cron's finest
/// field.
pub const MIN_INTERVAL_MILLIS: u64 = 1_000;

/// The longest a cron expression may go without firing, counted from now: an expression
/// that names a date that never comes (30 February) is refused, not searched forever.
const NEVER_YEARS: i32 = 5;

impl Timetable {
    /// Compile `timing`, and check that a cron expression fires within five years.
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming `schedule.cron`, `schedule.time_zone` or `schedule.interval`
    /// (under one second).
    pub fn new(timing: &Timing) -> Result<Self> {
        let table = Self::compile(timing)?;
        if let (Timing::Cron { expression, .. }, Kind::Cron { .. }) = (timing, &table.0) {
            let now = Utc::now();
            let horizon = now
                .checked_add_months(chrono::Months::new(12 * NEVER_YEARS as u32))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            if table.next_after(now, now).is_none_or(|t| t > horizon) {
                return Err(Error::invalid_input(
                    "schedule.cron",
                    format!("`{expression}` never fires in the next {NEVER_YEARS} years"),
                ));
            }
        }
        Ok(table)
    }

    /// Compile `timing` without the search for its first tick: what the scheduler does for
    /// a schedule validated when it was stored.
    pub(crate) fn compile(timing: &Timing) -> Result<Self> {
        match timing {
            Timing::Cron {
                expression,
                time_zone,
            } => {
                let zone = Tz::from_str(time_zone).map_err(|_| {
                    Error::invalid_input(
                        "schedule.time_zone",
                        format!(
                            "unknown time zone `{time_zone}`; give an IANA name such as `UTC` or `Europe/Paris`"
                        ),
                    )
                })?;
                let fields = expression.split_whitespace().count();
                if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
                    return Err(Error::invalid_input(
                        "schedule.cron",
                        format!(
                            "`{expression}` has {fields} fields; give five (minute hour day-of-month month day-of-week), six (seconds first) or a shortcut such as `@hourly`"
                        ),
                    ));
                }
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .year(Year::Disallowed)
                    .build()
                    .parse(expression)
                    .map_err(|e| {
                        Error::invalid_input("schedule.cron", format!("`{expression}`: {e}"))
                    })?;
                let interval = cron.determine_job_type() == croner::JobType::IntervalWildcard;
                Ok(Self(Kind::Cron {
                    cron: Box::new(cron),
                    zone,
                    interval,
                }))
            }
            Timing::Interval { millis } => {
                // A tick per look at most, like a six-field cron: a schedule of a few
                // milliseconds would submit hundreds of jobs at every poll.
                if *millis < MIN_INTERVAL_MILLIS {
                    return Err(Error::invalid_input(
                        "schedule.interval",
                        format!(
                            "{millis} ms is under the shortest period of {MIN_INTERVAL_MILLIS} ms (one second, as cron's finest field); run a worker loop for anything more frequent"
                        ),
                    ));
                }
                let micros = i64::try_from(*millis)
                    .ok()
                    .and_then(|m| m.checked_mul(1000))
                    .ok_or_else(|| {
                        Error::invalid_input(
                            "schedule.interval",
                            format!("{millis} ms is too long"),
                        )
                    })?;
                Ok(Self(Kind::Interval { micros }))
            }
        }
    }

    /// The first tick strictly after `after`. An interval counts its ticks from `anchor`
    /// (`anchor + k × period`); a cron expression ignores it. `None` when there is none
    /// (a cron expression past its last date).
    #[must_use]
    pub fn next_after(&self, anchor: DateTime<Utc>, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.0 {
            Kind::Interval { micros } => {
                let (a, t) = (anchor.timestamp_micros(), after.timestamp_micros());
                let next = if t < a {
                    a
                } else {
                    let k = (t - a) / micros + 1;
                    a.checked_add(k.checked_mul(*micros)?)?
                };
                DateTime::from_timestamp_micros(next)
            }
            Kind::Cron {
                cron,
                zone,
                interval,
            } => cron_next(cron, zone, *interval, after),
        }
    }
}

/// The next tick of `cron` in `zone` strictly after `after`.
///
/// croner searches local times: a local time in a daylight-saving gap snaps to just after
/// it, and a repeated local time answers its first occurrence. Two things are mended here:
/// a search from inside the second pass of a repeated hour can answer a time in the first
/// pass, before `after` (searched again from that answer); and an expression with a
/// wildcard in its hours must also fire in the second pass, which a local-time search steps
/// over (searched in the fixed offset in force at `after`, kept when that time matches the
/// expression in the zone).
fn cron_next(
    cron: &Cron,
    zone: &Tz,
    interval: bool,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    // croner keeps the fraction of a second it starts from: start from the whole second
    // (its answers are then whole seconds, the first one after it).
    let whole = DateTime::from_timestamp(after.timestamp(), 0).unwrap_or(after);
    let mut best = None;
    let mut from = whole.with_timezone(zone);
    for _ in 0..4 {
        match cron.find_next_occurrence(&from, false) {
            Ok(t) if t.to_utc() > after => {
                best = Some(t.to_utc());
                break;
            }
            Ok(t) => from = t,
            Err(_) => break,
        }
    }
    if interval {
        let offset = zone.offset_from_utc_datetime(&after.naive_utc()).fix();
        if let Ok(t) = cron.find_next_occurrence(&whole.with_timezone(&offset), false) {
            let t = t.to_utc();
            let matches = cron
                .is_time_matching(&t.with_timezone(zone))
                .unwrap_or(false);
            if t > after && matches && best.is_none_or(|b| t < b) {
                best = Some(t);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    fn cron(expression: &str, zone: &str) -> Timetable {
        Timetable::new(&Timing::Cron {
            expression: expression.to_owned(),
            time_zone: zone.to_owned(),
        })
        .expect("valid")
    }

    fn ticks(t: &Timetable, from: &str, n: usize) -> Vec<String> {
        let mut at = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            match t.next_after(at, at) {
                Some(next) => {
                    out.push(next.to_rfc3339());
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn ticks_are_whole_seconds_whatever_the_time_asked_about() {
        let t = cron("* * * * * *", "UTC");
        let at = utc("2026-01-01T00:00:00.4Z");
        assert_eq!(t.next_after(at, at), Some(utc("2026-01-01T00:00:01Z")));
        let at = utc("2026-01-01T00:00:00.999999Z");
        assert_eq!(t.next_after(at, at), Some(utc("2026-01-01T00:00:01Z")));
    }

    #[test]
    fn cron_in_utc_and_shortcuts() {
        assert_eq!(
            ticks(&cron("*/15 * * * *", "UTC"), "2026-01-01T00:07:00Z", 3),
            [
                "2026-01-01T00:15:00+00:00",
                "2026-01-01T00:30:00+00:00",
                "2026-01-01T00:45:00+00:00"
            ]
        );
        assert_eq!(
            ticks(&cron("@daily", "UTC"), "2026-01-01T00:00:00Z", 2),
            ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]
        );
        assert_eq!(
            ticks(&cron("*/20 * * * * *", "UTC"), "2026-01-01T00:00:05Z", 3),
            [
                "2026-01-01T00:00:20+00:00",
                "2026-01-01T00:00:40+00:00",
                "2026-01-01T00:01:00+00:00"
            ]
        );
        // Last day of February, in a leap year and not.
        assert_eq!(
            ticks(&cron("0 12 L 2 *", "UTC"), "2027-01-01T00:00:00Z", 2),
            ["2027-02-28T12:00:00+00:00", "2028-02-29T12:00:00+00:00"]
        );
    }

    #[test]
    fn a_fixed_time_in_a_spring_forward_gap_fires_just_after_it() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
        let t = cron("30 2 * * *", "America/New_York");
        assert_eq!(
            ticks(&t, "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08T07:00:00Z", // 03:00 EDT, just after the gap
                "2026-03-09T06:30:00Z", // 02:30 EDT
                "2026-03-10T06:30:00Z",
            ]
            .map(|s| utc(s).to_rfc3339())
        );
    }

    #[test]
    fn a_fixed_time_repeated_by_fall_back_fires_once() {
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let t = cron("30 1 * * *", "America/New_York");
        assert_eq!(
            ticks(&t, "2026-10-31T12:00:00Z", 2),
            [
                utc("2026-11-01T05:30:00Z").to_rfc3339(),
                utc("2026-11-02T06:30:00Z").to_rfc3339()
            ]
        );
        // Asked from inside the second pass, it waits for the next day.
        assert_eq!(
            t.next_after(utc("2026-11-01T06:10:00Z"), utc("2026-11-01T06:10:00Z")),
            Some(utc("2026-11-02T06:30:00Z"))
        );
    }

    #[test]
    fn a_wildcard_hour_fires_in_both_passes_of_a_repeated_hour() {
        let t = cron("*/30 * * * *", "America/New_York");
        assert_eq!(
            ticks(&t, "2026-11-01T05:00:00Z", 5),
            [
                "2026-11-01T05:30:00Z", // 01:30 EDT
                "2026-11-01T06:00:00Z", // 01:00 EST
                "2026-11-01T06:30:00Z", // 01:30 EST
                "2026-11-01T07:00:00Z", // 02:00 EST
                "2026-11-01T07:30:00Z",
            ]
            .map(|s| utc(s).to_rfc3339())
        );
        // And across the spring-forward gap, every real half hour that exists locally.
        assert_eq!(
            ticks(&t, "2026-03-08T06:00:00Z", 3),
            [
                "2026-03-08T06:30:00Z", // 01:30 EST
                "2026-03-08T07:00:00Z", // 03:00 EDT
                "2026-03-08T07:30:00Z",
            ]
            .map(|s| utc(s).to_rfc3339())
        );
    }

    #[test]
    fn intervals_count_from_their_anchor() {
        let t = Timetable::new(&Timing::Interval { millis: 1500 }).expect("valid");
        let anchor = utc("2026-01-01T00:00:00Z");
        assert_eq!(
            t.next_after(anchor, anchor),
            Some(utc("2026-01-01T00:00:01.5Z"))
        );
        assert_eq!(
            t.next_after(anchor, utc("2026-01-01T00:00:03Z")),
            Some(utc("2026-01-01T00:00:04.5Z"))
        );
        assert_eq!(
            t.next_after(anchor, utc("2025-12-31T00:00:00Z")),
            Some(anchor),
            "before its anchor, the anchor is the first tick"
        );
        let far = Timetable::new(&Timing::Interval { millis: u64::MAX });
        assert!(far.is_err(), "an interval too long to count is refused");
    }

    #[test]
    fn an_expression_that_never_fires_is_refused() {
        let err = Timetable::new(&Timing::Cron {
            expression: "0 0 31 4 *".to_owned(),
            time_zone: "UTC".to_owned(),
        })
        .expect_err("31 April never comes");
        assert!(err.to_string().contains("never fires"), "{err}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Every tick is after the time asked about, ticks strictly increase, and each
            /// one matches the expression in its zone.
            #[test]
            fn ticks_increase_and_match(
                start in 1_700_000_000i64..1_900_000_000,
                expr in prop::sample::select(vec![
                    "*/7 * * * *", "0 */3 * * *", "30 1 * * *", "0 2 * * 0", "15 */2 * * 1-5",
                    "0 0 L * *", "*/45 * * * * *",
                ]),
                zone in prop::sample::select(vec![
                    "UTC", "America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata",
                ]),
            ) {
                let t = cron(expr, zone);
                let Kind::Cron { cron: c, zone: tz, .. } = &t.0 else { unreachable!() };
                let mut at = DateTime::from_timestamp(start, 0).expect("in range");
                for _ in 0..20 {
                    let next = t.next_after(at, at).expect("fires");
                    prop_assert!(next > at, "{expr} in {zone}: {next} not after {at}");
                    // It matches, or it is the first instant after a daylight-saving gap
                    // that swallowed the time it names.
                    let local = next.with_timezone(tz);
                    let before = local.naive_local() - chrono::Duration::seconds(1);
                    let after_gap = matches!(
                        tz.from_local_datetime(&before),
                        chrono::LocalResult::None
                    );
                    prop_assert!(
                        c.is_time_matching(&local).unwrap_or(false) || after_gap,
                        "{expr} in {zone}: {next} does not match"
                    );
                    at = next;
                }
            }
        }
    }
}
