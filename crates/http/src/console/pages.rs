//! The console's overview, datasets (upload, conversion, live progress), STIX files and CTI
//! records.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};

use axum::Extension;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Flash, Lang, Session, back, bytes, charts, check_change, duration, error_page, json_html, num,
    page, pager, tr, urlencode,
};
use crate::AppState;
use crate::data::blocking;
use crate::envelope::ApiError;
use br_cti_app::conversion::{cancel_conversion, start_conversion, start_cti_build};
use br_cti_app::jobs::progress::Figures;
use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::model::{Job, JobKind, JobStatus, Step, StepState};
use br_cti_domain::vocab::{DataType, IncentiveMechanism, IocKind, OpenSource, Tag, Tlp};
use br_cti_engine::dataset::{self, Format};

/// Rows of a listing page.
const PAGE: u64 = 20;
/// Objects of a STIX file shown per page.
const OBJECTS_PER_PAGE: usize = 50;
/// A STIX file's objects are counted by type over at most this many bytes.
const MAX_SCAN_BYTES: u64 = 256 << 20;

fn failed(session: &Session, e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let status = if status == StatusCode::OK {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    error_page(session, status, e.message())
}

fn parse_hash(session: &Session, s: &str) -> Result<Sha256Hex, Box<Response>> {
    Sha256Hex::parse(s).map_err(|e| {
        Box::new(error_page(
            session,
            StatusCode::NOT_FOUND,
            &format!("{s:?} is not a file hash: {e}"),
        ))
    })
}

fn data_type_label(lang: Lang, t: DataType) -> String {
    format!("{} · {}", t.number(), super::i18n::label(lang, t.label()))
}

// ---------------------------------------------------------------------------- overview

pub(crate) async fn overview(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    overview_for(state, session).await
}

struct Readiness {
    database: Result<(), String>,
    blobs: Result<Option<u64>, String>,
}

pub(crate) async fn overview_for(state: AppState, session: Session) -> Response {
    let lang = session.lang;
    let st = state.clone();
    let read = blocking("reading the overview", move || {
        let since = br_cti_domain::time::now_ms() - 24 * 3600 * 1000;
        let summary = st
            .meta
            .summary(since)
            .map_err(|e| crate::data::store_error("reading the overview", e))?;
        let backlog = br_cti_app::taxii::backlog(&*st.meta)?;
        let readiness = Readiness {
            database: st.meta.check().map_err(|e| {
                tracing::error!("console readiness: database: {e}");
                "the database cannot be queried (see the node's log)".to_string()
            }),
            blobs: st.blobs.check().map_err(|e| {
                tracing::error!("console readiness: blob store: {e}");
                format!("cannot write to the blob store: {}", e.kind())
            }),
        };
        Ok((summary, backlog, readiness))
    })
    .await;
    let (summary, backlog, ready) = match read {
        Ok(r) => r,
        Err(e) => return failed(&session, e),
    };
    let config = &state.config;
    let database = match &config.database_url {
        Some(_) => "PostgreSQL".to_string(),
        None => format!(
            "SQLite ({})",
            config.data_dir.join("br-cti.sqlite").display()
        ),
    };
    let files = match &config.blob_store {
        Some(url) => url.clone(),
        None => config.data_dir.display().to_string(),
    };
    let ready_ok = ready.database.is_ok()
        && matches!(ready.blobs, Ok(free) if free.is_none_or(|f| f >= crate::ops::MIN_FREE_DISK_BYTES));
    let body = html! {
        section.cards {
            div.card {
                h2 { (tr(lang, "Node")) }
                dl {
                    dt { (tr(lang, "Version")) } dd { (env!("CARGO_PKG_VERSION")) }
                    dt { (tr(lang, "Uptime")) } dd #uptime { (duration(state.console.uptime_secs())) }
                    dt { (tr(lang, "Readiness")) }
                    dd #readiness {
                        @if ready_ok { span.badge.good { (tr(lang, "ready")) } }
                        @else { span.badge.bad { (tr(lang, "not ready")) } }
                    }
                }
                @if let Err(e) = &ready.database { p.error { (e) } }
                @if let Err(e) = &ready.blobs { p.error { (e) } }
            }
            div.card {
                h2 { (tr(lang, "Storage")) }
                dl {
                    dt { (tr(lang, "Records")) } dd { (database) }
                    dt { (tr(lang, "Files")) } dd { (files) }
                    dt { (tr(lang, "Datasets")) } dd #files-count { (num(summary.files)) }
                    dt { (tr(lang, "Stored")) } dd #stored { (bytes(summary.stored_bytes)) }
                    @if let Ok(Some(free)) = ready.blobs {
                        dt { (tr(lang, "Free space")) } dd { (bytes(free)) }
                    }
                }
            }
            div.card {
                h2 { (tr(lang, "Last 24 hours")) }
                dl {
                    dt { (tr(lang, "Rows converted")) } dd #rows-24h { (num(summary.stix_rows_since)) }
                    dt { (tr(lang, "Reports received")) } dd #reports-24h { (num(summary.reports_since)) }
                }
            }
            div.card {
                h2 { (tr(lang, "Jobs")) }
                table.compact {
                    tbody {
                        @for (status, n) in &summary.jobs {
                            tr { th { (tr(lang, status.as_str())) } td.num { (num(*n)) } }
                        }
                    }
                }
            }
            div.card {
                h2 { (tr(lang, "TAXII publishing")) }
                dl {
                    dt { (tr(lang, "Dataset files waiting")) }
                    dd #lag-files { (backlog.files_text()) }
                    dt { (tr(lang, "Hidden-danger revisions waiting")) }
                    dd #lag-hd { (backlog.hidden_dangers_text()) }
                }
                p.hint { (tr(lang, "What the publisher has not yet put into the TAXII collections.")) }
            }
        }
    };
    page(
        &session,
        "/",
        "/",
        tr(lang, "Overview"),
        &Flash::default(),
        body,
    )
    .into_response()
}

// ---------------------------------------------------------------------------- datasets

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    page: Option<u64>,
    ok: Option<String>,
    err: Option<String>,
}

pub(crate) async fn datasets(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<ListQuery>,
) -> Response {
    let lang = session.lang;
    let page_no = q.page.unwrap_or(1).max(1);
    let st = state.clone();
    let listed = blocking("listing datasets", move || {
        st.meta
            .files((page_no, PAGE))
            .map_err(|e| crate::data::store_error("listing datasets", e))
    })
    .await;
    let (files, total) = match listed {
        Ok(r) => r,
        Err(e) => return failed(&session, e),
    };
    let zone = &state.config.time_zone;
    let body = html! {
        section #upload.card {
            h2 { (tr(lang, "Upload a dataset")) }
            p.hint { (tr(lang, "CSV, XLSX, XLS, JSON or JSON Lines; at most")) " " (bytes(state.config.max_upload_bytes)) "." }
            div #dropzone.dropzone tabindex="0" {
                p { (tr(lang, "Drop a file here, or choose one:")) }
                input #file type="file" name="file" aria-label=(tr(lang, "Dataset file"));
                button #upload-button type="button" { (tr(lang, "Upload")) }
            }
            progress #upload-progress max="100" value="0" hidden {}
            p #upload-status role="status" {}
        }
        section.card {
            h2 { (tr(lang, "Datasets")) }
            @if files.is_empty() {
                p { (tr(lang, "Nothing uploaded yet.")) }
            } @else {
                table #datasets {
                    thead { tr {
                        th { (tr(lang, "Name")) } th { (tr(lang, "Size")) }
                        th { (tr(lang, "Uploaded")) } th { (tr(lang, "Hash")) }
                    } }
                    tbody {
                        @for f in &files {
                            tr {
                                td { a href=(format!("/console/datasets/{}", f.hash)) { (f.original_name.as_deref().unwrap_or("—")) } }
                                td.num { (bytes(f.size)) }
                                td { (zone.display_ms(f.created_at_ms)) }
                                td.hash { code { (&f.hash.as_str()[..16]) "…" } }
                            }
                        }
                    }
                }
                (pager(lang, "/console/datasets", "page", page_no, PAGE, total))
            }
        }
    };
    let flash = Flash {
        ok: q.ok,
        err: q.err,
    };
    page(
        &session,
        "/console/datasets",
        "/console/datasets",
        tr(lang, "Datasets"),
        &flash,
        body,
    )
    .into_response()
}

/// `POST /console/datasets/upload`: the upload of the data API (multipart field `file`),
/// with the console's CSRF header; answers the data API's JSON.
pub(crate) async fn upload(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let presented = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Err(e) = check_change(&headers, &session, presented) {
        // Read the body first, so that the refusal reaches a client still sending it.
        if let Ok(mut multipart) = multipart {
            crate::data::drain_multipart(&mut multipart, crate::data::UPLOAD_DISCARD_BYTES).await;
        }
        return ApiError::status(StatusCode::FORBIDDEN, e).into_response();
    }
    let max = state.config.max_upload_bytes;
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => {
            return ApiError::bad_request(format!(
                "expected a multipart/form-data body with a field `file`: {}",
                e.body_text()
            ))
            .into_response();
        }
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let received = if declared.is_some_and(|len| len > max + crate::data::MULTIPART_OVERHEAD) {
        Err(crate::data::too_large(max))
    } else {
        crate::data::receive_upload(&state, &mut multipart, max).await
    };
    if received.is_err() {
        crate::data::drain_multipart(&mut multipart, crate::data::UPLOAD_DISCARD_BYTES).await;
    }
    match received {
        Ok(json) => json.into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub(crate) struct DatasetQuery {
    /// Page of STIX records.
    sp: Option<u64>,
    /// Page of CTI records.
    cp: Option<u64>,
    ok: Option<String>,
    err: Option<String>,
}

struct DatasetFacts {
    file: br_cti_domain::model::FileMeta,
    format: Result<String, String>,
    columns: Result<Vec<String>, String>,
    tasks: Vec<br_cti_domain::model::TaskRecord>,
    stix: Option<Job>,
    cti: Option<Job>,
    stix_records: (Vec<br_cti_domain::model::StixRecord>, u64),
    cti_records: (Vec<br_cti_domain::model::CtiRecord>, u64),
}

fn describe_format(lang: Lang, f: Format) -> String {
    match f {
        Format::Csv(d) => {
            let delimiter = match d.delimiter {
                b'\t' => tr(lang, "tab").to_string(),
                b => format!("'{}'", b as char),
            };
            format!(
                "CSV · {} · {} {delimiter}",
                d.encoding.encoding().name(),
                tr(lang, "delimiter")
            )
        }
        other => other.name().to_string(),
    }
}

pub(crate) async fn dataset(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(hash): Path<String>,
    Query(q): Query<DatasetQuery>,
) -> Response {
    let lang = session.lang;
    let hash = match parse_hash(&session, &hash) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let (sp, cp) = (q.sp.unwrap_or(1).max(1), q.cp.unwrap_or(1).max(1));
    let st = state.clone();
    let h = hash.clone();
    let facts = blocking("reading the dataset", move || {
        let store = |e| crate::data::store_error("reading the dataset", e);
        let file = st.meta.file(&h).map_err(store)?.ok_or_else(|| {
            ApiError::status(
                StatusCode::NOT_FOUND,
                format!("no uploaded file has hash {h}"),
            )
        })?;
        let open = || {
            st.blobs
                .open(&h)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("the file {h} is missing from the blob store"))
        };
        let format = open().and_then(|mut input| {
            dataset::sniff(&mut input)
                .map(|f| describe_format(lang, f))
                .map_err(|e| e.to_string())
        });
        let columns = open().and_then(|input| {
            dataset::features(input, &st.config.dataset_limits).map_err(|e| e.to_string())
        });
        Ok(DatasetFacts {
            file,
            format,
            columns,
            tasks: st.meta.tasks_for_file(&h).map_err(store)?,
            stix: st.meta.latest_job(JobKind::Stix, &h).map_err(store)?,
            cti: st.meta.latest_job(JobKind::Cti, &h).map_err(store)?,
            stix_records: st.meta.stix_records(&h, Some((sp, PAGE))).map_err(store)?,
            cti_records: st.meta.cti_records(&h, Some((cp, PAGE))).map_err(store)?,
        })
    })
    .await;
    let f = match facts {
        Ok(f) => f,
        Err(e) => return failed(&session, e),
    };
    let zone = &state.config.time_zone;
    let here = format!("/console/datasets/{hash}");
    let name = f
        .file
        .original_name
        .clone()
        .unwrap_or_else(|| hash.as_str()[..12].to_string());
    let busy = f.stix.as_ref().is_some_and(|j| !j.status.is_finished())
        || f.cti.as_ref().is_some_and(|j| !j.status.is_finished());
    let columns = f.columns.as_ref().map(|c| c.join(", ")).unwrap_or_default();
    let body = html! {
        section.card {
            h2 { (tr(lang, "File")) }
            dl #facts {
                dt { (tr(lang, "Hash")) } dd { code { (hash) } }
                dt { (tr(lang, "Size")) } dd { (bytes(f.file.size)) }
                dt { (tr(lang, "Uploaded")) } dd { (zone.display_ms(f.file.created_at_ms)) }
                dt { (tr(lang, "Format")) }
                dd #format { @match &f.format { Ok(s) => (s), Err(e) => span.error { (e) } } }
                dt { (tr(lang, "Columns")) }
                dd #columns {
                    @match &f.columns {
                        Ok(c) => { (c.len()) ": " @for (i, col) in c.iter().enumerate() { @if i > 0 { ", " } code { (col) } } }
                        Err(e) => span.error { (e) }
                    }
                }
            }
            @if !f.tasks.is_empty() {
                h3 { (tr(lang, "Task steps")) }
                table #steps.compact {
                    thead { tr { th { (tr(lang, "Task")) } @for s in &f.tasks[0].step_status { th { (tr(lang, step_name(s.step))) } } } }
                    tbody {
                        @for t in &f.tasks {
                            tr {
                                td { code { (t.task_id) } }
                                @for s in &t.step_status {
                                    td { span class=(format!("badge {}", step_class(s.status))) { (tr(lang, s.status.as_str())) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #convert.card {
            h2 { (tr(lang, "Convert to STIX 2.1")) }
            (conversion_form(&session, &here, &columns, busy))
        }
        section.card {
            h2 { (tr(lang, "Progress")) }
            div #progress data-poll=(format!("{here}/progress")) {
                (progress_panel(&session, &here, f.stix.as_ref(), f.cti.as_ref()))
            }
        }
        section #stix.card {
            h2 { (tr(lang, "STIX files")) }
            @if f.stix_records.0.is_empty() {
                p { (tr(lang, "No STIX files yet: convert the dataset first.")) }
            } @else {
                table #stix-records {
                    thead { tr {
                        th { "#" } th { (tr(lang, "Rows")) } th { (tr(lang, "Objects")) }
                        th { (tr(lang, "Size")) } th { (tr(lang, "Created")) } th { (tr(lang, "File")) }
                    } }
                    tbody {
                        @for r in &f.stix_records.0 {
                            tr {
                                td.num { (r.batch) }
                                td.num { (num(r.rows)) }
                                td.num { (num(r.objects)) }
                                td.num { (bytes(r.file_size)) }
                                td { (zone.display_ms(r.created_at)) }
                                td {
                                    a.view href=(format!("/console/stix/{}/{}", r.source_file_hash, r.stix_file_hash)) { (tr(lang, "View")) }
                                    " · "
                                    a href=(format!("/console/stix/{}/{}/download", r.source_file_hash, r.stix_file_hash)) { (tr(lang, "Bundle")) }
                                }
                            }
                        }
                    }
                }
                (pager(lang, &format!("{here}?cp={cp}"), "sp", sp, PAGE, f.stix_records.1))
            }
        }
        section #cti.card {
            h2 { (tr(lang, "CTI records")) }
            @if !f.stix_records.0.is_empty() {
                (cti_form(&session, &here, &name, busy))
            }
            @if !f.cti_records.0.is_empty() {
                table #cti-records {
                    thead { tr {
                        th { (tr(lang, "Name")) } th { (tr(lang, "Type")) } th { (tr(lang, "Value")) }
                        th { (tr(lang, "Size")) } th { (tr(lang, "On chain")) } th {}
                    } }
                    tbody {
                        @for r in &f.cti_records.0 {
                            tr {
                                td { (r.cti_name) }
                                td { (data_type_label(lang, r.cti_type)) }
                                td.num { (r.value) }
                                td.num { (bytes(r.data_size)) }
                                td { @if r.onchain { (tr(lang, "yes")) } @else { (tr(lang, "no")) } }
                                td { a.view href=(format!("/console/cti/{}/{}", r.source_file_hash, r.cti_hash)) { (tr(lang, "Statistics")) } }
                            }
                        }
                    }
                }
                (pager(lang, &format!("{here}?sp={sp}"), "cp", cp, PAGE, f.cti_records.1))
            }
        }
    };
    let flash = Flash {
        ok: q.ok,
        err: q.err,
    };
    page(&session, &here, "/console/datasets", &name, &flash, body).into_response()
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Upload => "Upload",
        Step::Stix => "STIX",
        Step::Cti => "CTI",
        Step::Chain => "Chain",
    }
}

fn step_class(s: StepState) -> &'static str {
    match s {
        StepState::Finished => "good",
        StepState::Pending => "",
        _ => "warn",
    }
}

fn conversion_form(session: &Session, here: &str, columns: &str, busy: bool) -> Markup {
    let lang = session.lang;
    html! {
        form #convert-form method="post" action=(format!("{here}/convert")) {
            input type="hidden" name="csrf" value=(session.csrf);
            div.grid {
                label { (tr(lang, "Dataset type"))
                    select name="stix_type" {
                        @for t in DataType::ALL { option value=(t.number()) selected[*t == DataType::MaliciousTraffic] { (data_type_label(lang, *t)) } }
                    }
                }
                label { (tr(lang, "Rows per STIX file"))
                    input type="number" name="stix_compress" min="1" max="1000000" value="100";
                }
                label { (tr(lang, "TLP marking"))
                    select name="tlp" {
                        option value="" { (tr(lang, "the node's default")) }
                        @for t in Tlp::ALL { option value=(t.as_str()) { (t.name()) } }
                    }
                }
                label { (tr(lang, "Mapping file (in the data directory's mappings/)"))
                    input type="text" name="mapping" placeholder=(tr(lang, "the default mapping"));
                }
                label { (tr(lang, "Label column or labels"))
                    input type="text" name="stix_label" placeholder="label" list="column-names";
                }
                label { (tr(lang, "Columns to keep (empty: all)"))
                    input type="text" name="stix_traffic_features" placeholder=(columns);
                }
                label { (tr(lang, "Indicators"))
                    input type="text" name="stix_indicators" placeholder=(tr(lang, "the type's rule; none; or ipv4-addr, domain-name, …"));
                }
            }
            fieldset {
                legend { (tr(lang, "IOC kinds (none ticked: those found)")) }
                @for k in IocKind::ALL { label.check { input type="checkbox" name="stix_iocs" value=(k.as_str()); (k.as_str()) } }
            }
            fieldset {
                legend { (tr(lang, "Tags (none ticked: the type's)")) }
                @for t in Tag::ALL { label.check { input type="checkbox" name="stix_tags" value=(t.as_str()); (t.as_str()) } }
            }
            datalist #column-names { @for c in columns.split(", ").filter(|c| !c.is_empty()) { option value=(c) {} } }
            button #convert-button type="submit" disabled[busy] { (tr(lang, "Start the conversion")) }
        }
    }
}

fn cti_form(session: &Session, here: &str, name: &str, busy: bool) -> Markup {
    let lang = session.lang;
    html! {
        form #cti-form method="post" action=(format!("{here}/cti")) {
            input type="hidden" name="csrf" value=(session.csrf);
            div.grid {
                label { (tr(lang, "CTI name")) input type="text" name="cti_name" value=(name) maxlength="256"; }
                label { (tr(lang, "Type (empty: each file's)"))
                    select name="cti_type" {
                        option value="" { "—" }
                        @for t in DataType::ALL { option value=(t.number()) { (data_type_label(lang, *t)) } }
                    }
                }
                label { (tr(lang, "Open source"))
                    select name="open_source" { @for o in OpenSource::ALL { option value=(o.number()) { (tr(lang, o.label())) } } }
                }
                label { (tr(lang, "Value (points; empty: the node's default)")) input type="number" name="default_value" min="0" step="any"; }
                label { (tr(lang, "Incentive mechanism"))
                    select name="incentive_mechanism" { @for m in IncentiveMechanism::ALL { option value=(m.number()) { (m.label()) } } }
                }
            }
            label { (tr(lang, "Description")) textarea name="cti_description" rows="2" maxlength="10000" {} }
            button #cti-button type="submit" disabled[busy] { (tr(lang, "Build CTI records")) }
        }
    }
}

fn job_panel(session: &Session, here: &str, job: &Job, what: &str) -> Markup {
    let lang = session.lang;
    let f = Figures::of(job);
    let p = &job.progress;
    let live = !job.status.is_finished();
    let rate = (p.run_ms > 0).then(|| p.rows_done as f64 * 1000.0 / p.run_ms as f64);
    let unit = if job.kind() == JobKind::Stix {
        tr(lang, "rows")
    } else {
        tr(lang, "files")
    };
    html! {
        div.job data-kind=(job.kind().as_str()) data-status=(job.status.as_str()) {
            h3 { (tr(lang, what)) " · " span.status class=(format!("badge {}", status_class(job.status))) { (tr(lang, job.status.as_str())) } }
            progress max="100" value=(f.percent) aria-label=(tr(lang, what)) {}
            span.percent { (f.percent) " %" }
            dl {
                dt { (tr(lang, "Done")) } dd { (num(p.rows_done)) " / " (num(job.rows_total)) " " (unit) }
                @if job.kind() == JobKind::Stix {
                    dt { (tr(lang, "Rejected rows")) } dd.rejected { (num(p.rows_rejected)) }
                    dt { (tr(lang, "Files")) } dd { (num(p.files)) " / " (num(job.total_steps)) }
                }
                dt { (tr(lang, "Objects")) } dd { (num(p.objects)) }
                @if let Some(r) = rate { dt { (tr(lang, "Speed")) } dd { (num(r as u64)) " " (unit) "/s" } }
                dt { (tr(lang, "Run time")) } dd { (format!("{:.1} s", f.use_time)) }
                @if let Some(eta) = f.eta_seconds { dt { (tr(lang, "Time left")) } dd { (duration(eta.ceil() as u64)) } }
            }
            @if !f.errors.is_empty() {
                details open[job.status == JobStatus::Failed] {
                    summary { (tr(lang, "Errors and rejected rows")) " (" (f.errors.len()) ")" }
                    ul.errors { @for e in &f.errors { li { (e) } } }
                }
            }
            @if live && job.kind() == JobKind::Stix {
                form method="post" action=(format!("{here}/cancel")) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button.danger #cancel-button type="submit" { (tr(lang, "Cancel the conversion")) }
                }
            }
        }
    }
}

fn status_class(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Succeeded => "good",
        JobStatus::Failed => "bad",
        JobStatus::Canceled => "warn",
        _ => "live",
    }
}

fn progress_panel(session: &Session, here: &str, stix: Option<&Job>, cti: Option<&Job>) -> Markup {
    let lang = session.lang;
    let live = stix.is_some_and(|j| !j.status.is_finished())
        || cti.is_some_and(|j| !j.status.is_finished());
    html! {
        div.panel data-live=(if live { "1" } else { "0" }) {
            @if stix.is_none() && cti.is_none() {
                p { (tr(lang, "No conversion has run yet.")) }
            }
            @if let Some(j) = stix { (job_panel(session, here, j, "Conversion")) }
            @if let Some(j) = cti { (job_panel(session, here, j, "CTI build")) }
        }
    }
}

/// The progress panel alone, polled by the page while a job runs.
pub(crate) async fn progress(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(hash): Path<String>,
) -> Response {
    let hash = match parse_hash(&session, &hash) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let st = state.clone();
    let h = hash.clone();
    let jobs = blocking("reading progress", move || {
        let store = |e| crate::data::store_error("reading progress", e);
        Ok((
            st.meta.latest_job(JobKind::Stix, &h).map_err(store)?,
            st.meta.latest_job(JobKind::Cti, &h).map_err(store)?,
        ))
    })
    .await;
    match jobs {
        Ok((stix, cti)) => progress_panel(
            &session,
            &format!("/console/datasets/{hash}"),
            stix.as_ref(),
            cti.as_ref(),
        )
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()).into_response(),
    }
}

/// A form's fields, repeated ones joined with `,` (as the data API's lists read them).
fn form_json(fields: Vec<(String, String)>) -> (String, serde_json::Map<String, Value>) {
    let mut csrf = String::new();
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in fields {
        if k == "csrf" {
            csrf = v;
        } else {
            map.entry(k).or_default().push(v);
        }
    }
    let json = map
        .into_iter()
        .map(|(k, v)| (k, Value::String(v.join(","))))
        .collect();
    (csrf, json)
}

/// A form that asks the data API for something about dataset `hash`: checks its CSRF token
/// and reads its fields as the data API's request `T` (with `file_hash` and `process_id`).
/// Answers the request and the dataset's page, or the way back with the reason.
fn api_form<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    session: &Session,
    hash: String,
    fields: Vec<(String, String)>,
) -> Result<(T, String), Box<Response>> {
    let here = format!("/console/datasets/{}", urlencode(&hash));
    let (csrf, mut json) = form_json(fields);
    if let Err(e) = check_change(headers, session, &csrf) {
        return Err(Box::new(back(&here, Err(e))));
    }
    json.insert("file_hash".into(), Value::String(hash));
    json.insert("process_id".into(), Value::String("console".into()));
    match serde_json::from_value::<T>(Value::Object(json)) {
        Ok(request) => Ok((request, here)),
        Err(e) => Err(Box::new(back(&here, Err(e.to_string())))),
    }
}

pub(crate) async fn convert(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(hash): Path<String>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let (request, here) =
        match api_form::<crate::data_stix::StixRequest>(&headers, &session, hash, fields) {
            Ok(r) => r,
            Err(back) => return *back,
        };
    let request = match crate::data_stix::conversion_request(request) {
        Ok(r) => r,
        Err(e) => return back(&here, Err(e.message().to_string())),
    };
    let lang = session.lang;
    let started = blocking("starting the conversion", move || {
        Ok(start_conversion(
            &state.jobs,
            &state.config,
            &state.default_mapping,
            request,
        )?)
    })
    .await;
    match started {
        Ok(job) => back(
            &format!("{here}#progress"),
            Ok(format!(
                "{} ({} {}, {} {})",
                tr(lang, "Conversion started"),
                num(job.rows_total),
                tr(lang, "rows"),
                num(job.total_steps),
                tr(lang, "files")
            )),
        ),
        Err(e) => back(&here, Err(e.message().to_string())),
    }
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(hash): Path<String>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let here = format!("/console/datasets/{}", urlencode(&hash));
    if let Err(e) = check_change(
        &headers,
        &session,
        form.get("csrf").map(String::as_str).unwrap_or(""),
    ) {
        return back(&here, Err(e));
    }
    let h = match Sha256Hex::parse(&hash) {
        Ok(h) => h,
        Err(e) => return back(&here, Err(e.to_string())),
    };
    let lang = session.lang;
    match blocking("canceling the conversion", move || {
        Ok(cancel_conversion(&state.jobs, &h)?)
    })
    .await
    {
        Ok(_) => back(&here, Ok(tr(lang, "Cancel requested.").to_string())),
        Err(e) => back(&here, Err(e.message().to_string())),
    }
}

pub(crate) async fn build_cti(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(hash): Path<String>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let (request, here) =
        match api_form::<crate::data_cti::CtiRequest>(&headers, &session, hash, fields) {
            Ok(r) => r,
            Err(back) => return *back,
        };
    let request = match crate::data_cti::cti_build_request(request, state.config.default_points) {
        Ok(r) => r,
        Err(e) => return back(&here, Err(e.message().to_string())),
    };
    let lang = session.lang;
    match blocking("starting the CTI build", move || {
        Ok(start_cti_build(&state.jobs, request)?)
    })
    .await
    {
        Ok(_) => back(
            &format!("{here}#progress"),
            Ok(tr(lang, "CTI build started").to_string()),
        ),
        Err(e) => back(&here, Err(e.message().to_string())),
    }
}

// ---------------------------------------------------------------------------- STIX files

#[derive(Deserialize)]
pub(crate) struct StixQuery {
    page: Option<usize>,
    find: Option<String>,
}

struct StixView {
    by_type: BTreeMap<String, u64>,
    scanned_all: bool,
    total: usize,
    /// The objects of the page, with their index in the file.
    objects: Vec<(usize, Value)>,
    /// id → index in the file of the objects the page refers to (and of the one `find` asks
    /// for): what the links need, never an index of the whole file.
    index: HashMap<String, usize>,
    record: br_cti_domain::model::StixRecord,
}

/// The type and id of a STIX object line.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

/// What [`scan_stix`] calls with each object line: its index, its text, its type and id.
type OnLine<'f> = dyn FnMut(usize, &str, Option<Head<'_>>) -> Result<(), ApiError> + 'f;

/// Calls `f` with each object line of a STIX file (JSON Lines), its index and its type and id,
/// over at most [`MAX_SCAN_BYTES`]; answers whether the whole file was read.
fn scan_stix(
    input: Box<dyn br_cti_domain::io::ReadSeek>,
    f: &mut OnLine<'_>,
) -> Result<bool, ApiError> {
    let mut read = 0u64;
    for (i, line) in BufReader::new(input).lines().enumerate() {
        let line = line.map_err(|e| ApiError::internal("reading the STIX file", e))?;
        read += line.len() as u64 + 1;
        if read > MAX_SCAN_BYTES {
            return Ok(false);
        }
        if line.trim().is_empty() {
            continue;
        }
        f(i, &line, serde_json::from_str::<Head>(&line).ok())?;
    }
    Ok(true)
}

/// Calls `f` with every string of `v` that has the shape of a STIX id (`type--uuid`).
fn stix_ids(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => {
            if let Some((kind, uuid)) = s.split_once("--")
                && !kind.is_empty()
                && uuid.len() == 36
            {
                f(s);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| stix_ids(i, f)),
        Value::Object(map) => map.values().for_each(|i| stix_ids(i, f)),
        _ => {}
    }
}

pub(crate) async fn stix_file(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path((source, stix)): Path<(String, String)>,
    Query(q): Query<StixQuery>,
) -> Response {
    let lang = session.lang;
    let (source, stix) = match (parse_hash(&session, &source), parse_hash(&session, &stix)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let page_no = q.page.unwrap_or(1).max(1);
    let st = state.clone();
    let (s2, x2) = (source.clone(), stix.clone());
    let find = q.find.clone();
    let view = blocking("reading the STIX file", move || {
        let record = st
            .meta
            .stix_record(&s2, &x2)
            .map_err(|e| crate::data::store_error("reading the STIX record", e))?
            .ok_or_else(|| {
                ApiError::status(
                    StatusCode::NOT_FOUND,
                    format!("file {s2} has no STIX file {x2}"),
                )
            })?;
        let open = || {
            st.blobs
                .open(&x2)
                .map_err(|e| ApiError::internal("opening the STIX file", e))?
                .ok_or_else(|| {
                    ApiError::internal("opening the STIX file", format!("blob {x2} is missing"))
                })
        };
        let first = (page_no - 1) * OBJECTS_PER_PAGE;
        let mut view = StixView {
            by_type: BTreeMap::new(),
            scanned_all: true,
            total: 0,
            objects: Vec::new(),
            index: HashMap::new(),
            record,
        };
        // First pass: the counts by type, the page's objects, the object `find` names.
        let mut by_type = BTreeMap::new();
        let mut objects = Vec::new();
        let mut total = 0;
        let mut found = HashMap::new();
        let all = scan_stix(open()?, &mut |i, line, head| {
            total = i + 1;
            if (first..first + OBJECTS_PER_PAGE).contains(&i) {
                let v: Value = serde_json::from_str(line)
                    .map_err(|e| ApiError::internal("reading the STIX file", e))?;
                objects.push((i, v));
            }
            if let Some(h) = head {
                *by_type.entry(h.kind.to_string()).or_default() += 1;
                if find.as_deref() == Some(&*h.id) {
                    found.insert(h.id.to_string(), i);
                }
            }
            Ok(())
        })?;
        view.by_type = by_type;
        view.objects = objects;
        view.total = total;
        view.index = found;
        view.scanned_all = all;
        // Second pass, when the page refers to objects elsewhere in the file: where they are.
        let on_page: HashSet<&str> = view
            .objects
            .iter()
            .filter_map(|(_, v)| v["id"].as_str())
            .collect();
        let mut wanted: HashSet<String> = HashSet::new();
        for (_, v) in &view.objects {
            stix_ids(v, &mut |s| {
                if !on_page.contains(s) {
                    wanted.insert(s.to_string());
                }
            });
        }
        if find.is_none() && !wanted.is_empty() {
            let mut index = HashMap::new();
            scan_stix(open()?, &mut |i, _, head| {
                if let Some(h) = head
                    && wanted.contains(&*h.id)
                {
                    index.insert(h.id.to_string(), i);
                }
                Ok(())
            })?;
            view.index = index;
        }
        Ok(view)
    })
    .await;
    let view = match view {
        Ok(v) => v,
        Err(e) => return failed(&session, e),
    };
    let base = format!("/console/stix/{source}/{stix}");
    if let Some(id) = q.find.as_deref() {
        return match view.index.get(id) {
            Some(i) => Redirect::to(&format!(
                "{base}?page={}#{}",
                i / OBJECTS_PER_PAGE + 1,
                urlencode(id)
            ))
            .into_response(),
            None => error_page(
                &session,
                StatusCode::NOT_FOUND,
                &format!("{id:?} is not an object of this file"),
            ),
        };
    }
    let on_page: HashSet<&str> = view
        .objects
        .iter()
        .filter_map(|(_, v)| v["id"].as_str())
        .collect();
    let link = |s: &str| -> Option<String> {
        if on_page.contains(s) {
            Some(format!("#{s}"))
        } else if view.index.contains_key(s) {
            Some(format!("{base}?find={}", urlencode(s)))
        } else {
            None
        }
    };
    let pages = view.total.div_ceil(OBJECTS_PER_PAGE).max(1);
    let r = &view.record;
    let body = html! {
        section.card {
            dl {
                dt { (tr(lang, "Dataset")) } dd { a href=(format!("/console/datasets/{source}")) { code { (&source.as_str()[..16]) "…" } } }
                dt { (tr(lang, "STIX file")) } dd { code { (stix) } }
                dt { (tr(lang, "Rows")) } dd { (num(r.rows)) }
                dt { (tr(lang, "Size")) } dd { (bytes(r.file_size)) }
            }
            p { a #bundle-download href=(format!("{base}/download")) { (tr(lang, "Download as a STIX bundle")) } }
            h2 { (tr(lang, "Objects by type")) }
            @if !view.scanned_all { p.hint { (tr(lang, "Counted over the first 256 MiB of the file.")) } }
            table #by-type.compact {
                tbody {
                    @for (t, n) in &view.by_type { tr { th { code { (t) } } td.num { (num(*n)) } } }
                    tr.total { th { (tr(lang, "in all")) } td.num { (num(view.by_type.values().sum())) } }
                }
            }
        }
        section.card {
            h2 { (tr(lang, "Objects")) " " (view.objects.first().map(|o| o.0 + 1).unwrap_or(0)) "–" (view.objects.last().map(|o| o.0 + 1).unwrap_or(0)) }
            @for (_, o) in &view.objects {
                @let id = o["id"].as_str().unwrap_or("");
                article.object id=(id) {
                    h3 { code { (o["type"].as_str().unwrap_or("?")) } " " span.hint { (id) } }
                    pre.json { (json_html(o, &link)) }
                }
            }
            nav.pager {
                @if page_no > 1 { a rel="prev" href=(format!("{base}?page={}", page_no - 1)) { "‹ " (tr(lang, "Previous")) } }
                span { (tr(lang, "Page")) " " (page_no) " / " (pages) }
                @if page_no < pages { a rel="next" href=(format!("{base}?page={}", page_no + 1)) { (tr(lang, "Next")) " ›" } }
            }
        }
    };
    page(
        &session,
        &format!("{base}?page={page_no}"),
        "/console/datasets",
        tr(lang, "STIX file"),
        &Flash::default(),
        body,
    )
    .into_response()
}

/// The STIX file as a bundle, downloaded (the data API's answer, behind the console's
/// session).
pub(crate) async fn stix_download(
    State(state): State<AppState>,
    Path((source, stix)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    crate::data_stix::stix_file_content(
        State(state),
        Path((source, stix)),
        Query(crate::data_stix::ContentQuery {
            format: Some("bundle".into()),
            download: Some("1".into()),
        }),
        headers,
    )
    .await
    .into_response()
}

// ---------------------------------------------------------------------------- CTI records

#[derive(Deserialize)]
struct StoredStats {
    #[serde(default)]
    ioc_ips_map: BTreeMap<String, u64>,
    #[serde(default)]
    ips_locations_info_map: BTreeMap<String, StoredLocation>,
    #[serde(default)]
    ioc_locations_map: BTreeMap<String, u64>,
    #[serde(default)]
    geoip_database: String,
}

#[derive(Deserialize)]
struct StoredLocation {
    #[serde(default)]
    country: String,
    #[serde(default)]
    loc: String,
}

pub(crate) async fn cti_record(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path((source, cti)): Path<(String, String)>,
) -> Response {
    let lang = session.lang;
    let (source, cti) = match (parse_hash(&session, &source), parse_hash(&session, &cti)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let st = state.clone();
    let (s2, c2) = (source.clone(), cti.clone());
    let record = blocking("reading the CTI record", move || {
        st.meta
            .cti_record(&s2, &c2)
            .map_err(|e| crate::data::store_error("reading the CTI record", e))?
            .ok_or_else(|| {
                ApiError::status(
                    StatusCode::NOT_FOUND,
                    format!("file {s2} has no CTI record {c2}"),
                )
            })
    })
    .await;
    let r = match record {
        Ok(r) => r,
        Err(e) => return failed(&session, e),
    };
    let stats: StoredStats = match serde_json::from_str(&r.statistic_info) {
        Ok(s) => s,
        Err(e) => {
            return error_page(
                &session,
                StatusCode::INTERNAL_SERVER_ERROR,
                &crate::incident("reading the CTI statistics", e),
            );
        }
    };
    // Occurrences per country, and the points of the map (one per located address).
    let mut countries: BTreeMap<String, u64> = BTreeMap::new();
    let mut points: Vec<(f64, f64, u64)> = Vec::new();
    for (ip, n) in &stats.ioc_ips_map {
        let loc = stats.ips_locations_info_map.get(ip);
        let country = loc
            .map(|l| l.country.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "unknown".into());
        *countries.entry(country).or_default() += n;
        if let Some((lat, lon)) = loc.and_then(|l| l.loc.split_once(','))
            && let (Ok(lat), Ok(lon)) = (lat.trim().parse::<f64>(), lon.trim().parse::<f64>())
        {
            points.push((lat, lon, *n));
        }
    }
    let mut by_country: Vec<(String, u64)> = countries.into_iter().collect();
    by_country.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut locations: Vec<(&String, &u64)> = stats.ioc_locations_map.iter().collect();
    locations.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    locations.truncate(10);
    let mut top: Vec<(&String, &u64)> = stats.ioc_ips_map.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    top.truncate(10);
    let payload = crate::data_cti::chain_payload_json(&r, &state.config.time_zone);
    let no_link = |_: &str| None;
    let body = html! {
        section.card {
            dl {
                dt { (tr(lang, "Dataset")) } dd { a href=(format!("/console/datasets/{source}")) { code { (&source.as_str()[..16]) "…" } } }
                dt { (tr(lang, "Type")) } dd { (data_type_label(lang, r.cti_type)) }
                dt { (tr(lang, "Addresses")) } dd #address-count { (num(stats.ioc_ips_map.len() as u64)) }
                dt { (tr(lang, "Located with")) } dd { (stats.geoip_database) }
            }
        }
        section.card {
            h2 { (tr(lang, "Where the addresses are")) }
            (charts::world_map(lang, &points))
            h3 { (tr(lang, "Occurrences by country")) }
            (charts::bars(lang, "country-chart", &by_country.iter().take(15).map(|(c, n)| (c.clone(), *n)).collect::<Vec<_>>()))
        }
        section.card {
            h2 { (tr(lang, "Top addresses")) }
            table #top-addresses.compact {
                thead { tr { th { (tr(lang, "Address")) } th { (tr(lang, "Occurrences")) } th { (tr(lang, "Location")) } } }
                tbody {
                    @for (ip, n) in &top {
                        tr {
                            td { code { (ip) } }
                            td.num { (num(**n)) }
                            td { (stats.ips_locations_info_map.get(*ip).map(|l| l.country.as_str()).unwrap_or("")) }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { (tr(lang, "Top locations")) }
            table #top-locations.compact {
                thead { tr { th { (tr(lang, "Location")) } th { (tr(lang, "Occurrences")) } } }
                tbody {
                    @for (place, n) in &locations {
                        tr { td { (place.trim_end_matches(',')) } td.num { (num(**n)) } }
                    }
                }
            }
        }
        section.card {
            h2 { (tr(lang, "Chain payload")) }
            pre.json #chain-payload { (json_html(&payload, &no_link)) }
        }
    };
    page(
        &session,
        &format!("/console/cti/{source}/{cti}"),
        "/console/datasets",
        &r.cti_name,
        &Flash::default(),
        body,
    )
    .into_response()
}
