//! One module per command group. Each entry point takes its parsed arguments (and the
//! `OpenOptions` built from the global flags) and returns the exit status.

pub(crate) mod admin;
pub(crate) mod bench;
pub(crate) mod dedupe;
pub(crate) mod info;
pub(crate) mod ingest;
pub(crate) mod inspect;
pub(crate) mod search;
pub(crate) mod serve;
pub(crate) mod train;

use imgvec::{printable, Database, PipelineChoice, SearchOptions};
use imgvec_cli::args::{PipelineArgs, QueryArgs, RowArgs};

/// The pipeline `--pipeline` / `--model` ask for; `--model` without `--model-size` takes the
/// size the model records (else 224), and a size that contradicts the record is refused.
pub(crate) fn pipeline_choice(args: PipelineArgs) -> Result<PipelineChoice, imgvec::Error> {
    Ok(match (args.pipeline, args.model) {
        (Some(preset), Some(path)) => PipelineChoice::preset_model(preset, path)?,
        (Some(preset), None) => PipelineChoice::Preset(preset),
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

/// The ids `--id`/`--path` name, in order, each once; and the `--path`s that match no row.
pub(crate) fn resolve_rows(
    db: &Database,
    rows: &RowArgs,
) -> Result<(Vec<u64>, Vec<String>), imgvec::Error> {
    let mut ids = Vec::new();
    let mut missing = Vec::new();
    for &id in &rows.ids {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    for p in &rows.paths {
        match db.get_by_file(p)? {
            Some(rec) if !ids.contains(&rec.id) => ids.push(rec.id),
            Some(_) => {}
            None => missing.push(printable(&p.display().to_string()).into_owned()),
        }
    }
    Ok((ids, missing))
}

/// Prints `not found: …` for each of `missing` (unless `listed`: a JSON answer that lists them)
/// and gives the exit status: 1 when something was not found.
pub(crate) fn report_not_found(missing: &[String], listed: bool) -> std::process::ExitCode {
    if !listed {
        for m in missing {
            crate::output::error(&format!("not found: {m}"));
        }
    }
    if missing.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
