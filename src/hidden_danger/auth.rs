//! Authentication of reports: `sign = md5(timestamp + user + token)`, the time window, the
//! replay cache and the per-user rate limit. Also the reporting users' names and tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// A reporting user's name: 1-10 characters, not starting with a digit (the signed text
/// `timestamp + user` would be ambiguous otherwise), no whitespace or control characters.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > 10 {
        return Err(format!(
            "user name {name:?} must have 1 to 10 characters (it has {n})"
        ));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("user name {name:?} must not start with a digit"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "user name {name:?} must not contain spaces or control characters"
        ));
    }
    Ok(())
}

/// A new token: 256 random bits from the operating system, as 64 hex characters.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    hex::encode(bytes)
}

/// `md5(timestamp + user + token)`, lowercase hex.
pub fn sign(timestamp: &str, user: &str, token: &str) -> String {
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(user.as_bytes());
    h.update(token.as_bytes());
    hex::encode(h.finalize())
}

/// Checks a sign in constant time (uppercase hex accepted).
pub fn sign_matches(given: &str, timestamp: &str, user: &str, token: &str) -> bool {
    let expected = sign(timestamp, user, token);
    let given = given.trim().to_ascii_lowercase();
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// A timestamp as sent: 10 digits (seconds) or 13 digits (milliseconds). Milliseconds.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = text.parse().ok()?;
    match text.len() {
        10 => Some(n * 1000),
        13 => Some(n),
        _ => None,
    }
}

/// What the first request under a (user, timestamp, sign) was answered.
#[derive(Clone)]
pub struct Replayed {
    pub body_sha256: [u8; 32],
    pub status: u16,
    pub answer: String,
}

/// (user, timestamp as sent, lowercase sign).
type ReplayKey = (String, String, String);

/// Requests seen within the window: an identical one gets the first answer again; another
/// body under the same (user, timestamp, sign) is refused. Entries expire after the window
/// (a request older than the window is refused by its timestamp anyway).
pub struct ReplayCache {
    ttl: Duration,
    entries: Mutex<HashMap<ReplayKey, (Instant, Replayed)>>,
}

pub enum Seen {
    New,
    Same(Replayed),
    OtherBody,
}

impl ReplayCache {
    pub fn new(window: Duration) -> Self {
        ReplayCache {
            ttl: window * 2 + Duration::from_secs(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(user: &str, timestamp: &str, sign: &str) -> ReplayKey {
        (
            user.to_string(),
            timestamp.to_string(),
            sign.trim().to_ascii_lowercase(),
        )
    }

    pub fn check(&self, user: &str, timestamp: &str, sign: &str, body: &[u8; 32]) -> Seen {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if entries.len() > 10_000 {
            entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        }
        match entries.get(&Self::key(user, timestamp, sign)) {
            Some((at, seen)) if now.duration_since(*at) < self.ttl => {
                if &seen.body_sha256 == body {
                    Seen::Same(seen.clone())
                } else {
                    Seen::OtherBody
                }
            }
            _ => Seen::New,
        }
    }

    pub fn remember(&self, user: &str, timestamp: &str, sign: &str, answer: Replayed) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(Self::key(user, timestamp, sign), (Instant::now(), answer));
    }
}

/// A token bucket per user: `rate` requests per second on average, bursts of `burst`.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from the user's bucket; `Err(seconds to wait)` when it is empty.
    pub fn take(&self, user: &str) -> Result<(), f64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, at) = buckets.entry(user.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_spec() {
        // md5("1717200000" + "alice" + "t0ken"), computed independently with coreutils md5sum.
        assert_eq!(
            sign("1717200000", "alice", "t0ken"),
            "d79f9b3650abc71ccf67c26d1658b54d"
        );
        let s = sign("1717200000", "alice", "t0ken");
        assert!(sign_matches(
            &s.to_uppercase(),
            "1717200000",
            "alice",
            "t0ken"
        ));
        assert!(!sign_matches(&s, "1717200001", "alice", "t0ken"));
        assert!(!sign_matches("", "1717200000", "alice", "t0ken"));
    }

    #[test]
    fn names_tokens_timestamps() {
        assert!(check_user_name("alice").is_ok());
        assert!(check_user_name("平台甲").is_ok());
        assert!(check_user_name("1alice").is_err());
        assert!(check_user_name("abcdefghijk").is_err());
        assert!(check_user_name("a b").is_err());
        assert!(check_user_name("").is_err());
        let t = new_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token());
        assert_eq!(parse_timestamp("1717200000"), Some(1_717_200_000_000));
        assert_eq!(parse_timestamp("1717200000123"), Some(1_717_200_000_123));
        assert_eq!(parse_timestamp("171720000"), None);
        assert_eq!(parse_timestamp("-717200000"), None);
    }

    #[test]
    fn replay_cache_and_rate_limit() {
        let cache = ReplayCache::new(Duration::from_secs(300));
        let body = [1u8; 32];
        assert!(matches!(cache.check("a", "1", "S", &body), Seen::New));
        cache.remember(
            "a",
            "1",
            "S",
            Replayed {
                body_sha256: body,
                status: 200,
                answer: "x".into(),
            },
        );
        assert!(matches!(cache.check("a", "1", "s", &body), Seen::Same(r) if r.answer == "x"));
        assert!(matches!(
            cache.check("a", "1", "s", &[2u8; 32]),
            Seen::OtherBody
        ));
        assert!(matches!(cache.check("b", "1", "s", &body), Seen::New));

        let limiter = RateLimiter::new(1.0, 2.0);
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_err());
        assert!(limiter.take("b").is_ok(), "buckets are per user");
    }
}
