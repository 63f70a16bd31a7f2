//! `imgvec-storage` owns everything imgvec keeps on disk: the immutable, memory-mapped columnar
//! segment files that hold feature vectors (format in docs/FORMAT.md) and the RocksDB metadata
//! store (image records, path and content-hash indexes, thumbnails, the segment manifest,
//! tombstones, id allocation). It knows nothing about images, models or search: callers hand it
//! finished rows and read back vectors and records. Durability rules live here: a commit is
//! acknowledged only after the segment file, its directory and the metadata batch are synced.

pub mod error;
pub mod segment;
pub mod store;

pub use error::{Result, StorageError};
pub use segment::{write_segment, Segment};
pub use store::{
    CommittedRow, ImageRecord, NewRow, OpenMode, Snapshot, Store, StoreStats,
    DATABASE_FORMAT_VERSION,
};
