//! The folder layout: the file names in an event folder and the event id, its printing and
//! parsing.
//!
//! `<events-dir>/<id>/` with `id` = the UTC time of the first motion and a counter,
//! `YYYYMMDDTHHMMSSZ-NNNN` (`20261124T182900Z-0001`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Metadata file name.
pub const META: &str = "event.json";
/// `event.json` while being written (synced, then renamed to [`META`]).
pub const META_TMP: &str = "event.json.tmp";
/// Clip file name when complete.
pub const CLIP: &str = "clip.avi";
/// Clip file name while being written.
pub const CLIP_PART: &str = "clip.avi.part";
/// The clip as H.264 in MP4, made from `clip.avi` on demand by web-svc (for phones); deleted
/// with the folder.
pub const CLIP_MP4: &str = "clip.mp4";
/// `clip.mp4` while ffmpeg writes it (renamed when done; a left-over one is removed by the
/// next job).
pub const CLIP_MP4_PART: &str = "clip.mp4.part";
/// Poster file name.
pub const POSTER: &str = "poster.jpg";
/// The poster while being written.
pub const POSTER_TMP: &str = "poster.jpg.tmp";
/// Longest id accepted from outside (a real one is 21 bytes).
pub const MAX_ID_LEN: usize = 64;
/// Highest counter in an id: ids have four digits, so 9999 events can start in one second.
pub const MAX_COUNTER: u32 = 9999;

/// Milliseconds since the epoch now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `(year, month, day)` of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMMDDTHHMMSSZ` of a time in ms since the epoch.
pub fn utc_stamp(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The id of an event starting at `start_unix_ms` with `counter` (1 to [`MAX_COUNTER`]).
pub fn format_id(start_unix_ms: u64, counter: u32) -> String {
    format!("{}-{counter:04}", utc_stamp(start_unix_ms))
}

/// The start time encoded in an event id, ms since the epoch; `None` if it is not an id.
pub fn parse_id(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    if b.len() < 17
        || b[8] != b'T'
        || b[15] != b'Z'
        || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| id.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// The counter of an event id (the digits after the last `-`), if it is an id.
pub fn id_counter(id: &str) -> Option<u32> {
    parse_id(id)?;
    id.rsplit('-').next()?.parse().ok()
}

/// Whether `id` could name an event folder: only letters, digits and `-`, at most
/// [`MAX_ID_LEN`] bytes, so it can never lead out of the events directory. Weaker than
/// [`parse_id`]: a folder a user renamed can still be opened and deleted.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_utc() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        let ms = 1_795_977_340_000; // 2026-11-28T...
        let s = utc_stamp(ms);
        assert_eq!(parse_id(&format!("{s}-0001")), Some(ms));
        assert_eq!(parse_id(&format_id(ms, 7)), Some(ms));
        assert_eq!(id_counter(&format_id(ms, 7)), Some(7));
        assert_eq!(utc_stamp(951_782_400_000), "20000229T000000Z");
        assert_eq!(parse_id("../etc"), None);
        assert_eq!(parse_id("20261324T000000Z-0001"), None);
    }

    #[test]
    fn ids_refuse_path_tricks() {
        for bad in [
            "",
            "..",
            "a/b",
            "../etc",
            "a%2f",
            "x".repeat(65).as_str(),
            "a\0b",
            "é",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        assert!(valid_id("20261124T182900Z-0001"));
    }
}
