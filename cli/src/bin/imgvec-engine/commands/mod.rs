//! One module per command group. Each entry point takes its parsed arguments (and the
//! `OpenOptions` built from the global flags) and returns the exit status.

pub(crate) mod admin;
pub(crate) mod bench;
pub(crate) mod info;
pub(crate) mod ingest;
pub(crate) mod search;
pub(crate) mod serve;
pub(crate) mod train;

use imgvec::{PipelineChoice, SearchOptions};
use imgvec_cli::args::{PipelineArgs, QueryArgs};

/// The pipeline `--pipeline` / `--model` ask for; `--model` without `--model-size` takes the
/// size the model records (else 224), and a size that contradicts the record is refused.
pub(crate) fn pipeline_choice(args: PipelineArgs) -> Result<PipelineChoice, imgvec::Error> {
    Ok(match (args.pipeline, args.model) {
        (Some(preset), _) => PipelineChoice::Preset(preset),
        (None, Some(path)) => PipelineChoice::model(path, args.model_size, args.pooling)?,
        (None, None) => PipelineChoice::Default,
    })
}

/// `opts` with the query-side flags (augmentation, expansion, verification) applied.
pub(crate) fn apply_query(args: &QueryArgs, opts: &mut SearchOptions) -> Result<(), imgvec::Error> {
    args.verify.check()?;
    opts.augment = args.augment;
    opts.qe = args.qe;
    opts.verify = args.verify;
    Ok(())
}
