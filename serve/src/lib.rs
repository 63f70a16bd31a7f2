//! `imgvec serve`: a local web page and a JSON HTTP API over one open `Database` (axum on tokio).
//! Read-only unless started with writes allowed; bound to loopback unless told otherwise, and
//! then only with a token. Engine calls run on tokio's blocking pool, so requests are answered in
//! parallel on the shared handle. docs/SERVE.md documents the API.

mod api;
mod error;
mod limit;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use imgvec::Database;

pub use error::ApiError;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (port 0: any free port; `ready` is told which).
    pub bind: SocketAddr,
    /// Accept ingest and delete requests (the database must then be open for writing).
    pub allow_writes: bool,
    /// A secret every API request must carry (`Authorization: Bearer TOKEN`, or `?token=`).
    pub token: Option<String>,
    /// Largest request body (uploads) in bytes.
    pub max_upload_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 7878)),
            allow_writes: false,
            token: None,
            max_upload_bytes: 32 << 20,
        }
    }
}

/// Refuses to serve beyond this machine without a token: anyone who can reach the port could
/// otherwise see every stored photo.
pub fn check_bind(bind: &SocketAddr, token: Option<&str>) -> Result<(), String> {
    match token {
        Some("") => Err("the token is empty".into()),
        Some(_) => Ok(()),
        None if bind.ip().is_loopback() => Ok(()),
        None => Err(format!(
            "{bind} is reachable from other machines: give a token (--token or IMGVEC_TOKEN), or \
             bind to 127.0.0.1"
        )),
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) db: Database,
    pub(crate) opts: ServeOptions,
}

/// The routes: the page, and the API under `/api`.
pub fn router(db: Database, opts: ServeOptions) -> Router {
    let limit = opts.max_upload_bytes;
    let state = Arc::new(AppState { db, opts });
    let api = Router::new()
        .route("/info", get(api::info))
        .route("/search", get(api::search_stored).post(api::search_upload))
        .route("/records", get(api::records))
        .route("/records/{id}", get(api::record).delete(api::delete_record))
        .route("/thumbnails/{id}", get(api::thumbnail))
        .route("/images/{id}", get(api::image))
        .route("/ingest", post(api::ingest))
        .route("/dedupe", get(api::dedupe))
        .fallback(api::not_found)
        // The last layer is the outermost: every failure answers JSON (src/error.rs), sizes are
        // judged before tokens, and bodies are read whole before handlers (src/limit.rs).
        .layer(axum::middleware::from_fn_with_state(
            limit as u64,
            limit::read_whole,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limit as u64,
            limit::refuse_oversized,
        ))
        .layer(axum::middleware::from_fn(error::json_errors));
    Router::new()
        .route("/", get(api::page))
        // The page and unknown paths outside /api also answer only once the body is in
        // (src/limit.rs); /api has these layers of its own, inside its token check.
        .layer(axum::middleware::from_fn_with_state(
            limit as u64,
            limit::read_whole,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limit as u64,
            limit::refuse_oversized,
        ))
        .nest("/api", api)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `db` until Ctrl-C (or SIGTERM), on a runtime of its own; `ready` is told the address
/// once the port is bound.
pub fn run(
    db: Database,
    opts: ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    check_bind(&opts.bind, opts.token.as_deref())
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::PermissionDenied, m))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        ready(listener.local_addr()?);
        axum::serve(listener, router(db, opts))
            .with_graceful_shutdown(shutdown_signal())
            .await
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_only_with_a_token() {
        let cases = [
            ("127.0.0.1:7878", None, true),
            ("[::1]:7878", None, true),
            ("0.0.0.0:7878", None, false),
            ("192.168.1.5:80", None, false),
            ("0.0.0.0:7878", Some("s3cret"), true),
            ("127.0.0.1:7878", Some(""), false),
        ];
        for (addr, token, ok) in cases {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(check_bind(&addr, token).is_ok(), ok, "{addr} {token:?}");
        }
    }
}
