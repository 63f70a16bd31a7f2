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
    #[error("search mode `{0}` is not available yet (it arrives with the index work, issue #4); use --mode exact")]
    ModeUnavailable(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
