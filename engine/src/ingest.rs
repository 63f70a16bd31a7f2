//! The ingest pipeline: parallel read + hash + decode + preprocess on worker threads, batched
//! model inference on the calling thread, and commits on a committer thread, so decoding and
//! storage overlap inference instead of waiting for it.
//!
//! ```text
//! sources ─▶ [workers: read, hash, unchanged?, decode, resize, thumbnail] ─▶ [caller: batch,
//!            extract, normalise] ─▶ [committer: segment + synced metadata batch] ─▶ events
//! ```
//! An event for a stored or replaced image is emitted only after its commit is synced.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use imgvec_ingest::sift::{self, SiftParams};
use imgvec_ingest::{content_hash, decode, read_image_file, thumbnail_jpeg, ModelInput};
use imgvec_storage::key::path_key;
use imgvec_storage::{ContentHash, NewRow, Store};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::{check_choice, Featurizer};
use crate::stages::{Stage, StageClock, StageTimes};

/// Where an image comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file; its canonical path is its key.
    File(PathBuf),
    /// Bytes with a caller-given key.
    Bytes { key: String, bytes: Arc<[u8]> },
}

impl Source {
    /// The row's key as text, and its exact bytes when a file name is not UTF-8
    /// (`imgvec_storage::key`).
    fn key(&self) -> (String, Option<Vec<u8>>) {
        match self {
            Source::File(p) => path_key(p),
            Source::Bytes { key, .. } => (key.clone(), None),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    Stored,
    Unchanged,
    Replaced,
    Error,
}

/// The outcome for one image, reported once it is durable (or failed).
#[derive(Debug, Clone, Serialize)]
pub struct IngestEvent {
    pub path: String,
    pub id: Option<u64>,
    pub status: IngestStatus,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_id: Option<u64>,
}

impl IngestEvent {
    pub fn error(path: String, reason: String) -> Self {
        IngestEvent {
            path,
            id: None,
            status: IngestStatus::Error,
            error: Some(reason),
            duplicate_of: None,
            replaced_id: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestSummary {
    pub stored: u64,
    pub unchanged: u64,
    pub replaced: u64,
    /// Files not ingested because their extension is not an image format.
    pub skipped: u64,
    pub errors: u64,
    pub duplicates: u64,
    pub seconds: f64,
    /// Images processed (stored + replaced + unchanged) per second of wall time.
    pub images_per_sec: f64,
    /// Stopped early by the stop flag; everything reported before that is durable.
    pub interrupted: bool,
    /// Where the time went, per stage (summed over threads).
    pub stages: StageTimes,
}

/// Options of one ingest call.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// User attributes attached to every new row.
    pub attributes: BTreeMap<String, String>,
    /// Images per model forward.
    pub batch_size: usize,
    /// Rows per commit (a segment) at most.
    pub commit_rows: usize,
    /// Longest a finished row waits for its commit (and its acknowledgement).
    pub commit_interval: Duration,
    /// Set it (e.g. from a Ctrl-C handler) to stop after what is in flight is made durable.
    pub stop: Arc<AtomicBool>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            attributes: BTreeMap::new(),
            batch_size: 16,
            commit_rows: 512,
            commit_interval: Duration::from_secs(1),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What a worker hands to the inference stage.
enum Prepared {
    Done(IngestEvent),
    Ready(Box<ReadyImage>),
}

struct ReadyImage {
    pixels: Vec<f32>,
    row: NewRow,
}

/// How a worker turns one source into a row ready for the model.
struct Preparer<'a> {
    store: &'a Store,
    /// Report an image whose key is stored with the same content as unchanged (ingest), or
    /// prepare every image (rows made for another database: [`Sink::Collect`]).
    lookup: bool,
    input: ModelInput,
    local: Option<&'a SiftParams>,
    clock: &'a StageClock,
}

impl Preparer<'_> {
    fn prepare(&self, source: &Source) -> Prepared {
        let clock = self.clock;
        let (key, raw_key) = source.key();
        let bytes: Arc<[u8]> = match source {
            Source::File(p) => match clock.time(Stage::Read, || read_image_file(p)) {
                Ok(b) => b.into(),
                Err(e) => return Prepared::Done(IngestEvent::error(key, e.to_string())),
            },
            Source::Bytes { bytes, .. } => bytes.clone(),
        };
        let looked_up = clock.time(Stage::Hash, || {
            let hash = ContentHash(content_hash(&bytes));
            let key_bytes = imgvec_storage::key::key_bytes(&key, &raw_key);
            match self.lookup {
                true => (hash, self.store.get_by_key(key_bytes)),
                false => (hash, Ok(None)),
            }
        });
        match looked_up {
            (hash, Ok(Some(rec))) if rec.content_hash == hash => Prepared::Done(IngestEvent {
                path: key,
                id: Some(rec.id),
                status: IngestStatus::Unchanged,
                error: None,
                duplicate_of: rec.duplicate_of,
                replaced_id: None,
            }),
            (hash, Ok(_)) => self.ready((key, raw_key), hash, &bytes),
            (_, Err(e)) => Prepared::Done(IngestEvent::error(key, e.to_string())),
        }
    }

    fn ready(&self, key: (String, Option<Vec<u8>>), hash: ContentHash, bytes: &[u8]) -> Prepared {
        let (key, path_bytes) = key;
        let clock = self.clock;
        let img = match clock.time(Stage::Decode, || decode(bytes)) {
            Ok(img) => img,
            Err(e) => return Prepared::Done(IngestEvent::error(key, e.to_string())),
        };
        let side = self.input.size as usize;
        let mut pixels = Vec::with_capacity(3 * side * side);
        clock.time(Stage::ModelInput, || {
            self.input.pixels(&img.rgb, &mut pixels)
        });
        let (width, height) = img.rgb.dimensions();
        let thumbnail = clock.time(Stage::Thumbnail, || thumbnail_jpeg(&img.rgb));
        let local = match self.local {
            Some(p) => clock.time(Stage::LocalFeatures, || {
                sift::pack(&Featurizer::local_features(&img.rgb, p))
            }),
            None => Vec::new(),
        };
        Prepared::Ready(Box::new(ReadyImage {
            pixels,
            row: NewRow {
                path: key,
                path_bytes,
                content_hash: hash,
                width,
                height,
                format: img.format,
                attributes: BTreeMap::new(),
                thumbnail,
                vector: Vec::new(),
                local,
            },
        }))
    }
}

/// The inference stage: batches prepared images, runs the model, hands the rows to the
/// committer, and reports the images that need no model (unchanged, failed) at once.
struct Inference<'a> {
    featurizer: &'a Featurizer,
    clock: &'a StageClock,
    size: u32,
    batch_size: usize,
    attributes: &'a BTreeMap<String, String>,
    on_event: &'a (dyn Fn(&IngestEvent) + Sync),
}

impl Inference<'_> {
    /// Runs until the workers are done and everything is consumed, or the committer died.
    fn run(
        &self,
        prep_rx: &Receiver<Prepared>,
        row_tx: &Sender<NewRow>,
        unchanged: &mut u64,
        errors: &mut u64,
    ) -> Result<()> {
        let mut batch: Vec<ReadyImage> = Vec::with_capacity(self.batch_size);
        loop {
            let next = if batch.is_empty() {
                match prep_rx.recv() {
                    Ok(p) => Some(p),
                    Err(_) => return Ok(()), // workers done and everything consumed
                }
            } else {
                // Don't let a slow trickle of input hold a partial batch hostage; on timeout
                // or end of input, run what we have.
                prep_rx.recv_timeout(Duration::from_millis(200)).ok()
            };
            match next {
                Some(Prepared::Done(ev)) => {
                    match ev.status {
                        IngestStatus::Unchanged => *unchanged += 1,
                        _ => *errors += 1,
                    }
                    (self.on_event)(&ev);
                    continue;
                }
                Some(Prepared::Ready(img)) => {
                    batch.push(*img);
                    if batch.len() < self.batch_size {
                        continue;
                    }
                }
                None => {}
            }
            if !batch.is_empty() && !self.embed(&mut batch, row_tx)? {
                return Ok(()); // the committer failed; its error is returned by the caller
            }
        }
    }

    /// Runs the model over `batch` (emptying it) and sends the rows on; `false` when the
    /// committer is gone.
    fn embed(&self, batch: &mut Vec<ReadyImage>, row_tx: &Sender<NewRow>) -> Result<bool> {
        let mut pixels = Vec::with_capacity(batch.len() * batch[0].pixels.len());
        for img in batch.iter() {
            pixels.extend_from_slice(&img.pixels);
        }
        let (out, dims) = self.clock.time(Stage::Model, || {
            self.featurizer.embed(&pixels, batch.len(), self.size)
        })?;
        for (img, vector) in batch.drain(..).zip(out.chunks_exact(dims)) {
            let mut row = img.row;
            row.vector = vector.to_vec();
            row.attributes = self.attributes.clone();
            if row_tx.send(row).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Where an ingest's finished rows go.
#[derive(Clone, Copy)]
pub(crate) enum Sink<'a> {
    /// Committed to the database, each reported once durable.
    Store,
    /// Handed to the caller, nothing stored (rows made for another database; no image is
    /// looked up as unchanged).
    Collect(&'a (dyn Fn(NewRow) + Sync)),
}

impl Sink<'_> {
    /// Takes every row the inference stage sends: commits them (`run_committer`), or hands
    /// them to the caller, counting them as stored.
    fn drain(
        self,
        store: &Store,
        rows: Receiver<NewRow>,
        commit_rows: usize,
        interval: Duration,
        on_event: &(dyn Fn(&IngestEvent) + Sync),
        clock: &StageClock,
    ) -> Result<IngestSummary> {
        match self {
            Sink::Store => run_committer(store, rows, commit_rows, interval, on_event, clock),
            Sink::Collect(take) => {
                let mut summary = IngestSummary::default();
                for row in rows {
                    take(row);
                    summary.stored += 1;
                }
                Ok(summary)
            }
        }
    }
}

/// Commits rows as they arrive; emits their events after each synced commit.
pub(crate) fn run_committer(
    store: &Store,
    rows: Receiver<NewRow>,
    commit_rows: usize,
    interval: Duration,
    on_event: &(dyn Fn(&IngestEvent) + Sync),
    clock: &StageClock,
) -> Result<IngestSummary> {
    let mut summary = IngestSummary::default();
    let mut pending: Vec<NewRow> = Vec::new();
    let mut oldest = Instant::now();
    loop {
        let wait = interval.saturating_sub(oldest.elapsed());
        let (flush, closed) =
            match rows.recv_timeout(if pending.is_empty() { interval } else { wait }) {
                Ok(row) => {
                    if pending.is_empty() {
                        oldest = Instant::now();
                    }
                    pending.push(row);
                    (
                        pending.len() >= commit_rows || oldest.elapsed() >= interval,
                        false,
                    )
                }
                Err(RecvTimeoutError::Timeout) => (true, false),
                Err(RecvTimeoutError::Disconnected) => (true, true),
            };
        if flush && !pending.is_empty() {
            let batch = std::mem::take(&mut pending);
            let paths: Vec<String> = batch.iter().map(|r| r.path.clone()).collect();
            let committed = clock.time(Stage::Commit, || store.commit(batch))?;
            for (path, c) in paths.into_iter().zip(committed) {
                let status = if c.replaced.is_some() {
                    summary.replaced += 1;
                    IngestStatus::Replaced
                } else {
                    summary.stored += 1;
                    IngestStatus::Stored
                };
                summary.duplicates += c.duplicate_of.is_some() as u64;
                on_event(&IngestEvent {
                    path,
                    id: Some(c.id),
                    status,
                    error: None,
                    duplicate_of: c.duplicate_of,
                    replaced_id: c.replaced,
                });
            }
        }
        if closed {
            return Ok(summary);
        }
    }
}

/// One ingest call's view of the database: where rows go and how images become rows.
pub(crate) struct Ingestor<'a> {
    pub store: &'a Store,
    pub featurizer: &'a Featurizer,
    /// Worker threads (read, hash, decode, resize, SIFT).
    pub threads: usize,
}

impl Ingestor<'_> {
    /// Ingests `sources` in parallel; `on_event` sees each image once it is durable or failed.
    /// Per-image failures are events; an `Err` means storage or the model failed, and everything
    /// reported before it stays durable.
    pub fn run(
        &self,
        sources: Vec<Source>,
        opts: &IngestOptions,
        on_event: &(dyn Fn(&IngestEvent) + Sync),
        sink: Sink<'_>,
    ) -> Result<IngestSummary> {
        let start = Instant::now();
        if let Some(existing) = self.featurizer.pipeline() {
            // Before any file is looked at: unchanged files would never reach the model.
            check_choice(self.store.dir(), &existing, self.featurizer.requested())?;
        }
        // Workers start decoding at once: the input size is known without the model, which is
        // loaded (on the inference thread) while the first batch is being prepared. Unchanged
        // files never need it. The extractor is locked per batch, not for the whole ingest, so
        // searches from other threads of the same process interleave with a long ingest.
        let input = self.featurizer.planned_input();
        let size = input.size;
        let local = self.featurizer.planned_local();
        let local = local.as_ref();
        let batch_size = opts.batch_size.max(1);
        let workers = self.threads.max(1);
        let stop = &opts.stop;
        let store = self.store;
        let clock = StageClock::default();
        let preparer = Preparer {
            store,
            lookup: matches!(sink, Sink::Store),
            input,
            local,
            clock: &clock,
        };
        let preparer = &preparer;

        let (src_tx, src_rx) = bounded::<Source>(workers * 4);
        let (prep_tx, prep_rx) = bounded::<Prepared>(batch_size * 3);
        let (row_tx, row_rx) = bounded::<NewRow>(opts.commit_rows.max(batch_size) * 2);
        let mut unchanged = 0u64;
        let mut errors = 0u64;

        let committed = std::thread::scope(|s| -> Result<IngestSummary> {
            s.spawn(move || {
                for src in sources {
                    if stop.load(Ordering::Relaxed) || src_tx.send(src).is_err() {
                        break;
                    }
                }
            });
            for _ in 0..workers {
                let (src_rx, prep_tx) = (src_rx.clone(), prep_tx.clone());
                s.spawn(move || {
                    for src in src_rx {
                        if prep_tx.send(preparer.prepare(&src)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop((src_rx, prep_tx));
            let (commit_rows, interval) = (opts.commit_rows.max(1), opts.commit_interval);
            let clock = &clock;
            let committer =
                s.spawn(move || sink.drain(store, row_rx, commit_rows, interval, on_event, clock));

            // Inference on this thread. Runs until the workers are done (or the committer died).
            let inference = Inference {
                featurizer: self.featurizer,
                clock,
                size,
                batch_size,
                attributes: &opts.attributes,
                on_event,
            };
            let inferred = inference.run(&prep_rx, &row_tx, &mut unchanged, &mut errors);
            drop(row_tx);
            drop(prep_rx); // unblocks workers if inference stopped early
            let committed = committer
                .join()
                .map_err(|_| Error::Invalid("committer thread panicked".into()))?;
            inferred?;
            committed
        })?;

        let mut summary = committed;
        summary.unchanged = unchanged;
        summary.errors = errors;
        summary.seconds = start.elapsed().as_secs_f64();
        let done = summary.stored + summary.replaced + summary.unchanged;
        summary.images_per_sec = if summary.seconds > 0.0 {
            done as f64 / summary.seconds
        } else {
            0.0
        };
        summary.interrupted = opts.stop.load(Ordering::Relaxed);
        summary.stages = clock.times();
        Ok(summary)
    }
}
