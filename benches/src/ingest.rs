//! `imgvec bench ingest`: end-to-end ingest images/s, each stage's share of the work in the same
//! run, and — for a plain TorchScript model — the bare model forward at the same batch size and
//! thread count as the baseline.

use std::path::{Path, PathBuf};
use std::time::Instant;

use imgvec_ingest::{set_torch_threads, Extractor, Pooling, TorchScriptExtractor};
use serde::Serialize;

use imgvec::{
    collect_files, Database, Error, IngestOptions, OpenOptions, PipelineChoice, Preset, Result,
    Source, StageTimes,
};

#[derive(Debug, Clone, Serialize)]
pub struct IngestBench {
    /// The pipeline measured (`custom` for a model file).
    pub pipeline: String,
    pub images: u64,
    pub batch_size: usize,
    pub threads: usize,
    /// The bare TorchScript forward on ready-made input tensors, in this process (plain models
    /// only: a preset's featurization is more than one forward).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_images_per_sec: Option<f64>,
    /// `Database::ingest` end to end: read, hash, decode, resize, thumbnail, local features,
    /// model, commit.
    pub ingest_images_per_sec: f64,
    pub ingest_seconds: f64,
    /// ingest / forward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Every stage's time (summed over the threads that ran it) and share of all stages.
    pub stages: Vec<StageShare>,
    /// Entries of the folders walked that were not measured (not images, links not followed,
    /// unreadable), each with the reason.
    pub left_out: Vec<(PathBuf, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageShare {
    pub stage: &'static str,
    pub seconds: f64,
    pub share: f64,
}

/// What to ingest with: a named pipeline, or a TorchScript model of square input `size`.
#[derive(Debug, Clone)]
pub enum IngestTarget {
    Preset(Preset),
    Model { path: PathBuf, size: u32 },
}

/// Ingests `paths` (following symbolic links inside folders with `follow_links`) into a fresh
/// database at `scratch` with `target`, `batch_size` and `threads`, timing every stage; for a
/// model, first times its bare forward over as many inputs. Finding no image is an error that
/// says why.
pub fn ingest(
    target: &IngestTarget,
    paths: &[PathBuf],
    follow_links: bool,
    scratch: &Path,
    batch_size: usize,
    threads: usize,
) -> Result<IngestBench> {
    let files = collect_files(paths, follow_links);
    let left_out: Vec<(PathBuf, String)> = (files.not_regular.iter().cloned())
        .chain(files.errors.iter().cloned())
        .chain((files.skipped.iter()).map(|p| (p.clone(), "not an image file extension".into())))
        .collect();
    if files.images.is_empty() {
        let why = left_out_summary(&left_out)
            .map(|s| format!("; {s}"))
            .unwrap_or_default();
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::Invalid(format!(
            "no image to measure in {}{why}",
            paths.join(", ")
        )));
    }
    set_torch_threads(threads);
    let (pipeline, forward) = match target {
        IngestTarget::Preset(p) => (PipelineChoice::Preset(*p), None),
        IngestTarget::Model { path, size } => {
            let forward = bare_forward(path, *size, files.images.len(), batch_size)?;
            let choice = PipelineChoice::Model {
                path: path.clone(),
                size: *size,
                pooling: Pooling::Gap,
            };
            (choice, Some(forward))
        }
    };
    let name = match target {
        IngestTarget::Preset(p) => p.name().to_string(),
        IngestTarget::Model { .. } => "custom".into(),
    };
    let open = OpenOptions {
        pipeline,
        threads,
        ..OpenOptions::default()
    };
    let db = Database::open(scratch, open)?;
    let opts = IngestOptions {
        batch_size,
        ..IngestOptions::default()
    };
    let sources = files.images.into_iter().map(Source::File).collect();
    let summary = db.ingest(sources, &opts, &|_| {})?;
    Ok(IngestBench {
        pipeline: name,
        images: summary.stored + summary.replaced,
        batch_size,
        threads,
        forward_images_per_sec: forward,
        ingest_images_per_sec: summary.images_per_sec,
        ingest_seconds: summary.seconds,
        ratio: forward.map(|f| summary.images_per_sec / f),
        stages: shares(&summary.stages),
        left_out,
    })
}

/// "N entries left out, the first PATH: REASON", or `None` when nothing was left out.
pub fn left_out_summary(left_out: &[(PathBuf, String)]) -> Option<String> {
    let (path, reason) = left_out.first()?;
    let n = left_out.len();
    let entries = if n == 1 { "entry" } else { "entries" };
    Some(format!(
        "{n} {entries} left out, the first {}: {reason}",
        path.display()
    ))
}

/// Images/s of the bare forward of `model` over `images` ready-made inputs.
fn bare_forward(model: &Path, size: u32, images: usize, batch_size: usize) -> Result<f64> {
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
    Ok((batches * batch_size) as f64 / start.elapsed().as_secs_f64())
}

fn shares(t: &StageTimes) -> Vec<StageShare> {
    let total = t.total().max(f64::MIN_POSITIVE);
    t.named()
        .into_iter()
        .map(|(stage, seconds)| StageShare {
            stage,
            seconds,
            share: seconds / total,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_out_summary_counts_and_names_the_first() {
        let summary = |entries: &[(&str, &str)]| {
            let left_out: Vec<(PathBuf, String)> = entries
                .iter()
                .map(|(p, why)| (PathBuf::from(p), why.to_string()))
                .collect();
            left_out_summary(&left_out)
        };
        assert_eq!(summary(&[]), None);
        assert_eq!(
            summary(&[("a/x.jpg", "symbolic link not followed")]).as_deref(),
            Some("1 entry left out, the first a/x.jpg: symbolic link not followed")
        );
        assert_eq!(
            summary(&[("b.txt", "not an image"), ("c", "a FIFO")]).as_deref(),
            Some("2 entries left out, the first b.txt: not an image")
        );
    }
}
