//! `densetrain cv --folds K`: k-fold cross-validation.

use crate::backend::Backend;
use crate::cli::args::{DataArgs, FitArgs, LearningRate, ModelArgs, OptimizerArgs};
use crate::cli::{Outcome, experiment, rundir, settings};
use crate::data::{self, SplitConfig};
use crate::tools::cv::{self, CvConfig};
use crate::tools::plot;
use crate::train::StopReason;
use anyhow::{Result, bail};
use clap::Args;
use std::time::Instant;

/// Options of `densetrain cv`.
#[derive(Debug, Args)]
pub struct CvArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optimizer: OptimizerArgs,
    #[command(flatten)]
    pub fit: FitArgs,
    /// Number of folds K: each fold is held out once and scored by a model trained on the
    /// others. Rows are shuffled with --seed before they are assigned to folds unless
    /// --no-shuffle is given, which also keeps the batches in file order.
    #[arg(long, default_value_t = 5, help_heading = "Cross-validation",
          allow_negative_numbers = true, value_parser = crate::cli::args::whole_number)]
    pub folds: usize,
}

/// Runs `densetrain cv`.
pub fn run(args: &CvArgs) -> Result<Outcome> {
    if args.data.validation_data.is_some() {
        bail!(
            "--validation-data does not apply to cv: each fold carves its early-stopping \
             validation part from its own training part by --validation-split"
        );
    }
    if args.data.evaluate_test {
        bail!("--evaluate-test does not apply to cv: every row is held out once instead");
    }
    if args.optimizer.lr == Some(LearningRate::Auto) {
        bail!("--lr auto does not apply to cv; run lr-find first and pass --lr VALUE");
    }
    let verbose = args.fit.verbose;
    let seed = experiment::seed(&args.fit);
    let mut data_config = settings::data_config(&args.data, seed)?;
    let inner_split: SplitConfig = data_config.split;
    data_config.split.fraction = 0.0;
    let options = settings::model_options(&args.model)?;
    let optimizer = settings::optimizer_config(&args.optimizer)?;
    cv::check_fold_count(args.folds)?;
    experiment::check_fit_args(&args.fit)?;
    let backend = crate::cli::device::select(&args.fit)?;
    let out = rundir::check_out(args.fit.out.as_deref())?;

    let prepared = data::prepare(&data_config)?;
    experiment::report_data(&prepared, verbose);
    let classification = experiment::is_classification(&prepared);
    let spec = experiment::model_spec(&prepared, &options)?;
    let has_validation = inner_split.fraction > 0.0;
    let early = experiment::early_stopping(&args.fit, has_validation, classification, None)?;
    let class_weights = experiment::class_weights(
        args.optimizer.class_weight.as_deref(),
        &prepared,
        &prepared.train,
    )?;
    let mut fit = experiment::fit_config(&args.fit, seed, optimizer, early, class_weights)?;
    // One line per fold; per-epoch lines only at --verbose 2.
    fit.verbose = if verbose == 2 { 2 } else { 0 };
    let labels: Option<Vec<u32>> =
        classification.then(|| prepared.train.y.iter().map(|&y| y as u32).collect());
    let config = CvConfig {
        folds: args.folds,
        shuffle: !args.fit.no_shuffle,
        seed,
        inner_split,
        scale: data_config.scale,
    };
    cv::check_folds(
        prepared.train.rows,
        config.folds,
        labels.as_deref(),
        prepared.preprocessor.class_names(),
    )?;
    // NOTE: cv, sweep and lr-find install no stop-signal handling, so SIGINT or
    // SIGTERM ends them without a message and keeps only the files written so far.
    let out_dir = rundir::create(out)?;
    if verbose > 0 {
        println!(
            "Cross-validation: {} {} folds of {} rows, seed {seed}, early stopping on {}, {}",
            config.folds,
            if labels.is_some() {
                "stratified"
            } else {
                "plain"
            },
            prepared.train.rows,
            early.monitor,
            backend.description()
        );
    }
    let started = Instant::now();
    let folds = cv::cross_validate(
        &backend,
        &spec,
        &prepared.train,
        labels.as_deref(),
        &prepared.preprocessor,
        &config,
        &fit,
        experiment::units(&prepared),
        |fold| {
            if verbose > 0 {
                println!(
                    "fold {}/{}: held-out loss {:.4}, metric {:.4} ({} epochs, {:.1} s)",
                    fold.fold,
                    config.folds,
                    fold.scores.loss,
                    fold.scores.metric,
                    fold.history.epochs.len(),
                    fold.seconds
                );
            }
        },
    )?;
    let total = started.elapsed().as_secs_f64();
    let metric_name = if classification { "accuracy" } else { "mae" };
    println!("{}", cv::table(&folds, metric_name));
    let mean_fold = folds.iter().map(|f| f.seconds).sum::<f64>() / folds.len() as f64;
    println!(
        "Time: {total:.2} s for {} folds, {:.1}x the mean fold time of {mean_fold:.2} s; one \
         training run with a single validation split trains one such model",
        folds.len(),
        total / mean_fold.max(1e-9)
    );
    experiment::write_text(&out_dir, "cv.csv", &cv::to_csv(&folds, metric_name))?;
    let figure = cv::figure(
        &folds,
        &plot::metric_label(metric_name),
        plot::loss_unit(!classification),
    );
    plot::write_figure(&figure, &out_dir, "cv")?;
    if verbose > 0 {
        println!("Wrote {} (cv.csv, cv.png, cv.svg)", out_dir.display());
    }
    if folds
        .iter()
        .any(|f| matches!(f.stop, StopReason::NonFinite(_)))
    {
        return Ok(Outcome::TargetNotMet);
    }
    Ok(Outcome::Success)
}
