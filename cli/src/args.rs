//! The command line: every clap type of the `imgvec` tool. Doc comments are the help texts.
//! Shared by the `imgvec` launcher (help, version, usage errors, completions and the man page,
//! without loading libtorch) and `imgvec-engine`, which runs the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use imgvec_options::{Augment, Preset, SearchMode, VerifyOverrides};

/// What `--help` says after the options: exit status and environment, for every command.
pub const AFTER_HELP: &str = "\
Exit status: 0 success; 1 a runtime failure, or some items failed (each is reported); 2 a usage \
error (bad flag or value); 130 interrupted by Ctrl-C (run the same command again to resume).

Environment: IMGVEC_DB names the database when the first operand is not one; NO_COLOR turns \
colour off; IMGVEC_LOG sets the log filter (tracing syntax, overrides -q/-v); IMGVEC_MODEL_DIR \
holds the default model.";

#[derive(Parser)]
#[command(
    name = "imgvec",
    version,
    about = "An embedded vector database for images: ingest photos, then ask which stored images \
             look like a query",
    after_help = AFTER_HELP,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Threads for decoding and inference [default: all cores].
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub verbosity: clap_verbosity_flag::Verbosity<clap_verbosity_flag::WarnLevel>,
    /// Colour in terminal output (NO_COLOR in the environment means never, unless `always`).
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    pub color: ColorWhen,
    #[command(flatten)]
    pub index: IndexTuning,
    #[command(subcommand)]
    pub command: Command,
}

/// `--color`: when to colour terminal output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// Colour when the output is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// FAISS-level settings, given before the command (`imgvec --index-min-rows 256 ingest …`).
#[derive(Args, Debug)]
#[command(next_help_heading = "Index tuning (before the command)")]
pub struct IndexTuning {
    /// Live rows before IVF-PQ, ITQ codes and the binary IVF are trained [default: 10000;
    /// `bench retrieval`: 256, so small benchmarks exercise every index].
    #[arg(long, value_name = "N")]
    pub index_min_rows: Option<usize>,
    /// FAISS factory string for IVF-PQ [default: from rows and dims, e.g. IVF4000,PQ32x8np at
    /// 1M × 256].
    #[arg(long, value_name = "FACTORY")]
    pub ivf_factory: Option<String>,
    /// Bits per binary code [default: min(256, dims)]; more than dims gives a wider
    /// random-projection code, ITQ needs bits ≤ dims.
    #[arg(long, value_name = "N")]
    pub bits: Option<usize>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Add images (files or folders, walked recursively) to DB, creating it if absent.
    Ingest(IngestArgs),
    /// Find the stored images most like each query image.
    Search(SearchArgs),
    /// Rows, segments, pipeline, indexes and bytes on disk.
    Info(DbArgs),
    /// Rebuild DB with another pipeline, re-extracting every row from its stored file (rows
    /// inserted from bytes from their thumbnails; rows get new ids). Nothing changes when a
    /// row cannot be carried over, unless --drop-missing.
    Reindex(ReindexArgs),
    /// Seal pending rows and merge all segments into one, dropping deleted rows.
    Compact(DbArgs),
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
    Verify(DbArgs),
    /// Write a consistent copy of DB to DEST (absent or empty) while DB stays in use, then
    /// verify the copy.
    Backup(BackupArgs),
    /// Near-duplicate groups over the whole database (each image's nearest neighbours through
    /// the indexes, no N×N matrix), with a suggested keeper per group.
    Dedupe(DedupeArgs),
    /// List the stored images (id, size, format, path, attributes), by id.
    List(ListArgs),
    /// One stored image: its record, attributes and stored features; --thumbnail writes its
    /// thumbnail to a file.
    Show(ShowArgs),
    /// Set (KEY=VALUE) or remove (--remove KEY) attributes of stored images after ingest.
    Tag(TagArgs),
    /// Export every stored image's metadata and vector as JSON lines or Parquet (pandas, DuckDB,
    /// polars read both).
    Export(ExportArgs),
    /// Serve a web page and a JSON HTTP API over DB (read-only unless --allow-writes);
    /// Ctrl-C stops it.
    Serve(ServeArgs),
    /// Print a shell completion script (e.g. `imgvec completions bash >
    /// ~/.local/share/bash-completion/completions/imgvec`).
    Completions(CompletionsArgs),
    /// Print the man page (roff; e.g. `imgvec man > ~/.local/share/man/man1/imgvec.1`).
    Man,
}

/// The database folder operand every database command starts with.
pub const DB_HELP: &str = "The database folder (may be left out when IMGVEC_DB names it)";

// The argument structs of the variants carry no doc comment of their own: the variant's doc
// comment is the subcommand's help.

/// Commands that take only the database and `--json`.
#[derive(Args)]
pub struct DbArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    /// Print one JSON object instead of text (schema: docs/CLI.md).
    #[arg(long)]
    pub json: bool,
}

/// Which stored rows a command acts on: `--id` and `--path`, each repeatable.
#[derive(Args, Debug)]
pub struct RowArgs {
    /// A stored image by id (repeatable).
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<u64>,
    /// A stored image by its file, named as you would name it (relative, through links;
    /// repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    /// Only images whose stored path starts with this prefix (a relative prefix is taken from
    /// the current folder).
    #[arg(long, value_name = "PREFIX")]
    pub path_prefix: Option<String>,
    /// Only images with this attribute (repeatable).
    #[arg(long = "attr", value_parser = parse_attr, value_name = "KEY=VALUE")]
    pub attrs: Vec<(String, String)>,
    /// At most this many images.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON line per image (schema: docs/CLI.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    #[command(flatten)]
    pub rows: RowArgs,
    /// Write the image's stored thumbnail (JPEG) to this file (one image only).
    #[arg(long, value_name = "FILE.jpg")]
    pub thumbnail: Option<PathBuf>,
    /// One JSON line per image (schema: docs/CLI.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct TagArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    /// Attributes to set.
    #[arg(value_parser = parse_attr, value_name = "KEY=VALUE")]
    pub set: Vec<(String, String)>,
    #[command(flatten)]
    pub rows: RowArgs,
    /// Attribute to remove (repeatable).
    #[arg(long = "remove", value_name = "KEY")]
    pub remove: Vec<String>,
    /// One JSON line per image (schema: docs/CLI.md).
    #[arg(long)]
    pub json: bool,
}

/// `imgvec dedupe --keep`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeepWhich {
    /// The most pixels (ties: the earliest).
    Largest,
    /// The one stored first.
    Earliest,
}

#[derive(Args)]
pub struct DedupeArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    /// Score (cosine of the global vectors) from which two images are duplicates [default: the
    /// pipeline's, measured for 95 % precision: 0.85 fast, 0.45 balanced/robust].
    #[arg(long, value_name = "SCORE")]
    pub min_score: Option<f32>,
    /// Calibrated confidence (0 to 1) from which two images are duplicates, the same meaning in
    /// every preset (docs/CALIBRATION.md); replaces the default --min-score.
    #[arg(long, value_name = "C")]
    pub min_confidence: Option<f32>,
    /// Neighbours each image looks at.
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// Index the neighbours come from [default: exact below 20,000 images, ivfpq above].
    #[arg(long, value_enum)]
    pub mode: Option<SearchMode>,
    /// Which image of a group to keep.
    #[arg(long, value_enum, default_value_t = KeepWhich::Largest)]
    pub keep: KeepWhich,
    /// Delete every image of a group but its keeper.
    #[arg(long)]
    pub delete_others: bool,
    /// With --delete-others: say what would be deleted, delete nothing.
    #[arg(long, requires = "delete_others")]
    pub dry_run: bool,
    /// Write a self-contained HTML page of the groups (thumbnails, keeper marked).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// One JSON object: the groups and the counts (schema: docs/CLI.md).
    #[arg(long)]
    pub json: bool,
}

/// `imgvec export --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// An Apache Parquet file (vectors as lists of float32).
    Parquet,
}

#[derive(Args)]
pub struct ExportArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Output file [default: stdout for jsonl; required for parquet].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Leave the vectors out (metadata only).
    #[arg(long)]
    pub no_vectors: bool,
}

#[derive(Args)]
pub struct ServeArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    /// Address to listen on; beyond loopback only with a token.
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR:PORT")]
    pub bind: std::net::SocketAddr,
    /// Accept ingest (uploads) and delete requests; the server is then the database's writer.
    #[arg(long)]
    pub allow_writes: bool,
    /// A secret every API request must carry (Bearer header or ?token=); required to bind
    /// beyond loopback [default: IMGVEC_TOKEN from the environment].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Largest upload in MiB.
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    pub max_upload_mib: usize,
}

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ReindexArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Leave out rows whose file has gone or no longer decodes (they are listed), instead of
    /// stopping with the database unchanged.
    #[arg(long)]
    pub drop_missing: bool,
    /// Report what would be carried over and what could not, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON line per image, then the report (schema: docs/CLI.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BackupArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    /// Where the copy goes: a folder that is absent or empty.
    pub dest: PathBuf,
    /// Print one JSON object instead of text (schema: docs/CLI.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    /// The rows to delete (a file since removed is still found by its path).
    #[command(flatten)]
    pub rows: RowArgs,
    /// Print one JSON object instead of text (schema: docs/CLI.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Convolutional autoencoder; its encoder is saved as an extractor for
    /// `imgvec ingest DB PATH --model OUT` (the model records its input size).
    Autoencoder(AutoencoderArgs),
    /// Semi-supervised GAN: a DCGAN generator against a K-class discriminator trained on all
    /// images with labels for the few listed in LABELS; the discriminator's feature layer is
    /// saved as an extractor. `--supervised` trains the same network on the labels alone.
    Sgan(SganArgs),
    /// Contrastive fine-tune of the balanced/robust CNN's last stages on the images (SSCD-style:
    /// edited views of one image pulled together, other images pushed apart); use the result
    /// with `--pipeline balanced|robust --model OUT` (ingest, reindex, bench retrieval).
    Contrastive(ContrastiveArgs),
}

#[derive(Args)]
pub struct ContrastiveArgs {
    #[command(flatten)]
    pub common: TrainCommon,
    /// The trainable split model [default: mobilenet_v2_maps_train.pt in the model folder,
    /// made by scripts/setup.sh].
    #[arg(long, value_name = "FILE.pt")]
    pub base: Option<PathBuf>,
    /// Edited views made of each image (besides the clean one); the trunk runs once per view.
    #[arg(long, default_value_t = 10)]
    pub views: usize,
    /// Passes over the training images.
    #[arg(long, default_value_t = 60)]
    pub epochs: usize,
    /// Images per optimiser step (each seen twice, as a pair of views).
    #[arg(long, default_value_t = 128)]
    pub batch_size: i64,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-4)]
    pub learning_rate: f64,
    /// InfoNCE temperature.
    #[arg(long, default_value_t = 0.05)]
    pub temperature: f64,
    /// Weight of staying near the base model's embeddings.
    #[arg(long, default_value_t = 4.0)]
    pub keep: f64,
}

/// What both trainers take: images, output, schedule.
#[derive(Args)]
pub struct TrainCommon {
    /// Training images: files, folders (walked recursively) or imgvec databases.
    #[arg(required = true, value_name = "PATHS")]
    pub paths: Vec<PathBuf>,
    /// Where to save the TorchScript extractor.
    #[arg(long, value_name = "FILE.pt")]
    pub out: PathBuf,
    /// Random seed (same seed and data, same model).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on N of the images, drawn at random (with --seed) [default: all].
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// One JSON line per epoch, then the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct AutoencoderArgs {
    #[command(flatten)]
    pub common: TrainCommon,
    /// Square input size in pixels (a multiple of 4).
    #[arg(long, default_value_t = 28)]
    pub size: u32,
    /// Dimensions of the code (the extractor's output).
    #[arg(long, default_value_t = 32)]
    pub code_dim: i64,
    /// Passes over the training images.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Images per optimiser step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: i64,
    /// Adam learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub learning_rate: f64,
    /// Augmentation: random rotation up to ± this many degrees.
    #[arg(long, default_value_t = 0.0)]
    pub rotate: f64,
    /// Augmentation: random shift up to ± this fraction of the side.
    #[arg(long, default_value_t = 0.0)]
    pub shift: f64,
}

#[derive(Args)]
pub struct SganArgs {
    #[command(flatten)]
    pub common: TrainCommon,
    /// JSON lines `{"path": ..., "label": ...}`, paths absolute or relative to the file.
    #[arg(long, value_name = "LABELS.jsonl")]
    pub labels: PathBuf,
    /// Square input size in pixels.
    #[arg(long, default_value_t = 28)]
    pub size: u32,
    /// Passes over the training images.
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Images per optimiser step.
    #[arg(long, default_value_t = 100)]
    pub batch_size: i64,
    /// Adam learning rate.
    #[arg(long, default_value_t = 3e-4)]
    pub learning_rate: f64,
    /// Dimensions of the discriminator's feature layer (the extractor's output).
    #[arg(long, default_value_t = 128)]
    pub feature_dim: i64,
    /// Augmentation: random rotation up to ± this many degrees (0 turns it off).
    #[arg(long, default_value_t = 12.0)]
    pub rotate: f64,
    /// Augmentation: random shift up to ± this fraction of the side.
    #[arg(long, default_value_t = 0.08)]
    pub shift: f64,
    /// Baseline: the same network trained on the labelled images only.
    #[arg(long)]
    pub supervised: bool,
}

#[derive(Subcommand)]
pub enum BenchCommand {
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
pub struct BenchIngestArgs {
    /// Images to ingest: files or folders (walked recursively).
    #[arg(required = true, value_name = "PATHS")]
    pub paths: Vec<PathBuf>,
    /// TorchScript extractor [default: the default model].
    #[arg(long, value_name = "FILE.pt")]
    pub model: Option<PathBuf>,
    /// Square input size for --model [default: the size the model records, else 224].
    #[arg(long, value_name = "PX")]
    pub model_size: Option<u32>,
    /// Measure a named pipeline instead of a bare model (no forward baseline then).
    #[arg(long, conflicts_with = "model", value_enum)]
    pub pipeline: Option<Preset>,
    /// Images per model forward.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Follow symbolic links inside the folders walked (as `ingest --follow-links`).
    #[arg(long)]
    pub follow_links: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RetrievalArgs {
    /// Benchmark folder: db/, queries/, db.jsonl and queries.jsonl.
    pub bench: PathBuf,
    /// Search this existing database (read-only; it holds the benchmark's db images, e.g. among
    /// distractors) instead of ingesting the benchmark into a temporary one.
    #[arg(long, conflicts_with_all = ["model", "pipeline"])]
    pub db: Option<PathBuf>,
    /// Modes to measure (repeatable) [default: all].
    #[arg(long = "mode", value_enum)]
    pub modes: Vec<SearchMode>,
    /// TorchScript extractor to measure instead of the default pipeline.
    #[arg(long, value_name = "FILE.pt")]
    pub model: Option<PathBuf>,
    /// Square input size for --model [default: the size the model records, else 224].
    #[arg(
        long,
        requires = "model",
        conflicts_with = "pipeline",
        value_name = "PX"
    )]
    pub model_size: Option<u32>,
    /// Named pipeline to measure [default: fast]; with --model, that preset with its CNN
    /// replaced (see `imgvec ingest --help`).
    #[arg(long, value_enum)]
    pub pipeline: Option<Preset>,
    /// Approximate modes report the index's own order (no exact re-rank).
    #[arg(long)]
    pub no_rerank: bool,
    #[command(flatten)]
    pub query: QueryArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct AnnArgs {
    /// Stored vectors.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Dimensions per vector.
    #[arg(long, default_value_t = 256)]
    pub dim: usize,
    /// Queries measured.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Results per query.
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Lists probed by ivfpq and hamming-ivf [default: the index's].
    #[arg(long)]
    pub nprobe: Option<usize>,
    /// Candidates re-ranked per query [default: per mode].
    #[arg(long)]
    pub rerank_depth: Option<usize>,
    /// Extra IVF-PQ rows, NPROBE:DEPTH pairs (comma-separated), to chart recall vs speed.
    #[arg(long, value_delimiter = ',', value_parser = parse_pair, value_name = "NPROBE:DEPTH")]
    pub sweep: Vec<(usize, usize)>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
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
pub struct IngestArgs {
    /// The database folder, created if absent (may be left out when IMGVEC_DB names it).
    pub db: PathBuf,
    /// Image files and folders (walked recursively; files that are not images by extension are
    /// skipped inside folders, an error when named).
    #[arg(required = true, value_name = "PATHS")]
    pub paths: Vec<PathBuf>,
    /// One JSON line per image once it is durable, then a summary line (schema: docs/CLI.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Attach KEY=VALUE to every new or replaced row (repeatable; unchanged rows keep theirs).
    #[arg(long = "attr", value_parser = parse_attr, value_name = "KEY=VALUE")]
    pub attrs: Vec<(String, String)>,
    /// Images per model forward.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Most images per commit; each commit is one synced write that acknowledges its images
    /// (a commit also happens at least once a second).
    #[arg(long, default_value_t = 512)]
    pub commit_rows: usize,
    /// Follow symbolic links inside the folders walked (by default a walk stays inside the
    /// folders given, and reports the links it leaves).
    #[arg(long)]
    pub follow_links: bool,
}

/// The pipeline a database gets (ingest into a new one, reindex).
#[derive(Args)]
pub struct PipelineArgs {
    /// Named pipeline for a new database [default: fast]; the database remembers it.
    #[arg(long, value_enum)]
    pub pipeline: Option<Preset>,
    /// Any TorchScript extractor (float RGB NCHW in [0,1] -> [N,D] or [N,C,H,W]). With
    /// --pipeline balanced|robust|robust-vlad: the preset with this model as its CNN, which
    /// must give the preset model's maps (`imgvec train contrastive` makes one).
    #[arg(long, value_name = "FILE.pt")]
    pub model: Option<PathBuf>,
    /// Square input size for --model [default: the size the model records, else 224].
    #[arg(
        long,
        requires = "model",
        conflicts_with = "pipeline",
        value_name = "PX"
    )]
    pub model_size: Option<u32>,
    /// Pooling of --model's feature-map outputs: gap, gem[:P], rmac[:LEVELS].
    #[arg(long, default_value = "gap", requires = "model")]
    pub pooling: imgvec_options::Pooling,
}

#[derive(Args)]
pub struct SearchArgs {
    #[arg(help = DB_HELP)]
    pub db: PathBuf,
    /// Query images: files, folders (walked recursively) or `-` (one image read from stdin).
    #[arg(value_name = "IMAGES")]
    pub images: Vec<PathBuf>,
    /// Also query the images listed in FILE, one path per line (`-`: stdin).
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// Search with a stored image ("more like this"); repeatable.
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<u64>,
    /// Results per query (1 to 10000).
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// How candidates are found: exact cosine over every vector, or an approximate index
    /// (re-ranked by exact cosine unless --no-rerank).
    #[arg(long, value_enum, default_value_t = SearchMode::Exact)]
    pub mode: SearchMode,
    /// Show raw index results without exact re-ranking (ivfpq, hamming, hamming-ivf).
    #[arg(long)]
    pub no_rerank: bool,
    /// Inverted lists probed (ivfpq, hamming-ivf) [default: the index's].
    #[arg(long)]
    pub nprobe: Option<usize>,
    /// Candidates fetched from the index and re-ranked exactly [default: 400 ivfpq, 1000
    /// hamming, or more for large k].
    #[arg(long)]
    pub rerank_depth: Option<usize>,
    #[command(flatten)]
    pub query: QueryArgs,
    /// One JSON line per query, in input order (schema: docs/CLI.md).
    #[arg(long)]
    pub json: bool,
    /// Write a self-contained HTML contact sheet of the results.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Only results whose stored path starts with this prefix (a relative prefix is taken from
    /// the current folder, as stored paths are absolute).
    #[arg(long, value_name = "PREFIX")]
    pub path_prefix: Option<String>,
    /// Only results with this attribute (repeatable).
    #[arg(long = "attr", value_parser = parse_attr, value_name = "KEY=VALUE")]
    pub attrs: Vec<(String, String)>,
    /// Only results with at least this score (a cosine, -1 to 1).
    #[arg(long, allow_hyphen_values = true)]
    pub threshold: Option<f32>,
    /// Only results that are the same image: match `verified` or `likely` (confidence >= 0.5,
    /// calibrated per preset; docs/CALIBRATION.md).
    #[arg(long)]
    pub matches_only: bool,
    /// With --json: give some inlier pairs of each verified result (`pairs`, fractions of each
    /// image's sides), to draw the matches; --html draws them.
    #[arg(long)]
    pub pairs: bool,
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// Query-side options shared by `search` and `bench retrieval`; each defaults to the pipeline's.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Query augmentation: also search the query turned by 90°, 180° and 270° (rot4).
    #[arg(long, value_enum)]
    pub augment: Option<Augment>,
    /// Average query expansion over the top N results (0 = off); scores are then cosines to the
    /// expanded query.
    #[arg(long, value_name = "N")]
    pub qe: Option<usize>,
    #[command(flatten)]
    pub verify: VerifyOverrides,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every command says what it is for (`--help` lists no bare flags).
    #[test]
    fn every_argument_has_help() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let mut cli = super::Cli::command();
        cli.build();
        check(&cli, "imgvec", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
        cli.debug_assert();
    }
}
