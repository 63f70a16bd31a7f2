//! Looking inside a database: `imgvec list`, `show`, `tag` and `export`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use imgvec::{printable, Database, Filter, ImageRecord, OpenOptions};
use imgvec_cli::args::{ExportArgs, ExportFormat, ListArgs, ShowArgs, TagArgs};
use serde_json::json;

use super::resolve_rows;
use crate::commands::search::absolute_prefix;
use crate::output::{count, print_versioned, CliError, CliResult};

fn open_read_only(db: &std::path::Path, mut open: OpenOptions) -> Result<Database, imgvec::Error> {
    open.read_only = true;
    Database::open(db, open)
}

fn attrs_text(attrs: &BTreeMap<String, String>) -> String {
    attrs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Rows `export` reads and writes at a time.
pub(crate) const PAGE: usize = 4096;

/// Hands `visit` every live record, a page of up to [`PAGE`] at a time in id order (a million
/// rows are never all in memory); how many there were.
pub(crate) fn for_each_page(
    db: &Database,
    visit: &mut dyn FnMut(&[ImageRecord]) -> Result<(), imgvec::Error>,
) -> Result<u64, imgvec::Error> {
    let (mut after, mut seen) = (None, 0u64);
    loop {
        let page = db.records_page(&Filter::default(), after, PAGE)?;
        if page.is_empty() {
            return Ok(seen);
        }
        visit(&page)?;
        seen += page.len() as u64;
        after = page.last().map(|r| r.id);
    }
}

pub(crate) fn list(args: ListArgs, open: OpenOptions) -> CliResult {
    let db = open_read_only(&args.db, open)?;
    let filter = Filter {
        path_prefix: args.path_prefix.as_deref().map(absolute_prefix),
        attributes: args.attrs.into_iter().collect(),
    };
    // One pass, printing as it reads: the rows shown and the count of all that match.
    let limit = args.limit.unwrap_or(usize::MAX);
    let (mut shown, mut total) = (0usize, 0usize);
    db.scan_records(None, &mut |r| {
        if !filter.matches(&r) {
            return true;
        }
        total += 1;
        if shown < limit {
            shown += 1;
            print_row(&r, args.json);
        }
        // Without a summary line to print (--json) there is no need to count past the limit.
        !(args.json && shown == limit)
    })?;
    if !args.json {
        eprintln!("{} of {total}", count(shown as u64, "image"));
    }
    Ok(ExitCode::SUCCESS)
}

/// One `list` line.
fn print_row(r: &ImageRecord, json: bool) {
    if json {
        print_versioned(imgvec::json::record(r));
    } else {
        println!(
            "{:>8}  {:>5}×{:<5}  {:<4}  {}{}{}",
            r.id,
            r.width,
            r.height,
            r.format,
            printable(&r.path),
            if r.attributes.is_empty() { "" } else { "  " },
            attrs_text(&r.attributes)
        );
    }
}

pub(crate) fn show(args: ShowArgs, open: OpenOptions) -> CliResult {
    if args.rows.ids.is_empty() && args.rows.paths.is_empty() {
        return Err(CliError::Usage("give --id N or --path P".into()));
    }
    let db = open_read_only(&args.db, open)?;
    let (ids, mut missing) = resolve_rows(&db, &args.rows)?;
    if args.thumbnail.is_some() && ids.len() + missing.len() != 1 {
        return Err(CliError::Usage("--thumbnail takes one image".into()));
    }
    for id in ids {
        let (Some(rec), Some(features)) = (db.get(id)?, db.stored_features(id)?) else {
            missing.push(format!("id {id}"));
            continue;
        };
        if let Some(file) = &args.thumbnail {
            let jpeg = db.thumbnail(id)?.unwrap_or_default();
            std::fs::write(file, jpeg).map_err(|e| imgvec::Error::Image {
                path: file.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        if args.json {
            let mut line = imgvec::json::record(&rec);
            line["features"] = serde_json::to_value(&features).unwrap_or_default();
            print_versioned(line);
        } else {
            print_record(&rec, &features);
        }
    }
    Ok(super::report_not_found(&missing, false))
}

fn print_record(r: &ImageRecord, f: &imgvec::StoredFeatures) {
    println!("id            {}", r.id);
    println!("path          {}", printable(&r.path));
    println!("image         {}×{} {}", r.width, r.height, r.format);
    println!("content hash  {}", r.content_hash.to_hex());
    println!("ingested at   {} ms since the Unix epoch", r.ingested_at_ms);
    if let Some(d) = r.duplicate_of {
        println!("duplicate of  id {d} (byte-identical when stored)");
    }
    println!(
        "attributes    {}",
        if r.attributes.is_empty() {
            "(none)".to_string()
        } else {
            attrs_text(&r.attributes)
        }
    );
    println!(
        "features      {}-d vector; {}; thumbnail {} bytes",
        f.vector_dims,
        match f.keypoints {
            Some(n) => format!("{n} SIFT keypoints ({} bytes)", f.local_bytes),
            None => "no local features".to_string(),
        },
        f.thumbnail_bytes
    );
}

pub(crate) fn tag(args: TagArgs, mut open: OpenOptions) -> CliResult {
    if args.set.is_empty() && args.remove.is_empty() {
        return Err(CliError::Usage(
            "nothing to change: give KEY=VALUE or --remove KEY".into(),
        ));
    }
    if args.rows.ids.is_empty() && args.rows.paths.is_empty() {
        return Err(CliError::Usage("give --id N or --path P".into()));
    }
    open.create = false;
    let db = Database::open(&args.db, open)?;
    let (ids, mut missing) = resolve_rows(&db, &args.rows)?;
    let set: BTreeMap<String, String> = args.set.into_iter().collect();
    let mut tagged = 0u64;
    for id in ids {
        match db.set_attributes(id, &set, &args.remove)? {
            Some(rec) if args.json => print_versioned(imgvec::json::record(&rec)),
            Some(_) => tagged += 1,
            None => missing.push(format!("id {id}")),
        }
    }
    if !args.json {
        println!("tag: {}", count(tagged, "image"));
    }
    Ok(super::report_not_found(&missing, false))
}

pub(crate) fn export(args: ExportArgs, open: OpenOptions) -> CliResult {
    if args.format == ExportFormat::Parquet && args.out.is_none() {
        return Err(CliError::Usage("--format parquet needs --out FILE".into()));
    }
    let db = open_read_only(&args.db, open)?;
    let create = |path: &std::path::Path| {
        std::fs::File::create(path).map_err(|e| imgvec::Error::Image {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let vectors = !args.no_vectors;
    let written = match (args.format, &args.out) {
        (ExportFormat::Parquet, Some(path)) => {
            crate::parquet_export::write(&db, vectors, create(path)?)?
        }
        (_, Some(path)) => export_jsonl(&db, vectors, Box::new(create(path)?))?,
        (_, None) => export_jsonl(&db, vectors, Box::new(std::io::stdout().lock()))?,
    };
    if let Some(path) = &args.out {
        eprintln!("export: {} to {}", count(written, "image"), path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One versioned JSON line per record, with `vector` unless left out; how many were written.
fn export_jsonl(
    db: &Database,
    vectors: bool,
    mut out: Box<dyn Write>,
) -> Result<u64, imgvec::Error> {
    let written = for_each_page(db, &mut |rows| {
        for r in rows {
            let mut line = imgvec::json::record(r);
            if vectors {
                line["vector"] = json!(db.vector(r.id)?.unwrap_or_default());
            }
            let text = serde_json::to_string(&imgvec::json::versioned(line))
                .map_err(|e| imgvec::Error::Invalid(e.to_string()))?;
            writeln!(out, "{text}")?;
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(written)
}
