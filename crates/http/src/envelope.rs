//! The wire envelope of the br-cti data API and the one place errors become responses.
//!
//! Success: HTTP 200 `{"code":200,"msg":..,"data":..}`. Handled failure: HTTP 200
//! `{"code":400,"error":..,"data":null}` (the front ends read `code`, not the HTTP status).
//! Transport failures (401, 404, 405, 413) and internal faults (500) use their HTTP status and
//! carry the same envelope with `code` equal to it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: u16,
    message: String,
}

impl ApiError {
    /// A handled failure: HTTP 200 with `code: 400`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::OK,
            code: 400,
            message: message.into(),
        }
    }

    /// A transport-level failure with its real HTTP status.
    pub(crate) fn status(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: status.as_u16(),
            message: message.into(),
        }
    }

    /// What the client is told.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status of the answer (a handled failure of the data API is 200 with code 400).
    pub(crate) fn code(&self) -> u16 {
        self.code
    }

    /// An internal fault: the cause is logged (with an incident id), the client gets the
    /// context and the id only.
    pub(crate) fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        Self::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            super::incident(context, err),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({"code": self.code, "error": self.message, "data": Value::Null})),
        )
            .into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // A refused body is not read to its end: the connection cannot be reused.
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

/// A success envelope.
pub(crate) fn ok(msg: &str, data: impl serde::Serialize) -> Json<Value> {
    Json(json!({"code": 200, "msg": msg, "data": data}))
}

/// A JSON request body parsed into `T`. Unlike axum's `Json`, any failure (empty body,
/// malformed JSON, a missing or wrongly typed field) is answered with the envelope, naming the
/// field; the `Content-Type` is not required to be `application/json` (the old front ends do
/// not always send it).
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is too large",
                )
            } else {
                ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON document into `T`, naming the offending field on error.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.trim_ascii().is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; expected a JSON object",
        ));
    }
    // serde would read a JSON array positionally into a struct: only objects are requests.
    if let Some(&first) = bytes.trim_ascii_start().first()
        && first != b'{'
        && matches!(first, b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
    {
        let kind = match first {
            b'[' => "an array",
            b'"' => "a string",
            b't' | b'f' => "a boolean",
            b'n' => "null",
            _ => "a number",
        };
        return Err(ApiError::bad_request(format!(
            "invalid request: expected a JSON object, got {kind}"
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!("malformed JSON body: {inner}"));
        }
        let full = inner.to_string();
        let msg = strip_position(&full);
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("invalid request: {msg}"))
        } else {
            ApiError::bad_request(format!("field `{path}`: {msg}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    Ok(value)
}

fn strip_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Req {
        file_hash: String,
        page: Option<u32>,
    }

    fn err(body: &str) -> String {
        parse_json::<Req>(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn names_the_field() {
        assert_eq!(err("{}"), "invalid request: missing field `file_hash`");
        assert_eq!(
            err(r#"{"file_hash": 5}"#),
            "field `file_hash`: invalid type: integer `5`, expected a string"
        );
        assert!(err(r#"{"file_hash": "x", "page": "a"}"#).starts_with("field `page`"));
        assert!(err("{\"file_hash\":").starts_with("malformed JSON body"));
        assert!(err("  ").contains("empty"));
        assert_eq!(
            err(r#"["x"]"#),
            "invalid request: expected a JSON object, got an array"
        );
        assert_eq!(
            err("null"),
            "invalid request: expected a JSON object, got null"
        );
        assert!(err("{\"file_hash\":\"x\"} trailing").starts_with("malformed JSON body"));
    }
}
