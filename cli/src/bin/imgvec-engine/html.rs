//! `search --html`: a self-contained contact sheet (thumbnails embedded as data URIs).

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use imgvec::{Database, Hit, Query};

use crate::commands::search::QueryItem;

pub(crate) struct QueryRow {
    pub(crate) item: QueryItem,
    pub(crate) hits: Result<Vec<Hit>, String>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn data_uri(jpeg: &[u8]) -> String {
    format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(jpeg)
    )
}

fn figure(out: &mut String, thumb: Option<Vec<u8>>, caption: &str, class: &str) {
    let img = match thumb {
        Some(t) if !t.is_empty() => format!("<img src=\"{}\">", data_uri(&t)),
        _ => "<div class=\"missing\">no preview</div>".into(),
    };
    let _ = write!(
        out,
        "<figure class=\"{class}\">{img}<figcaption>{caption}</figcaption></figure>"
    );
}

pub(crate) fn write(db: &Database, path: &Path, rows: &[QueryRow]) -> Result<(), imgvec::Error> {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>imgvec results</title><style>\
         body{font-family:sans-serif;background:#fafafa;margin:1em}\
         section{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start;border-bottom:1px solid #ccc;padding:8px 0}\
         figure{margin:0;width:180px;font-size:11px;word-break:break-all}\
         figure img{max-width:180px;max-height:180px;display:block}\
         figure.query{border-right:3px solid #36c;padding-right:8px}\
         .missing{width:180px;height:120px;background:#ddd}.error{color:#b00}\
         </style></head><body><h1>imgvec search results</h1>",
    );
    for row in rows {
        out.push_str("<section>");
        let query_thumb = match &row.item.query {
            Query::Path(p) => imgvec::read_image_file(p)
                .ok()
                .and_then(|b| imgvec::make_thumbnail(&b).ok()),
            Query::Bytes(b) => imgvec::make_thumbnail(b).ok(),
            Query::Id(id) => db.thumbnail(*id).ok().flatten(),
        };
        figure(
            &mut out,
            query_thumb,
            &format!(
                "<b>query</b><br>{}{}",
                escape(&row.item.label),
                row.item
                    .stored_path
                    .as_deref()
                    .map(|p| format!("<br>{}", escape(p)))
                    .unwrap_or_default()
            ),
            "query",
        );
        match &row.hits {
            Ok(hits) => {
                for (rank, hit) in hits.iter().enumerate() {
                    let caption = format!(
                        "#{} score {:.4}<br>id {}<br>{}",
                        rank + 1,
                        hit.score,
                        hit.id,
                        escape(&hit.path)
                    );
                    figure(&mut out, db.thumbnail(hit.id)?, &caption, "hit");
                }
            }
            Err(e) => {
                let _ = write!(out, "<p class=\"error\">{}</p>", escape(e));
            }
        }
        out.push_str("</section>");
    }
    out.push_str("</body></html>\n");
    std::fs::write(path, out).map_err(|e| imgvec::Error::Image {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
