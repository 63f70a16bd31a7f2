//! The semi-supervised GAN: a DCGAN generator against a K-class discriminator; the
//! discriminator's feature layer is exported as an extractor.

use std::path::Path;
use std::time::Instant;

use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::autoencoder::{check_size, conv, upsample};
use crate::{Augment, EpochReport, Labels, TrainError};

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
        crate::data::save_extractor(&module, path, self.size)
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
        let mut gan = self.gan(images, labels, opts)?;
        let mut reports = Vec::new();
        for epoch in 1..=opts.epochs {
            let r = self.epoch(&mut gan, epoch);
            on_epoch(&r);
            reports.push(r);
        }
        Ok(reports)
    }

    /// Sets up training: the grey images, the labelled batch source, the generator and both
    /// optimisers.
    fn gan<'a>(
        &self,
        images: &Tensor,
        labels: &Labels,
        opts: &'a SganOptions,
    ) -> Result<Gan<'a>, TrainError> {
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
        let zdim = 100;
        let gen = generator(&gvs, q, zdim);
        let opt_d = nn::Adam {
            beta1: 0.5,
            ..Default::default()
        }
        .build(&self.vs, opts.learning_rate)?;
        let opt_g = nn::Adam {
            beta1: 0.5,
            ..Default::default()
        }
        .build(&gvs, opts.learning_rate)?;
        let bs = opts.batch_size.max(2).min(n.max(2));
        Ok(Gan {
            opts,
            grey_all,
            lab_x,
            lab_y,
            n,
            n_lab,
            bs,
            zdim,
            _gvs: gvs,
            gen,
            opt_d,
            opt_g,
        })
    }

    /// One epoch: a discriminator step per batch, each followed by a generator step unless
    /// `supervised_only`; reports the mean discriminator loss.
    fn epoch(&self, gan: &mut Gan<'_>, epoch: usize) -> EpochReport {
        let (opts, n, bs) = (gan.opts, gan.n, gan.bs);
        let started = Instant::now();
        let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
        let steps = if opts.supervised_only {
            (n / bs).max(1)
        } else {
            n / bs
        };
        let (mut total, mut count) = (0f64, 0usize);
        for step in 0..steps.max(1) {
            total += self.discriminator_step(gan, &order, step);
            count += 1;
            if !opts.supervised_only {
                self.generator_step(gan, &order, step);
                // The discriminator's gradients from this step are discarded by its next
                // backward_step (which zeroes them first).
            }
        }
        EpochReport {
            epoch,
            epochs: opts.epochs,
            loss: total / count.max(1) as f64,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// One discriminator step: cross-entropy on a labelled batch (drawn with replacement from
    /// the few labels), plus, unless `supervised_only`, the unsupervised loss on unlabelled
    /// batch `step` of `order` (real) and a generated batch (fake). Returns the loss.
    fn discriminator_step(&self, gan: &mut Gan<'_>, order: &Tensor, step: i64) -> f64 {
        let (opts, n, n_lab, bs) = (gan.opts, gan.n, gan.n_lab, gan.bs);
        let li = Tensor::randint(
            n_lab,
            &[bs.min(n_lab.max(1) * 4)],
            (Kind::Int64, Device::Cpu),
        );
        let xl = opts.augment.apply(&gan.lab_x.index_select(0, &li));
        let yl = gan.lab_y.index_select(0, &li);
        let gl = xl.mean_dim(Some([1i64].as_slice()), true, Kind::Float);
        let logits_l = self.features_grey(&gl, true).apply(&self.head);
        let sup = logits_l.cross_entropy_for_logits(&yl);
        let loss_d = if opts.supervised_only {
            sup
        } else {
            let idx = order.narrow(0, (step * bs).min(n - bs), bs);
            let xu = opts.augment.apply(&gan.grey_all.index_select(0, &idx));
            let z = Tensor::rand(&[bs, gan.zdim], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
            let fake = tch::no_grad(|| gan.gen.forward_t(&z, true));
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
        gan.opt_d.backward_step(&loss_d);
        f64::from(&loss_d)
    }

    /// One generator step: feature matching on the discriminator's feature layer, the mean
    /// features of a generated batch against those of unlabelled batch `step` of `order`.
    fn generator_step(&self, gan: &mut Gan<'_>, order: &Tensor, step: i64) {
        let (n, bs) = (gan.n, gan.bs);
        let idx = order.narrow(0, (step * bs).min(n - bs), bs);
        let xu = gan.grey_all.index_select(0, &idx);
        let z = Tensor::rand(&[bs, gan.zdim], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let fake = gan.gen.forward_t(&z, true);
        let fr = tch::no_grad(|| {
            self.features_grey(&xu, true)
                .mean_dim(Some([0i64].as_slice()), false, Kind::Float)
        });
        let ff =
            self.features_grey(&fake, true)
                .mean_dim(Some([0i64].as_slice()), false, Kind::Float);
        let loss_g = (ff - fr).square().mean(Kind::Float);
        gan.opt_g.zero_grad();
        loss_g.backward();
        gan.opt_g.step();
    }
}

/// Training state shared by the discriminator's and the generator's steps.
struct Gan<'a> {
    opts: &'a SganOptions,
    /// Every image, grey `[N, 1, S, S]` (the unlabelled batches).
    grey_all: Tensor,
    /// The labelled images and their classes.
    lab_x: Tensor,
    lab_y: Tensor,
    /// Images, labelled images.
    n: i64,
    n_lab: i64,
    /// Batch size.
    bs: i64,
    /// Width of the generator's noise input.
    zdim: i64,
    /// The generator's variables.
    _gvs: nn::VarStore,
    gen: nn::SequentialT,
    opt_d: nn::Optimizer,
    opt_g: nn::Optimizer,
}

/// The DCGAN generator, its variables in `gvs`: noise `[B, zdim]` → grey images
/// `[B, 1, 4q, 4q]` in [0, 1] (`q`: the side before two stride-2 upsamplings).
fn generator(gvs: &nn::VarStore, q: i64, zdim: i64) -> nn::SequentialT {
    let gp = gvs.root();
    nn::seq_t()
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
        .add_fn(|x| x.sigmoid())
}
