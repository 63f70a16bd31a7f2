//! The option types a caller names: presets, search modes, query augmentation, verification
//! overrides and pooling. Each enum has one spelling, shared by the CLI (clap `ValueEnum`,
//! feature `clap`), JSON (serde), `FromStr` and `Display`. They live apart from the engine so
//! that the `imgvec` launcher parses a command line (help, version, usage errors) without
//! linking libtorch; the `imgvec` crate re-exports them and adds their behaviour.

use serde::{Deserialize, Serialize};

mod pooling;
pub use pooling::Pooling;

/// A value no option accepts, with the message that says which ones it does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOption(pub String);

/// Implements `name()`, `ALL` and `FromStr` of a unit enum from one table of spellings.
macro_rules! named_enum {
    ($ty:ident, $what:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl $ty {
            /// Every value, in the order the help lists them.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The one spelling of this value (CLI, JSON, `FromStr`).
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::InvalidOption;
            fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
                $ty::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    let names: Vec<&str> = $ty::ALL.iter().map(|v| v.name()).collect();
                    $crate::InvalidOption(format!(
                        "unknown {} `{s}` ({})",
                        $what,
                        names.join(", ")
                    ))
                })
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// Named pipelines:
/// - `fast`: MobileNetV2, global average pooling of the last layer at 224 px (1280 dims);
/// - `balanced`: MobileNetV2 mid-level (160 ch) and top-level (1280 ch) maps, R-MAC pooled at
///   320 and 224 px, + handcrafted colour and HOG blocks, fused and PCA-whitened to 256
///   dimensions on the collection;
/// - `robust`: `balanced`'s vectors plus up to 1000 SIFT keypoints per image (RootSIFT, packed
///   in the segments); searches add the images found by descriptor voting and by dense-window
///   search to the global shortlist, verify them spatially (see `local`) and align the ones
///   SIFT cannot verify (see `dense`);
/// - `robust-vlad`: `robust` with a VLAD of each image's RootSIFT descriptors (64 words,
///   whitened to 128 dimensions) fused into the global vector at weight 0.3 (see `vlad`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// MobileNetV2, global average pooling (the fastest ingest; the default).
    Fast,
    /// Mid- and top-level CNN maps R-MAC-pooled at two scales, colour and HOG, whitened.
    Balanced,
    /// `balanced` + SIFT keypoints: voting, spatial verification, dense alignment.
    Robust,
    /// `robust` with a VLAD of the SIFT descriptors fused into the global vector.
    RobustVlad,
}

named_enum!(Preset, "pipeline", [
    Fast => "fast",
    Balanced => "balanced",
    Robust => "robust",
    RobustVlad => "robust-vlad",
]);

/// Search strategies, chosen per query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SearchMode {
    /// Exact cosine over every stored vector.
    #[default]
    #[serde(rename = "exact")]
    #[cfg_attr(feature = "clap", value(name = "exact"))]
    Exact,
    /// FAISS IVF-PQ; exact search answers while the collection is below
    /// `IndexOptions::min_train_rows`.
    #[serde(rename = "ivfpq")]
    #[cfg_attr(feature = "clap", value(name = "ivfpq"))]
    IvfPq,
    /// Hamming distance over binary codes, every code scanned.
    #[serde(rename = "hamming")]
    #[cfg_attr(feature = "clap", value(name = "hamming"))]
    Hamming,
    /// Hamming distance over binary codes through a binary IVF (sub-linear); the full code scan
    /// answers while the collection is too small to train it.
    #[serde(rename = "hamming-ivf")]
    #[cfg_attr(feature = "clap", value(name = "hamming-ivf"))]
    HammingIvf,
}

named_enum!(SearchMode, "search mode", [
    Exact => "exact",
    IvfPq => "ivfpq",
    Hamming => "hamming",
    HammingIvf => "hamming-ivf",
]);

/// Query augmentation: extra copies of an image query searched alongside it; each row keeps its
/// best score over the copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Augment {
    /// The query as given.
    #[default]
    None,
    /// The query and its quarter, half and three-quarter turns.
    Rot4,
}

named_enum!(Augment, "query augmentation", [None => "none", Rot4 => "rot4"]);

/// Per-search overrides of the pipeline's spatial verification (pipelines with local
/// features); each `None` keeps the pipeline's default. The one place these settings are
/// spelled out: the CLI flattens this struct into its arguments.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct VerifyOverrides {
    /// Spatial verification (pipelines with local features, e.g. robust): verify the top N
    /// global results, the N images found by local-descriptor voting and the N found by
    /// dense-window search (0 = off).
    #[cfg_attr(feature = "clap", arg(long = "verify", value_name = "VERIFY"))]
    pub shortlist: Option<usize>,
    /// Images found by dense-window search that are also aligned (0 = no dense alignment).
    #[cfg_attr(feature = "clap", arg(long))]
    pub dense: Option<usize>,
    /// Dense alignment (normalised cross-correlation, -1..1) above which a result gains rank.
    #[cfg_attr(feature = "clap", arg(long, allow_hyphen_values = true))]
    pub alignment_floor: Option<f32>,
    /// Inliers a verified result needs.
    #[cfg_attr(feature = "clap", arg(long))]
    pub min_inliers: Option<usize>,
    /// Inlier tolerance in pixels (of the stored image, at most 640 px a side).
    #[cfg_attr(feature = "clap", arg(long))]
    pub inlier_px: Option<f32>,
    /// Share of the query (0..1) a result's matched frame must cover to count as verified.
    #[cfg_attr(feature = "clap", arg(long, value_name = "SHARE"))]
    pub min_coverage: Option<f32>,
    /// Verified query expansion: search again with the query plus its best N verified results
    /// and rank what did not verify by that (0 = off).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub expand: Option<usize>,
    /// Upright fallback: search an image query whose results hold no match (none verified;
    /// without verification, none calibrated `likely`) again with its 90°, 180° and 270° turns
    /// (true/false; on by default in `robust` and `balanced`).
    #[cfg_attr(feature = "clap", arg(long, value_name = "BOOL"))]
    pub upright: Option<bool>,
}

impl VerifyOverrides {
    /// Refuses values no verification can use.
    pub fn check(&self) -> Result<(), InvalidOption> {
        require(
            self.alignment_floor,
            |a| (-1.0..=1.0).contains(&a),
            "--alignment-floor",
            "a correlation between -1 and 1",
        )?;
        require(
            self.inlier_px,
            |px| px > 0.0 && px.is_finite(),
            "--inlier-px",
            "a positive number of pixels",
        )?;
        require(
            self.min_coverage,
            |c| (0.0..=1.0).contains(&c),
            "--min-coverage",
            "a share of the query between 0 and 1",
        )
    }
}

/// A set `value` must pass `ok`; otherwise the error names the flag, the value and what to give.
fn require(
    value: Option<f32>,
    ok: impl Fn(f32) -> bool,
    flag: &str,
    give: &str,
) -> Result<(), InvalidOption> {
    match value {
        Some(v) if !ok(v) => Err(InvalidOption(format!("{flag} {v}: give {give}"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_names_list_the_values() {
        for &m in SearchMode::ALL {
            assert_eq!(m.name().parse::<SearchMode>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
        }
        for &a in Augment::ALL {
            assert_eq!(a.name().parse::<Augment>().unwrap(), a);
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
        for &p in Preset::ALL {
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        let err = "nonsense".parse::<Preset>().unwrap_err().to_string();
        assert!(err.contains("unknown pipeline `nonsense`"), "{err}");
        let err = "ivf".parse::<SearchMode>().unwrap_err().to_string();
        assert!(err.contains("exact, ivfpq, hamming, hamming-ivf"), "{err}");
    }
}
