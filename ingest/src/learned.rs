//! Learned extractors trained in place with libtorch (tch): a convolutional autoencoder whose
//! encoder becomes a TorchScript extractor following the extractor contract (float RGB NCHW in
//! [0,1] at the model's input size → `[N, D]`).
//!
//! Images are prepared exactly as ingest prepares them for a model (`model_input`: bilinear
//! stretch to `size²`, RGB in [0,1]); the network itself turns them grey (channel mean), so the
//! exported encoder accepts what the engine feeds it and nothing is preprocessed twice.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::nn::{self, Module, ModuleT, OptimizerConfig};
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

/// A 4×4 transposed convolution, stride 2, padding 1: doubles the side.
fn upsample<'a>(path: nn::Path<'a>, input: i64, output: i64) -> nn::ConvTranspose2D {
    let config = nn::ConvTransposeConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    nn::conv_transpose2d(path, input, output, 4, config)
}

/// Input sides the networks accept: multiples of 4 (two stride-2 halvings) in 8..=256.
fn check_size(size: u32) -> Result<(), TrainError> {
    if size < 8 || !size.is_multiple_of(4) || size > 256 {
        return Err(TrainError::Invalid(format!(
            "--size {size}: must be a multiple of 4 in 8..=256"
        )));
    }
    Ok(())
}

impl Autoencoder {
    pub fn new(size: u32, code_dim: i64) -> Result<Autoencoder, TrainError> {
        check_size(size)?;
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
            .add(upsample(&p / "dec2", 64, 32))
            .add_fn(|x| x.relu())
            .add(upsample(&p / "dec3", 32, 1))
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

    /// libtorch's generator is process-wide: tests that seed and train take turns.
    static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
        TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tiny real set: rendered bars at different angles. Loss goes down, and the saved encoder
    /// reloads through the extractor path and gives the same codes.
    #[test]
    fn loss_decreases_and_saved_encoder_matches() {
        let _rng = rng_lock();
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

    fn bars(n: usize, size: u32) -> (Vec<f32>, Tensor) {
        let mut data = Vec::new();
        for i in 0..n {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                let (fx, fy) = (x as f32 - 20.0, y as f32 - 20.0);
                let a = (i % 6) as f32 * 0.5;
                if (fx * a.cos() + fy * a.sin()).abs() < 3.0 {
                    image::Rgb([255; 3])
                } else {
                    image::Rgb([0; 3])
                }
            });
            model_input(&img, size, &mut data);
        }
        let t = Tensor::of_slice(&data).view([n as i64, 3, size as i64, size as i64]);
        (data, t)
    }

    /// Same seed, same thread count: the same encoder.
    #[test]
    fn training_is_deterministic_given_the_seed() {
        let _rng = rng_lock();
        tch::set_num_threads(1);
        let (_, images) = bars(24, 16);
        let opts = AutoencoderOptions {
            size: 16,
            code_dim: 4,
            epochs: 2,
            batch_size: 8,
            augment: Augment {
                rotate_deg: 10.0,
                shift: 0.1,
            },
            ..AutoencoderOptions::default()
        };
        let codes = || {
            seed(11);
            let mut ae = Autoencoder::new(16, 4).unwrap();
            ae.train(&images, &opts, &mut |_| {}).unwrap();
            Vec::<f32>::from(ae.encode(&images).flatten(0, -1))
        };
        assert_eq!(codes(), codes());
    }

    /// The SGAN and its supervised baseline train on a tiny set, and the exported features
    /// reload through the extractor path unchanged.
    #[test]
    fn sgan_trains_and_its_features_reload() {
        let _rng = rng_lock();
        seed(5);
        let dir = tempfile::tempdir().unwrap();
        let (data, images) = bars(36, 16);
        let files: Vec<PathBuf> = (0..36)
            .map(|i| dir.path().join(format!("b{i}.png")))
            .collect();
        for f in &files {
            std::fs::write(f, b"x").unwrap();
        }
        let labels_path = dir.path().join("labels.jsonl");
        let lines: String = (0..12)
            .map(|i| format!("{{\"path\": \"b{i}.png\", \"label\": {}}}\n", i % 6))
            .collect();
        std::fs::write(&labels_path, lines).unwrap();
        let labels = read_labels(&labels_path, &files).unwrap();
        assert_eq!((labels.rows.len(), labels.names.len()), (12, 6));
        for supervised_only in [false, true] {
            let opts = SganOptions {
                size: 16,
                epochs: 2,
                batch_size: 12,
                feature_dim: 16,
                supervised_only,
                ..SganOptions::default()
            };
            let mut d = Discriminator::new(16, 16, 6).unwrap();
            let reports = d.train(&images, &labels, &opts, &mut |_| {}).unwrap();
            assert!(reports.iter().all(|r| r.loss.is_finite()));
            let path = dir.path().join("d.pt");
            d.save_extractor(&path).unwrap();
            let direct = Vec::<f32>::from(d.features(&images.narrow(0, 0, 4)).flatten(0, -1));
            let mut ex = crate::TorchScriptExtractor::load(&path, 16, crate::Pooling::Gap).unwrap();
            use crate::Extractor;
            let via = ex.extract(&data[..4 * 3 * 16 * 16], 4).unwrap();
            assert_eq!(ex.dims(), 16);
            for (a, b) in direct.iter().zip(&via) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn bad_label_files_name_the_line_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.png");
        std::fs::write(&img, b"x").unwrap();
        let other = dir.path().join("b.png");
        std::fs::write(&other, b"x").unwrap();
        let files = vec![img.clone(), other.clone()];
        let path = dir.path().join("labels.jsonl");
        let check = |text: &str, want: &str| {
            std::fs::write(&path, text).unwrap();
            let err = read_labels(&path, &files)
                .err()
                .expect("must fail")
                .to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert!(
                err.contains("labels.jsonl"),
                "{err:?} does not name the file"
            );
        };
        check(
            "{\"path\": \"a.png\", \"label\": \"x\"}\nnot json\n",
            "labels.jsonl:2: not JSON",
        );
        check("{\"label\": \"x\"}\n", ":1: missing string field \"path\"");
        check("{\"path\": \"a.png\"}\n", ":1: missing field \"label\"");
        check("{\"path\": \"nope.png\", \"label\": 1}\n", ":1: ");
        std::fs::write(dir.path().join("c.png"), b"x").unwrap();
        check(
            "{\"path\": \"c.png\", \"label\": 1}\n",
            "is not among the training images",
        );
        check(
            "{\"path\": \"a.png\", \"label\": 1}\n",
            "at least 2 classes",
        );
        std::fs::write(
            &path,
            "{\"path\": \"a.png\", \"label\": 1}\n{\"path\": \"b.png\", \"label\": \"two\"}\n",
        )
        .unwrap();
        let ok = read_labels(&path, &files).unwrap();
        assert_eq!(ok.names, vec!["1".to_string(), "two".to_string()]);
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Autoencoder::new(30, 32).is_err());
        assert!(Autoencoder::new(28, 0).is_err());
    }
}

/// Labels for some of the training images, from a JSON-lines file of
/// `{"path": ..., "label": ...}` (paths absolute or relative to the file's folder).
pub struct Labels {
    /// Row in the training set of each labelled image.
    pub rows: Vec<i64>,
    /// Class index of each labelled image.
    pub class: Vec<i64>,
    /// Class names, index order.
    pub names: Vec<String>,
}

/// Reads `path`, matching each line to an image of `files` (by canonical path). Errors name the
/// file, the line and the reason.
pub fn read_labels(path: &Path, files: &[PathBuf]) -> Result<Labels, TrainError> {
    let bad = |line: usize, reason: String| TrainError::Input {
        path: format!("{}:{line}", path.display()),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::Input {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let index: std::collections::HashMap<PathBuf, usize> = files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| std::fs::canonicalize(f).ok().map(|c| (c, i)))
        .collect();
    let mut names: Vec<String> = Vec::new();
    let (mut rows, mut class) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(line_no, format!("not JSON: {e}")))?;
        let p = v["path"]
            .as_str()
            .ok_or_else(|| bad(line_no, "missing string field \"path\"".into()))?;
        let label = match &v["label"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(x) => x.to_string(),
            _ => {
                return Err(bad(
                    line_no,
                    "missing field \"label\" (string or number)".into(),
                ))
            }
        };
        let full = base.join(p);
        let canonical = std::fs::canonicalize(&full)
            .map_err(|e| bad(line_no, format!("{}: {e}", full.display())))?;
        let row = *index.get(&canonical).ok_or_else(|| {
            bad(
                line_no,
                format!("{} is not among the training images", full.display()),
            )
        })?;
        let c = match names.iter().position(|x| *x == label) {
            Some(c) => c,
            None => {
                names.push(label);
                names.len() - 1
            }
        };
        rows.push(row as i64);
        class.push(c as i64);
    }
    if names.len() < 2 {
        return Err(TrainError::Input {
            path: path.display().to_string(),
            reason: format!(
                "needs labelled images of at least 2 classes, found {}",
                names.len()
            ),
        });
    }
    Ok(Labels { rows, class, names })
}

#[derive(Debug, Clone)]
pub struct SganOptions {
    pub size: u32,
    pub epochs: usize,
    pub batch_size: i64,
    pub learning_rate: f64,
    pub seed: u64,
    pub augment: Augment,
    /// Width of the feature layer (the exported descriptor).
    pub feature_dim: i64,
    /// Train the same network on the labelled images only (the baseline).
    pub supervised_only: bool,
}

impl Default for SganOptions {
    fn default() -> Self {
        SganOptions {
            size: 28,
            epochs: 50,
            batch_size: 100,
            learning_rate: 3e-4,
            seed: 0,
            augment: Augment {
                rotate_deg: 12.0,
                shift: 0.08,
            },
            feature_dim: 128,
            supervised_only: false,
        }
    }
}

/// The discriminator of a semi-supervised GAN (Salimans et al. 2016): K class logits whose
/// log-sum-exp is the "real" score (the K+1-th, fake, logit fixed at 0); its penultimate layer
/// is the exported feature extractor.
pub struct Discriminator {
    vs: nn::VarStore,
    c1: nn::Conv2D,
    c2: nn::Conv2D,
    c3: nn::Conv2D,
    fc: nn::Linear,
    head: nn::Linear,
    size: i64,
}

impl Discriminator {
    pub fn new(size: u32, feature_dim: i64, classes: i64) -> Result<Discriminator, TrainError> {
        check_size(size)?;
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root();
        let s = size as i64;
        let q = (s / 4 + 1) / 2; // after three stride-2 convolutions with padding 1
        Ok(Discriminator {
            c1: nn::conv2d(&p / "c1", 1, 32, 3, conv(2, 1)),
            c2: nn::conv2d(&p / "c2", 32, 64, 3, conv(2, 1)),
            c3: nn::conv2d(&p / "c3", 64, 128, 3, conv(2, 1)),
            fc: nn::linear(&p / "fc", 128 * q * q, feature_dim, Default::default()),
            head: nn::linear(&p / "head", feature_dim, classes, Default::default()),
            vs,
            size: s,
        })
    }

    /// Features of grey images `[B, 1, S, S]`.
    fn features_grey(&self, g: &Tensor, train: bool) -> Tensor {
        let x = if train {
            g + Tensor::randn_like(g) * 0.15
        } else {
            g.shallow_clone()
        };
        let x = x.apply(&self.c1).leaky_relu().dropout(0.2, train);
        let x = x.apply(&self.c2).leaky_relu().dropout(0.2, train);
        let x = x.apply(&self.c3).leaky_relu().dropout(0.2, train);
        x.flatten(1, -1).apply(&self.fc).leaky_relu()
    }

    /// The extractor: RGB `[N, 3, S, S]` in [0,1] → features `[N, feature_dim]`.
    pub fn features(&self, x: &Tensor) -> Tensor {
        self.features_grey(
            &x.mean_dim(Some([1i64].as_slice()), true, Kind::Float),
            false,
        )
    }

    pub fn save_extractor(&mut self, path: &Path) -> Result<(), TrainError> {
        self.vs.freeze();
        let example = Tensor::rand(&[2, 3, self.size, self.size], (Kind::Float, Device::Cpu));
        let me = &*self;
        let module = tch::CModule::create_by_tracing(
            "ImgvecSganFeatures",
            "forward",
            &[example],
            &mut |inputs| vec![me.features(&inputs[0])],
        )?;
        module.save(path)?;
        Ok(())
    }

    /// Trains on `images` (all of them unlabelled, `labels` the labelled subset), with a DCGAN
    /// generator and feature matching, or on the labelled images only (`supervised_only`).
    pub fn train(
        &mut self,
        images: &Tensor,
        labels: &Labels,
        opts: &SganOptions,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<Vec<EpochReport>, TrainError> {
        let grey_all = images.mean_dim(Some([1i64].as_slice()), true, Kind::Float);
        let lab_rows = Tensor::of_slice(&labels.rows);
        let lab_x = images.index_select(0, &lab_rows);
        let lab_y = Tensor::of_slice(&labels.class);
        let n = images.size()[0];
        let n_lab = lab_x.size()[0];
        if n < 2 {
            return Err(TrainError::Invalid(
                "training needs at least 2 images".into(),
            ));
        }
        let s = self.size;
        let q = s / 4;
        let gvs = nn::VarStore::new(Device::Cpu);
        let gp = gvs.root();
        let zdim = 100;
        let gen = nn::seq_t()
            .add(nn::linear(
                &gp / "g1",
                zdim,
                128 * q * q,
                Default::default(),
            ))
            .add(nn::batch_norm1d(
                &gp / "bn1",
                128 * q * q,
                Default::default(),
            ))
            .add_fn(|x| x.relu())
            .add_fn(move |x| x.view([-1, 128, q, q]))
            .add(upsample(&gp / "g2", 128, 64))
            .add(nn::batch_norm2d(&gp / "bn2", 64, Default::default()))
            .add_fn(|x| x.relu())
            .add(upsample(&gp / "g3", 64, 1))
            .add_fn(|x| x.sigmoid());
        let mut opt_d = nn::Adam {
            beta1: 0.5,
            ..Default::default()
        }
        .build(&self.vs, opts.learning_rate)?;
        let mut opt_g = nn::Adam {
            beta1: 0.5,
            ..Default::default()
        }
        .build(&gvs, opts.learning_rate)?;
        let bs = opts.batch_size.max(2).min(n.max(2));
        let mut reports = Vec::new();
        for epoch in 1..=opts.epochs {
            let started = Instant::now();
            let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
            let steps = if opts.supervised_only {
                (n / bs).max(1)
            } else {
                n / bs
            };
            let (mut total, mut count) = (0f64, 0usize);
            for step in 0..steps.max(1) {
                // A labelled batch (drawn with replacement from the few labels).
                let li = Tensor::randint(
                    n_lab,
                    &[bs.min(n_lab.max(1) * 4)],
                    (Kind::Int64, Device::Cpu),
                );
                let xl = opts.augment.apply(&lab_x.index_select(0, &li));
                let yl = lab_y.index_select(0, &li);
                let gl = xl.mean_dim(Some([1i64].as_slice()), true, Kind::Float);
                let logits_l = self.features_grey(&gl, true).apply(&self.head);
                let sup = logits_l.cross_entropy_for_logits(&yl);
                let loss_d = if opts.supervised_only {
                    sup
                } else {
                    let idx = order.narrow(0, (step * bs).min(n - bs), bs);
                    let xu = opts.augment.apply(&grey_all.index_select(0, &idx));
                    let z = Tensor::rand(&[bs, zdim], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
                    let fake = tch::no_grad(|| gen.forward_t(&z, true));
                    let lu = self
                        .features_grey(&xu, true)
                        .apply(&self.head)
                        .logsumexp([1i64].as_slice(), false);
                    let lf = self
                        .features_grey(&fake, true)
                        .apply(&self.head)
                        .logsumexp([1i64].as_slice(), false);
                    let unsup = -lu.mean(Kind::Float)
                        + lu.softplus().mean(Kind::Float)
                        + lf.softplus().mean(Kind::Float);
                    sup + unsup
                };
                opt_d.backward_step(&loss_d);
                total += f64::from(&loss_d);
                count += 1;
                if !opts.supervised_only {
                    // Generator: feature matching on the discriminator's feature layer.
                    let idx = order.narrow(0, (step * bs).min(n - bs), bs);
                    let xu = grey_all.index_select(0, &idx);
                    let z = Tensor::rand(&[bs, zdim], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
                    let fake = gen.forward_t(&z, true);
                    let fr = tch::no_grad(|| {
                        self.features_grey(&xu, true).mean_dim(
                            Some([0i64].as_slice()),
                            false,
                            Kind::Float,
                        )
                    });
                    let ff = self.features_grey(&fake, true).mean_dim(
                        Some([0i64].as_slice()),
                        false,
                        Kind::Float,
                    );
                    let loss_g = (ff - fr).square().mean(Kind::Float);
                    opt_g.zero_grad();
                    loss_g.backward();
                    opt_g.step();
                    // The discriminator's gradients from this step are discarded by its next
                    // backward_step (which zeroes them first).
                }
            }
            let r = EpochReport {
                epoch,
                epochs: opts.epochs,
                loss: total / count.max(1) as f64,
                seconds: started.elapsed().as_secs_f64(),
            };
            on_epoch(&r);
            reports.push(r);
        }
        Ok(reports)
    }
}
