//! `POST /open/api/v1/retrieval/addHiddenDanger`: other platforms report hidden dangers here.
//! This adapter reads the body within its limits and the node's body budget and hands it to
//! the use case (`br_cti_app::reports::ingest`); outcomes become statuses: answered 200
//! (`success` says whether all was stored), too large 413, rate limited 429, busy 503, internal
//! faults 500.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::AppState;
use br_cti_app::reports::{Answer, Outcome, ingest};

/// Bytes of a refused body read and dropped so that the refusal reaches the client.
const DISCARD_BYTES: u64 = 64 << 20;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/retrieval/addHiddenDanger", post(add_hidden_danger))
}

/// The HTTP status of each outcome.
fn status(outcome: Outcome) -> StatusCode {
    match outcome {
        Outcome::Answered => StatusCode::OK,
        Outcome::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Outcome::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Outcome::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Outcome::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn respond(answer: Answer) -> Response {
    let mut resp = (status(answer.outcome), axum::Json(answer.body)).into_response();
    if let Some(secs) = answer.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

async fn add_hidden_danger(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let reports = state.reports.clone();
    let limit = reports.limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        Answer::fail(
            Outcome::TooLarge,
            "PAYLOAD_TOO_LARGE",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    // The rest of a refused body is read and dropped (up to DISCARD_BYTES), so that the answer
    // reaches clients that send the whole body before reading (Python `requests`); the
    // connection is not reused after it.
    let refuse = |answer: Answer| {
        let mut resp = respond(answer);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    };
    if declared.is_some_and(|n| n > limit) {
        super::discard_body(body, DISCARD_BYTES).await;
        return refuse(too_large());
    }
    let body = match super::read_body(body, limit as usize, DISCARD_BYTES, &state.body_budget).await
    {
        Ok(body) => body,
        Err(super::BodyError::TooLarge) => return refuse(too_large()),
        Err(super::BodyError::Busy { budget }) => {
            let mut busy = Answer::fail(
                Outcome::Busy,
                "SERVER_BUSY",
                super::BodyError::busy_message(budget),
            );
            busy.retry_after = Some(1);
            return refuse(busy);
        }
        Err(super::BodyError::Read(e)) => {
            return respond(Answer::invalid(
                "INVALID_JSON",
                format!("the body could not be read: {e}"),
            ));
        }
    };
    match tokio::task::spawn_blocking(move || {
        ingest(&reports, &*state.meta, &state.publisher, &body.bytes)
    })
    .await
    {
        Ok(answer) => respond(answer),
        Err(e) => {
            tracing::error!("addHiddenDanger panicked: {e}");
            respond(Answer::fail(
                Outcome::Internal,
                "INTERNAL_ERROR",
                "internal error",
            ))
        }
    }
}
