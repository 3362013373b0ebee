//! costsim: the command-line front end. Parses arguments, calls one function per subcommand,
//! prints the error chain and maps it to an exit code (2 for bad input, 1 otherwise). A closed
//! output pipe is not an error.

/// `eprintln!` that never panics: a message to stderr that cannot be written (a full disk, a
/// closed pipe) is dropped, so the exit code stays the command's own (2 for bad input), not
/// Rust's 101 for a panic.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod calibrate;
mod cli;
mod errors;
mod files;
mod fit;
mod fixed;
mod lists;
mod output;
mod plot;
mod render;
mod sweep;
mod validate;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command};
use errors::UsageError;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let args: Vec<String> = std::env::args().collect();
            if let Some(message) = negative_value(&err, &args).or_else(|| empty_item(&err, &args)) {
                note!("error: {message}");
                return ExitCode::from(2);
            }
            err.exit()
        }
    };
    if let Err(err) = files::remove_temporaries_on_signal() {
        // Not fatal: outputs are still written whole or not at all; only a temporary may be
        // left behind by an interrupted run.
        note!("warning: {err:#}");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            note!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Clap takes `--batch -1` for an unknown flag `-1` after a missing value; say what it is: a
/// negative value given to the option before it (none of costsim's numbers may be negative).
/// `None` for any other parse error, which clap reports itself.
fn negative_value(err: &clap::Error, args: &[String]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    // Clap names the first flag it could not place: "-1" of "-1e-3", "-i" of "-inf".
    let numeric = |t: &str| {
        t.strip_prefix('-').is_some_and(|m| {
            let lower = m.to_ascii_lowercase();
            m.starts_with(|c: char| c.is_ascii_digit() || c == '.')
                || lower.starts_with("inf")
                || lower.starts_with("nan")
        })
    };
    let at = args
        .iter()
        .skip(1)
        .position(|a| a.starts_with(arg.as_str()) && numeric(a))?
        + 1;
    let option = args[..at]
        .last()
        .filter(|o| o.starts_with("--") && !o.contains('='))?;
    let value = &args[at];
    Some(format!(
        "{option} {value}: {option} takes no negative value (write {option}={value} to have it \
         checked as written)"
    ))
}

/// Clap reads the empty item of a comma-separated list (`--from a.json,`, `--method ,lora`) as
/// a missing value; say what it is, as `--hw` and `--model` do. `None` for any other error.
fn empty_item(err: &clap::Error, args: &[String]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(err.kind(), ErrorKind::InvalidValue) {
        return None;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    // "--from <FILE>" names the option.
    let option = arg.split_whitespace().next()?;
    let value = args.iter().enumerate().find_map(|(i, a)| {
        if a == option {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(option).and_then(|v| v.strip_prefix('='))
        }
    })?;
    (value.contains(',') && value.split(',').any(|s| s.trim().is_empty()))
        .then(|| fit::empty_item_message(option, value))
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Predict(args) => predict(&args),
        Command::Models(a) => write_stdout(&lists::models(a.format)?),
        Command::Hardware(a) => match a.action {
            None => write_stdout(&lists::hardware(a.list.format)?),
            Some(cli::HardwareAction::Show { name }) => write_stdout(&lists::show_hardware(&name)?),
        },
        Command::Validate(args) => {
            use render::Format::{Json, Markdown, Table};
            if args.trace.is_empty() {
                render::check_format(args.format, &[Table, Json, Markdown], "validate")?;
            } else {
                render::check_format(args.format, &[Table, Json], "validate --trace")?;
            }
            write_stdout(&validate::run(&args)?)
        }
        Command::Sweep(args) => sweep::run(&args),
        Command::Crossover(args) => {
            use render::Format::{Json, Table};
            render::check_format(args.format, &[Table, Json], "crossover")?;
            sweep::crossover(&args)?;
            // The JSON report carries `does_not_fit` itself; the table gets the same as notes.
            if args.format == Table {
                let s = sweep::search(&args)?;
                let no_fit = s.memory();
                if !no_fit.is_empty() {
                    // src/sweep.rs renders the table; the crossings' memory verdicts need the
                    // report again (only when something does not fit).
                    let report = s.run().map_err(errors::usage_error)?;
                    write_stdout(&output::crossover_memory_notes(&s, &report))?;
                }
            }
            Ok(())
        }
        Command::Plot(args) => plot::run(&args),
        Command::Calibrate(args) => write_stdout(&calibrate::run(&args)?),
        Command::Fit(args) => write_stdout(&fit::run(args)?),
    }
}

/// Most layer × method blocks `--kernels` lists: 512 (llama2-70b's 80 layers × 5 methods is
/// 400, about 60 MiB while rendering). A block is a few hundred kernel rows and takes up to
/// 0.4 MiB while the table is rendered, so the cap keeps the listing near 200 MiB; a 4096-layer
/// model's five methods would otherwise hold gigabytes.
const MAX_KERNEL_BLOCKS: u64 = 512;

fn predict(args: &cli::PredictArgs) -> Result<()> {
    let cfgs = args.configs()?;
    if args.kernels {
        let layers = cfgs.first().map_or(0, |c| u64::from(c.model.layers));
        let blocks = layers * cfgs.len() as u64;
        if blocks > MAX_KERNEL_BLOCKS {
            return Err(errors::usage_error(format!(
                "--kernels would list {layers} layers × {} methods = {blocks} blocks of kernel \
                 rows, more than the {MAX_KERNEL_BLOCKS} costsim lists; {}use --per-layer instead",
                cfgs.len(),
                if cfgs.len() > 1 {
                    "list one --method at a time, or "
                } else {
                    ""
                }
            )));
        }
    }
    let detail = costsim_model::Detail {
        per_layer: args.per_layer,
        kernels: args.kernels,
    };
    let amount = args.amount()?;
    if args.price.is_some() && amount.is_none() {
        return Err(errors::usage_error(
            "--price costs a whole run; add --tokens N or --samples N (one step costs nothing \
             worth printing)",
        ));
    }
    if args.format == render::Format::Csv {
        // CSV holds one table: the kernels, the per-layer rows, or the summary (which carries
        // the run estimate). Table, markdown and JSON hold them all.
        let asked: Vec<&str> = [
            (args.kernels, "--kernels"),
            (args.per_layer, "--per-layer"),
            (amount.is_some(), "--tokens/--samples"),
        ]
        .into_iter()
        .filter_map(|(on, flag)| on.then_some(flag))
        .collect();
        if asked.len() > 1 {
            return Err(errors::usage_error(format!(
                "--format csv holds one table, and {} each make their own; pass one of them per \
                 run, or use --format json, which holds them all",
                asked.join(" and ")
            )));
        }
    }
    let preds: Vec<_> = cfgs
        .iter()
        .map(|c| costsim_model::predict(c, detail, amount))
        .collect();
    let price = cfgs
        .first()
        .and_then(|c| output::price_of(args.price, &c.hw));
    write_stdout(&output::render(&cfgs, &preds, args.format, price.as_ref())?)
}
