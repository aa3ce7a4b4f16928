//! The CTI part of the data API: build CTI records from a file's STIX records, follow the job,
//! read the records, their statistics and their chain payloads, and record a publication.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::AppState;
use super::data::{blocking, parse_hash, require_file, store_error};
use super::data_stix::{List, Num, Text, absent, latest_job, paging, progress_answer, vocabulary};
use super::envelope::{ApiError, JsonBody, ok, parse_json};
use br_cti_app::conversion::{CtiBuildRequest, start_cti_build};
use br_cti_domain::job::CtiParams;
use br_cti_domain::model::{CtiRecord, JobKind, Publication};
use br_cti_domain::time::DisplayZone;
use br_cti_domain::vocab::{DataType, IncentiveMechanism, OpenSource};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/process_stix_to_cti", post(process_stix_to_cti))
        .route("/get_cti_process_progress", post(get_cti_process_progress))
        .route(
            "/get_local_cti_records",
            post(local_cti_records_post).get(local_cti_records_get),
        )
        .route("/get_cti_record", post(cti_record_post).get(cti_record_get))
        .route(
            "/get_cti_statistic_info",
            post(statistic_info_post).get(statistic_info_get),
        )
        .route(
            "/get_cti_chain_payload",
            post(chain_payload_post).get(chain_payload_get),
        )
        .route("/mark_cti_onchain", post(mark_cti_onchain))
        .route("/get_default_points", post(get_default_points))
}

/// Query parameters read with the same field checks and messages as a JSON body.
fn from_query<T: DeserializeOwned>(q: HashMap<String, String>) -> Result<T, ApiError> {
    let body = serde_json::to_vec(&q).map_err(|e| ApiError::internal("reading the query", e))?;
    parse_json(&body)
}

/// A read endpoint answering both `POST` (JSON body) and `GET` (query parameters).
macro_rules! post_and_get {
    ($post:ident, $get:ident, $inner:ident, $req:ty) => {
        async fn $post(
            State(state): State<AppState>,
            JsonBody(req): JsonBody<$req>,
        ) -> Result<Response, ApiError> {
            $inner(state, req).await
        }

        async fn $get(
            State(state): State<AppState>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Result<Response, ApiError> {
            $inner(state, from_query(q)?).await
        }
    };
}

post_and_get!(
    local_cti_records_post,
    local_cti_records_get,
    local_cti_records,
    ListRequest
);
post_and_get!(cti_record_post, cti_record_get, cti_record, OneRequest);
post_and_get!(
    statistic_info_post,
    statistic_info_get,
    statistic_info,
    OneRequest
);
post_and_get!(
    chain_payload_post,
    chain_payload_get,
    chain_payload,
    OneRequest
);

// ------------------------------------------------------------------------------ the job

#[derive(Deserialize)]
pub(crate) struct CtiRequest {
    file_hash: String,
    #[serde(default)]
    process_id: Text,
    #[serde(default = "absent")]
    cti_type: Num,
    #[serde(default)]
    cti_name: Text,
    #[serde(default = "absent")]
    open_source: Num,
    #[serde(default)]
    cti_description: Text,
    #[serde(default = "absent")]
    default_value: Num,
    #[serde(default = "absent")]
    incentive_mechanism: Num,
    #[serde(default = "absent")]
    cti_traffic_type: Num,
    #[serde(default)]
    cti_tags: Option<List>,
    #[serde(default)]
    stix_tags: Option<List>,
}

const MAX_NAME_CHARS: usize = 256;
const MAX_DESCRIPTION_CHARS: usize = 10_000;

async fn process_stix_to_cti(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CtiRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let request = cti_build_request(req, state.config.default_points)?;
    let job = blocking("starting the CTI build", move || {
        Ok(start_cti_build(&state.jobs, request)?)
    })
    .await?;

    Ok(ok(
        "start create local cti records by hash",
        json!({"current_step": 0, "total_step": job.total_steps, "job_id": job.id}),
    ))
}

/// A CTI build request's fields as typed values (the data API's and the console's);
/// `default_points` is the value of a request that names none.
pub(crate) fn cti_build_request(
    req: CtiRequest,
    default_points: f64,
) -> Result<CtiBuildRequest, ApiError> {
    let hash = parse_hash("file_hash", &req.file_hash)?;
    let cti_type = req.cti_type.member("cti_type")?;
    let open_source = req
        .open_source
        .member("open_source")?
        .unwrap_or(OpenSource::Closed);
    let value = match req.default_value.0 {
        None => default_points,
        Some(v) if v >= 0.0 => v,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "field `default_value`: {v} is negative"
            )));
        }
    };
    let incentive_mechanism = req
        .incentive_mechanism
        .member("incentive_mechanism")?
        .unwrap_or(IncentiveMechanism::First);
    let cti_traffic_type = req.cti_traffic_type.member("cti_traffic_type")?;
    let tags = match (req.cti_tags, req.stix_tags) {
        (Some(l), _) => Some(vocabulary("cti_tags", &l.0)?),
        (None, Some(l)) => Some(vocabulary("stix_tags", &l.0)?),
        (None, None) => None,
    }
    .filter(|t| !t.is_empty());
    let name = req.cti_name.0.trim().to_string();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "field `cti_name`: longer than {MAX_NAME_CHARS} characters"
        )));
    }
    let description = req.cti_description.0;
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::bad_request(format!(
            "field `cti_description`: longer than {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok(CtiBuildRequest {
        file: hash,
        process_id: req.process_id.0,
        params: CtiParams {
            cti_type,
            cti_name: name,
            open_source,
            description,
            value,
            incentive_mechanism,
            cti_traffic_type,
            tags,
            records: 0,
        },
    })
}

#[derive(Deserialize)]
struct DefaultPointsRequest {
    #[serde(default = "absent")]
    cti_type: Num,
    #[serde(default = "absent")]
    incentive_mechanism: Num,
}

/// The Next.js 默认积分 button: the `value` a CTI record gets when a request gives none
/// (`--default-points`). The fields are checked as `process_stix_to_cti` checks them; the
/// value is the node's one default for every type and mechanism.
async fn get_default_points(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<DefaultPointsRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    req.cti_type.member::<DataType>("cti_type")?;
    req.incentive_mechanism
        .member::<IncentiveMechanism>("incentive_mechanism")?;
    Ok(ok(
        "Get default points successfully",
        state.config.default_points,
    ))
}

#[derive(Deserialize)]
struct FileHashRequest {
    file_hash: String,
}

async fn get_cti_process_progress(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<FileHashRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let job = latest_job(state, JobKind::Cti, &req.file_hash).await?;
    Ok(progress_answer(
        job.as_ref(),
        "CTI build",
        "Get cti process progress successfully",
    ))
}

// ---------------------------------------------------------------------------- reading

#[derive(Deserialize)]
struct ListRequest {
    file_hash: String,
    #[serde(default = "absent")]
    page: Num,
    #[serde(default = "absent")]
    page_size: Num,
}

#[derive(Deserialize)]
struct OneRequest {
    file_hash: String,
    cti_hash: String,
}

/// The chain payload: exactly the keys and JSON types the chain takes.
pub(crate) fn chain_payload_json(r: &CtiRecord, zone: &DisplayZone) -> Value {
    json!({
        "cti_hash": r.cti_hash,
        "cti_name": r.cti_name,
        "cti_type": r.cti_type,
        "cti_traffic_type": r.cti_traffic_type,
        "open_source": r.open_source,
        "tags": r.tags,
        "iocs": r.iocs,
        "stix_data": r.stix_data,
        "stix_ipfs_hash": r.stix_ipfs_hash,
        "statistic_info": r.statistic_info,
        "description": r.description,
        "data_size": r.data_size,
        "data_source_hash": r.data_source_hash,
        "data_source_ipfs_hash": r.data_source_ipfs_hash,
        "incentive_mechanism": r.incentive_mechanism,
        "value": r.value,
        "create_time": zone.display_ms(r.created_at),
    })
}

/// A CTI record as the API lists it: the chain payload plus local state.
fn record_json(r: &CtiRecord, zone: &DisplayZone) -> Value {
    let mut v = chain_payload_json(r, zone);
    let map = v.as_object_mut().expect("an object");
    map.insert("source_file_hash".into(), json!(r.source_file_hash));
    map.insert("onchain".into(), json!(r.onchain));
    map.insert("cti_id".into(), json!(r.cti_id));
    map.insert("update_time".into(), json!(zone.display_ms(r.updated_at)));
    map.insert("job_id".into(), json!(r.job_id));
    v
}

async fn local_cti_records(state: AppState, req: ListRequest) -> Result<Response, ApiError> {
    let hash = parse_hash("file_hash", &req.file_hash)?;
    let paging = paging(req.page, req.page_size)?;
    let zone = state.config.time_zone.clone();
    let (records, total) = blocking("listing CTI records", move || {
        require_file(&state, &hash)?;
        state
            .meta
            .cti_records(&hash, paging)
            .map_err(|e| store_error("listing CTI records", e))
    })
    .await?;
    let data: Vec<Value> = records.iter().map(|r| record_json(r, &zone)).collect();
    let mut resp = ok("Get cti records successfully", data).into_response();
    resp.headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    Ok(resp)
}

async fn load_one(state: AppState, req: OneRequest) -> Result<CtiRecord, ApiError> {
    let hash = parse_hash("file_hash", &req.file_hash)?;
    let cti_hash = parse_hash("cti_hash", &req.cti_hash)?;
    blocking("reading the CTI record", move || {
        state
            .meta
            .cti_record(&hash, &cti_hash)
            .map_err(|e| store_error("reading the CTI record", e))?
            .ok_or_else(|| {
                ApiError::bad_request(format!("file {hash} has no CTI record {cti_hash}"))
            })
    })
    .await
}

async fn cti_record(state: AppState, req: OneRequest) -> Result<Response, ApiError> {
    let zone = state.config.time_zone.clone();
    let r = load_one(state, req).await?;
    Ok(ok("Get cti record successfully", record_json(&r, &zone)).into_response())
}

async fn statistic_info(state: AppState, req: OneRequest) -> Result<Response, ApiError> {
    let r = load_one(state, req).await?;
    let stats: Value = serde_json::from_str(&r.statistic_info)
        .map_err(|e| ApiError::internal("reading the statistics", e))?;
    Ok(ok("Get cti statistic info successfully", stats).into_response())
}

async fn chain_payload(state: AppState, req: OneRequest) -> Result<Response, ApiError> {
    let zone = state.config.time_zone.clone();
    let r = load_one(state, req).await?;
    Ok(ok(
        "Get cti chain payload successfully",
        chain_payload_json(&r, &zone),
    )
    .into_response())
}

// ------------------------------------------------------------------------ publication

#[derive(Deserialize)]
struct OnchainRequest {
    file_hash: String,
    cti_hash: String,
    cti_id: Text,
    #[serde(default)]
    stix_ipfs_hash: Option<String>,
    #[serde(default)]
    data_source_ipfs_hash: Option<String>,
}

async fn mark_cti_onchain(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<OnchainRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let hash = parse_hash("file_hash", &req.file_hash)?;
    let cti_hash = parse_hash("cti_hash", &req.cti_hash)?;
    let cti_id = req.cti_id.0.trim().to_string();
    if cti_id.is_empty() || cti_id.len() > 256 {
        return Err(ApiError::bad_request(
            "field `cti_id`: the id the chain assigned (1 to 256 characters)",
        ));
    }
    let nonempty = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let publication = Publication {
        cti_id,
        stix_ipfs_hash: nonempty(req.stix_ipfs_hash),
        data_source_ipfs_hash: nonempty(req.data_source_ipfs_hash),
    };
    let zone = state.config.time_zone.clone();
    let record = blocking("recording the publication", move || {
        let found = state
            .meta
            .mark_cti_onchain(&hash, &cti_hash, &publication)
            .map_err(|e| store_error("recording the publication", e))?;
        if !found {
            return Err(ApiError::bad_request(format!(
                "file {hash} has no CTI record {cti_hash}"
            )));
        }
        state
            .meta
            .cti_record(&hash, &cti_hash)
            .map_err(|e| store_error("reading the CTI record", e))?
            .ok_or_else(|| ApiError::internal("reading the CTI record", "vanished"))
    })
    .await?;
    Ok(ok(
        "Cti record marked on chain",
        record_json(&record, &zone),
    ))
}
