//! The named pipelines (presets) and what each is made of.

use imgvec_ingest::{CnnBlock, FusionSpec, HandBlock, Handcrafted, Pooling};

use super::QueryDefaults;
use crate::local::{LocalSpec, VerifyParams};
use crate::options::{Augment, Preset};
use crate::reduce::WhiteningSpec;
use crate::vlad::VladSpec;

/// Model file (in the model folder) of the `balanced` and `robust` presets.
pub const MAPS_MODEL_FILE: &str = "mobilenet_v2_maps.pt";
/// Input side of the named presets' model.
pub const PRESET_INPUT_SIZE: u32 = 224;

/// What a named preset is made of.
pub(crate) struct PresetSpec {
    pub model_file: &'static str,
    pub input_size: u32,
    pub fusion: Option<FusionSpec>,
    pub whitening: Option<WhiteningSpec>,
    pub query: QueryDefaults,
    pub local: Option<LocalSpec>,
}

/// What each named pipeline is made of (the type itself lives in `imgvec_options`).
pub(crate) trait PresetExt {
    fn spec(self) -> PresetSpec;
}

impl PresetExt for Preset {
    fn spec(self) -> PresetSpec {
        let whitening = Some(WhiteningSpec {
            dims: 256,
            min_rows: 512,
            vlad: None,
            frozen: false,
        });
        match self {
            Preset::Fast => PresetSpec {
                model_file: imgvec_ingest::files::DEFAULT_MODEL_FILE,
                input_size: PRESET_INPUT_SIZE,
                fusion: None,
                whitening: None,
                query: QueryDefaults::default(),
                local: None,
            },
            Preset::Balanced => PresetSpec {
                model_file: MAPS_MODEL_FILE,
                input_size: 320,
                fusion: Some(balanced_fusion()),
                whitening,
                // Measured (docs/SEARCH.md 6c): holidays-dev mAP@10 0.899 → 0.906 with the
                // upright fallback, instances-dev unchanged; 28% of holidays-dev's queries and
                // 11% of instances-dev's are searched again. `fast` leaves it off: its
                // calibration finds no likely match for half of instances-dev's queries.
                query: QueryDefaults {
                    upright: Some(true),
                    ..QueryDefaults::default()
                },
                local: None,
            },
            Preset::Robust => PresetSpec {
                model_file: MAPS_MODEL_FILE,
                input_size: 320,
                fusion: Some(balanced_fusion()),
                whitening,
                query: QueryDefaults {
                    augment: Augment::None,
                    qe: 0,
                    verify: Some(VerifyParams::default()),
                    upright: None,
                },
                local: Some(LocalSpec {
                    sift: robust_sift(),
                }),
            },
            // Measured on instances-dev (docs/RESULTS.md): VLAD lifts the unverified global
            // ranking (recall@1 0.924 → 0.928) but costs near-duplicates once verification
            // runs, so it is not `robust`'s default.
            Preset::RobustVlad => PresetSpec {
                whitening: whitening.map(|w| WhiteningSpec {
                    vlad: Some(VladSpec {
                        words: 64,
                        dims: 128,
                        weight: 0.3,
                    }),
                    ..w
                }),
                ..Preset::Robust.spec()
            },
        }
    }
}

/// `robust`'s SIFT: the reference detector, keeping the 600 strongest keypoints of each image.
/// Measured on instances-dev and holidays-dev (docs/SCALE.md): 600 scored the same recall@1 as
/// 1000 (0.971 / 0.927 against 0.968 / 0.927, in a trial with the CNN at one scale) with 40%
/// less to describe, store and index, and faster verification.
pub fn robust_sift() -> imgvec_ingest::sift::SiftParams {
    imgvec_ingest::sift::SiftParams {
        max_keypoints: 600,
        ..Default::default()
    }
}

/// The fused descriptor of `balanced` and `robust` (1440 CNN + 81 colour + 1764 HOG values).
/// Weights chosen on instances-dev (docs/RESULTS.md): colour 0.5 lifted recall@1 from 0.871 to
/// 0.917 (occlusion, crop, rotate), HOG 0.3 on top to 0.924 (near-duplicates); LBP at 0.3 changed
/// nothing (0.921) and is left out.
pub fn balanced_fusion() -> FusionSpec {
    let rmac = Pooling::Rmac { levels: 3 };
    FusionSpec {
        input_size: 320,
        scales: vec![320, 224],
        cnn: vec![
            CnnBlock {
                name: "mobilenet_v2.features16.rmac".into(),
                channels: (0, 160),
                pooling: rmac,
                weight: 1.0,
            },
            CnnBlock {
                name: "mobilenet_v2.features18.rmac".into(),
                channels: (160, 1440),
                pooling: rmac,
                weight: 1.0,
            },
        ],
        handcrafted: vec![
            HandBlock {
                kind: Handcrafted::Colour,
                weight: 0.5,
            },
            HandBlock {
                kind: Handcrafted::Hog,
                weight: 0.3,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_made_of_what_their_names_promise() {
        assert!(Preset::RobustVlad.spec().whitening.unwrap().vlad.is_some());
        assert!(Preset::Robust.spec().local.is_some() && Preset::Balanced.spec().local.is_none());
    }
}
