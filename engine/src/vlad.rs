//! VLAD: one vector per image aggregated from its RootSIFT descriptors (Jégou et al. 2010, with
//! Arandjelović & Zisserman's intra-normalisation).
//!
//! A codebook of `words` centroids is learned with FAISS k-means on a sample of the collection's
//! stored descriptors. An image's VLAD sums, for each word, the residuals `x − c` of the
//! descriptors assigned to it (`words × 128` values), normalises each word's block
//! (intra-normalisation), takes signed square roots (power normalisation) and L2-normalises the
//! whole. A PCA-whitening learned on the collection's VLADs then brings it down to `dims`
//! values. The reduction (`reduce`) concatenates that block, weighted, with the whitened global
//! descriptor, so every search mode and index sees one fused vector.

use faiss::cluster::{Clustering, ClusteringParameters};
use faiss::index_factory;
use faiss::MetricType;
use serde::{Deserialize, Serialize};

use crate::exact::matmul_nt;
use crate::index::IndexError;
use crate::whitening::Whitening;

/// Values of a SIFT descriptor.
pub const DESCRIPTOR_DIMS: usize = 128;
/// Descriptors the codebook is learned on (FAISS wants ≥ 39 per centroid; more adds little).
const CODEBOOK_SAMPLE: usize = crate::derived::lifecycle::SAMPLE_ROWS;
const MAGIC: &[u8; 8] = b"IVVLAD01";

/// What a pipeline asks for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VladSpec {
    /// Codebook size.
    pub words: usize,
    /// Dimensions after PCA-whitening.
    pub dims: usize,
    /// Share of the fused cosine: the fused similarity is proportional to
    /// `cos(global) + weight · cos(VLAD)`.
    pub weight: f32,
}

/// The k-means centroids.
#[derive(Debug, Clone)]
struct Codebook {
    words: usize,
    /// `words × 128`, row-major.
    centroids: Vec<f32>,
    /// `‖c‖² / 2` per centroid (nearest centroid = largest `x·c − ‖c‖²/2`).
    half_norms: Vec<f32>,
}

impl Codebook {
    fn new(centroids: Vec<f32>) -> Codebook {
        let half_norms = centroids
            .chunks_exact(DESCRIPTOR_DIMS)
            .map(|c| c.iter().map(|v| v * v).sum::<f32>() / 2.0)
            .collect();
        Codebook {
            words: centroids.len() / DESCRIPTOR_DIMS,
            centroids,
            half_norms,
        }
    }

    /// The unreduced, normalised VLAD of one image's descriptors (all zeros for none).
    fn encode(&self, descriptors: &[f32]) -> Vec<f32> {
        let n = descriptors.len() / DESCRIPTOR_DIMS;
        let raw_dims = self.words * DESCRIPTOR_DIMS;
        let mut out = vec![0f32; raw_dims];
        if n == 0 {
            return out;
        }
        let sims = matmul_nt(descriptors, n, &self.centroids, self.words, DESCRIPTOR_DIMS);
        for (desc, row) in descriptors
            .chunks_exact(DESCRIPTOR_DIMS)
            .zip(sims.chunks_exact(self.words))
        {
            let word = row
                .iter()
                .zip(&self.half_norms)
                .map(|(s, h)| s - h)
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(w, _)| w);
            let span = word * DESCRIPTOR_DIMS..(word + 1) * DESCRIPTOR_DIMS;
            for ((a, x), c) in out[span.clone()]
                .iter_mut()
                .zip(desc)
                .zip(&self.centroids[span])
            {
                *a += x - c;
            }
        }
        // Intra-normalisation, then power and L2 normalisation.
        imgvec_ingest::l2_normalize_rows(&mut out, DESCRIPTOR_DIMS);
        out.iter_mut()
            .for_each(|v| *v = v.signum() * v.abs().sqrt());
        imgvec_ingest::l2_normalize_rows(&mut out, raw_dims);
        out
    }
}

/// A learned codebook and the whitening of its VLADs.
#[derive(Debug, Clone)]
pub struct Vlad {
    pub weight: f32,
    codebook: Codebook,
    pca: Whitening,
}

impl Vlad {
    /// Learns from a sample of `images` images, `descriptors(i)` giving image i's (128 values
    /// each; asked for three times, so a caller can unpack them on demand instead of holding
    /// them all). Needs more images with descriptors than `spec.dims`, and descriptors for
    /// every word.
    pub fn learn(
        spec: &VladSpec,
        images: usize,
        descriptors: impl Fn(usize) -> Vec<f32>,
        learned_on: u64,
    ) -> Result<Vlad, IndexError> {
        let counts: Vec<usize> = (0..images)
            .map(|i| descriptors(i).len() / DESCRIPTOR_DIMS)
            .collect();
        let with_features: Vec<usize> = (0..images).filter(|&i| counts[i] > 0).collect();
        let total: usize = counts.iter().sum();
        if with_features.len() <= spec.dims || total < spec.words * 39 {
            return Err(IndexError::Invalid(format!(
                "VLAD of {} words to {} dimensions needs more than {} images with local \
                 features and {} descriptors (got {} and {total})",
                spec.words,
                spec.dims,
                spec.dims,
                spec.words * 39,
                with_features.len()
            )));
        }
        // A strided sample of every image's descriptors.
        let step = total.div_ceil(CODEBOOK_SAMPLE).max(1);
        let mut sample = Vec::with_capacity(CODEBOOK_SAMPLE.min(total) * DESCRIPTOR_DIMS);
        let mut at = 0usize;
        for &i in &with_features {
            for desc in descriptors(i).chunks_exact(DESCRIPTOR_DIMS) {
                if at.is_multiple_of(step) {
                    sample.extend_from_slice(desc);
                }
                at += 1;
            }
        }
        let mut params = ClusteringParameters::new();
        params.set_niter(20);
        params.set_seed(1234);
        let mut clustering =
            Clustering::new_with_params(DESCRIPTOR_DIMS as u32, spec.words as u32, &params)?;
        let mut assign = index_factory(DESCRIPTOR_DIMS as u32, "Flat", MetricType::L2)?;
        clustering.train(&sample, &mut assign)?;
        let codebook = Codebook::new(clustering.centroids()?.concat());
        let raw_dims = spec.words * DESCRIPTOR_DIMS;
        let mut raw = Vec::with_capacity(with_features.len() * raw_dims);
        for &i in &with_features {
            raw.extend(codebook.encode(&descriptors(i)));
        }
        let pca = Whitening::learn(&raw, raw_dims, spec.dims, learned_on)?;
        Ok(Vlad {
            weight: spec.weight,
            codebook,
            pca,
        })
    }

    /// Codebook size.
    pub fn words(&self) -> usize {
        self.codebook.words
    }

    /// Dimensions of the unreduced VLAD.
    pub fn raw_dims(&self) -> usize {
        self.codebook.words * DESCRIPTOR_DIMS
    }

    /// Dimensions after whitening.
    pub fn dims(&self) -> usize {
        self.pca.dims_out
    }

    /// The unreduced, normalised VLAD of one image's descriptors.
    pub fn encode(&self, descriptors: &[f32]) -> Vec<f32> {
        self.codebook.encode(descriptors)
    }

    /// The whitened VLADs of several images, `dims()` values each; an image without
    /// descriptors gets zeros (it then contributes no VLAD similarity).
    pub fn project(&self, images: &[&[f32]]) -> Vec<f32> {
        let mut raw = Vec::with_capacity(images.len() * self.raw_dims());
        for d in images {
            raw.extend(self.encode(d));
        }
        let mut out = self.pca.apply(&raw);
        for (row, d) in out.chunks_exact_mut(self.dims()).zip(images) {
            if d.is_empty() {
                row.fill(0.0);
            }
        }
        out
    }

    /// A VLAD from its parts (`centroids` is `words × 128`; fuzz seeds).
    pub(crate) fn from_parts(weight: f32, centroids: Vec<f32>, pca: Whitening) -> Vlad {
        Vlad {
            weight,
            codebook: Codebook::new(centroids),
            pca,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&(self.codebook.words as u64).to_le_bytes());
        body.extend_from_slice(&self.weight.to_le_bytes());
        for v in &self.codebook.centroids {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend(self.pca.to_bytes());
        body
    }

    pub fn from_bytes(body: &[u8]) -> Option<Vlad> {
        if body.len() < 20 || &body[..8] != MAGIC {
            return None;
        }
        let words = u64::from_le_bytes(body[8..16].try_into().ok()?) as usize;
        let weight = f32::from_le_bytes(body[16..20].try_into().ok()?);
        let end = words
            .checked_mul(DESCRIPTOR_DIMS * 4)?
            .checked_add(20)
            .filter(|&e| e <= body.len())?;
        let centroids: Vec<f32> = body[20..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let pca = Whitening::from_bytes(&body[end..])?;
        if words == 0 || pca.dims_in != words * DESCRIPTOR_DIMS || !weight.is_finite() {
            return None;
        }
        Some(Vlad {
            weight,
            codebook: Codebook::new(centroids),
            pca,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random unit descriptors around `centres` (each image: `per` descriptors near a few
    /// centres chosen by `pick`).
    fn images(seed: u64, n: usize, per: usize, centres: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let mut rng = seed;
        let mut next = move || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as f32 / (1u64 << 31) as f32
        };
        (0..n)
            .map(|_| {
                let mut out = Vec::new();
                for _ in 0..per {
                    let c = &centres[(next() * centres.len() as f32) as usize % centres.len()];
                    let mut d: Vec<f32> = c.iter().map(|v| v + 0.3 * (next() - 0.5)).collect();
                    imgvec_ingest::l2_normalize_rows(&mut d, DESCRIPTOR_DIMS);
                    out.extend(d);
                }
                out
            })
            .collect()
    }

    #[test]
    fn vlad_tells_images_apart_and_round_trips() {
        let mut rng = 99u64;
        let mut next = move || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as f32 / (1u64 << 31) as f32
        };
        let centres: Vec<Vec<f32>> = (0..40)
            .map(|_| (0..DESCRIPTOR_DIMS).map(|_| next()).collect())
            .collect();
        let collection = images(7, 80, 60, &centres);
        let spec = VladSpec {
            words: 16,
            dims: 32,
            weight: 0.5,
        };
        let learn = |images: &[Vec<f32>]| {
            Vlad::learn(
                &spec,
                images.len(),
                |i| images[i].clone(),
                images.len() as u64,
            )
        };
        let vlad = learn(&collection).unwrap();
        assert_eq!((vlad.raw_dims(), vlad.dims()), (16 * 128, 32));
        let raw = vlad.encode(&collection[0]);
        let norm: f32 = raw.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        // An image's half is closer to the image than to any other image.
        let refs: Vec<&[f32]> = collection.iter().map(|d| d.as_slice()).collect();
        let projected = vlad.project(&refs);
        let half = &collection[3][..30 * DESCRIPTOR_DIMS];
        let q = vlad.project(&[half]);
        let best = projected
            .chunks_exact(32)
            .map(|r| r.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>())
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
            .0;
        assert_eq!(best, 3);
        // No descriptors: a zero block.
        assert!(vlad.project(&[&[]]).iter().all(|&v| v == 0.0));
        let back = Vlad::from_bytes(&vlad.to_bytes()).unwrap();
        assert_eq!(back.project(&refs[..4]), vlad.project(&refs[..4]));
        assert!(Vlad::from_bytes(&vlad.to_bytes()[..100]).is_none());
        // Too few images for the whitening.
        assert!(learn(&collection[..20]).is_err());
    }
}
