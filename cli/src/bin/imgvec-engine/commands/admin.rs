//! Maintenance commands: `imgvec delete`, `compact`, `reindex`, `verify` and `backup`.

use std::process::ExitCode;

use imgvec::{printable, Database, IngestEvent, OpenOptions, ReindexOptions};
use imgvec_cli::args::{BackupArgs, DbArgs, DeleteArgs, ReindexArgs};
use indicatif::ProgressBar;

use crate::output::{
    count, error, paint, print_versioned, say, to_json, CliError, CliResult, Ui, BOLD,
};

pub(crate) fn reindex(args: ReindexArgs, open: OpenOptions, ui: Ui) -> CliResult {
    let ReindexArgs {
        db,
        pipeline,
        drop_missing,
        dry_run,
        json,
    } = args;
    let choice = super::pipeline_choice(pipeline)?;
    let bar = if json || !ui.progress() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    let on_event = |e: &IngestEvent| {
        if json {
            print_versioned(to_json(e));
        } else {
            bar.tick();
            if let Some(reason) = &e.error {
                say(&bar, format!("error: {}: {reason}", printable(&e.path)));
            }
        }
    };
    let options = ReindexOptions {
        drop_missing,
        dry_run,
    };
    let report = imgvec::reindex(&db, choice, options, open, &on_event)?;
    bar.finish_and_clear();
    let lost = report.gone.len() + report.errors.len();
    if json {
        print_versioned(to_json(&report));
    } else {
        for path in &report.gone {
            eprintln!("gone: {}", printable(path));
        }
        let verb = if report.swapped {
            "reindexed"
        } else if dry_run {
            "dry run:"
        } else {
            "unchanged:"
        };
        anstream::println!(
            "{} {verb} {} with pipeline {}: {} of {} rows {}, {} from thumbnails, {} gone, {} \
             errors ({:.1} s)",
            paint(BOLD, "reindex:"),
            printable(&db.display().to_string()),
            report.pipeline,
            if dry_run {
                report.rows_before - report.gone.len()
            } else {
                report.stored as usize
            },
            report.rows_before,
            if dry_run {
                "can be carried over"
            } else {
                "stored"
            },
            report.from_thumbnails,
            report.gone.len(),
            report.errors.len(),
            report.seconds
        );
        if !report.swapped && !dry_run && lost > 0 {
            error(&format!(
                "{} cannot be carried over; the database is unchanged (restore the files, or \
                 give --drop-missing to leave them out)",
                count(lost as u64, "row")
            ));
        }
    }
    Ok(if lost == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn compact(args: DbArgs, mut open: OpenOptions) -> CliResult {
    open.background_compaction = false;
    open.create = false;
    let db = Database::open(&args.db, open)?;
    let r = db.compact()?;
    if args.json {
        print_versioned(to_json(&r));
    } else if r.segments_merged == 0 {
        anstream::println!(
            "{} sealed {}; nothing to merge (one segment, no deleted rows)",
            paint(BOLD, "compact:"),
            count(r.rows_sealed, "pending row")
        );
    } else {
        anstream::println!(
            "{} sealed {}, merged {} into one: kept {}, dropped {} ({} -> {} bytes)",
            paint(BOLD, "compact:"),
            count(r.rows_sealed, "pending row"),
            count(r.segments_merged as u64, "segment"),
            count(r.rows_kept, "row"),
            count(r.rows_dropped, "deleted row"),
            r.bytes_before,
            r.bytes_after
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn delete(args: DeleteArgs, mut open: OpenOptions) -> CliResult {
    let DeleteArgs { db, rows, json } = args;
    if rows.ids.is_empty() && rows.paths.is_empty() {
        return Err(CliError::Usage(
            "nothing to delete: give --id N or --path P".into(),
        ));
    }
    open.create = false;
    let db = Database::open(&db, open)?;
    let (wanted, mut missing) = super::resolve_rows(&db, &rows)?;
    let deleted = db.delete(&wanted)?;
    missing.extend(
        wanted
            .iter()
            .filter(|id| !deleted.contains(id))
            .map(|id| format!("id {id}")),
    );
    if json {
        print_versioned(serde_json::json!({ "deleted": deleted, "not_found": missing }));
    } else {
        anstream::println!(
            "{} {}",
            paint(BOLD, "delete:"),
            count(deleted.len() as u64, "row")
        );
    }
    Ok(super::report_not_found(&missing, json))
}

pub(crate) fn verify(args: DbArgs, mut open: OpenOptions) -> CliResult {
    open.read_only = true;
    let db = Database::open(&args.db, open)?;
    let report = db.verify()?;
    if args.json {
        print_versioned(to_json(&report));
    } else {
        print_check(&report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_check(report: &imgvec::VerifyReport) {
    for note in &report.store.notes {
        println!("note: {}", printable(note));
    }
    for problem in &report.store.problems {
        println!("damaged: {}", printable(problem));
    }
    println!(
        "{} {}: {} records, {} segments ({} rows, {} bytes), {} pending rows, {} derived files \
         ({} bytes){}",
        if report.ok { "ok" } else { "DAMAGED" },
        printable(&report.path),
        report.store.records,
        report.store.segments,
        report.store.segment_rows,
        report.store.segment_bytes,
        report.store.pending_rows,
        report.derived_files,
        report.derived_bytes,
        if report.model.is_some() {
            ", model checked"
        } else {
            ""
        }
    );
}

pub(crate) fn backup(args: BackupArgs, mut open: OpenOptions) -> CliResult {
    open.read_only = true;
    let db = Database::open(&args.db, open)?;
    let report = db.backup(&args.dest)?;
    if args.json {
        print_versioned(to_json(&report));
    } else {
        for key in &report.dropped {
            println!("note: {key} was superseded during the copy; the copy rebuilds it");
        }
        println!(
            "backed up {} to {}: {} segments ({} linked), {} metadata entries, {} model and \
             derived files",
            printable(&args.db.display().to_string()),
            printable(&report.dest),
            report.store.segments,
            report.store.segments_linked,
            report.store.metadata_entries,
            report.files
        );
        print_check(&report.verify);
    }
    Ok(if report.verify.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
