//! Reading hidden dangers back: plain JSON REST with real HTTP status codes.
//!
//! - `GET /api/v1/hidden-dangers?page&page_size&user&unit_name&issue_level&judge_state&notice_state&since&until&ip`
//! - `GET /api/v1/hidden-dangers/{user}/{riskId}` (with its revisions)
//! - `GET /api/v1/hidden-dangers/stix` (same filters): one STIX 2.1 bundle

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use br_cti_app::error::AppError;
use br_cti_domain::model::{HiddenDangerFilter, StoredHiddenDanger};
use br_cti_domain::vocab::{IssueLevel, JudgeState, NoticeState, Worded};
use br_cti_engine::hidden_danger_stix as export;
use br_cti_store::StoreError;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/hidden-dangers", get(list))
        .route("/hidden-dangers/stix", get(stix_bundle))
        .route("/hidden-dangers/{user}/{risk_id}", get(one))
}

/// A REST error: the HTTP status and `{"error": message}`.
pub(crate) struct RestError(StatusCode, String);

impl RestError {
    /// What the client is told.
    pub(crate) fn message(&self) -> &str {
        &self.1
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(message: impl Into<String>) -> RestError {
    RestError(StatusCode::BAD_REQUEST, message.into())
}

fn internal(e: impl std::fmt::Display) -> RestError {
    RestError(
        StatusCode::INTERNAL_SERVER_ERROR,
        super::incident("reading hidden dangers", e),
    )
}

/// A storage error while doing `context`, answered as every application error is.
fn store(context: &'static str, e: StoreError) -> RestError {
    AppError::store(context, e).into()
}

/// The REST reads' answer to an application error (their one conversion). Storage faults are
/// logged in full; the client is told what failed, never paths or database messages.
impl From<AppError> for RestError {
    fn from(e: AppError) -> Self {
        let (status, message) = match e {
            AppError::Invalid(m) => (StatusCode::BAD_REQUEST, m),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            AppError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            AppError::Conflict(m) => (StatusCode::CONFLICT, m),
            AppError::StorageFull { context, cause } => {
                tracing::error!("{context}: {cause}");
                (
                    StatusCode::INSUFFICIENT_STORAGE,
                    format!("the node's disk is full ({context} failed)"),
                )
            }
            AppError::StoreReplaced { cause } => {
                tracing::error!("{cause}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the node's database file was deleted or replaced while it ran".into(),
                )
            }
            AppError::Internal { context, cause } => {
                return internal(format!("{context}: {cause}"));
            }
        };
        RestError(status, message)
    }
}

const MAX_PAGE_SIZE: u64 = 1000;

fn time_param(name: &str, v: &str) -> Result<i64, RestError> {
    stix::Timestamp::parse(v, time::macros::offset!(+8))
        .map(|t| t.micros() / 1000)
        .ok_or_else(|| {
            bad(format!(
                "query `{name}`: {v:?} is not a time (RFC 3339, yyyy-MM-dd HH:mm:ss in UTC+08:00, or Unix seconds/milliseconds)"
            ))
        })
}

/// The filters of the hidden-danger reads (the console's form has the same fields).
pub(crate) const FILTERS: [&str; 8] = [
    "user",
    "unit_name",
    "issue_level",
    "judge_state",
    "notice_state",
    "since",
    "until",
    "ip",
];

pub(crate) fn filter(q: &HashMap<String, String>) -> Result<HiddenDangerFilter, RestError> {
    let known = || ["page", "page_size"].into_iter().chain(FILTERS);
    if let Some(k) = q.keys().find(|k| !known().any(|f| f == k.as_str())) {
        return Err(bad(format!(
            "unknown query parameter `{k}` (known: {})",
            known().collect::<Vec<_>>().join(", ")
        )));
    }
    let text = |k: &str| {
        q.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    fn enumerated<T: Worded>(v: Option<String>, k: &str) -> Result<Option<T>, RestError> {
        v.map(|v| {
            T::from_word(&v)
                .ok_or_else(|| bad(format!("query `{k}`: {v:?} is not one of {}", T::words())))
        })
        .transpose()
    }
    let issue_level = match text("issue_level") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .ok()
                .and_then(IssueLevel::from_number)
                .ok_or_else(|| {
                    bad(format!(
                        "query `issue_level`: {v:?} is not {}",
                        IssueLevel::range()
                    ))
                })?,
        ),
    };
    let ip = match text("ip") {
        None => None,
        Some(v) => Some(
            v.parse::<std::net::IpAddr>()
                .map_err(|_| bad(format!("query `ip`: {v:?} is not an IP address")))?
                .to_string(),
        ),
    };
    Ok(HiddenDangerFilter {
        user: text("user"),
        unit_name: text("unit_name"),
        issue_level,
        judge_state: enumerated::<JudgeState>(text("judge_state"), "judge_state")?,
        notice_state: enumerated::<NoticeState>(text("notice_state"), "notice_state")?,
        since_ms: text("since").map(|v| time_param("since", &v)).transpose()?,
        until_ms: text("until").map(|v| time_param("until", &v)).transpose()?,
        ip,
    })
}

fn number(q: &HashMap<String, String>, k: &str, default: u64, max: u64) -> Result<u64, RestError> {
    match q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "query `{k}`: {v:?} is not a number from 1 to {max}"
                ))
            }),
    }
}

pub(crate) fn iso(ms: i64) -> String {
    stix::Timestamp::from_millis(ms).to_millis_string()
}

/// A stored hidden danger as the API shows it: the reported fields, then the node's own.
pub(crate) fn item_json(hd: &StoredHiddenDanger) -> Value {
    let mut v: Value = serde_json::from_str(&hd.data).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("rawEvent".into(), json!(hd.raw_event));
        m.insert("user".into(), json!(hd.user));
        m.insert("revision".into(), json!(hd.revision));
        m.insert("rawEventSha256".into(), json!(hd.raw_event_sha256));
        m.insert("createdAt".into(), json!(iso(hd.created_at)));
        m.insert("updatedAt".into(), json!(iso(hd.updated_at)));
    }
    v
}

async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, RestError> {
    let f = filter(&q)?;
    let page = number(&q, "page", 1, u64::MAX / MAX_PAGE_SIZE)?;
    let size = number(&q, "page_size", 50, MAX_PAGE_SIZE)?;
    let (items, total) =
        tokio::task::spawn_blocking(move || state.meta.hidden_dangers(&f, Some((page, size))))
            .await
            .map_err(internal)?
            .map_err(|e| store("listing hidden dangers", e))?;
    Ok(Json(json!({
        "total": total,
        "page": page,
        "page_size": size,
        "items": items.iter().map(item_json).collect::<Vec<_>>(),
    })))
}

async fn one(
    State(state): State<AppState>,
    Path((user, risk_id)): Path<(String, String)>,
) -> Result<Json<Value>, RestError> {
    let (u, r) = (user.clone(), risk_id.clone());
    let found = tokio::task::spawn_blocking(move || state.meta.hidden_danger(&u, &r))
        .await
        .map_err(internal)?
        .map_err(|e| store("reading the hidden danger", e))?;
    let Some((hd, revisions)) = found else {
        return Err(RestError(
            StatusCode::NOT_FOUND,
            format!("user {user:?} has reported no hidden danger {risk_id:?}"),
        ));
    };
    let mut v = item_json(&hd);
    v["revisions"] = revisions
        .iter()
        .map(|r| {
            json!({
                "revision": r.revision,
                "receivedAt": iso(r.received_at),
                "rawEventSha256": r.raw_event_sha256,
                "data": serde_json::from_str::<Value>(&r.data).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(v))
}

async fn stix_bundle(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, RestError> {
    if q.contains_key("page") || q.contains_key("page_size") {
        return Err(bad("the STIX export takes filters, not paging"));
    }
    let f = filter(&q)?;
    // The bundle is written to an unnamed file in the data directory (memory stays bounded
    // whatever the number of reports), then streamed from it.
    let (file, len) =
        tokio::task::spawn_blocking(move || -> Result<(std::fs::File, u64), String> {
            let spool = tempfile::tempfile_in(&state.config.data_dir)
                .map_err(|e| format!("creating the export file: {e}"))?;
            let mut out = std::io::BufWriter::with_capacity(256 * 1024, spool);
            let mut markings = br_cti_app::reports::ReportMarkings::new(
                &*state.meta,
                state.config.hidden_danger_tlp,
            );
            let tlp_of = |hd: &br_cti_domain::model::StoredHiddenDanger| {
                markings.of(&hd.user).map_err(std::io::Error::other)
            };
            out = export::write_bundle(out, tlp_of, |each| {
                state
                    .meta
                    .scan_hidden_dangers(&f, &mut |hd| each(&hd))
                    .map_err(std::io::Error::other)
            })
            .map_err(|e| format!("writing the STIX export: {e}"))?;
            let mut file = out.into_inner().map_err(|e| e.to_string())?;
            let len = std::io::Seek::stream_position(&mut file).map_err(|e| e.to_string())?;
            std::io::Seek::rewind(&mut file).map_err(|e| e.to_string())?;
            Ok((file, len))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        tokio::fs::File::from_std(file),
        256 * 1024,
    ));
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/stix+json;version=2.1"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(resp)
}
