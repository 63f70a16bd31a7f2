//! Output shared by the commands: exit status, messages (error, warning, note) and their colour,
//! JSON lines, result tables and progress bars.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anstyle::{AnsiColor, Style};
use imgvec_cli::args::ColorWhen;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// Why a command failed: the engine's errors, training's, or a usage error found after parsing
/// (a value no command can use), which exits 2 like clap's own.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Engine(#[from] imgvec::Error),
    #[error(transparent)]
    Train(#[from] imgvec_train::TrainError),
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// A usage error carrying `e`'s message.
    pub(crate) fn usage(e: impl std::fmt::Display) -> Self {
        CliError::Usage(e.to_string())
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

pub(crate) type CliResult = Result<ExitCode, CliError>;

/// What the global flags asked of the terminal output.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ui {
    /// `-q`: no progress bars, no warnings or notes (errors and results only).
    pub(crate) quiet: bool,
}

static QUIET: AtomicBool = AtomicBool::new(false);

impl Ui {
    /// Applies `--color` (anstream strips styles when colour is off: `auto` honours NO_COLOR,
    /// CLICOLOR_FORCE and whether the stream is a terminal) and `-q`/`-v` (the tracing level of
    /// the engine's logs; `IMGVEC_LOG` overrides it).
    pub(crate) fn init(
        color: ColorWhen,
        verbosity: &clap_verbosity_flag::Verbosity<clap_verbosity_flag::WarnLevel>,
    ) -> Ui {
        match color {
            ColorWhen::Auto => {}
            ColorWhen::Always => anstream::ColorChoice::Always.write_global(),
            ColorWhen::Never => anstream::ColorChoice::Never.write_global(),
        }
        let level = verbosity.tracing_level_filter();
        let quiet = level < tracing::level_filters::LevelFilter::WARN;
        QUIET.store(quiet, Ordering::Relaxed);
        let filter = tracing_subscriber::EnvFilter::try_from_env("IMGVEC_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.to_string()));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(
                anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never,
            )
            .init();
        Ui { quiet }
    }

    /// Whether progress bars are drawn: stderr is a terminal and not `-q`.
    pub(crate) fn progress(&self) -> bool {
        use std::io::IsTerminal;
        !self.quiet && std::io::stderr().is_terminal()
    }
}

pub(crate) const BOLD: Style = Style::new().bold();
pub(crate) const DIM: Style = Style::new().dimmed();
pub(crate) const GREEN: Style = AnsiColor::Green.on_default();
pub(crate) const YELLOW: Style = AnsiColor::Yellow.on_default();
const RED_BOLD: Style = AnsiColor::Red.on_default().bold();
const YELLOW_BOLD: Style = AnsiColor::Yellow.on_default().bold();

/// `text` in `style` (shown only where colour is on).
pub(crate) fn paint(style: Style, text: impl std::fmt::Display) -> String {
    format!("{style}{text}{style:#}")
}

/// `error: MESSAGE` on stderr (never silenced).
pub(crate) fn error(message: &str) {
    anstream::eprintln!(
        "{} {}",
        paint(RED_BOLD, "error:"),
        imgvec::printable(message)
    );
}

/// `warning: MESSAGE` on stderr, unless `-q`.
pub(crate) fn warn(message: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        anstream::eprintln!(
            "{} {}",
            paint(YELLOW_BOLD, "warning:"),
            imgvec::printable(message)
        );
    }
}

/// `MESSAGE` on stderr, unless `-q` (what a command did besides its result).
pub(crate) fn note(message: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        anstream::eprintln!("{message}");
    }
}

/// A line above the progress bar, or on stderr when the bar is hidden (a hidden indicatif bar
/// drops its `println`s).
pub(crate) fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        anstream::eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// `value` as one JSON line on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) {
    let line = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `fields` (a JSON object) with `schema_version`, as one JSON line: every top-level object a
/// command prints goes through here.
pub(crate) fn print_versioned(fields: serde_json::Value) {
    print_json(&imgvec::json::versioned(fields));
}

/// `value` serialised, for `print_versioned` (a serialisation failure becomes its message).
pub(crate) fn to_json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

/// A progress bar of `len` steps drawn with `template`, or a hidden one when `visible` is false.
/// `{rate}` and `{eta}` are measured from the first step on (the steps done over the time since
/// the first one), so the time before it (opening, loading the model) does not skew them; they
/// show once a second has passed, as steps finish in batches.
pub(crate) fn progress_bar(visible: bool, len: u64, template: &str) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    let first: Arc<OnceLock<(Instant, u64)>> = Arc::new(OnceLock::new());
    let rate = move |state: &ProgressState| -> Option<f64> {
        let pos = state.pos();
        if pos == 0 {
            return None;
        }
        let (t0, pos0) = *first.get_or_init(|| (Instant::now(), pos));
        let secs = t0.elapsed().as_secs_f64();
        (pos > pos0 && secs >= 1.0).then(|| (pos - pos0) as f64 / secs)
    };
    let rate_for_eta = rate.clone();
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = match rate(s) {
                    Some(r) => write!(w, "{r:.1}/s"),
                    None => write!(w, "-/s"),
                };
            },
        )
        .with_key(
            "eta",
            move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let left = s.len().unwrap_or(0).saturating_sub(s.pos());
                let _ = match rate_for_eta(s) {
                    Some(r) => write!(w, "eta {}", human_seconds(left as f64 / r)),
                    None => write!(w, "eta -"),
                };
            },
        );
    bar.set_style(style);
    bar
}

/// `s` seconds as `42s`, `3m05s` or `2h07m`.
pub(crate) fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `n` and the noun, singular for one (`1 row`, `2 rows`).
pub(crate) fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_counts_read_as_words() {
        for (secs, text) in [
            (0.4, "0s"),
            (42.0, "42s"),
            (185.0, "3m05s"),
            (7620.0, "2h07m"),
        ] {
            assert_eq!(human_seconds(secs), text);
        }
        for (n, text) in [(0u64, "0 rows"), (1, "1 row"), (2, "2 rows")] {
            assert_eq!(count(n, "row"), text);
        }
    }
}
