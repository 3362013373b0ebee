//! `costsim plot`: charts drawn with plotters, SVG by default and PNG when the output ends in
//! `.png`. Text uses DejaVu Sans shipped in assets/fonts (registered at start), so nothing
//! depends on system fonts.
//!
//! Each chart is computed first as plain data (serializable, snapshot-tested, written with
//! `--data FILE.json`), then drawn:
//! - `breakdown`: per layer, stacked step time by kernel kind and by bound (compute, memory,
//!   launch, host wait), one row per method;
//! - `methods`: step time per method, stacked forward / backward / optimizer;
//! - `heatmap`: LoRA / other time ratio over two axes (e.g. seq × rank) with the 1.0 contour;
//! - `scatter`: predicted vs measured phase times from validation results.

use crate::cli::{MethodArg, PrecisionArg, PredictArgs, TrainingArgs};
use crate::errors::usage_error;
use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use costsim_model::graph::KernelKind;
use costsim_model::method::MethodSpec;
use costsim_model::predict::{breakdown, ScopeBreakdown};
use costsim_model::sweep::parse_axis;
use costsim_model::{arch, Config, MethodName};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;
use std::path::{Path, PathBuf};

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[command(subcommand)]
    pub chart: Chart,
}

#[derive(Debug, Args)]
pub struct Output {
    /// Image to write: .svg or .png.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Also write the chart's data as JSON.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Chart {
    /// Per-layer stacked step time by kernel kind and by bound, one row per method.
    #[command(after_help = "Examples:\n  \
        costsim plot breakdown --hw a6000 --model llama2-7b --out breakdown.svg\n  \
        costsim plot breakdown --hw a100 --model gpt2 --method all --shared-y --out b.png")]
    Breakdown {
        #[command(flatten)]
        predict: PredictArgs,
        /// One y-scale for every method's panels, so bar heights compare across methods.
        #[arg(long)]
        shared_y: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Step time per method, stacked forward / backward / optimizer.
    #[command(after_help = "Examples:\n  \
        costsim plot methods --hw a6000 --model llama2-7b --out methods.svg\n  \
        costsim plot methods --hw h100 --model llama2-13b --batch 4 --seq 1024 --out m.png")]
    Methods {
        #[command(flatten)]
        predict: PredictArgs,
        #[command(flatten)]
        output: Output,
    },
    /// LoRA / other time ratio over two axes, with the 1.0 contour.
    #[command(after_help = "Examples:\n  \
        costsim plot heatmap --model llama2-7b --hw a6000 --out heat.svg   seq x rank vs full\n  \
        costsim plot heatmap --model gpt2 --hw h100 --x batch --x-range 1..64:x2 --y seq \
        --y-range 128..1024:x2 --against paca --out heat.png --data heat.json")]
    Heatmap(HeatmapArgs),
    /// Predicted vs measured phase times from a validation results file.
    #[command(after_help = "Examples:\n  \
        costsim plot scatter --from docs/results/cpu/heldout-gpt2.json --out scatter.svg\n  \
        costsim plot scatter --from a.json,b.json --hw cpu-generic --out s.png")]
    Scatter {
        /// Results written by `costsim validate --out` (comma-separated files are merged).
        #[arg(long, value_name = "FILE", value_delimiter = ',', required = true)]
        from: Vec<PathBuf>,
        /// Profile to predict with (default: the one recorded in the file).
        #[arg(long)]
        hw: Option<String>,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AxisName {
    Seq,
    Batch,
    Rank,
}

impl AxisName {
    pub fn as_str(self) -> &'static str {
        match self {
            AxisName::Seq => "seq",
            AxisName::Batch => "batch",
            AxisName::Rank => "rank",
        }
    }
}

#[derive(Debug, Args)]
pub struct HeatmapArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub hw: String,
    /// Horizontal axis.
    #[arg(long, value_enum, default_value = "seq")]
    pub x: AxisName,
    #[arg(long, default_value = "128..4096:x2")]
    pub x_range: String,
    /// Vertical axis.
    #[arg(long, value_enum, default_value = "rank")]
    pub y: AxisName,
    #[arg(long, default_value = "4..256:x2")]
    pub y_range: String,
    /// The method LoRA is divided by.
    #[arg(long, value_enum, default_value = "full")]
    pub against: MethodArg,
    /// Micro-batch size when not an axis (default 8).
    #[arg(long)]
    pub batch: Option<u64>,
    /// Sequence length when not an axis (default 512).
    #[arg(long)]
    pub seq: Option<u64>,
    /// LoRA reference rank when not an axis (default 8).
    #[arg(long)]
    pub rank: Option<u64>,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Bf16Mixed)]
    pub precision: PrecisionArg,
    #[command(flatten)]
    pub training: TrainingArgs,
    #[command(flatten)]
    pub output: Output,
}

// ---------------------------------------------------------------------------------------------
// Chart data
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize, PartialEq)]
pub struct BreakdownChart {
    pub title: String,
    pub methods: Vec<(String, Vec<ScopeBreakdown>)>,
    /// The methods whose step does not fit in the GPU's memory (omitted when all fit).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub does_not_fit: Vec<NoFit>,
    /// Draw every method's panels on one y-scale (a drawing option, not data).
    #[serde(skip)]
    pub shared_y: bool,
}

/// A method that does not fit: its peak memory and what the GPU offers (capacity − reserve).
#[derive(Debug, Serialize, PartialEq)]
pub struct NoFit {
    pub method: String,
    pub peak_gib: f64,
    pub usable_gib: f64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct MethodBar {
    pub method: String,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    /// The training loop's GPU time per step (0 in a bare loop).
    pub loop_ms: f64,
    pub step_ms: f64,
    pub fits: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct MethodsChart {
    pub title: String,
    pub bars: Vec<MethodBar>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HeatmapChart {
    pub title: String,
    pub x: AxisName,
    pub y: AxisName,
    pub xs: Vec<u64>,
    pub ys: Vec<u64>,
    /// `ratio[j][i]` = T_LoRA / T_other at (`xs[i]`, `ys[j]`); NaN (null) where invalid.
    pub ratio: Vec<Vec<f64>>,
    /// The valid cells where LoRA, the other method or both do not fit in memory (omitted when
    /// every cell fits). Their ratio is still the predicted one, drawn hatched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub does_not_fit: Vec<NoFitCell>,
    /// Segments of the ratio = 1 contour in cell coordinates (cell (i, j) spans i..i+1,
    /// j..j+1; values sit at cell centres).
    pub contour: Vec<[(f64, f64); 2]>,
}

/// A heatmap cell whose configuration does not fit: its axis values and the methods that do not.
#[derive(Debug, Serialize, PartialEq)]
pub struct NoFitCell {
    pub x: u64,
    pub y: u64,
    pub methods: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ScatterPoint {
    pub config: String,
    pub method: String,
    pub phase: &'static str,
    pub predicted_ms: f64,
    pub measured_ms: f64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ScatterChart {
    pub title: String,
    pub points: Vec<ScatterPoint>,
}

/// Options of `predict` that mean nothing for a chart: refused rather than ignored.
fn refuse_table_options(args: &PredictArgs, chart: &str) -> Result<()> {
    let given = [
        (args.tokens.is_some(), "--tokens"),
        (args.samples.is_some(), "--samples"),
        (args.per_layer, "--per-layer"),
        (args.kernels, "--kernels"),
        (args.price.is_some(), "--price"),
        (args.format != crate::render::Format::Table, "--format"),
    ];
    if let Some((_, name)) = given.iter().find(|(on, _)| *on) {
        return Err(usage_error(format!(
            "{name} does nothing for `plot {chart}` (it draws one step of each method); drop it, \
             or use `costsim predict {name} ...` for a table"
        )));
    }
    Ok(())
}

const GIB: f64 = (1u64 << 30) as f64;

pub fn breakdown_chart(args: &PredictArgs, shared_y: bool) -> Result<BreakdownChart> {
    refuse_table_options(args, "breakdown")?;
    let cfgs = args.configs()?;
    let c0 = &cfgs[0];
    Ok(BreakdownChart {
        title: format!(
            "{} on {}, batch {} x seq {}, {}: time per layer",
            c0.model.name,
            c0.hw.name,
            c0.workload.batch,
            c0.workload.seq,
            c0.workload.precision.as_str()
        ),
        methods: cfgs
            .iter()
            .map(|c| (c.method.name.to_string(), breakdown(c)))
            .collect(),
        does_not_fit: cfgs
            .iter()
            .filter_map(|c| {
                let m = costsim_model::fit::memory_of(c);
                (!m.fits).then(|| NoFit {
                    method: c.method.name.to_string(),
                    peak_gib: m.peak_bytes / GIB,
                    usable_gib: (m.capacity_bytes - m.reserved_bytes) / GIB,
                })
            })
            .collect(),
        shared_y,
    })
}

pub fn methods_chart(args: &PredictArgs) -> Result<MethodsChart> {
    refuse_table_options(args, "methods")?;
    let cfgs = args.configs()?;
    let c0 = &cfgs[0];
    let accum = f64::from(c0.workload.grad_accum);
    Ok(MethodsChart {
        title: format!(
            "{} on {}, batch {} x seq {}, {}: step time",
            c0.model.name,
            c0.hw.name,
            c0.workload.batch,
            c0.workload.seq,
            c0.workload.precision.as_str()
        ),
        bars: cfgs
            .iter()
            .map(|c| {
                let p = costsim_model::predict(c, costsim_model::Detail::default(), None);
                MethodBar {
                    method: p.method.clone(),
                    forward_ms: p.forward_ms * accum,
                    backward_ms: p.backward_ms * accum,
                    optimizer_ms: p.optimizer_ms,
                    loop_ms: p.loop_ms,
                    step_ms: p.step_ms,
                    fits: p.fits,
                }
            })
            .collect(),
    })
}

pub fn heatmap_chart(a: &HeatmapArgs) -> Result<HeatmapChart> {
    if a.x == a.y {
        return Err(usage_error(
            "--x and --y must be different axes (seq, batch, rank)",
        ));
    }
    let other = match a.against {
        MethodArg::Full => MethodName::Full,
        MethodArg::Paca => MethodName::Paca,
        MethodArg::PacaUpperHalf => MethodName::PacaUpperHalf,
        MethodArg::PacaThreeQuarters => MethodName::PacaThreeQuarters,
        MethodArg::Lora | MethodArg::All => {
            return Err(usage_error(
                "--against takes full, paca, paca-upper-half or paca-three-quarters",
            ))
        }
    };
    for (axis, given, flag) in [
        (AxisName::Batch, a.batch.is_some(), "--batch"),
        (AxisName::Seq, a.seq.is_some(), "--seq"),
        (AxisName::Rank, a.rank.is_some(), "--rank"),
    ] {
        if given && (a.x == axis || a.y == axis) {
            let which = if a.x == axis {
                "--x-range"
            } else {
                "--y-range"
            };
            return Err(usage_error(format!(
                "{flag} does nothing here: {} is an axis of the heatmap, set by {which}; drop \
                 {flag}",
                axis.as_str()
            )));
        }
    }
    let (batch, seq, rank) = (
        a.batch.unwrap_or(8),
        a.seq.unwrap_or(512),
        a.rank.unwrap_or(8),
    );
    let mut xs = parse_axis(&a.x_range, "--x-range").map_err(usage_error)?;
    let mut ys = parse_axis(&a.y_range, "--y-range").map_err(usage_error)?;
    xs.sort_unstable();
    ys.sort_unstable();
    if xs.len() * ys.len() > 4096 {
        return Err(usage_error(format!(
            "a heatmap of {} x {} cells is too large to draw or read; use at most 4096 cells \
             (coarser ranges such as 128..4096:x2)",
            xs.len(),
            ys.len()
        )));
    }
    let model = arch::preset(&a.model).map_err(usage_error)?;
    let hw = costsim_hardware::resolve_device(&a.hw).map_err(usage_error)?;
    let precision = a.precision.precision();
    let opts = a.training.method_options()?;
    let step = |method: MethodName, x: u64, y: u64| -> Option<(f64, bool)> {
        let get = |axis: AxisName, fixed: u64| {
            if axis == a.x {
                x
            } else if axis == a.y {
                y
            } else {
                fixed
            }
        };
        let w = a.training.workload(
            get(AxisName::Batch, batch),
            get(AxisName::Seq, seq),
            precision,
        );
        w.validate(&model).ok()?;
        let mut o = opts.clone();
        o.rank = Some(get(AxisName::Rank, rank));
        let method = MethodSpec::resolve(method, &o, &model, true).ok()?;
        let cfg = Config {
            model: model.clone(),
            method,
            workload: w,
            hw: hw.clone(),
        };
        let p = costsim_model::predict(&cfg, costsim_model::Detail::default(), None);
        Some((p.step_ms, p.fits))
    };
    let mut does_not_fit = Vec::new();
    let ratio: Vec<Vec<f64>> = ys
        .iter()
        .map(|&y| {
            xs.iter()
                .map(
                    |&x| match (step(MethodName::Lora, x, y), step(other, x, y)) {
                        (Some((l, lfits)), Some((o, ofits))) => {
                            let methods: Vec<String> = [(MethodName::Lora, lfits), (other, ofits)]
                                .iter()
                                .filter(|(_, fits)| !fits)
                                .map(|(m, _)| m.to_string())
                                .collect();
                            if !methods.is_empty() {
                                does_not_fit.push(NoFitCell { x, y, methods });
                            }
                            l / o
                        }
                        _ => f64::NAN,
                    },
                )
                .collect()
        })
        .collect();
    if !ratio.iter().flatten().any(|r| r.is_finite()) {
        // An empty chart is not an answer.
        return Err(usage_error(format!(
            "no cell of the heatmap is a valid configuration for both LoRA and {other} (every \
             --x-range/--y-range point is outside what {} allows: sequence length, rank or \
             tokens); choose ranges inside the model's limits",
            model.name
        )));
    }
    let contour = contour_segments(&ratio, 1.0);
    let name = |n: AxisName| n.as_str();
    // What is held fixed, so the title says which configuration the cells vary.
    let fixed: Vec<String> = [
        (AxisName::Batch, format!("batch {batch}")),
        (AxisName::Seq, format!("seq {seq}")),
        (AxisName::Rank, format!("rank {rank}")),
    ]
    .into_iter()
    .filter(|(axis, _)| *axis != a.x && *axis != a.y)
    .map(|(_, text)| text)
    .collect();
    Ok(HeatmapChart {
        title: format!(
            "{} on {}, {}, {}: LoRA / {} step time over {} x {}",
            model.name,
            hw.name,
            fixed.join(", "),
            precision.as_str(),
            other,
            name(a.x),
            name(a.y)
        ),
        x: a.x,
        y: a.y,
        xs,
        ys,
        ratio,
        does_not_fit,
        contour,
    })
}

/// Marching squares over cell centres: the segments where `v` crosses `level`, by linear
/// interpolation along the edges between neighbouring centres. Squares with a NaN corner are
/// skipped; the two saddle cases join the crossings pairwise in edge order.
pub fn contour_segments(v: &[Vec<f64>], level: f64) -> Vec<[(f64, f64); 2]> {
    let mut out = Vec::new();
    let ny = v.len();
    let nx = v.first().map_or(0, Vec::len);
    for j in 0..ny.saturating_sub(1) {
        for i in 0..nx.saturating_sub(1) {
            // Corners counter-clockwise: (i,j), (i+1,j), (i+1,j+1), (i,j+1); centres at +0.5.
            let c = [
                (i, j, v[j][i]),
                (i + 1, j, v[j][i + 1]),
                (i + 1, j + 1, v[j + 1][i + 1]),
                (i, j + 1, v[j + 1][i]),
            ];
            if c.iter().any(|p| !p.2.is_finite()) {
                continue;
            }
            let mut pts = Vec::new();
            for e in 0..4 {
                let (a, b) = (c[e], c[(e + 1) % 4]);
                let (da, db) = (a.2 - level, b.2 - level);
                if (da < 0.0) != (db < 0.0) {
                    let t = da / (da - db);
                    pts.push((
                        a.0 as f64 + 0.5 + t * (b.0 as f64 - a.0 as f64),
                        a.1 as f64 + 0.5 + t * (b.1 as f64 - a.1 as f64),
                    ));
                }
            }
            for pair in pts.chunks_exact(2) {
                out.push([pair[0], pair[1]]);
            }
        }
    }
    out
}

pub fn scatter_chart(from: &[PathBuf], hw: Option<&str>) -> Result<ScatterChart> {
    let file = crate::validate::merge(from)?;
    let profile =
        crate::validate::results_profile(hw, &file.profile, from.first().map(PathBuf::as_path))?;
    let report = costsim_validate::compare::compare(&file, &profile).map_err(usage_error)?;
    let mut points = Vec::new();
    for r in &report.rows {
        for (phase, pm) in ["forward", "backward", "optimizer", "step"]
            .into_iter()
            .zip(r.phases)
        {
            if let Some((p, m)) = pm {
                points.push(ScatterPoint {
                    config: r.config.clone(),
                    method: r.method.clone(),
                    phase,
                    predicted_ms: p,
                    measured_ms: m,
                });
            }
        }
    }
    if points.is_empty() {
        return Err(usage_error("the results have no measured phases to plot"));
    }
    Ok(ScatterChart {
        title: format!(
            "predicted ({}) vs measured on {}",
            profile.name, report.device
        ),
        points,
    })
}

// ---------------------------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------------------------

/// Any chart's data.
pub enum ChartData {
    Breakdown(BreakdownChart),
    Methods(MethodsChart),
    Heatmap(HeatmapChart),
    Scatter(ScatterChart),
}

impl ChartData {
    fn size(&self) -> (u32, u32) {
        match self {
            Self::Breakdown(b) => (1400, 60 + 280 * b.methods.len() as u32),
            Self::Methods(_) => (900, 520),
            Self::Heatmap(_) => (900, 680),
            Self::Scatter(_) => (760, 700),
        }
    }

    fn json(&self) -> serde_json::Result<String> {
        match self {
            Self::Breakdown(c) => serde_json::to_string_pretty(c),
            Self::Methods(c) => serde_json::to_string_pretty(c),
            Self::Heatmap(c) => serde_json::to_string_pretty(c),
            Self::Scatter(c) => serde_json::to_string_pretty(c),
        }
    }
}

/// Fixed, colour-blind-friendly palette (Okabe–Ito, then greys).
const COLORS: [RGBColor; 11] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
    RGBColor(180, 180, 180),
    RGBColor(90, 60, 30),
];

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, data: &ChartData) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    match data {
        ChartData::Breakdown(c) => draw_breakdown(root, c),
        ChartData::Methods(c) => draw_methods(root, c),
        ChartData::Heatmap(c) => draw_heatmap(root, c),
        ChartData::Scatter(c) => draw_scatter(root, c),
    }
}

/// The tallest stack of `stacks` (0 when empty).
fn stack_top(stacks: &[(String, Vec<f64>)]) -> f64 {
    let n = stacks.first().map_or(0, |(_, v)| v.len());
    (0..n)
        .map(|i| stacks.iter().map(|(_, v)| v[i]).sum::<f64>())
        .fold(0.0f64, f64::max)
}

/// A tick label with at most three significant digits and no trailing zeros: 0.25, 1.5, 120,
/// 0.0012, 25000 (never 0.30000000000000004).
pub fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { String::new() };
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Stacked bars: one bar per category, `stacks` = (label, value per category). `top`: the
/// y-axis end (shared across panels), else the tallest stack's.
fn stacked<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    categories: &[String],
    stacks: &[(String, Vec<f64>)],
    y_label: &str,
    top: Option<f64>,
    caption_color: RGBColor,
) -> DrawResult<DB> {
    let n = categories.len();
    let top = top.unwrap_or_else(|| stack_top(stacks)).max(1e-9) * 1.1;
    // Legend in its own column on the right, so it never hides a bar.
    let (w, _) = area.dim_in_pixel();
    let (plot_area, legend_area) = area.split_horizontally(w.saturating_sub(120));
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(
            caption,
            ("sans-serif", 16).into_font().color(&caption_color),
        )
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..top)?;
    let cats = categories.to_vec();
    let step = (n / 16).max(1);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.min(40))
        .x_label_formatter(&|x| {
            let i = x.round().max(0.0) as usize;
            if (*x - i as f64).abs() < 1e-9 && i < cats.len() && i.is_multiple_of(step) {
                cats[i].clone()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| tick(*y))
        .y_desc(y_label)
        .label_style(("sans-serif", 11))
        .draw()?;
    let mut base = vec![0.0; n];
    for (si, (label, values)) in stacks.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let rects: Vec<_> = (0..n)
            .map(|i| {
                let (y0, y1) = (base[i], base[i] + values[i]);
                base[i] = y1;
                Rectangle::new([(i as f64 - 0.4, y0), (i as f64 + 0.4, y1)], color.filled())
            })
            .collect();
        chart.draw_series(rects)?;
        let y = 36 + 18 * si as i32;
        legend_area.draw(&Rectangle::new([(6, y - 5), (16, y + 5)], color.filled()))?;
        legend_area.draw(&Text::new(
            label.clone(),
            (22, y - 6),
            ("sans-serif", 12).into_font(),
        ))?;
    }
    Ok(())
}

fn short_scope(s: &str) -> String {
    match s {
        "embedding" => "emb".into(),
        "optimizer" => "opt".into(),
        other => other.strip_prefix("layer.").unwrap_or(other).to_string(),
    }
}

fn draw_breakdown<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &BreakdownChart,
) -> DrawResult<DB> {
    let (title, body) = root.split_vertically(40);
    title.titled(&c.title, ("sans-serif", 20))?;
    let rows = body.split_evenly((c.methods.len(), 2));
    let panels: Vec<_> = c.methods.iter().map(|(_, s)| breakdown_panels(s)).collect();
    // With --shared-y, one scale for every panel: the tallest bar of any method.
    let shared = c.shared_y.then(|| {
        panels
            .iter()
            .flat_map(|(k, b)| [stack_top(k), stack_top(b)])
            .fold(0.0f64, f64::max)
    });
    for (m, ((method, scopes), (kinds, bounds))) in c.methods.iter().zip(&panels).enumerate() {
        let cats: Vec<String> = scopes.iter().map(|s| short_scope(&s.scope)).collect();
        // A method that does not fit is marked in both captions, in red.
        let (mark, color) = match c.does_not_fit.iter().find(|n| &n.method == method) {
            Some(n) => (
                format!(
                    " [DOES NOT FIT: peak {:.1} GiB > {:.1} GiB usable]",
                    n.peak_gib, n.usable_gib
                ),
                RGBColor(200, 0, 0),
            ),
            None => (String::new(), BLACK),
        };
        stacked(
            &rows[2 * m],
            &format!("{method}: device time by kernel kind{mark}"),
            &cats,
            kinds,
            "ms per step",
            shared,
            color,
        )?;
        stacked(
            &rows[2 * m + 1],
            &format!("{method}: step time by bound{mark}"),
            &cats,
            bounds,
            "ms per step",
            shared,
            color,
        )?;
    }
    Ok(())
}

type Stacks = Vec<(String, Vec<f64>)>;

/// A method's two panels: device time by kernel kind, step time by bound, per scope.
fn breakdown_panels(scopes: &[ScopeBreakdown]) -> (Stacks, Stacks) {
    {
        let kinds: Vec<(String, Vec<f64>)> = KernelKind::ALL
            .iter()
            .enumerate()
            .map(|(k, kind)| {
                (
                    kind.as_str().to_string(),
                    scopes
                        .iter()
                        .map(|s| s.by_kind_ms[k].1)
                        .collect::<Vec<f64>>(),
                )
            })
            .filter(|(_, v)| v.iter().any(|x| *x > 0.0))
            .collect();
        let bounds: Vec<(String, Vec<f64>)> = [
            ("compute", 0),
            ("memory", 1),
            ("launch", 2),
            ("host wait", 3),
        ]
        .iter()
        .map(|(name, b)| {
            (
                name.to_string(),
                scopes
                    .iter()
                    .map(|s| [s.compute_ms, s.memory_ms, s.launch_ms, s.host_wait_ms][*b])
                    .collect(),
            )
        })
        .collect();
        (kinds, bounds)
    }
}

fn draw_methods<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &MethodsChart,
) -> DrawResult<DB> {
    let cats: Vec<String> = c
        .bars
        .iter()
        .map(|b| {
            if b.fits {
                b.method.clone()
            } else {
                format!("{} (OOM)", b.method)
            }
        })
        .collect();
    let stacks = vec![
        (
            "forward".to_string(),
            c.bars.iter().map(|b| b.forward_ms).collect(),
        ),
        (
            "backward".to_string(),
            c.bars.iter().map(|b| b.backward_ms).collect(),
        ),
        (
            "optimizer".to_string(),
            c.bars.iter().map(|b| b.optimizer_ms).collect(),
        ),
        (
            "training loop".to_string(),
            c.bars.iter().map(|b| b.loop_ms).collect(),
        ),
    ];
    stacked(
        root,
        &c.title,
        &cats,
        &stacks,
        "ms per optimizer step",
        None,
        BLACK,
    )
}

/// Diverging colour for a ratio: blue below 1 (LoRA faster), red above, white at 1; saturates at
/// ×2 either way.
fn ratio_color(r: f64) -> RGBColor {
    if !r.is_finite() {
        return RGBColor(200, 200, 200);
    }
    let t = r.log2().clamp(-1.0, 1.0);
    let mix = |a: u8, b: u8, t: f64| (f64::from(a) + (f64::from(b) - f64::from(a)) * t) as u8;
    if t < 0.0 {
        let t = -t;
        RGBColor(mix(255, 33, t), mix(255, 102, t), mix(255, 172, t))
    } else {
        RGBColor(mix(255, 178, t), mix(255, 24, t), mix(255, 43, t))
    }
}

fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &HeatmapChart,
) -> DrawResult<DB> {
    let (nx, ny) = (c.xs.len(), c.ys.len());
    let (xs, ys) = (c.xs.clone(), c.ys.clone());
    let name = |a: AxisName| match a {
        AxisName::Seq => "sequence length",
        AxisName::Batch => "micro-batch size",
        AxisName::Rank => "LoRA rank",
    };
    let (title, body) = root.split_vertically(58);
    title.draw(&Text::new(
        c.title.clone(),
        (12, 8),
        ("sans-serif", 17).into_font(),
    ))?;
    title.draw(&Text::new(
        "blue: LoRA faster, red: LoRA slower; black line: ratio 1.0; grey \"-\": not a valid \
         configuration; hatched \"OOM\": does not fit in memory",
        (12, 34),
        ("sans-serif", 13).into_font(),
    ))?;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..nx as f64, 0f64..ny as f64)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(nx * 2 + 1)
        .y_labels(ny * 2 + 1)
        .x_label_formatter(&|x| label_at(&xs, *x))
        .y_label_formatter(&|y| label_at(&ys, *y))
        .x_desc(name(c.x))
        .y_desc(name(c.y))
        .label_style(("sans-serif", 12))
        .draw()?;
    let mut cells = Vec::new();
    for (j, row) in c.ratio.iter().enumerate() {
        for (i, r) in row.iter().enumerate() {
            let (x, y) = (i as f64, j as f64);
            cells.push(Rectangle::new(
                [(x, y), (x + 1.0, y + 1.0)],
                ratio_color(*r).filled(),
            ));
        }
    }
    chart.draw_series(cells)?;
    // Cells that do not fit: diagonal hatching over the colour (which still shows the ratio).
    let oom = |i: usize, j: usize| {
        c.does_not_fit
            .iter()
            .any(|n| n.x == c.xs[i] && n.y == c.ys[j])
    };
    let hatch = RGBColor(70, 70, 70);
    let mut lines = Vec::new();
    for j in 0..ny {
        for i in 0..nx {
            if !oom(i, j) {
                continue;
            }
            let (x, y) = (i as f64, j as f64);
            for k in 1..6 {
                let t = f64::from(k) / 6.0;
                lines.push(PathElement::new(
                    vec![(x + t, y), (x, y + t)],
                    hatch.stroke_width(1),
                ));
                lines.push(PathElement::new(
                    vec![(x + 1.0, y + t), (x + t, y + 1.0)],
                    hatch.stroke_width(1),
                ));
            }
        }
    }
    chart.draw_series(lines)?;
    // The contour first, the labels over it, so no line crosses a number.
    chart.draw_series(
        c.contour
            .iter()
            .map(|[a, b]| PathElement::new(vec![*a, *b], BLACK.stroke_width(3))),
    )?;
    let mut labels = Vec::new();
    for (j, row) in c.ratio.iter().enumerate() {
        for (i, r) in row.iter().enumerate() {
            let text = match (r.is_finite(), oom(i, j)) {
                (false, _) => "-".to_string(),
                (true, false) => format!("{r:.2}"),
                (true, true) => format!("{r:.2} OOM"),
            };
            let (x, y) = (i as f64 + 0.5, j as f64 + 0.5);
            labels.push(
                EmptyElement::at((x, y))
                    + Text::new(
                        text,
                        (0, 0),
                        ("sans-serif", 12)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    ),
            );
        }
    }
    chart.draw_series(labels)?;
    Ok(())
}

/// Axis label at a cell centre (i + 0.5) in cell coordinates, else nothing.
fn label_at(values: &[u64], x: f64) -> String {
    let i = (x - 0.5).round();
    if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < values.len() {
        values[i as usize].to_string()
    } else {
        String::new()
    }
}

/// The line predicted = f · measured cut at the plot's frame, both axes spanning `lo..hi` ms:
/// from x = max(lo, lo / f) to x = min(hi, hi / f). plotters moves a point outside the plot onto
/// the frame instead of cutting the line there, which would bend the ±25% lines toward the
/// identity line at one end each.
fn band_line(lo: f64, hi: f64, f: f64) -> [(f64, f64); 2] {
    let (x0, x1) = (lo.max(lo / f), hi.min(hi / f));
    [(x0, f * x0), (x1, f * x1)]
}

fn draw_scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &ScatterChart,
) -> DrawResult<DB> {
    let (lo, hi) = c
        .points
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
            (
                lo.min(p.predicted_ms.min(p.measured_ms)),
                hi.max(p.predicted_ms.max(p.measured_ms)),
            )
        });
    let (lo, hi) = (lo.max(1e-3) / 1.5, hi * 1.5);
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc("measured ms")
        .y_desc("predicted ms")
        .label_style(("sans-serif", 12))
        .draw()?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(lo, lo), (hi, hi)],
            BLACK.stroke_width(1),
        )))?
        .label("predicted = measured")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
    let band = RGBColor(150, 150, 150);
    for f in [0.75, 1.25] {
        let series = chart.draw_series(std::iter::once(PathElement::new(
            band_line(lo, hi, f).to_vec(),
            band.stroke_width(1),
        )))?;
        if f > 1.0 {
            // One legend entry for the pair.
            series
                .label("predicted = measured ±25%")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], band));
        }
    }
    for (k, phase) in ["forward", "backward", "optimizer", "step"]
        .iter()
        .enumerate()
    {
        let color = COLORS[k];
        chart
            .draw_series(
                c.points
                    .iter()
                    .filter(|p| p.phase == *phase)
                    .map(|p| Circle::new((p.measured_ms, p.predicted_ms), 4, color.filled())),
            )?
            .label(*phase)
            .legend(move |(x, y)| Circle::new((x + 5, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

/// Register the shipped font (once).
fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the shipped font assets/fonts/DejaVuSans.ttf could not be loaded"
        ))
    }
}

/// Draw `data` as the image format `out`'s extension names (.svg or .png), in memory.
pub fn render_chart(data: &ChartData, out: &Path) -> Result<Vec<u8>> {
    register_font()?;
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let size = data.size();
    match ext.as_deref() {
        Some("svg") => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                draw(&root, data).map_err(|e| anyhow!("drawing the chart: {e:?}"))?;
                root.present()
                    .map_err(|e| anyhow!("drawing the chart: {e:?}"))?;
            }
            Ok(svg.into_bytes())
        }
        Some("png") => {
            let (w, h) = size;
            let mut rgb = vec![0u8; w as usize * h as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
                draw(&root, data).map_err(|e| anyhow!("drawing the chart: {e:?}"))?;
                root.present()
                    .map_err(|e| anyhow!("drawing the chart: {e:?}"))?;
            }
            let mut png = Vec::new();
            use image::ImageEncoder;
            image::codecs::png::PngEncoder::new(&mut png)
                .write_image(&rgb, w, h, image::ColorType::Rgb8)
                .context("encoding the PNG")?;
            Ok(png)
        }
        _ => Err(usage_error(format!(
            "cannot tell the image format of {}; end --out with .svg or .png",
            out.display()
        ))),
    }
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let (data, output) = match &args.chart {
        Chart::Breakdown {
            predict,
            shared_y,
            output,
        } => (
            ChartData::Breakdown(breakdown_chart(predict, *shared_y)?),
            output,
        ),
        Chart::Methods { predict, output } => (ChartData::Methods(methods_chart(predict)?), output),
        Chart::Heatmap(a) => (ChartData::Heatmap(heatmap_chart(a)?), &a.output),
        Chart::Scatter { from, hw, output } => (
            ChartData::Scatter(scatter_chart(from, hw.as_deref())?),
            output,
        ),
    };
    // Check the extension before any work is written.
    let ext = output
        .out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("svg" | "png")) {
        // `.svg` alone is a file name with no extension (a hidden file), not an SVG.
        let bare = output
            .out
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_ascii_lowercase)
            .filter(|n| n == ".svg" || n == ".png");
        return Err(usage_error(match bare {
            Some(n) => format!(
                "--out {} names no file before its extension; name the chart, e.g. chart{n}",
                output.out.display()
            ),
            None => format!(
                "cannot tell the image format of {}; end --out with .svg or .png",
                output.out.display()
            ),
        }));
    }
    if let Some(d) = output
        .data
        .as_deref()
        .filter(|d| crate::files::same_target(&output.out, d))
    {
        return Err(usage_error(format!(
            "--out and --data both name {}: the data would replace the chart; give the data a \
             file of its own (e.g. --data {})",
            d.display(),
            output.out.with_extension("json").display()
        )));
    }
    check_drawable(&data)?;
    // Both outputs are made in full before either is written, and committed together.
    let image = render_chart(&data, &output.out)?;
    let mut staged = vec![stage(&output.out, &image)?];
    if let Some(path) = &output.data {
        staged.push(stage(path, (data.json()? + "\n").as_bytes())?);
    }
    crate::files::commit_all(staged)?;
    note!("{}", wrote_message(&output.out, output.data.as_deref()));
    Ok(())
}

/// What `plot` tells the user it wrote: "wrote chart.svg" or "wrote chart.svg and data.json".
fn wrote_message(out: &Path, data: Option<&Path>) -> String {
    match data {
        Some(d) => format!("wrote {} and {}", out.display(), d.display()),
        None => format!("wrote {}", out.display()),
    }
}

/// Largest magnitude a chart draws: 10^15 (ms: 31,000 years). Axis code (plotters' mesh and
/// log-scale ticks) loops without end on infinite or absurd ranges, so a chart whose data holds
/// one is refused before drawing. The inputs are checked where they are read; this is the
/// last line.
const MAX_DRAWN: f64 = 1e15;

/// Every number of the chart's data finite and at most [`MAX_DRAWN`] in size (a heatmap's
/// invalid cells, NaN by design, excepted).
fn check_drawable(data: &ChartData) -> Result<()> {
    fn walk(v: &serde_json::Value, path: &mut Vec<String>, nulls_ok: bool) -> Option<String> {
        match v {
            serde_json::Value::Null if !nulls_ok => {
                Some(format!("{} is not a number", path.join(".")))
            }
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(x) if x.is_finite() && x.abs() <= MAX_DRAWN => None,
                _ => Some(format!("{} = {n} is beyond {MAX_DRAWN:e}", path.join("."))),
            },
            serde_json::Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| {
                path.push(i.to_string());
                let r = walk(x, path, nulls_ok);
                path.pop();
                r
            }),
            serde_json::Value::Object(o) => o.iter().find_map(|(k, x)| {
                path.push(k.clone());
                let r = walk(x, path, nulls_ok);
                path.pop();
                r
            }),
            _ => None,
        }
    }
    let value: serde_json::Value = serde_json::from_str(&data.json()?)?;
    let nulls_ok = matches!(data, ChartData::Heatmap(_));
    match walk(&value, &mut Vec::new(), nulls_ok) {
        None => Ok(()),
        Some(what) => Err(usage_error(format!(
            "cannot draw this chart: {what}; the inputs (profile, model sizes, results) give \
             values no axis can show, so check them"
        ))),
    }
}

fn stage(path: &Path, bytes: &[u8]) -> Result<crate::files::Output> {
    use std::io::Write;
    let mut o = crate::files::Output::create(path)?;
    o.write_all(bytes)
        .map_err(|e| crate::files::write_error(path, &e))?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn methods(step_ms: f64) -> ChartData {
        ChartData::Methods(MethodsChart {
            title: "t".into(),
            bars: vec![MethodBar {
                method: "lora".into(),
                forward_ms: 1.0,
                backward_ms: 2.0,
                optimizer_ms: 0.5,
                loop_ms: 0.0,
                step_ms,
                fits: true,
            }],
        })
    }

    #[test]
    fn band_lines_end_on_the_frame_at_their_ratio() {
        let (lo, hi) = (2.0, 300.0);
        for f in [0.75, 1.25] {
            let ends = band_line(lo, hi, f);
            for (x, y) in ends {
                assert!((y / x - f).abs() < 1e-12, "{f}: ({x}, {y})");
                assert!(
                    (lo..=hi).contains(&x) && (lo..=hi).contains(&y),
                    "{f}: ({x}, {y})"
                );
            }
            // Each end lies on the frame: one coordinate is lo or hi.
            let on_frame = |v: f64| v == lo || v == hi;
            assert!(
                ends.iter().all(|&(x, y)| on_frame(x) || on_frame(y)),
                "{ends:?}"
            );
        }
        assert_eq!(band_line(lo, hi, 0.75), [(lo / 0.75, lo), (hi, 0.75 * hi)]);
        assert_eq!(band_line(lo, hi, 1.25), [(lo, 1.25 * lo), (hi / 1.25, hi)]);
    }

    #[test]
    fn infinite_nan_and_absurd_values_are_not_drawn() {
        assert!(check_drawable(&methods(3.5)).is_ok());
        for bad in [f64::INFINITY, f64::NAN, 4.8e18] {
            let err = check_drawable(&methods(bad)).unwrap_err().to_string();
            assert!(err.contains("bars.0.step_ms"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_heatmap_may_hold_invalid_cells_but_not_huge_ones() {
        let heat = |r: f64| {
            ChartData::Heatmap(HeatmapChart {
                title: "h".into(),
                x: AxisName::Seq,
                y: AxisName::Batch,
                xs: vec![1, 2],
                ys: vec![1],
                ratio: vec![vec![f64::NAN, r]],
                does_not_fit: vec![],
                contour: vec![],
            })
        };
        assert!(check_drawable(&heat(0.9)).is_ok());
        let err = check_drawable(&heat(1e300)).unwrap_err().to_string();
        assert!(err.contains("ratio.0.1"), "{err}");
    }
}

#[cfg(test)]
mod tick_tests {
    use super::tick;

    #[test]
    fn tick_labels_are_round() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(0.30000000000000004), "0.3");
        assert_eq!(tick(1.5), "1.5");
        assert_eq!(tick(120.0), "120");
        assert_eq!(tick(25000.0), "25000");
        assert_eq!(tick(0.0012345), "0.00123");
        assert_eq!(tick(12.3456), "12.3");
        assert_eq!(tick(-2.5), "-2.5");
    }
}
