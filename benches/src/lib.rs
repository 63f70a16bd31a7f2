//! `imgvec-benches` holds the criterion benches of imgvec's kernels. The synthetic vector
//! distribution that DESIGN.md defines for ANN benchmarks (and `shared/bench/faiss_anchor.py`
//! measures with bare FAISS) lives in `imgvec::bench`, shared with `imgvec bench ann`, so imgvec
//! and its baselines are always measured on the same data.

pub use imgvec::bench::{normalized, GaussianMixture};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixture_is_seeded_and_clustered() {
        let a = GaussianMixture::new(8, 1).sample(5);
        let b = GaussianMixture::new(8, 1).sample(5);
        assert_eq!(a, b);
        let spread = a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32;
        assert!(spread > 4.0, "centre variance 16 + noise 1, got {spread}");
    }
}
