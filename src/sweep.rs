//! `costsim sweep`: a grid of configurations evaluated in parallel, written as a table, CSV,
//! JSON or Markdown (to stdout or atomically to --out through `files::Output`). CSV and JSON are
//! streamed: rows are written in grid order as each chunk of points finishes, so memory stays flat
//! whatever the grid; table and Markdown hold every row and are capped at [`MAX_TABLE_POINTS`].
//! A progress bar on a terminal. Also `costsim crossover`, which shares the axis syntax.

use crate::cli::{MethodArg, ModelArgs, PrecisionArg, TrainingArgs};
use crate::errors::usage_error;
use crate::render::{csv_line, md_table, num, text_table, Format};
use anyhow::Result;
use clap::Args;
use costsim_model::method::LayerSelection;
use costsim_model::sweep::{parse_axis, Grid, Row, Status};
use costsim_model::{arch, MethodName};
use rayon::prelude::*;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Built-in models, comma-separated (see `costsim models`).
    #[arg(long, value_delimiter = ',', required_unless_present = "model_config")]
    pub model: Vec<String>,
    /// Hugging Face config.json files, comma-separated (added to --model).
    #[arg(long, value_delimiter = ',', value_name = "FILE")]
    pub model_config: Vec<PathBuf>,
    /// GPUs: built-in names or aliases, or profile files, comma-separated, or `all` (every
    /// built-in GPU).
    #[arg(long, value_delimiter = ',', required = true)]
    pub hw: Vec<String>,
    /// Methods, comma-separated (`all` = the five).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub method: Vec<MethodArg>,
    /// Micro-batch sizes: a list (1,2,4) or ranges (1..64:x2, 8..32:+8).
    #[arg(long, default_value = "8")]
    pub batch: String,
    /// Sequence lengths: a list or ranges (128..4096:x2).
    #[arg(long, default_value = "512")]
    pub seq: String,
    /// LoRA reference ranks (PaCA variants take the paper's matched counts): list or ranges.
    #[arg(long, default_value = "8")]
    pub rank: String,
    /// Layer selections for full, lora and paca, separated by ';' or ',' (all, upper:0.5,
    /// last:K, A..B).
    #[arg(long, default_value = "all")]
    pub train_layers: String,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bf16-mixed")]
    pub precision: Vec<PrecisionArg>,
    #[command(flatten)]
    pub training: TrainingArgs,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write here instead of stdout (written under a temporary name, then renamed).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// Resolve the arguments into a grid.
pub fn grid(args: &SweepArgs) -> Result<Grid> {
    crate::fit::no_empty_item("--model", &args.model)?;
    let mut given = Vec::new();
    for m in &args.model {
        given.push((
            arch::preset(m.trim()).map_err(usage_error)?,
            format!("--model {}", m.trim()),
        ));
    }
    for p in &args.model_config {
        given.push((
            arch::from_hf_config(p).map_err(usage_error)?,
            format!("--model-config {}", p.display()),
        ));
    }
    // Each once: `--model gpt2,gpt2` counts once; a config.json named after a preset (or two
    // files whose `_name_or_path` agree) is refused.
    let models = crate::fit::distinct_by_name(
        given,
        |m| &m.name,
        "models",
        "sweep them in separate runs, or save the config under another name (a config.json is \
         named after its `_name_or_path`, else its file)",
    )?;
    let hws = crate::fit::devices_or_all(&args.hw)?;
    let mut methods: Vec<MethodName> = Vec::new();
    for m in &args.method {
        for n in m.names() {
            if !methods.contains(&n) {
                methods.push(n);
            }
        }
    }
    // Each selection once, in the order given, as every other axis (`all;all` doubled rows).
    let mut layers: Vec<Option<LayerSelection>> = Vec::new();
    for s in split_selections(&args.train_layers) {
        let l = if s == "default" {
            None
        } else {
            Some(s.parse::<LayerSelection>().map_err(usage_error)?)
        };
        if !layers.contains(&l) {
            layers.push(l);
        }
    }
    let mut precisions = Vec::new();
    for p in &args.precision {
        if !precisions.contains(&p.precision()) {
            precisions.push(p.precision());
        }
    }
    let grid = Grid {
        models,
        hws,
        methods,
        batches: parse_axis(&args.batch, "--batch").map_err(usage_error)?,
        seqs: parse_axis(&args.seq, "--seq").map_err(usage_error)?,
        ranks: parse_axis(&args.rank, "--rank")
            .map_err(usage_error)?
            .into_iter()
            .map(Some)
            .collect(),
        train_layers: layers,
        precisions,
        base: args
            .training
            .workload(1, 1, costsim_model::Precision::Bf16Mixed),
        options: args.training.method_options()?,
    };
    grid.check().map_err(usage_error)?;
    Ok(grid)
}

/// `--train-layers` items: ranges contain `..`, so items split on ';' and on ',' alike.
fn split_selections(s: &str) -> Vec<&str> {
    s.split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Points a `--format table` or `markdown` sweep may have: those two align or collect every row
/// before printing, so they hold the whole sweep; csv and json stream.
pub const MAX_TABLE_POINTS: u64 = 100_000;

pub fn run(args: &SweepArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let grid = grid(args)?;
    let total = grid.len();
    if matches!(args.format, Format::Table | Format::Markdown) && total > MAX_TABLE_POINTS {
        return Err(usage_error(format!(
            "{total} points is too many for --format {}, which holds every row (at most \
             {MAX_TABLE_POINTS}); use --format csv or json, which stream rows as they are \
             computed, or narrow a range",
            match args.format {
                Format::Markdown => "markdown",
                _ => "table",
            }
        )));
    }
    // The output is opened before any point is evaluated, so a bad --out fails at once.
    let mut out = args
        .out
        .as_deref()
        .map(crate::files::Output::create)
        .transpose()?;
    let bar = (!args.quiet && std::io::stderr().is_terminal() && total >= 1000).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} points  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let progress = |n| {
        if let Some(b) = &bar {
            b.inc(n);
        }
    };
    match out.as_mut() {
        Some(o) => write(&grid, args.format, &progress, o).map_err(|e| {
            let path = args.out.as_deref().unwrap_or(Path::new(""));
            // A write that failed (a full disk) reads as every command's does.
            match e.downcast_ref::<std::io::Error>() {
                Some(io) => crate::files::write_error(path, io),
                None => e.context(format!("writing {}", path.display())),
            }
        })?,
        None => {
            let mut w = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            write(&grid, args.format, &progress, &mut w)
                .and_then(|()| w.flush().map_err(Into::into))
                .map_err(|e| e.context("writing to stdout"))?;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    // Only a sweep that finished is renamed into place: an error or an interruption before
    // this leaves nothing at --out (the temporary is removed when `out` is dropped).
    if let Some(o) = out {
        o.commit()?;
        if !args.quiet {
            let secs = started.elapsed().as_secs_f64();
            note!(
                "wrote {} ({total} points in {}; {})",
                args.out.as_deref().unwrap_or(Path::new("")).display(),
                if secs < 1.0 {
                    format!("{:.0} ms", secs * 1e3)
                } else {
                    format!("{secs:.1} s")
                },
                rate(total, secs)
            );
        }
    }
    Ok(())
}

/// Points per second, rounded for reading: "12 300 points/s", never "inf".
fn rate(points: u64, secs: f64) -> String {
    if secs <= 0.0 || !secs.is_finite() {
        return "too fast to time".into();
    }
    let r = points as f64 / secs;
    let sig = if r >= 1000.0 {
        // Three significant digits, thousands apart.
        let p = 10f64.powi(r.log10().floor() as i32 - 2);
        ((r / p).round() * p) as u64
    } else {
        r.round() as u64
    };
    let digits = sig.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    format!("{grouped} points/s")
}

/// Evaluate the grid and write it to `w`: CSV and JSON row by row as chunks of points finish
/// (CSV lines formatted in parallel), table and Markdown once every row is in.
pub fn write(
    grid: &Grid,
    format: Format,
    progress: &(dyn Fn(u64) + Sync),
    w: &mut dyn Write,
) -> Result<()> {
    match format {
        Format::Csv => {
            let mut head = csv_line(&HEAD.map(String::from));
            head.push('\n');
            w.write_all(head.as_bytes())?;
            grid.stream(progress, |rows| -> Result<()> {
                let parts: Vec<String> = rows
                    .par_chunks(256)
                    .map(|rs| {
                        let mut s = String::with_capacity(rs.len() * 200);
                        for r in rs {
                            csv_row(r, &mut s);
                        }
                        s
                    })
                    .collect();
                for p in parts {
                    w.write_all(p.as_bytes())?;
                }
                Ok(())
            })
        }
        Format::Json => {
            // serde_json writes non-finite numbers (invalid points) as null; one array, its
            // elements serialized as they come, exactly as `to_string_pretty` of all rows.
            use serde::ser::{SerializeSeq, Serializer as _};
            // serde_json's I/O errors are turned back into the io::Error they wrap, so that a
            // closed pipe is recognised as one (main exits quietly on a broken pipe).
            let io = std::io::Error::from;
            let mut ser = serde_json::Serializer::pretty(&mut *w);
            let mut seq = ser.serialize_seq(None).map_err(io)?;
            grid.stream(progress, |rows| -> Result<()> {
                for r in rows {
                    seq.serialize_element(r).map_err(io)?;
                }
                Ok(())
            })?;
            seq.end().map_err(io)?;
            w.write_all(b"\n")?;
            Ok(())
        }
        Format::Table | Format::Markdown => {
            let rows = grid.run(progress)?;
            w.write_all(render(&rows, format)?.as_bytes())?;
            Ok(())
        }
    }
}

const HEAD: [&str; 20] = [
    "model",
    "hw",
    "method",
    "batch",
    "seq",
    "rank",
    "train_layers",
    "precision",
    "status",
    "step_ms",
    "forward_ms",
    "backward_ms",
    "optimizer_ms",
    "loop_ms",
    "tokens_per_s",
    "peak_memory_gib",
    "trainable_params",
    "kernels_per_step",
    "dominant_bound",
    "message",
];

/// The cells of a row. `missing` stands for a number an invalid point does not have: "" in CSV
/// (an empty field, which CSV readers take as missing), "-" in tables.
fn cells(r: &Row, decimals: usize, missing: &str) -> Vec<String> {
    let (status, message) = match &r.status {
        Status::Ok => ("ok", String::new()),
        Status::OutOfMemory => ("out-of-memory", String::new()),
        Status::Invalid(m) => ("invalid", m.clone()),
    };
    let invalid = matches!(r.status, Status::Invalid(_));
    let number = |v: f64, d: usize| {
        if v.is_finite() {
            format!("{v:.d$}")
        } else {
            missing.to_string()
        }
    };
    let count = |v: u64| {
        if invalid {
            missing.to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        r.model.to_string(),
        r.hw.to_string(),
        r.method.to_string(),
        r.batch.to_string(),
        r.seq.to_string(),
        r.rank.to_string(),
        r.train_layers.to_string(),
        r.precision.to_string(),
        status.to_string(),
        number(r.step_ms, decimals),
        number(r.forward_ms, decimals),
        number(r.backward_ms, decimals),
        number(r.optimizer_ms, decimals),
        number(r.loop_ms, decimals),
        number(r.tokens_per_s, 0),
        number(r.peak_memory_gib, 2),
        count(r.trainable_params),
        count(r.kernels_per_step),
        r.dominant_bound.map_or(missing, |b| b.as_str()).to_string(),
        message,
    ]
}

/// One CSV line of a row, appended to `out`: what `csv_line(&cells(r, 6))` gives, without a
/// string per cell.
fn csv_row(r: &Row, out: &mut String) {
    fn text(out: &mut String, s: &str) {
        if s.contains([',', '"', '\n']) {
            out.push('"');
            out.push_str(&s.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(s);
        }
    }
    fn number(out: &mut String, v: f64, decimals: usize) {
        // An invalid point's missing numbers are empty fields.
        if v.is_finite() {
            crate::fixed::push_fixed(out, v, decimals);
        }
    }
    let (status, message) = match &r.status {
        Status::Ok => ("ok", ""),
        Status::OutOfMemory => ("out-of-memory", ""),
        Status::Invalid(m) => ("invalid", m.as_str()),
    };
    text(out, &r.model);
    out.push(',');
    text(out, &r.hw);
    out.push(',');
    out.push_str(r.method.as_str());
    for v in [r.batch, r.seq, r.rank] {
        out.push(',');
        crate::fixed::push_int(out, v);
    }
    out.push(',');
    text(out, &r.train_layers);
    out.push(',');
    text(out, r.precision);
    out.push(',');
    out.push_str(status);
    for v in [
        r.step_ms,
        r.forward_ms,
        r.backward_ms,
        r.optimizer_ms,
        r.loop_ms,
    ] {
        out.push(',');
        number(out, v, 6);
    }
    out.push(',');
    number(out, r.tokens_per_s, 0);
    out.push(',');
    number(out, r.peak_memory_gib, 2);
    if matches!(r.status, Status::Invalid(_)) {
        out.push_str(",,");
    } else {
        for v in [r.trainable_params, r.kernels_per_step] {
            out.push(',');
            crate::fixed::push_int(out, v);
        }
    }
    out.push(',');
    out.push_str(r.dominant_bound.map_or("", |b| b.as_str()));
    out.push(',');
    text(out, message);
    out.push('\n');
}

/// Render the rows. CSV keeps six decimals; tables two.
pub fn render(rows: &[Row], format: Format) -> Result<String> {
    let head: Vec<String> = HEAD.iter().map(|s| s.to_string()).collect();
    Ok(match format {
        Format::Json => {
            // serde_json writes non-finite numbers (invalid points) as null.
            let mut s = serde_json::to_string_pretty(rows)?;
            s.push('\n');
            s
        }
        Format::Csv => {
            let mut s = csv_line(&head);
            s.push('\n');
            for r in rows {
                s.push_str(&csv_line(&cells(r, 6, "")));
                s.push('\n');
            }
            s
        }
        Format::Table => {
            let body: Vec<Vec<String>> = rows.iter().map(|r| cells(r, 2, "-")).collect();
            text_table(&head, &body)
        }
        Format::Markdown => {
            let body: Vec<Vec<String>> = rows.iter().map(|r| cells(r, 2, "-")).collect();
            md_table(&head, &body)
        }
    })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AxisArg {
    Seq,
    Batch,
    Rank,
}

#[derive(Debug, Args)]
pub struct CrossoverArgs {
    #[command(flatten)]
    pub source: ModelArgs,
    /// GPU: a built-in name or alias, or a profile file.
    #[arg(long)]
    pub hw: String,
    /// The axis to vary.
    #[arg(long, value_enum)]
    pub vary: AxisArg,
    /// Grid along the axis (list or ranges). Default: seq 64..max positions ×2, batch 1..128 ×2,
    /// rank 1..256 ×2.
    #[arg(long)]
    pub range: Option<String>,
    /// Micro-batch size when batch is not the varied axis [default: 8].
    #[arg(long)]
    pub batch: Option<u64>,
    /// Sequence length when seq is not the varied axis [default: 512].
    #[arg(long)]
    pub seq: Option<u64>,
    /// LoRA reference rank when rank is not the varied axis; PaCA takes the paper's matched 2r
    /// [default: 8].
    #[arg(long)]
    pub rank: Option<u64>,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Bf16Mixed)]
    pub precision: PrecisionArg,
    #[command(flatten)]
    pub training: TrainingArgs,
    /// table or json (the text report, or the report as JSON).
    #[arg(long, value_enum, default_value_t = Format::Table, hide_possible_values = true)]
    pub format: Format,
}

/// Resolve the arguments into a search.
pub fn search(args: &CrossoverArgs) -> Result<costsim_model::crossover::Search> {
    use costsim_model::crossover::{Axis, Search};
    let model = args.source.resolve()?;
    let hw = costsim_hardware::resolve_device(&args.hw).map_err(usage_error)?;
    let axis = match args.vary {
        AxisArg::Seq => Axis::Seq,
        AxisArg::Batch => Axis::Batch,
        AxisArg::Rank => Axis::Rank,
    };
    let range = match (&args.range, axis) {
        (Some(r), _) => r.clone(),
        (None, Axis::Seq) => {
            // 64 … the model's positions, doubling; from half the positions on a model with
            // fewer than 128 (a range of its own, where 64.. ran backwards).
            let p = model.max_positions;
            format!("{}..{p}:x2,{p}", (p / 2).clamp(1, 64))
        }
        (None, Axis::Batch) => "1..128:x2".into(),
        (None, Axis::Rank) => "1..256:x2".into(),
    };
    // The varied axis takes its values from --range only: a fixed value for it would be ignored.
    let fixed = match axis {
        Axis::Seq => args.seq.map(|v| ("--seq", v)),
        Axis::Batch => args.batch.map(|v| ("--batch", v)),
        Axis::Rank => args.rank.map(|v| ("--rank", v)),
    };
    if let Some((flag, v)) = fixed {
        return Err(usage_error(format!(
            "{flag} {v} fixes the axis --vary {} varies; drop it, or give the values with \
             --range",
            axis.as_str()
        )));
    }
    let mut values = parse_axis(&range, "--range").map_err(usage_error)?;
    values.sort_unstable();
    if values.len() < 2 {
        return Err(usage_error(
            "--range needs at least two values along the axis, e.g. 128..4096:x2",
        ));
    }
    if values.len() > 1000 {
        return Err(usage_error(format!(
            "--range has {} values; a crossover search scans at most 1000 (bisection refines \
             between them), e.g. 128..4096:x2",
            values.len()
        )));
    }
    let mut options = args.training.method_options()?;
    options.rank = args.rank;
    let workload = args.training.workload(
        args.batch.unwrap_or(8),
        args.seq.unwrap_or(512),
        args.precision.precision(),
    );
    Ok(Search {
        model,
        hw,
        workload,
        options,
        axis,
        values,
    })
}

pub fn crossover(args: &CrossoverArgs) -> Result<()> {
    let s = search(args)?;
    let report = s.run().map_err(usage_error)?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        _ => render_crossover(&report, &s),
    };
    crate::write_stdout(&text)
}

fn render_crossover(
    r: &costsim_model::crossover::Report,
    s: &costsim_model::crossover::Search,
) -> String {
    use std::fmt::Write as _;
    let axis = r.axis.as_str();
    let mut out = String::new();
    let fixed = match r.axis {
        costsim_model::crossover::Axis::Seq => format!("batch {}", s.workload.batch),
        costsim_model::crossover::Axis::Batch => format!("seq {}", s.workload.seq),
        costsim_model::crossover::Axis::Rank => {
            format!("batch {} x seq {}", s.workload.batch, s.workload.seq)
        }
    };
    let rank = match (r.axis, s.options.rank) {
        (costsim_model::crossover::Axis::Rank, _) => String::new(),
        (_, Some(k)) => format!(", LoRA rank {k}"),
        (_, None) => ", LoRA rank 8".into(),
    };
    let _ = writeln!(
        out,
        "{} on {}, {}{}, {}: LoRA against full fine-tuning and PaCA along {axis}",
        r.model,
        r.hw,
        fixed,
        rank,
        s.workload.precision.as_str()
    );
    for c in &r.comparisons {
        let _ = writeln!(out, "\nLoRA vs {}", c.other);
        let head: Vec<String> = [axis, "lora ms", "other ms", "lora/other"]
            .iter()
            .map(|h| h.to_string())
            .collect();
        let rows: Vec<Vec<String>> = c
            .points
            .iter()
            .map(|(v, a, b, q)| vec![v.to_string(), num(*a, 2), num(*b, 2), num(*q, 3)])
            .collect();
        out.push_str(&text_table(&head, &rows));
        // Values skipped for the other method alone (those LoRA or full fine-tuning refused
        // are listed at the end).
        let own: Vec<&(u64, String)> = c
            .skipped
            .iter()
            .filter(|sk| !r.skipped.contains(sk))
            .collect();
        match own.as_slice() {
            [] => {}
            [(v, why)] => {
                let _ = writeln!(out, "skipped {axis} {v} for {}: {why}", c.other);
            }
            [(first, why), .., (last, _)] => {
                let _ = writeln!(
                    out,
                    "skipped {} values of {axis} from {first} to {last} for {}; at {first}: {why}",
                    own.len(),
                    c.other
                );
            }
        }
        if c.points.len() < 2 {
            let _ = writeln!(
                out,
                "No comparison: {} of the {} values along {axis} are valid for LoRA and {} (a \
                 crossover needs two).",
                c.points.len(),
                c.points.len() + c.skipped.len(),
                c.other
            );
        } else if c.crossings.is_empty() {
            let (lo, hi) = c
                .points
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
                    (lo.min(p.3), hi.max(p.3))
                });
            let verdict = if hi < 1.0 {
                "LoRA is faster throughout"
            } else if lo >= 1.0 {
                "LoRA is slower throughout"
            } else {
                "no crossing"
            };
            let _ = writeln!(
                out,
                "No crossover in this range: {verdict} (ratio {}..{}).",
                num(lo, 3),
                num(hi, 3)
            );
        }
        for x in &c.crossings {
            let _ = writeln!(
                out,
                "Crossover between {axis} {} (ratio {}) and {} (ratio {}): LoRA becomes {} than {}.",
                x.before,
                num(x.ratio_before, 4),
                x.after,
                num(x.ratio_after, 4),
                if x.lora_becomes_faster { "faster" } else { "slower" },
                c.other
            );
            let _ = writeln!(
                out,
                "Driven by {} ({}{} ms per step from {axis} {} to {}).",
                x.driver,
                if x.driver_change_ms >= 0.0 { "+" } else { "" },
                num(x.driver_change_ms, 3),
                x.grid_before.value,
                x.grid_after.value
            );
            let head: Vec<String> = [
                "T_lora - T_other (ms)".to_string(),
                format!("{axis} {}", x.grid_before.value),
                format!("{axis} {}", x.grid_after.value),
            ]
            .to_vec();
            let mut rows: Vec<Vec<String>> = x
                .grid_before
                .parts
                .iter()
                .zip(&x.grid_after.parts)
                .map(|(a, b)| vec![a.name.to_string(), num(a.ms, 3), num(b.ms, 3)])
                .collect();
            rows.push(vec![
                "total".into(),
                num(x.grid_before.lora_ms - x.grid_before.other_ms, 3),
                num(x.grid_after.lora_ms - x.grid_after.other_ms, 3),
            ]);
            out.push_str(&text_table(&head, &rows));
        }
    }
    for (v, why) in &r.skipped {
        let _ = writeln!(out, "skipped {axis} {v}: {why}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use costsim_model::{preset, MethodOptions, Precision, Workload};

    /// A small grid with every status: gpt2's seq 2048 is invalid, llama2-7b full fine-tuning at
    /// seq 2048 does not fit an L4.
    fn grid() -> Grid {
        Grid {
            models: vec![preset("gpt2").unwrap(), preset("llama2-7b").unwrap()],
            hws: vec![
                costsim_hardware::resolve_device("a100").unwrap(),
                costsim_hardware::resolve_device("l4").unwrap(),
            ],
            methods: MethodName::ALL.to_vec(),
            batches: vec![1, 8],
            seqs: vec![256, 2048],
            ranks: vec![Some(8), Some(64)],
            train_layers: vec![None],
            precisions: vec![Precision::Bf16Mixed],
            base: Workload::default(),
            options: MethodOptions::default(),
        }
    }

    fn written(g: &Grid, format: Format) -> String {
        let mut out = Vec::new();
        write(g, format, &|_| {}, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn streamed_csv_is_the_rendered_table_line_for_line() {
        let g = grid();
        let rows = g.run(&|_| {}).unwrap();
        let statuses: Vec<&Status> = rows.iter().map(|r| &r.status).collect();
        assert!(statuses.contains(&&Status::Ok));
        assert!(statuses.contains(&&Status::OutOfMemory));
        assert!(statuses.iter().any(|s| matches!(s, Status::Invalid(_))));
        assert_eq!(
            written(&g, Format::Csv),
            render(&rows, Format::Csv).unwrap()
        );
    }

    #[test]
    fn rates_read_as_rounded_grouped_numbers() {
        assert_eq!(rate(1_000_000, 10.0), "100 000 points/s");
        assert_eq!(rate(123_456, 1.0), "123 000 points/s");
        assert_eq!(rate(5, 2.0), "3 points/s");
        assert_eq!(rate(12_345, 1.0), "12 300 points/s");
        assert_eq!(rate(10, 0.0), "too fast to time");
    }

    #[test]
    fn csv_cells_with_commas_and_quotes_are_quoted() {
        let mut r = grid().run(&|_| {}).unwrap().swap_remove(0);
        r.model = "my,model".into();
        r.status = Status::Invalid("seq \"4096\" is beyond 1024, the positions".into());
        r.step_ms = f64::NAN;
        let mut line = String::new();
        csv_row(&r, &mut line);
        assert_eq!(line, csv_line(&cells(&r, 6, "")) + "\n");
        assert!(line.starts_with("\"my,model\","), "{line}");
        assert!(line.ends_with(",\"seq \"\"4096\"\" is beyond 1024, the positions\"\n"));
    }

    #[test]
    fn streamed_json_is_the_pretty_printed_array() {
        let g = grid();
        let rows = g.run(&|_| {}).unwrap();
        let want = serde_json::to_string_pretty(&rows).unwrap() + "\n";
        assert_eq!(written(&g, Format::Json), want);
        assert_eq!(
            written(&g, Format::Table),
            render(&rows, Format::Table).unwrap()
        );
    }
}
