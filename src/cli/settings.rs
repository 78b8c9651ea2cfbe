//! Turns parsed arguments into validated configurations, with one clear
//! error per bad value or combination.

use crate::cli::args::{DataArgs, FitArgs, LearningRate, ModelArgs, OptimizerArgs};
use crate::data::{
    CsvOptions, DataConfig, DataSource, FillMissing, Scale, SplitConfig, SplitRule, TaskKind,
};
use crate::model::{Activation, Init};
use crate::optim::{EpsilonStyle, Optimizer, OptimizerConfig};
use crate::train::Mode;
use anyhow::{Result, bail};

/// Model options that do not depend on the data.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOptions {
    /// Hidden layer sizes.
    pub hidden: Vec<usize>,
    /// Hidden activation.
    pub activation: Activation,
    /// Hidden initialiser.
    pub init: Init,
    /// Dropout rate.
    pub dropout: f32,
}

/// Builds the data configuration.
pub fn data_config(args: &DataArgs, seed: u64) -> Result<DataConfig> {
    let source = match (&args.data, &args.images, &args.labels) {
        (_, Some(images), Some(labels)) => DataSource::IdxFiles {
            images: images.clone(),
            labels: labels.clone(),
        },
        (Some(data), _, _) => DataSource::from_arg(data)?,
        (None, _, _) => DataSource::Digits,
    };
    let split = args.validation_split;
    if !(0.0..1.0).contains(&split) {
        bail!(
            "invalid --validation-split {split}: it must be at least 0 and below 1 \
             (0 turns validation off)"
        );
    }
    let rule = match args.split.as_str() {
        "shuffled" => SplitRule::Shuffled,
        "stratified" => SplitRule::Stratified,
        _ => SplitRule::Tail,
    };
    if split == 0.0 && rule != SplitRule::Tail {
        log::warn!(
            "--split {} has no effect: --validation-split 0 turns validation off",
            args.split
        );
    }
    if args.validation_data.is_some() && (split != 0.2 || rule != SplitRule::Tail) {
        bail!(
            "--validation-data replaces the split: drop --validation-split and --split, \
             or drop --validation-data"
        );
    }
    let delimiter = args.delimiter.as_deref().map(parse_delimiter).transpose()?;
    let decimal_comma = match args.decimal.as_str() {
        "." => false,
        "," => true,
        other => bail!("invalid --decimal '{other}': expected '.' or ','"),
    };
    if decimal_comma && delimiter == Some(b',') {
        bail!("--decimal ',' needs a field delimiter other than ',': add --delimiter ';'");
    }
    let header = match (args.header, args.no_header) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    Ok(DataConfig {
        source,
        csv: CsvOptions {
            header,
            delimiter,
            decimal_comma,
        },
        target: args.target.clone(),
        drop: args
            .drop
            .iter()
            .filter(|c| !c.is_empty())
            .cloned()
            .collect(),
        task: match args.task.as_deref() {
            Some("classification") => Some(TaskKind::Classification),
            Some("regression") => Some(TaskKind::Regression),
            _ => None,
        },
        scale: match args.scale.as_str() {
            "minmax" => Scale::MinMax,
            "none" => Scale::None,
            _ => Scale::Standard,
        },
        fill_missing: match args.fill_missing.as_deref() {
            Some("mean") => Some(FillMissing::Mean),
            Some("zero") => Some(FillMissing::Zero),
            _ => None,
        },
        split: SplitConfig {
            fraction: if args.validation_data.is_some() {
                0.0
            } else {
                split
            },
            rule,
            seed,
        },
        validation_data: args.validation_data.clone(),
        load_test: args.evaluate_test,
    })
}

fn parse_delimiter(text: &str) -> Result<u8> {
    match text {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        s if s.len() == 1 && s.is_ascii() && s != "\"" => Ok(s.as_bytes()[0]),
        other => bail!(
            "invalid --delimiter '{other}': expected one ASCII character such as ',' ';' or 'tab'"
        ),
    }
}

/// Parses `--layers` ("256,128"; "" for no hidden layer).
pub fn parse_layers(text: &str) -> Result<Vec<usize>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| {
            let part = part.trim();
            match part.parse::<usize>() {
                Ok(0) => bail!("invalid --layers '{text}': a layer needs at least 1 unit"),
                Ok(n) => Ok(n),
                Err(_) => bail!(
                    "invalid --layers '{text}': '{part}' is not a whole number; \
                     expected sizes such as 256,128"
                ),
            }
        })
        .collect()
}

/// Builds the model options.
pub fn model_options(args: &ModelArgs) -> Result<ModelOptions> {
    let activation = Activation::parse(&args.activation)?;
    let init = match &args.init {
        Some(name) => Init::parse(name)?,
        None => Init::default_for(activation),
    };
    if !(0.0..1.0).contains(&args.dropout) {
        bail!(
            "invalid --dropout {}: expected a rate of at least 0 and below 1",
            args.dropout
        );
    }
    Ok(ModelOptions {
        hidden: parse_layers(&args.layers)?,
        activation,
        init,
        dropout: args.dropout,
    })
}

fn check_range(flag: &str, value: f32, low: f32, high: f32, what: &str) -> Result<()> {
    if !(value >= low && value < high) {
        bail!("invalid {flag} {value}: expected {what}");
    }
    Ok(())
}

/// Builds the optimizer configuration, rejecting options that do not apply to the optimizer.
pub fn optimizer_config(args: &OptimizerArgs) -> Result<OptimizerConfig> {
    let name = args.optimizer.as_deref().unwrap_or("adam");
    let Some(mut optimizer) = Optimizer::with_defaults(name) else {
        bail!("invalid --optimizer '{name}': expected sgd, adam, adamw or rmsprop");
    };
    let not_for = |flag: &str, applies: &str| -> Result<()> {
        bail!("{flag} does not apply to --optimizer {name}: it applies to {applies}")
    };
    let is_adam = matches!(optimizer, Optimizer::Adam { .. } | Optimizer::AdamW { .. });
    if !is_adam {
        if args.beta1.is_some() {
            not_for("--beta1", "adam and adamw")?;
        }
        if args.beta2.is_some() {
            not_for("--beta2", "adam and adamw")?;
        }
        if args.epsilon_style != "keras" {
            not_for("--epsilon-style", "adam and adamw")?;
        }
    }
    if !matches!(optimizer, Optimizer::RmsProp { .. }) && args.rho.is_some() {
        not_for("--rho", "rmsprop")?;
    }
    if is_adam && args.momentum.is_some() {
        not_for("--momentum", "sgd and rmsprop")?;
    }
    if matches!(optimizer, Optimizer::Sgd { .. }) && args.epsilon.is_some() {
        not_for("--epsilon", "adam, adamw and rmsprop")?;
    }
    if args.nesterov && !matches!(optimizer, Optimizer::Sgd { .. }) {
        not_for("--nesterov", "sgd")?;
    }
    match &mut optimizer {
        Optimizer::Sgd { momentum, nesterov } => {
            *momentum = args.momentum.unwrap_or(0.0);
            check_range(
                "--momentum",
                *momentum,
                0.0,
                1.0,
                "a value of at least 0 and below 1",
            )?;
            *nesterov = args.nesterov;
            if *nesterov && *momentum == 0.0 {
                bail!("--nesterov needs --momentum above 0, e.g. --momentum 0.9");
            }
        }
        Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
            epsilon_style,
        }
        | Optimizer::AdamW {
            beta1,
            beta2,
            epsilon,
            epsilon_style,
        } => {
            *beta1 = args.beta1.unwrap_or(*beta1);
            *beta2 = args.beta2.unwrap_or(*beta2);
            *epsilon = args.epsilon.unwrap_or(*epsilon);
            check_range(
                "--beta1",
                *beta1,
                0.0,
                1.0,
                "a value of at least 0 and below 1",
            )?;
            check_range(
                "--beta2",
                *beta2,
                0.0,
                1.0,
                "a value of at least 0 and below 1",
            )?;
            if args.epsilon_style == "pytorch" {
                *epsilon_style = EpsilonStyle::Pytorch;
            }
        }
        Optimizer::RmsProp {
            rho,
            momentum,
            epsilon,
        } => {
            *rho = args.rho.unwrap_or(*rho);
            *momentum = args.momentum.unwrap_or(0.0);
            *epsilon = args.epsilon.unwrap_or(*epsilon);
            check_range("--rho", *rho, 0.0, 1.0, "a value of at least 0 and below 1")?;
            check_range(
                "--momentum",
                *momentum,
                0.0,
                1.0,
                "a value of at least 0 and below 1",
            )?;
        }
    }
    if let Some(eps) = args.epsilon {
        check_range(
            "--epsilon",
            eps,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            "a positive value",
        )?;
    }
    let lr = match args.lr {
        Some(LearningRate::Value(lr)) => lr,
        // `--lr auto` starts from the default; the caller replaces it with the suggestion.
        Some(LearningRate::Auto) | None => optimizer.default_lr(),
    };
    check_range(
        "--lr",
        lr,
        0.0,
        f32::INFINITY,
        "a finite learning rate of at least 0, e.g. 0.001",
    )?;
    check_range(
        "--l2",
        args.l2,
        0.0,
        f32::INFINITY,
        "a finite value of at least 0",
    )?;
    let weight_decay = args
        .weight_decay
        .unwrap_or_else(|| optimizer.default_weight_decay());
    check_range(
        "--weight-decay",
        weight_decay,
        0.0,
        f32::INFINITY,
        "a finite value of at least 0",
    )?;
    if let Some(c) = args.clipnorm {
        check_range(
            "--clipnorm",
            c,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            "a positive finite norm, e.g. 1.0",
        )?;
    }
    Ok(OptimizerConfig {
        optimizer,
        lr,
        l2: args.l2,
        weight_decay,
        clipnorm: args.clipnorm,
    })
}

/// Parses `--mode`.
pub fn mode(args: &FitArgs) -> Mode {
    match args.mode.as_str() {
        "min" => Mode::Min,
        "max" => Mode::Max,
        _ => Mode::Auto,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_parse_lists_and_empty() {
        assert_eq!(parse_layers("256,128").unwrap(), vec![256, 128]);
        assert_eq!(parse_layers(" 8 , 4 ").unwrap(), vec![8, 4]);
        assert!(parse_layers("").unwrap().is_empty());
    }

    #[test]
    fn layers_reject_zero_and_words() {
        let err = parse_layers("64,0").unwrap_err().to_string();
        assert!(err.contains("at least 1 unit"), "{err}");
        let err = parse_layers("64,x").unwrap_err().to_string();
        assert!(err.contains("'x' is not a whole number"), "{err}");
    }

    #[test]
    fn delimiter_names() {
        assert_eq!(parse_delimiter(";").unwrap(), b';');
        assert_eq!(parse_delimiter("tab").unwrap(), b'\t');
        assert!(parse_delimiter(";;").is_err());
    }
}
