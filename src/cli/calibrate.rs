//! `agegate calibrate`: the ALLOW rule's numbers for a bound on minors allowed.

use anyhow::{bail, Context, Result};

use agegate::decide::RuleKind;
use agegate::input_file;
use agegate::tools::calibrate;
use agegate::tools::degrade::Degradation;
use agegate::tools::eval;

use super::tools::{check_writable_dir, degradations, progress_bar, read_manifest};
use super::{print_err, print_line, CalibrateArgs, Outcome, RuleArg};

pub(super) fn calibrate(args: CalibrateArgs) -> Result<Outcome> {
    // The cheap refusals first: a bad target or an unwritable output costs no evaluation.
    if !(args.max_minor_allow > 0.0 && args.max_minor_allow <= 1.0) {
        bail!(calibrate::CalibrateError::Target(args.max_minor_allow));
    }
    let max_sigma = match args.max_sigma.as_str() {
        "none" => calibrate::SigmaCap::None,
        "auto" => calibrate::SigmaCap::Auto,
        years => match years.parse::<f32>() {
            Ok(cap) if agegate::decide::MAX_SIGMAS.contains(&cap) => {
                calibrate::SigmaCap::Fixed(cap)
            }
            _ => bail!("--max-sigma {years}: give none, auto or a number of years from 0.5 to 30"),
        },
    };
    let degradations = degradations(args.degrade.as_deref())?;
    let manifest_bytes = input_file::read(&args.manifest, input_file::MANIFEST)?;
    if let Some(path) = &args.out {
        // Checked, not written: a refused calibration leaves no file behind.
        check_writable_dir(path)?;
    }
    let pipeline = args.models.pipeline()?;
    let entries = read_manifest(&args.manifest, args.root.as_deref(), args.limit)?;
    let rule = match args.rule {
        RuleArg::Threshold => RuleKind::Threshold,
        RuleArg::Margin => RuleKind::Margin,
        RuleArg::POver => RuleKind::POver,
    };
    // The set as it is first: its adults are the cost.
    let mut runs: Vec<(String, Option<Degradation>)> = vec![("clean".to_string(), None)];
    for d in degradations {
        runs.push((d.name(), Some(d)));
    }
    let bar = progress_bar(entries.len() * runs.len());
    let predicted: Vec<(String, Vec<eval::Prediction>)> = runs
        .into_iter()
        .map(|(name, degrade)| {
            let options = eval::EvalOptions { degrade, views: 1 };
            let p = eval::predict_all(&pipeline, &entries, &options, |_| bar.inc(1));
            (name, p)
        })
        .collect();
    bar.finish_and_clear();
    let sets: Vec<calibrate::LabelledSet> = predicted
        .iter()
        .map(|(name, predictions)| calibrate::LabelledSet { name, predictions })
        .collect();
    let request = calibrate::Request {
        rule,
        max_minor_allow: args.max_minor_allow,
        max_sigma,
    };
    let calibrated = calibrate::calibrate(
        &sets,
        &pipeline.policy,
        request,
        &args.manifest,
        &manifest_bytes,
        calibrate::today(),
    )?;
    // The table around the chosen setting, on stderr: what each setting costs.
    let at = calibrated
        .table
        .iter()
        .position(|c| *c == calibrated.chosen)
        .unwrap_or(0);
    let cap = calibrated
        .policy
        .max_sigma()
        .map_or("none".to_string(), |c| format!("{c}"));
    print_err(&format!(
        "max_sigma {cap}; the upper bound is the worst of the sets ({}) and all together",
        sets.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    ));
    print_err(
        "value     minors allowed   all sets   upper bound (where)      adults 25+ not allowed",
    );
    for c in calibrated.table.iter().skip(at.saturating_sub(8)).take(16) {
        let mark = if *c == calibrated.chosen {
            "  <- chosen"
        } else {
            ""
        };
        print_err(&format!(
            "{:<9.4} {:>6} / {:<7} {:>8} {:>10.5} ({:<10}) {:>8.1} %{mark}",
            c.value,
            c.minors_allowed,
            calibrated.calibration.minors,
            c.minors_allowed_all,
            c.minor_allow_upper,
            c.worst_set,
            100.0 * c.adult_referral
        ));
    }
    let toml = calibrate::policy_toml(&calibrated);
    match &args.out {
        Some(path) => {
            std::fs::write(path, &toml).with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            print_line(&toml)?;
        }
    }
    Ok(Outcome::Success)
}
