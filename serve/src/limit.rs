//! Request bodies: which are refused how, and every answer comes after the body was read.
//!
//! A server that answers as soon as it has decided, and closes, leaves the client still sending
//! into a closed socket: the kernel then resets the connection, and the client often reads a
//! broken pipe instead of the answer. So:
//! - a declared length over the limit is read and thrown away first (up to [`DRAIN_MAX`] bytes;
//!   loopback and LAN uploads cost little), then answered 413; longer bodies are answered at once
//!   and the connection closed ([`refuse_oversized`], the outermost layer: an oversized upload
//!   without a token is answered 413 the same way);
//! - a request the token check refuses has its body drained (on the same bounds) before its 401
//!   ([`drain`]);
//! - every other request's body is read whole (up to the limit) before its handler runs
//!   ([`read_whole`], inside the token check): a handler that refuses early (an unknown endpoint
//!   or method, a bad option, a read-only server) answers a client that has finished sending,
//!   and a body sent without a length (chunked) that runs past the limit is read to its end
//!   (bounded as above) and answered 413 like a declared one. The handler gets the frames as
//!   they came (no copy): an upload is held once as its body and once as the files parsed from
//!   it, 2 × `--max-upload-mib` per request being answered.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
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

/// The 413 answer: of a `declared` length, or of a body sent without one.
fn too_large(declared: Option<u64>, limit: u64) -> ApiError {
    let (size, sent) = match declared {
        Some(n) => (format!(" {n} bytes,"), ""),
        None => (String::new(), " (sent without a length)"),
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the upload is too large:{size} over the limit of {limit} bytes{sent} \
             (imgvec serve --max-upload-mib)"
        ),
    )
}

/// How long a refused body is read at most: a slow sender does not hold the server longer.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(60);

/// Reads a refused request's body and throws it away, so that the client, still sending, reads
/// the answer that follows (up to [`DRAIN_MAX`] bytes, see [`discard`]). A client that waits for
/// `100 Continue` before it sends has sent nothing: it is answered at once (reading would ask it
/// for the body).
pub(crate) async fn drain(request: Request) {
    let waits_to_send = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits_to_send {
        discard(request.into_body(), DRAIN_MAX).await;
    }
}

/// Reads the rest of `body` and throws it away: until it ends, the client gives up (a failed
/// read), `max` more bytes were read (a body sent without a length can be endless) or
/// [`DRAIN_TIME`] passed.
async fn discard(mut body: Body, max: u64) {
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

/// What reading a body whole found.
enum Whole {
    /// The body's data, in the frames it came in.
    Read(Vec<Bytes>),
    /// More than the limit (then read to its end, see [`discard`]).
    TooLong,
    /// The client stopped sending or sent a malformed body.
    Failed(String),
}

/// Reads `body` whole, up to `limit` bytes.
async fn read_up_to(mut body: Body, limit: u64) -> Whole {
    let (mut frames, mut read) = (Vec::new(), 0u64);
    while let Some(frame) = body.frame().await {
        let data = match frame.map(|f| f.into_data()) {
            Ok(Ok(data)) => data,
            Ok(Err(_trailers)) => continue,
            Err(e) => return Whole::Failed(with_causes(&e)),
        };
        read += data.len() as u64;
        if read > limit {
            discard(body, DRAIN_MAX.saturating_sub(read)).await;
            return Whole::TooLong;
        }
        frames.push(data);
    }
    Whole::Read(frames)
}

/// An error and its causes, as one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

/// The middleware inside the token check: the handler gets the body read whole (see the module
/// docs), or the request is answered 413 (past `limit` bytes) or 400 (a failed read).
pub(crate) async fn read_whole(State(limit): State<u64>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match read_up_to(body, limit).await {
        Whole::Read(frames) => {
            let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, Infallible>));
            let body = Body::from_stream(stream);
            next.run(Request::from_parts(parts, body)).await
        }
        Whole::TooLong => too_large(None, limit).into_response(),
        Whole::Failed(e) => {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
                .into_response()
        }
    }
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
            drain(request).await;
            too_large(Some(n), limit).into_response()
        }
        Verdict::Refuse(n) => {
            let mut response = too_large(Some(n), limit).into_response();
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
