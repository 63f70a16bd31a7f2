//! Output shared by the commands: exit status, JSON lines, result lists and progress bars.

use std::io::Write;
use std::process::ExitCode;

use imgvec::{Hit, Query};
use indicatif::{ProgressBar, ProgressStyle};

/// Why a command failed: the engine's errors, and training's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Engine(#[from] imgvec::Error),
    #[error(transparent)]
    Train(#[from] imgvec_train::TrainError),
}

pub(crate) type CliResult = Result<ExitCode, CliError>;

/// A line above the progress bar, or on stderr when the bar is hidden (a hidden indicatif bar
/// drops its `println`s).
pub(crate) fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) {
    let line = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A progress bar of `len` steps drawn with `template`, or a hidden one when `visible` is false.
pub(crate) fn progress_bar(visible: bool, len: u64, template: &str) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// How a query is named in `search` output: the path as given, or `id:N`.
pub(crate) fn query_label(query: &Query) -> String {
    match query {
        Query::Path(p) => p.display().to_string(),
        Query::Id(id) => format!("id:{id}"),
        Query::Bytes(_) => "<bytes>".into(),
    }
}

pub(crate) fn print_hits(label: &str, hits: &[Hit]) {
    println!("{}", imgvec::printable(label));
    if hits.is_empty() {
        println!("  (no results)");
    }
    for (rank, hit) in hits.iter().enumerate() {
        println!(
            "  {:>2}. {:.4}  id {:<6} {}",
            rank + 1,
            hit.score,
            hit.id,
            imgvec::printable(&hit.path)
        );
    }
}
