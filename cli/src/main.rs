//! The `imgvec` command-line tool: bulk ingest, search, info and delete over an imgvec database
//! folder. All the work is done by the `imgvec` crate; this binary parses arguments, reports
//! progress and prints results in the formats DESIGN.md fixes (scripts rely on them).

mod html;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use imgvec::{
    collect_files, Database, Hit, IngestEvent, IngestOptions, OpenOptions, PipelineChoice, Query,
    SearchMode, SearchOptions, Source,
};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "imgvec",
    version,
    about = "An embedded vector database for images"
)]
struct Cli {
    /// Threads for decoding and inference (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Live rows before IVF-PQ, ITQ codes and the binary IVF are trained (default 10000;
    /// `bench retrieval` defaults to 256 so small benchmarks exercise every index).
    #[arg(long, global = true)]
    index_min_rows: Option<usize>,
    /// FAISS factory string for IVF-PQ (default from N and D, e.g. IVF4000,PQ32x8np at 1M×256).
    #[arg(long, global = true)]
    ivf_factory: Option<String>,
    /// Bits per binary code (default min(256, dims); more than dims gives a wider
    /// random-projection code, ITQ needs bits ≤ dims).
    #[arg(long, global = true)]
    bits: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add images (files or folders, walked recursively) to DB, creating it if absent.
    Ingest(IngestArgs),
    /// Find the stored images most like each query image.
    Search(SearchArgs),
    /// Rows, segments, pipeline and bytes on disk.
    Info {
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild DB with another pipeline, re-extracting every row from its stored file (files
    /// that have gone are reported and left out; rows get new ids).
    Reindex {
        db: PathBuf,
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// One JSON line per image, then the report.
        #[arg(long)]
        json: bool,
    },
    /// Seal pending rows and merge all segments into one, dropping deleted rows.
    Compact {
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks, each against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Train a learned extractor in place (CPU, libtorch) and save it as a TorchScript model.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Delete rows by id or by path.
    Delete {
        db: PathBuf,
        #[arg(long = "id")]
        ids: Vec<u64>,
        #[arg(long = "path")]
        paths: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TrainCommand {
    /// Convolutional autoencoder; its encoder is saved as an extractor for
    /// `imgvec ingest DB PATH --model OUT --model-size SIZE`.
    Autoencoder {
        /// Training images: files, folders (walked recursively) or imgvec databases.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Square input size (a multiple of 4).
        #[arg(long, default_value_t = 28)]
        size: u32,
        #[arg(long, default_value_t = 32)]
        code_dim: i64,
        #[arg(long, default_value_t = 20)]
        epochs: usize,
        #[arg(long, default_value_t = 64)]
        batch_size: i64,
        #[arg(long, default_value_t = 2e-3)]
        learning_rate: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Augmentation: random rotation up to ± this many degrees.
        #[arg(long, default_value_t = 0.0)]
        rotate: f64,
        /// Augmentation: random shift up to ± this fraction of the side.
        #[arg(long, default_value_t = 0.0)]
        shift: f64,
        #[arg(long)]
        json: bool,
    },
    /// Semi-supervised GAN: a DCGAN generator against a K-class discriminator trained on all
    /// images with labels for the few listed in LABELS; the discriminator's feature layer is
    /// saved as an extractor. `--supervised` trains the same network on the labels alone.
    Sgan {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// JSON lines `{"path": ..., "label": ...}`, paths absolute or relative to the file.
        #[arg(long)]
        labels: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 28)]
        size: u32,
        #[arg(long, default_value_t = 50)]
        epochs: usize,
        #[arg(long, default_value_t = 100)]
        batch_size: i64,
        #[arg(long, default_value_t = 3e-4)]
        learning_rate: f64,
        #[arg(long, default_value_t = 128)]
        feature_dim: i64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Augmentation: random rotation up to ± this many degrees (0 turns it off).
        #[arg(long, default_value_t = 12.0)]
        rotate: f64,
        /// Augmentation: random shift up to ± this fraction of the side.
        #[arg(long, default_value_t = 0.08)]
        shift: f64,
        /// Baseline: the same network trained on the labelled images only.
        #[arg(long)]
        supervised: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ingest images/s end to end versus the bare model forward at the same batch size and
    /// thread count (ingests into a temporary database).
    Ingest {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// TorchScript extractor (default: the default model).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 224)]
        model_size: u32,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        #[arg(long)]
        json: bool,
    },
    /// Quality (recall@1/10, mAP@10 per case) and per-query latency on a benchmark folder
    /// (db/, queries/, db.jsonl, queries.jsonl), ingested into a temporary database.
    Retrieval {
        bench: PathBuf,
        /// Modes to measure (repeatable; default: all).
        #[arg(long = "mode")]
        modes: Vec<String>,
        /// TorchScript extractor to measure instead of the default pipeline.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 224, requires = "model")]
        model_size: u32,
        /// Named pipeline to measure (fast, balanced, robust; default fast).
        #[arg(long, conflicts_with = "model")]
        pipeline: Option<String>,
        /// Approximate modes report the index's own order (no exact re-rank).
        #[arg(long)]
        no_rerank: bool,
        #[command(flatten)]
        query: QueryArgs,
        #[arg(long)]
        json: bool,
    },
    /// Every search mode on DESIGN.md's synthetic Gaussian mixture: recall against exact,
    /// queries/s, latency, build time and bytes per vector, with bare FAISS on the same data.
    Ann {
        #[arg(long, default_value_t = 100_000)]
        n: usize,
        #[arg(long, default_value_t = 256)]
        dim: usize,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(short, default_value_t = 10)]
        k: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Lists probed by ivfpq and hamming-ivf (default: the index's).
        #[arg(long)]
        nprobe: Option<usize>,
        /// Candidates re-ranked per query (default per mode).
        #[arg(long)]
        rerank_depth: Option<usize>,
        /// Extra IVF-PQ rows, NPROBE:DEPTH pairs (comma-separated), to chart recall vs speed.
        #[arg(long, value_delimiter = ',', value_parser = parse_pair)]
        sweep: Vec<(usize, usize)>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_pair(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("expected NPROBE:DEPTH, got `{s}`"))?;
    Ok((
        a.parse().map_err(|_| format!("bad nprobe `{a}`"))?,
        b.parse().map_err(|_| format!("bad depth `{b}`"))?,
    ))
}

#[derive(Args)]
struct IngestArgs {
    db: PathBuf,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// One JSON line per image once it is durable, then a summary line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Attach KEY=VALUE to every new row (repeatable).
    #[arg(long = "attr", value_parser = parse_attr)]
    attrs: Vec<(String, String)>,
    /// Images per model forward.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Most images per commit; each commit is one synced write that acknowledges its images
    /// (a commit also happens at least once a second).
    #[arg(long, default_value_t = 512)]
    commit_rows: usize,
}

/// The pipeline a database gets (ingest into a new one, reindex).
#[derive(Args)]
struct PipelineArgs {
    /// Named pipeline: fast, balanced, robust.
    #[arg(long, conflicts_with = "model")]
    pipeline: Option<String>,
    /// Any TorchScript extractor (float RGB NCHW in [0,1] -> [N,D] or [N,C,H,W]).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Square input size for --model.
    #[arg(long, default_value_t = 224, requires = "model")]
    model_size: u32,
    /// Pooling of --model's feature-map outputs: gap, gem[:P], rmac[:LEVELS].
    #[arg(long, default_value = "gap", requires = "model")]
    pooling: imgvec::Pooling,
}

impl PipelineArgs {
    fn choice(self) -> PipelineChoice {
        match (self.pipeline, self.model) {
            (Some(name), _) => PipelineChoice::Named(name),
            (None, Some(path)) => PipelineChoice::Model {
                path,
                size: self.model_size,
                pooling: self.pooling,
            },
            (None, None) => PipelineChoice::Default,
        }
    }
}

#[derive(Args)]
struct SearchArgs {
    db: PathBuf,
    images: Vec<PathBuf>,
    /// Search with a stored image ("more like this"); repeatable.
    #[arg(long = "id")]
    ids: Vec<u64>,
    #[arg(short, default_value_t = 10)]
    k: usize,
    #[arg(long, default_value = "exact")]
    mode: String,
    /// Show raw index results without exact re-ranking (ivfpq, hamming, hamming-ivf).
    #[arg(long)]
    no_rerank: bool,
    /// Inverted lists probed (ivfpq, hamming-ivf; default: the index's).
    #[arg(long)]
    nprobe: Option<usize>,
    /// Candidates fetched from the index and re-ranked exactly (default: 400 ivfpq, 1000
    /// hamming, or more for large k).
    #[arg(long)]
    rerank_depth: Option<usize>,
    #[command(flatten)]
    query: QueryArgs,
    #[arg(long)]
    json: bool,
    /// Write a self-contained HTML contact sheet of the results.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Only results whose path starts with this prefix.
    #[arg(long)]
    path_prefix: Option<String>,
    /// Only results with this attribute (repeatable).
    #[arg(long = "attr", value_parser = parse_attr)]
    attrs: Vec<(String, String)>,
    /// Only results with at least this score.
    #[arg(long)]
    threshold: Option<f32>,
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

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

fn main() -> ExitCode {
    passive_openmp();
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
    let retrieval_min_rows = cli.index_min_rows.unwrap_or(256);
    if let Some(n) = cli.index_min_rows {
        open.index.min_train_rows = n;
    }
    open.index.ivf_factory = cli.ivf_factory;
    open.index.bits = cli.bits;
    let result = match cli.command {
        Command::Ingest(args) => ingest(args, open),
        Command::Search(args) => search(args, open),
        Command::Info { db, json } => info(db, json, open),
        Command::Delete { db, ids, paths } => delete(db, ids, paths, open),
        Command::Compact { db, json } => compact(db, json, open),
        Command::Reindex { db, pipeline, json } => reindex(db, pipeline.choice(), json, open),
        Command::Train(TrainCommand::Autoencoder {
            paths,
            out,
            size,
            code_dim,
            epochs,
            batch_size,
            learning_rate,
            seed,
            rotate,
            shift,
            json,
        }) => {
            let opts = imgvec::learned::AutoencoderOptions {
                size,
                code_dim,
                epochs,
                batch_size,
                learning_rate,
                seed,
                augment: imgvec::learned::Augment {
                    rotate_deg: rotate,
                    shift,
                },
            };
            train_autoencoder(paths, out, opts, json, open.threads)
        }
        Command::Train(TrainCommand::Sgan {
            paths,
            labels,
            out,
            size,
            epochs,
            batch_size,
            learning_rate,
            feature_dim,
            seed,
            rotate,
            shift,
            supervised,
            json,
        }) => {
            let opts = imgvec::learned::SganOptions {
                size,
                epochs,
                batch_size,
                learning_rate,
                seed,
                augment: imgvec::learned::Augment {
                    rotate_deg: rotate,
                    shift,
                },
                feature_dim,
                supervised_only: supervised,
            };
            train_sgan(paths, labels, out, opts, json, open.threads)
        }
        Command::Bench(BenchCommand::Ingest {
            paths,
            model,
            model_size,
            batch_size,
            json,
        }) => bench_ingest(paths, model, model_size, batch_size, json, open),
        Command::Bench(BenchCommand::Retrieval {
            bench,
            modes,
            model,
            model_size,
            pipeline,
            no_rerank,
            query,
            json,
        }) => {
            open.index.min_train_rows = retrieval_min_rows;
            if let Some(path) = model {
                open.pipeline = PipelineChoice::Model {
                    path,
                    size: model_size,
                    pooling: imgvec::Pooling::Gap,
                };
            }
            if let Some(name) = pipeline {
                open.pipeline = PipelineChoice::Named(name);
            }
            let mut base = SearchOptions {
                rerank: !no_rerank,
                ..SearchOptions::default()
            };
            match query.apply(&mut base) {
                Ok(()) => bench_retrieval(bench, modes, &base, json, open),
                Err(e) => Err(e),
            }
        }
        Command::Bench(BenchCommand::Ann {
            n,
            dim,
            queries,
            k,
            seed,
            nprobe,
            rerank_depth,
            sweep,
            json,
        }) => {
            let opts = imgvec::bench::AnnBenchOptions {
                n,
                dim,
                queries,
                k,
                threads: open.threads,
                seed,
                index: open.index.clone(),
                nprobe,
                depth: rerank_depth,
                sweep,
            };
            bench_ann(opts, json)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<ExitCode, imgvec::Error>;

/// A line above the progress bar, or on stderr when the bar is hidden (a hidden indicatif bar
/// drops its `println`s).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn print_json(value: &impl serde::Serialize) {
    let line = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn ingest(args: IngestArgs, mut open: OpenOptions) -> CliResult {
    open.pipeline = args.pipeline.choice();
    let db = Database::open(&args.db, open)?;
    let files = collect_files(&args.paths);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                // Second Ctrl-C: leave now. Everything already reported is durable.
                std::process::exit(130);
            }
            eprintln!("stopping: finishing the images in flight (Ctrl-C again to quit now)");
        });
    }
    let opts = IngestOptions {
        attributes: args.attrs.into_iter().collect(),
        batch_size: args.batch_size,
        commit_rows: args.commit_rows,
        stop: stop.clone(),
        ..IngestOptions::default()
    };
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(files.images.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let json = args.json;
    let report = |ev: &IngestEvent| {
        bar.inc(1);
        if json {
            print_json(ev);
        } else if let Some(err) = &ev.error {
            say(&bar, format!("error: {}: {err}", ev.path));
        }
    };
    for (path, reason) in &files.errors {
        report(&IngestEvent::error(
            path.display().to_string(),
            reason.clone(),
        ));
    }
    let sources = files.images.into_iter().map(Source::File).collect();
    let mut summary = db.ingest(sources, &opts, &report)?;
    bar.finish_and_clear();
    if !summary.interrupted {
        // Train / extend / save the approximate indexes now (closing would do it silently).
        let started = std::time::Instant::now();
        if let Err(e) = db.refresh_indexes() {
            eprintln!("warning: {}: indexes not updated: {e}", args.db.display());
        } else if !json && started.elapsed().as_secs_f64() > 1.0 {
            eprintln!(
                "indexes updated in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    summary.errors += files.errors.len() as u64;
    summary.skipped = files.skipped.len() as u64;
    if json {
        print_json(&serde_json::json!({ "summary": summary }));
    } else {
        println!(
            "stored {}  unchanged {}  replaced {}  skipped {}  errors {}  duplicates {}  \
             ({:.1} images/s, {:.1} s){}",
            summary.stored,
            summary.unchanged,
            summary.replaced,
            summary.skipped,
            summary.errors,
            summary.duplicates,
            summary.images_per_sec,
            summary.seconds,
            if summary.interrupted {
                "  [interrupted]"
            } else {
                ""
            }
        );
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else if summary.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Query-side options shared by `search` and `bench retrieval`; each defaults to the pipeline's.
#[derive(Debug, Args)]
struct QueryArgs {
    /// Query augmentation: none, or rot4 (also search the query turned by 90°, 180°, 270°).
    #[arg(long)]
    augment: Option<String>,
    /// Average query expansion over the top N results (0 = off).
    #[arg(long)]
    qe: Option<usize>,
    /// Spatial verification (pipelines with local features, e.g. robust): verify the top N
    /// global results, the N images found by local-descriptor voting and the N found by
    /// dense-window search (0 = off).
    #[arg(long)]
    verify: Option<usize>,
    /// Images found by dense-window search that are also aligned (0 = no dense alignment).
    #[arg(long)]
    dense: Option<usize>,
    /// Dense alignment (normalised cross-correlation, -1..1) above which a result gains rank.
    #[arg(long, allow_hyphen_values = true)]
    alignment_floor: Option<f32>,
    /// Inliers a verified result needs.
    #[arg(long)]
    min_inliers: Option<usize>,
    /// Inlier tolerance in pixels (of the stored image, at most 640 px a side).
    #[arg(long)]
    inlier_px: Option<f32>,
}

impl QueryArgs {
    fn apply(&self, opts: &mut SearchOptions) -> Result<(), imgvec::Error> {
        opts.augment = self.augment.as_deref().map(str::parse).transpose()?;
        opts.qe = self.qe;
        opts.verify = self.verify;
        opts.dense = self.dense;
        opts.min_inliers = self.min_inliers;
        if let Some(a) = self.alignment_floor {
            if !(-1.0..=1.0).contains(&a) {
                return Err(imgvec::Error::Invalid(format!(
                    "--alignment-floor {a}: give a correlation between -1 and 1"
                )));
            }
            opts.alignment_floor = Some(a);
        }
        if let Some(px) = self.inlier_px {
            if !(px > 0.0 && px.is_finite()) {
                return Err(imgvec::Error::Invalid(format!(
                    "--inlier-px {px}: give a positive number of pixels"
                )));
            }
            opts.inlier_px = Some(px);
        }
        Ok(())
    }
}

fn search(args: SearchArgs, mut open: OpenOptions) -> CliResult {
    if args.images.is_empty() && args.ids.is_empty() {
        return Err(imgvec::Error::Invalid(
            "give at least one query image or --id N".into(),
        ));
    }
    let mode: SearchMode = args.mode.parse()?;
    open.read_only = true;
    let db = Database::open(&args.db, open)?;
    let mut opts = SearchOptions {
        k: args.k,
        mode,
        threshold: args.threshold,
        path_prefix: args.path_prefix,
        attributes: args.attrs.into_iter().collect::<BTreeMap<_, _>>(),
        nprobe: args.nprobe,
        rerank: !args.no_rerank,
        rerank_depth: args.rerank_depth,
        ..SearchOptions::default()
    };
    args.query.apply(&mut opts)?;
    let mut queries: Vec<Query> = args.images.iter().cloned().map(Query::Path).collect();
    queries.extend(args.ids.iter().map(|&id| Query::Id(id)));
    let labels: Vec<String> = queries.iter().map(query_label).collect();
    let results = db.search_batch(queries.clone(), &opts);
    let mut failed = false;
    let mut sheet = Vec::new();
    for (label, result) in labels.iter().zip(&results) {
        match result {
            Ok(hits) => {
                if args.json {
                    print_json(&serde_json::json!({ "query": label, "results": hits }));
                } else {
                    print_hits(label, hits);
                }
            }
            Err(e) => {
                failed = true;
                if args.json {
                    print_json(&serde_json::json!({ "query": label, "error": e.to_string() }));
                } else {
                    eprintln!("error: {e}");
                }
            }
        }
    }
    if let Some(path) = &args.html {
        for ((label, result), query) in labels.iter().zip(&results).zip(queries) {
            sheet.push(html::QueryRow {
                label: label.clone(),
                query,
                hits: result.as_ref().cloned().map_err(|e| e.to_string()),
            });
        }
        html::write(&db, path, &sheet)?;
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

fn bench_ingest(
    paths: Vec<PathBuf>,
    model: Option<PathBuf>,
    size: u32,
    batch_size: usize,
    json: bool,
    open: OpenOptions,
) -> CliResult {
    let model = match model {
        Some(m) => m,
        None => imgvec::default_model_path()?,
    };
    let r = in_scratch("bench", |scratch| {
        imgvec::bench::ingest(&model, size, &paths, scratch, batch_size, open.threads)
    })?;
    if json {
        print_json(&r);
    } else {
        println!(
            "{} images, batch {}, {} threads
  bare forward  {:>7.1} images/s
  ingest        {:>7.1} images/s  ({:.1} s)
  ratio         {:>7.2}",
            r.images,
            r.batch_size,
            r.threads,
            r.forward_images_per_sec,
            r.ingest_images_per_sec,
            r.ingest_seconds,
            r.ratio
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn reindex(db: PathBuf, choice: PipelineChoice, json: bool, open: OpenOptions) -> CliResult {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    let on_event = |e: &IngestEvent| {
        if json {
            print_json(e);
        } else {
            bar.tick();
            if let Some(reason) = &e.error {
                say(&bar, format!("error: {}: {reason}", e.path));
            }
        }
    };
    let report = imgvec::reindex(&db, choice, open, &on_event)?;
    bar.finish_and_clear();
    if json {
        print_json(&report);
    } else {
        for path in &report.gone {
            eprintln!("gone: {path}");
        }
        println!(
            "reindexed {} with pipeline {}: {} of {} rows stored, {} gone, {} errors, {:.1} s",
            db.display(),
            report.pipeline,
            report.stored,
            report.rows_before,
            report.gone.len(),
            report.errors.len(),
            report.seconds
        );
    }
    Ok(if report.gone.is_empty() && report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn bench_retrieval(
    bench: PathBuf,
    modes: Vec<String>,
    base: &SearchOptions,
    json: bool,
    open: OpenOptions,
) -> CliResult {
    let modes: Vec<SearchMode> = if modes.is_empty() {
        SearchMode::ALL.to_vec()
    } else {
        modes.iter().map(|m| m.parse()).collect::<Result<_, _>>()?
    };
    let r = in_scratch("retrieval", |scratch| {
        imgvec::bench::retrieval(&bench, scratch, open, &modes, base)
    })?;
    if json {
        print_json(&r);
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

/// Loads the training images, reports the skipped ones, runs `train` with a progress bar and a
/// line per epoch, and prints the summary. Exit status 1 when some images were skipped.
/// Training inputs: files and folders as given, and for an imgvec database folder the stored
/// files of its live rows.
fn training_inputs(paths: &[PathBuf], threads: usize) -> Result<Vec<PathBuf>, imgvec::Error> {
    let mut out = Vec::new();
    for p in paths {
        if p.join("meta").is_dir() && p.join("segments").is_dir() {
            let open = OpenOptions {
                read_only: true,
                threads,
                ..OpenOptions::default()
            };
            let db = Database::open(p, open)?;
            out.extend(db.records()?.into_iter().map(|r| PathBuf::from(r.path)));
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn run_training(
    paths: &[PathBuf],
    size: u32,
    epochs: usize,
    json: bool,
    threads: usize,
    seed: u64,
    train: impl FnOnce(
        &imgvec::learned::TrainingSet,
        &mut dyn FnMut(&imgvec::learned::EpochReport),
    ) -> Result<String, imgvec::Error>,
) -> CliResult {
    use imgvec::learned;
    imgvec::set_torch_threads(threads);
    learned::seed(seed);
    let set = learned::load_images(&training_inputs(paths, threads)?, size)?;
    for (path, reason) in &set.errors {
        if json {
            print_json(&serde_json::json!({ "path": path, "error": reason }));
        } else {
            eprintln!("skipped: {}: {reason}", path.display());
        }
    }
    let bar = if std::io::stderr().is_terminal() && !json {
        ProgressBar::new(epochs as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} epoch {pos}/{len} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let saved = train(&set, &mut |r| {
        bar.inc(1);
        bar.set_message(format!("loss {:.5}", r.loss));
        if json {
            print_json(r);
        } else {
            say(
                &bar,
                format!(
                    "epoch {:>3}/{}  loss {:.5}  ({:.1} s)",
                    r.epoch, r.epochs, r.loss, r.seconds
                ),
            );
        }
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if json {
        print_json(&serde_json::json!({
            "out": saved, "images": set.files.len(), "skipped": set.errors.len(),
            "size": size, "train_seconds": seconds
        }));
    } else {
        println!(
            "trained on {} images ({} skipped) in {:.1} s; saved {saved}\n\
             use it: imgvec ingest DB PATH --model {saved} --model-size {size}",
            set.files.len(),
            set.errors.len(),
            seconds,
        );
    }
    Ok(if set.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn train_autoencoder(
    paths: Vec<PathBuf>,
    out: PathBuf,
    opts: imgvec::learned::AutoencoderOptions,
    json: bool,
    threads: usize,
) -> CliResult {
    let (size, epochs, seed) = (opts.size, opts.epochs, opts.seed);
    run_training(&paths, size, epochs, json, threads, seed, |set, report| {
        let mut ae = imgvec::learned::Autoencoder::new(opts.size, opts.code_dim)?;
        ae.train(&set.images, &opts, report)?;
        ae.save_encoder(&out)?;
        Ok(out.display().to_string())
    })
}

fn train_sgan(
    paths: Vec<PathBuf>,
    labels: PathBuf,
    out: PathBuf,
    opts: imgvec::learned::SganOptions,
    json: bool,
    threads: usize,
) -> CliResult {
    let (size, epochs, seed) = (opts.size, opts.epochs, opts.seed);
    run_training(&paths, size, epochs, json, threads, seed, |set, report| {
        let labels = imgvec::learned::read_labels(&labels, &set.files)?;
        let mut d = imgvec::learned::Discriminator::new(
            opts.size,
            opts.feature_dim,
            labels.names.len() as i64,
        )?;
        d.train(&set.images, &labels, &opts, report)?;
        d.save_extractor(&out)?;
        Ok(out.display().to_string())
    })
}

fn bench_ann(opts: imgvec::bench::AnnBenchOptions, json: bool) -> CliResult {
    let r = in_scratch("ann", |scratch| imgvec::bench::ann(&opts, scratch))?;
    if json {
        print_json(&r);
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

/// How a query is named in `search` output: the path as given, or `id:N`.
fn query_label(query: &Query) -> String {
    match query {
        Query::Path(p) => p.display().to_string(),
        Query::Id(id) => format!("id:{id}"),
        Query::Bytes(_) => "<bytes>".into(),
    }
}

fn print_hits(label: &str, hits: &[Hit]) {
    println!("{label}");
    if hits.is_empty() {
        println!("  (no results)");
    }
    for (rank, hit) in hits.iter().enumerate() {
        println!(
            "  {:>2}. {:.4}  id {:<6} {}",
            rank + 1,
            hit.score,
            hit.id,
            hit.path
        );
    }
}

fn info(db: PathBuf, json: bool, mut open: OpenOptions) -> CliResult {
    open.read_only = true;
    let db = Database::open(&db, open)?;
    let info = db.info()?;
    if json {
        print_json(&info);
    } else {
        println!("database      {}", info.path);
        match &info.pipeline {
            Some(p) => println!(
                "pipeline      {} (model {}, {}px, {} pooling, {} dims, fingerprint {})",
                p.name,
                p.model_source,
                p.input_size,
                if p.fusion.is_some() {
                    "per-block".to_string()
                } else {
                    format!("{:?}", p.pooling)
                },
                p.dims,
                &p.model_fingerprint[..16.min(p.model_fingerprint.len())]
            ),
            None => println!("pipeline      (none yet)"),
        }
        if let Some(f) = info.pipeline.as_ref().and_then(|p| p.fusion.as_ref()) {
            let blocks: Vec<String> = f
                .layout()
                .iter()
                .map(|(name, start, end, w)| format!("{name} [{start}..{end}) ×{w}"))
                .collect();
            println!(
                "blocks        {} (scales {:?})",
                blocks.join(", "),
                f.scales
            );
        }
        if let Some(spec) = info.pipeline.as_ref().and_then(|p| p.whitening) {
            match &info.whitening {
                Some(w) => {
                    let vlad = w.vlad.as_ref().map_or(String::new(), |v| {
                        format!(
                            " (incl. VLAD: {} words → {} dims, weight {})",
                            v.words, v.dims, v.weight
                        )
                    });
                    println!(
                        "whitening     PCA-whitening {} → {} dims{vlad}, generation {}, learned \
                         on {} rows",
                        w.dims_in, w.dims_out, w.generation, w.learned_on
                    )
                }
                None => println!(
                    "whitening     not learned yet (needs {} live rows; raw fused vectors \
                     compared meanwhile)",
                    spec.min_rows.max(spec.dims + 1)
                ),
            }
        }
        if let Some(l) = &info.local {
            println!(
                "local         SIFT/RootSIFT on {} images: {} keypoints, {} bytes ({:.0} per image)",
                l.images,
                l.keypoints,
                l.bytes,
                l.bytes as f64 / l.images.max(1) as f64
            );
        }
        let s = &info.stats;
        println!(
            "rows          {} live, {} deleted, {} pending (not yet in a segment)",
            s.live_rows, s.deleted_rows, s.pending_rows
        );
        println!(
            "segments      {} ({} rows, {} bytes)",
            s.segments, s.segment_rows, s.segment_bytes
        );
        println!("bytes on disk {}", s.bytes_on_disk);
        let ix = &info.indexes;
        match &ix.ivfpq {
            Some(i) => println!(
                "ivfpq         {} rows, {} (nprobe {} by default), {:.1} bytes/vector",
                i.rows, i.factory, i.default_nprobe, i.bytes_per_vector
            ),
            None => println!(
                "ivfpq         not trained (below {} live rows: exact search answers)",
                ix.min_train_rows
            ),
        }
        match &ix.hamming {
            Some(h) => println!(
                "hamming       {} rows, {}-bit {:?} codes, {} kernel, {} bytes/vector{}",
                h.rows,
                h.bits,
                h.encoder,
                h.kernel,
                h.bytes_per_vector,
                h.ivf_nlist
                    .map(|n| format!(", binary IVF{n}"))
                    .unwrap_or_default()
            ),
            None => println!("hamming       not built yet"),
        }
        println!("index bytes   {}", ix.bytes_on_disk);
    }
    Ok(ExitCode::SUCCESS)
}

fn compact(db: PathBuf, json: bool, mut open: OpenOptions) -> CliResult {
    open.background_compaction = false;
    let db = Database::open(&db, open)?;
    let r = db.compact()?;
    if json {
        print_json(&r);
    } else {
        println!(
            "merged {} segment(s): kept {} rows, dropped {} deleted rows, {} -> {} bytes",
            r.segments_merged, r.rows_kept, r.rows_dropped, r.bytes_before, r.bytes_after
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn delete(db: PathBuf, ids: Vec<u64>, paths: Vec<PathBuf>, open: OpenOptions) -> CliResult {
    if ids.is_empty() && paths.is_empty() {
        return Err(imgvec::Error::Invalid("give --id N or --path P".into()));
    }
    let db = Database::open(&db, open)?;
    let mut wanted = ids;
    let mut missing = Vec::new();
    for p in &paths {
        let key = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        match db.get_by_path(&key.display().to_string())? {
            Some(rec) => wanted.push(rec.id),
            None => missing.push(p.display().to_string()),
        }
    }
    let deleted = db.delete(&wanted)?;
    missing.extend(
        wanted
            .iter()
            .filter(|id| !deleted.contains(id))
            .map(|id| format!("id {id}")),
    );
    println!("deleted {} row(s)", deleted.len());
    for m in &missing {
        eprintln!("error: not found: {m}");
    }
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
