//! How a model's feature maps are pooled into one vector.

use serde::{Deserialize, Serialize};

/// How `[N, C, H, W]` feature maps become one `C`-long descriptor (DESIGN.md's extractor
/// contract). `[N, D]` outputs are used as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Pooling {
    /// Global average pooling.
    #[default]
    Gap,
    /// Generalised mean: `(mean x^p)^(1/p)` over positions (activations clamped at 1e-6);
    /// p = 1 is GAP, large p approaches max pooling.
    Gem { p: f32 },
    /// Regional maximum activations of convolutions (Tolias et al. 2016): max-pooled square
    /// regions on a grid at `levels` scales, each L2-normalised, summed.
    Rmac { levels: u32 },
}

impl std::str::FromStr for Pooling {
    type Err = String;
    /// `gap`, `gem` (p = 3), `gem:P`, `rmac` (3 levels), `rmac:L`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, arg) = s.split_once(':').map_or((s, None), |(n, a)| (n, Some(a)));
        let bad = || format!("bad pooling `{s}`: use gap, gem[:P] or rmac[:LEVELS]");
        match (name, arg) {
            ("gap", None) => Ok(Pooling::Gap),
            ("gem", None) => Ok(Pooling::Gem { p: 3.0 }),
            ("gem", Some(p)) => match p.parse::<f32>() {
                Ok(p) if p >= 1.0 && p.is_finite() => Ok(Pooling::Gem { p }),
                _ => Err(bad()),
            },
            ("rmac", None) => Ok(Pooling::Rmac { levels: 3 }),
            ("rmac", Some(l)) => match l.parse::<u32>() {
                Ok(levels) if (1..=6).contains(&levels) => Ok(Pooling::Rmac { levels }),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

/// The spelling `FromStr` reads: `gap`, `gem:P`, `rmac:L`.
impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pooling::Gap => write!(f, "gap"),
            Pooling::Gem { p } => write!(f, "gem:{p}"),
            Pooling::Rmac { levels } => write!(f, "rmac:{levels}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_is_written_as_it_is_read() {
        for text in ["gap", "gem:3", "gem:2.5", "rmac:3", "rmac:1"] {
            let pooling: Pooling = text.parse().unwrap();
            assert_eq!(pooling.to_string(), text);
        }
    }
}
