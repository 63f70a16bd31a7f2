//! A fast-scan IVF index stored so that its inverted lists are searched where they lie in the
//! mapped derived file (docs/FORMAT.md, "kNN lists"): FAISS's own reader copies every list into
//! its memory on each open — 1.9 GB of voting and dense-window lists at 100,000 robust rows, the
//! bulk of a cold search. Here FAISS reads only the index without its lists (quantisers, PQ
//! tables) and is handed the lists in place (engine/cpp/faiss_lists.cpp); a handle that adds
//! rows copies them into FAISS's own lists first. Nothing is read whole to be checked: what
//! precedes the lists has its own CRC, checked when read, and each list its own, checked the
//! first time a search probes it (a failure is [`IndexError::Damaged`]: the file is rebuilt).
//!
//! ```text
//! offset  size  field
//!      0     8  magic "IMGVLSTS"
//!      8     8  h: bytes of the FAISS index written without its lists (u64 LE)
//!     16     h  that index
//!              nlist, vectors a block, bytes a block, bytes a row id i (4 or 8) (u64 LE each)
//!              nlist list sizes (u64 LE each)
//!              nlist list CRC-32s (u32 LE each): of the list's codes followed by its ids
//!              CRC-32 (u32 LE) of the whole body up to here (what precedes the lists)
//!              p: padding bytes (u64 LE), then p zero bytes, so that what follows starts at a
//!                 file offset that is a multiple of 64
//!              codes: each list's blocks in list order (ceil(size / vectors a block) blocks)
//!              ids: each list's row ids in list order (i bytes LE each: 4 while every id
//!                 fits, widened to FAISS's 8 when a search first probes the list)
//! ```

use faiss::index::IndexImpl;

use super::faiss_io::{faiss_index_from_bytes, faiss_write_mem};
use crate::derived::artifact::{Body, Reader};
use crate::error::IndexError;

pub(crate) const MAGIC: &[u8; 8] = b"IMGVLSTS";
/// The codes start at a file offset that is a multiple of this (FAISS loads them 32 at a time
/// with aligned loads).
const ALIGN: usize = 64;

extern "C" {
    fn imgvec_lists_last_error() -> *const libc::c_char;
    fn imgvec_ivf_geometry(
        index: *const libc::c_void,
        nlist: *mut usize,
        n_per_block: *mut usize,
        block_size: *mut usize,
    ) -> i32;
    fn imgvec_ivf_list(
        index: *const libc::c_void,
        list_no: usize,
        n: *mut usize,
        ids: *mut *const i64,
        codes: *mut *const u8,
    ) -> i32;
    fn imgvec_ivf_write_without_lists(index: *const libc::c_void, f: *mut faiss_sys::FILE) -> i32;
    fn imgvec_ivf_borrow_lists(
        index: *mut libc::c_void,
        nlist: usize,
        sizes: *const usize,
        codes: *const *const u8,
        ids: *const *const u8,
        id_bytes: usize,
        crcs: *const u32,
        crc: extern "C" fn(u32, *const u8, usize) -> u32,
    ) -> i32;
    fn imgvec_ivf_search(
        index: *const libc::c_void,
        n: i64,
        x: *const f32,
        k: i64,
        nprobe: usize,
        distances: *mut f32,
        labels: *mut i64,
    ) -> i32;
    fn imgvec_ivf_own_lists(index: *mut libc::c_void) -> i32;
}

/// The shim's return code for a list that fails its checksum.
const DAMAGED: i32 = -2;

/// `code` of a call into faiss_lists.cpp as a result, with its message.
fn shim(what: &'static str, code: i32) -> Result<(), IndexError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: the shim's last error is a NUL-terminated thread-local string.
    let msg = unsafe { std::ffi::CStr::from_ptr(imgvec_lists_last_error()) };
    let msg = format!("{what}: {}", msg.to_string_lossy());
    Err(if code == DAMAGED {
        IndexError::Damaged(msg)
    } else {
        IndexError::Invalid(msg)
    })
}

/// CRC-32 (crc32fast) of `len` bytes at `bytes`, continuing `crc`: the shim's list check.
extern "C" fn crc_continue(crc: u32, bytes: *const u8, len: usize) -> u32 {
    if len == 0 {
        return crc;
    }
    // SAFETY: the shim passes `len` readable bytes of a borrowed list.
    let bytes = unsafe { std::slice::from_raw_parts(bytes, len) };
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(bytes);
    h.finalize()
}

/// What [`crc_continue`] gives for a list's codes followed by its ids.
fn list_crc(codes: &[u8], ids: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(codes);
    h.update(ids);
    h.finalize()
}

fn raw(index: &IndexImpl) -> *const libc::c_void {
    index.inner_ptr() as *const libc::c_void
}

fn raw_mut(index: &mut IndexImpl) -> *mut libc::c_void {
    index.inner_ptr() as *mut libc::c_void
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    nlist: usize,
    n_per_block: usize,
    block_size: usize,
}

impl Geometry {
    fn of(index: &IndexImpl) -> Result<Geometry, IndexError> {
        let (mut nlist, mut n_per_block, mut block_size) = (0, 0, 0);
        // SAFETY: a live index; the shim writes the three outputs.
        shim("list geometry", unsafe {
            imgvec_ivf_geometry(raw(index), &mut nlist, &mut n_per_block, &mut block_size)
        })?;
        Ok(Geometry {
            nlist,
            n_per_block,
            block_size,
        })
    }

    /// Bytes of the codes of a list of `n` vectors (whole blocks); `None` when that does not fit
    /// a `usize` (sizes read from a file).
    fn code_bytes(&self, n: usize) -> Option<usize> {
        if self.n_per_block == 0 {
            return None;
        }
        n.div_ceil(self.n_per_block).checked_mul(self.block_size)
    }
}

/// The lists of `index` when it is a fast-scan IVF index (whose lists this layout holds) whose
/// fields agree (see `faiss_lists.cpp`, `geometry`).
pub(crate) fn geometry_lists(index: &IndexImpl) -> Option<usize> {
    Geometry::of(index).ok().map(|g| g.nlist)
}

/// Appends `index` in this layout to `out`, whose first byte will lie at file offset `at`.
pub(crate) fn write(index: &IndexImpl, out: &mut Vec<u8>, at: usize) -> Result<(), IndexError> {
    let g = Geometry::of(index)?;
    let ptr = raw(index);
    // SAFETY: a live index; the shim writes a shallow copy of it to the stream.
    let head = faiss_write_mem("write kNN index", |f| unsafe {
        imgvec_ivf_write_without_lists(ptr, f)
    })?;
    let mut lists = Vec::with_capacity(g.nlist);
    for l in 0..g.nlist {
        let (mut n, mut ids, mut codes) = (0usize, std::ptr::null(), std::ptr::null());
        // SAFETY: a live index and a list number below its count.
        shim("read kNN list", unsafe {
            imgvec_ivf_list(ptr, l, &mut n, &mut ids, &mut codes)
        })?;
        lists.push((n, ids, codes));
    }
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    let slices: Vec<(&[u8], &[i64])> = lists
        .iter()
        .map(|&(n, ids, codes)| {
            if n == 0 {
                return Ok((&[][..], &[][..]));
            }
            let len = g
                .code_bytes(n)
                .ok_or_else(|| IndexError::Invalid(format!("kNN lists: a list of {n} vectors")))?;
            // SAFETY: FAISS holds whole blocks of codes and `n` ids for the list.
            Ok(unsafe {
                (
                    std::slice::from_raw_parts(codes, len),
                    std::slice::from_raw_parts(ids, n),
                )
            })
        })
        .collect::<Result<_, IndexError>>()?;
    // Row ids in 4 bytes while every one fits (ids are a third of a descriptor's bytes).
    let id_bytes = id_width(slices.iter().flat_map(|(_, ids)| ids.iter().copied()));
    let ids: Vec<Vec<u8>> = slices
        .iter()
        .map(|(_, ids)| stored_ids(ids, id_bytes))
        .collect();
    for w in [g.nlist, g.n_per_block, g.block_size, id_bytes] {
        out.extend_from_slice(&(w as u64).to_le_bytes());
    }
    for &(n, _, _) in &lists {
        out.extend_from_slice(&(n as u64).to_le_bytes());
    }
    for ((codes, _), ids) in slices.iter().zip(&ids) {
        out.extend_from_slice(&list_crc(codes, ids).to_le_bytes());
    }
    // Everything before the lists, from the body's first byte.
    let head_crc = crc32fast::hash(out);
    out.extend_from_slice(&head_crc.to_le_bytes());
    let pad = (ALIGN - (at + out.len() + 8) % ALIGN) % ALIGN;
    out.extend_from_slice(&(pad as u64).to_le_bytes());
    out.resize(out.len() + pad, 0);
    for (codes, _) in &slices {
        out.extend_from_slice(codes);
    }
    for ids in &ids {
        out.extend_from_slice(ids);
    }
    Ok(())
}

/// Bytes a stored row id takes: 4 when every one of `ids` fits in a u32, else 8.
fn id_width(mut ids: impl Iterator<Item = i64>) -> usize {
    if ids.all(|id| u32::try_from(id).is_ok()) {
        4
    } else {
        8
    }
}

/// `ids` as stored: `id_bytes` little-endian bytes each (4 only when all fit, [`id_width`]).
fn stored_ids(ids: &[i64], id_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * id_bytes);
    for &id in ids {
        out.extend_from_slice(&id.to_le_bytes()[..id_bytes]);
    }
    out
}

/// The part of the layout before the lists' CRC-covered end, parsed but not yet trusted.
struct Head<'a> {
    /// The FAISS index written without its lists.
    faiss: &'a [u8],
    stored: Geometry,
    id_bytes: usize,
    sizes: Vec<usize>,
    crcs: Vec<u32>,
    /// Where the CRC of everything before it lies (relative to the layout's first byte).
    crc_at: usize,
    /// That CRC, as stored.
    crc: u32,
}

fn parse_head(bytes: &[u8]) -> Result<Head<'_>, IndexError> {
    let bad = |what: String| IndexError::Invalid(format!("kNN lists: {what}"));
    let mut r = Reader::new(bytes);
    if r.take(MAGIC.len())? != MAGIC {
        return Err(bad("bad magic".into()));
    }
    let head_len = usize::try_from(r.u64()?).map_err(|_| bad("header too long".into()))?;
    let faiss = r.take(head_len)?;
    let stored = Geometry {
        nlist: r.u64()? as usize,
        n_per_block: r.u64()? as usize,
        block_size: r.u64()? as usize,
    };
    let id_bytes = r.u64()? as usize;
    if id_bytes != 4 && id_bytes != 8 {
        return Err(bad(format!("row ids of {id_bytes} bytes")));
    }
    // Bounded by the bytes there are before anything is allocated for them.
    if stored.nlist > r.remaining() / 12 {
        return Err(bad(format!(
            "{} lists in {} bytes",
            stored.nlist,
            r.remaining()
        )));
    }
    let mut sizes = Vec::with_capacity(stored.nlist);
    for _ in 0..stored.nlist {
        sizes.push(usize::try_from(r.u64()?).map_err(|_| bad("list too long".into()))?);
    }
    let mut crcs = Vec::with_capacity(stored.nlist);
    for _ in 0..stored.nlist {
        crcs.push(r.u32()?);
    }
    let crc_at = bytes.len() - r.remaining();
    let crc = r.u32()?;
    Ok(Head {
        faiss,
        stored,
        id_bytes,
        sizes,
        crcs,
        crc_at,
        crc,
    })
}

/// For the fuzz targets: rewrites the CRC of what precedes the lists of the first layout found in
/// `bytes` (a body in which it lies, from its [`MAGIC`]), so mutated bodies reach the parsing
/// behind that check. Returns whether a layout was found.
pub(crate) fn resign(bytes: &mut [u8]) -> bool {
    let Some(crc_at) = bytes
        .windows(MAGIC.len())
        .position(|w| w == MAGIC)
        .and_then(|at| parse_head(&bytes[at..]).ok().map(|h| at + h.crc_at))
    else {
        return false;
    };
    let crc = crc32fast::hash(&bytes[..crc_at]);
    bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    true
}

/// Reads what [`write`] wrote (all of `body`, which starts with [`MAGIC`]): the index searches
/// its lists in `body`'s memory, which the caller keeps alive as long as the index (or until
/// [`own_lists`]). A body whose lists are not aligned as [`write`] aligned them (made in memory)
/// is copied once into aligned memory, which the returned `Body` then holds.
pub(crate) fn read(body: &Body, dims: usize) -> Result<(IndexImpl, Body), IndexError> {
    let bad = |what: String| IndexError::Invalid(format!("kNN lists: {what}"));
    let bytes = body.bytes();
    let Head {
        faiss: head,
        stored,
        id_bytes,
        sizes,
        crcs,
        crc_at,
        crc,
    } = parse_head(bytes)?;
    // The lists' sizes and checksums are used, and FAISS parses its part, only once the
    // checksum of everything before the lists matched (parse_head only reads, bounds-checked).
    if crc32fast::hash(body.leading(crc_at)) != crc {
        return Err(IndexError::Damaged(
            "kNN lists: what precedes the lists fails its checksum".into(),
        ));
    }
    let mut r = Reader::new(&bytes[crc_at + 4..]);
    let mut index = faiss_index_from_bytes("read kNN index", head, Some(dims))?;
    let g = Geometry::of(&index)?;
    if stored != g {
        return Err(bad(format!(
            "lists laid out as {stored:?}, the index as {g:?}"
        )));
    }
    let pad = r.u64()?;
    if pad >= ALIGN as u64 {
        return Err(bad(format!("padding of {pad} bytes")));
    }
    r.take(pad as usize)?;
    let lists_at = bytes.len() - r.remaining();
    // Sizes come from the file: every sum is checked, so none can wrap into a length that fits.
    let lists_len = sizes
        .iter()
        .try_fold(0usize, |sum, &n| {
            sum.checked_add(g.code_bytes(n)?)?
                .checked_add(n.checked_mul(id_bytes)?)
        })
        .ok_or_else(|| bad("list sizes out of range".into()))?;
    if lists_len != r.remaining() {
        return Err(bad(format!(
            "{} bytes of lists, their sizes say {lists_len}",
            r.remaining()
        )));
    }
    let code_total = lists_len - sizes.iter().sum::<usize>() * id_bytes;
    let mut lists = body.slice(lists_at..bytes.len());
    if !(lists.bytes().as_ptr() as usize).is_multiple_of(ALIGN) {
        lists = Body::copied(lists.bytes());
    }
    let base = lists.bytes().as_ptr();
    let (mut codes, mut ids) = (Vec::with_capacity(g.nlist), Vec::with_capacity(g.nlist));
    let (mut code_at, mut id_at) = (0, code_total);
    for &n in &sizes {
        // SAFETY: offsets within `lists`, whose length was checked above.
        unsafe {
            codes.push(base.add(code_at));
            ids.push(base.add(id_at));
        }
        // In range: their totals were checked above.
        code_at += g.code_bytes(n).expect("checked above");
        id_at += n * id_bytes;
    }
    // SAFETY: the arrays hold `nlist` entries each; the pointers lie in `lists`, which the
    // caller keeps alive while the index uses them.
    shim("map kNN lists", unsafe {
        imgvec_ivf_borrow_lists(
            raw_mut(&mut index),
            g.nlist,
            sizes.as_ptr(),
            codes.as_ptr(),
            ids.as_ptr(),
            id_bytes,
            crcs.as_ptr(),
            crc_continue,
        )
    })?;
    Ok((index, lists))
}

/// FAISS's search of the `nq` queries for their `k` nearest, probing `nprobe` lists each,
/// checking each borrowed list the first time it is probed ([`IndexError::Damaged`] if one fails
/// its checksum). Returns (distances, labels), `nq × k` each; label −1: none.
pub(crate) fn search(
    index: &IndexImpl,
    queries: &[f32],
    nq: usize,
    k: usize,
    nprobe: usize,
) -> Result<(Vec<f32>, Vec<i64>), IndexError> {
    let mut dis = vec![0f32; nq * k];
    let mut lab = vec![-1i64; nq * k];
    // SAFETY: a live index (FAISS's search is const and thread-safe; the list checks use
    // atomics); `queries` holds `nq` vectors of the index's dimension (the caller's contract,
    // as for `faiss_search`); the outputs hold `nq * k` entries each.
    shim("kNN search", unsafe {
        imgvec_ivf_search(
            raw(index),
            nq as i64,
            queries.as_ptr(),
            k as i64,
            nprobe,
            dis.as_mut_ptr(),
            lab.as_mut_ptr(),
        )
    })?;
    Ok((dis, lab))
}

/// Copies lists the index borrows into FAISS's own (which adding to them needs); after this the
/// index no longer uses the [`Body`] [`read`] gave it.
pub(crate) fn own_lists(index: &mut IndexImpl) -> Result<(), IndexError> {
    // SAFETY: a live index, exclusively borrowed; its borrowed lists are still alive.
    shim("copy kNN lists", unsafe {
        imgvec_ivf_own_lists(raw_mut(index))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ids_take_four_bytes_while_every_one_fits() {
        let cases: [(&[i64], usize, &[u8]); 4] = [
            (&[], 4, &[]),
            (&[1, 258], 4, &[1, 0, 0, 0, 2, 1, 0, 0]),
            (&[u32::MAX as i64], 4, &[255, 255, 255, 255]),
            (
                &[1, 1 << 32],
                8,
                &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            ),
        ];
        for (ids, width, stored) in cases {
            assert_eq!(id_width(ids.iter().copied()), width, "{ids:?}");
            assert_eq!(stored_ids(ids, width), stored, "{ids:?}");
        }
    }
}
