//! Authentication of reports: `sign = md5(timestamp + user + token)`, the time window, the
//! replay cache in front of the store's replay claims (`reports.rs`). Also the reporting
//! users' names and tokens.

use br_cti_domain::error::Invalid;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// A reporting user's name: 1-10 characters, not starting with a digit (the signed text
/// `timestamp + user` would be ambiguous otherwise), no whitespace or control characters.
pub fn check_user_name(name: &str) -> Result<(), Invalid> {
    let n = name.chars().count();
    if n == 0 || n > 10 {
        return Err(Invalid(format!(
            "user name {name:?} must have 1 to 10 characters (it has {n})"
        )));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Invalid(format!(
            "user name {name:?} must not start with a digit"
        )));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid(format!(
            "user name {name:?} must not contain spaces or control characters"
        )));
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
pub(crate) fn sign_matches(given: &str, timestamp: &str, user: &str, token: &str) -> bool {
    let expected = sign(timestamp, user, token);
    let given = given.trim().to_ascii_lowercase();
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// A timestamp as sent: 10 digits (seconds) or 13 digits (milliseconds). Milliseconds.
pub(crate) fn parse_timestamp(text: &str) -> Option<i64> {
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
pub(crate) struct Replayed {
    pub body_sha256: [u8; 32],
    pub outcome: crate::reports::Outcome,
    /// The answer's JSON text (whole, or its summary when the cache could not keep it whole).
    pub answer: std::sync::Arc<str>,
}

/// The longest answer the replay cache keeps whole.
pub(crate) const REPLAY_ANSWER_MAX_BYTES: usize = 8 << 10;
/// Bytes of whole answers the replay cache keeps, all entries together; past it (or for an
/// answer over [`REPLAY_ANSWER_MAX_BYTES`]) an entry keeps a summary.
pub(crate) const REPLAY_ANSWERS_MAX_BYTES: usize = 16 << 20;

/// (user, timestamp as sent, lowercase sign).
type ReplayKey = (String, String, String);

/// Requests seen within the window: an identical one gets the first answer again; another
/// body under the same (user, timestamp, sign) is refused. Entries expire after the window
/// (a request older than the window is refused by its timestamp anyway).
///
/// Claiming a key and recording it are one step ([`ReplayCache::claim`]): of two requests sent
/// at once under one key, exactly one is processed; the other waits for its answer (the same
/// body) or is refused (another body).
///
/// Memory is bounded: an entry holds the body's SHA-256, the outcome and the answer; answers are
/// kept whole up to [`REPLAY_ANSWER_MAX_BYTES`] each and [`REPLAY_ANSWERS_MAX_BYTES`] in all,
/// beyond which an entry keeps the summary its caller gives (a few hundred bytes). Entries
/// are bounded by the rate limit times the window.
pub(crate) struct ReplayCache {
    ttl: Duration,
    state: Mutex<CacheState>,
    settled: Condvar,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<ReplayKey, (Instant, Entry)>,
    /// Bytes of the answers kept.
    answer_bytes: usize,
}

impl CacheState {
    /// Drops expired entries (never pending ones).
    fn expire(&mut self, now: Instant, ttl: Duration) {
        let mut freed = 0;
        self.entries.retain(|_, (at, e)| match e {
            Entry::Pending(_) => true,
            Entry::Done(r) => {
                let keep = now.duration_since(*at) < ttl;
                if !keep {
                    freed += r.answer.len();
                }
                keep
            }
        });
        self.answer_bytes -= freed;
    }

    fn remove(&mut self, key: &ReplayKey) {
        if let Some((_, Entry::Done(r))) = self.entries.remove(key) {
            self.answer_bytes -= r.answer.len();
        }
    }
}

enum Entry {
    /// Claimed by a request that is being processed (its body's SHA-256).
    Pending([u8; 32]),
    Done(Replayed),
}

pub(crate) enum Seen {
    /// Claimed: process the request, then [`ReplayCache::remember`] or [`ReplayCache::forget`].
    New,
    Same(Replayed),
    OtherBody,
}

/// How long a request waits for an identical one that is being processed.
const PENDING_WAIT: Duration = Duration::from_secs(60);

impl ReplayCache {
    pub(crate) fn new(window: Duration) -> Self {
        ReplayCache {
            ttl: window * 2 + Duration::from_secs(1),
            state: Mutex::new(CacheState::default()),
            settled: Condvar::new(),
        }
    }

    fn key(user: &str, timestamp: &str, sign: &str) -> ReplayKey {
        (
            user.to_string(),
            timestamp.to_string(),
            sign.trim().to_ascii_lowercase(),
        )
    }

    /// Looks the request up and, when it is new, claims its key before anyone else can.
    pub(crate) fn claim(&self, user: &str, timestamp: &str, sign: &str, body: &[u8; 32]) -> Seen {
        let key = Self::key(user, timestamp, sign);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        loop {
            let now = Instant::now();
            if state.entries.len() > 10_000 {
                state.expire(now, self.ttl);
            }
            match state.entries.get(&key) {
                Some((_, Entry::Pending(pending))) => {
                    if pending != body {
                        return Seen::OtherBody;
                    }
                    let left = PENDING_WAIT.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Seen::OtherBody;
                    }
                    state = self
                        .settled
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                Some((at, Entry::Done(seen))) if now.duration_since(*at) < self.ttl => {
                    return if &seen.body_sha256 == body {
                        Seen::Same(seen.clone())
                    } else {
                        Seen::OtherBody
                    };
                }
                _ => {
                    state.remove(&key);
                    state.entries.insert(key, (now, Entry::Pending(*body)));
                    return Seen::New;
                }
            }
        }
    }

    /// Records the answer of a claimed request (`whole`, or `summary()` when the cache cannot
    /// keep it whole); waiting duplicates get it.
    pub(crate) fn remember(
        &self,
        user: &str,
        timestamp: &str,
        sign: &str,
        whole: Replayed,
        summary: impl FnOnce() -> String,
    ) {
        let key = Self::key(user, timestamp, sign);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let len = whole.answer.len();
        if state.answer_bytes + len > REPLAY_ANSWERS_MAX_BYTES {
            state.expire(now, self.ttl);
        }
        let answer = if len <= REPLAY_ANSWER_MAX_BYTES
            && state.answer_bytes + len <= REPLAY_ANSWERS_MAX_BYTES
        {
            whole
        } else {
            Replayed {
                answer: summary().into(),
                ..whole
            }
        };
        state.remove(&key);
        state.answer_bytes += answer.answer.len();
        state.entries.insert(key, (now, Entry::Done(answer)));
        self.settled.notify_all();
    }

    /// Bytes of the answers kept now.
    #[cfg(test)]
    pub(crate) fn answer_bytes(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.answer_bytes
    }

    /// Releases a claimed request that was not answered for good (an internal fault): the
    /// same request may be sent again.
    pub(crate) fn forget(&self, user: &str, timestamp: &str, sign: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.remove(&Self::key(user, timestamp, sign));
        self.settled.notify_all();
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
    fn replay_cache_claims_and_waits() {
        let cache = ReplayCache::new(Duration::from_secs(300));
        let body = [1u8; 32];
        assert!(matches!(cache.claim("a", "1", "S", &body), Seen::New));
        // Claimed: another body under the key is refused at once.
        assert!(matches!(
            cache.claim("a", "1", "S", &[9u8; 32]),
            Seen::OtherBody
        ));
        cache.remember(
            "a",
            "1",
            "S",
            Replayed {
                body_sha256: body,
                outcome: crate::reports::Outcome::Answered,
                answer: "x".into(),
            },
            String::new,
        );
        assert!(matches!(cache.claim("a", "1", "s", &body), Seen::Same(r) if &*r.answer == "x"));
        assert!(matches!(
            cache.claim("a", "1", "s", &[2u8; 32]),
            Seen::OtherBody
        ));
        assert!(matches!(cache.claim("b", "1", "s", &body), Seen::New));
        // A forgotten claim (an internal fault) may be sent again.
        cache.forget("b", "1", "s");
        assert!(matches!(cache.claim("b", "1", "s", &body), Seen::New));

        // The same body sent twice at once: one is processed, the other gets its answer.
        let cache = std::sync::Arc::new(ReplayCache::new(Duration::from_secs(300)));
        assert!(matches!(cache.claim("c", "1", "s", &body), Seen::New));
        let waiter = {
            let cache = cache.clone();
            std::thread::spawn(move || match cache.claim("c", "1", "s", &body) {
                Seen::Same(r) => r.answer.to_string(),
                _ => "not the first answer".to_string(),
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        cache.remember(
            "c",
            "1",
            "s",
            Replayed {
                body_sha256: body,
                outcome: crate::reports::Outcome::Answered,
                answer: "first".into(),
            },
            String::new,
        );
        assert_eq!(waiter.join().unwrap(), "first");
    }

    #[test]
    fn the_replay_cache_is_bounded_in_bytes() {
        let cache = ReplayCache::new(Duration::from_secs(300));
        let answer = |n: usize| Replayed {
            body_sha256: [1; 32],
            outcome: crate::reports::Outcome::Answered,
            answer: "a".repeat(n).into(),
        };
        // A long answer is kept as its summary.
        assert!(matches!(cache.claim("u", "1", "s", &[1; 32]), Seen::New));
        cache.remember("u", "1", "s", answer(REPLAY_ANSWER_MAX_BYTES + 1), || {
            "short".into()
        });
        match cache.claim("u", "1", "s", &[1; 32]) {
            Seen::Same(r) => assert_eq!(&*r.answer, "short"),
            _ => panic!("the same request is a replay"),
        }
        // Many answers of the largest kept size: the total stays within the budget.
        let n = REPLAY_ANSWERS_MAX_BYTES / REPLAY_ANSWER_MAX_BYTES + 50;
        for i in 0..n {
            let ts = i.to_string();
            assert!(matches!(cache.claim("u", &ts, "t", &[1; 32]), Seen::New));
            cache.remember("u", &ts, "t", answer(REPLAY_ANSWER_MAX_BYTES), || {
                "s".into()
            });
        }
        assert!(cache.answer_bytes() <= REPLAY_ANSWERS_MAX_BYTES);
        match cache.claim("u", &(n - 1).to_string(), "t", &[1; 32]) {
            Seen::Same(r) => assert_eq!(&*r.answer, "s"),
            _ => panic!("the same request is a replay"),
        }
        // Forgetting gives the bytes back.
        let before = cache.answer_bytes();
        cache.forget("u", "0", "t");
        assert_eq!(cache.answer_bytes(), before - REPLAY_ANSWER_MAX_BYTES);
    }
}
