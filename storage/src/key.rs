//! How a row's key is spelt. A key is bytes: a file's canonical path exactly as the file
//! system names it, or the caller's key for images inserted from bytes. A UTF-8 key is kept as
//! the record's `path` string and nothing else; a file name that is not UTF-8 keeps its raw
//! bytes beside a display form in which each invalid byte is written `\xNN`, so two names that
//! differ only in invalid bytes stay two rows, and the file can be opened again.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The display string of `path`, and its raw bytes when they are not UTF-8.
pub fn path_key(path: &Path) -> (String, Option<Vec<u8>>) {
    let bytes = path.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (escape(bytes), Some(bytes.to_vec())),
    }
}

/// `bytes` as text: valid UTF-8 as is, every other byte as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The key bytes of a row: its raw name when it has one, else its path string.
pub fn key_bytes<'a>(path: &'a str, raw: &'a Option<Vec<u8>>) -> &'a [u8] {
    raw.as_deref().unwrap_or(path.as_bytes())
}

/// The file a key names.
pub fn key_path(path: &str, raw: &Option<Vec<u8>>) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(key_bytes(path, raw)))
}

/// Text safe to print on a terminal: control characters (escape sequences among them) are
/// written as `\u{..}` escapes, everything else as is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_table() {
        // (raw name, display, raw bytes kept)
        let cases: [(&[u8], &str, bool); 4] = [
            (b"/p/a.jpg", "/p/a.jpg", false),
            ("/p/é.jpg".as_bytes(), "/p/é.jpg", false),
            (b"/p/a\xff.jpg", "/p/a\\xff.jpg", true),
            (b"/p/a\xfe\xc3.jpg", "/p/a\\xfe\\xc3.jpg", true),
        ];
        for (raw, display, kept) in cases {
            let path = Path::new(OsStr::from_bytes(raw));
            let (shown, bytes) = path_key(path);
            assert_eq!(shown, display);
            assert_eq!(bytes.is_some(), kept);
            assert_eq!(key_bytes(&shown, &bytes), raw);
            assert_eq!(key_path(&shown, &bytes), path);
        }
        // Two names differing only in invalid bytes keep different keys.
        let (a, ra) = path_key(Path::new(OsStr::from_bytes(b"/x\xff")));
        let (b, rb) = path_key(Path::new(OsStr::from_bytes(b"/x\xfe")));
        assert_ne!(key_bytes(&a, &ra), key_bytes(&b, &rb));
    }

    #[test]
    fn printable_table() {
        let cases = [
            ("/p/a.jpg", "/p/a.jpg"),
            ("/p/\u{1b}[31mred.jpg", "/p/\\u{1b}[31mred.jpg"),
            ("a\nb", "a\\u{a}b"),
        ];
        for (text, shown) in cases {
            assert_eq!(printable(text), shown);
        }
    }
}
