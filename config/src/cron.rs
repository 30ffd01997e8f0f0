//! Five-field cron schedules (`minute hour day-of-month month day-of-week`, UTC), enough
//! for snapshot schedules like `0 2 * * 0` (Sundays 02:00).
//!
//! Each field takes `*`, `N`, `A-B`, lists `A,B`, and steps `*/N` or `A-B/N`. Day of week
//! is 0-7 with 0 and 7 both Sunday. As in cron, when both day fields are restricted a day
//! matching either one fires.

use std::str::FromStr;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!("{s:?} has {} fields; use 5: minute hour day-of-month month day-of-week, e.g. \"0 2 * * 0\"", f.len()));
        }
        let weekdays = field(f[4], 0, 7, "day of week")?;
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        Ok(Schedule {
            minutes: field(f[0], 0, 59, "minute")?,
            hours: field(f[1], 0, 23, "hour")? as u32,
            days: field(f[2], 1, 31, "day of month")? as u32,
            months: field(f[3], 1, 12, "month")? as u16,
            weekdays: weekdays as u8,
            days_restricted: f[2] != "*",
            weekdays_restricted: f[4] != "*",
        })
    }
}

fn field(text: &str, lo: u32, hi: u32, what: &str) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let bad = || format!("{what} {part:?}: use *, N, A-B, */N or A-B/N within {lo}-{hi}");
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(bad)?),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)
        } else {
            let n = range.parse().map_err(|_| bad())?;
            (n, n)
        };
        if a < lo || b > hi || a > b {
            return Err(bad());
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Schedule {
    /// The first whole minute strictly after `unix_secs` at which the schedule fires, in
    /// Unix seconds (UTC); `None` if none within 5 years (e.g. `0 0 31 2 *`).
    pub fn next_after(&self, unix_secs: i64) -> Option<i64> {
        let mut t = (unix_secs.div_euclid(60) + 1) * 60;
        let limit = t + 5 * 366 * 86_400;
        while t < limit {
            let days = t.div_euclid(86_400);
            let (_, month, day) = civil_from_days(days);
            let weekday = (days + 4).rem_euclid(7) as u32;
            let dom = self.days & (1 << day) != 0;
            let dow = self.weekdays & (1 << weekday) != 0;
            let day_ok = match (self.days_restricted, self.weekdays_restricted) {
                (true, true) => dom || dow,
                _ => dom && dow,
            };
            if self.months & (1 << month) == 0 || !day_ok {
                t = (days + 1) * 86_400;
                continue;
            }
            let secs = t.rem_euclid(86_400);
            let (hour, minute) = ((secs / 3600) as u32, ((secs % 3600) / 60) as u32);
            if self.hours & (1 << hour) != 0 && self.minutes & (1 << minute) != 0 {
                return Some(t);
            }
            t += 60;
        }
        None
    }
}

/// (year, month 1-12, day 1-31) of a day number since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekly_sunday_two_am() {
        let s: Schedule = "0 2 * * 0".parse().unwrap();
        // 2026-11-23 12:00 UTC is a Monday; the next Sunday 02:00 is 2026-11-29.
        let monday_noon = 1_795_435_200;
        assert_eq!(s.next_after(monday_noon), Some(1_795_917_600));
        assert_eq!(
            s.next_after(1_795_917_600),
            Some(1_795_917_600 + 7 * 86_400)
        );
    }

    #[test]
    fn steps_lists_and_errors() {
        let s: Schedule = "*/15 * * * *".parse().unwrap();
        assert_eq!(s.next_after(0), Some(900));
        // 1970-01-01 was a Thursday, within 1-5.
        let s: Schedule = "30 1,13 * * 1-5".parse().unwrap();
        assert_eq!(s.next_after(0), Some(3600 + 1800));
        let sat: Schedule = "0 0 * * 6".parse().unwrap();
        assert_eq!(sat.next_after(0), Some(2 * 86_400));
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "a * * * *",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }
}
