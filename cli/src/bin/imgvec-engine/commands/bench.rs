//! `imgvec bench ingest | retrieval | ann`: benchmarks, each against a baseline measured in the
//! same run, in a temporary folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use imgvec::{OpenOptions, SearchMode, SearchOptions};

use crate::output::{print_versioned, to_json, CliError, CliResult};
use imgvec_cli::args::{AnnArgs, BenchIngestArgs, PipelineArgs, RetrievalArgs};

/// Runs a benchmark in a temporary folder (`imgvec-NAME-PID` under the system temp dir),
/// removed afterwards whatever the outcome.
fn in_scratch<T>(
    name: &str,
    f: impl FnOnce(&Path) -> Result<T, imgvec::Error>,
) -> Result<T, imgvec::Error> {
    let scratch = std::env::temp_dir().join(format!("imgvec-{name}-{}", std::process::id()));
    let result = f(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

pub(crate) fn ingest(args: BenchIngestArgs, open: OpenOptions) -> CliResult {
    let target = match (args.pipeline, args.model) {
        (Some(preset), _) => imgvec_benches::IngestTarget::Preset(preset),
        (None, model) => {
            let path = match model {
                Some(m) => m,
                None => imgvec::default_model_path().map_err(imgvec::Error::from)?,
            };
            let size = imgvec::model_input_size(&path, args.model_size)?;
            imgvec_benches::IngestTarget::Model { path, size }
        }
    };
    let r = in_scratch("bench", |scratch| {
        let paths = &args.paths;
        let (batch, threads) = (args.batch_size, open.threads);
        imgvec_benches::ingest(&target, paths, args.follow_links, scratch, batch, threads)
    })?;
    if let Some(summary) = imgvec_benches::left_out_summary(&r.left_out) {
        eprintln!("warning: {summary}");
    }
    if args.json {
        print_versioned(to_json(&r));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} images, pipeline {}, batch {}, {} threads",
        r.images, r.pipeline, r.batch_size, r.threads
    );
    if let Some(forward) = r.forward_images_per_sec {
        println!("  bare forward  {forward:>7.1} images/s");
    }
    println!(
        "  ingest        {:>7.1} images/s  ({:.1} s)",
        r.ingest_images_per_sec, r.ingest_seconds
    );
    if let Some(ratio) = r.ratio {
        println!("  ratio         {ratio:>7.2}");
    }
    println!("  stage            seconds (all threads)  share");
    for s in &r.stages {
        println!(
            "  {:<16} {:>9.2} {:>17.1}%",
            s.stage,
            s.seconds,
            100.0 * s.share
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `bench retrieval`; `index_min_rows` is the global `--index-min-rows`, which defaults to 256
/// here (instead of the database's 10000) so that small benchmarks exercise every index.
pub(crate) fn retrieval(
    args: RetrievalArgs,
    index_min_rows: Option<usize>,
    mut open: OpenOptions,
) -> CliResult {
    // An existing database keeps the index threshold it was built with.
    if args.db.is_none() || index_min_rows.is_some() {
        open.index.min_train_rows = index_min_rows.unwrap_or(256);
    }
    open.pipeline = super::pipeline_choice(PipelineArgs {
        pipeline: args.pipeline,
        model: args.model,
        model_size: args.model_size,
        pooling: imgvec::Pooling::Gap,
    })?;
    let mut base = SearchOptions {
        rerank: !args.no_rerank,
        ..SearchOptions::default()
    };
    super::apply_query(&args.query, &mut base).map_err(CliError::usage)?;
    run_retrieval(args.bench, args.db, args.modes, &base, args.json, open)
}

fn run_retrieval(
    bench: PathBuf,
    db: Option<PathBuf>,
    modes: Vec<SearchMode>,
    base: &SearchOptions,
    json: bool,
    open: OpenOptions,
) -> CliResult {
    let modes: Vec<SearchMode> = if modes.is_empty() {
        SearchMode::ALL.to_vec()
    } else {
        modes
    };
    let r = match db {
        Some(path) => {
            let target = imgvec_benches::BenchDb::Existing { path: &path, open };
            imgvec_benches::retrieval(&bench, target, &modes, base)?
        }
        None => in_scratch("retrieval", |scratch| {
            let target = imgvec_benches::BenchDb::Fresh { scratch, open };
            imgvec_benches::retrieval(&bench, target, &modes, base)
        })?,
    };
    if json {
        print_versioned(to_json(&r));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} db images, ingest {:.1} images/s, indexes built in {:.2} s",
        r.db_images, r.ingest_images_per_sec, r.index_build_seconds
    );
    println!(
        "{:<12} {:>7} {:>7} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>10}",
        "mode",
        "r@1",
        "r@10",
        "mAP@10",
        "=exact@1",
        "=exact@10",
        "p50 ms",
        "p99 ms",
        "q/s",
        "B/vector"
    );
    for m in &r.modes {
        println!(
            "{:<12} {:>7.3} {:>7.3} {:>7.3} {:>9.3} {:>9.3} {:>8.1} {:>8.1} {:>8.1} {:>10.1}",
            m.mode,
            m.overall.recall_at_1,
            m.overall.recall_at_10,
            m.overall.map_at_10,
            m.agreement_at_1,
            m.agreement_at_10,
            m.latency_p50_ms,
            m.latency_p99_ms,
            m.queries_per_sec,
            m.bytes_per_vector
        );
    }
    for m in &r.modes {
        println!("\nmode {}", m.mode);
        println!(
            "{:<16} {:>5} {:>7} {:>7} {:>7}",
            "case", "n", "r@1", "r@10", "mAP@10"
        );
        for c in m.cases.iter().chain(std::iter::once(&m.overall)) {
            println!(
                "{:<16} {:>5} {:>7.3} {:>7.3} {:>7.3}",
                c.case, c.queries, c.recall_at_1, c.recall_at_10, c.map_at_10
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn ann(args: AnnArgs, open: OpenOptions) -> CliResult {
    let opts = imgvec_benches::AnnBenchOptions {
        n: args.n,
        dim: args.dim,
        queries: args.queries,
        k: args.k,
        threads: open.threads,
        seed: args.seed,
        index: open.index,
        nprobe: args.nprobe,
        depth: args.rerank_depth,
        sweep: args.sweep,
    };
    run_ann(opts, args.json)
}

fn run_ann(opts: imgvec_benches::AnnBenchOptions, json: bool) -> CliResult {
    let r = in_scratch("ann", |scratch| imgvec_benches::ann(&opts, scratch))?;
    if json {
        print_versioned(to_json(&r));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} vectors × {} dims, {} queries, k {}, {} threads for the all-cores column; Hamming kernel {}",
        r.n, r.dim, r.queries, r.k, r.threads, r.hamming_kernel
    );
    println!(
        "{:<22} {:>6} {:>6} {:>10} {:>10} {:>8} {:>8} {:>9} {:>8} {:>8}  settings",
        "mode",
        "r@1",
        "r@10",
        "q/s 1 thr",
        "q/s all",
        "p50 ms",
        "p99 ms",
        "build s",
        "B/v mem",
        "B/v disk"
    );
    for m in &r.modes {
        println!(
            "{:<22} {:>6.3} {:>6.3} {:>10.1} {:>10.1} {:>8.3} {:>8.3} {:>9.1} {:>8.1} {:>8.1}  {}",
            m.mode,
            m.recall_at_1,
            m.recall_at_10,
            m.qps_one_thread,
            m.qps_all_threads,
            m.p50_ms,
            m.p99_ms,
            m.build_seconds,
            m.bytes_per_vector_memory,
            m.bytes_per_vector_disk,
            m.params
        );
    }
    println!("\nbare FAISS on the same data, one thread:");
    for b in &r.faiss {
        println!(
            "  {:<52} {:>9.3} ms/query  imgvec speed-up {:>6.2}×  ({})",
            b.name, b.ms_per_query, b.speedup, b.note
        );
    }
    Ok(ExitCode::SUCCESS)
}
