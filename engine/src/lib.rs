//! `imgvec` is an embedded vector database for images: hand it image files or bytes, ask it which
//! stored images look like a query image. This crate is the public API a host application links:
//! [`Database`] opens a folder, ingests (in parallel, batched through a TorchScript CNN via
//! libtorch), stores (through `imgvec-storage`: durable before acknowledged), and searches. It
//! owns search and orchestration; decoding and extractors live in `imgvec-ingest`, bytes on disk
//! in `imgvec-storage`.
//!
//! ```
//! use imgvec::{Database, OpenOptions, Query, SearchOptions};
//! use imgvec::image::{ImageFormat, Rgb, RgbImage};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let db_path = dir.path().join("photos.imgvec");
//! // Two images to store: a red/blue split and a checkerboard, encoded as PNG bytes.
//! let png = |f: fn(u32, u32) -> Rgb<u8>| -> Result<Vec<u8>, imgvec::image::ImageError> {
//!     let mut out = std::io::Cursor::new(Vec::new());
//!     RgbImage::from_fn(160, 120, f).write_to(&mut out, ImageFormat::Png)?;
//!     Ok(out.into_inner())
//! };
//! let split = png(|x, _| if x < 80 { Rgb([220, 30, 30]) } else { Rgb([30, 30, 220]) })?;
//! let checks = png(|x, y| if (x / 20 + y / 20).is_multiple_of(2) { Rgb([0, 0, 0]) } else { Rgb([255; 3]) })?;
//!
//! let db = Database::open(&db_path, OpenOptions::default())?;
//! let a = db.insert_bytes("split", &split, Default::default())?;
//! let b = db.insert_bytes("checks", &checks, Default::default())?;
//! println!("stored ids {:?} and {:?}", a.id, b.id);
//!
//! let hits = db.search(Query::Bytes(checks.clone()), &SearchOptions::default())?;
//! assert_eq!(hits[0].path, "checks");
//! assert!(hits[0].score > 0.99 && hits[1].score < hits[0].score);
//! # Ok(())
//! # }
//! ```

mod backup;
mod database;
mod dedupe;
mod dense;
mod derived;
mod error;
pub mod exact;
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
mod info;
mod ingest;
pub mod json;
mod local;
mod maintenance;
mod options;
mod parallel;
mod pipeline;
mod prepared;
mod reduce;
mod reindex;
mod search;
mod stages;
mod verify;
mod vlad;
mod whitening;

pub use backup::BackupReport;
pub use database::{make_thumbnail, Database};
pub use derived::slot::DerivedStatus;
pub use error::{Error, Result};
pub use image;
/// The input size for a TorchScript model file: `requested`, else what the model records, else
/// 224 (see `PipelineChoice::model`).
pub fn model_input_size(path: &std::path::Path, requested: Option<u32>) -> Result<u32> {
    Ok(imgvec_ingest::model_meta::input_size_for(path, requested)?)
}

pub use dedupe::{
    default_min_score, groups_from_pairs, keeper, DedupeGroup, DedupeMember, DedupeOptions,
    DedupeReport, Keep,
};
pub use imgvec_ingest::{
    collect_files, default_model_path, read_image_file, set_torch_threads, FileList, FusionSpec,
    Pooling, MAX_FILE_BYTES,
};
pub use imgvec_options::InvalidOption;
pub use imgvec_storage::key::printable;
pub use imgvec_storage::{CompactionReport, ImageRecord, Snapshot, StorageError};
pub use index::{IndexInfo, IndexOptions};
pub use info::{DatabaseInfo, Hit, LocalInfo, StoredFeatures, VladInfo, WhiteningInfo};
pub use ingest::{IngestEvent, IngestOptions, IngestStatus, IngestSummary, Source};
pub use local::{LocalSpec, VerifyParams};
pub use options::{
    Augment, FileLayer, Filter, OpenOptions, Query, SearchMode, SearchOptions, VerifyOverrides,
    MAX_DEPTH, MAX_K, MAX_SHORTLIST,
};
pub use options::{PipelineChoice, Preset};
pub use pipeline::{PipelineConfig, QueryDefaults};
pub use prepared::PreparedRow;
pub use reduce::WhiteningSpec;
pub use reindex::{reindex, ReindexOptions, ReindexReport};
pub use search::{
    beneath_pick, looks_beneath, Calibration, Candidates, Found, Match, QueryFeatures,
    RerankStatus, Verdict,
};
pub use stages::StageTimes;
pub use verify::VerifyReport;
pub use vlad::VladSpec;

/// Makes glibc keep freed memory for reuse instead of returning it to the kernel at once.
///
/// libtorch allocates and frees tens of megabytes of activations per forward pass; with glibc's
/// defaults each of those is a fresh `mmap` whose pages the kernel must zero again, and on this
/// project's 2-core machines that page-fault work took more time than the model itself (ingest
/// of instances-dev: 43 images/s before, 110+ after). Call it once at start-up in a process
/// that runs models; it changes process-wide allocator settings, which is why the library does
/// not do it behind a host application's back. The `imgvec` CLI calls it.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts glibc allocator parameters; it is safe to call at any time.
    unsafe {
        // Batched activations reach ~100 MB; glibc builds that refuse a threshold this high
        // (over half their heap size) keep their limit of 32 MiB instead.
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 0 {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn database_is_send_and_sync() {
        assert_send_sync::<super::Database>();
    }
}
