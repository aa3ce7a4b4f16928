//! TAXII 2.1 (OASIS): discovery, one API root, status, collections, manifest, objects (GET and
//! POST), object by id (GET and DELETE), and object versions. Media type
//! `application/taxii+json;version=2.1`; errors in the TAXII error shape.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use br_cti_app::error::AppError;
use br_cti_app::taxii::access::{
    Credentials, Policy, Principal, authenticate, can_read, can_write, tlp_ceiling,
    visible_collection, writable_collection,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use br_cti_app::taxii::{self, Collection};
use br_cti_domain::model::{Position, TaxiiQuery, TaxiiStatus, VersionMatch};
use br_cti_domain::time::now_ms;
use br_cti_domain::vocab::Tlp;
use br_cti_store::StoreError;

pub(crate) const TAXII: &str = "application/taxii+json;version=2.1";
/// A refused body is read (and dropped) up to this much so that the client, which is still
/// sending, gets the answer; past it the connection is closed.
const DISCARD_LIMIT: u64 = 64 << 20;
const DEFAULT_LIMIT: u64 = 1000;
const MAX_LIMIT: u64 = 10_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/taxii2/", get(discovery))
        .route("/taxii2/api/", get(api_root))
        .route("/taxii2/api/status/{status_id}/", get(status))
        .route("/taxii2/api/collections/", get(list_collections))
        .route("/taxii2/api/collections/{id}/", get(one_collection))
        .route("/taxii2/api/collections/{id}/manifest/", get(manifest))
        .route(
            "/taxii2/api/collections/{id}/objects/",
            get(get_objects)
                .post(add_objects)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/taxii2/api/collections/{id}/objects/{object_id}/",
            get(get_object).delete(delete_object),
        )
        .route(
            "/taxii2/api/collections/{id}/objects/{object_id}/versions/",
            get(versions),
        )
}

// ------------------------------------------------------------------------ errors, media

pub(crate) struct TaxiiError {
    status: StatusCode,
    title: &'static str,
    description: String,
}

fn error(status: StatusCode, title: &'static str, description: impl Into<String>) -> TaxiiError {
    TaxiiError {
        status,
        title,
        description: description.into(),
    }
}

fn bad(description: impl Into<String>) -> TaxiiError {
    error(StatusCode::BAD_REQUEST, "Bad request", description)
}

fn internal(e: impl std::fmt::Display) -> TaxiiError {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error",
        super::incident("answering a TAXII request", e),
    )
}

impl IntoResponse for TaxiiError {
    fn into_response(self) -> Response {
        let body = json!({
            "title": self.title,
            "description": self.description,
            "http_status": self.status.as_u16().to_string(),
        });
        let mut resp = taxii_json(self.status, &body);
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is left unread: the connection cannot be reused.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"br-cti TAXII\", Bearer"),
            );
        }
        resp
    }
}

fn taxii_json(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TAXII));
    resp
}

/// A media type and its `version` parameter, lowercased, without spaces.
fn media(s: &str) -> (String, Option<String>) {
    let mut parts = s.split(';').map(|p| p.trim().to_ascii_lowercase());
    let kind = parts.next().unwrap_or_default();
    let version = parts.find_map(|p| p.strip_prefix("version=").map(str::to_string));
    (kind, version)
}

/// 406 unless the client accepts TAXII 2.1 JSON (or, for objects, STIX 2.1 JSON).
fn check_accept(headers: &HeaderMap, stix_too: bool) -> Result<(), TaxiiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let ok = accept.split(',').any(|item| {
        let (kind, version) = media(item);
        let version_ok = version.as_deref().is_none_or(|v| v == "2.1");
        kind == "*/*"
            || kind == "application/*"
            || (kind == "application/taxii+json" && version_ok)
            || (stix_too && kind == "application/stix+json" && version_ok)
    });
    if ok {
        Ok(())
    } else {
        Err(error(
            StatusCode::NOT_ACCEPTABLE,
            "Not acceptable",
            format!("this server answers {TAXII}; the request accepts only {accept:?}"),
        ))
    }
}

// ---------------------------------------------------------------------------------- auth

/// The `Authorization` header as credentials (decoding is parsing; checking them is the
/// application's).
fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Credentials::None;
    };
    if let Some(b64) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        return match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((user, token)) => Credentials::Basic {
                user: user.to_string(),
                token: token.to_string(),
            },
            None => Credentials::Malformed,
        };
    }
    match value.strip_prefix("Bearer ") {
        Some(token) => Credentials::Bearer(token.trim().to_string()),
        None => Credentials::Malformed,
    }
}

/// Who the request acts for.
fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, TaxiiError> {
    let policy = Policy {
        anonymous: state.config.taxii_anonymous,
        api_token: state.config.api_token.as_deref(),
    };
    Ok(authenticate(
        &*state.taxii_db,
        &policy,
        credentials(headers),
    )?)
}

/// A storage error while doing `context`, answered as every application error is.
fn store(context: &'static str, e: StoreError) -> TaxiiError {
    AppError::store(context, e).into()
}

/// The TAXII answer to an application error (its one conversion).
impl From<AppError> for TaxiiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(m) => bad(m),
            AppError::NotFound(m) => error(StatusCode::NOT_FOUND, "Not found", m),
            AppError::Unauthorized(m) => error(StatusCode::UNAUTHORIZED, "Unauthorized", m),
            AppError::Forbidden(m) => error(StatusCode::FORBIDDEN, "Forbidden", m),
            AppError::Conflict(m) => error(StatusCode::CONFLICT, "Conflict", m),
            AppError::StorageFull { context, cause } => {
                tracing::error!("{context}: {cause}");
                error(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "Insufficient storage",
                    format!("the node's disk is full ({context} failed); try again later"),
                )
            }
            AppError::StoreReplaced { cause } => {
                tracing::error!("{cause}");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    "the node's database was replaced while it ran",
                )
            }
            AppError::Internal { context, cause } => internal(format!("{context}: {cause}")),
        }
    }
}
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TaxiiError> + Send + 'static,
) -> Result<T, TaxiiError> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

// ----------------------------------------------------------------------- the endpoints

async fn discovery(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, TaxiiError> {
    check_accept(&headers, false)?;
    blocking({
        let (state, headers) = (state.clone(), headers.clone());
        move || principal(&state, &headers)
    })
    .await?;
    let root = format!("{}/taxii2/api/", base_url(&headers));
    Ok(taxii_json(
        StatusCode::OK,
        &json!({
            "title": "br-cti TAXII 2.1",
            "description": "STIX 2.1 produced by this br-cti node: dataset conversions and hidden dangers; an inbox for peers.",
            "default": root,
            "api_roots": [root],
        }),
    ))
}

async fn api_root(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, TaxiiError> {
    check_accept(&headers, false)?;
    let max_content_length = state.config.taxii_max_content_length;
    blocking(move || principal(&state, &headers)).await?;
    Ok(taxii_json(
        StatusCode::OK,
        &json!({
            "title": "br-cti",
            "description": "The collections of this node.",
            "versions": [TAXII],
            "max_content_length": max_content_length,
        }),
    ))
}

fn collection_json(state: &AppState, who: &Principal, c: &Collection) -> Result<Value, TaxiiError> {
    Ok(json!({
        "id": c.id,
        "title": c.title,
        "description": c.description,
        "can_read": can_read(who, c),
        "can_write": can_write(&*state.taxii_db, who, c)?,
        "media_types": ["application/stix+json;version=2.1"],
    }))
}

async fn list_collections(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, TaxiiError> {
    check_accept(&headers, false)?;
    let body = blocking(move || {
        let who = principal(&state, &headers)?;
        let mut out = Vec::new();
        for c in taxii::collections() {
            if can_read(&who, &c) || can_write(&*state.taxii_db, &who, &c)? {
                out.push(collection_json(&state, &who, &c)?);
            }
        }
        Ok(json!({"collections": out}))
    })
    .await?;
    Ok(taxii_json(StatusCode::OK, &body))
}

async fn one_collection(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, TaxiiError> {
    check_accept(&headers, false)?;
    let body = blocking(move || {
        let who = principal(&state, &headers)?;
        let c = visible_collection(&*state.taxii_db, &who, &id)?;
        collection_json(&state, &who, &c)
    })
    .await?;
    Ok(taxii_json(StatusCode::OK, &body))
}

/// Whether `query` accepts these parameters (the property tests call it).
#[cfg(test)]
pub(crate) fn query_for_tests(q: &HashMap<String, String>, id: Option<&str>) -> bool {
    query(q, id, Tlp::Red).is_ok()
}

/// The filters and paging of a request (`added_after`, `limit`, `next`, `match[...]`).
fn query(
    q: &HashMap<String, String>,
    id: Option<&str>,
    max_tlp: Tlp,
) -> Result<TaxiiQuery, TaxiiError> {
    let list = |k: &str| -> Vec<String> {
        q.get(k)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    for k in q.keys() {
        let known = ["added_after", "limit", "next"].contains(&k.as_str())
            || [
                "match[id]",
                "match[type]",
                "match[version]",
                "match[spec_version]",
            ]
            .contains(&k.as_str());
        if !known && k.starts_with("match[") {
            return Err(bad(format!("unknown filter {k}")));
        }
    }
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad(format!("limit {v:?} is not a positive integer")))?
            .min(MAX_LIMIT),
    };
    let after = match q.get("next") {
        None => Position::START,
        Some(v) => taxii::decode_cursor(v)
            .ok_or_else(|| bad(format!("next {v:?} is not a cursor of this server")))?,
    };
    let added_after = match q.get("added_after") {
        None => None,
        Some(v) => Some(
            taxii::parse_us(v.trim())
                .ok_or_else(|| bad(format!("added_after {v:?} is not an RFC 3339 timestamp")))?,
        ),
    };
    let mut versions = Vec::new();
    for v in list("match[version]") {
        versions.push(match v.as_str() {
            "last" => VersionMatch::Last,
            "first" => VersionMatch::First,
            "all" => VersionMatch::All,
            t if let Some(us) = taxii::parse_us(t) => VersionMatch::At(us),
            other => {
                return Err(bad(format!(
                    "match[version] {other:?} is not last, first, all or a timestamp"
                )));
            }
        });
    }
    let mut spec_versions = list("match[spec_version]");
    if let Some(bad_sv) = spec_versions
        .iter()
        .find(|s| !["2.0", "2.1"].contains(&s.as_str()))
    {
        return Err(bad(format!(
            "match[spec_version] {bad_sv:?} is not 2.0 or 2.1"
        )));
    }
    spec_versions.retain(|s| s == "2.1" || s == "2.0");
    let mut ids = list("match[id]");
    if let Some(id) = id {
        ids = vec![id.to_string()];
    }
    Ok(TaxiiQuery {
        after,
        max_tlp,
        added_after,
        limit,
        ids,
        types: list("match[type]"),
        versions,
        spec_versions,
    })
}

#[derive(Clone, Copy)]
enum Shape {
    Objects,
    Manifest,
    Versions,
}

async fn page(
    state: AppState,
    headers: HeaderMap,
    id: String,
    object_id: Option<String>,
    q: HashMap<String, String>,
    shape: Shape,
) -> Result<Response, TaxiiError> {
    check_accept(&headers, matches!(shape, Shape::Objects))?;
    let wanted = object_id.clone();
    let (rows, texts, more, query) = blocking(move || {
        let who = principal(&state, &headers)?;
        let c = visible_collection(&*state.taxii_db, &who, &id)?;
        if !can_read(&who, &c) {
            return Err(error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "this collection can be written, not read, with these credentials",
            ));
        }
        let ceiling = tlp_ceiling(&*state.taxii_db, &who)?;
        let mut query = query(&q, object_id.as_deref(), ceiling)?;
        if matches!(shape, Shape::Versions) {
            query.versions = vec![VersionMatch::All];
        }
        let (rows, more) = state
            .taxii_db
            .taxii_page(&c.id, &query)
            .map_err(|e| store("reading the collection", e))?;
        let texts = match shape {
            Shape::Objects => state.taxii_bodies.page_texts(&c.id, &query, &rows, more)?,
            Shape::Manifest | Shape::Versions => Vec::new(),
        };
        Ok((rows, texts, more, query))
    })
    .await?;
    if let Some(object_id) = wanted
        && rows.is_empty()
        && query.after == Position::START
    {
        return Err(error(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no object {object_id} here"),
        ));
    }
    let next = rows
        .last()
        .filter(|_| more)
        .map(|last| taxii::encode_cursor(last.position));
    let text = match shape {
        // The objects go out as they are stored, checked to be JSON but not rebuilt: parsing
        // each into a `Value` and writing it again was most of a page's time (1,000 dataset
        // objects are about 850 KB).
        Shape::Objects => Page::json(
            more,
            next,
            (!rows.is_empty()).then(|| {
                texts
                    .into_iter()
                    .map(|t| RawValue::from_string(t).unwrap_or_else(|_| raw_null()))
                    .collect::<Vec<_>>()
            }),
            None,
        ),
        Shape::Manifest => Page::json(
            more,
            next,
            (!rows.is_empty()).then(|| rows.iter().map(ManifestEntry::of).collect::<Vec<_>>()),
            None,
        ),
        Shape::Versions => {
            let mut versions: Vec<String> = rows.iter().map(version_of).collect();
            versions.sort();
            Page::<()>::json(more, next, None, Some(versions))
        }
    }
    .map_err(internal)?;
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TAXII));
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let h = resp.headers_mut();
        h.insert(
            "x-taxii-date-added-first",
            HeaderValue::from_str(&taxii::format_us(first.date_added)).map_err(internal)?,
        );
        h.insert(
            "x-taxii-date-added-last",
            HeaderValue::from_str(&taxii::format_us(last.date_added)).map_err(internal)?,
        );
    }
    Ok(resp)
}

/// A page of a collection: `more`, `next` when there is more, the objects of an objects or
/// manifest page when there are any, the versions of a versions page.
#[derive(serde::Serialize)]
struct Page<T> {
    more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    objects: Option<Vec<T>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<Vec<String>>,
}

impl<T: serde::Serialize> Page<T> {
    fn json(
        more: bool,
        next: Option<String>,
        objects: Option<Vec<T>>,
        versions: Option<Vec<String>>,
    ) -> serde_json::Result<String> {
        serde_json::to_string(&Page {
            more,
            next,
            objects,
            versions,
        })
    }
}

/// One object of a manifest page.
#[derive(serde::Serialize)]
struct ManifestEntry<'a> {
    id: &'a str,
    date_added: String,
    version: String,
    media_type: &'static str,
}

impl<'a> ManifestEntry<'a> {
    fn of(row: &'a br_cti_domain::model::TaxiiObject) -> Self {
        Self {
            id: &row.id,
            date_added: taxii::format_us(row.date_added),
            version: version_of(row),
            media_type: "application/stix+json;version=2.1",
        }
    }
}

/// An object's version as TAXII gives it: its `modified` (or `created`), else when it was
/// added.
fn version_of(row: &br_cti_domain::model::TaxiiObject) -> String {
    if row.version.is_empty() {
        taxii::format_us(row.date_added)
    } else {
        row.version.clone()
    }
}

fn raw_null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

async fn manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, TaxiiError> {
    page(state, headers, id, None, q, Shape::Manifest).await
}

async fn get_objects(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, TaxiiError> {
    page(state, headers, id, None, q, Shape::Objects).await
}

async fn get_object(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, object_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, TaxiiError> {
    page(state, headers, id, Some(object_id), q, Shape::Objects).await
}

async fn versions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, object_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, TaxiiError> {
    page(state, headers, id, Some(object_id), q, Shape::Versions).await
}

fn writer(state: &AppState, headers: &HeaderMap, id: &str) -> Result<Collection, TaxiiError> {
    let who = principal(state, headers)?;
    Ok(writable_collection(&*state.taxii_db, &who, id)?)
}

async fn add_objects(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, TaxiiError> {
    check_accept(&headers, false)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (kind, version) = media(content_type);
    if kind != "application/taxii+json" || version.as_deref().is_some_and(|v| v != "2.1") {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            format!("send {TAXII} (got {content_type:?})"),
        ));
    }
    // Credentials and the collection first: an unauthorised client's body is never kept
    // (it is read and dropped, so that the answer reaches the client).
    let c = {
        let (state, headers) = (state.clone(), headers.clone());
        match blocking(move || writer(&state, &headers, &id)).await {
            Ok(c) => c,
            Err(e) => {
                super::discard_body(body, DISCARD_LIMIT).await;
                return Err(e);
            }
        }
    };
    let max_content_length = state.config.taxii_max_content_length;
    let body = match super::read_body(
        body,
        max_content_length as usize,
        DISCARD_LIMIT,
        &state.body_budget,
    )
    .await
    {
        Ok(body) => body,
        Err(super::BodyError::Busy { budget }) => {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                super::BodyError::busy_message(budget),
            ));
        }
        Err(super::BodyError::TooLarge) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                format!(
                    "the body is larger than max_content_length ({max_content_length} bytes, \
                     --taxii-max-content-length)"
                ),
            ));
        }
        Err(super::BodyError::Read(e)) => {
            return Err(bad(format!("the body could not be read: {e}")));
        }
    };
    let status = blocking(move || {
        let envelope: Value = serde_json::from_slice(&body.bytes)
            .map_err(|e| bad(format!("the body is not JSON: {e}")))?;
        let objects = envelope
            .get("objects")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("the body must be an envelope {\"objects\": [...]}"))?;
        let mut valid = Vec::new();
        let mut failures = Vec::new();
        for o in objects {
            match taxii::parse_object(o) {
                Ok(n) => valid.push(n),
                Err(invalid) => failures.push(json!({
                    "id": o.get("id").and_then(Value::as_str).unwrap_or(""),
                    "version": o.get("modified").or_else(|| o.get("created")).and_then(Value::as_str).unwrap_or(""),
                    "message": invalid.to_string(),
                })),
            }
        }
        state
            .taxii_db
            .taxii_add(&c.id, &valid, None)
            .map_err(|e| store("adding the objects", e))?;
        let successes: Vec<Value> = valid
            .iter()
            .map(|o| json!({"id": o.id, "version": o.version}))
            .collect();
        let status = TaxiiStatus {
            id: uuid::Uuid::new_v4().to_string(),
            collection: c.id.clone(),
            request_timestamp: now_ms() * 1000,
            total: objects.len() as u64,
            success_count: successes.len() as u64,
            failure_count: failures.len() as u64,
            successes: Value::Array(successes).to_string(),
            failures: Value::Array(failures).to_string(),
        };
        state
            .taxii_db
            .taxii_save_status(&status)
            .map_err(|e| store("saving the status", e))?;
        Ok(status)
    })
    .await?;
    Ok(taxii_json(StatusCode::ACCEPTED, &status_json(&status)))
}

fn status_json(s: &TaxiiStatus) -> Value {
    json!({
        "id": s.id,
        "status": "complete",
        "request_timestamp": taxii::format_us(s.request_timestamp),
        "total_count": s.total,
        "success_count": s.success_count,
        "successes": serde_json::from_str::<Value>(&s.successes).unwrap_or(json!([])),
        "failure_count": s.failure_count,
        "failures": serde_json::from_str::<Value>(&s.failures).unwrap_or(json!([])),
        "pending_count": 0,
        "pendings": [],
    })
}

async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(status_id): Path<String>,
) -> Result<Response, TaxiiError> {
    check_accept(&headers, false)?;
    let s = blocking(move || {
        let s = state
            .taxii_db
            .taxii_status(&status_id)
            .map_err(|e| store("reading the status", e))?
            .ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    format!("no status {status_id}"),
                )
            })?;
        // Only those who may write the collection see its add requests.
        writer(&state, &headers, &s.collection).map_err(|_| {
            error(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("no status {status_id}"),
            )
        })?;
        Ok(s)
    })
    .await?;
    Ok(taxii_json(StatusCode::OK, &status_json(&s)))
}

async fn delete_object(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, object_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, TaxiiError> {
    check_accept(&headers, false)?;
    blocking(move || {
        let who = principal(&state, &headers)?;
        let c = writable_collection(&*state.taxii_db, &who, &id)?;
        // A writer deletes only what it may read: an object above its level is not found.
        let ceiling = tlp_ceiling(&*state.taxii_db, &who)?;
        let query = query(&q, Some(&object_id), ceiling)?;
        let versions = if q.contains_key("match[version]") {
            query.versions
        } else {
            vec![VersionMatch::All]
        };
        let n = state
            .taxii_db
            .taxii_delete(&c.id, &object_id, &versions, ceiling)
            .map_err(|e| store("deleting the object", e))?;
        if n == 0 {
            return Err(error(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("no object {object_id} here"),
            ));
        }
        Ok(())
    })
    .await?;
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TAXII));
    Ok(resp)
}
