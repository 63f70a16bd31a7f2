//! Entry points for the fuzz targets (`fuzz/`) and the suite's mutation tests: every parser of
//! bytes imgvec reads back from disk, fed bytes that may be anything. Not an API (hidden from
//! the docs, free to change). Each function returns whether the bytes were accepted; an
//! accepted structure is exercised once (a search), so a parser that accepts what later reads
//! out of bounds is caught too. None may panic or abort.

use imgvec_storage::ImageRecord;

use crate::dense::DenseIndex;
use crate::derived::artifact::{self, Body, Kind};
use crate::derived::slot::Persisted;
use crate::derived::view_file;
use crate::error::IndexError;
use crate::index::hamming::{BinaryIvf, HammingIndex};
use crate::index::ivfpq::IvfPq;
use crate::index::mapped_lists;
use crate::index::rows::KnnRows;
use crate::local::LocalIndex;
use crate::pipeline::PipelineConfig;
use crate::vlad::{Vlad, DESCRIPTOR_DIMS};
use crate::whitening::Whitening;

/// Kinds of derived files, in the order [`derived_body`] numbers them.
pub const DERIVED_KINDS: u8 = 8;

/// A whole derived file (header, body, CRC) checked as each kind.
pub fn derived_file(bytes: &[u8]) -> bool {
    Kind::ALL
        .iter()
        .any(|&kind| artifact::decode(kind, bytes).is_ok())
}

/// The kind number and body of a whole derived file (CRC checked), as [`derived_body`] takes
/// them: the mutation tests start from real files.
pub fn split_derived(bytes: &[u8]) -> Option<(u8, &[u8])> {
    Kind::ALL.iter().enumerate().find_map(|(i, &kind)| {
        artifact::decode(kind, bytes)
            .ok()
            .map(|body| (i as u8, body))
    })
}

/// A voting or dense-window body parsed as the loader parses it, the CRC its kNN lists layout
/// keeps over what precedes the lists re-signed first (a fuzzer cannot forge it, and the parsing
/// behind it is what is fuzzed); an accepted index is searched once, which checks the lists the
/// search probes.
fn knn_body<R>(body: &[u8], decode: impl Fn(Body) -> Result<KnnRows<R>, IndexError>) -> bool {
    let mut bytes = body.to_vec();
    mapped_lists::resign(&mut bytes);
    decode(Body::copied(&bytes))
        .map(|ix| {
            let _ = ix.knn.search(&vec![0.0; ix.knn.dims], 3, 8);
        })
        .is_ok()
}

/// The body of a derived file of kind number `kind` (modulo [`DERIVED_KINDS`]), parsed as the
/// loader parses it once the frame's CRC matched (the fuzzer reaches the parsers without having
/// to forge CRCs).
pub fn derived_body(kind: u8, body: &[u8]) -> bool {
    match Kind::ALL[(kind % DERIVED_KINDS) as usize] {
        Kind::IvfPq => IvfPq::parse(body, None)
            .map(|ix| ix.search(&vec![0.0; ix.dims()], 3, 2).is_ok())
            .is_ok(),
        Kind::Hamming => HammingIndex::parse(body)
            .map(|ix| ix.search(&vec![0; ix.words()], 3))
            .is_ok(),
        Kind::BinaryIvf => BinaryIvf::parse(body)
            .map(|ix| ix.search(&vec![0; ix.words()], 3, 2).is_ok())
            .is_ok(),
        Kind::Whitening => Whitening::from_bytes(body)
            .map(|w| w.apply(&vec![0.5; w.dims_in]))
            .is_some(),
        Kind::Vlad => Vlad::from_bytes(body).is_some(),
        Kind::Voting => knn_body(body, <LocalIndex as Persisted>::from_body),
        Kind::Dense => knn_body(body, <DenseIndex as Persisted>::from_body),
        Kind::View => {
            // The header's own projection and width, so the parser goes past its first check.
            let word = |at: usize| {
                body.get(at..at + 8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            };
            let dims = usize::try_from(word(16)).unwrap_or(0).min(1 << 16);
            view_file::parse(body, word(0), dims).is_ok()
        }
    }
}

/// Valid bodies of the kinds a small database does not learn (whitening, VLAD, the whitened
/// view), made from their layouts: starting points for the mutation tests and fuzz seeds.
pub fn synthetic_bodies() -> Vec<(u8, Vec<u8>)> {
    let index = |kind: Kind| Kind::ALL.iter().position(|&k| k == kind).expect("a kind") as u8;
    let values = |n: usize| (0..n).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<f32>>();
    let whitening = |dims_in: usize, dims_out: usize| {
        Whitening::from_parts(dims_in, values(dims_in * dims_out), values(dims_out))
    };
    let vlad = Vlad::from_parts(
        0.5,
        values(2 * DESCRIPTOR_DIMS),
        whitening(2 * DESCRIPTOR_DIMS, 8),
    );
    let mut view = Vec::new();
    for w in [7u64, 3, 4, 2] {
        view.extend_from_slice(&w.to_le_bytes()); // space, watermark, dims, rows
    }
    for id in [1u64, 3] {
        view.extend_from_slice(&id.to_le_bytes());
    }
    for v in values(8) {
        view.extend_from_slice(&v.to_le_bytes());
    }
    vec![
        (index(Kind::Whitening), whitening(6, 4).to_bytes()),
        (index(Kind::Vlad), vlad.to_bytes()),
        (index(Kind::View), view),
    ]
}

/// An image record as stored in the `images` column family (JSON).
pub fn record(bytes: &[u8]) -> bool {
    serde_json::from_slice::<ImageRecord>(bytes)
        .map(|r| r.os_path())
        .is_ok()
}

/// A pipeline record as stored under `meta:pipeline` (JSON).
pub fn pipeline(bytes: &[u8]) -> bool {
    serde_json::from_slice::<PipelineConfig>(bytes).is_ok()
}
