//! Where ingest spends its time: a clock per stage, summed over every thread that runs the
//! stage (so the shares say where the work goes, not how long the wall clock waited).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

/// The stages of ingest, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Reading the file.
    Read,
    /// Hashing the bytes and looking the path up (unchanged files stop here).
    Hash,
    /// Decoding and validating the image.
    Decode,
    /// Resizing to the model's input.
    ModelInput,
    /// The stored JPEG thumbnail.
    Thumbnail,
    /// SIFT keypoints and descriptors, packed (pipelines with local features).
    LocalFeatures,
    /// The model forward and the handcrafted blocks fused with it, normalised.
    Model,
    /// Synced commits.
    Commit,
}

const STAGES: usize = 8;

/// Nanoseconds spent per stage, added to from any thread.
#[derive(Debug, Default)]
pub(crate) struct StageClock {
    nanos: [AtomicU64; STAGES],
}

impl StageClock {
    /// Runs `f`, adding its duration to `stage`.
    pub fn time<T>(&self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        let spent = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.nanos[stage as usize].fetch_add(spent, Ordering::Relaxed);
        out
    }

    pub fn times(&self) -> StageTimes {
        let s = |stage: Stage| self.nanos[stage as usize].load(Ordering::Relaxed) as f64 / 1e9;
        StageTimes {
            read: s(Stage::Read),
            hash: s(Stage::Hash),
            decode: s(Stage::Decode),
            model_input: s(Stage::ModelInput),
            thumbnail: s(Stage::Thumbnail),
            local_features: s(Stage::LocalFeatures),
            model: s(Stage::Model),
            commit: s(Stage::Commit),
        }
    }
}

/// Seconds spent per ingest stage, summed over the threads that ran it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    pub read: f64,
    pub hash: f64,
    pub decode: f64,
    pub model_input: f64,
    pub thumbnail: f64,
    pub local_features: f64,
    pub model: f64,
    pub commit: f64,
}

impl StageTimes {
    /// (name, seconds) of every stage, in pipeline order.
    pub fn named(&self) -> [(&'static str, f64); STAGES] {
        [
            ("read", self.read),
            ("hash", self.hash),
            ("decode", self.decode),
            ("model input", self.model_input),
            ("thumbnail", self.thumbnail),
            ("local features", self.local_features),
            ("model", self.model),
            ("commit", self.commit),
        ]
    }

    /// Seconds over all stages.
    pub fn total(&self) -> f64 {
        self.named().iter().map(|(_, s)| s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_add_up_per_stage_from_any_thread() {
        let clock = StageClock::default();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    clock.time(Stage::Decode, || {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    })
                });
            }
        });
        let v = clock.time(Stage::Commit, || 7);
        assert_eq!(v, 7);
        let t = clock.times();
        assert!(t.decode >= 0.039, "{t:?}");
        assert_eq!((t.read, t.model), (0.0, 0.0));
        assert!((t.total() - t.decode - t.commit).abs() < 1e-9);
        assert_eq!(t.named()[2].0, "decode");
    }
}
