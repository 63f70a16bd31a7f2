//! DESIGN.md's synthetic vectors for ANN benchmarks (`shared/bench/faiss_anchor.py` draws the
//! same distribution for bare FAISS), shared by `imgvec bench ann` and the criterion benches.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

/// Seeded Gaussian mixture: 1000 centres drawn from N(0, 4²) per dimension; each point is a
/// random centre plus N(0, 1) noise per dimension. Returns `n * dim` floats, row-major.
/// Points from the same seed share centres, so draw base and queries from one generator.
pub struct GaussianMixture {
    dim: usize,
    centres: Vec<f32>,
    rng: rand::rngs::StdRng,
}

impl GaussianMixture {
    pub const CENTRES: usize = 1000;

    pub fn new(dim: usize, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let wide = Normal::new(0.0f32, 4.0).expect("valid normal");
        let centres = (0..Self::CENTRES * dim)
            .map(|_| wide.sample(&mut rng))
            .collect();
        GaussianMixture { dim, centres, rng }
    }

    pub fn sample(&mut self, n: usize) -> Vec<f32> {
        let unit = Normal::new(0.0f32, 1.0).expect("valid normal");
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let c = self.rng.gen_range(0..Self::CENTRES) * self.dim;
            for d in 0..self.dim {
                out.push(self.centres[c + d] + unit.sample(&mut self.rng));
            }
        }
        out
    }
}

/// Scales each row to unit L2 norm, as imgvec stores vectors.
pub fn normalized(mut v: Vec<f32>, dim: usize) -> Vec<f32> {
    imgvec_ingest::l2_normalize_rows(&mut v, dim);
    v
}
