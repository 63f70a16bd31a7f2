//! Every endpoint, and every kind of bad request, over plain HTTP.

use std::io::Read;

use imgvec::Preset;
use imgvec_serve::ServeOptions;
use serde_json::Value;

use super::*;

/// (status, JSON body) of a request; 4xx/5xx answers are returned, not failed.
fn call(request: ureq::Request, body: Option<(&str, Vec<u8>)>) -> (u16, Value) {
    answered(match body {
        Some((content_type, bytes)) => request.set("Content-Type", content_type).send_bytes(&bytes),
        None => request.call(),
    })
}

/// (status, JSON body) of a request whose body is sent without a length (chunked).
fn call_chunked(request: ureq::Request, body: &[u8]) -> (u16, Value) {
    answered(request.send(body))
}

/// (status, JSON body) of an answer; a request that got none fails the test.
fn answered(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = response.status();
    (status, response.into_json().unwrap_or(Value::Null))
}

/// The status line ("HTTP/1.1 404") the server answers on `stream`.
fn status_line(stream: std::net::TcpStream) -> String {
    use std::io::BufRead;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .unwrap();
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A multipart body with one file part per (file name, bytes).
fn multipart(files: &[(&str, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "imgvec-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; \
                 filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(url: &str, files: &[(&str, Vec<u8>)]) -> (u16, Value) {
    let (content_type, body) = multipart(files);
    call(ureq::post(url), Some((&content_type, body)))
}

/// The status line the server answers an ingest upload of `length` bytes, without a token, that
/// waits for `100 Continue` before sending (and sends nothing).
fn first_line_before_body(base: &str, length: usize) -> String {
    use std::io::Write;
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST /api/ingest HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    status_line(stream)
}

/// The status line the server answers a `POST path` of `length` bytes with, checking that no
/// answer comes while only half of the body has been sent: every request's body is read before
/// it is answered, or a client still sending may read a reset instead (src/limit.rs).
fn answered_after_the_body(base: &str, path: &str, length: usize) -> String {
    use std::io::{ErrorKind, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let half = vec![0u8; length / 2];
    stream.write_all(&half).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    let mut early = [0u8; 1];
    match std::io::Read::read(&mut stream, &mut early) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{path} was answered before its body was sent: {other:?}"),
    }
    stream.write_all(&vec![0u8; length - half.len()]).unwrap();
    status_line(stream)
}

#[test]
fn every_read_endpoint_answers_and_every_bad_request_is_a_clear_4xx() {
    let tmp = tempfile::tempdir().unwrap();
    let db = make_db(tmp.path(), Preset::Fast, 5);
    let opts = ServeOptions {
        max_upload_bytes: 1 << 20,
        ..ServeOptions::default()
    };
    let base = serve(&db, opts);
    let (query, source) = query_and_source();
    let source_path = std::fs::canonicalize(&source).unwrap();

    let (status, info) = call(ureq::get(&format!("{base}/api/info")), None);
    assert_eq!((status, info["live_rows"].as_u64()), (200, Some(6)));
    assert_eq!(
        (
            info["schema_version"].as_u64(),
            info["writes_allowed"].as_bool()
        ),
        (Some(1), Some(false))
    );

    // Search by upload: the source of the re-encoded query comes first, as `search --json` says.
    let (status, answer) = upload(
        &format!("{base}/api/search?k=3"),
        &[("g0017_jpeg.jpg", std::fs::read(&query).unwrap())],
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["query"], "g0017_jpeg.jpg");
    let top = &answer["results"][0];
    assert_eq!(
        (top["rank"].as_u64(), top["path"].as_str()),
        (Some(1), source_path.to_str())
    );
    assert_eq!(answer["results"].as_array().unwrap().len(), 3);
    let id = top["id"].as_u64().unwrap();

    // By id and by stored path ("more like this"): the image itself is left out.
    for q in [
        format!("id={id}"),
        format!("path={}", source_path.display()),
        format!("id={id}&mode=ivfpq&nprobe=4&rerank=false&rerank_depth=50"),
    ] {
        let (status, answer) = call(ureq::get(&format!("{base}/api/search?{q}&k=2")), None);
        assert_eq!(status, 200, "{q}: {answer}");
        assert_eq!(
            (answer["query_id"].as_u64(), answer["query_path"].as_str()),
            (Some(id), source_path.to_str())
        );
        assert!(answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["id"] != id));
    }
    // Filters apply: a prefix nothing has.
    let (_, answer) = call(
        ureq::get(&format!("{base}/api/search?id={id}&path_prefix=/nowhere/")),
        None,
    );
    assert_eq!(answer["results"].as_array().unwrap().len(), 0);

    // Records, a page at a time.
    let (status, page) = call(
        ureq::get(&format!("{base}/api/records?offset=2&limit=3")),
        None,
    );
    assert_eq!((status, page["total"].as_u64()), (200, Some(6)));
    assert_eq!(page["records"].as_array().unwrap().len(), 3);
    // The same rows by cursor: after the page before them, in id order, with no total.
    let ids = |p: &serde_json::Value| -> Vec<u64> {
        let records = p["records"].as_array().unwrap();
        records.iter().map(|r| r["id"].as_u64().unwrap()).collect()
    };
    let (_, first) = call(ureq::get(&format!("{base}/api/records?limit=2")), None);
    let after = first["next_after"].as_u64().unwrap();
    let (status, by_cursor) = call(
        ureq::get(&format!("{base}/api/records?after={after}&limit=3")),
        None,
    );
    assert_eq!(status, 200, "{by_cursor}");
    assert_eq!(ids(&by_cursor), ids(&page));
    assert!(by_cursor["total"].is_null());
    let (_, last) = call(
        ureq::get(&format!("{base}/api/records?offset=4&limit=3")),
        None,
    );
    assert_eq!((ids(&last).len(), last["next_after"].as_u64()), (2, None));
    let (_, record) = call(ureq::get(&format!("{base}/api/records/{id}")), None);
    assert_eq!(record["path"].as_str(), source_path.to_str());

    // Thumbnails and the full image.
    let thumb = ureq::get(&format!("{base}/api/thumbnails/{id}"))
        .call()
        .unwrap();
    assert_eq!(thumb.content_type(), "image/jpeg");
    let full = ureq::get(&format!("{base}/api/images/{id}"))
        .call()
        .unwrap();
    let mut bytes = Vec::new();
    full.into_reader().read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, std::fs::read(&source).unwrap());

    // Dedupe groups (none among these distinct photos at a strict threshold; the answer's shape).
    let (status, groups) = call(
        ureq::get(&format!("{base}/api/dedupe?min_score=0.99")),
        None,
    );
    assert_eq!(
        (status, groups["rows"].as_u64()),
        (200, Some(6)),
        "{groups}"
    );
    assert!(groups["groups"].as_array().is_some());

    // Bad requests: each a 4xx with a JSON error that says what is wrong.
    // Well over the 1 MiB limit: the server reads the rest of the body before it answers 413,
    // so the client, still sending, reads the answer (a server that answered and closed at once
    // left it a broken pipe or a reset, often with 2 MiB: src/limit.rs). Three times over.
    let big = vec![0u8; 4 << 20];
    for _ in 0..3 {
        let (status, body) = upload(&format!("{base}/api/search"), &[("big.jpg", big.clone())]);
        let error = body["error"].as_str().unwrap_or_default();
        assert_eq!(status, 413, "{body}");
        assert!(
            error.contains("too large") && error.contains("1048576"),
            "{error}"
        );
    }
    // The same sent without a length (chunked): read to its end, then the same 413.
    let (content_type, body) = multipart(&[("big.jpg", big.clone())]);
    let (status, answer) = call_chunked(
        ureq::post(&format!("{base}/api/search")).set("Content-Type", &content_type),
        &body,
    );
    let error = answer["error"].as_str().unwrap_or_default();
    assert_eq!(status, 413, "{answer}");
    assert!(
        error.contains("sent without a length") && error.contains("1048576"),
        "{error}"
    );
    // Requests refused before a handler looks at the body (an unknown endpoint or method, a bad
    // option, a read-only server) are answered only once the body is in.
    for (path, status) in [
        ("/api/nothing", 404),
        ("/api/info", 405),
        ("/api/search?colour=red", 400),
        ("/api/ingest", 403),
        ("/", 405),
        ("/nothing", 404),
    ] {
        assert_eq!(
            answered_after_the_body(&base, path, 900 << 10),
            format!("HTTP/1.1 {status}"),
            "{path}"
        );
    }
    let cases: Vec<(u16, (u16, Value), &str)> = vec![
        (
            400,
            upload(
                &format!("{base}/api/search"),
                &[("notes.txt", b"plain text".to_vec())],
            ),
            "not a supported image",
        ),
        (
            404,
            call(ureq::get(&format!("{base}/api/search?id=999999")), None),
            "no such stored image",
        ),
        (
            404,
            call(ureq::get(&format!("{base}/api/thumbnails/999999")), None),
            "no stored image with id 999999",
        ),
        (
            400,
            call(ureq::get(&format!("{base}/api/search?id={id}&k=0")), None),
            "k 0 is out of range",
        ),
        (
            400,
            call(
                ureq::get(&format!("{base}/api/search?id={id}&mode=bogus")),
                None,
            ),
            "unknown search mode",
        ),
        (
            400,
            call(
                ureq::get(&format!("{base}/api/search?id={id}&rerank_depth=0")),
                None,
            ),
            "rerank depth 0 is out of range",
        ),
        (
            400,
            call(
                ureq::get(&format!("{base}/api/search?id={id}&colour=red")),
                None,
            ),
            "unknown option `colour`",
        ),
        (
            400,
            call(ureq::get(&format!("{base}/api/search")), None),
            "give id=N",
        ),
        (
            400,
            call(ureq::get(&format!("{base}/api/records?limit=0")), None),
            "limit",
        ),
        (
            400,
            call(
                ureq::get(&format!("{base}/api/records?offset=1&after=3")),
                None,
            ),
            "not both",
        ),
        (
            400,
            call(
                ureq::get(&format!("{base}/api/search?id=1&matches_only=maybe")),
                None,
            ),
            "true or false",
        ),
        (
            403,
            upload(
                &format!("{base}/api/ingest"),
                &[("a.jpg", std::fs::read(&query).unwrap())],
            ),
            "read-only",
        ),
        (
            403,
            call(ureq::delete(&format!("{base}/api/records/{id}")), None),
            "read-only",
        ),
        (
            404,
            call(ureq::get(&format!("{base}/api/nothing")), None),
            "no such API endpoint",
        ),
        // Failures axum answers itself are JSON errors too.
        (
            405,
            call(ureq::post(&format!("{base}/api/info")), None),
            "POST is not allowed on /api/info",
        ),
        (
            400,
            call(ureq::get(&format!("{base}/api/records/abc")), None),
            "`abc`",
        ),
    ];
    for (expected, (status, body), message) in cases {
        assert_eq!(status, expected, "{message}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{expected}: {error}");
    }
}

#[test]
fn writes_only_when_allowed_and_tokens_guard_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let db = make_db(tmp.path(), Preset::Fast, 2);
    let opts = ServeOptions {
        allow_writes: true,
        token: Some("s3cret".into()),
        max_upload_bytes: 1 << 20,
        ..ServeOptions::default()
    };
    let base = serve(&db, opts);
    let auth = |r: ureq::Request| r.set("Authorization", "Bearer s3cret");
    // Uploads without the token: read before they are refused, so the client reads the answer
    // (401 within the limit, 413 over it — sizes are judged first), three times over.
    for (size, status) in [(900 << 10, 401), (4 << 20, 413)] {
        for _ in 0..3 {
            let answer = upload(&format!("{base}/api/ingest"), &[("big.jpg", vec![0; size])]);
            assert_eq!(answer.0, status, "{}", answer.1);
        }
        // A client that waits for `100 Continue` is refused before it sends its body (reading
        // the body would ask for it, and this client never sends it).
        assert_eq!(
            first_line_before_body(&base, size),
            format!("HTTP/1.1 {status}")
        );
    }
    // No token, a wrong one: 401. The page itself needs none.
    assert_eq!(call(ureq::get(&format!("{base}/api/info")), None).0, 401);
    assert_eq!(
        call(
            ureq::get(&format!("{base}/api/info")).set("Authorization", "Bearer x"),
            None
        )
        .0,
        401
    );
    assert_eq!(ureq::get(&format!("{base}/")).call().unwrap().status(), 200);
    assert_eq!(
        call(ureq::get(&format!("{base}/api/info?token=s3cret")), None).0,
        200
    );

    // Ingest two uploads (one not an image: reported, the other stored), search, delete.
    let photo = std::fs::read(imgvec_testkit::db_images(4).pop().unwrap()).unwrap();
    let (content_type, body) =
        multipart(&[("new.jpg", photo.clone()), ("bad.jpg", b"nope".to_vec())]);
    let (status, answer) = call(
        auth(ureq::post(&format!("{base}/api/ingest?attr=from=web"))),
        Some((&content_type, body)),
    );
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(
        (results[0]["status"].as_str(), results[1]["status"].as_str()),
        (Some("stored"), Some("error"))
    );
    let new_id = results[0]["id"].as_u64().unwrap();
    let (content_type, body) = multipart(&[("q.jpg", photo)]);
    let (_, found) = call(
        auth(ureq::post(&format!("{base}/api/search?k=1"))),
        Some((&content_type, body)),
    );
    assert_eq!(found["results"][0]["id"].as_u64(), Some(new_id));
    assert_eq!(found["results"][0]["path"], "upload/new.jpg");
    assert_eq!(found["results"][0]["attrs"]["from"], "web");
    let (status, _) = call(
        auth(ureq::delete(&format!("{base}/api/records/{new_id}"))),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        call(
            auth(ureq::get(&format!("{base}/api/records/{new_id}"))),
            None
        )
        .0,
        404
    );
}

#[test]
fn concurrent_clients_are_answered_in_parallel_on_one_handle() {
    let tmp = tempfile::tempdir().unwrap();
    let db = make_db(tmp.path(), Preset::Fast, 5);
    let base = serve(&db, ServeOptions::default());
    let (query, _) = query_and_source();
    let bytes = std::fs::read(query).unwrap();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (base, bytes) = (base.clone(), bytes.clone());
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| {
                        upload(
                            &format!("{base}/api/search?k=1"),
                            &[("q.jpg", bytes.clone())],
                        )
                    })
                    .map(|(status, answer)| (status, answer["results"][0]["id"].clone()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(answers.len(), 20);
    assert!(
        answers.iter().all(|a| a.0 == 200 && a.1 == answers[0].1),
        "{answers:?}"
    );
}

/// docs/openapi.yaml describes every endpoint the router serves.
#[test]
fn the_openapi_description_covers_every_endpoint() {
    let spec =
        std::fs::read_to_string(imgvec_testkit::repo_root().join("docs/openapi.yaml")).unwrap();
    for path in [
        "/",
        "/api/info",
        "/api/search",
        "/api/records",
        "/api/records/{id}",
        "/api/thumbnails/{id}",
        "/api/images/{id}",
        "/api/ingest",
        "/api/dedupe",
    ] {
        assert!(
            spec.contains(&format!("\n  {path}:\n")),
            "{path} is not in docs/openapi.yaml"
        );
    }
    for method in ["get:", "post:", "delete:"] {
        assert!(spec.contains(method));
    }
}
