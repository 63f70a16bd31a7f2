//! `imgvec dedupe`: near-duplicate groups with a suggested keeper; optionally an HTML page of
//! them, and deleting every image but the keeper (or saying what would be deleted).

use std::process::ExitCode;

use imgvec::{printable, Database, DedupeOptions, DedupeReport, Keep, OpenOptions};
use imgvec_cli::args::{DedupeArgs, KeepWhich};

use crate::html;
use crate::output::{count, paint, print_versioned, to_json, CliError, CliResult, BOLD, GREEN};

pub(crate) fn run(args: DedupeArgs, mut open: OpenOptions) -> CliResult {
    if let Some(s) = args.min_score.filter(|s| !(-1.0..=1.0).contains(s)) {
        return Err(CliError::Usage(format!(
            "--min-score {s}: scores are cosines from -1 to 1"
        )));
    }
    if let Some(c) = args.min_confidence.filter(|c| !(0.0..=1.0).contains(c)) {
        return Err(CliError::Usage(format!(
            "--min-confidence {c}: a confidence is from 0 to 1"
        )));
    }
    let deleting = args.delete_others && !args.dry_run;
    open.read_only = !deleting;
    open.create = false;
    let db = Database::open(&args.db, open)?;
    let opts = DedupeOptions {
        k: args.k,
        min_score: args.min_score,
        min_confidence: args.min_confidence,
        mode: args.mode,
        keep: match args.keep {
            KeepWhich::Largest => Keep::Largest,
            KeepWhich::Earliest => Keep::Earliest,
        },
        ..DedupeOptions::default()
    };
    let report = db.dedupe(&opts)?;
    let others: Vec<u64> = report
        .groups
        .iter()
        .flat_map(|g| {
            g.members
                .iter()
                .map(|m| m.id)
                .filter(move |&id| id != g.keep)
        })
        .collect();
    let deleted = if deleting {
        db.delete(&others)?
    } else {
        Vec::new()
    };
    if let Some(path) = &args.html {
        html::write_groups(&db, path, &report)?;
    }
    if args.json {
        let mut value = to_json(&report);
        value["delete"] = serde_json::json!({
            "others": others, "deleted": deleted, "dry_run": args.dry_run
        });
        print_versioned(value);
    } else {
        print_groups(&report);
        if args.delete_others {
            let verb = if args.dry_run {
                "would delete"
            } else {
                "deleted"
            };
            let n = if args.dry_run {
                others.len()
            } else {
                deleted.len()
            };
            println!(
                "{verb} {} (every image but its group's keeper)",
                count(n as u64, "image")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_groups(report: &DedupeReport) {
    for (n, group) in report.groups.iter().enumerate() {
        anstream::println!(
            "{} {} ({})",
            paint(BOLD, format!("group {}", n + 1)),
            count(group.members.len() as u64, "image"),
            "keeper marked *"
        );
        for m in &group.members {
            let mark = if m.id == group.keep {
                paint(GREEN, "*")
            } else {
                " ".to_string()
            };
            anstream::println!(
                "  {mark} {:>8}  {:>5}×{:<5}  {:.4}  {}",
                m.id,
                m.width,
                m.height,
                m.score,
                printable(&m.path)
            );
        }
    }
    anstream::println!(
        "{} {} in {} among {} ({} pairs ≥ {}, k {}, {} mode, {:.1} s)",
        paint(BOLD, "dedupe:"),
        count(
            report
                .groups
                .iter()
                .map(|g| g.members.len() as u64)
                .sum::<u64>(),
            "image"
        ),
        count(report.groups.len() as u64, "group"),
        count(report.rows as u64, "image"),
        report.pairs,
        match report.min_confidence {
            Some(c) => format!("confidence {c:.2}"),
            None => format!("{:.2}", report.min_score),
        },
        report.k,
        report.mode,
        report.seconds
    );
}
