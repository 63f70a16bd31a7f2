//! `imgvec train autoencoder | sgan`: train a learned extractor in place (CPU, libtorch) and
//! save it as a TorchScript model.

use std::path::PathBuf;
use std::process::ExitCode;

use imgvec::{Database, OpenOptions};
use imgvec_cli::args::{AutoencoderArgs, ContrastiveArgs, SganArgs, TrainCommon};

use crate::output::{print_versioned, progress_bar, say, to_json, CliError, CliResult, Ui};

pub(crate) fn autoencoder(args: AutoencoderArgs, threads: usize, ui: Ui) -> CliResult {
    let opts = imgvec_train::AutoencoderOptions {
        size: args.size,
        code_dim: args.code_dim,
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.common.seed,
        augment: imgvec_train::Augment {
            rotate_deg: args.rotate,
            shift: args.shift,
        },
    };
    let run = Run {
        use_it: format!(
            "imgvec ingest DB PATH --model {{out}} (it records its {} px input)",
            opts.size
        ),
        common: args.common,
        threads,
        ui,
    };
    run.training(
        opts.size,
        opts.epochs,
        Loader::Floats,
        |set, report, out| {
            let mut ae = imgvec_train::Autoencoder::new(opts.size, opts.code_dim)?;
            ae.train(&set.images, &opts, report)?;
            ae.save_encoder(out)?;
            Ok(())
        },
    )
}

pub(crate) fn sgan(args: SganArgs, threads: usize, ui: Ui) -> CliResult {
    let opts = imgvec_train::SganOptions {
        size: args.size,
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.common.seed,
        augment: imgvec_train::Augment {
            rotate_deg: args.rotate,
            shift: args.shift,
        },
        feature_dim: args.feature_dim,
        supervised_only: args.supervised,
    };
    let run = Run {
        use_it: format!(
            "imgvec ingest DB PATH --model {{out}} (it records its {} px input)",
            opts.size
        ),
        common: args.common,
        threads,
        ui,
    };
    run.training(
        opts.size,
        opts.epochs,
        Loader::Floats,
        |set, report, out| {
            let labels = imgvec_train::read_labels(&args.labels, &set.files)?;
            let mut d = imgvec_train::Discriminator::new(
                opts.size,
                opts.feature_dim,
                labels.names.len() as i64,
            )?;
            d.train(&set.images, &labels, &opts, report)?;
            d.save_extractor(out)?;
            Ok(())
        },
    )
}

/// `imgvec train contrastive`: fine-tunes the presets' CNN on the images; the model it saves
/// replaces the CNN of `--pipeline balanced|robust` with `--model`.
pub(crate) fn contrastive(args: ContrastiveArgs, threads: usize, ui: Ui) -> CliResult {
    let opts = imgvec_train::ContrastiveOptions {
        views: args.views,
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        temperature: args.temperature,
        keep: args.keep,
        seed: args.common.seed,
        ..imgvec_train::ContrastiveOptions::default()
    };
    let base = match args.base {
        Some(path) => path,
        None => imgvec_train::default_base(),
    };
    if !base.is_file() {
        return Err(CliError::usage(format!(
            "{}: no trainable base model (scripts/setup.sh makes it; or pass --base FILE)",
            base.display()
        )));
    }
    let run = Run {
        use_it: "imgvec ingest DB PATH --pipeline balanced|robust --model {out} \
                 (or imgvec reindex DB with the same flags)"
            .into(),
        common: args.common,
        threads,
        ui,
    };
    // Images are kept as bytes at 256 px: views are cut from them, then scaled to 224.
    run.training(256, opts.epochs, Loader::Bytes, |set, report, out| {
        let mut model = imgvec_train::Contrastive::load(&base)?;
        model.train(&set.images, &opts, report)?;
        model.save(out)?;
        Ok(())
    })
}

/// How a trainer wants its images: floats at the model's input ([0, 1]), or bytes.
enum Loader {
    Floats,
    Bytes,
}

/// A training run's common flags and how to report it.
struct Run {
    common: TrainCommon,
    threads: usize,
    ui: Ui,
    /// How to use the saved model (`{out}`: its path).
    use_it: String,
}

/// Training inputs: files and folders as given, and for an imgvec database folder the stored
/// files of its live rows.
fn training_inputs(paths: &[PathBuf], threads: usize) -> Result<Vec<PathBuf>, imgvec::Error> {
    let mut out = Vec::new();
    for p in paths {
        if Database::exists(p) {
            let open = OpenOptions {
                read_only: true,
                threads,
                ..OpenOptions::default()
            };
            let db = Database::open(p, open)?;
            out.extend(db.records()?.into_iter().map(|r| r.os_path()));
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// `n` of `inputs` (files, or folders expanded to their images), drawn at random with `seed`.
fn sampled(inputs: Vec<PathBuf>, n: usize, seed: u64) -> Result<Vec<PathBuf>, CliError> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    if n == 0 {
        return Err(CliError::usage("--sample must be at least 1".to_string()));
    }
    let list = imgvec::collect_files(&inputs, false);
    let mut files = list.images;
    files.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    files.shuffle(&mut rng);
    files.truncate(n);
    // What could not be listed is listed again by the loader, which reports it.
    files.extend(list.errors.into_iter().map(|(path, _)| path));
    Ok(files)
}

impl Run {
    /// Loads the training images, reports the skipped ones, runs `train` (which saves the model
    /// to its last argument) with a progress bar and a line per epoch, and prints the summary.
    /// Exit status 1 when some images were skipped.
    fn training(
        self,
        size: u32,
        epochs: usize,
        loader: Loader,
        train: impl FnOnce(
            &imgvec_train::TrainingSet,
            &mut dyn FnMut(&imgvec_train::EpochReport),
            &std::path::Path,
        ) -> Result<(), CliError>,
    ) -> CliResult {
        let Run {
            common,
            threads,
            ui,
            use_it,
        } = self;
        let json = common.json;
        imgvec::set_torch_threads(threads);
        imgvec_train::seed(common.seed);
        let mut inputs = training_inputs(&common.paths, threads)?;
        if let Some(n) = common.sample {
            inputs = sampled(inputs, n, common.seed)?;
        }
        let set = match loader {
            Loader::Floats => imgvec_train::load_images(&inputs, size)?,
            Loader::Bytes => imgvec_train::load_image_bytes(&inputs, size)?,
        };
        for (path, reason) in &set.errors {
            if json {
                print_versioned(serde_json::json!({ "path": path, "error": reason }));
            } else {
                eprintln!("skipped: {}: {reason}", path.display());
            }
        }
        let bar = progress_bar(
            ui.progress() && !json,
            epochs as u64,
            "{bar:40} epoch {pos}/{len} {eta} {msg}",
        );
        let started = std::time::Instant::now();
        let saved = common.out.display().to_string();
        train(
            &set,
            &mut |r| {
                bar.inc(1);
                bar.set_message(format!("loss {:.5}", r.loss));
                if json {
                    print_versioned(to_json(r));
                } else {
                    say(
                        &bar,
                        format!(
                            "epoch {:>3}/{}  loss {:.5}  ({:.1} s)",
                            r.epoch, r.epochs, r.loss, r.seconds
                        ),
                    );
                }
            },
            &common.out,
        )?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        if json {
            print_versioned(serde_json::json!({
                "out": saved, "images": set.files.len(), "skipped": set.errors.len(),
                "size": size, "train_seconds": seconds
            }));
        } else {
            println!(
                "trained on {} images ({} skipped) in {:.1} s; saved {saved}\n\
             use it: {}",
                set.files.len(),
                set.errors.len(),
                seconds,
                use_it.replace("{out}", &saved),
            );
        }
        Ok(if set.errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }
}
