//! Feature-map pooling (GAP, GeM, R-MAC) through the real libtorch path: a TorchScript module
//! traced here returns its input as `[N, 3, S, S]` "feature maps", so the pooled descriptor of a
//! known image can be computed by hand.

use imgvec_ingest::{rmac_regions, Extractor, Pooling, TorchScriptExtractor};
use tch::{CModule, Tensor};

const S: usize = 8;

/// Channel 0: 1 on the left half, 0 on the right; channel 1: 0.25; channel 2: 0.
fn image() -> Vec<f32> {
    let mut px = vec![0f32; 3 * S * S];
    for y in 0..S {
        for x in 0..S / 2 {
            px[y * S + x] = 1.0;
        }
    }
    px[S * S..2 * S * S].fill(0.25);
    px
}

fn identity_model(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("identity.pt");
    let example = Tensor::zeros(
        &[1, 3, S as i64, S as i64],
        (tch::Kind::Float, tch::Device::Cpu),
    );
    let module = CModule::create_by_tracing("Identity", "forward", &[example], &mut |xs| {
        vec![&xs[0] * 1.0]
    })
    .unwrap();
    module.save(&path).unwrap();
    path
}

fn pooled(path: &std::path::Path, pooling: Pooling) -> Vec<f32> {
    let mut ex = TorchScriptExtractor::load(path, S as u32, pooling).unwrap();
    assert_eq!(ex.dims(), 3);
    let two: Vec<f32> = image().into_iter().chain(image()).collect();
    let out = ex.extract(&two, 2).unwrap();
    assert_eq!(
        out[..3],
        out[3..],
        "rows of a batch are pooled independently"
    );
    out[..3].to_vec()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
}

#[test]
fn gap_gem_and_rmac_pool_feature_maps() {
    let dir = tempfile::tempdir().unwrap();
    let model = identity_model(dir.path());
    let gap = pooled(&model, Pooling::Gap);
    assert!(close(&gap, &[0.5, 0.25, 0.0]), "{gap:?}");
    let gem = pooled(&model, Pooling::Gem { p: 3.0 });
    assert!(
        close(&gem, &[0.5f32.powf(1.0 / 3.0), 0.25, 1e-6]),
        "{gem:?}"
    );
    // Every region contains some of the left half, so each region's max is (1, .25, 0); R-MAC
    // sums one unit vector per region.
    let regions = rmac_regions(S as i64, S as i64, 2).len() as f32;
    let unit = [1.0 / 1.0625f32.sqrt(), 0.25 / 1.0625f32.sqrt(), 0.0];
    let rmac = pooled(&model, Pooling::Rmac { levels: 2 });
    assert!(close(&rmac, &unit.map(|u| u * regions)), "{rmac:?}");
}

#[test]
fn rmac_regions_cover_the_map_with_overlap() {
    assert_eq!(rmac_regions(8, 8, 1), vec![(0, 0, 8)]);
    for (h, w, levels) in [(7, 7, 3), (14, 10, 3), (7, 12, 2)] {
        let regions = rmac_regions(h, w, levels);
        for &(y, x, side) in &regions {
            assert!(y >= 0 && x >= 0 && side >= 1 && y + side <= h && x + side <= w);
        }
        // Every cell is covered at every level.
        for l in 1..=levels as i64 {
            let side = 2 * h.min(w) / (l + 1);
            for cy in 0..h {
                for cx in 0..w {
                    assert!(regions.iter().any(|&(y, x, s)| s == side
                        && (y..y + s).contains(&cy)
                        && (x..x + s).contains(&cx)));
                }
            }
        }
    }
}

#[test]
fn pooling_names_parse() {
    assert_eq!("gap".parse(), Ok(Pooling::Gap));
    assert_eq!("gem".parse(), Ok(Pooling::Gem { p: 3.0 }));
    assert_eq!("gem:4.5".parse(), Ok(Pooling::Gem { p: 4.5 }));
    assert_eq!("rmac:2".parse(), Ok(Pooling::Rmac { levels: 2 }));
    assert!("gem:0.5".parse::<Pooling>().is_err());
    assert!("max".parse::<Pooling>().is_err());
}
