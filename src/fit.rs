//! `costsim fit`: what fits in memory. The largest micro-batch (or sequence length) each method
//! can train on each GPU, or the GPUs a given configuration fits, smallest first. The verdicts
//! are the memory model's (costsim-model `fit`, `predict::Memory`); the step time shown beside
//! each answer is `costsim predict`'s at that size.

use crate::cli::{MethodArg, ModelArgs, PrecisionArg, PredictArgs, TrainingArgs};
use crate::errors::usage_error;
use crate::render::{csv_text, md_table, num, text_table, Format};
use anyhow::Result;
use clap::{Args, ValueEnum};
use costsim_hardware::Profile;
use costsim_model::fit::{self, Axis};
use costsim_model::{predict, Config, Detail};
use serde::Serialize;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FindArg {
    /// The largest micro-batch that fits, at --seq.
    Batch,
    /// The longest sequence that fits, at --batch (up to the model's positions).
    Seq,
    /// The GPUs that fit --batch × --seq, smallest memory first.
    Gpu,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    costsim fit --model llama2-7b --hw a6000                 largest batch per method at seq 512\n  \
    costsim fit --model llama2-7b --hw a100-80gb --find seq --batch 4\n  \
    costsim fit --model llama2-13b --find gpu --batch 8 --seq 1024   smallest GPU per method")]
pub struct FitArgs {
    /// What to find.
    #[arg(long, value_enum, default_value_t = FindArg::Batch)]
    pub find: FindArg,
    /// GPUs, comma-separated (built-in names, aliases or profile files), or `all` (every built-in
    /// GPU).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub hw: Vec<String>,
    #[command(flatten)]
    pub source: ModelArgs,
    #[arg(long, value_enum, default_value_t = MethodArg::All)]
    pub method: MethodArg,
    /// LoRA rank or PaCA column count (with --method all, the LoRA reference rank).
    #[arg(long)]
    pub rank: Option<u64>,
    /// Layers that train: all, upper:0.5, upper:0.75, last:K or A..B.
    #[arg(long)]
    pub train_layers: Option<String>,
    /// Micro-batch size (--find seq: default 1; --find gpu: default 8; not with --find batch).
    #[arg(long)]
    pub batch: Option<u64>,
    /// Sequence length (default 512, or the model's positions where it has fewer; not with
    /// --find seq).
    #[arg(long)]
    pub seq: Option<u64>,
    /// Upper end of the search (--find batch: default 65536; --find seq: the model's positions).
    #[arg(long)]
    pub max: Option<u64>,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Bf16Mixed)]
    pub precision: PrecisionArg,
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Price of one GPU-hour in US dollars for every GPU listed (default: each profile's
    /// `[price]` table, where it has one): adds the cost of a million training tokens at each
    /// answer.
    #[arg(long, value_name = "USD_PER_HOUR", value_parser = crate::cli::parse_price, allow_negative_numbers = true)]
    pub price: Option<f64>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// One answer: a method on a GPU.
#[derive(Debug, Serialize)]
pub struct Row {
    pub method: String,
    pub hw: String,
    pub batch: Option<u64>,
    pub seq: Option<u64>,
    pub fits: bool,
    pub peak_memory_gib: f64,
    pub capacity_gib: f64,
    /// Capacity − reserve − peak (negative: the shortfall).
    pub headroom_gib: f64,
    /// Step time at the answer (null when nothing fits).
    pub step_ms: Option<f64>,
    pub tokens_per_s: Option<f64>,
    /// The search's upper end, when the answer reached it (more may fit).
    pub at_limit: Option<u64>,
    /// What bounds the answer, when memory does not.
    pub note: String,
    /// US dollars per million training tokens at the answer (price per hour / 3600 /
    /// tokens per second × 10^6); absent without a price or when nothing fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd_per_million_tokens: Option<f64>,
}

const GIB: f64 = (1u64 << 30) as f64;

/// The devices `--hw` names ([`distinct_devices`]), or every built-in GPU for `all` (the CPU
/// profile aside), in the catalog's order.
pub(crate) fn devices_or_all(names: &[String]) -> Result<Vec<Profile>> {
    if names.iter().any(|n| n == "all") {
        if names.len() > 1 {
            return Err(usage_error(
                "--hw all already names every built-in GPU; pass either all or a list",
            ));
        }
        let all = costsim_hardware::builtin_profiles()?;
        return Ok(all.into_iter().filter(|p| !p.synchronous).collect());
    }
    distinct_devices(names)
}

/// Refuse a comma-separated list with an empty item (`a,,b`, `a,`), naming the flag.
pub(crate) fn no_empty_item(flag: &str, items: &[impl AsRef<str>]) -> Result<()> {
    if items.iter().any(|n| n.as_ref().trim().is_empty()) {
        let list: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
        return Err(usage_error(empty_item_message(flag, &list.join(","))));
    }
    Ok(())
}

/// What [`no_empty_item`] (and `main`, for the lists clap reads) says of `flag`'s `list`.
pub(crate) fn empty_item_message(flag: &str, list: &str) -> String {
    format!("{flag} '{list}' has an empty item (two commas in a row, or one at an end); remove it")
}

/// The devices `--hw` names, each once ([`distinct_by_name`]): a profile named twice
/// (`a100,a100-80gb-sxm`) counts once; two different profiles under one name (a file that keeps
/// a built-in's `[device] name`) are refused.
pub(crate) fn distinct_devices(names: &[String]) -> Result<Vec<Profile>> {
    no_empty_item("--hw", names)?;
    let mut given = Vec::new();
    for n in names {
        let p = costsim_hardware::resolve_device(n.trim()).map_err(usage_error)?;
        given.push((p, format!("--hw {}", n.trim())));
    }
    distinct_by_name(
        given,
        |p| &p.name,
        "profiles",
        "give the file its own [device] name",
    )
}

/// Items named on the command line (devices, models), each once: the same item named twice
/// counts once; two different items under one name are refused, since their rows could not be
/// told apart. `given`: each item with the argument that named it; `what` names the items and
/// `fix` says how to tell them apart.
pub(crate) fn distinct_by_name<T: PartialEq>(
    given: Vec<(T, String)>,
    name: impl Fn(&T) -> &str,
    what: &str,
    fix: &str,
) -> Result<Vec<T>> {
    let mut out: Vec<(T, String)> = Vec::new();
    for (item, arg) in given {
        match out.iter().find(|(q, _)| name(q) == name(&item)) {
            Some((q, _)) if *q == item => {}
            Some((_, first)) => {
                return Err(usage_error(format!(
                    "{first} and {arg} are different {what} both named '{}': their rows could \
                     not be told apart; {fix}",
                    name(&item)
                )))
            }
            None => out.push((item, arg)),
        }
    }
    Ok(out.into_iter().map(|(item, _)| item).collect())
}

/// The methods' configurations on the first profile (the others are swapped in per row).
fn configs(args: FitArgs, batch: u64, seq: u64, hw: &str) -> Result<Vec<Config>> {
    let p = PredictArgs {
        hw: hw.to_string(),
        source: args.source,
        method: args.method,
        rank: args.rank,
        train_layers: args.train_layers,
        batch,
        seq,
        precision: args.precision,
        training: args.training,
        tokens: None,
        samples: None,
        per_layer: false,
        kernels: false,
        price: None,
        format: args.format,
    };
    p.configs()
}

fn row(cfg: &Config, mem: &costsim_model::predict::Memory, fits: bool) -> Row {
    let (step_ms, tokens_per_s) = if fits {
        let p = predict(cfg, Detail::default(), None);
        (Some(p.step_ms), Some(p.tokens_per_s))
    } else {
        (None, None)
    };
    Row {
        method: cfg.method.name.to_string(),
        hw: cfg.hw.name.clone(),
        batch: Some(cfg.workload.batch),
        seq: Some(cfg.workload.seq),
        fits,
        peak_memory_gib: mem.peak_bytes / GIB,
        capacity_gib: mem.capacity_bytes / GIB,
        headroom_gib: (mem.capacity_bytes - mem.reserved_bytes - mem.peak_bytes) / GIB,
        step_ms,
        tokens_per_s,
        at_limit: None,
        note: String::new(),
        usd_per_million_tokens: None,
    }
}

/// The sequence length `fit` checks without --seq (at most the model's positions).
const DEFAULT_SEQ: u64 = 512;

pub fn run(args: FitArgs) -> Result<String> {
    let find = args.find;
    let format = args.format;
    if find == FindArg::Batch && args.batch.is_some() {
        return Err(usage_error(
            "--batch is what --find batch searches for; drop --batch (or use --find seq or gpu)",
        ));
    }
    if find == FindArg::Seq && args.seq.is_some() {
        return Err(usage_error(
            "--seq is what --find seq searches for; drop --seq (or use --find batch or gpu)",
        ));
    }
    if find == FindArg::Gpu && args.max.is_some() {
        return Err(usage_error(
            "--max bounds a batch or seq search; --find gpu checks one size, so drop --max",
        ));
    }
    let batch = args
        .batch
        .unwrap_or(if find == FindArg::Gpu { 8 } else { 1 });
    // Without --seq, the configurations are resolved at one token (valid on every model) and
    // then take the default: 512 tokens, or the model's positions where it has fewer. --find seq
    // replaces the sequence length anyway.
    let seq_given = args.seq;
    let max = args.max;
    let price = args.price;
    let hws = devices_or_all(&args.hw)?;
    let first = hws
        .first()
        .ok_or_else(|| usage_error("--hw names no GPU"))?
        .name
        .clone();
    let mut base = configs(args, batch, seq_given.unwrap_or(1), &first)?;
    if seq_given.is_none() {
        for c in &mut base {
            c.workload.seq = DEFAULT_SEQ.min(c.model.max_positions);
            // Checked again at that length: a --batch past the tokens a micro-batch may hold is
            // refused as it is with --seq given.
            c.workload.validate(&c.model).map_err(usage_error)?;
        }
    }
    let mut rows = Vec::new();
    for cfg in &base {
        let mut per_method = Vec::new();
        for hw in &hws {
            let mut c = cfg.clone();
            c.hw = hw.clone();
            let r = match find {
                FindArg::Gpu => {
                    let mem = fit::memory_of(&c);
                    let mut r = row(&c, &mem, mem.fits);
                    if !mem.fits {
                        r.note = "does not fit".into();
                    }
                    r
                }
                FindArg::Batch | FindArg::Seq => {
                    let axis = if find == FindArg::Batch {
                        Axis::Batch
                    } else {
                        Axis::Seq
                    };
                    let limit = max.unwrap_or(match axis {
                        Axis::Batch => 65536,
                        Axis::Seq => c.model.max_positions,
                    });
                    let got = fit::largest(&c, axis, limit).map_err(usage_error)?;
                    match got.value {
                        Some(v) => {
                            match axis {
                                Axis::Batch => c.workload.batch = v,
                                Axis::Seq => c.workload.seq = v,
                            }
                            let mut r = row(&c, &got.memory, true);
                            if v == got.limit {
                                r.at_limit = Some(got.limit);
                                r.note = if axis == Axis::Seq && v == c.model.max_positions {
                                    format!("the model's {v} positions; memory is not the bound")
                                } else {
                                    format!("search limit {v} reached: more may fit (raise --max)")
                                };
                            }
                            r
                        }
                        None => {
                            match axis {
                                Axis::Batch => c.workload.batch = 1,
                                Axis::Seq => c.workload.seq = 1,
                            }
                            let mut r = row(&c, &got.memory, false);
                            match axis {
                                Axis::Batch => r.batch = None,
                                Axis::Seq => r.seq = None,
                            }
                            r.note = format!("not even {} 1 fits", axis.as_str());
                            r
                        }
                    }
                }
            };
            let mut r = r;
            if let (Some(p), Some(tps)) = (
                crate::output::price_of(price, &c.hw),
                r.tokens_per_s.filter(|t| *t > 0.0),
            ) {
                r.usd_per_million_tokens = Some(p.usd_per_hour / 3600.0 / tps * 1e6);
            }
            per_method.push(r);
        }
        if find == FindArg::Gpu {
            // Smallest memory first; among equal memory, the faster.
            per_method.sort_by(|a, b| {
                a.capacity_gib.total_cmp(&b.capacity_gib).then(
                    a.step_ms
                        .unwrap_or(f64::INFINITY)
                        .total_cmp(&b.step_ms.unwrap_or(f64::INFINITY)),
                )
            });
        }
        rows.extend(per_method);
    }
    render(&rows, find, format)
}

fn render(rows: &[Row], find: FindArg, format: Format) -> Result<String> {
    if format == Format::Json {
        return Ok(serde_json::to_string_pretty(rows)? + "\n");
    }
    // CSV keeps one set of columns whatever the answers, for scripts: the price column always,
    // and an unknown value as an empty field (tables: "-", and the column only with a price).
    let csv = format == Format::Csv;
    let priced = csv || rows.iter().any(|r| r.usd_per_million_tokens.is_some());
    let missing = if csv { "" } else { "-" };
    let mut head: Vec<String> = [
        "method",
        "hw",
        "batch",
        "seq",
        "fits",
        "peak_gib",
        "capacity_gib",
        "headroom_gib",
        "step_ms",
        "tokens_per_s",
        "note",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if priced {
        head.push("usd_per_mtok".into());
    }
    let opt = |v: Option<u64>| v.map_or(missing.to_string(), |v| v.to_string());
    let optf = |v: Option<f64>, d| v.map_or(missing.to_string(), |v| num(v, d));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.method.clone(),
                r.hw.clone(),
                opt(r.batch),
                opt(r.seq),
                if r.fits { "yes" } else { "no" }.into(),
                num(r.peak_memory_gib, 2),
                num(r.capacity_gib, 1),
                num(r.headroom_gib, 2),
                optf(r.step_ms, 2),
                optf(r.tokens_per_s, 0),
                r.note.clone(),
            ];
            if priced {
                cells.push(optf(r.usd_per_million_tokens, 2));
            }
            cells
        })
        .collect();
    Ok(match format {
        Format::Csv => csv_text(&head, &cells),
        Format::Markdown => md_table(&head, &cells),
        _ => {
            let what = match find {
                FindArg::Batch => "Largest micro-batch that fits",
                FindArg::Seq => "Longest sequence that fits",
                FindArg::Gpu => "GPUs this configuration fits, smallest memory first",
            };
            let mut s = format!(
                "{what} (peak + 1 GiB reserve <= capacity; step time at that size):\n{}",
                text_table(&head, &cells)
            );
            if priced {
                s.push_str(
                    "usd_per_mtok: US dollars per million training tokens at --price or the \
                     profile's price (-: nothing fits, or no price: pass --price)\n",
                );
            }
            if find == FindArg::Gpu {
                s.push('\n');
                let mut methods: Vec<&str> = rows.iter().map(|r| r.method.as_str()).collect();
                methods.dedup();
                for m in methods {
                    let smallest = rows.iter().find(|r| r.method == m && r.fits);
                    s += &match smallest {
                        Some(r) => format!(
                            "{m}: smallest GPU that fits is {} ({} GiB)",
                            r.hw,
                            num(r.capacity_gib, 1)
                        ),
                        None => format!("{m}: fits none of the GPUs listed"),
                    };
                    // Among the fitting GPUs with a price, the cheapest per token trained.
                    let cheapest = rows
                        .iter()
                        .filter(|r| r.method == m && r.fits)
                        .filter_map(|r| r.usd_per_million_tokens.map(|u| (u, r)))
                        .min_by(|a, b| a.0.total_cmp(&b.0));
                    if let Some((u, r)) = cheapest {
                        s += &format!(
                            "; cheapest per token is {} (${} per million tokens)",
                            r.hw,
                            num(u, 2)
                        );
                    }
                    s.push('\n');
                }
            }
            s
        }
    })
}
