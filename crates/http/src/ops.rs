//! What operators and the front ends' connection check call: `/` (and `HEAD /`), `/healthz`
//! (the process answers) and `/readyz` (the database and the blob store are usable and the
//! disk is not full).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::data::blocking;
use super::envelope::ok;

/// Below this much free space the node is not ready: a conversion could not finish.
pub(crate) const MIN_FREE_DISK_BYTES: u64 = 256 << 20;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The old server answered `GET /` with the envelope; both front ends check the connection
/// with `HEAD /` and want 200 (axum answers `HEAD` with the `GET` route, without the body).
/// A browser (`Accept: text/html`) gets the web console instead.
async fn root(state: State<AppState>, req: axum::extract::Request) -> Response {
    if super::console::wants_html(req.headers()) {
        return super::console::root_page(state, req).await;
    }
    root_json().into_response()
}

fn root_json() -> Json<Value> {
    ok(
        "br-cti data node",
        json!({
            "name": "br-cti",
            "version": env!("CARGO_PKG_VERSION"),
            "apis": {
                "data": "/data/",
                "hidden_danger_reports": "/open/api/v1/retrieval/addHiddenDanger",
                "rest": "/api/v1/",
                "taxii": "/taxii2/",
            },
        }),
    )
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "alive", "version": env!("CARGO_PKG_VERSION")}))
}

/// 200 when every check passes, else 503; each check says what it found.
async fn readyz(State(state): State<AppState>) -> Response {
    let checks = blocking("checking readiness", move || {
        let database = match state.meta.check() {
            Ok(()) => json!({"ok": true}),
            Err(e @ br_cti_store::StoreError::Replaced(_)) => {
                tracing::error!("readiness: database: {e}");
                json!({"ok": false, "error": "the database file was deleted or replaced while the node ran (see the node's log)"})
            }
            Err(e) => {
                tracing::error!("readiness: database: {e}");
                json!({"ok": false, "error": "the database cannot be queried (see the node's log)"})
            }
        };
        let (blob_store, disk) = match state.blobs.check() {
            Ok(free) => {
                let disk = match free {
                    Some(free) if free < MIN_FREE_DISK_BYTES => json!({
                        "ok": false,
                        "free_bytes": free,
                        "error": format!("{free} bytes free; at least {MIN_FREE_DISK_BYTES} are needed"),
                    }),
                    Some(free) => json!({"ok": true, "free_bytes": free}),
                    None => json!({"ok": true, "free_bytes": Value::Null}),
                };
                (json!({"ok": true}), disk)
            }
            Err(e) => {
                tracing::error!("readiness: blob store: {e}");
                (
                    json!({"ok": false, "error": format!("cannot write to the blob store: {}", e.kind())}),
                    json!({"ok": false, "free_bytes": Value::Null}),
                )
            }
        };
        Ok(json!({"database": database, "blob_store": blob_store, "disk": disk}))
    })
    .await;
    let checks = match checks {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let ready = ["database", "blob_store", "disk"]
        .iter()
        .all(|k| checks[k]["ok"] == true);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if ready { "ready" } else { "not ready" }, "checks": checks})),
    )
        .into_response()
}
