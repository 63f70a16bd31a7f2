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
    .frame{position:relative;display:inline-block}\
    .region{position:absolute;border:2px solid #f0b000;box-sizing:border-box}\
    svg.pairs{width:100%;height:auto;margin-top:4px}svg.pairs line{stroke:#2ecc40;stroke-width:1}\
    figure.query{border-right:3px solid #36c;padding-right:8px}\
    .missing{width:180px;height:120px;background:#ddd}.error{color:#b00}.empty{color:#777}\
    .badge{display:inline-block;border-radius:3px;padding:0 4px;font-size:11px;color:#fff}\
    .verified{background:#2a7d2a}.likely{background:#b07800}.none{background:#888}\
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

/// One image with its caption; `region` (fractions of its sides) is outlined on it.
fn figure(
    out: &mut String,
    thumb: Option<&[u8]>,
    caption: &str,
    class: &str,
    link: &str,
    region: Option<[f32; 4]>,
) {
    let img = match thumb {
        Some(t) if !t.is_empty() => format!("<img src=\"{}\" alt=\"\">", data_uri(t)),
        _ => "<div class=\"missing\">no preview</div>".into(),
    };
    let img = match region {
        Some([l, t, r, b]) => format!(
            "<span class=\"frame\">{img}<span class=\"region\" title=\"aligned region\" \
             style=\"left:{:.1}%;top:{:.1}%;width:{:.1}%;height:{:.1}%\"></span></span>",
            l * 100.0,
            t * 100.0,
            (r - l) * 100.0,
            (b - t) * 100.0
        ),
        None => img,
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

/// The badge of a hit: its calibrated match and confidence, and what verification found.
fn badge(hit: &Hit) -> String {
    let evidence = match (hit.verdict, hit.inliers, hit.alignment) {
        (Some(Verdict::Verified), Some(n), _) => format!(" · {n} inliers"),
        (Some(Verdict::Aligned), _, Some(a)) => format!(" · aligned {a:.2}"),
        _ => String::new(),
    };
    let confidence = hit
        .confidence
        .map_or(String::new(), |c| format!(" · {:.0}%", c * 100.0));
    let name = hit.matched.name();
    format!("<span class=\"badge {name}\">{name}{confidence}{evidence}</span><br>")
}

/// A thumbnail with its width and height, read from its header (`None` when it has none).
struct Thumb<'a> {
    jpeg: &'a [u8],
    size: Option<(f32, f32)>,
}

impl Thumb<'_> {
    fn new(jpeg: &[u8]) -> Thumb<'_> {
        let size = imgvec::image::ImageReader::new(std::io::Cursor::new(jpeg))
            .with_guessed_format()
            .ok()
            .and_then(|r| r.into_dimensions().ok())
            .map(|(w, h)| (w as f32, h as f32));
        Thumb { jpeg, size }
    }
}

/// A verified hit's matches drawn: the query's and the hit's thumbnails side by side at one
/// height, a line per inlier pair, folded under a summary (empty when a thumbnail has no
/// readable size).
fn pairs_svg(query: &Thumb, hit: &Thumb, pairs: &[[f32; 4]]) -> String {
    let (Some((qw, qh)), Some((hw, hh))) = (query.size, hit.size) else {
        return String::new();
    };
    const HEIGHT: f32 = 160.0;
    const GAP: f32 = 8.0;
    let (qw, hw) = (qw * HEIGHT / qh.max(1.0), hw * HEIGHT / hh.max(1.0));
    let mut svg = format!(
        "<svg class=\"pairs\" viewBox=\"0 0 {:.0} {HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <image href=\"{}\" width=\"{qw:.1}\" height=\"{HEIGHT}\"/>\
         <image href=\"{}\" x=\"{:.1}\" width=\"{hw:.1}\" height=\"{HEIGHT}\"/>",
        qw + GAP + hw,
        data_uri(query.jpeg),
        data_uri(hit.jpeg),
        qw + GAP
    );
    for [ax, ay, bx, by] in pairs {
        let _ = write!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
            ax * qw,
            ay * HEIGHT,
            qw + GAP + bx * hw,
            by * HEIGHT
        );
    }
    format!(
        "<details><summary>{} matched points</summary>{svg}</svg></details>",
        pairs.len()
    )
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
    if opts.matches_only {
        how.push_str(", matches only");
    }
    format!(
        "<header><h1>imgvec search results</h1><p>database {} · pipeline {} · {}</p><p>score: \
         cosine similarity (higher is closer); the badge answers \"the same image?\": verified (local \
         evidence), likely or none, with the calibrated confidence (docs/CALIBRATION.md)</p>\
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
            Query::Features(_) => (None, String::new()),
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
        figure(
            &mut out,
            query_thumb.as_deref(),
            &caption,
            "query",
            &link,
            None,
        );
        // Its size is read once, for every verified hit's drawing.
        let query_thumb = query_thumb.as_deref().map(Thumb::new);
        match &row.hits {
            Ok(hits) if hits.is_empty() => {
                out.push_str(
                    "<p class=\"empty\">no results (nothing stored passes the filters)</p>",
                );
            }
            Ok(hits) => {
                for (rank, hit) in hits.iter().enumerate() {
                    let thumb = db.thumbnail(hit.id)?;
                    let drawn = match (&query_thumb, &thumb, &hit.pairs) {
                        (Some(q), Some(t), Some(p)) => pairs_svg(q, &Thumb::new(t), p),
                        _ => String::new(),
                    };
                    let caption = format!(
                        "{}#{} score {:.4} · id {}<br>{}{drawn}",
                        badge(hit),
                        rank + 1,
                        hit.score,
                        hit.id,
                        escape(&hit.path)
                    );
                    let link = file_url(&hit.path);
                    figure(
                        &mut out,
                        thumb.as_deref(),
                        &caption,
                        "hit",
                        &link,
                        hit.region,
                    );
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
         images · {} · the keeper is marked</p></header>",
        escape(&db.dir().display().to_string()),
        report.groups.len(),
        report.rows,
        match report.min_confidence {
            Some(c) => format!("confidence ≥ {c:.2}"),
            None => format!("score ≥ {:.2} (cosine)", report.min_score),
        }
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
                db.thumbnail(m.id)?.as_deref(),
                &caption,
                class,
                &file_url(&m.path),
                None,
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
