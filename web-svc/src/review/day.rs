//! Days and clock times as the viewer reads them: at a fixed offset from UTC (the browser's,
//! sent in the `mecam_tz` cookie by the pages' script, else `[web] timezone`), with "Today"
//! and "Yesterday". A fixed offset, not the time-zone database: the browser's script shows
//! every `<time>` in its own zone, daylight saving included; the server's rendering is the
//! page without JavaScript and the day headings, where an offset is enough.

/// The largest offset from UTC there is (UTC+14, Kiribati), in minutes.
pub const MAX_OFFSET_MIN: i32 = 14 * 60;
/// The cookie the pages' script sets to the browser's offset from UTC, in minutes east.
pub const TZ_COOKIE: &str = "mecam_tz";

const MS_PER_DAY: i64 = 86_400_000;
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `[web] timezone`: `UTC`, or an offset `+HH:MM` / `-HH:MM` (`+01:00` for Paris in winter);
/// minutes east of UTC.
///
/// # Errors
/// Anything else, saying what is accepted.
pub fn parse_offset(s: &str) -> Result<i32, String> {
    let bad = || {
        format!(
            "[web] timezone {s:?} is not UTC or an offset like +01:00 or -05:00 (at most 14 hours); pages show times in the browser's own time zone anyway, this is for browsers without JavaScript"
        )
    };
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return Ok(0);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "00"));
    let digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return Err(bad());
    }
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let off = sign * (h * 60 + m);
    if m >= 60 || off.abs() > MAX_OFFSET_MIN {
        return Err(bad());
    }
    Ok(off)
}

/// The offset in a `mecam_tz` cookie value, if it is one.
pub fn cookie_offset(cookies: &str) -> Option<i32> {
    cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == TZ_COOKIE)
        .and_then(|(_, v)| v.parse::<i32>().ok())
        .filter(|v| v.abs() <= MAX_OFFSET_MIN)
}

/// A moment as the viewer's clock shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Milliseconds since the epoch at the viewer's offset (not a real instant).
    ms: i64,
}

impl Local {
    /// `unix_ms` at `offset_min` minutes east of UTC.
    pub fn new(unix_ms: u64, offset_min: i32) -> Local {
        // Saturating: a damaged event.json's time shows as nonsense, never a panic.
        let ms = i64::try_from(unix_ms).unwrap_or(i64::MAX);
        Local {
            ms: ms.saturating_add(i64::from(offset_min) * 60_000),
        }
    }

    /// `YYYYMMDDTHHMMSS` of the local clock.
    fn stamp(self) -> String {
        ::events::utc_stamp(self.ms.max(0) as u64)
    }

    /// The day, `YYYY-MM-DD`: the key of the day filter.
    pub fn day(self) -> String {
        let s = self.stamp();
        format!("{}-{}-{}", &s[0..4], &s[4..6], &s[6..8])
    }

    /// `HH:MM:SS`.
    pub fn clock(self) -> String {
        let s = self.stamp();
        format!("{}:{}:{}", &s[9..11], &s[11..13], &s[13..15])
    }

    /// "Today", "Yesterday", or e.g. "Tuesday 24 November 2026", as seen at `now`.
    pub fn day_words(self, now: Local) -> String {
        let (d, today) = (
            self.ms.div_euclid(MS_PER_DAY),
            now.ms.div_euclid(MS_PER_DAY),
        );
        match today - d {
            0 => "Today".into(),
            1 => "Yesterday".into(),
            _ => {
                let s = self.stamp();
                let month: usize = s[4..6].parse().unwrap_or(1);
                format!(
                    "{} {} {} {}",
                    WEEKDAYS[(d + 4).rem_euclid(7) as usize],
                    s[6..8].trim_start_matches('0'),
                    MONTHS[month.clamp(1, 12) - 1],
                    &s[0..4]
                )
            }
        }
    }
}

/// `2026-11-24T18:29:00Z` for a `<time datetime>`.
pub fn iso_utc(unix_ms: u64) -> String {
    let s = ::events::utc_stamp(unix_ms);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

/// Whether `day` is a `YYYY-MM-DD` date (the day filter's value).
pub fn valid_day(day: &str) -> bool {
    let b = day.as_bytes();
    day.is_ascii()
        && b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && ::events::parse_id(&format!(
            "{}{}{}T000000Z-0001",
            &day[0..4],
            &day[5..7],
            &day[8..10]
        ))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-24 18:29:00 UTC, a Tuesday.
    const T: u64 = 1_795_544_940_000;

    #[test]
    fn offsets_parse_and_bad_ones_say_what_is_accepted() {
        assert_eq!(parse_offset("UTC"), Ok(0));
        assert_eq!(parse_offset("+01:00"), Ok(60));
        assert_eq!(parse_offset("-05:30"), Ok(-330));
        assert_eq!(parse_offset("+14"), Ok(840));
        for bad in [
            "Europe/Paris",
            "+15:00",
            "1:00",
            "+1:00",
            "+01:60",
            "",
            "+",
            "+٠١:00",
        ] {
            let e = parse_offset(bad).unwrap_err();
            assert!(e.contains("+01:00"), "{bad}: {e}");
        }
        assert_eq!(cookie_offset("a=b; mecam_tz=-300; c=d"), Some(-300));
        assert_eq!(cookie_offset("mecam_tz=99999"), None);
        assert_eq!(cookie_offset("mecam_tz=x"), None);
    }

    #[test]
    fn days_and_clocks_at_an_offset() {
        let utc = Local::new(T, 0);
        assert_eq!(
            (utc.day(), utc.clock()),
            ("2026-11-24".into(), "18:29:00".into())
        );
        let tokyo = Local::new(T, 9 * 60);
        assert_eq!(
            (tokyo.day(), tokyo.clock()),
            ("2026-11-25".into(), "03:29:00".into())
        );
        assert_eq!(utc.day_words(Local::new(T + 3_600_000, 0)), "Today");
        assert_eq!(utc.day_words(Local::new(T + 86_400_000, 0)), "Yesterday");
        assert_eq!(
            utc.day_words(Local::new(T + 3 * 86_400_000, 0)),
            "Tuesday 24 November 2026"
        );
        // Late evening in New York is still "today" there, though it is tomorrow in UTC.
        let ny = Local::new(T + 5 * 3_600_000, -300);
        assert_eq!(
            ny.day_words(Local::new(T + 5 * 3_600_000 + 60_000, -300)),
            "Today"
        );
        assert_eq!(iso_utc(T), "2026-11-24T18:29:00Z");
        // Times from a damaged event.json: shown as nonsense, never a panic.
        for ms in [0, u64::MAX, i64::MAX as u64] {
            for off in [-MAX_OFFSET_MIN, 0, MAX_OFFSET_MIN] {
                let l = Local::new(ms, off);
                let _ = (l.day(), l.clock(), l.day_words(utc), iso_utc(ms));
            }
        }
        assert!(valid_day("2026-11-24") && !valid_day("2026-13-24") && !valid_day("20261124"));
        assert!(!valid_day("2026-11-2x") && !valid_day("../../etc/"));
    }
}
