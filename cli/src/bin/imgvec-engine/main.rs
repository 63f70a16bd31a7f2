//! `imgvec-engine`: runs the `imgvec` commands (the `imgvec` launcher execs it for everything but
//! help, version, usage errors, completions and the man page). All the work is done by the
//! `imgvec` crate; this binary reports progress and prints results in the formats docs/CLI.md
//! fixes (scripts rely on them).

mod commands;
mod html;
mod output;
mod parquet_export;

use std::process::ExitCode;

use imgvec::OpenOptions;
use imgvec_cli::args::{BenchCommand, Command, TrainCommand};

use commands::{admin, bench, dedupe, info, ingest, inspect, search, serve, train};
use output::{error, Ui};

/// OpenMP worker threads (libtorch's and FAISS's, through libgomp) spin by default between
/// parallel regions, taking the cores from the work around them: SIFT on ingest workers, query
/// decoding, matching and verification. Passive waiting made `robust` searches ~1/3 faster and
/// ingest ~1/10 faster on 2 cores. libgomp reads `OMP_WAIT_POLICY` once, when it is loaded
/// (before `main`): the `imgvec` launcher sets it when the user has not; run directly without
/// it, this binary re-executes itself with it set (if that fails it carries on as it is).
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

fn main() -> ExitCode {
    passive_openmp();
    imgvec_cli::quiet_broken_pipe();
    let (cli, _) = imgvec_cli::parse();
    if let Some(code) = imgvec_cli::answer_builtin(&cli.command) {
        return code;
    }
    let ui = Ui::init(cli.color, &cli.verbosity);
    imgvec::tune_allocator();
    let mut open = OpenOptions::default();
    if let Some(t) = cli.threads {
        open.threads = t;
    }
    // `bench retrieval` applies its own default (256) when the flag is absent.
    let index_min_rows = cli.index.index_min_rows;
    if let Some(n) = index_min_rows {
        open.index.min_train_rows = n;
    }
    open.index.ivf_factory = cli.index.ivf_factory;
    open.index.bits = cli.index.bits;
    let result = match cli.command {
        Command::Ingest(args) => ingest::run(args, open, ui),
        Command::Search(args) => search::run(args, open),
        Command::Info(args) => info::run(args, open),
        Command::Delete(args) => admin::delete(args, open),
        Command::Compact(args) => admin::compact(args, open),
        Command::Reindex(args) => admin::reindex(args, open, ui),
        Command::Verify(args) => admin::verify(args, open),
        Command::Backup(args) => admin::backup(args, open),
        Command::Serve(args) => serve::run(args, open),
        Command::Dedupe(args) => dedupe::run(args, open),
        Command::List(args) => inspect::list(args, open),
        Command::Show(args) => inspect::show(args, open),
        Command::Tag(args) => inspect::tag(args, open),
        Command::Export(args) => inspect::export(args, open),
        Command::Train(TrainCommand::Autoencoder(args)) => {
            train::autoencoder(args, open.threads, ui)
        }
        Command::Train(TrainCommand::Sgan(args)) => train::sgan(args, open.threads, ui),
        Command::Train(TrainCommand::Contrastive(args)) => {
            train::contrastive(args, open.threads, ui)
        }
        Command::Bench(BenchCommand::Ingest(args)) => bench::ingest(args, open),
        Command::Bench(BenchCommand::Retrieval(args)) => {
            bench::retrieval(args, index_min_rows, open)
        }
        Command::Bench(BenchCommand::Ann(args)) => bench::ann(args, open),
        // Answered above (the launcher answers them before it execs this binary).
        Command::Completions(_) | Command::Man => Ok(ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            error(&e.to_string());
            e.exit_code()
        }
    }
}
