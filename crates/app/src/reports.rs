//! The report interface's use case (`POST /open/api/v1/retrieval/addHiddenDanger`): other
//! platforms push signed batches of hidden dangers. [`ingest`] takes a request's body and
//! answers `{data, errorCode, errorMessage, success}` with an [`Outcome`] the HTTP adapter
//! turns into a status: validation and business errors are answered (`success: false`), too
//! large, rate limited and internal faults are outcomes of their own.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::hidden_danger::{self, HiddenDanger, ItemCode, RawItem};
use br_cti_domain::model::{ReportClaim, ReportKey, TokenBucket, Upsert};
use br_cti_domain::time::now_ms;
use br_cti_store::RecordStore;

use crate::config::HiddenDangerLimits;
use crate::hidden_danger_auth::{
    REPLAY_ANSWER_MAX_BYTES, ReplayCache, Replayed, Seen, parse_timestamp, sign_matches,
};
use crate::taxii::Publisher;

/// State of the report interface: its limits and this node's replay cache. The replay claims
/// and the rate limits are kept in the record store, so that every node of a shared database
/// refuses a request replayed to it and counts a user's requests to all of them; the cache in
/// front answers repeats seen here without asking the store, and makes identical requests
/// arriving here at once wait for the first one's answer.
pub struct Reports {
    pub limits: HiddenDangerLimits,
    replay: ReplayCache,
}

impl Reports {
    pub fn new(limits: HiddenDangerLimits) -> Self {
        Reports {
            replay: ReplayCache::new(Duration::from_secs(limits.window_secs)),
            limits,
        }
    }

    /// How long a claim lasts in the store: twice the clock window (a timestamp may be that
    /// far from the clock on either side) and a second.
    fn claim_ttl_ms(&self) -> i64 {
        (self.limits.window_secs as i64 * 2 + 1) * 1000
    }
}

/// How long a request waits for an identical one that another node is processing.
const SHARED_PENDING_WAIT: Duration = Duration::from_secs(60);

/// How an answer is delivered (the HTTP adapter maps each to its status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: stored, or refused for a reason the body says (`success: false`).
    Answered,
    /// The batch or one of its items is larger than the limits.
    TooLarge,
    /// The user sent too many requests; retry after [`Answer::retry_after`] seconds.
    RateLimited,
    /// The node holds too many request bodies; retry in a moment.
    Busy,
    /// An internal fault: nothing of the request was acknowledged.
    Internal,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Answered,
        Outcome::TooLarge,
        Outcome::RateLimited,
        Outcome::Busy,
        Outcome::Internal,
    ];

    /// The word the store keeps with a request's answer.
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::TooLarge => "too_large",
            Outcome::RateLimited => "rate_limited",
            Outcome::Busy => "busy",
            Outcome::Internal => "internal",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == word)
    }
}

/// An answer of the interface.
pub struct Answer {
    pub outcome: Outcome,
    pub body: Value,
    pub retry_after: Option<u64>,
}

impl Answer {
    pub fn fail(outcome: Outcome, code: &str, message: impl Into<String>) -> Self {
        Answer {
            outcome,
            body: json!({"data": {}, "errorCode": code, "errorMessage": message.into(), "success": false}),
            retry_after: None,
        }
    }

    pub fn invalid(code: &str, message: impl Into<String>) -> Self {
        Self::fail(Outcome::Answered, code, message)
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sign: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "dataValues")]
    data_values: Option<&'a RawValue>,
}

fn string_field(raw: Option<&RawValue>, name: &str) -> Result<String, Answer> {
    match raw.map(|r| serde_json::from_str::<Value>(r.get())) {
        Some(Ok(Value::String(s))) if s.contains('\0') => Err(Answer::invalid(
            "INVALID_PARAM",
            format!("{name} holds the character U+0000 (NUL)"),
        )),
        Some(Ok(Value::String(s))) if !s.is_empty() => Ok(s),
        Some(Ok(Value::String(_))) | Some(Ok(Value::Null)) | None => Err(Answer::invalid(
            "INVALID_PARAM",
            format!("{name} is required"),
        )),
        _ => Err(Answer::invalid(
            "INVALID_PARAM",
            format!("{name} must be a string"),
        )),
    }
}

/// The timestamp exactly as received (a JSON number's text, or a numeric string).
fn timestamp_field(raw: Option<&RawValue>) -> Result<(String, i64), Answer> {
    let text = match raw.map(|r| (r.get(), serde_json::from_str::<Value>(r.get()))) {
        Some((text, Ok(Value::Number(_)))) => text.to_string(),
        Some((_, Ok(Value::String(s)))) => s,
        None | Some((_, Ok(Value::Null))) => {
            return Err(Answer::invalid("INVALID_PARAM", "timestamp is required"));
        }
        _ => {
            return Err(Answer::invalid(
                "INVALID_PARAM",
                "timestamp must be an integer (seconds or milliseconds)",
            ));
        }
    };
    let ms = parse_timestamp(&text).ok_or_else(|| {
        Answer::invalid(
            "INVALID_PARAM",
            format!("timestamp {text:?} must be 10 digits (seconds) or 13 digits (milliseconds)"),
        )
    })?;
    Ok((text, ms))
}

/// `dataValues`: an array, or a string holding a JSON array.
fn data_values(raw: Option<&RawValue>) -> Result<Vec<Box<RawValue>>, Answer> {
    let Some(raw) = raw else {
        return Err(Answer::invalid("INVALID_PARAM", "dataValues is required"));
    };
    let text = raw.get().trim_start();
    let parsed = if text.starts_with('"') {
        let inner: String = serde_json::from_str(text)
            .map_err(|e| Answer::invalid("INVALID_JSON", format!("dataValues: {e}")))?;
        serde_json::from_str::<Vec<Box<RawValue>>>(&inner).map_err(|e| {
            Answer::invalid(
                "INVALID_JSON",
                format!("dataValues (a string) does not hold a JSON array: {e}"),
            )
        })?
    } else {
        serde_json::from_str::<Vec<Box<RawValue>>>(text).map_err(|_| {
            Answer::invalid(
                "INVALID_PARAM",
                "dataValues must be an array of objects (or a string holding one)",
            )
        })?
    };
    if parsed.is_empty() {
        return Err(Answer::invalid("INVALID_PARAM", "dataValues is empty"));
    }
    Ok(parsed)
}

struct Failure {
    index: usize,
    risk_id: Value,
    code: &'static str,
    message: String,
}

/// Answers one request of the report interface, given its body: the envelope is parsed, the
/// sign, clock window, replay and rate checked, then every item validated and the valid ones
/// stored in one durable transaction. A request seen before (same user, timestamp, sign and
/// body) gets the first answer again; nothing is acknowledged that was not stored.
pub fn ingest(
    reports: &Reports,
    meta: &dyn RecordStore,
    publisher: &Publisher,
    bytes: &[u8],
) -> Answer {
    // serde would read a struct from an array too: the body must be an object.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Answer::invalid(
            "INVALID_JSON",
            "the body must be a JSON object {user, timestamp, sign, dataValues}",
        );
    }
    let env: Envelope<'_> = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => {
            return Answer::invalid(
                "INVALID_JSON",
                format!("the body is not a JSON object: {e}"),
            );
        }
    };
    let user = match string_field(env.user, "user") {
        Ok(u) => u,
        Err(a) => return a,
    };
    let (ts_text, ts_ms) = match timestamp_field(env.timestamp) {
        Ok(t) => t,
        Err(a) => return a,
    };
    let sign = match string_field(env.sign, "sign") {
        Ok(s) => s,
        Err(a) => return a,
    };
    let token = match meta.user_token(&user) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("reading users: {e}");
            return Answer::fail(
                Outcome::Internal,
                "INTERNAL_ERROR",
                "internal error while reading users",
            );
        }
    };
    // The same comparison whether or not the user exists.
    let signed = sign_matches(&sign, &ts_text, &user, token.as_deref().unwrap_or("\u{0}"));
    if token.is_none() || !signed {
        tracing::warn!(user = %user, "hidden-danger report refused: unknown user or bad sign");
        return Answer::invalid("AUTH_FAILED", "unknown user or wrong sign");
    }
    let skew = (now_ms() - ts_ms).abs();
    if skew > reports.limits.window_secs as i64 * 1000 {
        return Answer::invalid(
            "AUTH_TIMESTAMP_EXPIRED",
            format!(
                "timestamp {ts_text} is {} s away from the server clock (at most {} s accepted)",
                skew / 1000,
                reports.limits.window_secs
            ),
        );
    }
    let digest = Sha256::digest(bytes);
    let body_hash: [u8; 32] = digest.into();
    match reports.replay.claim(&user, &ts_text, &sign, &body_hash) {
        Seen::Same(first) => {
            return Answer {
                outcome: first.outcome,
                body: serde_json::from_str(&first.answer).unwrap_or(Value::Null),
                retry_after: None,
            };
        }
        Seen::OtherBody => {
            return Answer::invalid(
                "AUTH_REPLAY",
                "this user, timestamp and sign were already used with another body; sign a new request",
            );
        }
        Seen::New => {}
    }
    let sign_key = sign.trim().to_ascii_lowercase();
    let key = ReportKey {
        user: &user,
        timestamp: &ts_text,
        sign: &sign_key,
    };
    // Claimed here: now in the store, which the other nodes see.
    let release = |why: &str| {
        reports.replay.forget(&user, &ts_text, &sign);
        if let Err(e) = meta.release_report(&key) {
            tracing::error!(user = %user, "releasing a report's claim ({why}): {e}");
        }
    };
    let body_hex = Sha256Hex::from_digest(&digest);
    let deadline = std::time::Instant::now() + SHARED_PENDING_WAIT;
    loop {
        match meta.claim_report(&key, &body_hex, now_ms(), reports.claim_ttl_ms()) {
            Ok(ReportClaim::Claimed) => break,
            Ok(ReportClaim::Answered { outcome, answer }) => {
                let outcome = Outcome::parse(&outcome).unwrap_or(Outcome::Answered);
                let body: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
                reports.replay.remember(
                    &user,
                    &ts_text,
                    &sign,
                    Replayed {
                        body_sha256: body_hash,
                        outcome,
                        answer: answer.into(),
                    },
                    || replay_summary(&body),
                );
                return Answer {
                    outcome,
                    body,
                    retry_after: None,
                };
            }
            Ok(ReportClaim::OtherBody) => {
                reports.replay.forget(&user, &ts_text, &sign);
                return Answer::invalid(
                    "AUTH_REPLAY",
                    "this user, timestamp and sign were already used with another body; sign a new request",
                );
            }
            Ok(ReportClaim::Pending) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(ReportClaim::Pending) => {
                reports.replay.forget(&user, &ts_text, &sign);
                let mut a = Answer::fail(
                    Outcome::Busy,
                    "SERVER_BUSY",
                    "the same request is still being processed by another node; retry in a moment",
                );
                a.retry_after = Some(5);
                return a;
            }
            Err(e) => {
                reports.replay.forget(&user, &ts_text, &sign);
                tracing::error!(user = %user, "claiming a report: {e}");
                return Answer::fail(
                    Outcome::Internal,
                    "INTERNAL_ERROR",
                    "internal error; nothing of this request was acknowledged, send it again",
                );
            }
        }
    }
    let bucket = TokenBucket {
        rate: reports.limits.rate_per_sec,
        burst: reports.limits.burst,
    };
    let taken = match meta.take_report_token(&user, bucket, now_ms()) {
        Ok(taken) => taken,
        Err(e) => {
            release("the rate limit could not be read");
            tracing::error!(user = %user, "reading the rate limit: {e}");
            return Answer::fail(
                Outcome::Internal,
                "INTERNAL_ERROR",
                "internal error; nothing of this request was acknowledged, send it again",
            );
        }
    };
    if let Err(wait) = taken {
        release("rate limited");
        let mut a = Answer::fail(
            Outcome::RateLimited,
            "RATE_LIMITED",
            format!(
                "too many requests from {user}: at most {} per second; retry in {wait:.1} s",
                reports.limits.rate_per_sec
            ),
        );
        a.retry_after = Some(wait.ceil().max(1.0) as u64);
        return a;
    }
    let answer = br_cti_engine::supervise::catch(|| {
        process(meta, publisher, reports, &user, env.data_values)
    })
    .unwrap_or_else(|panic| {
        tracing::error!(user = %user, "hidden-danger report: internal error: {panic}");
        Answer::fail(
            Outcome::Internal,
            "INTERNAL_ERROR",
            "internal error; nothing of this request was acknowledged, send it again",
        )
    });
    if answer.outcome == Outcome::Internal {
        release("an internal fault");
    } else {
        let text = answer.body.to_string();
        let kept = if text.len() <= REPLAY_ANSWER_MAX_BYTES {
            text
        } else {
            replay_summary(&answer.body)
        };
        if let Err(e) = meta.settle_report(&key, answer.outcome.as_str(), &kept) {
            // The claim stays pending until it expires: a repeat to another node meanwhile
            // waits, then is told to retry; nothing is stored twice.
            tracing::error!(user = %user, "recording a report's answer: {e}");
        }
        reports.replay.remember(
            &user,
            &ts_text,
            &sign,
            Replayed {
                body_sha256: body_hash,
                outcome: answer.outcome,
                answer: answer.body.to_string().into(),
            },
            || replay_summary(&answer.body),
        );
    }
    answer
}

/// What a replay is answered when the first answer was too long to keep: the same status,
/// codes, message and counts, with the per-item failures left out (`failuresOmitted` says how
/// many there were).
fn replay_summary(answer: &Value) -> String {
    let mut data = serde_json::Map::new();
    for (k, v) in answer["data"].as_object().into_iter().flatten() {
        if k == "failures" {
            data.insert(k.clone(), json!([]));
            data.insert(
                "failuresOmitted".into(),
                json!(v.as_array().map_or(0, Vec::len)),
            );
        } else {
            data.insert(k.clone(), v.clone());
        }
    }
    let mut summary = serde_json::Map::new();
    for (k, v) in answer.as_object().into_iter().flatten() {
        if k == "data" {
            summary.insert(k.clone(), Value::Object(std::mem::take(&mut data)));
        } else {
            summary.insert(k.clone(), v.clone());
        }
    }
    Value::Object(summary).to_string()
}

fn process(
    meta: &dyn RecordStore,
    publisher: &Publisher,
    reports: &Reports,
    user: &str,
    raw: Option<&RawValue>,
) -> Answer {
    let items = match data_values(raw) {
        Ok(i) => i,
        Err(a) => return a,
    };
    let limits = &reports.limits;
    if items.len() > limits.max_items {
        return Answer::fail(
            Outcome::TooLarge,
            "BATCH_TOO_LARGE",
            format!(
                "dataValues has {} items; at most {} per request",
                items.len(),
                limits.max_items
            ),
        );
    }
    if let Some((i, item)) = items
        .iter()
        .enumerate()
        .find(|(_, it)| it.get().len() > limits.max_item_bytes)
    {
        return Answer::fail(
            Outcome::TooLarge,
            "PAYLOAD_TOO_LARGE",
            format!(
                "dataValues[{i}] has {} bytes; at most {} per item",
                item.get().len(),
                limits.max_item_bytes
            ),
        );
    }
    let mut valid: Vec<HiddenDanger> = Vec::with_capacity(items.len());
    let mut failures: Vec<Failure> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (index, raw) in items.iter().enumerate() {
        let parsed: Result<RawItem, _> = serde_json::from_str(raw.get());
        let risk_id = |item: &RawItem| {
            item.get("riskId")
                .and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
                .unwrap_or(Value::Null)
        };
        let item = match parsed {
            Ok(item) => item,
            Err(_) => {
                failures.push(Failure {
                    index,
                    risk_id: Value::Null,
                    code: ItemCode::InvalidParam.as_str(),
                    message: "the item is not a JSON object".into(),
                });
                continue;
            }
        };
        match hidden_danger::validate(&item) {
            Ok(hd) => {
                if seen.insert(hd.risk_id.clone()) {
                    valid.push(hd);
                } else {
                    failures.push(Failure {
                        index,
                        risk_id: risk_id(&item),
                        code: ItemCode::DuplicateInBatch.as_str(),
                        message: format!("riskId {:?} appears earlier in this batch", hd.risk_id),
                    });
                }
            }
            Err(e) => failures.push(Failure {
                index,
                risk_id: risk_id(&item),
                code: e.code.as_str(),
                message: e.message,
            }),
        }
    }
    let outcomes = if valid.is_empty() {
        Vec::new()
    } else {
        match meta.upsert_hidden_dangers(user, &valid) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(user, "storing hidden dangers failed: {e}");
                return Answer::fail(
                    Outcome::Internal,
                    "INTERNAL_ERROR",
                    "internal error while storing; nothing of this request was stored",
                );
            }
        }
    };
    if !valid.is_empty() {
        publisher.note_activity();
    }
    let count = |k: Upsert| outcomes.iter().filter(|o| **o == k).count();
    let rejected = failures.len();
    tracing::info!(
        user,
        accepted = valid.len(),
        rejected,
        "hidden-danger report stored"
    );
    let failures: Vec<Value> = failures
        .into_iter()
        .map(|f| {
            json!({"index": f.index, "riskId": f.risk_id, "errorCode": f.code, "errorMessage": f.message})
        })
        .collect();
    let data = json!({
        "accepted": valid.len(),
        "rejected": rejected,
        "created": count(Upsert::Created),
        "updated": count(Upsert::Updated),
        "unchanged": count(Upsert::Unchanged),
        "failures": failures,
    });
    let (code, message) = if rejected == 0 {
        ("", String::new())
    } else if valid.is_empty() {
        (
            "INVALID_PARAM",
            format!("all {rejected} items rejected; see data.failures"),
        )
    } else {
        (
            "PARTIAL_FAILURE",
            format!(
                "{rejected} of {} items rejected; see data.failures",
                items.len()
            ),
        )
    };
    Answer {
        outcome: Outcome::Answered,
        body: json!({"data": data, "errorCode": code, "errorMessage": message, "success": rejected == 0}),
        retry_after: None,
    }
}

/// The TLP marking of each reporting platform's hidden dangers: its own (`br-cti users grant
/// NAME --report-tlp LEVEL`), else the node's `--hidden-danger-tlp`. Each platform is looked
/// up once.
pub struct ReportMarkings<'a> {
    db: &'a dyn RecordStore,
    default: br_cti_domain::vocab::Tlp,
    known: std::collections::HashMap<String, br_cti_domain::vocab::Tlp>,
}

impl<'a> ReportMarkings<'a> {
    pub fn new(db: &'a dyn RecordStore, default: br_cti_domain::vocab::Tlp) -> Self {
        Self {
            db,
            default,
            known: std::collections::HashMap::new(),
        }
    }

    /// The marking of what `user` reports.
    pub fn of(
        &mut self,
        user: &str,
    ) -> Result<br_cti_domain::vocab::Tlp, br_cti_store::StoreError> {
        if let Some(t) = self.known.get(user) {
            return Ok(*t);
        }
        let t = self.db.report_tlp(user)?.unwrap_or(self.default);
        self.known.insert(user.to_string(), t);
        Ok(t)
    }
}
