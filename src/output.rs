//! Output formats of `costsim predict`: a readable table, JSON (schema in docs/json-schema.md),
//! CSV and Markdown. Only formatting happens here; every number comes from costsim-model.

use crate::render::{count, csv_line, md_table, num, text_table, Format};
use costsim_model::graph::Phase;
use costsim_model::predict::{KernelRow, LayerRow};
use costsim_model::{Config, Prediction};
use serde::Serialize;
use std::fmt::Write as _;

fn gib(bytes: f64) -> String {
    format!("{} GiB", num(bytes / (1u64 << 30) as f64, 2))
}

fn gb(bytes: f64) -> String {
    format!("{} GB", num(bytes / 1e9, 2))
}

fn tflop(f: f64) -> String {
    format!("{} TFLOP", num(f / 1e12, 2))
}

/// The price a run is costed at: `--price` or the profile's `[price]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceUsed {
    pub usd_per_hour: f64,
    /// "--price", or the profile's source for it.
    pub source: String,
    /// When the profile's price was read (YYYY-MM-DD); null for --price.
    pub date: Option<String>,
}

/// What a run is costed at: `flag` (--price) over the profile's price; None when neither.
pub fn price_of(flag: Option<f64>, hw: &costsim_hardware::Profile) -> Option<PriceUsed> {
    match flag {
        Some(p) => Some(PriceUsed {
            usd_per_hour: p,
            source: "--price".into(),
            date: None,
        }),
        None => hw.price.as_ref().map(|p| PriceUsed {
            usd_per_hour: p.usd_per_hour,
            source: p.source.clone(),
            date: p.date.clone(),
        }),
    }
}

/// What the table says when a run has no price.
pub const NO_PRICE: &str = "no price: pass --price";

/// Cost of `seconds` of one GPU at `usd_per_hour`.
pub fn run_cost_usd(seconds: f64, usd_per_hour: f64) -> f64 {
    seconds / 3600.0 * usd_per_hour
}

/// Dollars with cents and thousands separators: $1,234.56.
pub fn usd(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let cents = format!("{:.2}", v.abs());
    let (int, frac) = cents.split_once('.').unwrap_or((&cents, "00"));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{}${grouped}.{frac}", if v < 0.0 { "-" } else { "" })
}

/// The line under a costed table naming the price and where it comes from.
fn price_line(p: &PriceUsed) -> String {
    if p.source == "--price" {
        format!(
            "price: ${} per GPU-hour (--price)",
            costsim_model::shown(p.usd_per_hour)
        )
    } else {
        format!(
            "price: ${} per GPU-hour, {}{}; --price overrides it",
            costsim_model::shown(p.usd_per_hour),
            p.source,
            p.date
                .as_ref()
                .map(|d| format!(" (read {d})"))
                .unwrap_or_default()
        )
    }
}

fn pct(v: f64) -> String {
    format!("{}%", num(v * 100.0, 1))
}

/// The header lines: what was predicted, on what.
fn header(cfg: &Config) -> Vec<String> {
    let w = &cfg.workload;
    let hw = &cfg.hw;
    let calib = if hw.is_calibrated() {
        "calibrated profile"
    } else {
        "datasheet profile, uncalibrated efficiencies"
    };
    vec![
        format!(
            "{} ({} params) on {} [{}; {}]",
            cfg.model.name,
            count(cfg.model.total_params() as f64),
            hw.display_name,
            hw.name,
            calib
        ),
        format!(
            "batch {} x seq {} = {} tokens, grad-accum {}, {}, attention {}, {}{}{}, runtime {}, \
             {} loop{}",
            w.batch,
            w.seq,
            w.tokens(),
            w.grad_accum,
            w.precision.as_str(),
            match w.attention {
                costsim_model::AttentionImpl::Eager => "eager",
                costsim_model::AttentionImpl::Sdpa => "sdpa",
            },
            match w.optimizer {
                costsim_model::Optimizer::AdamwForeach => "adamw (foreach)",
                costsim_model::Optimizer::AdamwFused => "adamw (fused)",
                costsim_model::Optimizer::AdamwSingle => "adamw (single-tensor)",
                costsim_model::Optimizer::Sgd => "sgd",
            },
            if w.grad_clip { ", grad clip" } else { "" },
            if w.grad_checkpointing {
                ", grad checkpointing"
            } else {
                ""
            },
            match w.runtime {
                costsim_model::Runtime::PytorchEager => "pytorch-eager",
                costsim_model::Runtime::Libtorch => "libtorch",
                costsim_model::Runtime::CudaGraph => "cuda-graph",
            },
            w.training_loop.as_str(),
            // A profile without loop costs (the generic CPU) models no loop work: say so, so a
            // 0 ms loop is not read as a prediction.
            if w.training_loop != costsim_model::TrainingLoop::Bare && !hw.host.has_loop_costs() {
                " (not modelled: this profile has no loop-* costs)"
            } else {
                ""
            },
        ),
    ]
}

/// Summary rows: (label, one value per method).
fn summary_rows(preds: &[Prediction], price: Option<&PriceUsed>) -> Vec<(String, Vec<String>)> {
    let col = |f: &dyn Fn(&Prediction) -> String| preds.iter().map(f).collect::<Vec<_>>();
    let mut rows = vec![
        (
            "rank".to_string(),
            col(&|p| {
                if p.rank == 0 {
                    "-".into()
                } else {
                    p.rank.to_string()
                }
            }),
        ),
        ("trained layers".into(), col(&|p| p.trained_layers.clone())),
        (
            "trainable params".into(),
            col(&|p| count(p.trainable_params as f64)),
        ),
        (
            "kernels fwd/bwd/opt".into(),
            col(&|p| {
                format!(
                    "{}/{}/{}",
                    p.kernels.forward, p.kernels.backward, p.kernels.optimizer
                )
            }),
        ),
        ("FLOPs per step".into(), col(&|p| tflop(p.flops))),
        ("bytes per step".into(), col(&|p| gb(p.bytes))),
        ("forward ms".into(), col(&|p| num(p.forward_ms, 2))),
        ("backward ms".into(), col(&|p| num(p.backward_ms, 2))),
        ("optimizer ms".into(), col(&|p| num(p.optimizer_ms, 2))),
        ("loop ms".into(), col(&|p| num(p.loop_ms, 2))),
        ("step ms".into(), col(&|p| num(p.step_ms, 2))),
        ("tokens/s".into(), col(&|p| num(p.tokens_per_s, 0))),
        (
            "host wait fwd/bwd".into(),
            col(&|p| {
                format!(
                    "{}/{}",
                    pct(p.phases[0].host_wait_share),
                    pct(p.phases[1].host_wait_share)
                )
            }),
        ),
        (
            "dominant bound".into(),
            col(&|p| p.dominant_bound.as_str().to_string()),
        ),
        (
            "activations".into(),
            col(&|p| gib(p.memory.activations_bytes)),
        ),
        ("peak memory".into(), col(&|p| gib(p.peak_memory_bytes))),
        (
            "fits".into(),
            col(&|p| {
                if p.fits {
                    "yes".into()
                } else {
                    format!("no, short {}", gib(p.memory.shortfall_bytes))
                }
            }),
        ),
    ];
    if preds.iter().any(|p| p.training.is_some()) {
        rows.push((
            "optimizer steps".into(),
            col(&|p| {
                p.training
                    .as_ref()
                    .map_or("-".into(), |t| t.optimizer_steps.to_string())
            }),
        ));
        rows.push((
            "training time".into(),
            col(&|p| match &p.training {
                // A run that cannot start has no duration to show.
                Some(_) if !p.fits => "- (does not fit)".into(),
                Some(t) => t.wall_clock.clone(),
                None => "-".into(),
            }),
        ));
        rows.push((
            "run cost".into(),
            col(&|p| match (&p.training, price) {
                (None, _) => "-".into(),
                (Some(_), _) if !p.fits => "- (does not fit)".into(),
                (Some(_), None) => NO_PRICE.into(),
                (Some(t), Some(pr)) => usd(run_cost_usd(t.seconds, pr.usd_per_hour)),
            }),
        ));
    }
    rows
}

fn layer_head() -> Vec<String> {
    [
        "scope",
        "trainable",
        "fwd ms",
        "bwd ms",
        "opt ms",
        "kernels f/b/o",
        "GFLOP",
        "MB",
        "saved MB",
    ]
    .map(String::from)
    .to_vec()
}

fn layer_cells(r: &LayerRow) -> Vec<String> {
    vec![
        r.scope.clone(),
        count(r.trainable_params as f64),
        num(r.forward_ms, 3),
        num(r.backward_ms, 3),
        num(r.optimizer_ms, 3),
        format!(
            "{}/{}/{}",
            r.forward_kernels, r.backward_kernels, r.optimizer_kernels
        ),
        num(r.flops / 1e9, 1),
        num(r.bytes / 1e6, 1),
        num(r.saved_bytes / 1e6, 1),
    ]
}

/// The kernel table's closing note on L2: what the re-reads of recent outputs cost at DRAM price
/// (the most an L2 hit could save; costsim charges it), over one micro-batch's forward and
/// backward.
fn l2_line(kernels: &[KernelRow]) -> String {
    let fb = || {
        kernels
            .iter()
            .filter(|k| matches!(k.phase, Phase::Forward | Phase::Backward))
    };
    let device_us: f64 = fb().map(|k| k.device_us).sum();
    let bound_us: f64 = fb().map(|k| k.l2_bound_us).sum();
    let bytes: f64 = fb().map(|k| k.l2_reread_bytes).sum();
    let n = fb().filter(|k| k.l2_reread_bytes > 0.0).count();
    let share = if device_us > 0.0 {
        100.0 * bound_us / device_us
    } else {
        0.0
    };
    format!(
        "L2 (columns L2 KB, L2 us): {n} kernels re-read {} MB of outputs written within the last \
         L2-size of traffic; costsim prices them at DRAM bandwidth, which costs {} ms of one \
         micro-batch's {} ms of forward and backward device time ({}%), the most L2 hits could \
         save (docs/model.md)",
        num(bytes / 1e6, 1),
        num(bound_us / 1e3, 3),
        num(device_us / 1e3, 3),
        num(share, 1)
    )
}

fn kernel_head() -> Vec<String> {
    [
        "phase",
        "#",
        "kernel",
        "module",
        "kind",
        "dtype",
        "shape",
        "MFLOP",
        "KB read",
        "KB written",
        "launches",
        "device us",
        "host us",
        "bound",
        "deps",
        "L2 KB",
        "L2 us",
    ]
    .map(String::from)
    .to_vec()
}

fn kernel_cells(k: &KernelRow) -> Vec<String> {
    vec![
        k.phase.as_str().to_string(),
        k.index.to_string(),
        if k.recompute {
            format!("{} (recompute)", k.name)
        } else {
            k.name.to_string()
        },
        k.module.clone(),
        k.kind.as_str().to_string(),
        k.dtype.to_string(),
        k.shape.clone().unwrap_or_else(|| "-".into()),
        num(k.flops / 1e6, 3),
        num(k.bytes_read / 1e3, 1),
        num(k.bytes_written / 1e3, 1),
        k.launches.to_string(),
        num(k.device_us, 2),
        num(k.host_us, 2),
        k.bound.as_str().to_string(),
        k.deps
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(","),
        num(k.l2_reread_bytes / 1e3, 1),
        num(k.l2_bound_us, 2),
    ]
}

#[derive(Serialize)]
struct JsonReport<'a> {
    costsim_version: &'static str,
    model: &'a costsim_model::ModelConfig,
    hardware: JsonHardware<'a>,
    workload: &'a costsim_model::Workload,
    predictions: &'a [Prediction],
    /// With --tokens/--samples only.
    #[serde(skip_serializing_if = "Option::is_none")]
    run_cost: Option<JsonRunCost>,
}

/// The cost of the run per method, at the price used (null price: none known).
#[derive(Serialize)]
struct JsonRunCost {
    price: Option<PriceUsed>,
    /// "no price: pass --price" when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'static str>,
    methods: Vec<JsonMethodCost>,
}

#[derive(Serialize)]
struct JsonMethodCost {
    method: String,
    /// Run seconds / 3600 × price; null without a price. Given even when the method does not
    /// fit (as `training` is).
    usd: Option<f64>,
    fits: bool,
}

#[derive(Serialize)]
struct JsonHardware<'a> {
    name: &'a str,
    display_name: &'a str,
    calibrated: bool,
    origin: &'a str,
    memory_bytes: f64,
}

pub fn render(
    cfgs: &[Config],
    preds: &[Prediction],
    format: Format,
    price: Option<&PriceUsed>,
) -> anyhow::Result<String> {
    let cfg = &cfgs[0];
    let run = preds.iter().any(|p| p.training.is_some());
    let mut out = String::new();
    match format {
        Format::Json => {
            let rep = JsonReport {
                costsim_version: env!("CARGO_PKG_VERSION"),
                model: &cfg.model,
                hardware: JsonHardware {
                    name: &cfg.hw.name,
                    display_name: &cfg.hw.display_name,
                    calibrated: cfg.hw.is_calibrated(),
                    origin: &cfg.hw.origin,
                    memory_bytes: cfg.hw.memory_bytes,
                },
                workload: &cfg.workload,
                predictions: preds,
                run_cost: run.then(|| JsonRunCost {
                    price: price.cloned(),
                    note: price.is_none().then_some(NO_PRICE),
                    methods: preds
                        .iter()
                        .map(|p| JsonMethodCost {
                            method: p.method.clone(),
                            usd: p
                                .training
                                .as_ref()
                                .zip(price)
                                .map(|(t, pr)| run_cost_usd(t.seconds, pr.usd_per_hour)),
                            fits: p.fits,
                        })
                        .collect(),
                }),
            };
            out = serde_json::to_string_pretty(&rep)?;
            out.push('\n');
        }
        Format::Csv => {
            if preds.iter().any(|p| p.kernel_rows.is_some()) {
                let mut head = vec!["method".to_string()];
                head.extend(
                    [
                        "phase",
                        "index",
                        "name",
                        "module",
                        "kind",
                        "dtype",
                        "shape",
                        "flops",
                        "bytes_read",
                        "bytes_written",
                        "launches",
                        "device_us",
                        "host_us",
                        "bound",
                        "deps",
                        "recompute",
                        "l2_reread_bytes",
                        "l2_bound_us",
                    ]
                    .map(String::from),
                );
                let _ = writeln!(out, "{}", csv_line(&head));
                for p in preds {
                    for k in p.kernel_rows.iter().flatten() {
                        let cells = vec![
                            p.method.clone(),
                            k.phase.as_str().into(),
                            k.index.to_string(),
                            k.name.into(),
                            k.module.clone(),
                            k.kind.as_str().into(),
                            k.dtype.into(),
                            k.shape.clone().unwrap_or_default(),
                            num(k.flops, 0),
                            num(k.bytes_read, 0),
                            num(k.bytes_written, 0),
                            k.launches.to_string(),
                            num(k.device_us, 3),
                            num(k.host_us, 3),
                            k.bound.as_str().into(),
                            k.deps
                                .iter()
                                .map(|d| d.to_string())
                                .collect::<Vec<_>>()
                                .join(" "),
                            k.recompute.to_string(),
                            num(k.l2_reread_bytes, 0),
                            num(k.l2_bound_us, 3),
                        ];
                        let _ = writeln!(out, "{}", csv_line(&cells));
                    }
                }
            } else if preds.iter().any(|p| p.per_layer.is_some()) {
                let head = [
                    "method",
                    "scope",
                    "trained",
                    "trainable_params",
                    "forward_ms",
                    "backward_ms",
                    "optimizer_ms",
                    "forward_kernels",
                    "backward_kernels",
                    "optimizer_kernels",
                    "flops",
                    "bytes",
                    "saved_bytes",
                ]
                .map(String::from);
                let _ = writeln!(out, "{}", csv_line(&head));
                for p in preds {
                    for r in p.per_layer.iter().flatten() {
                        let cells = vec![
                            p.method.clone(),
                            r.scope.clone(),
                            r.trained.to_string(),
                            r.trainable_params.to_string(),
                            num(r.forward_ms, 6),
                            num(r.backward_ms, 6),
                            num(r.optimizer_ms, 6),
                            r.forward_kernels.to_string(),
                            r.backward_kernels.to_string(),
                            r.optimizer_kernels.to_string(),
                            num(r.flops, 0),
                            num(r.bytes, 0),
                            num(r.saved_bytes, 0),
                        ];
                        let _ = writeln!(out, "{}", csv_line(&cells));
                    }
                }
            } else {
                let mut head = [
                    "method",
                    "rank",
                    "trained_layers",
                    "trainable_params",
                    "forward_kernels",
                    "backward_kernels",
                    "optimizer_kernels",
                    "flops",
                    "bytes",
                    "forward_ms",
                    "backward_ms",
                    "optimizer_ms",
                    "loop_ms",
                    "step_ms",
                    "tokens_per_s",
                    "peak_memory_bytes",
                    "fits",
                    "dominant_bound",
                ]
                .map(String::from)
                .to_vec();
                // A whole-run estimate (--tokens/--samples) adds its steps, seconds and cost
                // (empty without a price).
                if run {
                    head.extend(
                        ["optimizer_steps", "run_seconds", "run_cost_usd"].map(String::from),
                    );
                }
                let _ = writeln!(out, "{}", csv_line(&head));
                for p in preds {
                    let mut cells = vec![
                        p.method.clone(),
                        p.rank.to_string(),
                        p.trained_layers.clone(),
                        p.trainable_params.to_string(),
                        p.kernels.forward.to_string(),
                        p.kernels.backward.to_string(),
                        p.kernels.optimizer.to_string(),
                        num(p.flops, 0),
                        num(p.bytes, 0),
                        num(p.forward_ms, 4),
                        num(p.backward_ms, 4),
                        num(p.optimizer_ms, 4),
                        num(p.loop_ms, 4),
                        num(p.step_ms, 4),
                        num(p.tokens_per_s, 1),
                        num(p.peak_memory_bytes, 0),
                        p.fits.to_string(),
                        p.dominant_bound.as_str().into(),
                    ];
                    if run {
                        let t = p.training.as_ref();
                        cells.push(t.map_or(String::new(), |t| t.optimizer_steps.to_string()));
                        cells.push(t.map_or(String::new(), |t| num(t.seconds, 3)));
                        cells.push(t.zip(price).map_or(String::new(), |(t, pr)| {
                            num(run_cost_usd(t.seconds, pr.usd_per_hour), 2)
                        }));
                    }
                    let _ = writeln!(out, "{}", csv_line(&cells));
                }
            }
        }
        Format::Table | Format::Markdown => {
            let md = format == Format::Markdown;
            let table = |h: &[String], r: &[Vec<String>]| {
                if md {
                    md_table(h, r)
                } else {
                    text_table(h, r)
                }
            };
            for line in header(cfg) {
                let _ = writeln!(out, "{}{line}", if md { "> " } else { "" });
            }
            out.push('\n');
            let mut head = vec![String::new()];
            head.extend(preds.iter().map(|p| p.method.clone()));
            let rows: Vec<Vec<String>> = summary_rows(preds, price)
                .into_iter()
                .map(|(label, vals)| std::iter::once(label).chain(vals).collect())
                .collect();
            out.push_str(&table(&head, &rows));
            if let (true, Some(p)) = (run, price) {
                let _ = writeln!(out, "{}{}", if md { "\n" } else { "" }, price_line(p));
            }
            for p in preds {
                if let Some(layers) = &p.per_layer {
                    let _ = writeln!(
                        out,
                        "\n{}per layer: {}",
                        if md { "### " } else { "" },
                        p.method
                    );
                    let rows: Vec<Vec<String>> = layers.iter().map(layer_cells).collect();
                    out.push_str(&table(&layer_head(), &rows));
                }
                if let Some(kernels) = &p.kernel_rows {
                    let _ = writeln!(
                        out,
                        "\n{}kernels: {}",
                        if md { "### " } else { "" },
                        p.method
                    );
                    let rows: Vec<Vec<String>> = kernels.iter().map(kernel_cells).collect();
                    out.push_str(&table(&kernel_head(), &rows));
                    let _ = writeln!(out, "{}{}", if md { "\n" } else { "" }, l2_line(kernels));
                    if p.loop_host_ms > 0.0 {
                        let _ = writeln!(
                            out,
                            "{}training loop, outside the kernels: {} ms of host work per step, \
                             {} ms of it with the GPU idle (docs/host.md)",
                            if md { "\n" } else { "" },
                            num(p.loop_host_ms, 3),
                            num(p.loop_ms, 3)
                        );
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The table's notes on memory after `costsim crossover`: the grid values where a method does
/// not fit, and each crossing predicted where LoRA or the other method does not fit. Empty when
/// every method fits everywhere.
pub fn crossover_memory_notes(
    s: &costsim_model::crossover::Search,
    report: &costsim_model::crossover::Report,
) -> String {
    if report.does_not_fit.is_empty() {
        return String::new();
    }
    let axis = s.axis.as_str();
    let names = |ms: &[costsim_model::MethodName]| {
        ms.iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "\nDoes not fit in memory on {} (peak + 1 GiB reserve > {} GiB):\n",
        s.hw.name,
        num(s.hw.memory_bytes / (1u64 << 30) as f64, 1)
    );
    for n in &report.does_not_fit {
        let _ = writeln!(out, "  {axis} {}: {}", n.value, names(&n.methods));
    }
    for c in &report.comparisons {
        for x in c.crossings.iter().filter(|x| !x.does_not_fit.is_empty()) {
            let _ = writeln!(
                out,
                "The crossover LoRA vs {} between {axis} {} and {} is predicted for a \
                 configuration that does not fit: {} {} not fit there.",
                c.other,
                x.before,
                x.after,
                names(&x.does_not_fit),
                if x.does_not_fit.len() == 1 {
                    "does"
                } else {
                    "do"
                }
            );
        }
    }
    out.push_str(
        "Times at these values are predictions for configurations that cannot run on this GPU.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_have_cents_and_thousands_separators() {
        assert_eq!(usd(0.0), "$0.00");
        assert_eq!(usd(1.064), "$1.06");
        assert_eq!(usd(1234567.891), "$1,234,567.89");
        assert_eq!(usd(-12.5), "-$12.50");
        // 1115 s at $3.4309/h: 1115 / 3600 × 3.4309 = 1.0626...
        assert_eq!(usd(run_cost_usd(1115.0, 3.4309)), "$1.06");
    }
}
