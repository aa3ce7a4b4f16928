//! STIX timestamps: RFC 3339, UTC, `Z`; parsed leniently from what datasets hold.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// A point in time with microsecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    micros: i64,
}

impl Timestamp {
    /// A time given in milliseconds since the Unix epoch (how the node records times).
    pub fn from_millis(millis: i64) -> Self {
        Self::from_micros(millis.saturating_mul(1000))
    }

    pub fn from_micros(micros: i64) -> Self {
        Self { micros }
    }

    pub fn from_unix_seconds_f64(secs: f64) -> Option<Self> {
        let micros = (secs * 1e6).round();
        (micros.is_finite() && micros.abs() < 2.5e17).then(|| Self::from_micros(micros as i64))
    }

    pub fn micros(self) -> i64 {
        self.micros
    }

    /// Parses RFC 3339 (`2024-06-01T08:00:00Z`, any offset), `YYYY-mm-dd HH:MM:SS` (with
    /// optional fraction) read in `naive_offset`, or a Unix time: seconds (10 digits or a
    /// decimal fraction) or milliseconds (13 digits).
    pub fn parse(s: &str, naive_offset: UtcOffset) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        if s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Self::parse_unix(s);
        }
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Some(Self::from_offset(t));
        }
        let naive = format_description!(
            version = 2,
            "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        PrimitiveDateTime::parse(s, naive)
            .ok()
            .map(|t| Self::from_offset(t.assume_offset(naive_offset)))
    }

    fn parse_unix(s: &str) -> Option<Self> {
        let digits = s.trim_start_matches('-');
        if !s.contains('.') && digits.len() >= 13 {
            let ms: i64 = s.parse().ok()?;
            return Some(Self::from_micros(ms.checked_mul(1000)?));
        }
        Self::from_unix_seconds_f64(s.parse().ok()?)
    }

    fn from_offset(t: OffsetDateTime) -> Self {
        Self::from_micros((t.unix_timestamp_nanos() / 1000) as i64)
    }

    /// Exactly millisecond precision (`...T00:00:00.000Z`), as STIX requires of `created` and
    /// `modified`. Sub-millisecond digits are truncated, which keeps ordering.
    pub fn to_millis_string(self) -> String {
        let mut out = self.seconds_text();
        out.push('.');
        push_digits(
            &mut out,
            (self.micros.rem_euclid(1_000_000) / 1000) as u32,
            3,
        );
        out.push('Z');
        out
    }

    /// Exactly microsecond precision (`...T00:00:00.000000Z`), as TAXII writes `date_added`
    /// and versions.
    pub fn to_micros_string(self) -> String {
        let mut out = self.seconds_text();
        out.push('.');
        push_digits(&mut out, self.micros.rem_euclid(1_000_000) as u32, 6);
        out.push('Z');
        out
    }

    /// `YYYY-MM-DDTHH:MM:SS`, written digit by digit (this runs for every row).
    fn seconds_text(self) -> String {
        let t = self.to_offset();
        let mut out = String::with_capacity(32);
        push_digits(&mut out, t.year().max(0) as u32, 4);
        out.push('-');
        push_digits(&mut out, u8::from(t.month()) as u32, 2);
        out.push('-');
        push_digits(&mut out, t.day() as u32, 2);
        out.push('T');
        push_digits(&mut out, t.hour() as u32, 2);
        out.push(':');
        push_digits(&mut out, t.minute() as u32, 2);
        out.push(':');
        push_digits(&mut out, t.second() as u32, 2);
        out
    }

    pub fn to_offset(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.micros as i128 * 1000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z`: no fraction for whole seconds, milliseconds when
/// they suffice, else microseconds.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.seconds_text();
        let micros = self.micros.rem_euclid(1_000_000) as u32;
        if micros != 0 && micros.is_multiple_of(1000) {
            out.push('.');
            push_digits(&mut out, micros / 1000, 3);
        } else if micros != 0 {
            out.push('.');
            push_digits(&mut out, micros, 6);
        }
        out.push('Z');
        f.write_str(&out)
    }
}

/// Appends `n` as exactly `width` decimal digits (zero-padded; `n` must fit).
fn push_digits(out: &mut String, n: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        out.push(char::from(b'0' + ((n / div) % 10) as u8));
        div /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Timestamp::parse(s, UtcOffset::UTC).unwrap().to_string()
    }

    #[test]
    fn parses_dataset_times() {
        assert_eq!(p("1697326037.992695"), "2023-10-14T23:27:17.992695Z");
        assert_eq!(p("1697326037"), "2023-10-14T23:27:17Z");
        assert_eq!(p("1697326037992"), "2023-10-14T23:27:17.992Z");
        assert_eq!(p("2024-06-01T08:00:00+08:00"), "2024-06-01T00:00:00Z");
        assert_eq!(p("2024-06-01 08:00:00"), "2024-06-01T08:00:00Z");
        assert_eq!(p("2024-06-01T08:00:00.5"), "2024-06-01T08:00:00.500Z");
        let cst = UtcOffset::from_hms(8, 0, 0).unwrap();
        assert_eq!(
            Timestamp::parse("2024-06-01 08:00:00", cst)
                .unwrap()
                .to_string(),
            "2024-06-01T00:00:00Z"
        );
        assert!(Timestamp::parse("yesterday", UtcOffset::UTC).is_none());
        let t = Timestamp::parse("1697326037.992695", UtcOffset::UTC).unwrap();
        assert_eq!(t.to_millis_string(), "2023-10-14T23:27:17.992Z");
        assert_eq!(
            Timestamp::from_micros(0).to_millis_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert!(Timestamp::parse("", UtcOffset::UTC).is_none());
    }
}
