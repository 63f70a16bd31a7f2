//! Every failed request answers a JSON body `{"schema_version": 1, "error": "…"}` with a 4xx
//! status for what the client can fix and 5xx for what it cannot.

use axum::extract::{OriginalUri, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

/// The status an engine error answers with.
pub(crate) fn status_of(e: &imgvec::Error) -> StatusCode {
    use imgvec::{Error, StorageError};
    match e {
        Error::Invalid(_) | Error::Image { .. } => StatusCode::BAD_REQUEST,
        Error::NoSuchId(_) => StatusCode::NOT_FOUND,
        Error::Storage(StorageError::ReadOnly { .. }) => StatusCode::FORBIDDEN,
        Error::Storage(StorageError::Locked { .. }) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<imgvec::Error> for ApiError {
    fn from(e: imgvec::Error) -> Self {
        ApiError::new(
            status_of(&e),
            imgvec::printable(&e.to_string()).into_owned(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = imgvec::json::versioned(serde_json::json!({ "error": self.message }));
        (self.status, axum::Json(body)).into_response()
    }
}

/// The middleware around the API: a failure axum answers itself (a method the endpoint does not
/// take, a path parameter that does not parse, a malformed multipart body) in plain text or
/// with no body becomes the JSON error every other failure is, with its status and headers kept
/// (axum adds a 405's `Allow` header outside this layer).
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = match request.extensions().get::<OriginalUri>() {
        Some(original) => original.path().to_string(),
        None => request.uri().path().to_string(),
    };
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        format!("{method} is not allowed on {path} (the `Allow` header lists what is)")
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("failed").to_lowercase()
    } else {
        text
    };
    let mut answer = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
}
