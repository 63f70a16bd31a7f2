//! A PCA-whitening `y = normalise(A x + b)`, learned with FAISS (`PCAMatrix`, eigenvalue power
//! −½) on a sample of rows, stored as a derived file. Used by the whitened view (`reduce`) and
//! by the VLAD block (`vlad`).

use std::path::Path;

use faiss::vector_transform::{PCAMatrixImpl, VectorTransform};

use crate::derived::artifact::{self, Kind};
use crate::error::IndexError;
use crate::exact::matmul_nt;
use crate::index::hamming::affine_of;

const MAGIC: &[u8; 8] = b"IVWHITE1";

/// A learned whitening: `y = normalise(A x + b)`.
#[derive(Debug, Clone)]
pub struct Whitening {
    pub dims_in: usize,
    pub dims_out: usize,
    /// `dims_out × dims_in`, row-major.
    matrix: Vec<f32>,
    bias: Vec<f32>,
    pub learned_on: u64,
}

impl Whitening {
    /// Learns from `sample` (rows of `dims_in`). Needs more rows than `dims_out`.
    pub fn learn(
        sample: &[f32],
        dims_in: usize,
        dims_out: usize,
        learned_on: u64,
    ) -> Result<Whitening, IndexError> {
        let n = sample.len() / dims_in;
        if dims_out > dims_in || n <= dims_out {
            return Err(IndexError::Invalid(format!(
                "whitening to {dims_out} dimensions needs at most {dims_in} and more than \
                 {dims_out} rows (got {n})"
            )));
        }
        let mut pca = PCAMatrixImpl::new(dims_in as u32, dims_out as u32, -0.5, false)?;
        pca.train(n, sample)?;
        let (matrix, bias) = affine_of(&pca, dims_in, dims_out)?;
        Ok(Whitening {
            dims_in,
            dims_out,
            matrix,
            bias,
            learned_on,
        })
    }

    /// Projects `n` rows and L2-normalises each result.
    pub fn apply(&self, rows: &[f32]) -> Vec<f32> {
        let n = rows.len() / self.dims_in;
        let mut out = matmul_nt(rows, n, &self.matrix, self.dims_out, self.dims_in);
        for row in out.chunks_exact_mut(self.dims_out) {
            row.iter_mut().zip(&self.bias).for_each(|(y, b)| *y += b);
        }
        imgvec_ingest::l2_normalize_rows(&mut out, self.dims_out);
        out
    }

    /// A whitening from its parts (`matrix` is `dims_out × dims_in`; fuzz seeds).
    pub(crate) fn from_parts(dims_in: usize, matrix: Vec<f32>, bias: Vec<f32>) -> Whitening {
        Whitening {
            dims_in,
            dims_out: bias.len(),
            matrix,
            bias,
            learned_on: 0,
        }
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + 4 * (self.matrix.len() + self.bias.len()));
        body.extend_from_slice(MAGIC);
        for v in [self.dims_in as u64, self.dims_out as u64, self.learned_on] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        for v in self.matrix.iter().chain(&self.bias) {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body
    }

    pub(crate) fn from_bytes(body: &[u8]) -> Option<Whitening> {
        if body.len() < 32 || &body[..8] != MAGIC {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(body[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let (dims_in, dims_out, learned_on) = (word(0) as usize, word(1) as usize, word(2));
        if dims_in == 0 || dims_out == 0 {
            return None;
        }
        let floats = dims_out
            .checked_mul(dims_in)
            .and_then(|m| m.checked_add(dims_out))?;
        if body.len() != floats.checked_mul(4)?.checked_add(32)? {
            return None;
        }
        let values: Vec<f32> = body[32..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let (matrix, bias) = values.split_at(dims_out * dims_in);
        Some(Whitening {
            dims_in,
            dims_out,
            matrix: matrix.to_vec(),
            bias: bias.to_vec(),
            learned_on,
        })
    }

    #[cfg(test)]
    pub(crate) fn save(&self, path: &Path) -> Result<(), IndexError> {
        artifact::write(
            &imgvec_storage::StdFs,
            path,
            Kind::Whitening,
            &self.to_bytes(),
        )
    }

    pub(crate) fn load(path: &Path) -> Result<Whitening, IndexError> {
        Whitening::from_bytes(&artifact::read(path, Kind::Whitening)?)
            .ok_or_else(|| IndexError::Invalid(format!("{}: not a whitening file", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitening_decorrelates_and_round_trips() {
        // Correlated 8-d data with very unequal variances.
        let mut rng = 12345u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((rng >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let n = 400;
        let mut rows = Vec::new();
        for _ in 0..n {
            let a = next() * 10.0;
            let b = next();
            let row = [
                a,
                a + b,
                b,
                next() * 0.1,
                a - b,
                next(),
                next() * 3.0,
                b * 2.0,
            ];
            rows.extend_from_slice(&row);
        }
        let w = Whitening::learn(&rows, 8, 4, n as u64).unwrap();
        // Before normalisation the outputs have equal variances and no correlation (FAISS
        // scales by the scatter matrix's eigenvalues, so the common variance is 1/n; one scale
        // for every dimension is all cosine search needs).
        let raw = matmul_nt(&rows, n, &w.matrix, 4, 8);
        let cov = |i: usize, j: usize| -> f32 {
            (0..n)
                .map(|r| (raw[r * 4 + i] + w.bias[i]) * (raw[r * 4 + j] + w.bias[j]))
                .sum::<f32>()
                / n as f32
        };
        let unit = cov(0, 0);
        assert!(unit > 0.0);
        for i in 0..4 {
            for j in 0..4 {
                let c = cov(i, j) / unit;
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((c - want).abs() < 0.05, "cov[{i}][{j}] = {c} × cov[0][0]");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        w.save(&path).unwrap();
        let back = Whitening::load(&path).unwrap();
        assert_eq!(back.apply(&rows[..16]), w.apply(&rows[..16]));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(Whitening::load(&path).is_err());
    }
}
