//! Time as UTC unix seconds, plus the calendar conversions the API needs
//! (`YYYY-MM-DD` filters, `YYYY-MM-DD HH:MM:SS` display). Pure arithmetic (the days-from-civil
//! algorithm), so the domain needs no clock or time-zone crate; callers pass `now` in.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// A system time as unix milliseconds (times before the epoch count as the epoch). The caller
/// reads the clock; this only converts.
#[must_use]
pub fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A UTC instant in whole seconds since the unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(i64);

impl UnixTime {
    /// Wraps unix seconds.
    #[must_use]
    pub const fn from_secs(secs: i64) -> Self {
        UnixTime(secs)
    }

    /// Unix seconds.
    #[must_use]
    pub const fn secs(self) -> i64 {
        self.0
    }

    /// A system time as whole unix seconds (times before the epoch count as the epoch). The
    /// caller reads the clock; this only converts.
    #[must_use]
    pub fn from_system(t: SystemTime) -> Self {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// This instant plus `days` days (saturating).
    #[must_use]
    pub const fn plus_days(self, days: i64) -> Self {
        UnixTime(self.0.saturating_add(days.saturating_mul(DAY)))
    }
}

impl fmt::Display for UnixTime {
    /// `YYYY-MM-DD HH:MM:SS`, UTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(DAY);
        let rest = self.0.rem_euclid(DAY);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        )
    }
}

/// A calendar date (UTC) parsed from exactly `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    days: i64,
}

impl Date {
    /// Parses `YYYY-MM-DD` strictly: four-digit year, real month and day (leap years counted).
    #[must_use]
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = &s[r];
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())
                .flatten()
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return None;
        }
        Some(Date {
            days: days_from_civil(y, m, d),
        })
    }

    /// The first second of this date.
    #[must_use]
    pub fn start(self) -> UnixTime {
        UnixTime(self.days * DAY)
    }

    /// The first second of the next date (an exclusive end bound).
    #[must_use]
    pub fn end_exclusive(self) -> UnixTime {
        UnixTime((self.days + 1) * DAY)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_system_times() {
        use std::time::Duration;
        let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_999);
        assert_eq!(UnixTime::from_system(t), UnixTime::from_secs(1_764_000_000));
        assert_eq!(
            UnixTime::from_system(UNIX_EPOCH - Duration::from_secs(5)),
            UnixTime::from_secs(0)
        );
        assert_eq!(unix_millis(t), 1_764_000_000_999);
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
    use proptest::prelude::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(UnixTime::from_secs(0).to_string(), "1970-01-01 00:00:00");
        assert_eq!(
            UnixTime::from_secs(1_722_336_000).to_string(),
            "2024-07-30 10:40:00"
        );
        assert_eq!(
            UnixTime::from_secs(951_782_400).to_string(),
            "2000-02-29 00:00:00"
        );
    }

    #[test]
    fn parses_only_real_dates() {
        assert_eq!(
            Date::parse("2024-07-30").map(Date::start),
            Some(UnixTime::from_secs(1_722_297_600))
        );
        assert!(Date::parse("2024-02-29").is_some());
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-1-01",
            "invalid-date",
            "2024-01-32",
            "+024-01-01",
            "2024-01-0a",
        ] {
            assert!(Date::parse(bad).is_none(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn day_numbers_round_trip(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
