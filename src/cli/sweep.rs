//! `densetrain sweep`: train every combination of layer sizes, activations,
//! optimizers and learning rates on one split and compare them.

use crate::backend::Backend;
use crate::cli::args::{DataArgs, FitArgs, LearningRate, OptimizerArgs};
use crate::cli::{Outcome, experiment, rundir, settings};
use crate::data;
use crate::model::{Activation, Init};
use crate::tools::plot;
use crate::tools::sweep::{self, SweepCase, Verdict};
use anyhow::{Context, Result, bail};
use clap::{Args, FromArgMatches};

/// Early-stopping patience of each case when `--patience` is absent.
pub const DEFAULT_PATIENCE: usize = 3;

/// Layer lists trained when neither `--layers` nor `--widths` is given.
pub const DEFAULT_LAYERS: [&str; 4] = ["16", "64", "64,64", "256,128"];

/// Options of `densetrain sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: SweepModelArgs,
    #[command(flatten)]
    pub optimizer: SweepOptimizerArgs,
    #[command(flatten)]
    pub fit: FitArgs,
}

/// The architectures to compare.
#[derive(Debug, Args)]
#[command(next_help_heading = "Models")]
pub struct SweepModelArgs {
    /// Hidden layer sizes of one model; repeat for each model, e.g. --layers 16 --layers 64,64
    /// [default: 16, 64, 64,64 and 256,128 unless --widths is given]
    #[arg(long, value_name = "SIZES")]
    pub layers: Vec<String>,
    /// Layer widths of a grid, comma-separated; every width is trained at every depth.
    #[arg(long, value_name = "WIDTHS", value_delimiter = ',')]
    pub widths: Vec<usize>,
    /// Numbers of hidden layers of the grid, comma-separated [default: 1]
    #[arg(
        long,
        value_name = "DEPTHS",
        value_delimiter = ',',
        requires = "widths"
    )]
    pub depths: Vec<usize>,
    /// Hidden activations to compare, comma-separated or repeated [default: relu]
    #[arg(long, value_delimiter = ',',
          value_parser = ["relu", "leaky_relu", "elu", "tanh", "sigmoid"])]
    pub activation: Vec<String>,
    /// Weight initialisation of the hidden layers [default: he for the relu family,
    /// glorot otherwise]
    #[arg(long, value_parser = ["he", "glorot", "lecun"])]
    pub init: Option<String>,
    /// Dropout rate after each hidden layer, at least 0 and below 1.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
}

/// The optimizers to compare and their shared settings.
#[derive(Debug, Args)]
#[command(next_help_heading = "Optimizers")]
pub struct SweepOptimizerArgs {
    /// Optimizers to compare, comma-separated or repeated [default: adam]
    #[arg(long, value_delimiter = ',', value_parser = ["sgd", "adam", "adamw", "rmsprop"])]
    pub optimizer: Vec<String>,
    /// Learning rates to compare, comma-separated or repeated
    /// [default: 0.01 for sgd, 0.001 otherwise]
    #[arg(long, value_delimiter = ',')]
    pub lr: Vec<f32>,
    /// Momentum of sgd or rmsprop [default: 0]
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Nesterov momentum (sgd with --momentum).
    #[arg(long)]
    pub nesterov: bool,
    /// Adam's first-moment decay [default: 0.9]
    #[arg(long)]
    pub beta1: Option<f32>,
    /// Adam's second-moment decay [default: 0.999]
    #[arg(long)]
    pub beta2: Option<f32>,
    /// Epsilon of adam, adamw and rmsprop [default: 1e-7]
    #[arg(long)]
    pub epsilon: Option<f32>,
    /// L2 penalty factor on weights: adds l2 * sum(w^2) to the loss.
    #[arg(long, default_value_t = 0.0)]
    pub l2: f32,
    /// Decoupled weight decay on weights [default: 0.004 for adamw, 0 otherwise]
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Clip gradients to this global L2 norm.
    #[arg(long)]
    pub clipnorm: Option<f32>,
    /// Weight each class's loss by n / (classes * class count).
    #[arg(long, value_parser = ["balanced"])]
    pub class_weight: Option<String>,
}

impl SweepOptimizerArgs {
    /// Returns `train`'s optimizer options for one optimizer and rate, with
    /// every other option as `train` would default it.
    fn for_case(&self, name: &str, lr: Option<f32>) -> Result<OptimizerArgs> {
        let command = <OptimizerArgs as Args>::augment_args(clap::Command::new("sweep"));
        let matches = command
            .try_get_matches_from(["sweep"])
            .context("failed to build the optimizer defaults")?;
        let mut args = OptimizerArgs::from_arg_matches(&matches)
            .context("failed to build the optimizer defaults")?;
        args.optimizer = Some(name.to_string());
        args.lr = lr.map(LearningRate::Value);
        args.momentum = self.momentum;
        args.nesterov = self.nesterov;
        args.beta1 = self.beta1;
        args.beta2 = self.beta2;
        args.epsilon = self.epsilon;
        args.l2 = self.l2;
        args.weight_decay = self.weight_decay;
        args.clipnorm = self.clipnorm;
        Ok(args)
    }
}

/// Lists the hidden-layer lists to train, in the order given.
pub fn layer_lists(args: &SweepModelArgs) -> Result<Vec<Vec<usize>>> {
    let mut lists = Vec::new();
    for text in &args.layers {
        lists.push(settings::parse_layers(text)?);
    }
    let depths = if args.depths.is_empty() {
        vec![1]
    } else {
        args.depths.clone()
    };
    for &width in &args.widths {
        if width == 0 {
            bail!("invalid --widths: a layer needs at least 1 unit");
        }
        for &depth in &depths {
            lists.push(vec![width; depth]);
        }
    }
    if lists.is_empty() {
        for text in DEFAULT_LAYERS {
            lists.push(settings::parse_layers(text)?);
        }
    }
    Ok(lists)
}

/// Builds every combination of layers, activation, optimizer and rate.
pub fn cases(args: &SweepArgs) -> Result<Vec<SweepCase>> {
    if !(0.0..1.0).contains(&args.model.dropout) {
        bail!(
            "invalid --dropout {}: expected a rate of at least 0 and below 1",
            args.model.dropout
        );
    }
    let layers = layer_lists(&args.model)?;
    let activations: Vec<Activation> = if args.model.activation.is_empty() {
        vec![Activation::Relu]
    } else {
        args.model
            .activation
            .iter()
            .map(|a| Activation::parse(a))
            .collect::<Result<_>>()?
    };
    let names = if args.optimizer.optimizer.is_empty() {
        vec!["adam".to_string()]
    } else {
        args.optimizer.optimizer.clone()
    };
    let rates: Vec<Option<f32>> = if args.optimizer.lr.is_empty() {
        vec![None]
    } else {
        args.optimizer.lr.iter().copied().map(Some).collect()
    };
    let mut cases = Vec::new();
    for hidden in &layers {
        for &activation in &activations {
            let init = match &args.model.init {
                Some(name) => Init::parse(name)?,
                None => Init::default_for(activation),
            };
            for name in &names {
                for &lr in &rates {
                    let optimizer_args = args.optimizer.for_case(name, lr)?;
                    cases.push(SweepCase {
                        hidden: hidden.clone(),
                        activation,
                        init,
                        optimizer: settings::optimizer_config(&optimizer_args)?,
                    });
                }
            }
        }
    }
    Ok(cases)
}

/// Runs `densetrain sweep`.
pub fn run(args: &SweepArgs) -> Result<Outcome> {
    let verbose = args.fit.verbose;
    let seed = experiment::seed(&args.fit);
    let data_config = settings::data_config(&args.data, seed)?;
    let cases = cases(args)?;
    experiment::check_fit_args(&args.fit)?;
    let backend = crate::cli::device::select(&args.fit)?;
    let out = rundir::check_out(args.fit.out.as_deref())?;

    let prepared = data::prepare(&data_config)?;
    experiment::report_data(&prepared, verbose);
    let Some(validation) = prepared.validation.as_ref() else {
        bail!(
            "sweep compares validation losses, and --validation-split 0 turns validation off; \
             use a split above 0 or --validation-data"
        );
    };
    let classification = experiment::is_classification(&prepared);
    let first = &cases[0];
    let base = experiment::model_spec(
        &prepared,
        &settings::ModelOptions {
            hidden: first.hidden.clone(),
            activation: first.activation,
            init: first.init,
            dropout: args.model.dropout,
        },
    )?;
    let early =
        experiment::early_stopping(&args.fit, true, classification, Some(DEFAULT_PATIENCE))?;
    let class_weights = experiment::class_weights(
        args.optimizer.class_weight.as_deref(),
        &prepared,
        &prepared.train,
    )?;
    let mut fit = experiment::fit_config(&args.fit, seed, first.optimizer, early, class_weights)?;
    // One line per model; per-epoch lines only at --verbose 2.
    fit.verbose = if verbose == 2 { 2 } else { 0 };
    let units = experiment::units(&prepared);
    let out_dir = rundir::create(out)?;
    if verbose > 0 {
        println!(
            "Sweep: {} models, seed {seed}, early stopping on {} with patience {}, {}",
            cases.len(),
            early.monitor,
            early.patience.unwrap_or(0),
            backend.description()
        );
    }
    let total = cases.len();
    let rows = sweep::run_sweep(
        &backend,
        &base,
        &cases,
        &prepared.train,
        validation,
        units,
        &fit,
        |index, row| {
            if verbose > 0 {
                println!(
                    "[{}/{total}] {}: best val_loss {:.4} at epoch {}, {:.1} s",
                    index + 1,
                    row.case.label(),
                    row.best_val_loss,
                    row.best_epoch.map_or("-".to_string(), |e| e.to_string()),
                    row.seconds
                );
            }
        },
    )?;
    let metric_name = if classification { "accuracy" } else { "mae" };
    println!("{}", sweep::table(&rows, metric_name));
    if verbose > 0 {
        println!(
            "Verdicts: overfitting when the last val_loss is over {:.0}% above the model's best \
             while its training loss is lower. When the best val_loss is over {:.0}% above the \
             sweep's best: underfitting if the last training loss is also above the sweep's \
             best, else overfitting. Otherwise good.",
            sweep::OVERFIT_RISE * 100.0,
            sweep::UNDERFIT_MARGIN * 100.0
        );
    }
    experiment::write_text(&out_dir, "sweep.csv", &sweep::to_csv(&rows, metric_name))?;
    let figure = sweep::figure(&rows, plot::loss_unit(!classification));
    plot::write_figure(&figure, &out_dir, "sweep")?;
    if verbose > 0 {
        println!(
            "Wrote {} (sweep.csv, sweep.png, sweep.svg)",
            out_dir.display()
        );
    }
    if rows.iter().all(|r| r.verdict == Verdict::Diverged) {
        return Ok(Outcome::TargetNotMet);
    }
    Ok(Outcome::Success)
}
