//! The HTTP layer: one router per API, composed in [`router`]; [`serve`] runs the node.

mod conn;
mod console;
mod data;
mod data_cti;
mod data_stix;
mod envelope;
mod hd_read;
mod open_api;
mod ops;
mod taxii;

#[cfg(test)]
mod props;

/// The TAXII filter parser, for the property tests.
#[cfg(test)]
pub(crate) fn taxii_query_for_tests(
    q: &std::collections::HashMap<String, String>,
    id: Option<&str>,
) -> bool {
    taxii::query_for_tests(q, id)
}

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use br_cti_app::config::{CorsOrigins, ServeConfig};
use br_cti_app::jobs::Jobs;
use br_cti_store::{BlobStore, RecordStore};
use envelope::ApiError;

/// Everything a request handler may use.
#[derive(Clone)]
pub struct AppState {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn RecordStore>,
    pub config: Arc<ServeConfig>,
    pub jobs: Jobs,
    /// The text of the default mapping table (validated at start).
    pub default_mapping: Arc<String>,
    /// The hidden-danger interface's replay cache and rate limits.
    pub reports: Arc<br_cti_app::reports::Reports>,
    /// A connection of its own for TAXII (pages never wait behind ingest or jobs).
    pub taxii_db: Arc<dyn RecordStore>,
    /// Reads the objects of TAXII pages from their STIX files (and ahead, on an object store).
    pub taxii_bodies: Arc<br_cti_app::taxii::PageBodies>,
    /// Publishes new STIX into the TAXII read collections.
    pub publisher: Arc<br_cti_app::taxii::Publisher>,
    /// Request bodies held in memory, all requests together.
    pub body_budget: BodyBudget,
    /// The web console's session key and start time.
    pub console: Arc<console::ConsoleState>,
}

/// What the binary opens and hands to the HTTP layer: the stores, the running scheduler and
/// publisher, the validated default mapping and the configuration.
pub struct Parts {
    pub config: ServeConfig,
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn RecordStore>,
    /// A connection of its own for TAXII reads.
    pub taxii_db: Arc<dyn RecordStore>,
    pub taxii_bodies: br_cti_app::taxii::PageBodies,
    pub jobs: Jobs,
    pub publisher: Arc<br_cti_app::taxii::Publisher>,
    /// The text of the default mapping table (already validated).
    pub default_mapping: String,
}

impl AppState {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            config,
            blobs,
            meta,
            taxii_db,
            taxii_bodies,
            jobs,
            publisher,
            default_mapping,
        } = parts;
        Self {
            blobs,
            meta,
            reports: Arc::new(br_cti_app::reports::Reports::new(
                config.hidden_danger.clone(),
            )),
            taxii_db,
            taxii_bodies: Arc::new(taxii_bodies),
            publisher,
            body_budget: BodyBudget::new(config.max_body_memory_bytes),
            console: Arc::new(console::ConsoleState::new(config.api_token.as_deref())),
            config: Arc::new(config),
            jobs,
            default_mapping: Arc::new(default_mapping),
        }
    }
}

/// The whole application: every API, CORS, request logging and the JSON 404/405 answers.
pub(crate) fn router(state: AppState) -> Router {
    let data =
        data::router().route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let rest =
        hd_read::router().route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/data", data)
        .nest("/open/api/v1", open_api::router())
        .nest("/api/v1", rest)
        .merge(taxii::router())
        .merge(ops::router())
        .merge(console::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(cors_layer(&state.config.cors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers([header::HeaderName::from_static("x-total-count")]);
    match origins {
        CorsOrigins::Any => base.allow_origin(Any),
        CorsOrigins::None => CorsLayer::new(),
        CorsOrigins::List(list) => base.allow_origin(AllowOrigin::list(
            list.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
        )),
    }
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::status(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::status(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// When an API token is configured, `/data/*` and `/api/v1/*` require
/// `Authorization: Bearer <token>`. (The report interface authenticates each request by its
/// sign instead.)
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.config.api_token.as_deref() else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
            next.run(req).await
        }
        _ => {
            refuse_after_reading(
                req,
                ApiError::status(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong API token: send the header `Authorization: Bearer <token>`",
                )
                .into_response(),
            )
            .await
        }
    }
}

/// Answers `refusal` to a request refused before its body was read, after reading and dropping
/// that body (at most [`data::UPLOAD_DISCARD_BYTES`] and 30 seconds): a client that sends its
/// whole body before it reads (Python `requests`, a blocking `reqwest`) then receives the
/// refusal instead of a broken pipe or a reset.
pub(crate) async fn refuse_after_reading(req: Request, refusal: Response) -> Response {
    let (_, body) = req.into_parts();
    discard_body(body, data::UPLOAD_DISCARD_BYTES).await;
    refusal
}

/// An internal fault while answering a request: logged with its cause under a new incident id;
/// the client is told only what failed and the id (never database messages or file paths).
pub(crate) fn incident(context: &str, cause: impl std::fmt::Display) -> String {
    let mut id = [0u8; 4];
    let _ = getrandom::fill(&mut id);
    let id = hex::encode(id);
    tracing::error!(incident = %id, "{context}: {cause}");
    format!("internal error while {context} (incident {id}; the node's log has the cause)")
}

/// The bytes of request bodies the node holds in memory at once (hidden-danger reports, TAXII
/// objects), whoever sends them: each buffered body takes its bytes from this budget as they
/// arrive and gives them back when its request ends. Uploads stream to disk and take none.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    total: u64,
}

impl BodyBudget {
    pub fn new(total: u64) -> Self {
        let total = total.clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u64);
        BodyBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(total as usize)),
            total,
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.total - self.bytes.available_permits() as u64
    }
}

/// A request body read whole; its bytes count against the [`BodyBudget`] until it is dropped.
pub(crate) struct BufferedBody {
    pub bytes: bytes::Bytes,
    _held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Why a request body was not read whole.
pub(crate) enum BodyError {
    /// Longer than the limit (the rest was read and dropped, up to the discard limit).
    TooLarge,
    /// The bodies held by all requests reached the budget (the rest was read and dropped).
    Busy {
        budget: u64,
    },
    Read(String),
}

impl BodyError {
    /// The answer to a client whose body could not be held (`Busy`): try again shortly.
    pub(crate) fn busy_message(budget: u64) -> String {
        format!(
            "the node is holding {budget} bytes of request bodies, its limit for all requests \
             together (--max-body-memory-bytes); send this request again in a moment"
        )
    }
}

/// Reads a body of at most `limit` bytes, taking its bytes from `budget`. A longer one (or one
/// the budget cannot hold) is read on and dropped, up to `discard` bytes in all, so that a
/// client still sending it receives the refusal instead of a broken pipe; memory holds at most
/// `limit` bytes either way.
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
    discard: u64,
    budget: &BodyBudget,
) -> Result<BufferedBody, BodyError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let seen = (buf.len() + data.len()) as u64;
            if buf.len() + data.len() > limit {
                drop((buf, held));
                discard_body(body, discard.saturating_sub(seen)).await;
                return Err(BodyError::TooLarge);
            }
            let more = u32::try_from(data.len()).unwrap_or(u32::MAX);
            match budget.bytes.clone().try_acquire_many_owned(more) {
                Ok(permit) => match &mut held {
                    Some(h) => h.merge(permit),
                    None => held = Some(permit),
                },
                Err(_) => {
                    drop((buf, held));
                    tracing::warn!(
                        budget = budget.total,
                        held = budget.held(),
                        "a request body was refused: the bodies held reached the budget"
                    );
                    discard_body(body, discard.saturating_sub(seen)).await;
                    return Err(BodyError::Busy {
                        budget: budget.total,
                    });
                }
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(BufferedBody {
        bytes: buf.freeze(),
        _held: held,
    })
}

/// Reads and drops what is left of a refused body, at most `limit` bytes and 30 seconds.
pub(crate) async fn discard_body(body: axum::body::Body, limit: u64) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0u64;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while seen <= limit {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        seen += data.len() as u64;
                    }
                }
                _ => break,
            }
        }
    })
    .await;
}

/// Serves the node on `listener` until `shutdown` completes; then stops the job worker and the
/// publisher and checkpoints the database.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let meta = state.meta.clone();
    let limits = state.config.connections;
    let (jobs, publisher) = (state.jobs.clone(), state.publisher.clone());
    conn::serve(listener, router(state), limits, shutdown).await;
    jobs.stop();
    publisher.stop();
    // A clean stop leaves a complete database file (not a file plus its write-ahead log).
    match tokio::task::spawn_blocking(move || meta.checkpoint()).await {
        Ok(Ok(())) => tracing::info!("database checkpointed; stopped"),
        Ok(Err(e)) => tracing::error!("checkpointing the database at stop: {e}"),
        Err(e) => tracing::error!("checkpointing the database at stop: {e}"),
    }
}
