use imgvec_ingest::ExtractError;
use imgvec_storage::StorageError;

/// Every error the `imgvec` API returns. Errors about a file or folder name it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// An image that cannot be read or decoded.
    #[error("{path}: {reason}")]
    Image { path: String, reason: String },
    #[error("no image with id {0}")]
    NoSuchId(u64),
    #[error("{0}")]
    Invalid(String),
    #[error("index: {0}")]
    Index(#[from] IndexError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<imgvec_options::InvalidOption> for Error {
    fn from(e: imgvec_options::InvalidOption) -> Self {
        Error::Invalid(e.0)
    }
}

impl From<faiss::error::Error> for Error {
    fn from(e: faiss::error::Error) -> Self {
        Error::Index(e.into())
    }
}

/// Errors of the approximate indexes and other derived files.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("faiss: {0}")]
    Faiss(#[from] faiss::error::Error),
    #[error("faiss {what} failed (code {code})")]
    FaissCode { what: &'static str, code: i32 },
    #[error("{0}")]
    Invalid(String),
    /// Bytes of a derived file that fail their checksum when a search reads them (the file is
    /// then rebuilt, not trusted).
    #[error("damaged derived file: {0}")]
    Damaged(String),
    #[error("index file: {0}")]
    Io(#[from] std::io::Error),
    /// Stored rows the structure is built from could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
