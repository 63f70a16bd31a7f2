//! Training tests (real libtorch, small synthetic images).

use std::path::PathBuf;

use imgvec_ingest::{model_input, Extractor, Pooling, TorchScriptExtractor};
use tch::Tensor;

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
    let mut ex = TorchScriptExtractor::load(&path, size, Pooling::Gap).unwrap();
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
        let mut ex = TorchScriptExtractor::load(&path, 16, Pooling::Gap).unwrap();
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

/// A contrastive fine-tune changes the head's maps and nothing else: the saved model's first
/// (trunk) channels equal the base model's, the head's differ, and it records the presets'
/// input size. Uses the trainable base model `scripts/setup.sh` makes.
#[test]
fn contrastive_fine_tune_changes_only_the_head() {
    let _rng = rng_lock();
    seed(5);
    let base = default_base();
    assert!(
        base.is_file(),
        "{}: run scripts/setup.sh (it makes the trainable base model)",
        base.display()
    );
    let images = (Tensor::rand(&[12, 3, 96, 96], (tch::Kind::Float, tch::Device::Cpu)) * 255.0)
        .to_kind(tch::Kind::Uint8);
    let opts = ContrastiveOptions {
        size: 64,
        views: 2,
        epochs: 2,
        batch_size: 6,
        learning_rate: 1e-3,
        ..ContrastiveOptions::default()
    };
    let mut model = Contrastive::load(&base).unwrap();
    let reports = model.train(&images, &opts, &mut |_| {}).unwrap();
    assert_eq!(reports.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tuned.pt");
    model.save(&out).unwrap();
    assert_eq!(
        imgvec_ingest::model_meta::read_meta(&out)
            .unwrap()
            .input_size,
        Some(320)
    );
    let probe = Tensor::rand(&[2, 3, 96, 96], (tch::Kind::Float, tch::Device::Cpu));
    let run = |path: &std::path::Path| {
        let m = tch::CModule::load(path).unwrap();
        tch::no_grad(|| m.forward_ts(&[&probe]).unwrap())
    };
    let (before, after) = (run(&base), run(&out));
    assert_eq!(before.size(), after.size());
    let trunk = before.size()[1] - 1280;
    let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    assert!(diff(&before.narrow(1, 0, trunk), &after.narrow(1, 0, trunk)) < 1e-5);
    assert!(
        diff(
            &before.narrow(1, trunk, 1280),
            &after.narrow(1, trunk, 1280)
        ) > 1e-3
    );
    // Not a split model: refused, naming the file.
    let frozen = base.with_file_name("mobilenet_v2_maps.pt");
    let err = Contrastive::load(&frozen).err().unwrap().to_string();
    assert!(err.contains("mobilenet_v2_maps.pt") && err.contains("not a trainable split"));
}
