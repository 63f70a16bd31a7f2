//! The command line: every clap type of the `imgvec` tool. Doc comments are the help texts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use imgvec::{Augment, PipelineChoice, Preset, SearchMode, SearchOptions, VerifyOverrides};

#[derive(Parser)]
#[command(
    name = "imgvec",
    version,
    about = "An embedded vector database for images"
)]
pub(crate) struct Cli {
    /// Threads for decoding and inference (default: all cores).
    #[arg(long, global = true)]
    pub(crate) threads: Option<usize>,
    /// Live rows before IVF-PQ, ITQ codes and the binary IVF are trained (default 10000;
    /// `bench retrieval` defaults to 256 so small benchmarks exercise every index).
    #[arg(long, global = true)]
    pub(crate) index_min_rows: Option<usize>,
    /// FAISS factory string for IVF-PQ (default from N and D, e.g. IVF4000,PQ32x8np at 1M×256).
    #[arg(long, global = true)]
    pub(crate) ivf_factory: Option<String>,
    /// Bits per binary code (default min(256, dims); more than dims gives a wider
    /// random-projection code, ITQ needs bits ≤ dims).
    #[arg(long, global = true)]
    pub(crate) bits: Option<usize>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Add images (files or folders, walked recursively) to DB, creating it if absent.
    Ingest(IngestArgs),
    /// Find the stored images most like each query image.
    Search(SearchArgs),
    /// Rows, segments, pipeline and bytes on disk.
    Info(InfoArgs),
    /// Rebuild DB with another pipeline, re-extracting every row from its stored file (rows
    /// inserted from bytes from their thumbnails; rows get new ids). Nothing changes when a
    /// row cannot be carried over, unless --drop-missing.
    Reindex(ReindexArgs),
    /// Seal pending rows and merge all segments into one, dropping deleted rows.
    Compact(CompactArgs),
    /// Benchmarks, each against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Train a learned extractor in place (CPU, libtorch) and save it as a TorchScript model.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Delete rows by id or by path.
    Delete(DeleteArgs),
    /// Check every checksum and cross-reference (segments, records, indexes, thumbnails, model,
    /// derived files); exit status 1 when anything is damaged.
    Verify(VerifyArgs),
    /// Write a consistent copy of DB to DEST (absent or empty) while DB stays in use, then
    /// verify the copy.
    Backup(BackupArgs),
}

// The argument structs of the variants carry no doc comment of their own: the variant's doc
// comment is the subcommand's help.

#[derive(Args)]
pub(crate) struct InfoArgs {
    pub(crate) db: PathBuf,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct ReindexArgs {
    pub(crate) db: PathBuf,
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    /// Leave out rows whose file has gone or no longer decodes (they are listed), instead of
    /// stopping with the database unchanged.
    #[arg(long)]
    pub(crate) drop_missing: bool,
    /// Report what would be carried over and what could not, and change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// One JSON line per image, then the report.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    pub(crate) db: PathBuf,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct BackupArgs {
    pub(crate) db: PathBuf,
    pub(crate) dest: PathBuf,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct CompactArgs {
    pub(crate) db: PathBuf,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct DeleteArgs {
    pub(crate) db: PathBuf,
    #[arg(long = "id")]
    pub(crate) ids: Vec<u64>,
    #[arg(long = "path")]
    pub(crate) paths: Vec<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum TrainCommand {
    /// Convolutional autoencoder; its encoder is saved as an extractor for
    /// `imgvec ingest DB PATH --model OUT --model-size SIZE`.
    Autoencoder(AutoencoderArgs),
    /// Semi-supervised GAN: a DCGAN generator against a K-class discriminator trained on all
    /// images with labels for the few listed in LABELS; the discriminator's feature layer is
    /// saved as an extractor. `--supervised` trains the same network on the labels alone.
    Sgan(SganArgs),
}

#[derive(Args)]
pub(crate) struct AutoencoderArgs {
    /// Training images: files, folders (walked recursively) or imgvec databases.
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Square input size (a multiple of 4).
    #[arg(long, default_value_t = 28)]
    pub(crate) size: u32,
    #[arg(long, default_value_t = 32)]
    pub(crate) code_dim: i64,
    #[arg(long, default_value_t = 20)]
    pub(crate) epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub(crate) batch_size: i64,
    #[arg(long, default_value_t = 2e-3)]
    pub(crate) learning_rate: f64,
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Augmentation: random rotation up to ± this many degrees.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) rotate: f64,
    /// Augmentation: random shift up to ± this fraction of the side.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) shift: f64,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct SganArgs {
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// JSON lines `{"path": ..., "label": ...}`, paths absolute or relative to the file.
    #[arg(long)]
    pub(crate) labels: PathBuf,
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[arg(long, default_value_t = 28)]
    pub(crate) size: u32,
    #[arg(long, default_value_t = 50)]
    pub(crate) epochs: usize,
    #[arg(long, default_value_t = 100)]
    pub(crate) batch_size: i64,
    #[arg(long, default_value_t = 3e-4)]
    pub(crate) learning_rate: f64,
    #[arg(long, default_value_t = 128)]
    pub(crate) feature_dim: i64,
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Augmentation: random rotation up to ± this many degrees (0 turns it off).
    #[arg(long, default_value_t = 12.0)]
    pub(crate) rotate: f64,
    /// Augmentation: random shift up to ± this fraction of the side.
    #[arg(long, default_value_t = 0.08)]
    pub(crate) shift: f64,
    /// Baseline: the same network trained on the labelled images only.
    #[arg(long)]
    pub(crate) supervised: bool,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Ingest images/s end to end versus the bare model forward at the same batch size and
    /// thread count (ingests into a temporary database).
    Ingest(BenchIngestArgs),
    /// Quality (recall@1/10, mAP@10 per case) and per-query latency on a benchmark folder
    /// (db/, queries/, db.jsonl, queries.jsonl), ingested into a temporary database.
    Retrieval(RetrievalArgs),
    /// Every search mode on DESIGN.md's synthetic Gaussian mixture: recall against exact,
    /// queries/s, latency, build time and bytes per vector, with bare FAISS on the same data.
    Ann(AnnArgs),
}

#[derive(Args)]
pub(crate) struct BenchIngestArgs {
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// TorchScript extractor (default: the default model).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    #[arg(long, default_value_t = 224)]
    pub(crate) model_size: u32,
    /// Measure a named pipeline instead of a bare model (no forward baseline then).
    #[arg(long, conflicts_with = "model", value_enum)]
    pub(crate) pipeline: Option<Preset>,
    #[arg(long, default_value_t = 16)]
    pub(crate) batch_size: usize,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct RetrievalArgs {
    pub(crate) bench: PathBuf,
    /// Search this existing database (read-only; it holds the benchmark's db images, e.g. among
    /// distractors) instead of ingesting the benchmark into a temporary one.
    #[arg(long, conflicts_with_all = ["model", "pipeline"])]
    pub(crate) db: Option<PathBuf>,
    /// Modes to measure (repeatable; default: all).
    #[arg(long = "mode", value_enum)]
    pub(crate) modes: Vec<SearchMode>,
    /// TorchScript extractor to measure instead of the default pipeline.
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    #[arg(long, default_value_t = 224, requires = "model")]
    pub(crate) model_size: u32,
    /// Named pipeline to measure (default fast).
    #[arg(long, conflicts_with = "model", value_enum)]
    pub(crate) pipeline: Option<Preset>,
    /// Approximate modes report the index's own order (no exact re-rank).
    #[arg(long)]
    pub(crate) no_rerank: bool,
    #[command(flatten)]
    pub(crate) query: QueryArgs,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct AnnArgs {
    #[arg(long, default_value_t = 100_000)]
    pub(crate) n: usize,
    #[arg(long, default_value_t = 256)]
    pub(crate) dim: usize,
    #[arg(long, default_value_t = 200)]
    pub(crate) queries: usize,
    #[arg(short, default_value_t = 10)]
    pub(crate) k: usize,
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Lists probed by ivfpq and hamming-ivf (default: the index's).
    #[arg(long)]
    pub(crate) nprobe: Option<usize>,
    /// Candidates re-ranked per query (default per mode).
    #[arg(long)]
    pub(crate) rerank_depth: Option<usize>,
    /// Extra IVF-PQ rows, NPROBE:DEPTH pairs (comma-separated), to chart recall vs speed.
    #[arg(long, value_delimiter = ',', value_parser = parse_pair)]
    pub(crate) sweep: Vec<(usize, usize)>,
    #[arg(long)]
    pub(crate) json: bool,
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
pub(crate) struct IngestArgs {
    pub(crate) db: PathBuf,
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// One JSON line per image once it is durable, then a summary line.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
    /// Attach KEY=VALUE to every new row (repeatable).
    #[arg(long = "attr", value_parser = parse_attr)]
    pub(crate) attrs: Vec<(String, String)>,
    /// Images per model forward.
    #[arg(long, default_value_t = 16)]
    pub(crate) batch_size: usize,
    /// Most images per commit; each commit is one synced write that acknowledges its images
    /// (a commit also happens at least once a second).
    #[arg(long, default_value_t = 512)]
    pub(crate) commit_rows: usize,
    /// Follow symbolic links inside the folders walked (by default a walk stays inside the
    /// folders given, and reports the links it leaves).
    #[arg(long)]
    pub(crate) follow_links: bool,
}

/// The pipeline a database gets (ingest into a new one, reindex).
#[derive(Args)]
pub(crate) struct PipelineArgs {
    /// Named pipeline (default fast for a new database).
    #[arg(long, conflicts_with = "model", value_enum)]
    pub(crate) pipeline: Option<Preset>,
    /// Any TorchScript extractor (float RGB NCHW in [0,1] -> [N,D] or [N,C,H,W]).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Square input size for --model.
    #[arg(long, default_value_t = 224, requires = "model")]
    pub(crate) model_size: u32,
    /// Pooling of --model's feature-map outputs: gap, gem[:P], rmac[:LEVELS].
    #[arg(long, default_value = "gap", requires = "model")]
    pub(crate) pooling: imgvec::Pooling,
}

impl PipelineArgs {
    pub(crate) fn choice(self) -> PipelineChoice {
        match (self.pipeline, self.model) {
            (Some(preset), _) => PipelineChoice::Preset(preset),
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
pub(crate) struct SearchArgs {
    pub(crate) db: PathBuf,
    pub(crate) images: Vec<PathBuf>,
    /// Search with a stored image ("more like this"); repeatable.
    #[arg(long = "id")]
    pub(crate) ids: Vec<u64>,
    #[arg(short, default_value_t = 10)]
    pub(crate) k: usize,
    #[arg(long, value_enum, default_value_t = SearchMode::Exact)]
    pub(crate) mode: SearchMode,
    /// Show raw index results without exact re-ranking (ivfpq, hamming, hamming-ivf).
    #[arg(long)]
    pub(crate) no_rerank: bool,
    /// Inverted lists probed (ivfpq, hamming-ivf; default: the index's).
    #[arg(long)]
    pub(crate) nprobe: Option<usize>,
    /// Candidates fetched from the index and re-ranked exactly (default: 400 ivfpq, 1000
    /// hamming, or more for large k).
    #[arg(long)]
    pub(crate) rerank_depth: Option<usize>,
    #[command(flatten)]
    pub(crate) query: QueryArgs,
    #[arg(long)]
    pub(crate) json: bool,
    /// Write a self-contained HTML contact sheet of the results.
    #[arg(long)]
    pub(crate) html: Option<PathBuf>,
    /// Only results whose path starts with this prefix.
    #[arg(long)]
    pub(crate) path_prefix: Option<String>,
    /// Only results with this attribute (repeatable).
    #[arg(long = "attr", value_parser = parse_attr)]
    pub(crate) attrs: Vec<(String, String)>,
    /// Only results with at least this score.
    #[arg(long)]
    pub(crate) threshold: Option<f32>,
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// Query-side options shared by `search` and `bench retrieval`; each defaults to the pipeline's.
#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// Query augmentation: also search the query turned by 90°, 180° and 270° (rot4).
    #[arg(long, value_enum)]
    pub(crate) augment: Option<Augment>,
    /// Average query expansion over the top N results (0 = off).
    #[arg(long)]
    pub(crate) qe: Option<usize>,
    #[command(flatten)]
    pub(crate) verify: VerifyOverrides,
}

impl QueryArgs {
    pub(crate) fn apply(&self, opts: &mut SearchOptions) -> Result<(), imgvec::Error> {
        self.verify.check()?;
        opts.augment = self.augment;
        opts.qe = self.qe;
        opts.verify = self.verify;
        Ok(())
    }
}
