use std::path::{Path, PathBuf};

/// Every failure the storage layer reports. Variants that concern a file name it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its bytes are not what we wrote: bad magic, checksum mismatch,
    /// truncation, impossible sizes. Never a panic, never a silently wrong answer.
    #[error("data corruption in {path}: {reason}")]
    DataCorruption { path: PathBuf, reason: String },
    /// The folder is missing, or is not an imgvec database (and may not become one).
    #[error("{path}: not an imgvec database ({reason})")]
    NotADatabase { path: PathBuf, reason: String },
    #[error(
        "database is locked by another process: {path}{}",
        holder.as_ref().map(|h| format!(" (held by {h})")).unwrap_or_default()
    )]
    Locked {
        path: PathBuf,
        /// Who holds the lock (`pid N: COMMAND`), when that can be told.
        holder: Option<String>,
    },
    #[error("metadata store {path}: {message}")]
    Metadata { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("database {path} is open read-only")]
    ReadOnly { path: PathBuf },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn corruption(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        StorageError::DataCorruption {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The same error again (an `io::Error` is rebuilt from its kind and message): a failure several
/// callers met at once (a batch of queries reading one damaged segment) is reported to each.
impl Clone for StorageError {
    fn clone(&self) -> Self {
        match self {
            StorageError::Io { path, source } => StorageError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StorageError::DataCorruption { path, reason } => StorageError::DataCorruption {
                path: path.clone(),
                reason: reason.clone(),
            },
            StorageError::NotADatabase { path, reason } => StorageError::NotADatabase {
                path: path.clone(),
                reason: reason.clone(),
            },
            StorageError::Locked { path, holder } => StorageError::Locked {
                path: path.clone(),
                holder: holder.clone(),
            },
            StorageError::Metadata { path, message } => StorageError::Metadata {
                path: path.clone(),
                message: message.clone(),
            },
            StorageError::Invalid { path, message } => StorageError::Invalid {
                path: path.clone(),
                message: message.clone(),
            },
            StorageError::ReadOnly { path } => StorageError::ReadOnly { path: path.clone() },
        }
    }
}

/// Adds the file name to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| StorageError::io(path, e))
    }
}
