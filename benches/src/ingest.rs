//! `imgvec bench ingest`: end-to-end ingest images/s against the bare model forward at the same
//! batch size and thread count, in one run.

use std::path::Path;
use std::time::Instant;

use imgvec_ingest::{set_torch_threads, Extractor, Pooling, TorchScriptExtractor};
use serde::Serialize;

use imgvec::{collect_files, Database, IngestOptions, OpenOptions, PipelineChoice, Result, Source};

#[derive(Debug, Clone, Serialize)]
pub struct IngestBench {
    pub images: u64,
    pub batch_size: usize,
    pub threads: usize,
    /// The bare TorchScript forward on ready-made input tensors, in this process.
    pub forward_images_per_sec: f64,
    /// `Database::ingest` end to end: read, hash, decode, resize, thumbnail, forward, commit.
    pub ingest_images_per_sec: f64,
    pub ingest_seconds: f64,
    /// ingest / forward.
    pub ratio: f64,
}

/// Times the bare forward of `model` over `images` inputs, then a full ingest of `paths` into a
/// fresh database at `scratch` with the same model, batch size and threads.
pub fn ingest(
    model: &Path,
    size: u32,
    paths: &[std::path::PathBuf],
    scratch: &Path,
    batch_size: usize,
    threads: usize,
) -> Result<IngestBench> {
    let files = collect_files(paths);
    let images = files.images.len();
    set_torch_threads(threads);
    let mut extractor = TorchScriptExtractor::load(model, size, Pooling::Gap)?;
    let per_image = (3 * size * size) as usize;
    let input: Vec<f32> = (0..per_image * batch_size)
        .map(|i| (i % 251) as f32 / 251.0)
        .collect();
    extractor.extract(&input, batch_size)?; // warm-up
    let batches = images.div_ceil(batch_size).max(1);
    let start = Instant::now();
    for _ in 0..batches {
        extractor.extract(&input, batch_size)?;
    }
    let forward = (batches * batch_size) as f64 / start.elapsed().as_secs_f64();
    drop(extractor);

    let db = Database::open(
        scratch,
        OpenOptions {
            pipeline: PipelineChoice::Model {
                path: model.to_path_buf(),
                size,
                pooling: Pooling::Gap,
            },
            threads,
            ..OpenOptions::default()
        },
    )?;
    let opts = IngestOptions {
        batch_size,
        ..IngestOptions::default()
    };
    let sources = files.images.into_iter().map(Source::File).collect();
    let summary = db.ingest(sources, &opts, &|_| {})?;
    Ok(IngestBench {
        images: summary.stored + summary.replaced,
        batch_size,
        threads,
        forward_images_per_sec: forward,
        ingest_images_per_sec: summary.images_per_sec,
        ingest_seconds: summary.seconds,
        ratio: summary.images_per_sec / forward,
    })
}
