//! costsim: the command-line front end. Parses arguments, calls one function per subcommand,
//! prints the error chain and maps it to an exit code (2 for bad input, 1 otherwise). A closed
//! output pipe is not an error.

mod calibrate;
mod cli;
mod files;
mod fit;
mod lists;
mod output;
mod plot;
mod sweep;
mod validate;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command, UsageError};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
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
        Command::Hardware(a) => write_stdout(&lists::hardware(a.format)?),
        Command::Validate(args) => write_stdout(&validate::run(&args)?),
        Command::Sweep(args) => sweep::run(&args),
        Command::Crossover(args) => sweep::crossover(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Calibrate(args) => write_stdout(&calibrate::run(&args)?),
        Command::Fit(args) => write_stdout(&fit::run(args)?),
    }
}

fn predict(args: &cli::PredictArgs) -> Result<()> {
    let cfgs = args.configs()?;
    let detail = costsim_model::Detail {
        per_layer: args.per_layer,
        kernels: args.kernels,
    };
    let amount = match (args.tokens, args.samples) {
        (Some(t), _) => Some(costsim_model::Amount::Tokens(t)),
        (None, Some(s)) => Some(costsim_model::Amount::Samples(s)),
        (None, None) => None,
    };
    let preds: Vec<_> = cfgs
        .iter()
        .map(|c| costsim_model::predict(c, detail, amount))
        .collect();
    write_stdout(&output::render(&cfgs, &preds, args.format)?)
}
