//! `imgvec search`: the stored images most like each query image or stored id, as a text table,
//! JSON lines (docs/CLI.md) and optionally an HTML contact sheet.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use imgvec::json::{search_answer, QueryName};
use imgvec::{printable, Database, Filter, Hit, OpenOptions, Query, SearchOptions};
use imgvec_cli::args::SearchArgs;

use crate::html;
use crate::output::{
    error, paint, print_json, warn, CliError, CliResult, BOLD, DIM, GREEN, YELLOW,
};

/// One query as given: how it is named in the output, and what is searched.
pub(crate) struct QueryItem {
    pub(crate) label: String,
    pub(crate) query: Query,
    /// The stored path of an `--id` query.
    pub(crate) stored_path: Option<String>,
}

pub(crate) fn run(args: SearchArgs, mut open: OpenOptions) -> CliResult {
    let opts = options(&args)?;
    let mut items = query_items(&args)?;
    open.read_only = true;
    let db = Database::open(&args.db, open)?;
    if opts.verify.shortlist != Some(0) {
        db.preload();
    }
    warn_no_ops(&db, &opts);
    for item in &mut items {
        if let Query::Id(id) = item.query {
            item.stored_path = db.get(id)?.map(|r| r.path);
        }
    }
    let results = db.search_batch(items.iter().map(|i| i.query.clone()).collect(), &opts);
    let mut failed = false;
    for (n, (item, result)) in items.iter().zip(&results).enumerate() {
        match result {
            Ok(hits) if args.json => print_json(&search_answer(&json_name(item), Ok(hits))),
            Ok(hits) => print_table(n, item, hits, &opts),
            Err(e) => {
                failed = true;
                if args.json {
                    print_json(&search_answer(&json_name(item), Err(&e.to_string())));
                } else {
                    error(&format!("{}: {e}", item.label));
                }
            }
        }
    }
    if let Some(path) = &args.html {
        let sheet: Vec<html::QueryRow> = items
            .into_iter()
            .zip(results)
            .map(|(item, result)| html::QueryRow {
                item,
                hits: result.map_err(|e| e.to_string()),
            })
            .collect();
        html::write(&db, &opts, path, &sheet)?;
        if !args.json {
            println!("contact sheet written to {}", path.display());
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The search options the flags ask for; a value no search can use is a usage error.
fn options(args: &SearchArgs) -> Result<SearchOptions, CliError> {
    if let Some(t) = args.threshold.filter(|t| !(-1.0..=1.0).contains(t)) {
        return Err(CliError::Usage(format!(
            "--threshold {t}: scores are cosines from -1 to 1, so nothing would pass; give a \
             threshold in that range"
        )));
    }
    let mut opts = SearchOptions {
        k: args.k,
        mode: args.mode,
        threshold: args.threshold,
        matches_only: args.matches_only,
        pairs: args.pairs || args.html.is_some(),
        filter: Filter {
            path_prefix: args.path_prefix.as_deref().map(absolute_prefix),
            attributes: args.attrs.iter().cloned().collect::<BTreeMap<_, _>>(),
        },
        nprobe: args.nprobe,
        rerank: !args.no_rerank,
        rerank_depth: args.rerank_depth,
        ..SearchOptions::default()
    };
    super::apply_query(&args.query, &mut opts).map_err(CliError::usage)?;
    opts.check().map_err(CliError::usage)?;
    Ok(opts)
}

/// A `--path-prefix` as stored paths are written: absolute, through links. A relative prefix
/// is taken from the current folder; its folder part is resolved when it exists, and a
/// trailing `/` is kept.
pub(crate) fn absolute_prefix(prefix: &str) -> String {
    if prefix.starts_with('/') {
        return prefix.to_string();
    }
    let joined = std::env::current_dir().unwrap_or_default().join(prefix);
    let resolved = match std::fs::canonicalize(&joined) {
        Ok(p) => p,
        Err(_) => match (
            joined.parent().map(std::fs::canonicalize),
            joined.file_name(),
        ) {
            (Some(Ok(parent)), Some(name)) => parent.join(name),
            _ => std::path::absolute(&joined).unwrap_or(joined),
        },
    };
    let mut out = resolved.to_string_lossy().into_owned();
    if prefix.ends_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The queries in order: each operand (a folder walked, `-` one image from stdin), then the
/// paths `--from-file` lists, then the `--id`s. None at all is a usage error.
fn query_items(args: &SearchArgs) -> Result<Vec<QueryItem>, CliError> {
    let mut paths: Vec<PathBuf> = args.images.clone();
    if let Some(list) = &args.from_file {
        paths.extend(read_list(list)?);
    }
    let mut items = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| CliError::Usage(format!("-: reading the query from stdin: {e}")))?;
            items.push(item("-".into(), Query::Bytes(bytes)));
        } else if path.is_dir() {
            let found = imgvec::collect_files(std::slice::from_ref(&path), false);
            if found.images.is_empty() {
                warn(&format!("{}: no images in this folder", path.display()));
            }
            // Each image is named as the folder was given (`photos/a.jpg`), not canonically.
            let base = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            for image in found.images {
                let label = match image.strip_prefix(&base) {
                    Ok(rel) => path.join(rel),
                    Err(_) => image.clone(),
                };
                items.push(item(label.display().to_string(), Query::Path(image)));
            }
        } else {
            items.push(item(path.display().to_string(), Query::Path(path)));
        }
    }
    items.extend(
        args.ids
            .iter()
            .map(|&id| item(format!("id:{id}"), Query::Id(id))),
    );
    if items.is_empty() {
        return Err(CliError::Usage(
            "no query: give query images (files, folders, - for stdin), --from-file FILE or \
             --id N"
                .into(),
        ));
    }
    Ok(items)
}

fn item(label: String, query: Query) -> QueryItem {
    QueryItem {
        label,
        query,
        stored_path: None,
    }
}

/// The non-empty lines of `list` (`-`: stdin), as paths.
fn read_list(list: &Path) -> Result<Vec<PathBuf>, CliError> {
    let text = if list.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(list)
    }
    .map_err(|e| CliError::Usage(format!("--from-file {}: {e}", list.display())))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect())
}

/// Warns about options that cannot do anything on this database.
fn warn_no_ops(db: &Database, opts: &SearchOptions) {
    let Some(pipeline) = db.pipeline() else {
        return;
    };
    let v = opts.verify;
    let asks_verification = v.shortlist.is_some_and(|n| n > 0)
        || v.dense.is_some_and(|n| n > 0)
        || v.min_inliers.is_some()
        || v.inlier_px.is_some()
        || v.min_coverage.is_some()
        || v.alignment_floor.is_some()
        || v.expand.is_some_and(|n| n > 0);
    if asks_verification && pipeline.local.is_none() {
        warn(&format!(
            "--verify, --dense, --min-inliers, --inlier-px, --min-coverage, --alignment-floor and \
             --expand \
             do nothing here: \
             pipeline `{}` stores no local features (use --pipeline robust when creating the \
             database, or `imgvec reindex DB --pipeline robust`)",
            pipeline.name
        ));
    }
    if v.upright == Some(true) && db.upright_fallback(opts).is_none() {
        warn(&format!(
            "--upright does nothing here: pipeline `{}` has no calibration to tell whether a \
             query found its match (a custom model)",
            pipeline.name
        ));
    }
}

/// How `item` is named in its JSON answer.
fn json_name(item: &QueryItem) -> QueryName {
    match item.query {
        Query::Id(id) => QueryName::Stored {
            id,
            path: item.stored_path.clone(),
        },
        _ => QueryName::Given(item.label.clone()),
    }
}

/// How a query is named in the text table: the path as given, or `id N  PATH`.
fn title(item: &QueryItem) -> String {
    match (&item.query, &item.stored_path) {
        (Query::Id(id), Some(path)) => format!("id {id}  {}", printable(path)),
        (Query::Id(id), None) => format!("id {id}"),
        _ => printable(&item.label).into_owned(),
    }
}

/// The text table of one query: a title line, a header, one row per hit; a blank line between
/// queries.
fn print_table(n: usize, item: &QueryItem, hits: &[Hit], opts: &SearchOptions) {
    if n > 0 {
        println!();
    }
    anstream::println!("{} {}", paint(BOLD, "query"), title(item));
    if let Some(qe) = opts.qe.filter(|&q| q > 0) {
        anstream::println!(
            "{}",
            paint(
                DIM,
                format!("(scores are cosines to the query expanded by its top {qe})")
            )
        );
    }
    if hits.is_empty() {
        println!("  (no results)");
        return;
    }
    let verified = hits.iter().any(|h| h.verdict.is_some());
    anstream::println!(
        "{}",
        paint(
            BOLD,
            format!(
                "{:>6}  {:<6}  {:>8}  {:<14}{}{}",
                "rank",
                "score",
                "id",
                "match",
                if verified { "evidence      " } else { "" },
                "path"
            )
        )
    );
    for (rank, hit) in hits.iter().enumerate() {
        anstream::println!(
            "{:>6}  {:.4}  {:>8}  {}{}{}",
            rank + 1,
            hit.score,
            hit.id,
            match_cell(hit),
            if verified {
                evidence_cell(hit)
            } else {
                String::new()
            },
            printable(&hit.path)
        );
    }
}

/// The `match` column: the calibrated verdict, coloured, and its confidence, 14 columns.
fn match_cell(hit: &Hit) -> String {
    let style = match hit.matched {
        imgvec::Match::Verified => GREEN,
        imgvec::Match::Likely => YELLOW,
        imgvec::Match::None => DIM,
    };
    let confidence = hit
        .confidence
        .map_or("-".to_string(), |c| format!("{:.0}%", c * 100.0));
    let text = format!("{:<8} {confidence:>4}", hit.matched.name());
    format!("{} ", paint(style, format!("{text:<13}")))
}

/// The `evidence` column: what verification found, padded to 14 columns.
fn evidence_cell(hit: &Hit) -> String {
    let text = match (hit.verdict, hit.inliers, hit.alignment) {
        (Some(imgvec::Verdict::Verified), Some(n), _) => format!("{n} inliers"),
        (Some(imgvec::Verdict::Aligned), _, Some(a)) => format!("aligned {a:.2}"),
        (Some(v), _, _) => v.name().to_string(),
        (None, _, _) => "-".to_string(),
    };
    format!("{} ", paint(DIM, format!("{text:<13}")))
}
