//! Timestamps: RFC 3339 parsing (Docker's and the CRI runtimes' flavours) and the
//! fixed-width UTC form every event carries.
//!
//! Times are kept as nanoseconds since the Unix epoch in an `i64` (good until 2262).
//! Parsing accepts what Go's `RFC3339Nano` writes — 0 to 9 fraction digits, `Z` or a
//! `±hh:mm` offset (CRI-O) — and nothing looser. Formatting always writes 9 fraction
//! digits and `Z`, so event times sort as strings and compare across runtimes.
//! Neither direction allocates.

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type Nanos = i64;

use std::cell::Cell;

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

thread_local! {
    /// The date and time of day (`YYYY-MM-DDTHH:MM:SS`) last parsed on this thread, and
    /// its seconds since the epoch: the lines of a file mostly share them, and then
    /// only the fraction and the offset are read.
    static LAST_SECOND: Cell<Option<([u8; 19], i64)>> = const { Cell::new(None) };
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fffffffff](Z|±hh:mm)`; `None` for anything else.
pub fn parse_rfc3339(s: &[u8]) -> Option<Nanos> {
    if s.len() < 20 {
        return None;
    }
    let head: [u8; 19] = s[..19].try_into().expect("19 bytes");
    let secs = match LAST_SECOND.with(Cell::get) {
        Some((last, secs)) if last == head => secs,
        _ => {
            let secs = parse_second(&head)?;
            LAST_SECOND.with(|c| c.set(Some((head, secs))));
            secs
        }
    };
    let (frac, rest) = parse_fraction(&s[19..])?;
    let offset_secs = parse_offset(rest)?;
    (secs - offset_secs).checked_mul(NANOS_PER_SEC)?.checked_add(frac)
}

/// `YYYY-MM-DDTHH:MM:SS` as seconds since the epoch, read as UTC.
fn parse_second(s: &[u8; 19]) -> Option<i64> {
    let year = digits(s, 0, 4)?;
    let month = digits(s, 5, 2)?;
    let day = digits(s, 8, 2)?;
    let hour = digits(s, 11, 2)?;
    let minute = digits(s, 14, 2)?;
    let second = digits(s, 17, 2)?;
    if s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't') || s[13] != b':' || s[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // Go accepts a leap second's `60` on input; fold it into the next second's start.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * SECS_PER_DAY + hour * 3600 + minute * 60 + second)
}

fn digits(s: &[u8], at: usize, n: usize) -> Option<i64> {
    let mut v = 0i64;
    for &c in s.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

/// Reads an optional `.` and 1–9 digits; returns nanoseconds and what follows. One
/// pass over the digits (a line's time is parsed for every line).
fn parse_fraction(s: &[u8]) -> Option<(i64, &[u8])> {
    const SCALE: [i64; 10] = [0, 100_000_000, 10_000_000, 1_000_000, 100_000, 10_000, 1_000, 100, 10, 1];
    let Some(digits) = s.strip_prefix(b".") else {
        return Some((0, s));
    };
    let mut v = 0i64;
    let mut n = 0;
    while let Some(&c) = digits.get(n) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if n == 9 {
            return None;
        }
        v = v * 10 + i64::from(d);
        n += 1;
    }
    (n > 0).then(|| (v * SCALE[n], &digits[n..]))
}

/// `Z` → 0; `+hh:mm` / `-hh:mm` → seconds east of UTC. Nothing may follow.
fn parse_offset(s: &[u8]) -> Option<i64> {
    match s {
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let h = digits(s, 1, 2)?;
            let m = digits(s, 4, 2)?;
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => None,
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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
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

/// Length of the formatted form: `2026-11-21T10:00:00.123456789Z`.
pub const FORMATTED_LEN: usize = 30;

/// Writes times as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, remembering the last second so that
/// a run of events in the same second costs only the nine fraction digits.
#[derive(Debug, Clone)]
pub struct TimeFormatter {
    cached_sec: i64,
    cached: [u8; FORMATTED_LEN],
}

impl Default for TimeFormatter {
    fn default() -> Self {
        Self { cached_sec: i64::MIN, cached: [0; FORMATTED_LEN] }
    }
}

impl TimeFormatter {
    /// Returns the 30-byte UTC form of `t`. Years outside 0000–9999 are clamped.
    pub fn format(&mut self, t: Nanos) -> &[u8; FORMATTED_LEN] {
        let sec = t.div_euclid(NANOS_PER_SEC);
        let nanos = t.rem_euclid(NANOS_PER_SEC);
        if sec != self.cached_sec {
            self.cached_sec = sec;
            self.write_seconds(sec);
        }
        write_padded(&mut self.cached[20..29], nanos as u64);
        &self.cached
    }

    fn write_seconds(&mut self, sec: i64) {
        let (y, mo, d) = civil_from_days(sec.div_euclid(SECS_PER_DAY));
        let sod = sec.rem_euclid(SECS_PER_DAY);
        let b = &mut self.cached;
        write_padded(&mut b[0..4], y.clamp(0, 9999) as u64);
        b[4] = b'-';
        write_padded(&mut b[5..7], mo as u64);
        b[7] = b'-';
        write_padded(&mut b[8..10], d as u64);
        b[10] = b'T';
        write_padded(&mut b[11..13], (sod / 3600) as u64);
        b[13] = b':';
        write_padded(&mut b[14..16], (sod / 60 % 60) as u64);
        b[16] = b':';
        write_padded(&mut b[17..19], (sod % 60) as u64);
        b[19] = b'.';
        b[29] = b'Z';
    }
}

fn write_padded(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Formats one time; for a stream of events keep a [`TimeFormatter`].
pub fn format_rfc3339(t: Nanos) -> String {
    let mut f = TimeFormatter::default();
    String::from_utf8_lossy(f.format(t)).into_owned()
}

/// The wall clock now, in [`Nanos`].
pub fn now() -> Nanos {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as Nanos,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<Nanos> {
        parse_rfc3339(s.as_bytes())
    }

    #[test]
    fn parses_containerd_and_docker_forms() {
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(p("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(p("2016-10-06T00:17:09.669794202Z"), Some(1_475_713_029_669_794_202));
        assert_eq!(p("2016-10-06T00:17:09.669794202z"), Some(1_475_713_029_669_794_202));
    }

    /// Every count of fraction digits from 1 to 9, trimmed as Go trims them, and the
    /// characters next to `0` and `9` ending the digits.
    #[test]
    fn every_fraction_length_reads_as_nanoseconds() {
        let second = 1_475_713_029 * NANOS_PER_SEC;
        for n in 1..=9 {
            let digits = &"123456789"[..n];
            let nanos: i64 = format!("{digits:0<9}").parse().unwrap();
            assert_eq!(p(&format!("2016-10-06T00:17:09.{digits}Z")), Some(second + nanos), "{digits}");
            assert_eq!(p(&format!("2016-10-06T00:17:09.{digits}+00:00")), Some(second + nanos), "{digits}");
            for next in ['/', ':', 'a'] {
                assert_eq!(p(&format!("2016-10-06T00:17:09.{digits}{next}Z")), None, "{digits}{next}");
            }
        }
        assert_eq!(p("2016-10-06T00:17:09.999999999Z"), Some(second + 999_999_999));
        assert_eq!(p("2016-10-06T00:17:09.000000000Z"), Some(second));
    }

    #[test]
    fn applies_cri_o_offsets() {
        assert_eq!(p("2016-10-06T02:17:09.669794202+02:00"), p("2016-10-06T00:17:09.669794202Z"));
        assert_eq!(p("2016-10-05T23:47:09.669794202-00:30"), p("2016-10-06T00:17:09.669794202Z"));
    }

    #[test]
    fn rejects_near_misses() {
        for bad in [
            "", "2016-10-06", "2016-10-06 00:17:09Z", "2016-13-06T00:17:09Z", "2016-02-30T00:17:09Z",
            "2016-10-06T00:17:09.Z", "2016-10-06T00:17:09.1234567890Z", "2016-10-06T00:17:09",
            "2016-10-06T00:17:09+0200", "2016-10-06T00:17:09Zjunk", "2016-10-06T24:00:00Z",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    /// The second remembered from the last parse decides only the date and time of
    /// day: the fraction and offset are read every time, and near misses sharing a
    /// remembered second are still refused.
    #[test]
    fn a_remembered_second_still_reads_fraction_and_offset() {
        let second = 1_475_713_029 * NANOS_PER_SEC;
        assert_eq!(p("2016-10-06T00:17:09Z"), Some(second));
        assert_eq!(p("2016-10-06T00:17:09.5Z"), Some(second + 500_000_000));
        assert_eq!(p("2016-10-06T00:17:09.000000001+00:30"), Some(second - 1_800 * NANOS_PER_SEC + 1));
        for bad in ["2016-10-06T00:17:09", "2016-10-06T00:17:09.Z", "2016-10-06T00:17:09Zjunk", "2016-10-06T00:17:09.1234567890Z"] {
            assert_eq!(p(bad), None, "{bad}");
        }
        assert_eq!(p("2016-10-06T00:17:10Z"), Some(second + NANOS_PER_SEC));
        assert_eq!(p("2016-10-06T00:17:60Z"), p("2016-10-06T00:18:00Z"), "a leap second folds into the next");
        assert_eq!(p("2016-10-06T00:17:61Z"), None);
        assert_eq!(p("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0Z"), None, "nothing remembered matches garbage");
    }

    #[test]
    fn formats_fixed_width_utc() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(format_rfc3339(1_475_713_029_669_794_202), "2016-10-06T00:17:09.669794202Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn round_trips_across_four_centuries() {
        let mut f = TimeFormatter::default();
        let mut t: i64 = -2_208_988_800 * NANOS_PER_SEC; // 1900
        while t < 7_258_118_400 * NANOS_PER_SEC {
            let s = *f.format(t);
            assert_eq!(parse_rfc3339(&s), Some(t), "{}", String::from_utf8_lossy(&s));
            t += 86_399_999_999_937; // a day less a bit, so every second-of-day shows up
        }
    }
}
