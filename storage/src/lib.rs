//! `imgvec-storage` owns everything imgvec keeps on disk: the immutable, memory-mapped columnar
//! segment files that hold feature vectors (format in docs/FORMAT.md) and the RocksDB metadata
//! store (image records, path and content-hash indexes, thumbnails, the segment manifest,
//! tombstones, id allocation). It knows nothing about images, models or search: callers hand it
//! finished rows and read back vectors and records. Durability rules live here: a commit is
//! acknowledged only after its synced RocksDB batch (records plus vectors in the write-ahead
//! `pending` column family); sealing pending rows into segments and compaction publish new
//! segment files only after the files and their directory are synced. See docs/ARCHITECTURE.md.

#[doc(hidden)]
pub mod crash_sim;
pub mod error;
pub mod key;
pub mod lock;
pub mod segment;
pub mod snapshot;
pub mod store;
pub mod vfs;

pub use error::{Result, StorageError};
pub use segment::{write_segment, ColumnBytes, ColumnData, ColumnKind, Segment};
pub use snapshot::{PendingChunk, Snapshot};
pub use store::{
    BackupStats, CommittedRow, CompactionPolicy, CompactionReport, ContentHash, ImageRecord,
    NewRow, OpenMode, Store, StoreCheck, StoreOptions, StoreStats, DATABASE_FORMAT_VERSION,
};
pub use vfs::{create_dirs, write_atomic, StdFs, Vfs, VfsFile};
