//! Uploads over the size limit: which are refused how.
//!
//! A server that answers 413 as soon as it sees the length, and closes, leaves the client still
//! sending into a closed socket: the kernel then resets the connection, and the client often
//! reads a broken pipe instead of the answer. So a declared length over the limit is read and
//! thrown away first (up to [`DRAIN_MAX`] bytes; loopback and LAN uploads cost little), then
//! answered. Longer bodies are answered at once and the connection closed; bodies sent without a
//! length are cut at the limit by the extractors (`DefaultBodyLimit`). This layer sits outside
//! the token check, so an oversized upload without a token is answered 413 the same way, and a
//! request the token check refuses has its body drained (up to the limit) before its 401.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::error::ApiError;

/// The longest refused body that is read to its end before it is answered.
pub(crate) const DRAIN_MAX: u64 = 256 << 20;

/// What is done with a request body of the `declared` length (`Content-Length`); the refusals
/// carry that length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit, or of no declared length: the handler reads it.
    Accept,
    /// Over the limit: read to its end and thrown away, then answered 413.
    DrainThenRefuse(u64),
    /// Too long to be worth reading: answered 413 at once, and the connection closed.
    Refuse(u64),
}

/// The policy: a pure function of the declared length and the limit.
pub(crate) fn verdict(declared: Option<u64>, limit: u64) -> Verdict {
    match declared {
        Some(n) if n > limit && n <= DRAIN_MAX => Verdict::DrainThenRefuse(n),
        Some(n) if n > limit => Verdict::Refuse(n),
        _ => Verdict::Accept,
    }
}

fn too_large(declared: u64, limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the upload is too large: {declared} bytes, over the limit of {limit} bytes \
             (imgvec serve --max-upload-mib)"
        ),
    )
}

/// How long a refused body is read at most: a slow sender does not hold the server longer.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(60);

/// Reads a refused request's body and throws it away, so that the client, still sending, reads
/// the answer that follows: until the body ends, the client gives up (a failed read), `max`
/// bytes were read (a body sent without a length can be endless) or [`DRAIN_TIME`] passed. A
/// client that waits for `100 Continue` before it sends has sent nothing: it is answered at once
/// (reading would ask it for the body).
pub(crate) async fn drain(request: Request, max: u64) {
    let waits_to_send = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits_to_send {
        return;
    }
    let mut body = request.into_body();
    let read_to_end = async {
        let mut read = 0u64;
        while read <= max {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
    };
    // Past the time, the answer is sent anyway.
    let _ = tokio::time::timeout(DRAIN_TIME, read_to_end).await;
}

/// The middleware: refuses bodies over `limit` bytes as [`verdict`] says.
pub(crate) async fn refuse_oversized(
    State(limit): State<u64>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match verdict(declared, limit) {
        Verdict::DrainThenRefuse(n) => {
            drain(request, DRAIN_MAX).await;
            too_large(n, limit).into_response()
        }
        Verdict::Refuse(n) => {
            let mut response = too_large(n, limit).into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        Verdict::Accept => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_over_the_limit_are_read_then_refused_unless_far_too_long() {
        let mib = 1u64 << 20;
        let cases = [
            (None, mib, Verdict::Accept),
            (Some(0), mib, Verdict::Accept),
            (Some(mib), mib, Verdict::Accept),
            (Some(mib + 1), mib, Verdict::DrainThenRefuse(mib + 1)),
            (Some(4 * mib), mib, Verdict::DrainThenRefuse(4 * mib)),
            (Some(DRAIN_MAX), mib, Verdict::DrainThenRefuse(DRAIN_MAX)),
            (Some(DRAIN_MAX + 1), mib, Verdict::Refuse(DRAIN_MAX + 1)),
            (Some(u64::MAX), mib, Verdict::Refuse(u64::MAX)),
            // A limit past the bound: everything over it is refused at once.
            (
                Some(2 * DRAIN_MAX),
                DRAIN_MAX + 1,
                Verdict::Refuse(2 * DRAIN_MAX),
            ),
            (Some(DRAIN_MAX + 1), DRAIN_MAX + 1, Verdict::Accept),
        ];
        for (declared, limit, want) in cases {
            assert_eq!(verdict(declared, limit), want, "{declared:?} over {limit}");
        }
    }
}
