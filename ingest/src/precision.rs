//! Which of a model's forwards the engine runs.
//!
//! Every extractor has `forward` (float32, the extractor contract). The `balanced`/`robust`
//! model setup makes (scripts/make_default_model.py) also has `forward_bf16`: the same contract,
//! computed in bfloat16 by a copy whose batch norms were folded into the convolutions in
//! float32. On a CPU with native bfloat16 arithmetic (AVX512-BF16) its forward is about twice as
//! fast, and its outputs stay within a cosine of 0.98 of `forward`'s (0.985–0.996 per photo
//! after pooling; retrieval measured in docs/ARCHITECTURE.md). Elsewhere bfloat16 would be
//! emulated, slower than float32, so `forward` runs. `IMGVEC_PRECISION` overrides the choice:
//! `fp32` always runs `forward`, `bf16` runs `forward_bf16` wherever the model has it, `auto`
//! (the default) decides by the CPU.

use std::path::Path;

use tch::{CModule, Tensor};

/// The environment variable that overrides the choice.
pub const PRECISION_ENV: &str = "IMGVEC_PRECISION";
/// The method that computes the forward in bfloat16.
const BF16_METHOD: &str = "forward_bf16";

/// What `IMGVEC_PRECISION` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// bfloat16 where the CPU computes it natively and the model has the method.
    Auto,
    /// Always `forward`.
    Float32,
    /// `forward_bf16` wherever the model has it.
    Bfloat16,
}

impl Setting {
    /// The setting a value of `IMGVEC_PRECISION` names (unset or empty: `Auto`).
    pub fn parse(value: Option<&str>) -> Result<Setting, String> {
        match value.map(str::trim) {
            None | Some("") | Some("auto") => Ok(Setting::Auto),
            Some("fp32") | Some("float32") => Ok(Setting::Float32),
            Some("bf16") | Some("bfloat16") => Ok(Setting::Bfloat16),
            Some(other) => Err(format!(
                "{PRECISION_ENV}={other:?} is not one of auto, fp32, bf16"
            )),
        }
    }

    /// The setting `IMGVEC_PRECISION` names.
    pub fn from_env() -> Result<Setting, String> {
        Setting::parse(std::env::var(PRECISION_ENV).ok().as_deref())
    }
}

/// Whether to run `forward_bf16`: a pure function of the setting, whether the CPU computes
/// bfloat16 natively and whether the model has the method.
pub fn use_bf16(setting: Setting, cpu_bf16: bool, model_has_it: bool) -> bool {
    model_has_it
        && match setting {
            Setting::Auto => cpu_bf16,
            Setting::Float32 => false,
            Setting::Bfloat16 => true,
        }
}

/// Whether this CPU has native bfloat16 arithmetic.
fn cpu_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A loaded extractor module and the forward it runs.
pub struct Model {
    module: CModule,
    bf16: bool,
}

impl Model {
    /// Picks the forward for `module`, loaded from `path`, under `setting`.
    pub fn new(module: CModule, path: &Path, setting: Setting) -> Model {
        // The method is looked for only where it would run: the probe is a forward of its own.
        let bf16 = use_bf16(setting, cpu_bf16(), true) && has_bf16(&module);
        tracing::debug!(
            "{}: {}",
            path.display(),
            if bf16 { BF16_METHOD } else { "forward" }
        );
        Model { module, bf16 }
    }

    /// Runs the chosen forward on a float32 batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        if self.bf16 {
            self.module.method_ts(BF16_METHOD, &[x])
        } else {
            self.module.forward_ts(&[x])
        }
    }

    /// Whether `forward` runs in bfloat16.
    pub fn is_bf16(&self) -> bool {
        self.bf16
    }
}

/// Whether the module has a `forward_bf16` that runs (tried on one small image: TorchScript
/// modules do not list their methods through libtorch's C API).
fn has_bf16(module: &CModule) -> bool {
    let probe = Tensor::full(
        [1, 3, 64, 64].as_slice(),
        0.5,
        (tch::Kind::Float, tch::Device::Cpu),
    );
    tch::no_grad(|| module.method_ts(BF16_METHOD, &[&probe])).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        let table: [(Option<&str>, Result<Setting, ()>); 8] = [
            (None, Ok(Setting::Auto)),
            (Some(""), Ok(Setting::Auto)),
            (Some("auto"), Ok(Setting::Auto)),
            (Some("fp32"), Ok(Setting::Float32)),
            (Some(" float32 "), Ok(Setting::Float32)),
            (Some("bf16"), Ok(Setting::Bfloat16)),
            (Some("bfloat16"), Ok(Setting::Bfloat16)),
            (Some("fp16"), Err(())),
        ];
        for (value, want) in table {
            let got = Setting::parse(value);
            assert_eq!(got.clone().map_err(|_| ()), want, "{value:?}");
            if let Err(message) = got {
                assert!(message.contains(PRECISION_ENV) && message.contains("fp16"));
            }
        }
    }

    #[test]
    fn bf16_runs_only_where_the_model_has_it_and_the_setting_or_cpu_allow() {
        use Setting::*;
        // (setting, cpu has bf16, model has forward_bf16) -> runs forward_bf16
        let table = [
            (Auto, true, true, true),
            (Auto, false, true, false),
            (Auto, true, false, false),
            (Float32, true, true, false),
            (Float32, false, false, false),
            (Bfloat16, false, true, true),
            (Bfloat16, true, false, false),
            (Bfloat16, false, false, false),
        ];
        for (setting, cpu, model, want) in table {
            assert_eq!(
                use_bf16(setting, cpu, model),
                want,
                "{setting:?} {cpu} {model}"
            );
        }
    }
}
