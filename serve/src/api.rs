//! The handlers: the page, info, search (by upload, id or stored path), records (paged),
//! thumbnails and images, and — with writes allowed — ingest by upload and delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use imgvec::json::{search_answer, versioned, QueryName};
use imgvec::{Filter, Query, SearchMode, SearchOptions, Source};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

type Shared = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

/// The web page (everything inline: no CDN, nothing fetched but the API).
const PAGE: &str = include_str!("page.html");

pub(crate) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such API endpoint (see docs/SERVE.md)")
}

/// With a token set, every API request carries it: `Authorization: Bearer TOKEN` or `?token=`
/// (for `<img src>`).
pub(crate) async fn require_token(State(state): Shared, request: Request, next: Next) -> Response {
    let Some(token) = state.opts.token.as_deref() else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let in_query = request.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "token" && v == token)
    });
    if bearer == Some(token) || in_query {
        next.run(request).await
    } else {
        // An upload is read before it is refused, or the client may see a reset, not the 401.
        crate::limit::drain(request).await;
        ApiError::new(StatusCode::UNAUTHORIZED, "a valid token is required").into_response()
    }
}

/// Runs engine work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, imgvec::Error> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

pub(crate) async fn info(State(state): Shared) -> ApiResult<Json<Value>> {
    let writes = state.opts.allow_writes;
    let info = blocking(move || state.db.info()).await?;
    let mut value = serde_json::to_value(info)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    value["writes_allowed"] = writes.into();
    Ok(Json(versioned(value)))
}

/// Query-string parameters as (name, value) pairs, in order (`attr` may repeat).
fn params(raw: Option<String>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// An `attr=KEY=VALUE` parameter's value split.
fn attr(value: &str) -> ApiResult<(String, String)> {
    value
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| ApiError::bad_request(format!("attr={value}: expected KEY=VALUE")))
}

/// A boolean query parameter: `true`/`1` or `false`/`0`.
fn flag(name: &str, value: &str) -> ApiResult<bool> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{name}={value}: give true or false"
        ))),
    }
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> ApiResult<T> {
    value
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{name}={value}: not a number")))
}

/// The search options a query string asks for: `k`, `mode`, `path_prefix`, `attr=K=V`
/// (repeatable), `threshold`, `matches_only`, `pairs`, `verify`, `qe`, `nprobe`, `rerank`,
/// `rerank_depth`; anything else is refused.
pub(crate) fn search_options(params: &[(String, String)]) -> ApiResult<SearchOptions> {
    let mut opts = SearchOptions::default();
    let mut attributes = BTreeMap::new();
    for (name, value) in params {
        match name.as_str() {
            "k" => opts.k = number(name, value)?,
            "mode" => {
                opts.mode = value
                    .parse::<SearchMode>()
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
            }
            "path_prefix" if !value.is_empty() => opts.filter.path_prefix = Some(value.clone()),
            "attr" => {
                let (k, v) = attr(value)?;
                attributes.insert(k, v);
            }
            "threshold" => opts.threshold = Some(number(name, value)?),
            "matches_only" => opts.matches_only = flag(name, value)?,
            "pairs" => opts.pairs = flag(name, value)?,
            "verify" => opts.verify.shortlist = Some(number(name, value)?),
            "qe" => opts.qe = Some(number(name, value)?),
            "nprobe" => opts.nprobe = Some(number(name, value)?),
            "rerank" => opts.rerank = flag(name, value)?,
            "rerank_depth" => opts.rerank_depth = Some(number(name, value)?),
            "id" | "path" | "token" | "path_prefix" => {}
            other => return Err(ApiError::bad_request(format!("unknown option `{other}`"))),
        }
    }
    opts.filter = Filter {
        attributes,
        ..opts.filter
    };
    opts.check().map_err(ApiError::from)?;
    Ok(opts)
}

/// Searches and answers as `search --json` does (one query).
async fn answer(
    state: Arc<AppState>,
    name: QueryName,
    query: Query,
    opts: SearchOptions,
) -> Response {
    let result = blocking(move || Ok(state.db.search(query, &opts))).await;
    match result {
        Ok(Ok(hits)) => Json(search_answer(&name, Ok(&hits))).into_response(),
        Ok(Err(e)) => {
            let status = crate::error::status_of(&e);
            let body = search_answer(&name, Err(&imgvec::printable(&e.to_string())));
            (status, Json(body)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /api/search?id=N` or `?path=STORED_PATH`: "more like this" for a stored image.
pub(crate) async fn search_stored(State(state): Shared, RawQuery(raw): RawQuery) -> Response {
    let params = params(raw);
    let opts = match search_options(&params) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let db_state = state.clone();
    let record = match (get("id"), get("path")) {
        (Some(id), _) => match number::<u64>("id", &id) {
            Ok(id) => blocking(move || db_state.db.get(id)).await,
            Err(e) => Err(e),
        },
        (None, Some(path)) => blocking(move || db_state.db.get_by_path(&path)).await,
        (None, None) => Err(ApiError::bad_request(
            "give id=N or path=STORED_PATH (or POST an image)",
        )),
    };
    let record = match record {
        Ok(Some(r)) => r,
        Ok(None) => return ApiError::not_found("no such stored image").into_response(),
        Err(e) => return e.into_response(),
    };
    let name = QueryName::Stored {
        id: record.id,
        path: Some(record.path.clone()),
    };
    answer(state, name, Query::Id(record.id), opts).await
}

/// The files of a multipart body: (file name, bytes) of every part that carries a file.
async fn uploaded_files(
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Vec<(String, Bytes)>> {
    let mut multipart = multipart.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let mut files = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::new(e.status(), e.body_text()))?
    {
        let name = field
            .file_name()
            .or(field.name())
            .unwrap_or("upload")
            .to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        files.push((name, bytes));
    }
    if files.is_empty() {
        return Err(ApiError::bad_request("no file in the upload"));
    }
    Ok(files)
}

/// `POST /api/search` (multipart, one image): search with an uploaded photo.
pub(crate) async fn search_upload(
    State(state): Shared,
    RawQuery(raw): RawQuery,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let opts = match search_options(&params(raw)) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let mut files = match uploaded_files(multipart).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let (name, bytes) = files.swap_remove(0);
    answer(
        state,
        QueryName::Given(name),
        Query::Bytes(bytes.to_vec()),
        opts,
    )
    .await
}

/// `GET /api/records?offset=0&limit=50&path_prefix=P&attr=K=V`: stored rows by id, a page at a
/// time, with the number that pass the filter (one pass, holding one page). With `after=ID`
/// instead of `offset`, the page starts after that id and costs only its own rows (`total` is
/// then null); `next_after` continues either way.
pub(crate) async fn records(
    State(state): Shared,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let (mut offset, mut limit, mut after) = (0usize, 50usize, None::<u64>);
    let mut filter = imgvec::Filter::default();
    for (name, value) in params(raw) {
        match name.as_str() {
            "offset" => offset = number(&name, &value)?,
            "limit" => limit = number(&name, &value)?,
            "after" => after = Some(number(&name, &value)?),
            "path_prefix" if !value.is_empty() => filter.path_prefix = Some(value),
            "attr" => {
                let (k, v) = attr(&value)?;
                filter.attributes.insert(k, v);
            }
            "token" | "path_prefix" => {}
            other => return Err(ApiError::bad_request(format!("unknown option `{other}`"))),
        }
    }
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: give 1 to 1000"));
    }
    if after.is_some() && offset > 0 {
        return Err(ApiError::bad_request("give offset or after, not both"));
    }
    let (total, page) = blocking(move || {
        if after.is_some() {
            return Ok((None, state.db.records_page(&filter, after, limit)?));
        }
        let (mut total, mut page) = (0usize, Vec::new());
        state.db.scan_records(None, &mut |r| {
            if filter.matches(&r) {
                if total >= offset && page.len() < limit {
                    page.push(r);
                }
                total += 1;
            }
            true
        })?;
        Ok((Some(total), page))
    })
    .await?;
    let next_after = page.last().map(|r| r.id).filter(|_| page.len() == limit);
    let page: Vec<Value> = page.iter().map(imgvec::json::record).collect();
    Ok(Json(versioned(json!({
        "total": total, "offset": offset, "limit": limit, "next_after": next_after,
        "records": page
    }))))
}

async fn stored(state: &Arc<AppState>, id: u64) -> ApiResult<imgvec::ImageRecord> {
    let s = state.clone();
    blocking(move || s.db.get(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no stored image with id {id}")))
}

pub(crate) async fn record(State(state): Shared, Path(id): Path<u64>) -> ApiResult<Json<Value>> {
    Ok(Json(versioned(imgvec::json::record(
        &stored(&state, id).await?,
    ))))
}

pub(crate) async fn thumbnail(State(state): Shared, Path(id): Path<u64>) -> ApiResult<Response> {
    let s = state.clone();
    let jpeg = blocking(move || s.db.thumbnail(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no stored image with id {id}")))?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response())
}

/// The stored file of a row, as it is now on disk.
pub(crate) async fn image(State(state): Shared, Path(id): Path<u64>) -> ApiResult<Response> {
    let rec = stored(&state, id).await?;
    let path = rec.os_path();
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        ApiError::not_found(format!(
            "{}: {e} (the row's thumbnail is at /api/thumbnails/{id})",
            rec.path
        ))
    })?;
    let kind = match rec.format.as_str() {
        "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tiff" => "image/tiff",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, kind)], bytes).into_response())
}

fn require_writes(state: &AppState) -> ApiResult<()> {
    if state.opts.allow_writes {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the server is read-only (start it with `imgvec serve DB --allow-writes`)",
        ))
    }
}

/// `POST /api/ingest` (multipart, any number of images; `?attr=K=V` repeatable): stores each
/// upload under `upload/FILE NAME`; answers one line per image, as `ingest --json` does.
pub(crate) async fn ingest(
    State(state): Shared,
    RawQuery(raw): RawQuery,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<Value>> {
    require_writes(&state)?;
    let mut attrs = BTreeMap::new();
    for (name, value) in params(raw) {
        match (name.as_str(), value.split_once('=')) {
            ("attr", Some((k, v))) if !k.is_empty() => {
                attrs.insert(k.to_string(), v.to_string());
            }
            ("token", _) => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "bad option `{name}={value}`"
                )))
            }
        }
    }
    let files = uploaded_files(multipart).await?;
    let events = blocking(move || {
        let mut events = Vec::new();
        for (name, bytes) in files {
            let source = Source::Bytes {
                key: format!("upload/{name}"),
                bytes: bytes.to_vec().into(),
            };
            events.push(match state.db.insert(source, attrs.clone()) {
                Ok(ev) => serde_json::to_value(ev).unwrap_or_default(),
                Err(e) => json!({ "path": name, "status": "error", "error": e.to_string() }),
            });
        }
        Ok(events)
    })
    .await?;
    let failed = events.iter().any(|e| e["status"] == "error");
    let body = versioned(json!({ "results": events, "errors": failed }));
    Ok(Json(body))
}

/// `GET /api/dedupe?min_score=S&min_confidence=C&k=K&keep=largest|earliest`: near-duplicate
/// groups (as `imgvec dedupe --json`).
pub(crate) async fn dedupe(
    State(state): Shared,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let mut opts = imgvec::DedupeOptions::default();
    for (name, value) in params(raw) {
        match name.as_str() {
            "min_score" => {
                let s: f32 = number(&name, &value)?;
                if !(-1.0..=1.0).contains(&s) {
                    return Err(ApiError::bad_request(
                        "min_score: give a cosine from -1 to 1",
                    ));
                }
                opts.min_score = Some(s);
            }
            "min_confidence" => {
                let c: f32 = number(&name, &value)?;
                if !(0.0..=1.0).contains(&c) {
                    return Err(ApiError::bad_request("min_confidence: give 0 to 1"));
                }
                opts.min_confidence = Some(c);
            }
            "k" => opts.k = number(&name, &value)?,
            "keep" if value == "largest" => opts.keep = imgvec::Keep::Largest,
            "keep" if value == "earliest" => opts.keep = imgvec::Keep::Earliest,
            "token" => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "bad option `{name}={value}`"
                )))
            }
        }
    }
    if !(1..=100).contains(&opts.k) {
        return Err(ApiError::bad_request("k: give 1 to 100"));
    }
    let report = blocking(move || state.db.dedupe(&opts)).await?;
    let value = serde_json::to_value(report)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(versioned(value)))
}

/// `DELETE /api/records/{id}`.
pub(crate) async fn delete_record(
    State(state): Shared,
    Path(id): Path<u64>,
) -> ApiResult<Json<Value>> {
    require_writes(&state)?;
    let deleted = blocking(move || state.db.delete(&[id])).await?;
    if deleted.is_empty() {
        return Err(ApiError::not_found(format!("no stored image with id {id}")));
    }
    Ok(Json(versioned(json!({ "deleted": deleted }))))
}
