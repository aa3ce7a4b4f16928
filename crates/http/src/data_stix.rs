//! The STIX part of the data API: start a conversion, follow it, cancel it, list the STIX
//! records of a file and read their files.

use std::io::{BufRead, BufReader, Write};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::data::{blocking, parse_hash, require_file, store_error};
use super::envelope::{ApiError, JsonBody, ok};
use br_cti_app::conversion::{ConversionRequest, cancel_conversion, start_conversion};
use br_cti_app::jobs::progress::Figures;
use br_cti_domain::job::StixParams;
use br_cti_domain::model::{Job, JobKind, JobStatus, StixRecord};
use br_cti_domain::vocab::{DataType, IndicatorRule, IndicatorType, Numbered, Tlp, Worded};
use br_cti_engine::grouping::{FileTitle, GroupingSpool};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/process_data_to_stix", post(process_data_to_stix))
        .route(
            "/get_stix_process_progress",
            post(get_stix_process_progress),
        )
        .route("/cancel_stix_process", post(cancel_stix_process))
        .route(
            "/get_local_stix_records",
            post(stix_records_post).get(stix_records_get),
        )
        .route(
            "/get_stix_file_content/{source_file_hash}/{stix_file_hash}",
            get(stix_file_content),
        )
}

const DEFAULT_COMPRESS: u64 = 100;
const MAX_COMPRESS: u64 = 1_000_000;

// ------------------------------------------------------------------ lenient request fields

/// A number sent as a JSON number, a numeric string, `""` or `null` (the front ends send all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Num(pub Option<f64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Num(None)),
            Value::Number(n) => Ok(Num(n.as_f64())),
            Value::String(s) if s.trim().is_empty() => Ok(Num(None)),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|f| Num(Some(f)))
                .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a number"))),
            other => Err(serde::de::Error::custom(format!(
                "expected a number, got {other}"
            ))),
        }
    }
}

impl Num {
    /// A whole number in `min..=max`, or `None` when absent.
    /// The member of a numbered vocabulary this number names (`None` if absent).
    pub(crate) fn member<T: Numbered>(self, field: &str) -> Result<Option<T>, ApiError> {
        let [first, .., last] = T::ALL else {
            unreachable!("a vocabulary has at least two members")
        };
        let (min, max) = (i64::from(first.number()), i64::from(last.number()));
        Ok(self
            .int(field, min, max)?
            .map(|n| T::from_number(n as u64).expect("vocabulary numbers are contiguous")))
    }

    pub(crate) fn int(self, field: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.0 {
            None => Ok(None),
            Some(f) if f.fract() == 0.0 && f >= min as f64 && f <= max as f64 => Ok(Some(f as i64)),
            Some(f) => Err(ApiError::bad_request(format!(
                "field `{field}`: {f} is not a whole number from {min} to {max}"
            ))),
        }
    }
}

/// Text sent as a string or a number.
#[derive(Debug, Clone, Default)]
pub(crate) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Text(String::new())),
            Value::String(s) => Ok(Text(s)),
            Value::Number(n) => Ok(Text(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, got {other}"
            ))),
        }
    }
}

/// A list sent as an array of strings or as one string separated by `;` or `,`.
#[derive(Debug, Clone, Default)]
pub(crate) struct List(pub Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = match Value::deserialize(d)? {
            Value::Null => Vec::new(),
            Value::String(s) => s.split([';', ',']).map(str::to_string).collect(),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(serde::de::Error::custom(format!(
                        "expected strings, got {other}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            other => Err(serde::de::Error::custom(format!(
                "expected a string or an array of strings, got {other}"
            )))?,
        };
        Ok(List(
            items
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ))
    }
}

/// Reads every item as a member of a vocabulary (ignoring case), each once, in request order.
pub(crate) fn vocabulary<T: Worded>(field: &str, items: &[String]) -> Result<Vec<T>, ApiError> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        let Some(word) = T::from_word_ignoring_case(item) else {
            return Err(ApiError::bad_request(format!(
                "field `{field}`: {item:?} is not one of {}",
                T::words()
            )));
        };
        if !out.contains(&word) {
            out.push(word);
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------- conversion

#[derive(Deserialize)]
pub(crate) struct StixRequest {
    file_hash: String,
    #[serde(default)]
    process_id: Text,
    #[serde(default = "absent")]
    stix_type: Num,
    #[serde(default)]
    stix_iocs: Option<List>,
    #[serde(default)]
    stix_tags: Option<List>,
    #[serde(default = "absent")]
    stix_compress: Num,
    #[serde(default)]
    stix_traffic_features: Option<List>,
    #[serde(default)]
    stix_label: Option<List>,
    #[serde(default)]
    mapping: Option<String>,
    #[serde(default)]
    observed_time: Option<String>,
    /// `false`, `"none"` or `"off"`: no indicators; a list of observable types (`ipv4-addr`,
    /// `ipv6-addr`, `domain-name`, `url`): only those; absent, `null`, `""` or `true`: the
    /// dataset type's rule.
    #[serde(default)]
    stix_indicators: Option<Value>,
    /// The TLP marking: clear, green, amber, amber+strict or red; absent or `""`: the node's.
    #[serde(default)]
    tlp: Option<String>,
    /// Days the indicators stay valid after their last sighting, 1-3650; absent: the node's.
    #[serde(default = "absent")]
    stix_indicator_valid_days: Num,
}

/// The indicator rule a conversion request asks for (see `StixRequest::stix_indicators`).
fn indicator_rule(
    stix_type: DataType,
    field: Option<Value>,
) -> Result<Option<IndicatorRule>, ApiError> {
    let default = stix_type.default_indicators();
    let words: Vec<String> = match field {
        None | Some(Value::Null) | Some(Value::Bool(true)) => return Ok(Some(default)),
        Some(Value::Bool(false)) => return Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(Some(default));
            }
            if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("off") {
                return Ok(None);
            }
            s.split([',', ';'])
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty())
                .collect()
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.trim().to_string()),
                other => Err(ApiError::bad_request(format!(
                    "field `stix_indicators`: {other} is not an observable type"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "field `stix_indicators`: {other} is not a list of observable types, true, \
                 false or \"none\""
            )));
        }
    };
    if words.is_empty() {
        return Ok(None);
    }
    let types: Vec<IndicatorType> = vocabulary("stix_indicators", &words)?;
    Ok(Some(default.narrowed_to(&types)).filter(|r| !r.types.is_empty()))
}

pub(crate) fn absent() -> Num {
    Num(None)
}

async fn process_data_to_stix(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<StixRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let request = conversion_request(req)?;
    let job = blocking("starting the conversion", move || {
        Ok(start_conversion(
            &state.jobs,
            &state.config,
            &state.default_mapping,
            request,
        )?)
    })
    .await?;
    Ok(ok(
        "Process data to stix successfully",
        json!({"current_step": 0, "total_step": job.total_steps, "job_id": job.id}),
    ))
}

/// A conversion request's fields as typed values (the data API's and the console's).
pub(crate) fn conversion_request(req: StixRequest) -> Result<ConversionRequest, ApiError> {
    let hash = parse_hash("file_hash", &req.file_hash)?;
    let stix_type = req
        .stix_type
        .member("stix_type")?
        .unwrap_or(DataType::MaliciousTraffic);
    let compress = match req
        .stix_compress
        .int("stix_compress", 0, MAX_COMPRESS as i64)?
    {
        None | Some(0) => DEFAULT_COMPRESS,
        Some(n) => n as u64,
    };
    let stix_iocs = req
        .stix_iocs
        .map(|l| vocabulary("stix_iocs", &l.0))
        .transpose()?
        .filter(|l| !l.is_empty());
    let stix_tags = match req.stix_tags {
        Some(l) => vocabulary("stix_tags", &l.0)?,
        None => stix_type.default_tags(),
    };
    let observed_time = match req
        .observed_time
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => stix::Timestamp::from_micros(0),
        Some(s) => stix::Timestamp::parse(s, time::UtcOffset::UTC).ok_or_else(|| {
            ApiError::bad_request(format!(
                "field `observed_time`: {s:?} is not a time (RFC 3339)"
            ))
        })?,
    };
    let features = req
        .stix_traffic_features
        .map(|l| l.0)
        .filter(|l| !l.is_empty());
    let params = StixParams {
        stix_type,
        stix_iocs,
        stix_tags,
        compress,
        features,
        labels: req.stix_label.map(|l| l.0).unwrap_or_default(),
        label_columns: Vec::new(),
        observed_time_micros: observed_time.micros(),
        mapping_name: req
            .mapping
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty()),
        mapping_text: String::new(),
        indicators: indicator_rule(stix_type, req.stix_indicators)?,
        indicator_valid_days: req
            .stix_indicator_valid_days
            .int(
                "stix_indicator_valid_days",
                1,
                i64::from(br_cti_domain::ioc::MAX_VALID_DAYS),
            )?
            .map(|d| d as u32),
        tlp: match req.tlp.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(
                Tlp::from_word_ignoring_case(t.strip_prefix("TLP:").unwrap_or(t)).ok_or_else(
                    || {
                        ApiError::bad_request(format!(
                            "field `tlp`: {t:?} is not one of {}",
                            Tlp::words()
                        ))
                    },
                )?,
            ),
        },
    };
    Ok(ConversionRequest {
        file: hash,
        process_id: req.process_id.0,
        params,
    })
}

/// The paging of a listing: `page` from 1 and `page_size` 1-10,000 (default 100); both
/// absent means everything.
pub(crate) fn paging(page: Num, page_size: Num) -> Result<Option<(u64, u64)>, ApiError> {
    let page = page.int("page", 1, i64::MAX)?;
    let size = page_size.int("page_size", 1, 10_000)?;
    Ok(match (page, size) {
        (None, None) => None,
        (p, s) => Some((p.unwrap_or(1) as u64, s.unwrap_or(100) as u64)),
    })
}

#[derive(Deserialize)]
struct FileHashRequest {
    file_hash: String,
}

fn iso_ms(ms: Option<i64>) -> Option<String> {
    ms.map(|m| stix::Timestamp::from_millis(m).to_millis_string())
}

#[derive(Serialize)]
struct UseTime {
    use_time: f64,
}

/// The fields every progress answer starts with (the old server's, then the job's).
#[derive(Serialize)]
struct ProgressHead<'a> {
    progress: u64,
    current_step: u64,
    total_step: u64,
    current_task_id: u64,
    total_task_list: &'a [u64],
    errors: Vec<String>,
    result: UseTime,
    status: &'static str,
    job_id: i64,
    process_id: &'a str,
}

/// A conversion's progress: the head, then rows, files and times.
#[derive(Serialize)]
struct StixProgress<'a> {
    #[serde(flatten)]
    head: ProgressHead<'a>,
    rows_total: u64,
    rows_done: u64,
    rows_rejected: u64,
    rows_converted: u64,
    objects: u64,
    files: u64,
    created_at: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    eta_seconds: Option<f64>,
}

/// A CTI build's progress: the head, then records where a conversion counts rows (in the
/// order the front ends have always received them).
#[derive(Serialize)]
struct CtiProgress<'a> {
    #[serde(flatten)]
    head: ProgressHead<'a>,
    eta_seconds: Option<f64>,
    finished_at: Option<String>,
    started_at: Option<String>,
    created_at: Option<String>,
    objects: u64,
    records_total: u64,
    records_done: u64,
}

/// A job's progress in the shape of its kind.
pub(crate) fn progress_json(job: &Job) -> Value {
    let p = &job.progress;
    let f = Figures::of(job);
    let head = ProgressHead {
        progress: f.percent,
        current_step: p.steps_done,
        total_step: job.total_steps,
        current_task_id: p.steps_done,
        total_task_list: &p.recent_steps,
        errors: f.errors,
        result: UseTime {
            use_time: f.use_time,
        },
        status: job.status.as_str(),
        job_id: job.id,
        process_id: &job.process_id,
    };
    let value = match job.kind() {
        JobKind::Stix => serde_json::to_value(StixProgress {
            head,
            rows_total: job.rows_total,
            rows_done: p.rows_done,
            rows_rejected: p.rows_rejected,
            rows_converted: f.rows_converted,
            objects: p.objects,
            files: p.files,
            created_at: iso_ms(Some(job.created_at)),
            started_at: iso_ms(job.started_at),
            finished_at: iso_ms(job.finished_at),
            eta_seconds: f.eta_seconds,
        }),
        JobKind::Cti => serde_json::to_value(CtiProgress {
            head,
            eta_seconds: f.eta_seconds,
            finished_at: iso_ms(job.finished_at),
            started_at: iso_ms(job.started_at),
            created_at: iso_ms(Some(job.created_at)),
            objects: p.objects,
            records_total: job.rows_total,
            records_done: p.rows_done,
        }),
    };
    value.expect("serialising plain data cannot fail")
}

async fn get_stix_process_progress(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<FileHashRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let job = latest_job(state, JobKind::Stix, &req.file_hash).await?;
    Ok(progress_answer(
        job.as_ref(),
        "conversion",
        "Get stix process progress successfully",
    ))
}

/// The newest job of `kind` for a file.
pub(crate) async fn latest_job(
    state: AppState,
    kind: JobKind,
    file_hash: &str,
) -> Result<Option<Job>, ApiError> {
    let hash = parse_hash("file_hash", file_hash)?;
    blocking("reading the progress", move || {
        let mut job = state
            .meta
            .latest_job(kind, &hash)
            .map_err(|e| store_error("reading the progress", e))?;
        // An ending not written yet is the job's true state.
        if let Some(j) = job.as_mut()
            && let Some(ending) = state.jobs.unsettled(j.id)
        {
            j.status = ending.status;
            j.message = ending.message;
        }
        Ok(job)
    })
    .await
}

/// The progress answer of a job, in the shape both front ends' pollers read: they act only
/// on `code == 200`, stop at `progress == 100`, and take `data: null` as "failed, stop".
///
/// - no job: code 200, `data: null`, `status: null`, `msg` saying so;
/// - a failed or canceled job: code 200, `data: null`, `status` (`failed`/`canceled`), the
///   reason in `msg` and `error`, and the job's last progress in `job`;
/// - otherwise: code 200 with the progress in `data` (in the shape of the job's kind).
pub(crate) fn progress_answer(job: Option<&Job>, what: &str, ok_msg: &str) -> axum::Json<Value> {
    let Some(job) = job else {
        return axum::Json(json!({
            "code": 200,
            "msg": format!("no {what} of this file was ever started"),
            "data": Value::Null,
            "status": Value::Null,
        }));
    };
    let progress = progress_json(job);
    match job.status {
        JobStatus::Failed | JobStatus::Canceled => {
            let verb = if job.status == JobStatus::Failed {
                "failed"
            } else {
                "was canceled"
            };
            let reason = format!(
                "the {what} (job {}) {verb}: {} ({} of {} steps done, {} rows rejected)",
                job.id,
                job.message.as_deref().unwrap_or("no reason recorded"),
                job.progress.steps_done,
                job.total_steps,
                job.progress.rows_rejected
            );
            axum::Json(json!({
                "code": 200,
                "msg": reason,
                "error": reason,
                "data": Value::Null,
                "status": job.status.as_str(),
                "job": progress,
            }))
        }
        _ => ok(ok_msg, progress),
    }
}

async fn cancel_stix_process(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<FileHashRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let hash = parse_hash("file_hash", &req.file_hash)?;
    let job = blocking("canceling the conversion", move || {
        Ok(cancel_conversion(&state.jobs, &hash)?)
    })
    .await?;
    Ok(ok(
        "Cancel requested: the conversion stops after its current file",
        json!({"job_id": job.id}),
    ))
}

// ---------------------------------------------------------------------------- records

#[derive(Deserialize)]
struct RecordsRequest {
    file_hash: String,
    #[serde(default = "absent")]
    page: Num,
    #[serde(default = "absent")]
    page_size: Num,
}

pub(crate) fn record_json(state: &AppState, r: &StixRecord) -> Value {
    let ips: serde_json::Map<String, Value> = r
        .ioc_ips_map
        .iter()
        .map(|(ip, n)| (ip.clone(), json!(n)))
        .collect();
    let path = state.blobs.locate(&r.stix_file_hash);
    json!({
        "source_file_hash": r.source_file_hash,
        "stix_file_hash": r.stix_file_hash,
        "stix_file_path": path,
        "stix_file_size": r.file_size,
        "stix_type": r.stix_type,
        "stix_type_name": r.stix_type.label(),
        "stix_tags": r.stix_tags,
        "stix_iocs": r.stix_iocs,
        "ioc_ips_map": ips,
        "create_time": state.config.time_zone.display_ms(r.created_at),
        "onchain": r.onchain,
        "cti_file_path": r.cti_file_path,
        "rows": r.rows,
        "objects": r.objects,
        "batch": r.batch,
    })
}

async fn stix_records(state: AppState, req: RecordsRequest) -> Result<Response, ApiError> {
    let hash = parse_hash("file_hash", &req.file_hash)?;
    let paging = paging(req.page, req.page_size)?;
    let st = state.clone();
    let (records, total) = blocking("listing STIX records", move || {
        require_file(&st, &hash)?;
        st.meta
            .stix_records(&hash, paging)
            .map_err(|e| store_error("listing STIX records", e))
    })
    .await?;
    let data: Vec<Value> = records.iter().map(|r| record_json(&state, r)).collect();
    let mut resp = ok("Get stix records successfully", data).into_response();
    resp.headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    Ok(resp)
}

async fn stix_records_post(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<RecordsRequest>,
) -> Result<Response, ApiError> {
    stix_records(state, req).await
}

async fn stix_records_get(
    State(state): State<AppState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let body =
        serde_json::to_vec(&query).map_err(|e| ApiError::internal("reading the query", e))?;
    let req: RecordsRequest = super::envelope::parse_json(&body)?;
    stix_records(state, req).await
}

// ------------------------------------------------------------------------------ files

#[derive(Deserialize)]
pub(crate) struct ContentQuery {
    pub(crate) format: Option<String>,
    pub(crate) download: Option<String>,
}

/// A browser navigating to a URL sends `Accept: text/html,…`; API clients (curl, axios with
/// `Accept: application/json`) do not.
fn is_navigation(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// An `io::Write` that sends 64 KiB chunks to an HTTP body.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.buf));
            self.tx.blocking_send(Ok(chunk)).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away")
            })?;
        }
        Ok(())
    }
}

/// A response body produced by blocking code, streamed as it is written.
fn blocking_body(
    produce: impl FnOnce(&mut ChannelWriter) -> std::io::Result<()> + Send + 'static,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(64 * 1024),
        };
        if let Err(e) = produce(&mut w).and_then(|_| w.flush()) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// The STIX file as JSON Lines, or as a bundle with `?format=bundle`. A browser that navigates
/// to it (the jQuery page opens it in a window) gets the text shown, not downloaded: JSON Lines
/// as `text/plain`, the bundle as `application/json`. `?download=1` asks for a download under
/// the file's name whatever the client.
pub(crate) async fn stix_file_content(
    State(state): State<AppState>,
    Path((source, stix_hash)): Path<(String, String)>,
    Query(query): Query<ContentQuery>,
    request_headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let download = match query.download.as_deref().map(str::trim) {
        None | Some("") | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "query `download`: {other:?} is not one of 1, true, 0, false"
            )));
        }
    };
    let shown = !download && is_navigation(&request_headers);
    let source = parse_hash("source_file_hash", &source)?;
    let stix_hash = parse_hash("stix_file_hash", &stix_hash)?;
    let bundle = match query.format.as_deref() {
        None | Some("") | Some("jsonl") => false,
        Some("bundle") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "query `format`: {other:?} is not one of jsonl, bundle"
            )));
        }
    };
    let st = state.clone();
    let (record, input, names) = blocking("reading the STIX file", move || {
        let record = st
            .meta
            .stix_record(&source, &stix_hash)
            .map_err(|e| store_error("reading the STIX record", e))?
            .ok_or_else(|| {
                ApiError::bad_request(format!("file {source} has no STIX file {stix_hash}"))
            })?;
        // What names the bundle's grouping: the dataset and its CTI record, once one exists.
        let names = if bundle {
            let dataset = st
                .meta
                .file(&source)
                .map_err(|e| store_error("reading the dataset's record", e))?
                .and_then(|f| f.original_name);
            let cti = st
                .meta
                .cti_record(&source, &stix_hash)
                .map_err(|e| store_error("reading the CTI record", e))?
                .map(|c| c.cti_name);
            (dataset, cti)
        } else {
            (None, None)
        };
        let input = st
            .blobs
            .open(&stix_hash)
            .map_err(|e| ApiError::internal("opening the STIX file", e))?
            .ok_or_else(|| {
                ApiError::internal(
                    "opening the STIX file",
                    format!("blob {stix_hash} is missing"),
                )
            })?;
        Ok((record, input, names))
    })
    .await?;
    let name = format!(
        "{}.{}",
        record.stix_file_hash,
        if bundle { "json" } else { "jsonl" }
    );
    let (content_type, body) = if bundle {
        let bundle_id = stix::objects::bundle_id(record.stix_file_hash.as_str().as_bytes());
        let body = blocking_body(move |w| {
            let mut out = stix::BundleWriter::begin(w, &bundle_id)?;
            let mut grouping = GroupingSpool::new()?;
            for line in BufReader::new(input).split(b'\n') {
                let line = line?;
                if !line.trim_ascii().is_empty() {
                    out.write_raw(&line)?;
                    grouping.note_line(&line)?;
                }
            }
            let title = FileTitle {
                dataset: names.0.as_deref(),
                cti_name: names.1.as_deref(),
                source: &record.source_file_hash,
                batch: Some(record.batch),
                data_type: record.stix_type,
            };
            grouping.write_into(&mut out, record.stix_file_hash.as_str(), &title)?;
            out.finish().map(|_| ())
        });
        let ct = if shown {
            "application/json; charset=utf-8"
        } else {
            "application/stix+json;version=2.1"
        };
        (ct, body)
    } else {
        let body = blocking_body(move |w| {
            let mut input = input;
            std::io::copy(&mut input, w).map(|_| ())
        });
        let ct = if shown {
            "text/plain; charset=utf-8"
        } else {
            "application/jsonl; charset=utf-8"
        };
        (ct, body)
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The text is data: never let a browser sniff it into HTML.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let disposition = if download { "attachment" } else { "inline" };
    if let Ok(v) = HeaderValue::from_str(&format!("{disposition}; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use br_cti_domain::hash::Sha256Hex;
    use br_cti_domain::model::JobProgress;

    fn job(kind: JobKind) -> Job {
        Job {
            id: 7,
            file_hash: Sha256Hex::parse(&"a".repeat(64)).unwrap(),
            process_id: "p".into(),
            params: match kind {
                JobKind::Stix => br_cti_domain::testing::stix_params(),
                JobKind::Cti => br_cti_domain::testing::cti_params(),
            },
            status: JobStatus::Running,
            total_steps: 4,
            rows_total: 100,
            progress: JobProgress {
                steps_done: 1,
                rows_done: 25,
                rows_rejected: 2,
                objects: 90,
                files: 1,
                errors: vec!["row 3: bad".into()],
                recent_steps: vec![1],
                run_ms: 500,
            },
            message: None,
            cancel_requested: false,
            created_at: 1_700_000_000_000,
            started_at: Some(1_700_000_000_100),
            finished_at: None,
            attempts: 1,
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    /// The progress answers keep the fields and the order the front ends have always received.
    #[test]
    fn progress_answers_keep_their_shape() {
        let stix = progress_json(&job(JobKind::Stix));
        assert_eq!(
            keys(&stix),
            [
                "progress",
                "current_step",
                "total_step",
                "current_task_id",
                "total_task_list",
                "errors",
                "result",
                "status",
                "job_id",
                "process_id",
                "rows_total",
                "rows_done",
                "rows_rejected",
                "rows_converted",
                "objects",
                "files",
                "created_at",
                "started_at",
                "finished_at",
                "eta_seconds"
            ]
        );
        assert_eq!(stix["progress"], 25);
        assert_eq!(stix["rows_converted"], 23);
        assert_eq!(stix["eta_seconds"], 1.5);
        assert_eq!(stix["created_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(stix["finished_at"], Value::Null);
        let cti = progress_json(&job(JobKind::Cti));
        assert_eq!(
            keys(&cti),
            [
                "progress",
                "current_step",
                "total_step",
                "current_task_id",
                "total_task_list",
                "errors",
                "result",
                "status",
                "job_id",
                "process_id",
                "eta_seconds",
                "finished_at",
                "started_at",
                "created_at",
                "objects",
                "records_total",
                "records_done"
            ]
        );
        assert_eq!(cti["records_done"], 25);
    }
}
