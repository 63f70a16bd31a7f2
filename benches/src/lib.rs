//! `imgvec-benches`: the measurements behind `imgvec bench` (each figure comes with a baseline
//! measured in the same process, so ratios stay meaningful while absolute times drift between
//! runs) and the criterion benches of imgvec's kernels. The synthetic vector distribution that
//! DESIGN.md defines for ANN benchmarks (and `shared/bench/faiss_anchor.py` measures with bare
//! FAISS) lives in [`mixture`], shared by `imgvec bench ann` and the criterion benches, so
//! imgvec and its baselines are always measured on the same data.

pub mod ann;
pub mod ingest;
pub mod mixture;
pub mod retrieval;

pub use ann::{ann, AnnBench, AnnBenchOptions, Baseline, ModeFigures};
pub use ingest::{ingest, left_out_summary, IngestBench, IngestTarget, StageShare};
pub use mixture::{normalized, GaussianMixture};
pub use retrieval::{retrieval, BenchDb, CaseScore, ModeRetrieval, RetrievalBench};

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
