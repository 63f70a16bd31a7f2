//! Contrastive fine-tuning in place (SSCD-style, `imgvec train contrastive`): the last stages of
//! the presets' CNN learn to map edited views of one stored image together and other images
//! apart (InfoNCE), while staying near what they computed before (so the mid-level maps they
//! are fused with, and everything learned on them, keep their meaning).
//!
//! The base model is the presets' maps model saved unfrozen with two extra methods
//! (`scripts/make_default_model.py --trainable`): `trunk` (the frozen stages, up to the first
//! tapped maps) and `head` (the stages trained), with `forward == cat(trunk, head(trunk))`.
//! The trunk runs once per view before training (its maps kept in half precision), so an
//! epoch costs only the head's forward and backward. The result is the same module with the
//! head's weights changed: an extractor with the base model's outputs, for `--pipeline
//! balanced|robust --model OUT`.

use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::views::{clean_views, random_views};
use crate::{EpochReport, TrainError};

/// File name, in the model folder, of the base model setup makes.
pub const BASE_MODEL_FILE: &str = "mobilenet_v2_maps_train.pt";

/// Input side recorded in the models saved: that of the presets whose CNN they replace.
pub const SAVED_INPUT_SIZE: u32 = 320;

/// The base model setup makes, in the model folder.
pub fn default_base() -> std::path::PathBuf {
    imgvec_ingest::files::model_dir().join(BASE_MODEL_FILE)
}

#[derive(Debug, Clone)]
pub struct ContrastiveOptions {
    /// Side of the training views (the presets run the model at 320 and 224).
    pub size: i64,
    /// Edited views made of each image (besides the clean one).
    pub views: usize,
    pub epochs: usize,
    pub batch_size: i64,
    pub learning_rate: f64,
    /// InfoNCE temperature.
    pub temperature: f64,
    /// Weight of the term that keeps each view's embedding near the base model's.
    pub keep: f64,
    pub seed: u64,
}

impl Default for ContrastiveOptions {
    fn default() -> Self {
        ContrastiveOptions {
            size: 224,
            views: 10,
            epochs: 60,
            batch_size: 128,
            learning_rate: 1e-4,
            temperature: 0.05,
            keep: 4.0,
            seed: 0,
        }
    }
}

impl ContrastiveOptions {
    fn check(&self, images: i64) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        if !(64..=640).contains(&self.size) || self.size % 32 != 0 {
            return bad(format!(
                "--size {}: must be a multiple of 32 in 64..=640",
                self.size
            ));
        }
        if self.views == 0 || self.epochs == 0 {
            return bad("--views and --epochs must be at least 1".into());
        }
        if self.batch_size < 2 {
            return bad(format!(
                "--batch-size {}: must be at least 2",
                self.batch_size
            ));
        }
        if !(self.temperature > 0.0 && self.learning_rate > 0.0 && self.keep >= 0.0) {
            return bad("--temperature and --learning-rate must be > 0, --keep ≥ 0".into());
        }
        if images < 2 {
            return bad(format!(
                "contrastive training needs at least 2 images, found {images}"
            ));
        }
        Ok(())
    }
}

/// The trainable split model and the variables of its head.
pub struct Contrastive {
    vs: nn::VarStore,
    module: tch::TrainableCModule,
}

impl Contrastive {
    /// Loads a base model saved by `make_default_model.py --trainable`.
    pub fn load(path: &Path) -> Result<Contrastive, TrainError> {
        let not_split = |reason: String| TrainError::Input {
            path: path.display().to_string(),
            reason,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let mut module = tch::TrainableCModule::load(path, vs.root())
            .map_err(|e| not_split(format!("not a TorchScript model: {e}")))?;
        module.set_eval();
        let probe = Tensor::zeros(&[1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let split = tch::no_grad(|| -> Result<(Tensor, Tensor), tch::TchError> {
            let inner = module.method_ts("trunk", &[&probe])?;
            let head = module.method_ts("head", &[&inner])?;
            Ok((inner, head))
        });
        match split {
            Ok((inner, head)) if inner.dim() == 4 && head.dim() == 4 => {}
            _ => {
                return Err(not_split(
                    "not a trainable split model: it needs `trunk` and `head` methods returning \
                     feature maps (scripts/make_default_model.py --layers A,B --trainable)"
                        .into(),
                ))
            }
        }
        Ok(Contrastive { vs, module })
    }

    /// Fine-tunes the head on `images` (`[N, 3, H, W]` bytes, RGB), calling `on_epoch` after
    /// each epoch. Repeatable for a fixed seed and thread count.
    pub fn train(
        &mut self,
        images: &Tensor,
        opts: &ContrastiveOptions,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<Vec<EpochReport>, TrainError> {
        let n = images.size()[0];
        opts.check(n)?;
        let mut rng = StdRng::seed_from_u64(opts.seed);
        // [N, views + 1, C, h, w]: the trunk's maps of the clean view and each edited one.
        let trunk = self.trunk_views(images, opts, &mut rng)?;
        let all = Tensor::arange(n, (Kind::Int64, Device::Cpu));
        let base = tch::no_grad(|| self.embed_views(&trunk, &all))?;
        let mut opt = nn::AdamW {
            wd: 1e-4,
            ..Default::default()
        }
        .build(&self.vs, opts.learning_rate)?;
        let views = opts.views as i64 + 1;
        let mut reports = Vec::new();
        for epoch in 1..=opts.epochs {
            let started = Instant::now();
            let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
            let (mut total, mut seen) = (0.0, 0i64);
            let mut start = 0;
            // A last batch of one image has no negatives: it waits for the next epoch.
            while n - start >= 2 {
                let b = opts.batch_size.min(n - start);
                let idx = order.narrow(0, start, b);
                start += b;
                // Two different views of each image.
                let va = Tensor::randint(views, &[b], (Kind::Int64, Device::Cpu));
                let vb = (&va + Tensor::randint_low(1, views, &[b], (Kind::Int64, Device::Cpu)))
                    .remainder(views);
                let za = self.embed(&trunk, &idx, &va)?;
                let zb = self.embed(&trunk, &idx, &vb)?;
                let mut loss = info_nce(&za, &zb, opts.temperature);
                if opts.keep > 0.0 {
                    let drift = |z: &Tensor, v: &Tensor| {
                        let was = base.index(&[Some(idx.shallow_clone()), Some(v.shallow_clone())]);
                        let cos: Tensor =
                            (z * was).sum_dim_intlist(Some([1i64].as_slice()), false, Kind::Float);
                        (cos.neg() + 1.0).mean(Kind::Float)
                    };
                    loss += (drift(&za, &va) + drift(&zb, &vb)) * opts.keep;
                }
                opt.zero_grad();
                loss.backward();
                opt.step();
                total += loss.double_value(&[]) * b as f64;
                seen += b;
            }
            let r = EpochReport {
                epoch,
                epochs: opts.epochs,
                loss: total / seen.max(1) as f64,
                seconds: started.elapsed().as_secs_f64(),
            };
            on_epoch(&r);
            reports.push(r);
        }
        Ok(reports)
    }

    /// Saves the fine-tuned model (its `forward` is the extractor) with the presets' input size
    /// recorded.
    pub fn save(&mut self, path: &Path) -> Result<(), TrainError> {
        self.module.set_eval();
        self.module.save(path)?;
        let meta = imgvec_ingest::model_meta::ModelMeta {
            input_size: Some(SAVED_INPUT_SIZE),
        };
        imgvec_ingest::model_meta::write_meta(path, &meta)?;
        Ok(())
    }

    /// Unit embeddings (GeM of the head's maps) of every view of the images `idx`:
    /// `[B, views + 1, D]`.
    fn embed_views(&self, trunk: &Tensor, idx: &Tensor) -> Result<Tensor, TrainError> {
        let views = trunk.size()[1];
        let mut out = Vec::new();
        for v in 0..views {
            let which = Tensor::full(&[idx.size()[0]], v, (Kind::Int64, Device::Cpu));
            let mut rows = Vec::new();
            for chunk in idx.split(256, 0) {
                let w = which.narrow(0, 0, chunk.size()[0]);
                rows.push(self.embed(trunk, &chunk, &w)?);
            }
            out.push(Tensor::cat(&rows, 0));
        }
        Ok(Tensor::stack(&out, 1))
    }

    /// Unit embeddings of view `view[i]` of image `idx[i]`.
    fn embed(&self, trunk: &Tensor, idx: &Tensor, view: &Tensor) -> Result<Tensor, TrainError> {
        let maps = trunk
            .index(&[Some(idx.shallow_clone()), Some(view.shallow_clone())])
            .to_kind(Kind::Float);
        let head = self.module.method_ts("head", &[&maps])?;
        Ok(gem(&head).normalize_l2())
    }

    /// The trunk's maps of each image's clean view and `views` edited ones, kept in half
    /// precision: `[N, views + 1, C, h, w]`.
    fn trunk_views(
        &self,
        images: &Tensor,
        opts: &ContrastiveOptions,
        rng: &mut StdRng,
    ) -> Result<Tensor, TrainError> {
        tch::no_grad(|| {
            let mut per_view = Vec::with_capacity(opts.views + 1);
            for v in 0..=opts.views {
                let mut chunks = Vec::new();
                for chunk in images.split(64, 0) {
                    let src = chunk.to_kind(Kind::Float) / 255.0;
                    let x = if v == 0 {
                        clean_views(&src, opts.size)
                    } else {
                        random_views(&src, opts.size, rng)
                    };
                    let maps = self.module.method_ts("trunk", &[&x])?;
                    chunks.push(maps.to_kind(Kind::Half));
                }
                per_view.push(Tensor::cat(&chunks, 0));
            }
            Ok(Tensor::stack(&per_view, 1))
        })
    }
}

/// Generalised-mean pooling (p = 3) of `[B, C, h, w]` maps to `[B, C]`.
fn gem(maps: &Tensor) -> Tensor {
    maps.clamp_min(1e-6)
        .pow_tensor_scalar(3.0)
        .mean_dim(Some([2i64, 3].as_slice()), false, Kind::Float)
        .pow_tensor_scalar(1.0 / 3.0)
}

/// InfoNCE (NT-Xent) over the pairs (`a[i]`, `b[i]`) of unit vectors: each vector's positive is
/// its pair, every other vector of the batch a negative.
pub(crate) fn info_nce(a: &Tensor, b: &Tensor, temperature: f64) -> Tensor {
    let n = a.size()[0];
    let z = Tensor::cat(&[a, b], 0);
    let eye = Tensor::eye(2 * n, (Kind::Float, Device::Cpu));
    let sim = z.matmul(&z.transpose(0, 1)) / temperature - eye * 1e9;
    let target = Tensor::cat(
        &[
            Tensor::arange_start(n, 2 * n, (Kind::Int64, Device::Cpu)),
            Tensor::arange(n, (Kind::Int64, Device::Cpu)),
        ],
        0,
    );
    sim.cross_entropy_for_logits(&target)
}

trait NormalizeL2 {
    fn normalize_l2(&self) -> Tensor;
}

impl NormalizeL2 for Tensor {
    fn normalize_l2(&self) -> Tensor {
        let norm = self
            .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
            .clamp_min(1e-12);
        self / norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(rows: &[[f32; 3]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::of_slice(&flat)
            .view([rows.len() as i64, 3])
            .normalize_l2()
    }

    #[test]
    fn info_nce_is_low_for_matching_pairs_and_high_for_swapped_ones() {
        let a = unit(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        let near = unit(&[[1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.1, 0.0, 1.0]]);
        let swapped = unit(&[[0.0, 1.0, 0.1], [1.0, 0.1, 0.0], [0.1, 0.0, 1.0]]);
        let loss = |b: &Tensor, t: f64| info_nce(&a, b, t).double_value(&[]);
        assert!(loss(&near, 0.05) < 0.01, "{}", loss(&near, 0.05));
        assert!(loss(&swapped, 0.05) > 5.0, "{}", loss(&swapped, 0.05));
        // A warmer temperature softens both.
        assert!(loss(&near, 1.0) > loss(&near, 0.05));
    }

    #[test]
    fn gem_of_a_constant_map_is_the_constant() {
        let maps = Tensor::full(&[2, 4, 3, 3], 0.7, (Kind::Float, Device::Cpu));
        let pooled = gem(&maps);
        assert_eq!(pooled.size(), [2, 4]);
        assert!((pooled - 0.7).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let ok = ContrastiveOptions::default();
        assert!(ok.check(10).is_ok());
        assert!(ok.check(1).is_err());
        for bad in [
            ContrastiveOptions {
                size: 100,
                ..ok.clone()
            },
            ContrastiveOptions {
                views: 0,
                ..ok.clone()
            },
            ContrastiveOptions {
                batch_size: 1,
                ..ok.clone()
            },
            ContrastiveOptions {
                temperature: 0.0,
                ..ok.clone()
            },
            ContrastiveOptions {
                keep: -1.0,
                ..ok.clone()
            },
        ] {
            assert!(bad.check(10).is_err());
        }
    }
}
