//! A FAISS index over many short unit vectors per row — local descriptors, dense windows —
//! keyed by row id (a row's vectors share its id): exact (`IDMap,Flat`) while small, IVF-PQ
//! once there are enough vectors to train it. Searches are batched (one call for all of a
//! query's vectors) and take `&self` (see `ivfpq` on why that is sound).

use std::sync::atomic::{AtomicBool, Ordering};

use faiss::{Idx, Index, MetricType};

use super::{faiss_index_from_bytes, faiss_index_to_bytes, faiss_search, mapped_lists, IndexError};
use crate::derived::artifact::Body;

/// The exact layout, used while a structure is small.
pub(crate) const EXACT_FACTORY: &str = "IDMap,Flat";

/// How a [`Knn`] is laid out once it is large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KnnShape {
    pub dims: usize,
    /// Below this many vectors the index is exact.
    pub exact_below: usize,
    /// Bytes of one PQ code (sub-quantisers of 4 bits, FAISS's fast-scan layout).
    pub code_bytes: usize,
    /// Most inverted lists.
    pub max_lists: usize,
}

impl KnnShape {
    /// The factory string for `n` vectors: `IDMap,Flat` below `exact_below`, else
    /// `IVF<√n>,PQ<2·code_bytes>x4fs` (16 ≤ lists ≤ `max_lists`, 40 training vectors a list).
    /// 4-bit fast-scan codes: measured on 438,000 SIFT-sized vectors, 8-bit PQ16 trains in 59 s
    /// (13 s without polysemous training), PQ32x4fs in 1.2 s, and scans faster.
    pub fn factory(&self, n: usize) -> String {
        if n < self.exact_below.max(256 * 40) {
            return EXACT_FACTORY.into();
        }
        let nlist = ((n as f64).sqrt() as usize).clamp(16, self.max_lists.max(16));
        format!("IVF{nlist},PQ{}x4fs", 2 * self.code_bytes)
    }
}

/// Lists of an `IVF<n>,...` factory string (1 for anything else).
pub(crate) fn knn_lists(factory: &str) -> usize {
    factory
        .strip_prefix("IVF")
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

pub(crate) struct Knn {
    index: faiss::index::IndexImpl,
    /// The memory the index's inverted lists lie in when it was read from a file
    /// (`mapped_lists`): `Some` exactly while the index borrows its lists from it (until
    /// `add` copies them); declared after `index`, so it outlives it.
    lists: Option<Body>,
    /// Read from FAISS's whole serialisation of an IVF index ([`Knn::outdated`]).
    read_whole: bool,
    /// A search found a list in the file failing its checksum ([`Knn::damaged`]).
    damaged: AtomicBool,
    pub factory: String,
    pub dims: usize,
    pub nlist: usize,
}

impl Knn {
    /// An empty index of `factory`, trained on `sample` (`rows × dims`) when it has lists.
    pub fn train(dims: usize, factory: &str, sample: &[f32]) -> Result<Knn, IndexError> {
        let mut index = faiss::index_factory(dims as u32, factory, MetricType::L2)?;
        let nlist = knn_lists(factory);
        if nlist > 1 {
            index.train(sample)?;
        }
        Ok(Knn {
            index,
            lists: None,
            read_whole: false,
            damaged: AtomicBool::new(false),
            factory: factory.to_string(),
            dims,
            nlist,
        })
    }

    /// Adds vectors (`ids.len() × dims` floats), each under its row's id.
    pub fn add(&mut self, ids: &[u64], vectors: &[f32]) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        if self.lists.is_some() {
            mapped_lists::own_lists(&mut self.index).inspect_err(|e| self.note(e))?;
            self.lists = None;
        }
        let idx: Vec<Idx> = ids.iter().map(|&i| Idx::new(i)).collect();
        self.index.add_with_ids(vectors, &idx)?;
        Ok(())
    }

    /// Whether a search's similarities are exact: the exact layout keeps the vectors
    /// themselves; an IVF-PQ index estimates them from its codes.
    pub fn is_exact(&self) -> bool {
        self.nlist == 1
    }

    /// Whether [`Knn::remove`] works: the exact layout removes in place; FAISS's fast-scan
    /// inverted lists do not (they are rebuilt instead).
    pub fn removes_in_place(&self) -> bool {
        self.nlist == 1
    }

    /// Drops every vector of the rows `ids` (layouts that remove in place only).
    pub fn remove(&mut self, ids: &[u64]) -> Result<usize, IndexError> {
        if ids.is_empty() {
            return Ok(0);
        }
        if self.lists.is_some() {
            // FAISS removes from lists it owns only (and none read in place is exact).
            return Err(IndexError::Invalid(
                "kNN index: lists read in place do not remove vectors".into(),
            ));
        }
        let idx: Vec<Idx> = ids.iter().map(|&i| Idx::new(i)).collect();
        let sel = faiss::selector::IdSelector::batch(&idx)?;
        Ok(self.index.remove_ids(&sel)?)
    }

    pub fn len(&self) -> usize {
        self.index.ntotal() as usize
    }

    /// The `k` nearest vectors of each of the `queries` (`nq × dims`): for query `q`, entries
    /// `q*k..(q+1)*k` of (row ids, cosines), nearest first; `None` where fewer were found.
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        nprobe: usize,
    ) -> Result<Vec<Option<(u64, f32)>>, IndexError> {
        let nq = queries.len() / self.dims;
        if nq == 0 || k == 0 || self.len() == 0 {
            return Ok(vec![None; nq * k]);
        }
        let nprobe = nprobe.clamp(1, self.nlist.max(1));
        // Lists in place are only searched through the path that checks each probed list
        // (`Knn::read` made sure such an index has lists).
        let (dis, lab) = if self.lists.is_some() {
            mapped_lists::search(&self.index, queries, nq, k, nprobe)
                .inspect_err(|e| self.note(e))?
        } else {
            let nprobe = (self.nlist > 1).then_some(nprobe);
            faiss_search("kNN search", &self.index, queries, nq, k, nprobe)?
        };
        // Unit vectors: squared L2 = 2 − 2 cos.
        Ok(lab
            .into_iter()
            .zip(dis)
            .map(|(l, d)| u64::try_from(l).ok().map(|id| (id, 1.0 - d / 2.0)))
            .collect())
    }

    /// Whether the index searches its lists where they lie in a mapped file (see
    /// `mapped_lists`), not in copies of its own.
    pub fn lists_in_place(&self) -> bool {
        self.lists.is_some()
    }

    /// Remembers that `e`, an error of reading the lists in place, found them damaged.
    fn note(&self, e: &IndexError) {
        if matches!(e, IndexError::Damaged(_)) {
            self.damaged.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a search found part of the file its lists lie in damaged (its answer was an
    /// error; the structure must be rebuilt, not used again).
    pub fn damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// Whether this IVF index was read from FAISS's whole serialisation (files written before
    /// the lists layout), so its lists were copied.
    pub fn outdated(&self) -> bool {
        self.read_whole
    }

    /// Appends the index to `out`, whose first byte (`out[0]`) will lie at file offset `at`: factory
    /// length (u32 LE), factory, then the lists layout of `mapped_lists` for IVF layouts, FAISS's
    /// serialisation for the exact one.
    pub fn write(&self, out: &mut Vec<u8>, at: usize) -> Result<(), IndexError> {
        out.extend_from_slice(&(self.factory.len() as u32).to_le_bytes());
        out.extend_from_slice(self.factory.as_bytes());
        if mapped_lists::geometry_lists(&self.index).is_some() {
            mapped_lists::write(&self.index, out, at)
        } else {
            out.extend(faiss_index_to_bytes("write kNN index", &self.index)?);
            Ok(())
        }
    }

    /// Reads what [`Knn::write`] wrote (all of `body`); an IVF layout searches its lists in
    /// `body`'s memory (held by the `Knn`). Files written before the lists layout (FAISS's whole
    /// serialisation) are read too, into FAISS's own lists.
    pub fn read(body: &Body, dims: usize) -> Result<Knn, IndexError> {
        let bytes = body.bytes();
        let bad = |what: &str| IndexError::Invalid(format!("kNN index: {what}"));
        let flen = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| bad("ends early"))?;
        let factory = bytes
            .get(4..4 + flen)
            .and_then(|f| std::str::from_utf8(f).ok())
            .ok_or_else(|| bad("bad factory string"))?
            .to_string();
        let rest = body.slice(4 + flen..bytes.len());
        let (index, lists) = if rest.bytes().starts_with(mapped_lists::MAGIC) {
            let (index, lists) = mapped_lists::read(&rest, dims)?;
            (index, Some(lists))
        } else {
            // FAISS's own serialisation checks nothing: the file's CRC first, so damage is
            // reported as such instead of parsed (a damaged count can ask for any allocation).
            rest.check_whole().map_err(IndexError::Damaged)?;
            let index = faiss_index_from_bytes("read kNN index", rest.bytes(), Some(dims))?;
            (index, None)
        };
        let nlist = knn_lists(&factory);
        // The factory string decides how the index is searched and purged: it must name the
        // index that follows (lists for an IVF layout, which the lists layout always is).
        let lists_there = match mapped_lists::geometry_lists(&index) {
            Some(n) => n == nlist && nlist > 1,
            None => nlist == 1 && lists.is_none(),
        };
        if !lists_there {
            return Err(bad(&format!(
                "the index does not match its factory {factory:?}"
            )));
        }
        Ok(Knn {
            index,
            read_whole: lists.is_none() && nlist > 1,
            damaged: AtomicBool::new(false),
            lists,
            nlist,
            factory,
            dims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(n: usize, dims: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut out = Vec::with_capacity(n * dims);
        for _ in 0..n {
            let row: Vec<f32> = (0..dims)
                .map(|_| {
                    s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                })
                .collect();
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            out.extend(row.iter().map(|v| v / norm));
        }
        out
    }

    /// An index in FAISS's own serialisation (exact, below the lists layout's sizes) is read
    /// from a file only after the file's CRC: damage FAISS would parse without noticing (a
    /// vector's byte) is refused.
    #[test]
    fn faiss_serialisations_are_checked_before_faiss_reads_them() {
        use crate::derived::artifact::{encode, read_body_unchecked, Kind, FOOTER_LEN};
        let dims = 32;
        let data = unit_rows(100, dims, 9);
        let ids: Vec<u64> = (1..=100).collect();
        let mut knn = Knn::train(dims, "IDMap,Flat", &data).unwrap();
        knn.add(&ids, &data).unwrap();
        let mut body = Vec::new();
        knn.write(&mut body, 0).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("voting.idx");
        let mut file = encode(Kind::Voting, &body);
        std::fs::write(&path, &file).unwrap();
        let read = |path: &std::path::Path| {
            Knn::read(&read_body_unchecked(path, Kind::Voting).unwrap(), dims)
        };
        assert_eq!(read(&path).unwrap().len(), 100);
        // A byte in the middle of the vectors: FAISS reads that as another float.
        let at = file.len() / 2;
        file[at] ^= 0x10;
        std::fs::write(&path, &file).unwrap();
        // Read in memory (no file, so no CRC), the damaged body parses.
        let damaged = &file[file.len() - FOOTER_LEN - body.len()..file.len() - FOOTER_LEN];
        assert_ne!(damaged, &body[..]);
        assert!(Knn::read(&Body::copied(damaged), dims).is_ok());
        match read(&path) {
            Err(IndexError::Damaged(why)) => assert!(why.contains("checksum"), "{why}"),
            other => panic!("expected damage, got {:?}", other.map(|k| k.len())),
        }
    }

    /// `knn` written at a file offset that is not a multiple of 64 and read back (its lists
    /// then copied into aligned memory).
    fn round_trip(knn: &Knn, dims: usize) -> Result<Knn, IndexError> {
        let mut out = vec![0u8; 5];
        knn.write(&mut out, 32)?;
        Knn::read(&Body::copied(&out).slice(5..out.len()), dims)
    }

    #[test]
    fn factory_is_exact_while_small_then_ivf_pq() {
        let shape = KnnShape {
            dims: 128,
            exact_below: 20_000,
            code_bytes: 16,
            max_lists: 4096,
        };
        assert_eq!(shape.factory(19_999), "IDMap,Flat");
        assert_eq!(shape.factory(40_000), "IVF200,PQ32x4fs");
        assert_eq!(shape.factory(100_000_000), "IVF4096,PQ32x4fs");
        assert_eq!(knn_lists("IVF200,PQ32x4fs"), 200);
        assert_eq!(knn_lists("IDMap,Flat"), 1);
    }

    #[test]
    fn finds_each_rows_own_vectors_exact_and_compressed_and_round_trips() {
        let dims = 32;
        let n = 12_000;
        let data = unit_rows(n, dims, 3);
        // Four vectors a row.
        let ids: Vec<u64> = (0..n as u64).map(|i| 10 + i / 4).collect();
        for factory in ["IDMap,Flat", "IVF64,PQ16x4fs"] {
            let mut knn = Knn::train(dims, factory, &data).unwrap();
            knn.add(&ids, &data).unwrap();
            assert_eq!(knn.len(), n);
            let queries = &data[..dims * 100];
            let found = knn.search(queries, 3, 64).unwrap();
            let own = (0..100)
                .filter(|&q| found[q * 3].map(|f| f.0) == Some(ids[q]))
                .count();
            assert!(own >= 95, "{factory}: {own} of 100 find their own row");
            let back = round_trip(&knn, dims).unwrap();
            assert_eq!(
                (back.len(), back.nlist, back.factory.clone()),
                (n, knn.nlist, knn.factory.clone())
            );
            assert_eq!(back.search(queries, 3, 64).unwrap(), found);
            assert!(round_trip(&knn, dims + 1).is_err());
            // Removing a row drops all four of its vectors, where the layout can.
            assert_eq!(knn.removes_in_place(), factory == "IDMap,Flat");
            if knn.removes_in_place() {
                assert_eq!(knn.remove(&[10]).unwrap(), 4);
                let again = knn.search(&data[..dims], 3, 64).unwrap();
                assert!(again.iter().flatten().all(|(id, _)| *id != 10));
            }
        }
    }

    #[test]
    fn ivf_lists_are_searched_where_they_lie_until_rows_are_added() {
        // Row ids that fit in 4 bytes (stored so) and ones that do not (stored in 8).
        for base in [1, 1 << 33] {
            lists_in_place(base);
        }
    }

    fn lists_in_place(base: u64) {
        let dims = 32;
        let n = 12_000;
        let data = unit_rows(n + 400, dims, 5);
        let ids: Vec<u64> = (0..n as u64 + 400).map(|i| base + i / 4).collect();
        let mut knn = Knn::train(dims, "IVF64,PQ16x4fs", &data[..n * dims]).unwrap();
        knn.add(&ids[..n], &data[..n * dims]).unwrap();
        assert!(!knn.lists_in_place());
        let queries = &data[..dims * 50];
        let found = knn.search(queries, 5, 8).unwrap();

        // Written at a file offset the lists align to: read in place, same answers.
        let mut out = Vec::new();
        knn.write(&mut out, 0).unwrap();
        let body = Body::copied(&out);
        let mut back = Knn::read(&body, dims).unwrap();
        assert!(back.lists_in_place());
        assert_eq!(back.len(), n);
        assert_eq!(back.search(queries, 5, 8).unwrap(), found);
        // Read again and written again: the same bytes.
        let mut again = Vec::new();
        back.write(&mut again, 0).unwrap();
        assert!(again == out, "a re-written index differs");

        // Adding copies the lists first: the same answers as the index never written, and the
        // new rows are found.
        back.add(&ids[n..], &data[n * dims..]).unwrap();
        assert!(!back.lists_in_place());
        drop(body);
        knn.add(&ids[n..], &data[n * dims..]).unwrap();
        assert_eq!(back.len(), n + 400);
        assert_eq!(
            back.search(queries, 5, 8).unwrap(),
            knn.search(queries, 5, 8).unwrap()
        );
        let added = back
            .search(&data[n * dims..(n + 50) * dims], 1, 64)
            .unwrap();
        let own = (0..50)
            .filter(|&q| added[q].map(|f| f.0) == Some(ids[n + q]))
            .count();
        assert!(own >= 45, "{own} of 50 added rows find themselves");

        // A damaged list is found when a search first probes it (probing every list here): the
        // search fails as damaged, and the index says so. Damage before the lists is found
        // when the file is read.
        let mut bad = out.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x40;
        let damaged = Knn::read(&Body::copied(&bad), dims).unwrap();
        assert!(!damaged.damaged());
        let err = damaged.search(queries, 5, 64).unwrap_err();
        assert!(matches!(err, IndexError::Damaged(_)), "{err}");
        assert!(damaged.damaged());
        let mut bad = out.clone();
        bad[40] ^= 0x01;
        let err = Knn::read(&Body::copied(&bad), dims).err().unwrap();
        assert!(matches!(err, IndexError::Damaged(_)), "{err}");
        // Re-signed (the fuzz entry's way past that check), the same bytes reach the parsers.
        assert!(mapped_lists::resign(&mut bad));
        let err = Knn::read(&Body::copied(&bad), dims).err().unwrap();
        assert!(!matches!(err, IndexError::Damaged(_)), "{err}");

        // Lists cut short or longer than their sizes say are refused.
        for len in [out.len() - 1, out.len() - 9, out.len() / 2] {
            assert!(
                Knn::read(&Body::copied(&out[..len]), dims).is_err(),
                "{len}"
            );
        }
        let mut longer = out.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(Knn::read(&Body::copied(&longer), dims).is_err());

        // A list size grown by an amount whose code and id bytes wrap to nothing (a crafted
        // file, re-signed): the totals would still match; refused, not searched.
        let magic_at = out
            .windows(mapped_lists::MAGIC.len())
            .position(|w| w == mapped_lists::MAGIC)
            .unwrap();
        let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let head_len = u64_at(&out, magic_at + 8) as usize;
        let geometry_at = magic_at + 16 + head_len;
        let id_bytes = u64_at(&out, geometry_at + 24);
        let first_size_at = geometry_at + 32;
        let mut wrapped = out.clone();
        let grown = u64_at(&out, first_size_at) + (1u64 << if id_bytes == 4 { 62 } else { 61 });
        wrapped[first_size_at..first_size_at + 8].copy_from_slice(&grown.to_le_bytes());
        assert!(mapped_lists::resign(&mut wrapped));
        let err = Knn::read(&Body::copied(&wrapped), dims).err().unwrap();
        assert!(err.to_string().contains("out of range"), "{err}");

        // Lists under a factory string that names an exact index (which would be searched
        // and purged without checking them): refused.
        let factory_len = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
        let exact = "IDMap,Flat";
        let mut renamed = (exact.len() as u32).to_le_bytes().to_vec();
        renamed.extend_from_slice(exact.as_bytes());
        renamed.extend_from_slice(&out[4 + factory_len..]);
        assert!(mapped_lists::resign(&mut renamed));
        let err = Knn::read(&Body::copied(&renamed), dims).err().unwrap();
        assert!(
            err.to_string().contains("does not match its factory"),
            "{err}"
        );
    }
}
