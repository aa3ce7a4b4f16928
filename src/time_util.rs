//! Clock helpers: milliseconds since the Unix epoch, and the display formats of the wire.

use time::OffsetDateTime;
use time::macros::format_description;

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `YYYY-mm-dd HH:MM:SS` in UTC, the `create_time` format of the old server's records.
pub fn ms_to_display(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .expect("formatting a valid date cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_utc() {
        assert_eq!(ms_to_display(1_733_665_039_112), "2024-12-08 13:37:19");
    }
}
