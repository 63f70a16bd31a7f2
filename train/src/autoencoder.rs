//! The convolutional autoencoder; its encoder is exported as a TorchScript extractor.

use std::path::Path;
use std::time::Instant;

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::{Augment, TrainError};

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

pub(crate) fn conv(stride: i64, padding: i64) -> nn::ConvConfig {
    nn::ConvConfig {
        stride,
        padding,
        ..Default::default()
    }
}

/// A 4×4 transposed convolution, stride 2, padding 1: doubles the side.
pub(crate) fn upsample<'a>(path: nn::Path<'a>, input: i64, output: i64) -> nn::ConvTranspose2D {
    let config = nn::ConvTransposeConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    nn::conv_transpose2d(path, input, output, 4, config)
}

/// Input sides the networks accept: multiples of 4 (two stride-2 halvings) in 8..=256.
pub(crate) fn check_size(size: u32) -> Result<(), TrainError> {
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
    /// `imgvec ingest --model FILE` loads like any other extractor (the file records its input size).
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
        crate::data::save_extractor(&module, path, self.size)
    }
}
