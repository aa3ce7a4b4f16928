//! The br-cti data API (`/data/*`), wire-compatible with the old Python server (the contract
//! is described in `docs/api.md`).

use std::io::Write;

use axum::Router;
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::envelope::{ApiError, JsonBody, ok};
use br_cti_app::error::AppError;
use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::model::FileMeta;
use br_cti_domain::time::now_ms;
use br_cti_engine::dataset;
use br_cti_store::{StagedBlob, StoreError};

/// Multipart framing and the small text fields around the file.
pub(crate) const MULTIPART_OVERHEAD: u64 = 1 << 20;
const MAX_TASK_ID_CHARS: usize = 128;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/upload_file",
            post(upload_file).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/get_traffic_data_features",
            post(get_traffic_data_features),
        )
        .merge(super::data_stix::router())
        .merge(super::data_cti::router())
}

/// Runs blocking storage work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    context: &'static str,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(context, e))?
}

/// A storage fault while handling a request: a full disk is named (HTTP 507, the client may
/// retry once space is freed), anything else is an internal error.
pub(crate) fn storage_fault(context: &'static str, e: std::io::Error) -> ApiError {
    store_error(context, StoreError::Io(e))
}

fn disk_full(context: &str) -> ApiError {
    ApiError::status(
        StatusCode::INSUFFICIENT_STORAGE,
        format!(
            "the node's disk is full ({context} failed); send the request again once space is freed"
        ),
    )
}

pub(crate) fn store_error(context: &'static str, e: StoreError) -> ApiError {
    AppError::store(context, e).into()
}

/// The data API's answer to an application error (its one conversion).
impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Invalid(m) | AppError::NotFound(m) | AppError::Conflict(m) => {
                ApiError::bad_request(m)
            }
            AppError::Unauthorized(m) => ApiError::status(StatusCode::UNAUTHORIZED, m),
            AppError::Forbidden(m) => ApiError::status(StatusCode::FORBIDDEN, m),
            AppError::StorageFull { context, cause } => {
                tracing::error!("{context}: {cause}");
                disk_full(context)
            }
            AppError::StoreReplaced { cause } => {
                tracing::error!("{cause}");
                ApiError::status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the node's database file was deleted or replaced while it ran; it refuses \
                     requests until an operator restores the file or restarts it",
                )
            }
            AppError::Internal { context, cause } => ApiError::internal(context, cause),
        }
    }
}

/// Fails unless an uploaded file has this hash (blocking: call inside [`blocking`]).
pub(crate) fn require_file(state: &AppState, hash: &Sha256Hex) -> Result<(), ApiError> {
    Ok(br_cti_app::conversion::require_file(&*state.meta, hash)?)
}

/// Parses a `file_hash`-like field, naming it in the error.
pub(crate) fn parse_hash(field: &str, value: &str) -> Result<Sha256Hex, ApiError> {
    Sha256Hex::parse(value.trim())
        .map_err(|e| ApiError::bad_request(format!("field `{field}` {e}")))
}

// ---------------------------------------------------------------------------------- upload

async fn upload_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let max = state.config.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(format!(
            "expected a multipart/form-data body with fields `file` and `task_id`: {}",
            e.body_text()
        ))
    })?;
    let received = if declared.is_some_and(|len| len > max + MULTIPART_OVERHEAD) {
        Err(too_large(max))
    } else {
        receive_upload(&state, &mut multipart, max).await
    };
    if received.is_err() {
        // Read the rest and drop it, so that a client sending the whole body before it reads
        // (Python `requests`) receives the refusal (too large, a full disk, a bad field)
        // instead of a broken pipe.
        drain_multipart(&mut multipart, UPLOAD_DISCARD_BYTES).await;
    }
    received
}

/// Bytes of a refused upload read and dropped so that the refusal reaches the client.
pub(crate) const UPLOAD_DISCARD_BYTES: u64 = 64 << 20;

/// Reads and drops what is left of a multipart body, at most `limit` bytes and 30 seconds.
pub(crate) async fn drain_multipart(multipart: &mut Multipart, limit: u64) {
    let mut seen = 0u64;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                seen += chunk.len() as u64;
                if seen > limit {
                    return;
                }
            }
        }
    })
    .await;
}

pub(crate) async fn receive_upload(
    state: &AppState,
    multipart: &mut Multipart,
    max: u64,
) -> Result<axum::Json<Value>, ApiError> {
    let mut task_id: Option<String> = None;
    let mut staged: Option<(Box<dyn StagedBlob>, Option<String>)> = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file") => {
                if staged.is_some() {
                    return Err(ApiError::bad_request(
                        "more than one `file` field; send one file per request",
                    ));
                }
                let name = field.file_name().and_then(sanitize_file_name);
                staged = Some((receive_file(state, field, max).await?, name));
            }
            Some("task_id") => {
                task_id = Some(parse_task_id(&read_small_field(field, "task_id").await?)?);
            }
            _ => {
                // Unknown fields are tolerated and discarded.
                let mut field = field;
                while field.chunk().await.map_err(multipart_error)?.is_some() {}
            }
        }
    }
    let Some((staged, original_name)) = staged else {
        return Err(ApiError::bad_request(
            "missing field `file` (the dataset to upload)",
        ));
    };
    let Some(task_id) = task_id else {
        // `staged` is dropped: nothing of this request is kept.
        return Err(ApiError::bad_request("missing field `task_id`"));
    };
    let meta = state.meta.clone();
    let (blob, record) = blocking("recording the upload", move || {
        let blob = staged
            .commit()
            .map_err(|e| storage_fault("storing the upload", e))?;
        let file = FileMeta {
            hash: blob.hash.clone(),
            size: blob.size,
            original_name,
            created_at_ms: now_ms(),
        };
        let record = meta
            .record_upload(&file, &task_id)
            .map_err(|e| store_error("recording the upload", e))?;
        Ok((blob, record))
    })
    .await?;
    tracing::info!(
        file_hash = %blob.hash,
        size = blob.size,
        deduplicated = blob.deduplicated,
        task_id = %record.task_id,
        "file uploaded"
    );
    Ok(ok(
        "File uploaded successfully",
        json!({
            "file_hash": blob.hash.as_str(),
            "file_size": blob.size,
            "task_record": record,
        }),
    ))
}

/// How many leading bytes identify a binary format.
const HEAD_BYTES: usize = 64;

fn not_a_dataset(kind: &str) -> ApiError {
    ApiError::bad_request(format!(
        "not a dataset: {kind}; upload a CSV, XLSX, XLS, JSON or JSON Lines file"
    ))
}

pub(crate) fn too_large(max: u64) -> ApiError {
    ApiError::status(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the file is larger than the upload limit of {max} bytes (--max-upload-bytes)"),
    )
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::status(StatusCode::PAYLOAD_TOO_LARGE, e.body_text())
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

/// An empty `task_id` gets a generated one; otherwise 1-128 printable characters.
fn parse_task_id(raw: &str) -> Result<String, ApiError> {
    let id = raw.trim();
    if id.is_empty() {
        return Ok(uuid::Uuid::new_v4().to_string());
    }
    if id.chars().count() > MAX_TASK_ID_CHARS {
        return Err(ApiError::bad_request(format!(
            "field `task_id` is longer than {MAX_TASK_ID_CHARS} characters"
        )));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(ApiError::bad_request(format!(
            "field `task_id` contains the control character {c:?}"
        )));
    }
    Ok(id.to_string())
}

async fn read_small_field(mut field: Field<'_>, name: &str) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        buf.extend_from_slice(&chunk);
        if buf.len() > 4096 {
            return Err(ApiError::bad_request(format!("field `{name}` is too long")));
        }
    }
    String::from_utf8(buf)
        .map_err(|_| ApiError::bad_request(format!("field `{name}` is not valid UTF-8")))
}

/// The client's file name as harmless metadata: its last path component, control characters
/// removed, at most 255 characters.
fn sanitize_file_name(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let clean = clean.trim();
    (!clean.is_empty() && clean != "." && clean != "..").then(|| clean.to_string())
}

enum Chunk {
    Data(Bytes),
    Finish,
}

/// Streams a multipart field into a staged blob. The network side (this task) and the disk
/// side (a blocking thread that writes and hashes) run concurrently with a bounded channel
/// between them, so memory stays bounded whatever the file size. The blob is committed by the
/// caller once the whole request is valid; dropped, it leaves nothing behind.
async fn receive_file(
    state: &AppState,
    mut field: Field<'_>,
    max: u64,
) -> Result<Box<dyn StagedBlob>, ApiError> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(32);
    let blobs = state.blobs.clone();
    let writer =
        tokio::task::spawn_blocking(move || -> std::io::Result<Option<Box<dyn StagedBlob>>> {
            let mut staged = blobs.stage()?;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Chunk::Data(bytes) => staged.write_all(&bytes)?,
                    Chunk::Finish => return Ok(Some(staged)),
                }
            }
            Ok(None)
        });
    let mut total: u64 = 0;
    // The first bytes, to refuse images, executables and archives before storing anything.
    let mut head: Vec<u8> = Vec::with_capacity(HEAD_BYTES);
    let mut refused: Option<&'static str> = None;
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            total += chunk.len() as u64;
            if total > max {
                return Err(too_large(max));
            }
            if refused.is_some() {
                continue; // read to the end, so that the client gets the answer
            }
            if head.len() < HEAD_BYTES {
                let take = (HEAD_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
                if head.len() == HEAD_BYTES {
                    refused = dataset::binary_kind(&head);
                    if refused.is_some() {
                        continue;
                    }
                }
            }
            if tx.send(Chunk::Data(chunk)).await.is_err() {
                return Ok(()); // the writer failed; its error is reported below
            }
        }
        if total == 0 {
            return Err(ApiError::bad_request(
                "field `file` is empty: the uploaded file has no bytes",
            ));
        }
        if let Some(kind) = refused.or_else(|| dataset::binary_kind(&head)) {
            return Err(not_a_dataset(kind));
        }
        let _ = tx.send(Chunk::Finish).await;
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| ApiError::internal("storing the upload", e))?;
    outcome?;
    match written {
        Ok(Some(blob)) => Ok(blob),
        Ok(None) => Err(ApiError::internal(
            "storing the upload",
            "the writer stopped early",
        )),
        Err(e) => Err(storage_fault("storing the upload", e)),
    }
}

// -------------------------------------------------------------------------------- features

#[derive(Deserialize)]
struct FileHashRequest {
    file_hash: String,
}

async fn get_traffic_data_features(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<FileHashRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let hash = parse_hash("file_hash", &req.file_hash)?;
    let columns = blocking("reading dataset features", move || {
        require_file(&state, &hash)?;
        let input = state
            .blobs
            .open(&hash)
            .map_err(|e| ApiError::internal("opening the dataset", e))?
            .ok_or_else(|| {
                ApiError::internal("opening the dataset", format!("blob {hash} is missing"))
            })?;
        dataset::features(input, &state.config.dataset_limits).map_err(|e| {
            ApiError::bad_request(format!("cannot read the columns of file {hash}: {e}"))
        })
    })
    .await?;
    Ok(ok(
        "Get traffic data features name successfully",
        columns.join(";"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_sanitised() {
        assert_eq!(
            sanitize_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            sanitize_file_name("C:\\x\\data.csv").as_deref(),
            Some("data.csv")
        );
        assert_eq!(
            sanitize_file_name("a\u{0}b\n.csv").as_deref(),
            Some("ab.csv")
        );
        assert_eq!(sanitize_file_name("dir/.."), None);
        assert_eq!(sanitize_file_name(""), None);
    }

    #[test]
    fn task_ids() {
        assert_eq!(parse_task_id(" 1733665039112 ").unwrap(), "1733665039112");
        assert_eq!(parse_task_id("").unwrap().len(), 36);
        assert!(parse_task_id(&"x".repeat(129)).is_err());
        assert!(parse_task_id("a\u{7}").is_err());
    }
}
