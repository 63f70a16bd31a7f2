//! FAISS's binary IVF over the Hamming codes (`hamming-ivf` mode): build, add, remove,
//! search, and its derived file.

use std::path::Path;

use faiss::index::{BinaryIndexImpl, FromInnerPtr};
use faiss::{Idx, Index};

use super::Reader;
use crate::derived::artifact::{self, Kind};
use crate::index::{faiss_call, faiss_read_mem, faiss_write_mem, IndexError};

/// FAISS's binary IVF over the same codes: a coarse binary k-means, then a scan of the
/// `nprobe` nearest lists. Searched through `&self` (see `IvfPq` for why that is sound).
pub struct BinaryIvf {
    index: BinaryIndexImpl,
    pub nlist: usize,
    words: usize,
}

impl BinaryIvf {
    /// Trains on a sample of codes and adds every (id, code).
    pub fn build(
        words: usize,
        ids: &[u64],
        codes: &[u64],
        nlist: usize,
    ) -> Result<BinaryIvf, IndexError> {
        let d = (words * 64) as u32;
        let mut index = faiss::index_binary_factory(d, format!("BIVF{nlist}"))?;
        let bytes: &[u8] = bytemuck_u64(codes);
        let n = ids.len();
        let sample_rows = n.min(nlist * 64).max(nlist.min(n));
        let stride = (n / sample_rows.max(1)).max(1);
        let mut sample = Vec::with_capacity(sample_rows * words * 8);
        for row in (0..n).step_by(stride).take(sample_rows) {
            sample.extend_from_slice(&bytes[row * words * 8..(row + 1) * words * 8]);
        }
        index.train(&sample)?;
        let mut ivf = BinaryIvf {
            index,
            nlist,
            words,
        };
        ivf.add(ids, codes)?;
        Ok(ivf)
    }

    pub fn add(&mut self, ids: &[u64], codes: &[u64]) -> Result<(), IndexError> {
        let idx: Vec<Idx> = ids.iter().map(|&i| Idx::new(i)).collect();
        self.index.add_with_ids(bytemuck_u64(codes), &idx)?;
        Ok(())
    }

    /// 64-bit words per code.
    pub fn words(&self) -> usize {
        self.words
    }

    pub fn len(&self) -> usize {
        self.index.ntotal() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn remove(&mut self, ids: &[u64]) -> Result<usize, IndexError> {
        let idx: Vec<Idx> = ids.iter().map(|&i| Idx::new(i)).collect();
        let sel = faiss::selector::IdSelector::batch(&idx)?;
        Ok(self.index.remove_ids(&sel)?)
    }

    /// The `depth` nearest codes among the `nprobe` nearest lists, as (id, distance).
    pub fn search(
        &self,
        code: &[u64],
        depth: usize,
        nprobe: usize,
    ) -> Result<Vec<(u64, u32)>, IndexError> {
        let nprobe = nprobe.clamp(1, self.nlist);
        let q = bytemuck_u64(&code[..self.words]);
        let ptr = self.index.inner_ptr();
        let mut cdis = vec![0i32; nprobe];
        let mut cidx = vec![0i64; nprobe];
        let mut dis = vec![0i32; depth];
        let mut lab = vec![-1i64; depth];
        let mut params = faiss::search_params::SearchParametersIVF::new()?;
        params.set_nprobe(nprobe);
        // SAFETY: `ptr` is a live IndexBinaryIVF (built by BIVF factory); its quantizer is owned
        // by it. Both searches are const in FAISS and write only to the buffers passed here,
        // sized nprobe and depth for one query.
        unsafe {
            let ivf = faiss_sys::faiss_IndexBinaryIVF_cast(ptr);
            if ivf.is_null() {
                return Err(IndexError::Invalid("binary index is not an IVF".into()));
            }
            let quantizer = faiss_sys::faiss_IndexBinaryIVF_quantizer(ivf);
            faiss_call(
                "binary quantizer search",
                faiss_sys::faiss_IndexBinary_search(
                    quantizer,
                    1,
                    q.as_ptr(),
                    nprobe as i64,
                    cdis.as_mut_ptr(),
                    cidx.as_mut_ptr(),
                ),
            )?;
            faiss_call(
                "binary IVF search",
                faiss_sys::faiss_IndexBinaryIVF_search_preassigned(
                    ivf,
                    1,
                    q.as_ptr(),
                    depth as i64,
                    cidx.as_ptr(),
                    cdis.as_ptr(),
                    dis.as_mut_ptr(),
                    lab.as_mut_ptr(),
                    0,
                    params.inner_ptr(),
                ),
            )?;
        }
        Ok(lab
            .into_iter()
            .zip(dis)
            .filter(|(l, _)| *l >= 0)
            .map(|(l, d)| (l as u64, d as u32))
            .collect())
    }

    /// The body of its derived file: lists, words, FAISS's own serialisation.
    pub fn to_body(&self) -> Result<Vec<u8>, IndexError> {
        let ptr = self.index.inner_ptr();
        // SAFETY: `ptr` is a live binary index; FAISS only reads it while writing the stream.
        let bytes = faiss_write_mem("write binary IVF", |f| unsafe {
            faiss_sys::faiss_write_index_binary(ptr, f)
        })?;
        let mut buf = (self.nlist as u64).to_le_bytes().to_vec();
        buf.extend_from_slice(&(self.words as u64).to_le_bytes());
        buf.extend_from_slice(&bytes);
        Ok(buf)
    }

    /// Writes it as a derived file at `path` (benchmarks; the engine writes through its
    /// publisher).
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        artifact::write(
            &imgvec_storage::StdFs,
            path,
            Kind::BinaryIvf,
            &self.to_body()?,
        )
    }

    pub fn load(path: &Path) -> Result<BinaryIvf, IndexError> {
        BinaryIvf::parse(&artifact::read(path, Kind::BinaryIvf)?)
    }

    /// The index a file's body holds, or why it holds none.
    pub(crate) fn parse(bytes: &[u8]) -> Result<BinaryIvf, IndexError> {
        let mut r = Reader { buf: bytes, at: 0 };
        let (nlist, words) = (r.u64()? as usize, r.u64()? as usize);
        let mut raw = std::ptr::null_mut();
        // SAFETY: FAISS writes a new index pointer to `raw` on success.
        faiss_read_mem("read binary IVF", &bytes[16..], |f| unsafe {
            faiss_sys::faiss_read_index_binary(f, 0, &mut raw)
        })?;
        // SAFETY: `raw` was just created by FAISS and is owned by nobody else.
        let index = unsafe { BinaryIndexImpl::from_inner_ptr(raw) };
        // SAFETY: `raw` is live (owned by `index`); the casts and getters only read it.
        let ivf = unsafe { faiss_sys::faiss_IndexBinaryIVF_cast(raw) };
        if ivf.is_null() {
            return Err(IndexError::Invalid(
                "binary index file is not an IVF".into(),
            ));
        }
        // The header's shape must be the index's own: searches size their buffers from it.
        // SAFETY: as above.
        let (d, lists) = unsafe {
            (
                faiss_sys::faiss_IndexBinary_d(raw),
                faiss_sys::faiss_IndexBinaryIVF_nlist(ivf),
            )
        };
        if words == 0
            || nlist == 0
            || words.checked_mul(64) != usize::try_from(d).ok()
            || lists != nlist
        {
            return Err(IndexError::Invalid(format!(
                "binary IVF header says {words} words and {nlist} lists; the index has {d} bits \
                 and {lists} lists"
            )));
        }
        Ok(BinaryIvf {
            index,
            nlist,
            words,
        })
    }
}

fn bytemuck_u64(words: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8; the length is exact.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}
