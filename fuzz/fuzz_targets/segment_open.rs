//! Any bytes given to `Segment::open` give a segment or a `DataCorruption` error naming the file:
//! never a panic; reading an accepted segment's columns (checked a block at a time when read)
//! gives their values or a `DataCorruption` error, and the local-feature offsets describe every
//! row.
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
            let corrupt = |e: StorageError| match e {
                StorageError::DataCorruption { path: p, .. } => assert_eq!(p, path),
                other => panic!("unexpected error kind: {other}"),
            };
            match seg.vectors() {
                Ok(v) => assert_eq!(v.len(), seg.rows() * seg.dims()),
                Err(e) => corrupt(e),
            }
            // Accepted local-feature columns describe every row.
            let local: usize = (0..seg.rows()).map(|r| seg.local_len(r)).sum();
            if !seg.has_local() {
                assert_eq!(local, 0);
            }
            for r in 0..seg.rows() {
                match seg.local(r) {
                    Ok(bytes) => assert_eq!(bytes.len(), seg.local_len(r)),
                    Err(e) => corrupt(e),
                }
            }
            if let Err(e) = seg.verify_all() {
                corrupt(e);
            }
        }
        Err(StorageError::DataCorruption { path: p, .. }) => assert_eq!(p, path),
        Err(other) => panic!("unexpected error kind: {other}"),
    }
});
