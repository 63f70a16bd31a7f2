//! The `imgvec` command-line tool: bulk ingest, search, info and delete over an imgvec database
//! folder. All the work is done by the `imgvec` crate; this binary parses arguments, reports
//! progress and prints results in the formats DESIGN.md fixes (scripts rely on them).

mod args;
mod commands;
mod html;
mod output;

use std::process::ExitCode;

use clap::Parser;
use imgvec::OpenOptions;

use args::{BenchCommand, Cli, Command, TrainCommand};
use commands::{admin, bench, info, ingest, search, train};

/// OpenMP worker threads (libtorch's and FAISS's, through libgomp) spin by default between
/// parallel regions, taking the cores from the work around them: SIFT on ingest workers, query
/// decoding, matching and verification. Passive waiting made `robust` searches ~1/3 faster and
/// ingest ~1/10 faster on 2 cores. libgomp reads `OMP_WAIT_POLICY` once, when it is loaded
/// (before `main`), so when the user has not set it the process re-executes itself with it set;
/// if that fails it carries on as it is.
fn passive_openmp() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` returns only when it failed; then this process goes on with the default policy.
    let _ = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env("OMP_WAIT_POLICY", "passive")
        .exec();
}

/// Rust ignores SIGPIPE, so a write to a closed pipe (`imgvec search … | head -1`) fails and
/// `println!` panics. Like other Unix tools, the CLI instead ends quietly when its reader goes
/// away: the default action of SIGPIPE. Everything acknowledged is durable by then.
fn quiet_broken_pipe() {
    // SAFETY: setting a signal's disposition to its default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    passive_openmp();
    quiet_broken_pipe();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IMGVEC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    imgvec::tune_allocator();
    let mut open = OpenOptions::default();
    if let Some(t) = cli.threads {
        open.threads = t;
    }
    // `bench retrieval` applies its own default (256) when the flag is absent.
    let index_min_rows = cli.index_min_rows;
    if let Some(n) = index_min_rows {
        open.index.min_train_rows = n;
    }
    open.index.ivf_factory = cli.ivf_factory;
    open.index.bits = cli.bits;
    let result = match cli.command {
        Command::Ingest(args) => ingest::run(args, open),
        Command::Search(args) => search::run(args, open),
        Command::Info(args) => info::run(args, open),
        Command::Delete(args) => admin::delete(args, open),
        Command::Compact(args) => admin::compact(args, open),
        Command::Reindex(args) => admin::reindex(args, open),
        Command::Verify(args) => admin::verify(args, open),
        Command::Backup(args) => admin::backup(args, open),
        Command::Train(TrainCommand::Autoencoder(args)) => train::autoencoder(args, open.threads),
        Command::Train(TrainCommand::Sgan(args)) => train::sgan(args, open.threads),
        Command::Bench(BenchCommand::Ingest(args)) => bench::ingest(args, open),
        Command::Bench(BenchCommand::Retrieval(args)) => {
            bench::retrieval(args, index_min_rows, open)
        }
        Command::Bench(BenchCommand::Ann(args)) => bench::ann(args, open),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", imgvec::printable(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}
