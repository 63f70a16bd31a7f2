//! Every failed request answers a JSON body `{"schema_version": 1, "error": "…"}` with a 4xx
//! status for what the client can fix and 5xx for what it cannot.

use axum::http::StatusCode;
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
