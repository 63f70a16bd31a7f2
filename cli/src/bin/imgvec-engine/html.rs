//! `search --html`: a self-contained contact sheet (thumbnails embedded as data URIs): a header
//! naming the database, pipeline and options; per query its image and the hits, each with its
//! rank, score, verdict badge and a link to the full image.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use imgvec::{Database, Hit, Query, SearchOptions, Verdict};

use crate::commands::search::QueryItem;

pub(crate) struct QueryRow {
    pub(crate) item: QueryItem,
    pub(crate) hits: Result<Vec<Hit>, String>,
}

const STYLE: &str = "body{font-family:sans-serif;background:#fafafa;margin:1em;color:#222}\
    header p{margin:.2em 0;color:#555;font-size:13px}\
    section{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start;border-bottom:1px solid #ccc;padding:8px 0}\
    figure{margin:0;width:180px;font-size:12px;overflow-wrap:anywhere}\
    figure img{max-width:180px;max-height:180px;display:block}\
    figure.query{border-right:3px solid #36c;padding-right:8px}\
    .missing{width:180px;height:120px;background:#ddd}.error{color:#b00}.empty{color:#777}\
    .badge{display:inline-block;border-radius:3px;padding:0 4px;font-size:11px;color:#fff}\
    .verified{background:#2a7d2a}.aligned{background:#b07800}.unverified{background:#888}\
    a{color:inherit}";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn data_uri(jpeg: &[u8]) -> String {
    format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(jpeg)
    )
}

/// A `file://` link to `path` (an absolute stored path), its bytes percent-encoded where a URL
/// needs it.
fn file_url(path: &str) -> String {
    let mut url = String::from("file://");
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            url.push(b as char);
        } else {
            let _ = write!(url, "%{b:02X}");
        }
    }
    url
}

fn figure(out: &mut String, thumb: Option<Vec<u8>>, caption: &str, class: &str, link: &str) {
    let img = match thumb {
        Some(t) if !t.is_empty() => format!("<img src=\"{}\" alt=\"\">", data_uri(&t)),
        _ => "<div class=\"missing\">no preview</div>".into(),
    };
    let img = if link.is_empty() {
        img
    } else {
        format!("<a href=\"{}\">{img}</a>", escape(link))
    };
    let _ = write!(
        out,
        "<figure class=\"{class}\">{img}<figcaption>{caption}</figcaption></figure>"
    );
}

/// A page's start, up to and including `<body>`: its title and the sheet's style.
fn page_start(title: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width\"><title>{title}</title><style>{STYLE}</style></head><body>"
    )
}

/// Ends the page `out` and writes it to `path`.
fn save(path: &Path, mut out: String) -> Result<(), imgvec::Error> {
    out.push_str("</body></html>\n");
    std::fs::write(path, out).map_err(|e| imgvec::Error::Image {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The verdict badge of a hit: what verification found, or nothing when it did not check.
fn badge(hit: &Hit) -> String {
    let (class, text) = match (hit.verdict, hit.inliers, hit.alignment) {
        (Some(Verdict::Verified), Some(n), _) => ("verified", format!("verified · {n} inliers")),
        (Some(Verdict::Aligned), _, Some(a)) => ("aligned", format!("aligned · {a:.2}")),
        (Some(v), _, _) => ("unverified", v.name().to_string()),
        (None, _, _) => return String::new(),
    };
    format!("<span class=\"badge {class}\">{text}</span><br>")
}

/// The header: what was searched, and how.
fn header(db: &Database, opts: &SearchOptions) -> String {
    let pipeline = db
        .pipeline()
        .map(|p| p.name)
        .unwrap_or_else(|| "none".into());
    let mut how = format!("k {}, mode {}", opts.k, opts.mode);
    if let Some(qe) = opts.qe.filter(|&q| q > 0) {
        let _ = write!(
            how,
            ", query expansion {qe} (scores are to the expanded query)"
        );
    }
    if let Some(prefix) = &opts.filter.path_prefix {
        let _ = write!(how, ", path prefix {prefix}");
    }
    for (k, v) in &opts.filter.attributes {
        let _ = write!(how, ", {k}={v}");
    }
    if let Some(t) = opts.threshold {
        let _ = write!(how, ", score ≥ {t}");
    }
    format!(
        "<header><h1>imgvec search results</h1><p>database {} · pipeline {} · {}</p><p>score: \
         cosine similarity (higher is closer); a badge says what spatial verification found</p>\
         </header>",
        escape(&db.dir().display().to_string()),
        escape(&pipeline),
        escape(&how)
    )
}

pub(crate) fn write(
    db: &Database,
    opts: &SearchOptions,
    path: &Path,
    rows: &[QueryRow],
) -> Result<(), imgvec::Error> {
    let mut out = page_start("imgvec results");
    out.push_str(&header(db, opts));
    for row in rows {
        out.push_str("<section>");
        let (query_thumb, link) = match &row.item.query {
            Query::Path(p) => (
                imgvec::read_image_file(p)
                    .ok()
                    .and_then(|b| imgvec::make_thumbnail(&b).ok()),
                std::fs::canonicalize(p)
                    .map(|c| file_url(&c.to_string_lossy()))
                    .unwrap_or_default(),
            ),
            Query::Bytes(b) => (imgvec::make_thumbnail(b).ok(), String::new()),
            Query::Id(id) => (
                db.thumbnail(*id).ok().flatten(),
                row.item
                    .stored_path
                    .as_deref()
                    .map(file_url)
                    .unwrap_or_default(),
            ),
        };
        let caption = format!(
            "<b>query</b><br>{}{}",
            escape(&row.item.label),
            row.item
                .stored_path
                .as_deref()
                .map(|p| format!("<br>{}", escape(p)))
                .unwrap_or_default()
        );
        figure(&mut out, query_thumb, &caption, "query", &link);
        match &row.hits {
            Ok(hits) if hits.is_empty() => {
                out.push_str(
                    "<p class=\"empty\">no results (nothing stored passes the filters)</p>",
                );
            }
            Ok(hits) => {
                for (rank, hit) in hits.iter().enumerate() {
                    let caption = format!(
                        "{}#{} score {:.4} · id {}<br>{}",
                        badge(hit),
                        rank + 1,
                        hit.score,
                        hit.id,
                        escape(&hit.path)
                    );
                    let link = file_url(&hit.path);
                    figure(&mut out, db.thumbnail(hit.id)?, &caption, "hit", &link);
                }
            }
            Err(e) => {
                let _ = write!(out, "<p class=\"error\">{}</p>", escape(e));
            }
        }
        out.push_str("</section>");
    }
    save(path, out)
}

/// `dedupe --html`: one section per group, its keeper first and marked.
pub(crate) fn write_groups(
    db: &Database,
    path: &Path,
    report: &imgvec::DedupeReport,
) -> Result<(), imgvec::Error> {
    let mut out = page_start("imgvec dedupe");
    let _ = write!(
        out,
        "<header><h1>imgvec near-duplicate groups</h1><p>database {} · {} groups among {} \
         images · score ≥ {:.2} (cosine) · the keeper is marked</p></header>",
        escape(&db.dir().display().to_string()),
        report.groups.len(),
        report.rows,
        report.min_score
    );
    if report.groups.is_empty() {
        out.push_str("<p class=\"empty\">no near-duplicates found</p>");
    }
    for group in &report.groups {
        out.push_str("<section>");
        let mut members: Vec<&imgvec::DedupeMember> = group.members.iter().collect();
        members.sort_by_key(|m| m.id != group.keep);
        for m in members {
            let keep = if m.id == group.keep {
                "<span class=\"badge verified\">keep</span><br>"
            } else {
                ""
            };
            let caption = format!(
                "{keep}id {} · {}×{} · {:.4}<br>{}",
                m.id,
                m.width,
                m.height,
                m.score,
                escape(&m.path)
            );
            let class = if m.id == group.keep { "query" } else { "hit" };
            figure(
                &mut out,
                db.thumbnail(m.id)?,
                &caption,
                class,
                &file_url(&m.path),
            );
        }
        out.push_str("</section>");
    }
    save(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_escaped_and_links_encoded() {
        let name = "<img src=x onerror=alert(1)>'\"&.jpg";
        let escaped = escape(name);
        assert!(!escaped.contains('<') && !escaped.contains('"') && !escaped.contains('\''));
        assert_eq!(
            file_url("/photos/a b/<x>#1.jpg"),
            "file:///photos/a%20b/%3Cx%3E%231.jpg"
        );
    }
}
