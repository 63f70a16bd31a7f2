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

mod database;
mod error;
pub mod exact;
mod ingest;
pub mod pipeline;

pub use database::{
    make_thumbnail, Database, DatabaseInfo, Hit, OpenOptions, Query, SearchMode, SearchOptions,
};
pub use error::{Error, Result};
pub use image;
pub use imgvec_ingest::{collect_files, FileList};
pub use imgvec_storage::{ImageRecord, StorageError};
pub use ingest::{IngestEvent, IngestOptions, IngestStatus, IngestSummary, Source};
pub use pipeline::{PipelineChoice, PipelineConfig, PIPELINES};

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn database_is_send_and_sync() {
        assert_send_sync::<super::Database>();
    }
}
