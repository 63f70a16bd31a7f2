//! Finding the files to ingest, and the default model's location.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::decode::has_image_extension;
use crate::extractor::ExtractError;

/// The outcome of expanding the paths given to an ingest.
#[derive(Debug, Default)]
pub struct FileList {
    /// Canonical absolute paths of image files, in walk order, each once.
    pub images: Vec<PathBuf>,
    /// Files found in folders skipped because their extension is not an image format (a file
    /// named by itself is always read, and is an error when it is not an image).
    pub skipped: Vec<PathBuf>,
    /// Entries skipped because they are not regular files (FIFOs, devices, sockets) or are
    /// symbolic links a walk does not follow, with the reason.
    pub not_regular: Vec<(PathBuf, String)>,
    /// Paths that could not be read at all (missing, permission denied), with the reason.
    pub errors: Vec<(PathBuf, String)>,
}

/// Largest image file an ingest reads (larger ones are refused, not read).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Expands files and folders (recursively, sorted by name) into the images to ingest. Only
/// regular files are taken. Symbolic links found inside a folder are followed only with
/// `follow_links` (a root given by name is always followed), so a walk stays inside its roots.
pub fn collect_files(paths: &[PathBuf], follow_links: bool) -> FileList {
    let mut list = FileList::default();
    let mut seen = HashSet::new();
    for root in paths {
        for entry in walkdir::WalkDir::new(root)
            .follow_links(follow_links)
            .sort_by_file_name()
        {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    let reason = e
                        .io_error()
                        .map(|io| io.to_string())
                        .unwrap_or_else(|| e.to_string());
                    list.errors.push((path, reason));
                    continue;
                }
            };
            let kind = entry.file_type();
            if kind.is_dir() {
                continue;
            }
            if let Some(reason) = not_regular(&kind) {
                list.not_regular.push((entry.path().to_path_buf(), reason));
                continue;
            }
            // A file named by itself is read whatever its name; one found in a folder only with
            // an image extension.
            if entry.depth() > 0 && !has_image_extension(entry.path()) {
                list.skipped.push(entry.path().to_path_buf());
                continue;
            }
            match std::fs::canonicalize(entry.path()) {
                Ok(canonical) => {
                    if seen.insert(canonical.clone()) {
                        list.images.push(canonical);
                    }
                }
                Err(e) => list
                    .errors
                    .push((entry.path().to_path_buf(), e.to_string())),
            }
        }
    }
    list
}

/// Why an entry of this type is not an image file to read, or `None` for a regular file.
fn not_regular(kind: &std::fs::FileType) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let what = if kind.is_file() {
        return None;
    } else if kind.is_symlink() {
        return Some("symbolic link not followed (give --follow-links)".into());
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a file"
    };
    Some(format!("not a regular file ({what})"))
}

/// Reads an image file whole, refusing without blocking what is not a regular file (a FIFO
/// named `x.jpg` does not hang the reader; a link to `/dev/zero` is not read) and any file
/// over [`MAX_FILE_BYTES`].
pub fn read_image_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if let Some(reason) = not_regular(&meta.file_type()) {
        return Err(invalid(reason));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(invalid(format!(
            "file of {} MiB exceeds the limit of {} MiB",
            meta.len() >> 20,
            MAX_FILE_BYTES >> 20
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid("file grew past the size limit while read".into()));
    }
    Ok(bytes)
}

/// File name of the default MobileNetV2 extractor that `scripts/setup.sh` builds.
pub const DEFAULT_MODEL_FILE: &str = "mobilenet_v2.pt";

/// Folder holding default models: `$IMGVEC_MODEL_DIR`, else `$HOME/.local/share/imgvec/models`.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMGVEC_MODEL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    Path::new(&home).join(".local/share/imgvec/models")
}

/// The default model file, or an error that names the setup command.
pub fn default_model_path() -> Result<PathBuf, ExtractError> {
    let path = model_dir().join(DEFAULT_MODEL_FILE);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ExtractError::MissingDefaultModel { path })
    }
}

/// BLAKE3 of a file's bytes: the content identity used to recognise unchanged files.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// A FIFO named like an image, a link to /dev/zero and a link out of the root are skipped
    /// and reported; reading them is refused at once (the FIFO has no writer: a plain read
    /// would wait forever).
    #[test]
    fn walks_take_regular_files_only_and_stay_inside_their_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("photos");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("a.jpg"), b"x").unwrap();
        std::fs::write(outside.join("b.jpg"), b"x").unwrap();
        mkfifo(&root.join("fifo.jpg"));
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.jpg")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("elsewhere")).unwrap();
        let list = collect_files(std::slice::from_ref(&root), false);
        let canonical_root = root.canonicalize().unwrap();
        assert_eq!(list.images, vec![canonical_root.join("a.jpg")]);
        let mut reported: Vec<_> = list
            .not_regular
            .iter()
            .map(|(p, why)| (p.file_name().unwrap().to_str().unwrap(), why.as_str()))
            .collect();
        reported.sort();
        assert_eq!(reported.len(), 3, "{reported:?}");
        assert_eq!(reported[0].0, "elsewhere");
        assert!(reported[0].1.contains("--follow-links"));
        assert_eq!(reported[1], ("fifo.jpg", "not a regular file (a FIFO)"));
        assert!(reported[2].1.contains("--follow-links"));
        // Following links reaches the folder outside and the device, which is still refused.
        let list = collect_files(std::slice::from_ref(&root), true);
        assert_eq!(list.images.len(), 2, "{:?}", list.images);
        assert!(list
            .not_regular
            .iter()
            .any(|(_, why)| why.contains("device")));
        for name in ["fifo.jpg", "zero.jpg"] {
            let err = read_image_file(&root.join(name)).unwrap_err();
            assert!(
                err.to_string().contains("not a regular file"),
                "{name}: {err}"
            );
        }
        assert_eq!(read_image_file(&root.join("a.jpg")).unwrap(), b"x");
    }
}
