//! Learned extractors trained in place with libtorch (tch): a convolutional autoencoder whose
//! encoder becomes a TorchScript extractor following the extractor contract (float RGB NCHW in
//! [0,1] at the model's input size → `[N, D]`).
//!
//! Images are prepared exactly as ingest prepares them for a model (`model_input`: bilinear
//! stretch to `size²`, RGB in [0,1]); the network itself turns them grey (channel mean), so the
//! exported encoder accepts what the engine feeds it and nothing is preprocessed twice.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::{collect_files, decode, model_input};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {reason}")]
    Input { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Training images as one `[N, 3, size, size]` tensor, with the files they came from.
pub struct TrainingSet {
    pub images: Tensor,
    pub files: Vec<PathBuf>,
    /// Files that could not be read or decoded, with the reason (skipped).
    pub errors: Vec<(PathBuf, String)>,
}

/// Reads every image under `paths` (files or folders, walked), prepared at `size`.
pub fn load_images(paths: &[PathBuf], size: u32) -> Result<TrainingSet, TrainError> {
    let list = collect_files(paths);
    let mut errors: Vec<(PathBuf, String)> = list.errors.clone();
    let mut data = Vec::new();
    let mut files = Vec::new();
    let per = (3 * size * size) as usize;
    for path in list.images {
        let decoded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| decode(&b).map_err(|e| e.to_string()));
        match decoded {
            Ok(img) => {
                model_input(&img.rgb, size, &mut data);
                files.push(path);
            }
            Err(reason) => errors.push((path, reason)),
        }
    }
    if files.is_empty() {
        return Err(TrainError::Invalid(format!(
            "no readable images under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    debug_assert_eq!(data.len(), files.len() * per);
    let images = Tensor::of_slice(&data).view([files.len() as i64, 3, size as i64, size as i64]);
    Ok(TrainingSet {
        images,
        files,
        errors,
    })
}

/// Random small rotations and shifts (the seed's augmentation), per image.
#[derive(Debug, Clone, Copy, Default)]
pub struct Augment {
    /// Maximum rotation, degrees (uniform in ±).
    pub rotate_deg: f64,
    /// Maximum shift, as a fraction of the image side (uniform in ±).
    pub shift: f64,
}

impl Augment {
    pub fn is_off(&self) -> bool {
        self.rotate_deg == 0.0 && self.shift == 0.0
    }

    /// Applies a random affine warp to each image of the batch `x` (`[B, C, H, W]`).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        if self.is_off() {
            return x.shallow_clone();
        }
        let b = x.size()[0];
        let angle = (Tensor::rand(&[b], (Kind::Float, Device::Cpu)) * 2.0 - 1.0)
            * self.rotate_deg.to_radians();
        let tx = (Tensor::rand(&[b], (Kind::Float, Device::Cpu)) * 2.0 - 1.0) * (2.0 * self.shift);
        let ty = (Tensor::rand(&[b], (Kind::Float, Device::Cpu)) * 2.0 - 1.0) * (2.0 * self.shift);
        let (c, s) = (angle.cos(), angle.sin());
        let theta = Tensor::stack(&[&c, &(-&s), &tx, &s, &c, &ty], 1).view([b, 2, 3]);
        let grid = Tensor::affine_grid_generator(&theta, &x.size(), false);
        // Bilinear, zero (black) padding.
        x.grid_sampler(&grid, 0, 0, false)
    }
}

#[derive(Debug, Clone)]
pub struct AutoencoderOptions {
    pub size: u32,
    pub code_dim: i64,
    pub epochs: usize,
    pub batch_size: i64,
    pub learning_rate: f64,
    pub seed: u64,
    pub augment: Augment,
}

impl Default for AutoencoderOptions {
    fn default() -> Self {
        AutoencoderOptions {
            size: 28,
            code_dim: 32,
            epochs: 20,
            batch_size: 64,
            learning_rate: 2e-3,
            seed: 0,
            augment: Augment::default(),
        }
    }
}

/// Loss of one epoch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    pub loss: f64,
    pub seconds: f64,
}

/// Encoder: grey → conv 32 (stride 2) → conv 64 (stride 2) → linear to the code. Decoder mirrors
/// it with transposed convolutions. The spatial size after the encoder's convolutions is
/// `size / 4` (rounded up).
pub struct Autoencoder {
    vs: nn::VarStore,
    enc: nn::Sequential,
    dec: nn::Sequential,
    size: i64,
}

fn conv(stride: i64, padding: i64) -> nn::ConvConfig {
    nn::ConvConfig {
        stride,
        padding,
        ..Default::default()
    }
}

impl Autoencoder {
    pub fn new(size: u32, code_dim: i64) -> Result<Autoencoder, TrainError> {
        if size < 8 || !size.is_multiple_of(4) || size > 256 {
            return Err(TrainError::Invalid(format!(
                "--size {size}: must be a multiple of 4 in 8..=256"
            )));
        }
        if !(1..=4096).contains(&code_dim) {
            return Err(TrainError::Invalid(format!(
                "--code-dim {code_dim}: must be 1..=4096"
            )));
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root();
        let s = size as i64;
        let q = s / 4;
        let enc = nn::seq()
            .add_fn(|x| x.mean_dim(Some([1i64].as_slice()), true, Kind::Float))
            .add(nn::conv2d(&p / "enc1", 1, 32, 3, conv(2, 1)))
            .add_fn(|x| x.relu())
            .add(nn::conv2d(&p / "enc2", 32, 64, 3, conv(2, 1)))
            .add_fn(|x| x.relu())
            .add_fn(|x| x.flatten(1, -1))
            .add(nn::linear(
                &p / "enc3",
                64 * q * q,
                code_dim,
                Default::default(),
            ));
        let dec = nn::seq()
            .add(nn::linear(
                &p / "dec1",
                code_dim,
                64 * q * q,
                Default::default(),
            ))
            .add_fn(|x| x.relu())
            .add_fn(move |x| x.view([-1, 64, q, q]))
            .add(nn::conv_transpose2d(
                &p / "dec2",
                64,
                32,
                4,
                nn::ConvTransposeConfig {
                    stride: 2,
                    padding: 1,
                    ..Default::default()
                },
            ))
            .add_fn(|x| x.relu())
            .add(nn::conv_transpose2d(
                &p / "dec3",
                32,
                1,
                4,
                nn::ConvTransposeConfig {
                    stride: 2,
                    padding: 1,
                    ..Default::default()
                },
            ))
            .add_fn(|x| x.sigmoid());
        Ok(Autoencoder {
            vs,
            enc,
            dec,
            size: s,
        })
    }

    /// Codes of `x` (`[N, 3, size, size]`).
    pub fn encode(&self, x: &Tensor) -> Tensor {
        self.enc.forward(x)
    }

    /// Trains on `images`, calling `on_epoch` after each epoch. Deterministic given the seed
    /// (libtorch's CPU kernels with a fixed thread count).
    pub fn train(
        &mut self,
        images: &Tensor,
        opts: &AutoencoderOptions,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<Vec<EpochReport>, TrainError> {
        let n = images.size()[0];
        if images.size()[2] != self.size {
            return Err(TrainError::Invalid(
                "training images do not match the model size".into(),
            ));
        }
        let mut opt = nn::Adam::default().build(&self.vs, opts.learning_rate)?;
        let grey = images.mean_dim(Some([1i64].as_slice()), true, Kind::Float);
        let mut reports = Vec::new();
        for epoch in 1..=opts.epochs {
            let started = Instant::now();
            let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
            let mut start = 0;
            while start < n {
                let len = opts.batch_size.min(n - start);
                let idx = order.narrow(0, start, len);
                let batch = opts.augment.apply(&images.index_select(0, &idx));
                let target = batch.mean_dim(Some([1i64].as_slice()), true, Kind::Float);
                let out = self.dec.forward(&self.enc.forward(&batch));
                let loss = out.mse_loss(&target, tch::Reduction::Mean);
                opt.backward_step(&loss);
                start += len;
            }
            // Report the loss on the un-augmented set, comparable across epochs.
            let full = tch::no_grad(|| {
                let out = self.dec.forward(&self.enc.forward(images));
                f64::from(out.mse_loss(&grey, tch::Reduction::Mean))
            });
            let r = EpochReport {
                epoch,
                epochs: opts.epochs,
                loss: full,
                seconds: started.elapsed().as_secs_f64(),
            };
            on_epoch(&r);
            reports.push(r);
        }
        Ok(reports)
    }

    /// Saves the encoder as a TorchScript module (traced with a dynamic batch), which
    /// `imgvec ingest --model FILE --model-size SIZE` loads like any other extractor.
    pub fn save_encoder(&mut self, path: &Path) -> Result<(), TrainError> {
        self.vs.freeze();
        let example = Tensor::rand(&[2, 3, self.size, self.size], (Kind::Float, Device::Cpu));
        let enc = &self.enc;
        let module = tch::CModule::create_by_tracing(
            "ImgvecEncoder",
            "forward",
            &[example],
            &mut |inputs| vec![enc.forward(&inputs[0])],
        )?;
        module.save(path)?;
        Ok(())
    }
}

/// Seeds libtorch's generator (training is then repeatable for a fixed thread count).
pub fn seed(seed: u64) {
    tch::manual_seed(seed as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny real set: rendered bars at different angles. Loss goes down, and the saved encoder
    /// reloads through the extractor path and gives the same codes.
    #[test]
    fn loss_decreases_and_saved_encoder_matches() {
        seed(3);
        let size = 16u32;
        let mut data = Vec::new();
        for i in 0..48 {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                let (fx, fy) = (x as f32 - 20.0, y as f32 - 20.0);
                let a = (i % 6) as f32 * 0.5;
                let d = (fx * a.cos() + fy * a.sin()).abs();
                if d < 2.0 + (i / 6) as f32 {
                    image::Rgb([255; 3])
                } else {
                    image::Rgb([0; 3])
                }
            });
            model_input(&img, size, &mut data);
        }
        let images = Tensor::of_slice(&data).view([48, 3, size as i64, size as i64]);
        let opts = AutoencoderOptions {
            size,
            code_dim: 8,
            epochs: 15,
            batch_size: 16,
            ..AutoencoderOptions::default()
        };
        let mut ae = Autoencoder::new(size, 8).unwrap();
        let reports = ae.train(&images, &opts, &mut |_| {}).unwrap();
        let (first, last) = (reports[0].loss, reports.last().unwrap().loss);
        assert!(last < first * 0.7, "loss {first} -> {last}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.pt");
        ae.save_encoder(&path).unwrap();
        let direct: Vec<f32> = Vec::<f32>::from(ae.encode(&images.narrow(0, 0, 5)).flatten(0, -1));
        let mut ex = crate::TorchScriptExtractor::load(&path, size, crate::Pooling::Gap).unwrap();
        use crate::Extractor;
        assert_eq!(ex.dims(), 8);
        let via = ex
            .extract(&data[..5 * (3 * size * size) as usize], 5)
            .unwrap();
        for (a, b) in direct.iter().zip(&via) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Autoencoder::new(30, 32).is_err());
        assert!(Autoencoder::new(28, 0).is_err());
    }
}
