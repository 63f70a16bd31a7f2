//! Binary hash codes and Hamming search.
//!
//! An [`Encoder`] maps a unit vector to `bits` sign bits of an affine projection: ITQ (PCA to
//! `bits` dimensions, then the rotation that best fits the binary hypercube, both learned with
//! FAISS on the collection) once enough rows exist, and until then a seeded random Gaussian
//! projection of the vector centred on the collection mean (sign LSH). [`HammingIndex`] holds
//! one code per row and scans them all with a popcount kernel (AVX-512 VPOPCNTDQ, POPCNT or
//! portable, picked at run time); [`BinaryIvf`] is the sub-linear variant, FAISS's binary IVF
//! over the same codes, searched through `&self`.

use std::path::Path;

use faiss::vector_transform::{
    ITQMatrixImpl, NativeVectorTransform, PCAMatrixImpl, VectorTransform,
};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::IndexError;
use crate::derived::artifact::{self, Kind};
use crate::derived::lifecycle::Derived;
use crate::exact;

/// Encoder kinds as stored in index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// Random projection (no training): the fallback for small collections.
    Lsh = 1,
    /// PCA + iterative quantisation learned on the collection.
    Itq = 2,
}

impl std::fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EncoderKind::Lsh => "random-projection (LSH)",
            EncoderKind::Itq => "ITQ",
        })
    }
}

/// `bits` sign bits of `matrix · x + bias`.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub kind: EncoderKind,
    pub dims: usize,
    pub bits: usize,
    /// `bits × dims`, row-major.
    matrix: Vec<f32>,
    bias: Vec<f32>,
}

/// Applies a trained FAISS vector transform to `n` rows. (The faiss crate's `apply_noalloc`
/// returns an empty vector, so this calls the C API with a buffer of the right length.)
pub(crate) fn apply<T: NativeVectorTransform + VectorTransform>(
    t: &T,
    x: &[f32],
    d_in: usize,
    d_out: usize,
) -> Result<Vec<f32>, IndexError> {
    let n = x.len() / d_in;
    let mut out = vec![0f32; n * d_out];
    if !t.is_trained() {
        return Err(IndexError::Invalid(
            "transform applied before training".into(),
        ));
    }
    // SAFETY: `x` holds n × d_in floats and `out` n × d_out, the transform's dimensions.
    unsafe {
        faiss_sys::faiss_VectorTransform_apply_noalloc(
            t.inner_ptr(),
            n as i64,
            x.as_ptr(),
            out.as_mut_ptr(),
        )
    };
    Ok(out)
}

/// The affine map `x ↦ A x + b` behind a trained linear transform, read back by applying it to
/// the origin and to each basis vector.
pub(crate) fn affine_of<T: NativeVectorTransform + VectorTransform>(
    t: &T,
    d_in: usize,
    d_out: usize,
) -> Result<(Vec<f32>, Vec<f32>), IndexError> {
    // Probed with the zero vector (the bias) and the unit vectors, a block at a time so a wide
    // input (VLAD: 8192 values) never needs the whole identity.
    let bias = apply(t, &vec![0f32; d_in], d_in, d_out)?;
    let mut matrix = vec![0f32; d_out * d_in];
    const BLOCK: usize = 256;
    for start in (0..d_in).step_by(BLOCK) {
        let rows = BLOCK.min(d_in - start);
        let mut probe = vec![0f32; rows * d_in];
        for r in 0..rows {
            probe[r * d_in + start + r] = 1.0;
        }
        let y = apply(t, &probe, d_in, d_out)?;
        for r in 0..rows {
            for o in 0..d_out {
                matrix[o * d_in + start + r] = y[r * d_out + o] - bias[o];
            }
        }
    }
    Ok((matrix, bias))
}

impl Encoder {
    /// Default code length for `dims`-dimensional vectors.
    pub fn default_bits(dims: usize) -> usize {
        dims.min(256)
    }

    /// Code length for `requested` bits (default [`Encoder::default_bits`]). More bits than
    /// dimensions is allowed: a wider random-projection code (ITQ cannot exceed the dimension).
    pub fn code_bits(requested: Option<usize>, dims: usize) -> usize {
        requested
            .unwrap_or(Encoder::default_bits(dims))
            .clamp(1, 4096)
    }

    /// Whether ITQ can be trained on `rows` rows: more rows than bits, bits ≤ dims.
    pub fn itq_possible(rows: usize, bits: usize, dims: usize) -> bool {
        rows > bits && bits <= dims
    }

    /// Sign LSH: a seeded Gaussian projection of `x - mean`, where `mean` is the mean of
    /// `sample` (`n × dims`; zero when empty).
    pub fn lsh(dims: usize, bits: usize, sample: &[f32], seed: u64) -> Encoder {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, 1.0).expect("valid normal");
        let matrix: Vec<f32> = (0..bits * dims).map(|_| normal.sample(&mut rng)).collect();
        let mean = mean_of(sample, dims);
        let bias = matrix
            .chunks_exact(dims)
            .map(|row| -crate::exact::dot(row, &mean))
            .collect();
        Encoder {
            kind: EncoderKind::Lsh,
            dims,
            bits,
            matrix,
            bias,
        }
    }

    /// ITQ (Gong & Lazebnik): PCA to `bits` dimensions and a learned rotation, trained with
    /// FAISS on `sample` (`n × dims`, n > bits).
    pub fn itq(dims: usize, bits: usize, sample: &[f32]) -> Result<Encoder, IndexError> {
        let n = sample.len() / dims;
        if bits > dims || n <= bits {
            return Err(IndexError::Invalid(format!(
                "ITQ needs bits ≤ dims and more rows than bits (bits {bits}, dims {dims}, rows {n})"
            )));
        }
        let mut pca = PCAMatrixImpl::new(dims as u32, bits as u32, 0.0, false)?;
        pca.train(n, sample)?;
        let projected = apply(&pca, sample, dims, bits)?;
        let mut itq = ITQMatrixImpl::new(bits as u32)?;
        itq.train(n, &projected)?;
        let (p, pb) = affine_of(&pca, dims, bits)?;
        let (r, rb) = affine_of(&itq, bits, bits)?;
        // Compose: y = R (P x + pb) + rb.
        let mut matrix = vec![0f32; bits * dims];
        let mut bias = rb.clone();
        for o in 0..bits {
            let r_row = &r[o * bits..(o + 1) * bits];
            for (j, &rj) in r_row.iter().enumerate() {
                bias[o] += rj * pb[j];
                let p_row = &p[j * dims..(j + 1) * dims];
                let out = &mut matrix[o * dims..(o + 1) * dims];
                for (m, &pv) in out.iter_mut().zip(p_row) {
                    *m += rj * pv;
                }
            }
        }
        Ok(Encoder {
            kind: EncoderKind::Itq,
            dims,
            bits,
            matrix,
            bias,
        })
    }

    /// 64-bit words per code.
    pub fn words(&self) -> usize {
        self.bits.div_ceil(64)
    }

    /// Appends the codes of `vectors` (`n × dims`) to `out`, `words()` words per row; bit `b`
    /// of a code is bit `b % 64` of word `b / 64`, unused high bits zero.
    pub fn encode(&self, vectors: &[f32], out: &mut Vec<u64>) {
        let (dims, bits, words) = (self.dims, self.bits, self.words());
        let mut proj = vec![0f32; 256 * bits];
        for block in vectors.chunks(256 * dims) {
            let rows = block.len() / dims;
            exact::matmul_nt_here(block, rows, &self.matrix, bits, dims, &mut proj);
            for row in proj[..rows * bits].chunks_exact(bits) {
                let start = out.len();
                out.resize(start + words, 0);
                for (b, (&p, &bias)) in row.iter().zip(&self.bias).enumerate() {
                    if p + bias > 0.0 {
                        out[start + b / 64] |= 1 << (b % 64);
                    }
                }
            }
        }
    }

    fn to_bytes(&self, out: &mut Vec<u8>) {
        for v in [self.kind as u64, self.dims as u64, self.bits as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for f in self.matrix.iter().chain(&self.bias) {
            out.extend_from_slice(&f.to_le_bytes());
        }
    }

    fn from_bytes(r: &mut Reader<'_>) -> Result<Encoder, IndexError> {
        let kind = match r.u64()? {
            1 => EncoderKind::Lsh,
            2 => EncoderKind::Itq,
            k => return Err(IndexError::Invalid(format!("unknown encoder kind {k}"))),
        };
        let (dims, bits) = (r.u64()? as usize, r.u64()? as usize);
        if dims == 0 || bits == 0 || bits > 4096 || dims > 1 << 20 {
            return Err(IndexError::Invalid(format!(
                "bad encoder shape {bits}×{dims}"
            )));
        }
        let matrix = r.f32s(bits * dims)?;
        let bias = r.f32s(bits)?;
        Ok(Encoder {
            kind,
            dims,
            bits,
            matrix,
            bias,
        })
    }
}

fn mean_of(sample: &[f32], dims: usize) -> Vec<f32> {
    let mut mean = vec![0f32; dims];
    let n = sample.len() / dims;
    for row in sample.chunks_exact(dims) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x;
        }
    }
    if n > 0 {
        mean.iter_mut().for_each(|m| *m /= n as f32);
    }
    mean
}

/// Hamming distances from `query` (`W` words) to every code in `codes`.
#[inline(always)]
fn distances_fixed<const W: usize>(codes: &[u64], query: &[u64], out: &mut [u16]) {
    let mut q = [0u64; W];
    q.copy_from_slice(&query[..W]);
    for (c, o) in codes.chunks_exact(W).zip(out.iter_mut()) {
        let mut d = 0u32;
        for i in 0..W {
            d += (c[i] ^ q[i]).count_ones();
        }
        *o = d as u16;
    }
}

#[inline(always)]
fn distances_portable(codes: &[u64], words: usize, query: &[u64], out: &mut [u16]) {
    match words {
        1 => distances_fixed::<1>(codes, query, out),
        2 => distances_fixed::<2>(codes, query, out),
        4 => distances_fixed::<4>(codes, query, out),
        _ => {
            for (c, o) in codes.chunks_exact(words).zip(out.iter_mut()) {
                *o = c
                    .iter()
                    .zip(query)
                    .map(|(a, b)| (a ^ b).count_ones())
                    .sum::<u32>() as u16;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq,avx512bw,avx512vl,popcnt")]
unsafe fn distances_avx512(codes: &[u64], words: usize, query: &[u64], out: &mut [u16]) {
    distances_portable(codes, words, query, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt,avx2")]
unsafe fn distances_popcnt(codes: &[u64], words: usize, query: &[u64], out: &mut [u16]) {
    distances_portable(codes, words, query, out)
}

/// The popcount kernels of the Hamming scan, chosen at run time from the CPU's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Kernel {
    /// AVX-512 VPOPCNTDQ (with BW and VL).
    #[serde(rename = "avx512-vpopcntdq")]
    Avx512Vpopcntdq,
    /// POPCNT with AVX2.
    #[serde(rename = "popcnt")]
    Popcnt,
    /// Plain Rust `count_ones`.
    #[serde(rename = "portable")]
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vpopcntdq")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                return Kernel::Avx512Vpopcntdq;
            }
            if std::arch::is_x86_feature_detected!("popcnt")
                && std::arch::is_x86_feature_detected!("avx2")
            {
                return Kernel::Popcnt;
            }
        }
        Kernel::Portable
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vpopcntdq => "avx512-vpopcntdq",
            Kernel::Popcnt => "popcnt",
            Kernel::Portable => "portable",
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Hamming distance from `query` to each of the `out.len()` codes in `codes` (`words` per code).
pub fn distances(codes: &[u64], words: usize, query: &[u64], out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    match Kernel::detect() {
        // SAFETY: the CPU has the features each kernel is compiled for (checked by detect).
        Kernel::Avx512Vpopcntdq => return unsafe { distances_avx512(codes, words, query, out) },
        Kernel::Popcnt => return unsafe { distances_popcnt(codes, words, query, out) },
        Kernel::Portable => {}
    }
    distances_portable(codes, words, query, out)
}

/// The (at most) `depth` rows nearest to the query, as (row, distance), nearest first (ties by
/// row). Distances are bucketed (they are ≤ `bits`), so selection is two linear passes.
pub fn select(dist: &[u16], bits: usize, depth: usize) -> Vec<(usize, u32)> {
    let mut hist = vec![0usize; bits + 2];
    for &d in dist {
        hist[(d as usize).min(bits + 1)] += 1;
    }
    let mut bound = 0usize;
    let mut below = 0usize;
    while bound < hist.len() && below + hist[bound] < depth {
        below += hist[bound];
        bound += 1;
    }
    // Everything closer than `bound`, and the first rows at distance `bound` up to `depth`.
    let mut at_bound = depth.saturating_sub(below);
    let mut out = Vec::with_capacity(depth.min(dist.len()));
    for (row, &d) in dist.iter().enumerate() {
        let d = d as usize;
        if d < bound {
            out.push((row, d as u32));
        } else if d == bound && at_bound > 0 {
            at_bound -= 1;
            out.push((row, d as u32));
        }
    }
    out.sort_unstable_by_key(|&(row, d)| (d, row));
    out
}

/// One code per row, scanned exhaustively.
pub struct HammingIndex {
    pub encoder: Encoder,
    ids: Vec<u64>,
    codes: Vec<u64>,
    /// Rows with ids up to this one have been offered to the index.
    pub watermark: u64,
    /// Live rows when the encoder was trained.
    pub trained_on: u64,
}

impl HammingIndex {
    pub fn new(encoder: Encoder, trained_on: u64) -> HammingIndex {
        HammingIndex {
            encoder,
            ids: Vec::new(),
            codes: Vec::new(),
            watermark: 0,
            trained_on,
        }
    }

    /// 64-bit words per code.
    pub fn words(&self) -> usize {
        self.encoder.words()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    pub fn codes(&self) -> &[u64] {
        &self.codes
    }

    /// Adds rows (ids ascending, above every id already held).
    pub fn add(&mut self, ids: &[u64], vectors: &[f32]) {
        self.encoder.encode(vectors, &mut self.codes);
        self.ids.extend_from_slice(ids);
        if let Some(&last) = ids.last() {
            self.watermark = self.watermark.max(last);
        }
    }

    /// Adds rows whose codes are already computed by this index's encoder.
    pub fn add_codes(&mut self, ids: &[u64], codes: &[u64]) {
        self.codes.extend_from_slice(codes);
        self.ids.extend_from_slice(ids);
        if let Some(&last) = ids.last() {
            self.watermark = self.watermark.max(last);
        }
    }

    /// Keeps only the rows `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        let w = self.encoder.words();
        let mut at = 0;
        for row in 0..self.ids.len() {
            if keep(self.ids[row]) {
                self.ids[at] = self.ids[row];
                self.codes.copy_within(row * w..(row + 1) * w, at * w);
                at += 1;
            }
        }
        self.ids.truncate(at);
        self.codes.truncate(at * w);
    }

    pub fn encode_one(&self, vector: &[f32]) -> Vec<u64> {
        let mut code = Vec::with_capacity(self.encoder.words());
        self.encoder.encode(vector, &mut code);
        code
    }

    /// The `depth` nearest rows as (id, Hamming distance), nearest first.
    pub fn search(&self, code: &[u64], depth: usize) -> Vec<(u64, u32)> {
        let mut dist = vec![0u16; self.ids.len()];
        distances(&self.codes, self.encoder.words(), code, &mut dist);
        select(&dist, self.encoder.bits, depth)
            .into_iter()
            .map(|(row, d)| (self.ids[row], d))
            .collect()
    }

    /// Bytes per row in memory: the code and the id.
    pub fn bytes_per_row(&self) -> usize {
        self.encoder.words() * 8 + 8
    }

    /// The body of its derived file: encoder, ids, codes (docs/FORMAT.md).
    pub fn to_body(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64 + self.ids.len() * self.bytes_per_row());
        buf.extend_from_slice(HAMMING_MAGIC);
        for v in [1u64, self.watermark, self.trained_on, self.ids.len() as u64] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        self.encoder.to_bytes(&mut buf);
        for id in &self.ids {
            buf.extend_from_slice(&id.to_le_bytes());
        }
        for w in &self.codes {
            buf.extend_from_slice(&w.to_le_bytes());
        }
        buf
    }

    /// Writes it as a derived file at `path` (benchmarks; the engine writes through its
    /// publisher).
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        artifact::write(&imgvec_storage::StdFs, path, Kind::Hamming, &self.to_body())
    }

    pub fn load(path: &Path) -> Result<HammingIndex, IndexError> {
        HammingIndex::parse(&artifact::read(path, Kind::Hamming)?)
    }

    /// The index a file's body holds, or why it holds none.
    pub(crate) fn parse(bytes: &[u8]) -> Result<HammingIndex, IndexError> {
        let mut r = Reader { buf: bytes, at: 0 };
        if r.take(8)? != HAMMING_MAGIC {
            return Err(IndexError::Invalid("not a Hamming index file".into()));
        }
        let version = r.u64()?;
        if version != 1 {
            return Err(IndexError::Invalid(format!(
                "unsupported Hamming index version {version}"
            )));
        }
        let (watermark, trained_on, rows) = (r.u64()?, r.u64()?, r.u64()? as usize);
        let encoder = Encoder::from_bytes(&mut r)?;
        let words = encoder.words();
        if rows
            .checked_mul(8 + words * 8)
            .is_none_or(|b| b > bytes.len())
        {
            return Err(IndexError::Invalid(format!(
                "row count {rows} exceeds the file"
            )));
        }
        let ids = (0..rows).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
        let codes = (0..rows * words)
            .map(|_| r.u64())
            .collect::<Result<Vec<_>, _>>()?;
        if r.at != bytes.len() {
            return Err(IndexError::Invalid("trailing bytes after the codes".into()));
        }
        Ok(HammingIndex {
            encoder,
            ids,
            codes,
            watermark,
            trained_on,
        })
    }
}

impl Derived for HammingIndex {
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

const HAMMING_MAGIC: &[u8; 8] = b"IMGVHAM\0";

pub(super) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], IndexError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| IndexError::Invalid("file ends early".into()))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, IndexError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, IndexError> {
        let bytes = self.take(
            n.checked_mul(4)
                .ok_or_else(|| IndexError::Invalid("size overflow".into()))?,
        )?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
}

mod ivf;
pub use ivf::BinaryIvf;

#[cfg(test)]
mod tests;
