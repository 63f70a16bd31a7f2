//! The bfloat16 forward of setup's models (scripts/make_default_model.py) against their float32
//! forward, on real photos through libtorch; and a model without one keeps its float32 forward.

use imgvec_ingest::extractor::load_module_as;
use imgvec_ingest::files::model_dir;
use imgvec_ingest::precision::Setting;
use imgvec_ingest::preprocess::model_input;
use tch::{Kind, Tensor};

const SIDE: u32 = 224;

/// Four instances-dev photos as one model-input batch [4, 3, 224, 224] (the extractor contract's
/// float32 in [0, 1], made the way ingest makes it).
fn photos() -> Tensor {
    let mut pixels = Vec::new();
    for path in imgvec_testkit::db_images(4) {
        let rgb = image::open(&path).unwrap().to_rgb8();
        model_input(&rgb, SIDE, &mut pixels);
    }
    Tensor::of_slice(&pixels).view([4, 3, SIDE as i64, SIDE as i64])
}

/// Rows of `maps` [N, C, H, W] average-pooled over channels `lo..hi`, L2-normalised.
fn pooled(maps: &Tensor, lo: i64, hi: i64) -> Tensor {
    let v = maps
        .narrow(1, lo, hi - lo)
        .mean_dim([2i64, 3].as_slice(), false, Kind::Float);
    &v / v.norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
}

#[test]
fn the_maps_models_bfloat16_forward_stays_close_to_its_float32_forward() {
    let path = model_dir().join("mobilenet_v2_maps.pt");
    let fp32 = load_module_as(&path, Setting::Float32).unwrap();
    let bf16 = load_module_as(&path, Setting::Bfloat16).unwrap();
    assert!(!fp32.is_bf16(), "fp32 runs forward");
    assert!(
        bf16.is_bf16(),
        "{}: no forward_bf16 (rerun scripts/setup.sh)",
        path.display()
    );
    let x = photos();
    let (a, b) = tch::no_grad(|| (fp32.forward(&x).unwrap(), bf16.forward(&x).unwrap()));
    assert_eq!(a.size(), b.size());
    assert_eq!(b.kind(), Kind::Float, "the contract's float32 comes out");
    let diff = (&a - &b).abs().max().double_value(&[]);
    assert!(diff > 0.0, "forward_bf16 computed exactly what forward did");
    // The two blocks the presets pool (docs/ARCHITECTURE.md): each photo's pooled block points
    // the same way in both precisions.
    for (lo, hi) in [(0, 160), (160, 1440)] {
        let cosines = (pooled(&a, lo, hi) * pooled(&b, lo, hi)).sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Float,
        );
        let worst = cosines.min().double_value(&[]);
        assert!(worst > 0.98, "channels {lo}..{hi}: cosine {worst}");
    }
}

#[test]
fn a_model_without_a_bfloat16_forward_runs_its_float32_forward() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("double.pt");
    let example = Tensor::zeros([1, 3, 8, 8].as_slice(), (Kind::Float, tch::Device::Cpu));
    let module = tch::CModule::create_by_tracing("Double", "forward", &[example], &mut |xs| {
        vec![&xs[0] * 2.0]
    })
    .unwrap();
    module.save(&path).unwrap();
    let model = load_module_as(&path, Setting::Bfloat16).unwrap();
    assert!(!model.is_bf16());
    let x = Tensor::ones([1, 3, 8, 8].as_slice(), (Kind::Float, tch::Device::Cpu));
    let y = tch::no_grad(|| model.forward(&x).unwrap());
    assert_eq!(y.sum(Kind::Float).double_value(&[]), 2.0 * 192.0);
}
