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
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Train(#[from] imgvec_ingest::learned::TrainError),
}

impl From<faiss::error::Error> for Error {
    fn from(e: faiss::error::Error) -> Self {
        Error::Index(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
