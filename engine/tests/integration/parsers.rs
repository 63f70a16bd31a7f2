//! Every parser of bytes read back from disk, against damaged input: the derived files of a real
//! `robust-vlad` database (approximate indexes, VLAD, voting, dense windows; whitening and the
//! whitened view once learned) are mutated thousands of times (bit flips, overwritten words,
//! truncations, extensions) and parsed as their loaders parse them, past the CRC; so are image
//! and pipeline records. Nothing may panic. The fuzz targets in `fuzz/` do the same for as long
//! as they are run.

use imgvec_testkit::*;

use std::collections::BTreeSet;

use imgvec::{
    fuzzing, Database, IndexOptions, IngestOptions, OpenOptions, PipelineChoice, Preset, Source,
};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One damaged copy of `bytes`.
fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match rng.below(6) {
        0 => {
            let at = rng.below(out.len());
            if let Some(b) = out.get_mut(at) {
                *b ^= 1 << rng.below(8);
            }
        }
        1 => {
            // A header-sized word (counts, dimensions, lengths) set to something extreme.
            let at = rng.below(out.len().min(256)) & !7;
            let value = [0u64, 1, u32::MAX as u64, u64::MAX, 1 << 40][rng.below(5)];
            if at + 8 <= out.len() {
                out[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        2 => out.truncate(rng.below(out.len())),
        3 => out.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        4 => {
            let at = rng.below(out.len());
            let end = (at + rng.below(32)).min(out.len());
            out[at..end].iter_mut().for_each(|b| *b = rng.next() as u8);
        }
        _ => {
            let at = rng.below(out.len().min(64)) & !3;
            if at + 4 <= out.len() {
                out[at..at + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
            }
        }
    }
    out
}

#[test]
fn damaged_derived_files_and_records_never_panic() {
    let files = db_images(24);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    {
        let db = Database::open(
            &path,
            OpenOptions {
                pipeline: PipelineChoice::Preset(Preset::RobustVlad),
                background_compaction: false,
                index: IndexOptions {
                    min_train_rows: 8,
                    ..IndexOptions::default()
                },
                ..OpenOptions::default()
            },
        )
        .unwrap();
        let sources = files.iter().cloned().map(Source::File).collect();
        db.ingest(sources, &IngestOptions::default(), &|_| {})
            .unwrap();
        db.refresh_indexes().unwrap();
        // A search builds and saves the voting and dense-window indexes.
        db.search(
            imgvec::Query::Path(files[0].clone()),
            &imgvec::SearchOptions::default(),
        )
        .unwrap();
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut kinds = BTreeSet::new();
    let mut parsed = 0usize;
    let files = walk(&path);
    let mut seeds: Vec<(String, u8, Vec<u8>)> = fuzzing::synthetic_bodies()
        .into_iter()
        .map(|(kind, body)| (format!("synthetic kind {kind}"), kind, body))
        .collect();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let Some((kind, body)) = fuzzing::split_derived(&bytes) else {
            continue;
        };
        seeds.push((file.display().to_string(), kind, body.to_vec()));
        // The whole file: header and CRC checks refuse any damage.
        for _ in 0..200 {
            let damaged = mutate(&bytes, &mut rng);
            if damaged != bytes {
                assert!(!fuzzing::derived_file(&damaged), "{}", file.display());
            }
            parsed += 1;
        }
    }
    for (name, kind, body) in &seeds {
        assert!(
            fuzzing::derived_body(*kind, body),
            "{name}: the undamaged body is refused"
        );
        kinds.insert(*kind);
        for _ in 0..400 {
            fuzzing::derived_body(*kind, &mutate(body, &mut rng));
            parsed += 1;
        }
    }
    assert_eq!(
        kinds.len(),
        fuzzing::DERIVED_KINDS as usize,
        "kinds: {kinds:?}"
    );
    let db = Database::open(
        &path,
        OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let record = serde_json::to_vec(&db.records().unwrap()[0]).unwrap();
    let pipeline = serde_json::to_vec(&db.pipeline().unwrap()).unwrap();
    assert!(fuzzing::record(&record) && fuzzing::pipeline(&pipeline));
    for _ in 0..2000 {
        fuzzing::record(&mutate(&record, &mut rng));
        fuzzing::pipeline(&mutate(&pipeline, &mut rng));
        parsed += 2;
    }
    eprintln!("{parsed} damaged inputs parsed, kinds {kinds:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}
