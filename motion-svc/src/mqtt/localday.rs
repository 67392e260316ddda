//! The local day, for "events today": the UTC offset in effect at a time, from the system's
//! time zone file (`/etc/localtime`, TZif as `zic` writes it), read once at start. No time
//! zone file, or one that cannot be read: UTC, said once in the log.

use std::path::Path;

/// The system's time zone.
pub const LOCALTIME: &str = "/etc/localtime";
/// Largest zone file read (a "fat" one with transitions to 2037 is about 2 to 4 KiB).
pub const MAX_ZONE_BYTES: u64 = 64 * 1024;

/// UTC offsets and when each began: `(unix seconds, offset seconds)`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The offset before the first transition (the file's first local time type).
    base: i32,
    transitions: Vec<(i64, i32)>,
}

impl Zone {
    /// UTC.
    pub fn utc() -> Zone {
        Zone {
            base: 0,
            transitions: Vec::new(),
        }
    }

    /// The system's zone ([`LOCALTIME`]); UTC, with a log line, when it cannot be read.
    pub fn system() -> Zone {
        match Zone::read(Path::new(LOCALTIME)) {
            Ok(z) => z,
            Err(e) => {
                tracing::warn!(
                    "time zone {LOCALTIME}: {e}; MQTT's \"events today\" counts UTC days (set the time zone with timedatectl)"
                );
                Zone::utc()
            }
        }
    }

    /// Reads a TZif file.
    ///
    /// # Errors
    /// Unreadable, too large, or not TZif.
    pub fn read(path: &Path) -> Result<Zone, String> {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_ZONE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 > MAX_ZONE_BYTES {
            return Err(format!("larger than {MAX_ZONE_BYTES} bytes"));
        }
        Zone::parse(&bytes).ok_or_else(|| "not a TZif time zone file".to_owned())
    }

    /// Parses TZif: version 1 (32-bit times) or, from version 2, the 64-bit block.
    pub fn parse(b: &[u8]) -> Option<Zone> {
        let (v1, counts) = header(b)?;
        let data = if v1 == b'\0' {
            block(b.get(44..)?, counts, 4)?
        } else {
            // Skip the version 1 block to the version 2 header.
            let skip = 44 + block_len(counts, 4);
            let (_, counts2) = header(b.get(skip..)?)?;
            block(b.get(skip + 44..)?, counts2, 8)?
        };
        Some(data)
    }

    /// The UTC offset, seconds, in effect at `unix_s`.
    pub fn offset_at(&self, unix_s: i64) -> i32 {
        match self.transitions.partition_point(|(t, _)| *t <= unix_s) {
            0 => self.base,
            i => self.transitions[i - 1].1,
        }
    }

    /// The local day (days since 1970-01-01 local) of `unix_ms`.
    pub fn day(&self, unix_ms: u64) -> i64 {
        let s = (unix_ms / 1000) as i64;
        (s + i64::from(self.offset_at(s))).div_euclid(86_400)
    }
}

/// `[isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt]`.
type Counts = [usize; 6];

fn header(b: &[u8]) -> Option<(u8, Counts)> {
    if b.get(..4)? != b"TZif" {
        return None;
    }
    let mut c = [0usize; 6];
    for (i, n) in c.iter_mut().enumerate() {
        let at = 20 + 4 * i;
        *n = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        // No count can be larger than the file: the sizes below cannot overflow.
        if *n as u64 > MAX_ZONE_BYTES {
            return None;
        }
    }
    Some((b[4], c))
}

fn block_len(c: Counts, time: usize) -> usize {
    let [isut, isstd, leap, timecnt, typecnt, charcnt] = c;
    timecnt * time + timecnt + typecnt * 6 + charcnt + leap * (time + 4) + isstd + isut
}

fn block(b: &[u8], c: Counts, time: usize) -> Option<Zone> {
    let [_, _, _, timecnt, typecnt, _] = c;
    if typecnt == 0 || b.len() < block_len(c, time) {
        return None;
    }
    let times = &b[..timecnt * time];
    let idx = &b[timecnt * time..timecnt * (time + 1)];
    let types = &b[timecnt * (time + 1)..timecnt * (time + 1) + typecnt * 6];
    let utoff = |t: usize| -> Option<i32> {
        let at = t * 6;
        Some(i32::from_be_bytes(types.get(at..at + 4)?.try_into().ok()?))
    };
    let mut transitions = Vec::with_capacity(timecnt);
    for i in 0..timecnt {
        let t = &times[i * time..(i + 1) * time];
        let at = if time == 8 {
            i64::from_be_bytes(t.try_into().ok()?)
        } else {
            i64::from(i32::from_be_bytes(t.try_into().ok()?))
        };
        transitions.push((at, utoff(usize::from(idx[i]))?));
    }
    Some(Zone {
        base: utoff(0)?,
        transitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 2 TZif: a version 1 block with nothing, then `transitions` (unix s, offset).
    fn tzif(base: i32, transitions: &[(i64, i32)]) -> Vec<u8> {
        let mut offsets = vec![base];
        for (_, o) in transitions {
            if !offsets.contains(o) {
                offsets.push(*o);
            }
        }
        let head = |timecnt: usize, typecnt: usize| {
            let mut h = b"TZif2".to_vec();
            h.extend([0u8; 15]);
            for n in [0, 0, 0, timecnt, typecnt, 4] {
                h.extend((n as u32).to_be_bytes());
            }
            h
        };
        // Version 1: one type (UTC), no transitions.
        let mut b = head(0, 1);
        b.extend([0, 0, 0, 0, 0, 0]);
        b.extend(b"UTC\0");
        b.extend(head(transitions.len(), offsets.len()));
        for (t, _) in transitions {
            b.extend(t.to_be_bytes());
        }
        for (_, o) in transitions {
            b.push(offsets.iter().position(|x| x == o).unwrap() as u8);
        }
        for o in &offsets {
            b.extend(o.to_be_bytes());
            b.extend([0, 0]);
        }
        b.extend(b"XYZ\0");
        b
    }

    #[test]
    fn the_offset_follows_the_transitions_and_the_day_is_local() {
        // Berlin-like: +1 h, +2 h from 1000 s, +1 h again from 5000 s.
        let z = Zone::parse(&tzif(3600, &[(1000, 7200), (5000, 3600)])).unwrap();
        assert_eq!(z.offset_at(0), 3600);
        assert_eq!(z.offset_at(1000), 7200);
        assert_eq!(z.offset_at(4999), 7200);
        assert_eq!(z.offset_at(1_000_000), 3600);
        // 23:30 UTC is the next day at +1 h.
        let late = (86_400 * 10 + 23 * 3600 + 1800) * 1000;
        assert_eq!(z.day(late), 11);
        assert_eq!(Zone::utc().day(late), 10);
        // West of Greenwich: 00:30 UTC is still the day before.
        let ny = Zone::parse(&tzif(-5 * 3600, &[])).unwrap();
        assert_eq!(ny.day((86_400 * 10 + 1800) * 1000), 9);
    }

    #[test]
    fn garbage_and_truncated_files_are_refused() {
        assert_eq!(Zone::parse(b"not a zone"), None);
        let mut huge = tzif(3600, &[(1000, 7200)]);
        huge[32..36].copy_from_slice(&u32::MAX.to_be_bytes()); // timecnt of version 1
        assert_eq!(Zone::parse(&huge), None);
        let good = tzif(3600, &[(1000, 7200)]);
        for cut in [10, 44, 60, good.len() - 6] {
            assert_eq!(Zone::parse(&good[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn the_systems_zone_files_parse_when_present() {
        for p in [
            "/usr/share/zoneinfo/Europe/Berlin",
            "/usr/share/zoneinfo/Etc/UTC",
        ] {
            if let Ok(z) = Zone::read(Path::new(p)) {
                // 2026-01-15 and 2026-07-15, noon UTC.
                let (winter, summer) = (1_768_478_400, 1_784_116_800);
                if p.ends_with("Berlin") {
                    assert_eq!((z.offset_at(winter), z.offset_at(summer)), (3600, 7200));
                } else {
                    assert_eq!(z.offset_at(summer), 0);
                }
            }
        }
    }
}
