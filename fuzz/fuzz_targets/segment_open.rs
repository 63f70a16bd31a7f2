//! Any bytes given to `Segment::open` give a segment or a `DataCorruption` error naming the file:
//! never a panic, and an accepted segment's columns are fully readable.
#![no_main]

use imgvec_storage::{Segment, StorageError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.ivs");
    std::fs::write(&path, data).unwrap();
    match Segment::open(&path) {
        Ok(seg) => {
            assert_eq!(seg.ids().len(), seg.rows());
            assert_eq!(seg.vectors().len(), seg.rows() * seg.dims());
            // Accepted local-feature columns describe every row.
            let local: usize = (0..seg.rows()).map(|r| seg.local(r).len()).sum();
            if !seg.has_local() {
                assert_eq!(local, 0);
            }
        }
        Err(StorageError::DataCorruption { path: p, .. }) => assert_eq!(p, path),
        Err(other) => panic!("unexpected error kind: {other}"),
    }
});
