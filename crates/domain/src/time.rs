//! Clock helpers: milliseconds since the Unix epoch, and the display formats of the wire.

use jiff::tz::{Offset, TimeZone};

use crate::error::Invalid;

pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// The time zone in which record times are shown (`create_time`, `update_time`): the old
/// server wrote local time without a zone, and the front ends display it as it is.
#[derive(Clone, Debug)]
pub struct DisplayZone {
    tz: TimeZone,
    name: String,
}

impl DisplayZone {
    /// The system's local zone (`TZ`, else `/etc/localtime`); UTC when neither names one.
    pub fn system() -> Self {
        let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
        let name = tz.iana_name().unwrap_or("UTC").to_string();
        Self { tz, name }
    }

    pub fn utc() -> Self {
        Self {
            tz: TimeZone::UTC,
            name: "UTC".to_string(),
        }
    }

    /// `system`, an IANA name (`Asia/Shanghai`, `UTC`) or a fixed offset (`+08:00`, `-0530`).
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("system") || s.eq_ignore_ascii_case("local") {
            return Ok(Self::system());
        }
        if let Some(offset) = parse_offset(s) {
            return Ok(Self {
                tz: TimeZone::fixed(offset),
                name: s.to_string(),
            });
        }
        TimeZone::get(s)
            .map(|tz| Self {
                name: tz.iana_name().unwrap_or(s).to_string(),
                tz,
            })
            .map_err(|_| {
                Invalid::new(format!(
                    "{s:?} is not a time zone: give an IANA name such as Asia/Shanghai or UTC, \
                     an offset such as +08:00, or `system`"
                ))
            })
    }

    /// The zone's name as given (`Asia/Shanghai`, `+08:00`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `YYYY-mm-dd HH:MM:SS` in this zone, the `create_time` format of the old server.
    pub fn display_ms(&self, ms: i64) -> String {
        let t = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        t.to_zoned_datetime(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()
    }
}

/// `+08:00`, `+0800`, `-05:30`, `+8`: a fixed offset of at most 18 hours.
fn parse_offset(s: &str) -> Option<Offset> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let rest = &s[1..];
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    if h.is_empty()
        || h.len() > 2
        || m.len() > 2
        || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 18 || m > 59 {
        return None;
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_in_the_zone() {
        let ms = 1_733_665_039_112;
        assert_eq!(DisplayZone::utc().display_ms(ms), "2024-12-08 13:37:19");
        let shanghai = DisplayZone::parse("Asia/Shanghai").unwrap();
        assert_eq!(shanghai.name(), "Asia/Shanghai");
        assert_eq!(shanghai.display_ms(ms), "2024-12-08 21:37:19");
        assert_eq!(
            DisplayZone::parse("+08:00").unwrap().display_ms(ms),
            "2024-12-08 21:37:19"
        );
        assert_eq!(
            DisplayZone::parse("-0530").unwrap().display_ms(ms),
            "2024-12-08 08:07:19"
        );
        // Daylight saving time is the zone's, not a fixed offset.
        let ny = DisplayZone::parse("America/New_York").unwrap();
        assert_eq!(ny.display_ms(1_720_000_000_000), "2024-07-03 05:46:40");
        assert_eq!(ny.display_ms(ms), "2024-12-08 08:37:19");
    }

    #[test]
    fn refuses_what_is_not_a_zone() {
        for bad in ["Mars/Olympus", "+25:00", "+8:75", "08:00", "+"] {
            let err = DisplayZone::parse(bad).unwrap_err();
            assert!(err.to_string().contains("not a time zone"), "{bad}: {err}");
        }
        assert!(DisplayZone::parse("system").is_ok());
    }
}
