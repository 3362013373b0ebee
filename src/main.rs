//! costsim: the command-line front end. Parses arguments, calls one function per subcommand,
//! prints the error chain and maps it to an exit code (2 for bad input, 1 otherwise). A closed
//! output pipe is not an error.

mod calibrate;
mod cli;
mod files;
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
        Command::Models => models(),
        Command::Hardware => hardware(),
        Command::Validate(args) => write_stdout(&validate::run(&args)?),
        Command::Sweep(args) => sweep::run(&args),
        Command::Crossover(args) => sweep::crossover(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Calibrate(args) => write_stdout(&calibrate::run(&args)?),
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
            return Err(cli::usage_error(format!(
                "--kernels would list {layers} layers × {} methods = {blocks} blocks of kernel \
                 rows, more than the {MAX_KERNEL_BLOCKS} costsim lists; list one --method at a time, or use \
                 --per-layer instead",
                cfgs.len()
            )));
        }
    }
    let detail = costsim_model::Detail {
        per_layer: args.per_layer,
        kernels: args.kernels,
    };
    let amount = args.amount()?;
    let preds: Vec<_> = cfgs
        .iter()
        .map(|c| costsim_model::predict(c, detail, amount))
        .collect();
    write_stdout(&output::render(&cfgs, &preds, args.format)?)
}

fn models() -> Result<()> {
    let mut rows = vec![];
    for p in costsim_model::PRESETS {
        let m = p.config();
        rows.push(vec![
            p.name.to_string(),
            match m.family {
                costsim_model::Family::Gpt2 => "gpt2".into(),
                costsim_model::Family::Llama => "llama".into(),
            },
            m.layers.to_string(),
            m.hidden.to_string(),
            format!("{}/{}", m.heads, m.kv_heads),
            m.intermediate.to_string(),
            m.vocab.to_string(),
            m.max_positions.to_string(),
            m.total_params().to_string(),
            output::count(m.total_params() as f64),
            output::count(p.published_params),
        ]);
    }
    let head = [
        "model",
        "family",
        "layers",
        "hidden",
        "heads/kv",
        "ffn",
        "vocab",
        "positions",
        "params",
        "",
        "published",
    ];
    write_stdout(&simple_table(&head, &rows))
}

fn hardware() -> Result<()> {
    let profiles = costsim_hardware::builtin_profiles().context("built-in profiles")?;
    let rows: Vec<Vec<String>> = profiles
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.aliases.join(","),
                p.display_name.clone(),
                p.sms.to_string(),
                format!("{:.1}", p.peak_fp32_flops / 1e12),
                format!("{:.1}", p.peak_tf32_flops / 1e12),
                format!("{:.1}", p.peak_bf16_flops / 1e12),
                format!("{:.0}", p.bandwidth_bps / 1e9),
                format!("{:.1}", p.memory_bytes / (1u64 << 30) as f64),
                format!("{:.2}", p.gemm_efficiency),
                format!("{:.1}", p.launch_floor_s * 1e6),
            ]
        })
        .collect();
    let head = [
        "name", "alias", "device", "SMs", "fp32 TF", "tf32 TF", "bf16 TF", "GB/s", "GiB",
        "gemm eff", "floor us",
    ];
    let mut s = simple_table(&head, &rows);
    s.push_str("\nEfficiencies and host costs are datasheet defaults or published figures, uncalibrated\nwhere marked; each value's source is in hardware/profiles/NAME.toml.\n");
    write_stdout(&s)
}

fn simple_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let fmt_row = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut s = fmt_row(head.to_vec());
    s.push('\n');
    for r in rows {
        s.push_str(&fmt_row(r.iter().map(String::as_str).collect()));
        s.push('\n');
    }
    s
}
