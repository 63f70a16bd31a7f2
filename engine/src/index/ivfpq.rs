//! FAISS IVF-PQ over the stored (unit-norm) vectors, keyed by row id.
//!
//! Concurrency: the faiss crate's `Index::search` takes `&mut self`, but FAISS's C++
//! `Index::search` is `const` and documented thread-safe for CPU indexes; per-call settings
//! (`nprobe`) travel in a `SearchParametersIVF` object owned by the call instead of being written
//! into the index. So [`IvfPq::search`] takes `&self` and calls the C API directly; the only
//! mutations (`add`, `remove`) need `&mut self`, which the owner guards with a read-write lock:
//! any number of searches run in parallel, and an insert waits only for the searches in flight.

use std::path::Path;

use faiss::{Idx, Index, MetricType};

use super::{faiss_index_from_bytes, faiss_index_to_bytes, faiss_search, IndexError};
use crate::derived::artifact::{self, Kind};
use crate::derived::lifecycle::Derived;

pub struct IvfPq {
    index: faiss::index::IndexImpl,
    pub factory: String,
    pub dims: usize,
    pub nlist: usize,
    /// Bytes of one PQ code.
    pub code_bytes: usize,
    /// Rows with ids up to this one have been offered to the index.
    pub watermark: u64,
    /// Live rows when it was trained.
    pub trained_on: u64,
}

/// Parameters of a factory string of the form `IVF<nlist>,PQ<m>[x<nbits>][np]`.
fn parse_factory(factory: &str, dims: usize) -> Result<(usize, usize), IndexError> {
    let bad = || {
        IndexError::Invalid(format!("IVF-PQ factory `{factory}`: expected IVF<nlist>,PQ<m>[x<bits>][np] (optionally after OPQ<m>,)"))
    };
    let parts: Vec<&str> = factory.split(',').collect();
    let ivf = parts
        .iter()
        .find(|p| p.starts_with("IVF"))
        .ok_or_else(bad)?;
    let pq = parts
        .iter()
        .rev()
        .find(|p| p.starts_with("PQ"))
        .ok_or_else(bad)?;
    let nlist: usize = ivf[3..]
        .split('_')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let pq = pq[2..].trim_end_matches("np");
    let (m, nbits) = match pq.split_once('x') {
        Some((m, b)) => (
            m.parse::<usize>().map_err(|_| bad())?,
            b.parse::<usize>().map_err(|_| bad())?,
        ),
        None => (pq.parse::<usize>().map_err(|_| bad())?, 8),
    };
    if m == 0 || nlist == 0 || !dims.is_multiple_of(m) || nbits == 0 || nbits > 16 {
        return Err(bad());
    }
    Ok((nlist, (m * nbits).div_ceil(8)))
}

impl IvfPq {
    /// The default index for `n` vectors of `dims` dimensions: about 4√n lists (at least 39
    /// training points each), 32 (or the largest divisor of `dims` below 32) sub-quantisers of
    /// 8 bits (fewer below 256 rows, where k-means cannot fit 256 centroids), and no
    /// polysemous training (`np`): 32-byte codes + 8-byte ids = 40 bytes per vector.
    pub fn default_factory(n: usize, dims: usize) -> String {
        let nlist = super::default_nlist(n);
        let m = (1..=32.min(dims))
            .rev()
            .find(|m| dims.is_multiple_of(*m))
            .unwrap_or(1);
        let nbits = (usize::BITS - n.max(2).leading_zeros() - 1).clamp(1, 8) as usize;
        format!("IVF{nlist},PQ{m}x{nbits}np")
    }

    /// Rows to train `factory` on out of `n`: 40 per list (FAISS's k-means asks for 39), at
    /// least 65,536 (the PQ codebooks), at most `n`.
    pub fn training_rows(factory: &str, n: usize, dims: usize) -> usize {
        let nlist = parse_factory(factory, dims).map_or(1, |(nlist, _)| nlist);
        (40 * nlist).max(65_536).min(n)
    }

    /// Trains an empty index on `sample` (`rows × dims`).
    pub fn train(
        dims: usize,
        factory: &str,
        sample: &[f32],
        trained_on: u64,
    ) -> Result<IvfPq, IndexError> {
        let (nlist, code_bytes) = parse_factory(factory, dims)?;
        let mut index = faiss::index_factory(dims as u32, factory, MetricType::L2)?;
        index.train(sample)?;
        Ok(IvfPq {
            index,
            factory: factory.to_string(),
            dims,
            nlist,
            code_bytes,
            watermark: 0,
            trained_on,
        })
    }

    /// Adds rows (`ids.len() × dims` floats).
    pub fn add(&mut self, ids: &[u64], vectors: &[f32]) -> Result<(), IndexError> {
        let idx: Vec<Idx> = ids.iter().map(|&i| Idx::new(i)).collect();
        self.index.add_with_ids(vectors, &idx)?;
        if let Some(&last) = ids.iter().max() {
            self.watermark = self.watermark.max(last);
        }
        Ok(())
    }

    pub fn remove(&mut self, ids: &[u64]) -> Result<usize, IndexError> {
        let idx: Vec<Idx> = ids.iter().map(|&i| Idx::new(i)).collect();
        let sel = faiss::selector::IdSelector::batch(&idx)?;
        Ok(self.index.remove_ids(&sel)?)
    }

    pub fn len(&self) -> usize {
        self.index.ntotal() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the vectors it holds.
    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn default_nprobe(&self) -> usize {
        super::default_nprobe(self.nlist)
    }

    /// The `depth` nearest rows by PQ-estimated squared L2 distance, nearest first.
    pub fn search(
        &self,
        query: &[f32],
        depth: usize,
        nprobe: usize,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        if query.len() != self.dims {
            return Err(IndexError::Invalid(format!(
                "query has {} dimensions, index {}",
                query.len(),
                self.dims
            )));
        }
        let nprobe = Some(nprobe.clamp(1, self.nlist));
        let (dis, lab) = faiss_search("IVF-PQ search", &self.index, query, 1, depth, nprobe)?;
        Ok(lab
            .into_iter()
            .zip(dis)
            .filter(|(l, _)| *l >= 0)
            .map(|(l, d)| (l as u64, d))
            .collect())
    }

    /// Bytes of the index in memory per stored vector: code + id in the inverted lists, plus the
    /// coarse centroids and PQ codebooks spread over the rows.
    pub fn bytes_per_vector(&self) -> f64 {
        let n = self.len().max(1) as f64;
        let fixed = (self.nlist * self.dims * 4 + 256 * self.dims * 4) as f64;
        (self.code_bytes + 8) as f64 + fixed / n
    }

    /// The body of its derived file (docs/FORMAT.md).
    pub fn to_body(&self) -> Result<Vec<u8>, IndexError> {
        let bytes = faiss_index_to_bytes("write IVF-PQ", &self.index)?;
        let mut buf = Vec::with_capacity(bytes.len() + 64);
        for v in [self.watermark, self.trained_on, self.factory.len() as u64] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf.extend_from_slice(self.factory.as_bytes());
        buf.extend_from_slice(&bytes);
        Ok(buf)
    }

    /// Writes it as a derived file at `path` (benchmarks; the engine writes through its
    /// publisher).
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        artifact::write(&imgvec_storage::StdFs, path, Kind::IvfPq, &self.to_body()?)
    }

    pub fn load(path: &Path, dims: usize) -> Result<IvfPq, IndexError> {
        IvfPq::parse(&artifact::read(path, Kind::IvfPq)?, Some(dims))
    }

    /// The index a file's body holds (of `dims`-long vectors, when given), or why it holds
    /// none.
    pub(crate) fn parse(bytes: &[u8], dims: Option<usize>) -> Result<IvfPq, IndexError> {
        let word = |i: usize| -> Result<u64, IndexError> {
            bytes
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| IndexError::Invalid("file ends early".into()))
        };
        let (watermark, trained_on, flen) = (word(0)?, word(1)?, word(2)? as usize);
        let factory = bytes
            .get(24..24 + flen.min(bytes.len()))
            .filter(|f| f.len() == flen)
            .and_then(|f| std::str::from_utf8(f).ok())
            .ok_or_else(|| IndexError::Invalid("bad factory string".into()))?
            .to_string();
        let index = faiss_index_from_bytes("read IVF-PQ", &bytes[24 + flen..], dims)?;
        let dims = index.d() as usize;
        let (nlist, code_bytes) = parse_factory(&factory, dims)?;
        Ok(IvfPq {
            index,
            factory,
            dims,
            nlist,
            code_bytes,
            watermark,
            trained_on,
        })
    }
}

impl Derived for IvfPq {
    fn watermark(&self) -> u64 {
        self.watermark
    }
    fn rows(&self) -> usize {
        self.len()
    }
    fn trained_on(&self) -> u64 {
        self.trained_on
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_factory_scales_with_n() {
        assert_eq!(IvfPq::default_factory(1_000_000, 256), "IVF4000,PQ32x8np");
        assert_eq!(IvfPq::default_factory(684, 1280), "IVF17,PQ32x8np");
        assert_eq!(IvfPq::default_factory(100, 64), "IVF2,PQ32x6np");
        assert_eq!(IvfPq::default_factory(20_000, 100), "IVF512,PQ25x8np");
        for (n, d) in [(1usize, 3usize), (50, 7), (10_000, 1280)] {
            let f = IvfPq::default_factory(n, d);
            parse_factory(&f, d).unwrap();
        }
        assert!(parse_factory("IVF10,PQ7", 256).is_err());
        assert!(parse_factory("Flat", 256).is_err());
    }

    #[test]
    fn full_probe_returns_everything() {
        let dims = 64;
        let n = 360;
        let v: Vec<f32> = (0..n * dims)
            .map(|i| ((i * 7919 % 1000) as f32) / 1000.0)
            .collect();
        let f = IvfPq::default_factory(n, dims);
        let mut ivf = IvfPq::train(dims, &f, &v, n as u64).unwrap();
        let ids: Vec<u64> = (100..100 + n as u64).collect();
        ivf.add(&ids, &v).unwrap();
        let r = ivf.search(&v[..dims], 200, 100).unwrap();
        let r2 = ivf.search(&v[..dims], 200, 100).unwrap();
        assert_eq!(r, r2);
        assert_eq!(r.len(), 200);
        assert!(r.iter().all(|(id, _)| ids.contains(id)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ivf.idx");
        ivf.save(&path).unwrap();
        let back = IvfPq::load(&path, dims).unwrap();
        assert_eq!(
            (back.len(), back.factory.as_str(), back.watermark),
            (n, f.as_str(), ivf.watermark)
        );
        assert_eq!(back.search(&v[..dims], 200, 100).unwrap(), r);
        assert!(IvfPq::load(&path, dims + 1).is_err());
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            IvfPq::load(&path, dims).is_err(),
            "a flipped byte must fail the CRC"
        );
    }
}
