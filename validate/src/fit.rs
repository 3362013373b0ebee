//! Fitting a device profile from microbenchmark samples (`costsim calibrate`).
//!
//! Each sample is one op (or a fixed group of ops) timed many times: its FLOPs and bytes counted
//! as the cost model counts them, the number of ops, and the timing statistics. Per kernel kind
//! the model's time is linear in its parameters once the bound is known, so each kind is fitted
//! by non-negative least squares (Lawson–Hanson, nalgebra) on rows weighted by 1/t (relative
//! errors: samples span microseconds to seconds):
//!
//! - GEMMs (no dimension ≤ 64), per math mode: t = x / R + c·ops, where x is the model's own
//!   tile-and-wave math time at 1 FLOP/s per device (`cost::gemm_math_time`), so the fitted rate
//!   R is exactly the quantity the model divides by;
//! - skinny GEMMs (a dimension ≤ 64): t = bytes / B_skinny + c·ops;
//! - elementwise, cast, reduction, norm, softmax, gather, optimizer: t = bytes / B_kind + c·ops;
//! - attention, per math mode: t = flops / R_attn + c·ops;
//! - the dispatch loop (a one-element add, thousands of times) gives the per-op host cost, and a
//!   chain of one-element ops differentiated by autograd gives the per-node engine cost.
//!
//! Goodness of fit: R² of the weighted problem, and 95% confidence intervals of the coefficients
//! from Student's t (statrs) with the active set treated as ordinary least squares. Samples whose
//! spread ((p90 − p10) / median) stayed above the threshold after repeats are reported and left
//! out of the fits.

use crate::record::Stats;
use crate::{Error, Result};
use costsim_hardware::{MathMode, Profile};
use costsim_hardware::{GEMM_FILL_ROWS, NARROW_CLASSES};
use costsim_model::cost::{gemm_math_time, narrow_class, skinny_dims, SKINNY_DIM};
use costsim_model::graph::Gemm;
use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Format version of calibration sample files.
pub const SCHEMA: u32 = 1;

/// Spread ((p90 − p10) / median) above which a sample is repeated, then reported as unstable.
pub const MAX_SPREAD: f64 = 0.25;

/// What a microbenchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bench {
    Gemm,
    Elementwise,
    /// Dropout (elementwise with a random draw per element).
    Dropout,
    /// tanh: elementwise with a transcendental function per element.
    Transcendental,
    Cast,
    Reduction,
    Norm,
    Softmax,
    Gather,
    /// PaCA's write of s·P into W's columns (a strided scatter into a cold W).
    Scatter,
    Attention,
    /// SDPA's backward alone.
    AttentionBackward,
    Optimizer,
    /// One-element op issued in a loop: the per-op host (dispatch) cost.
    Dispatch,
    /// One node of a chain run backward by the autograd engine.
    AutogradNode,
    /// Filling freshly allocated memory minus filling existing memory (page faults).
    FirstTouch,
}

/// One microbenchmark.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub bench: Bench,
    /// What ran, e.g. `mm 512x768x768`.
    pub name: String,
    /// `fp32` or `bf16`.
    pub dtype: String,
    pub flops: f64,
    /// Bytes read + written, as the cost model counts them.
    pub bytes: f64,
    /// GEMM shape (m, n, k, batch).
    pub gemm: Option<[u64; 4]>,
    /// Ops in one timed unit.
    pub ops: u32,
    /// Time of one unit.
    pub stats: Stats,
    /// Timing attempts (more than one when the first was unstable).
    pub attempts: u32,
}

impl Sample {
    pub fn spread(&self) -> f64 {
        self.stats.spread()
    }

    pub fn stable(&self) -> bool {
        self.spread() <= MAX_SPREAD
    }

    fn t(&self) -> f64 {
        self.stats.median_ms * 1e-3
    }
}

/// A calibration run as written to disk: enough to refit without libtorch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CalibrationRun {
    pub schema: u32,
    pub device: String,
    pub device_kind: String,
    pub torch_version: String,
    pub git_commit: String,
    pub timestamp: String,
    pub command: String,
    pub samples: Vec<Sample>,
}

/// Largest FLOP or byte count of one microbenchmark: 10^18 (a second of an exa-scale machine).
const MAX_SAMPLE_WORK: f64 = 1e18;
/// Largest GEMM dimension of a sample: 2^24.
const MAX_GEMM_DIM: u64 = 1 << 24;
/// Most ops in one timed unit.
const MAX_SAMPLE_OPS: u32 = 1_000_000;

impl Sample {
    /// The sample is one the calibration harness could have written.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !matches!(self.dtype.as_str(), "fp32" | "bf16") {
            return Err(format!(
                "dtype = {:?} must be \"fp32\" or \"bf16\"",
                self.dtype
            ));
        }
        for (key, v) in [("flops", self.flops), ("bytes", self.bytes)] {
            if !(v.is_finite() && (0.0..=MAX_SAMPLE_WORK).contains(&v)) {
                return Err(format!(
                    "{key} = {v:?} must be between 0 and {MAX_SAMPLE_WORK:e} (one microbenchmark's \
                     work)"
                ));
            }
        }
        if let Some(g) = self.gemm {
            if g.iter().any(|d| !(1..=MAX_GEMM_DIM).contains(d)) {
                return Err(format!(
                    "gemm = {g:?} must hold four dimensions (m, n, k, batch) between 1 and \
                     {MAX_GEMM_DIM}"
                ));
            }
        }
        if self.ops > MAX_SAMPLE_OPS {
            return Err(format!(
                "ops = {} must be at most {MAX_SAMPLE_OPS} per timed unit",
                self.ops
            ));
        }
        self.stats.check("stats")
    }
}

impl CalibrationRun {
    /// At least one sample and every sample sound ([`Sample::check`]); `origin` names the file.
    pub fn check(&self, origin: &str) -> Result<()> {
        let bad = |what: String, message: String| Error::InvalidArgument { what, message };
        if !(self.device_kind == "cpu" || self.device_kind.starts_with("cuda")) {
            return Err(bad(
                format!("calibration samples file {origin}"),
                format!(
                    "device_kind = {:?} must be \"cpu\" or \"cuda:N\"; use a file written by \
                     `costsim calibrate`",
                    self.device_kind
                ),
            ));
        }
        if self.samples.is_empty() {
            return Err(bad(
                format!("calibration samples file {origin}"),
                "it holds no samples; use a file written by `costsim calibrate --device`".into(),
            ));
        }
        for (i, s) in self.samples.iter().enumerate() {
            s.check().map_err(|m| {
                bad(
                    format!("calibration samples file {origin}, sample {i} ({})", s.name),
                    format!("{m}; correct or remove the sample"),
                )
            })?;
        }
        Ok(())
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = costsim_hardware::input::read_text(path, "calibration samples file").map_err(
            |source| Error::Io {
                path: path.display().to_string(),
                source,
            },
        )?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and check samples text; `origin` names it in errors. Its text fields are made
    /// printable (`record::printable`).
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut run: Self = serde_json::from_str(text)
            .map_err(|e| crate::parse_error(text, "calibration samples file", 1, origin, &e))?;
        for f in [
            &mut run.device,
            &mut run.device_kind,
            &mut run.torch_version,
            &mut run.git_commit,
            &mut run.timestamp,
            &mut run.command,
        ] {
            crate::record::printable(f);
        }
        if run.schema != SCHEMA {
            return Err(Error::InvalidArgument {
                what: "calibration file".into(),
                message: format!(
                    "{origin} has schema {}, this costsim reads {SCHEMA}; use a file written by \
                     this version's `costsim calibrate`",
                    run.schema
                ),
            });
        }
        run.check(origin)?;
        Ok(run)
    }
}

/// Non-negative least squares, min ‖Ax − b‖ with x ≥ 0 (Lawson and Hanson, 1974).
pub fn nnls(a: &DMatrix<f64>, b: &DVector<f64>) -> DVector<f64> {
    let n = a.ncols();
    let mut x = DVector::zeros(n);
    let mut passive = vec![false; n];
    let tol = 1e-12 * a.norm().max(1.0) * b.norm().max(1.0);
    for _ in 0..(3 * n + 10) {
        let w = a.transpose() * (b - a * &x);
        let candidate = (0..n)
            .filter(|&j| !passive[j] && w[j] > tol)
            .max_by(|&i, &j| w[i].total_cmp(&w[j]));
        let Some(j) = candidate else { break };
        passive[j] = true;
        loop {
            let idx: Vec<usize> = (0..n).filter(|&j| passive[j]).collect();
            let z_p = ls_subset(a, b, &idx);
            let mut z = DVector::zeros(n);
            for (k, &j) in idx.iter().enumerate() {
                z[j] = z_p[k];
            }
            if idx.iter().all(|&j| z[j] > 0.0) {
                x = z;
                break;
            }
            // Step back to the boundary and drop the variables that reached zero.
            let alpha = idx
                .iter()
                .filter(|&&j| z[j] <= 0.0)
                .map(|&j| x[j] / (x[j] - z[j]))
                .fold(f64::INFINITY, f64::min);
            x = &x + (z - &x) * alpha;
            for &j in &idx {
                if x[j] <= 1e-15 {
                    passive[j] = false;
                    x[j] = 0.0;
                }
            }
        }
    }
    x
}

/// Unconstrained least squares on a subset of columns (SVD, robust to near-collinearity).
fn ls_subset(a: &DMatrix<f64>, b: &DVector<f64>, cols: &[usize]) -> DVector<f64> {
    let sub = a.select_columns(cols);
    let svd = sub.svd(true, true);
    svd.solve(b, 1e-12)
        .unwrap_or_else(|_| DVector::zeros(cols.len()))
}

/// A fitted linear model with its quality.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Fit {
    /// Which kernels, e.g. `gemm fp32`.
    pub what: String,
    /// Coefficient names, e.g. `s per tile-FLOP`, `s per op`.
    pub names: Vec<&'static str>,
    pub coef: Vec<f64>,
    /// 95% confidence half-widths (NaN where not estimable: a coefficient at its bound or too few
    /// samples).
    pub ci95: Vec<f64>,
    /// R² of the weighted (relative-error) fit.
    pub r2: f64,
    /// Samples used.
    pub n: usize,
    /// Largest relative residual |t_fit − t| / t over the samples used.
    pub worst_rel: f64,
}

/// Fit t ≈ Σ coef_j · x_j with coef ≥ 0, rows weighted by 1/t.
pub fn fit_linear(what: &str, names: Vec<&'static str>, rows: &[(Vec<f64>, f64)]) -> Option<Fit> {
    let (n, p) = (rows.len(), names.len());
    if n < p || n == 0 {
        return None;
    }
    let a = DMatrix::from_fn(n, p, |i, j| rows[i].0[j] / rows[i].1);
    let b = DVector::from_element(n, 1.0);
    let coef = nnls(&a, &b);
    let pred = &a * &coef;
    let resid = &b - &pred;
    let rss = resid.norm_squared();
    // Every weighted target is 1, so the centred total sum of squares is 0: R² is the
    // uncentred one (1 − RSS / Σb²), the share of the (relative) times the model explains.
    let r2 = 1.0 - rss / b.norm_squared();
    let active: Vec<usize> = (0..p).filter(|&j| coef[j] > 0.0).collect();
    let mut ci95 = vec![f64::NAN; p];
    let dof = n as f64 - active.len() as f64;
    if dof >= 1.0 && !active.is_empty() {
        let x = a.select_columns(&active);
        if let Some(inv) = (x.transpose() * &x).try_inverse() {
            let sigma2 = rss / dof;
            if let Ok(t) = StudentsT::new(0.0, 1.0, dof) {
                let q = t.inverse_cdf(0.975);
                for (k, &j) in active.iter().enumerate() {
                    ci95[j] = q * (sigma2 * inv[(k, k)]).max(0.0).sqrt();
                }
            }
        }
    }
    let worst_rel = resid.iter().map(|r| r.abs()).fold(0.0, f64::max);
    Some(Fit {
        what: what.to_string(),
        names,
        coef: coef.iter().copied().collect(),
        ci95,
        r2,
        n,
        worst_rel,
    })
}

/// Memory-bound kinds fitted for bandwidth, with their profile keys.
const KINDS: [(Bench, &str); 10] = [
    (Bench::Elementwise, "elementwise"),
    (Bench::Dropout, "dropout"),
    (Bench::Cast, "cast"),
    (Bench::Reduction, "reduction"),
    (Bench::Norm, "norm"),
    (Bench::Softmax, "softmax"),
    (Bench::Gather, "gather"),
    (Bench::Scatter, "scatter"),
    (Bench::Optimizer, "optimizer"),
    (Bench::Transcendental, "transcendental"),
];

/// Name prefix of calibrate's adapter-sized AdamW samples.
const ADAPTERS: &str = "adamw-single adapters";

/// Name prefix of calibrate's AdamW samples over equal tensors, one size a list.
const UNIFORM: &str = "adamw-single uniform";

/// Everything a calibration fitted, and the profile it makes.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub fits: Vec<Fit>,
    /// Samples left out as unstable: (name, spread).
    pub unstable: Vec<(String, f64)>,
    /// The profile's TOML text.
    pub profile_toml: String,
}

/// Unit-rate copy of a profile for GEMM features: every peak 1 FLOP/s, efficiency 1, and GPU-style
/// tiles (a base's own row fill is what a CPU calibration fits afresh, not a feature).
fn unit_rate(base: &Profile) -> Profile {
    let mut p = base.clone();
    p.peak_fp32_flops = 1.0;
    p.peak_tf32_flops = 1.0;
    p.peak_bf16_flops = 1.0;
    p.peak_fp16_flops = 1.0;
    p.gemm_efficiency = 1.0;
    p.gemm_fill_rows = None;
    p
}

/// The role of a GEMM sample timed in one of nn.Linear's layouts (`mm MxNxK nt`, calibrate's
/// "gemm narrow"), as the model's graph names that role's kernel: "nt" the forward x·Wᵀ (`mm`),
/// "nn" dX = dY·W (`mm_dX`), "tn" dW = dYᵀ·X (`mm_dW`). None for samples with contiguous
/// operands (their names end in the shape), which the rate and bandwidth fits use.
fn narrow_role(s: &Sample) -> Option<&'static str> {
    match s.name.rsplit(' ').next()? {
        "nt" => Some("mm"),
        "nn" => Some("mm_dX"),
        "tn" => Some("mm_dW"),
        _ => None,
    }
}

/// Skinny GEMM sample (bandwidth fit), by the model's own rule ([`skinny_dims`]): with
/// `row_fill` (a CPU calibration that fits the per-call row fill) only n and k count.
fn is_skinny(g: &[u64; 4], row_fill: bool) -> bool {
    skinny_dims(g[0], g[1], g[2], row_fill)
}

/// Fit every parameter and write a profile named `name` on top of `base` (which supplies what is
/// not measured: memory, SMs or cores, the Python-side host costs).
pub fn calibrate(run: &CalibrationRun, base: &Profile, name: &str) -> Result<Calibration> {
    let stable: Vec<&Sample> = run.samples.iter().filter(|s| s.stable()).collect();
    let unstable: Vec<(String, f64)> = run
        .samples
        .iter()
        .filter(|s| !s.stable())
        .map(|s| (format!("{} {}", s.name, s.dtype), s.spread()))
        .collect();
    let unit = unit_rate(base);
    let mut fits = Vec::new();
    let need = |f: Option<Fit>, what: &str| -> Result<Fit> {
        f.ok_or_else(|| Error::InvalidArgument {
            what: "calibration".into(),
            message: format!("too few stable samples to fit {what}; rerun with more --reps"),
        })
    };
    let of = |bench: Bench| stable.iter().copied().filter(move |s| s.bench == bench);

    // Host: dispatch loop and autograd node.
    let median = |v: Vec<f64>| -> Option<f64> {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    let dispatch_s = median(
        of(Bench::Dispatch)
            .map(|s| s.t() / f64::from(s.ops))
            .collect(),
    )
    .ok_or_else(|| Error::InvalidArgument {
        what: "calibration".into(),
        message: "no stable dispatch-loop sample".into(),
    })?;
    let node_s = median(
        of(Bench::AutogradNode)
            .map(|s| s.t() / f64::from(s.ops))
            .collect(),
    );

    // First touch: page-fault rate of fresh mappings (CPUs).
    let touch_bps = median(
        of(Bench::FirstTouch)
            .filter(|s| s.t() > 0.0)
            .map(|s| s.bytes / s.t())
            .collect(),
    );
    let touch_min = 32.0 * 1048576.0;
    // The part of a sample's time spent faulting in its fresh output (removed before fitting
    // the op's own rate, and added back by the cost model).
    let touch_of = |out_bytes: f64| -> f64 {
        match touch_bps {
            Some(bps) if out_bytes >= touch_min => out_bytes / bps,
            _ => 0.0,
        }
    };

    // GEMMs per math mode (rate), skinny GEMMs (bandwidth). A CPU calibration whose samples
    // reach down to GEMMs of a few rows (calibrate's "gemm rows": m ≤ 4, n and k above
    // SKINNY_DIM) fits the per-call row fill over every GEMM whose n and k exceed SKINNY_DIM:
    // t = a·2·b·m·n·k + f·2·b·n·k + c·ops, so rate = 1/a and m₀ = f/a rows
    // (`cost::gemm_math_time`). Otherwise the tile and wave model's tile-FLOPs, as on GPUs:
    // sample sets recorded before 2026-11-29 have no such GEMMs and refit as they were.
    let probes_rows = |g: &[u64; 4]| g[0] <= 4 && g[1].min(g[2]) > SKINNY_DIM;
    let row_fill =
        base.synchronous && of(Bench::Gemm).any(|s| s.gemm.is_some_and(|g| probes_rows(&g)));
    let mut gemm_rate = Vec::new();
    let mut fill_rows: Vec<(MathMode, f64)> = Vec::new();
    // The rate fits' samples: the dtype's GEMMs with contiguous operands, not skinny by the rule
    // of the fit in use.
    let rate_sample = |s: &Sample, dtype: &str| {
        s.dtype == dtype
            && narrow_role(s).is_none()
            && s.gemm.is_some_and(|g| !is_skinny(&g, row_fill))
    };
    for (mode, dtype) in [(MathMode::Fp32, "fp32"), (MathMode::Bf16, "bf16")] {
        if row_fill {
            let rows: Vec<(Vec<f64>, f64)> = of(Bench::Gemm)
                .filter(|s| rate_sample(s, dtype))
                .map(|s| {
                    let g = s.gemm.unwrap_or_default();
                    let (m, n, k, b) = (g[0] as f64, g[1] as f64, g[2] as f64, g[3] as f64);
                    let out = m * n * b * if dtype == "bf16" { 2.0 } else { 4.0 };
                    (
                        vec![2.0 * b * m * n * k, 2.0 * b * n * k, f64::from(s.ops)],
                        (s.t() - touch_of(out)).max(s.t() * 0.05),
                    )
                })
                .collect();
            if let Some(f) = fit_linear(
                &format!("gemm {dtype}"),
                vec!["s per FLOP", "s per fill-FLOP (2nk)", "s per op"],
                &rows,
            ) {
                if f.coef[0] > 0.0 {
                    gemm_rate.push((mode, 1.0 / f.coef[0], f.coef[2]));
                    fill_rows.push((mode, f.coef[1] / f.coef[0]));
                }
                fits.push(f);
            }
            continue;
        }
        let rows: Vec<(Vec<f64>, f64)> = of(Bench::Gemm)
            .filter(|s| rate_sample(s, dtype))
            .map(|s| {
                let g = s.gemm.unwrap_or_default();
                let (x, _) = gemm_math_time(
                    &Gemm {
                        m: g[0],
                        n: g[1],
                        k: g[2],
                        batch: g[3],
                    },
                    mode,
                    &unit,
                );
                let out = (g[0] * g[1] * g[3]) as f64 * if dtype == "bf16" { 2.0 } else { 4.0 };
                (
                    vec![x, f64::from(s.ops)],
                    (s.t() - touch_of(out)).max(s.t() * 0.05),
                )
            })
            .collect();
        if let Some(f) = fit_linear(
            &format!("gemm {dtype}"),
            vec!["s per tile-FLOP", "s per op"],
            &rows,
        ) {
            if f.coef[0] > 0.0 {
                gemm_rate.push((mode, 1.0 / f.coef[0], f.coef[1]));
            }
            fits.push(f);
        }
    }
    let fp32_rate = gemm_rate
        .iter()
        .find(|(m, ..)| *m == MathMode::Fp32)
        .map(|(_, r, _)| *r)
        .ok_or_else(|| Error::InvalidArgument {
            what: "calibration".into(),
            message: "no fp32 GEMM rate could be fitted".into(),
        })?;
    let bf16_rate = gemm_rate
        .iter()
        .find(|(m, ..)| *m == MathMode::Bf16)
        .map(|(_, r, _)| *r);

    // Narrow fills (CPUs with a row fill, samples timed in nn.Linear's layouts): per dtype and
    // class (`cost::narrow_class`, the model's own rule), the median over the class's samples
    // of s₀ = ((t − c)·R / (2·b·m·n·k) − 1)·s, s the narrow dimension, R and c the dtype's GEMM
    // rate and per-call time. The median, not a least-squares fit: the few products whose
    // output is larger than the caches are bound by writing it (the skinny bandwidth prices
    // that), and would pull a mean. All six classes or none, per dtype.
    let mut narrow_fill: Vec<(MathMode, [f64; 6])> = Vec::new();
    for (mode, dtype) in [(MathMode::Fp32, "fp32"), (MathMode::Bf16, "bf16")] {
        let Some(&(_, rate, c)) = gemm_rate.iter().find(|(m, ..)| *m == mode) else {
            continue;
        };
        if !row_fill {
            continue;
        }
        let mut per: [Vec<(f64, f64, f64)>; 6] = Default::default();
        for s in of(Bench::Gemm).filter(|s| s.dtype == dtype) {
            let (Some(role), Some(g)) = (narrow_role(s), s.gemm) else {
                continue;
            };
            let gemm = Gemm {
                m: g[0],
                n: g[1],
                k: g[2],
                batch: g[3],
            };
            let Some((class, dim)) = narrow_class(role, &gemm) else {
                continue;
            };
            // Classed GEMMs are unbatched.
            let flops = 2.0 * (g[0] * g[1] * g[2]) as f64;
            let base = c * f64::from(s.ops) + flops / rate;
            // (implied s₀, time at s₀ = 0, time per element of fill)
            let per_fill = flops / rate / dim as f64;
            per[class].push((((s.t() - base) / per_fill).max(0.0), base, per_fill));
        }
        if per.iter().any(|v| v.len() < 2) {
            continue;
        }
        let mut fills = [0.0; 6];
        for (class, v) in per.iter().enumerate() {
            let s0 = median(v.iter().map(|x| x.0).collect())
                .unwrap_or(0.0)
                .min(GEMM_FILL_ROWS.max);
            fills[class] = s0;
            let ts: Vec<(f64, f64)> = v
                .iter()
                .map(|&(implied, base, pf)| (base + s0 * pf, base + implied * pf))
                .collect();
            let mean = ts.iter().map(|x| x.1).sum::<f64>() / ts.len() as f64;
            let ss_res: f64 = ts.iter().map(|(p, t)| (p - t).powi(2)).sum();
            let ss_tot: f64 = ts.iter().map(|(_, t)| (t - mean).powi(2)).sum();
            fits.push(Fit {
                what: format!("narrow fill {dtype} {}", NARROW_CLASSES[class]),
                names: vec!["fill (elements of the narrow dimension)"],
                coef: vec![s0],
                ci95: vec![f64::NAN],
                r2: if ss_tot > 0.0 {
                    1.0 - ss_res / ss_tot
                } else {
                    f64::NAN
                },
                n: ts.len(),
                worst_rel: ts
                    .iter()
                    .map(|(p, t)| (p - t).abs() / t)
                    .fold(0.0, f64::max),
            });
        }
        narrow_fill.push((mode, fills));
    }

    // CPUs: the optimizer's fixed time per op, from single-tensor AdamW over adapter-sized lists
    // (calibrate's `optimizer adapters`: hundreds of tensors of a few to a few hundred KB),
    // where it, not the bytes, sets the time: t = bytes / B_a + c·ops per dtype. Only c is
    // kept (it holds the dispatch cost: a CPU runs the op on the issuing thread); the held-out
    // steps' adapter updates do not run at B_a (docs/validation.md, "A twelfth, thirteenth and
    // fourteenth run"). None without such samples (earlier sample files). [fp32, 16-bit].
    let mut optimizer_op: [Option<f64>; 2] = [None, None];
    if base.synchronous {
        for (i, dtype) in ["fp32", "bf16"].into_iter().enumerate() {
            let rows: Vec<(Vec<f64>, f64)> = of(Bench::Optimizer)
                .filter(|s| s.dtype == dtype && s.name.starts_with(ADAPTERS))
                .map(|s| (vec![s.bytes, f64::from(s.ops)], s.t()))
                .collect();
            if let Some(f) = fit_linear(
                &format!("optimizer adapters {dtype}"),
                vec!["s per byte", "s per op"],
                &rows,
            ) {
                optimizer_op[i] = Some(f.coef[1]);
                fits.push(f);
            }
        }
    }
    // CPUs: the optimizer's rate by tensor size, from lists of equal tensors (calibrate's
    // `optimizer sizes`): rate = bytes / (t − c·ops − first touch), the per-op time c of the
    // adapter fit above and the first touch of the two fresh outputs a tensor's update
    // writes (its square and square root; the model's sqrt and quotient) taken off, as the
    // model adds both. A sample's tensor size is bytes / (2.5·ops): 20 bytes an element over
    // 8 ops a tensor. [fp32, 16-bit] tables of (tensor bytes, bytes/s), sizes increasing.
    let mut size_rates: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    if base.synchronous {
        for (i, dtype) in ["fp32", "bf16"].into_iter().enumerate() {
            let c = optimizer_op[i].unwrap_or(0.0);
            for s in of(Bench::Optimizer)
                .filter(|s| s.dtype == dtype && s.name.starts_with(UNIFORM) && s.ops > 0)
            {
                let ops = f64::from(s.ops);
                let tensor = s.bytes / (2.5 * ops);
                let t = s.t() - c * ops - 2.0 * (ops / 8.0) * touch_of(tensor);
                if t <= 0.0 {
                    continue;
                }
                let rate = s.bytes / t;
                size_rates[i].push((tensor, rate));
                fits.push(Fit {
                    what: format!("optimizer {} KiB {dtype}", (tensor / 1024.0).round()),
                    names: vec!["s per byte"],
                    coef: vec![1.0 / rate],
                    ci95: vec![f64::NAN],
                    r2: 1.0,
                    n: 1,
                    worst_rel: 0.0,
                });
            }
            size_rates[i].sort_by(|a, b| a.0.total_cmp(&b.0));
            size_rates[i].dedup_by(|a, b| a.0 == b.0);
        }
    }
    let size_line = match &size_rates {
        [f32_rates, f16_rates] if !f32_rates.is_empty() => {
            let table = |v: &[(f64, f64)]| {
                v.iter()
                    .map(|(b, r)| format!("[{}, {:.3}]", b / 1048576.0, r / 1e9))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut t = format!("optimizer-size-gbps = [{}]\n", table(f32_rates));
            if !f16_rates.is_empty() {
                t.push_str(&format!(
                    "optimizer-size-bf16-gbps = [{}]\n",
                    table(f16_rates)
                ));
            }
            t.push_str(
                "optimizer-size-source = \"calibrated: single-tensor AdamW over lists of equal \
                 tensors, one size a list, bytes / (t - per-op time - first touch)\"\n",
            );
            t
        }
        _ => String::new(),
    };
    // Bandwidth per kind: t = bytes / B + c·ops.
    // With the optimizer's per-op time c known, its dense lists fit only the bandwidth:
    // t − c·ops = bytes / B.
    let bw_fit = |bench: Bench, label: &str, filter: &dyn Fn(&Sample) -> bool| -> Option<Fit> {
        let known = |s: &Sample| {
            optimizer_op[usize::from(s.dtype == "bf16")].filter(|_| bench == Bench::Optimizer)
        };
        let samples: Vec<&Sample> = of(bench)
            .filter(|s| filter(s) && !s.name.starts_with(ADAPTERS) && !s.name.starts_with(UNIFORM))
            .collect();
        match samples.first().and_then(|s| known(s)) {
            Some(c) => {
                let rows: Vec<(Vec<f64>, f64)> = samples
                    .iter()
                    .map(|s| (vec![s.bytes], s.t() - c * f64::from(s.ops)))
                    .collect();
                fit_linear(label, vec!["s per byte"], &rows)
            }
            None => {
                let rows: Vec<(Vec<f64>, f64)> = samples
                    .iter()
                    .map(|s| (vec![s.bytes, f64::from(s.ops)], s.t()))
                    .collect();
                fit_linear(label, vec!["s per byte", "s per op"], &rows)
            }
        }
    };
    let skinny = need(
        bw_fit(Bench::Gemm, "skinny gemm", &|s| {
            narrow_role(s).is_none() && s.gemm.is_some_and(|g| is_skinny(&g, row_fill))
        }),
        "skinny GEMMs",
    )?;
    // (bench, half precision, bandwidth) per fitted kind and dtype.
    let mut kind_bw: Vec<(Bench, bool, f64)> = Vec::new();
    let mut per_op: Vec<f64> = Vec::new();
    for (bench, label) in KINDS {
        // Casts convert between the two: one fit for both directions.
        let dtypes: &[Option<&str>] = if bench == Bench::Cast {
            &[None]
        } else {
            &[Some("fp32"), Some("bf16")]
        };
        for &dtype in dtypes {
            let name = match dtype {
                Some("bf16") => format!("{label} bf16"),
                Some(_) => format!("{label} fp32"),
                None => label.to_string(),
            };
            let filter = |s: &Sample| dtype.is_none_or(|d| s.dtype == d);
            if let Some(f) = bw_fit(bench, &name, &filter) {
                if f.coef[0] > 0.0 {
                    let bw = 1.0 / f.coef[0];
                    match dtype {
                        None => {
                            kind_bw.push((bench, false, bw));
                            kind_bw.push((bench, true, bw));
                        }
                        Some(d) => kind_bw.push((bench, d == "bf16", bw)),
                    }
                }
                // The launch floor is the median intercept of the memory-bound fits; tanh is
                // bound by its arithmetic, so its intercept does not vote.
                // The optimizer's own per-op time, where calibrated, does not vote either.
                if bench != Bench::Transcendental && f.coef.len() > 1 {
                    per_op.push(f.coef[1]);
                }
                fits.push(f);
            }
        }
    }
    let elementwise_bw = kind_bw
        .iter()
        .find(|(b, half, _)| *b == Bench::Elementwise && !half)
        .map(|(.., v)| *v)
        .ok_or_else(|| Error::InvalidArgument {
            what: "calibration".into(),
            message: "no elementwise bandwidth could be fitted".into(),
        })?;
    let skinny_bw = if skinny.coef[0] > 0.0 {
        1.0 / skinny.coef[0]
    } else {
        elementwise_bw
    };
    fits.push(skinny);

    // Attention: t = flops / R_attn + c_tile·tiles + c·ops, per direction and mode, R_attn as
    // a fraction of that mode's GEMM rate and c_tile the fixed time per tile (query block ×
    // key block of a (batch × head) slice, `cost::attention_tiles`), for samples that record
    // their shape; older sample files have none and fit t = flops / R_attn + c·ops, no tile
    // cost. [forward, backward] × [fp32, bf16].
    let mut attention_eff: [[Option<f64>; 2]; 2] = [[None; 2]; 2];
    let mut attention_tile: [[Option<f64>; 2]; 2] = [[None; 2]; 2];
    for (dir, bench, label) in [
        (0, Bench::Attention, "attention"),
        (1, Bench::AttentionBackward, "attention backward"),
    ] {
        for (prec, dtype, rate) in [(0, "fp32", Some(fp32_rate)), (1, "bf16", bf16_rate)] {
            let samples: Vec<&Sample> = of(bench).filter(|s| s.dtype == dtype).collect();
            let shaped = !samples.is_empty() && samples.iter().all(|s| s.gemm.is_some());
            let rows: Vec<(Vec<f64>, f64)> = samples
                .iter()
                .map(|s| {
                    let mut x = vec![s.flops];
                    if let (true, Some(g)) = (shaped, s.gemm) {
                        x.push(costsim_model::cost::attention_tiles(g[0], g[3]));
                    }
                    x.push(f64::from(s.ops));
                    (x, s.t())
                })
                .collect();
            let names = if shaped {
                vec!["s per FLOP", "s per tile", "s per op"]
            } else {
                vec!["s per FLOP", "s per op"]
            };
            if let Some(f) = fit_linear(&format!("{label} {dtype}"), names, &rows) {
                if let (Some(rate), true) = (rate, f.coef[0] > 0.0) {
                    attention_eff[dir][prec] = Some(((1.0 / f.coef[0]) / rate).min(1.0));
                    if shaped {
                        attention_tile[dir][prec] = Some(f.coef[1]);
                    }
                }
                fits.push(f);
            }
        }
    }
    let attention = attention_eff[0][0].unwrap_or(base.attention_efficiency);
    let attn_line = |key: &str, v: Option<f64>| -> String {
        v.map_or(String::new(), |e| format!("{key} = {e:.5}\n"))
    };
    let attention_more = attn_line("attention-bf16", attention_eff[0][1])
        + &attn_line("attention-backward", attention_eff[1][0])
        + &attn_line("attention-backward-bf16", attention_eff[1][1]);

    // Fixed cost per op: the median intercept of the memory-bound kinds. On a CPU the op runs on
    // the issuing thread, so it holds the dispatch cost: the device floor is what remains.
    let mut ops_c = per_op.clone();
    ops_c.sort_by(f64::total_cmp);
    let fixed = ops_c.get(ops_c.len() / 2).copied().unwrap_or(dispatch_s);
    let floor_s = if base.synchronous {
        (fixed - dispatch_s).max(0.05e-6)
    } else {
        fixed.max(0.05e-6)
    };
    let node_host_s = node_s.map_or(base.host.autograd_node_s, |n| (n - floor_s).max(dispatch_s));
    let optimizer_op_line = match optimizer_op {
        [Some(c32), c16] => {
            let op = |c: f64| (c - dispatch_s).max(0.05e-6) * 1e6;
            format!(
                "optimizer-op-us = {:.4}\noptimizer-op-bf16-us = {:.4}\n\
                 optimizer-op-source = \"calibrated: per-op term of single-tensor AdamW over \
                 adapter-sized parameter lists (t = bytes/B + c·ops), minus the dispatch cost\"\n",
                op(c32),
                op(c16.unwrap_or(c32))
            )
        }
        _ => String::new(),
    };

    // Peak bandwidth: the best achieved by any kind; each kind's efficiency relative to it.
    let peak_bw = kind_bw
        .iter()
        .map(|(.., v)| *v)
        .chain([skinny_bw])
        .fold(0.0, f64::max);
    let eff_of = |b: Bench, half: bool| -> Option<f64> {
        kind_bw
            .iter()
            .find(|(k, h, _)| *k == b && *h == half)
            .map(|(.., v)| (v / peak_bw).min(1.0))
    };
    // Per-call GEMM setup beyond the generic per-op cost (oneDNN on CPUs), per dtype.
    let op_cost = if base.synchronous {
        dispatch_s + floor_s
    } else {
        floor_s
    };
    let gemm_floor = |mode: MathMode| -> f64 {
        gemm_rate
            .iter()
            .find(|(m, ..)| *m == mode)
            .map_or(0.0, |(.., c)| (c - op_cost).max(0.0))
    };
    let fmt_fit = |f: &Fit| -> String {
        format!(
            "R² {:.3}, n {}, worst {:.0}%",
            f.r2,
            f.n,
            100.0 * f.worst_rel
        )
    };
    let find = |what: &str| fits.iter().find(|f| f.what == what);
    let src = |what: &str, extra: &str| -> String {
        match find(what) {
            Some(f) => format!("calibrated: {extra}{} ({})", what, fmt_fit(f)),
            None => format!("uncalibrated: no {what} samples; from {}", base.origin),
        }
    };
    let date = run
        .timestamp
        .get(..10)
        .unwrap_or(&run.timestamp)
        .to_string();
    let tflops = |r: f64| r / 1e12;
    let bf16 = bf16_rate.unwrap_or(base.peak_bf16_flops * base.gemm_efficiency);
    let kinds_line = |b: Bench, key: &str| -> String {
        let mut s = String::new();
        if let Some(e) = eff_of(b, false) {
            s.push_str(&format!("{key} = {e:.4}\n"));
        }
        if let Some(e) = eff_of(b, true) {
            s.push_str(&format!("{key}-bf16 = {e:.4}\n"));
        }
        s
    };
    // Every string from outside (the profile name, the device and library names of the
    // samples file, the base profile's origin) goes through the toml crate's string encoder, and
    // into comments only with control characters replaced, so no name can add keys or lines.
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let comment = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let toml = format!(
        r#"# Calibrated by `costsim calibrate` from {n} microbenchmarks on {device_c} ({date_c}).
# Peaks are the achieved GEMM rates and the best achieved bandwidth (efficiency 1 = that rate);
# each value's source gives its fit. Not measured here and kept from {base_origin_c}: memory,
# compute units, L2, and the Python-side host costs (python-op, module-call, peft-module).
[device]
name = {name_q}
display-name = {display_q}
kind = "{kind}"
sms = {sms}
boost-mhz = {mhz}
memory-gib = {mem}
l2-mib = {l2}
source = {from_base_q}

[peak]
fp32-tflops = {fp32:.6}
tf32-tflops = {tf32:.6}
bf16-tflops = {bf16:.6}
fp16-tflops = {fp16:.6}
bandwidth-gbps = {bw:.3}
source = "calibrated: achieved rates — fp32/tf32 from the gemm fp32 fit, bf16/fp16 from {bf16_src}; bandwidth the best per-kind fit"

[efficiency]
gemm = 1.0
gemm-source = "calibrated: the peaks are achieved rates"
bandwidth = {eff_elem:.4}
bandwidth-source = {elem_src}
attention = {attention:.5}
{attention_more}attention-source = {attn_src}
small-gemm-bandwidth = {skinny_eff:.4}
small-gemm-bandwidth-source = {skinny_src}

[efficiency.kinds]
{kinds}source = "calibrated: per-kind NNLS t = bytes/B + c·ops; see costsim calibrate's report"

[overheads]
launch-floor-us = {floor:.4}
launch-floor-source = "calibrated: median per-op intercept of the memory-bound fits{floor_note}"
graph-launch-floor-us = {floor:.4}
graph-launch-floor-source = "calibrated: as launch-floor (not measured separately)"
gemm-floor-us = {gf32:.4}
gemm-floor-bf16-us = {gf16:.4}
gemm-floor-source = "calibrated: intercept of the gemm fits minus the per-op cost (per-call GEMM setup)"
{optimizer_op_line}{size_line}{fill}{narrow}{tiles}{touch}

[host]
python-op-us = {py:.3}
python-op-source = {not_python_q}
cpp-op-us = {cpp:.4}
cpp-op-source = "calibrated: one-element op in a dispatch loop (median of {nd} runs)"
module-call-us = {mc:.3}
module-call-source = {not_python_q}
peft-module-us = {peft:.3}
peft-module-source = {not_python_q}
autograd-node-us = {node:.4}
autograd-node-source = {node_src}

[calibration]
date = {date_q}
device = {device_q}
libraries = {libraries_q}
fit = "NNLS per kernel kind on 1/t-weighted rows; {nfit} fits, {nstable} stable samples, {nunstable} unstable left out"
"#,
        n = run.samples.len(),
        device_c = comment(&run.device),
        date_c = comment(&date),
        base_origin_c = comment(&base.origin),
        name_q = q(name),
        display_q = q(&format!("{} (calibrated)", base.display_name)),
        from_base_q = q(&format!("from {}", base.origin)),
        not_python_q = q(&format!("not calibrated (Python): from {}", base.origin)),
        date_q = q(&date),
        device_q = q(&run.device),
        libraries_q = q(&format!(
            "torch {} via tch 0.24; costsim {}",
            run.torch_version,
            run.git_commit.get(..12).unwrap_or(&run.git_commit)
        )),
        kind = if base.synchronous { "cpu" } else { "gpu" },
        sms = base.sms,
        mhz = base.boost_mhz,
        mem = base.memory_bytes / f64::from(1u32 << 30),
        l2 = base.l2_bytes / f64::from(1u32 << 20),
        fp32 = tflops(fp32_rate),
        tf32 = tflops(if base.synchronous {
            fp32_rate
        } else {
            fp32_rate * base.peak_tf32_flops / base.peak_fp32_flops
        }),
        bf16 = tflops(bf16),
        fp16 = tflops(bf16 * base.peak_fp16_flops / base.peak_bf16_flops),
        bf16_src = if bf16_rate.is_some() {
            "the gemm bf16 fit"
        } else {
            "the base profile (no bf16 samples)"
        },
        bw = peak_bw / 1e9,
        eff_elem = (elementwise_bw / peak_bw).min(1.0),
        elem_src = q(&src("elementwise fp32", "streaming kernels, ")),
        attention = attention,
        attn_src = q(&if attention_eff[0][0].is_none() {
            format!("uncalibrated: no attention samples; from {}", base.origin)
        } else {
            "calibrated: attention fits (forward, backward; fp32, bf16) relative to the GEMM rate \
             of the same dtype"
                .to_string()
        }),
        attention_more = attention_more,
        skinny_eff = (skinny_bw / peak_bw).min(1.0),
        skinny_src = q(&src("skinny gemm", "")),
        kinds = KINDS
            .iter()
        .map(|(b, k)| kinds_line(*b, k))
        .collect::<String>(),
        floor = floor_s * 1e6,
        gf32 = gemm_floor(MathMode::Fp32) * 1e6,
        touch = match touch_bps {
            Some(bps) if base.synchronous => format!(
                "first-touch-gbps = {:.3}\nfirst-touch-min-mib = 32\nfirst-touch-source = \"calibrated: filling fresh 48-128 MiB tensors minus existing ones (median of {} runs); 32 MiB is glibc's largest mmap threshold\"\n",
                bps / 1e9,
                of(Bench::FirstTouch).count()
            ),
            _ => String::new(),
        },
        gf16 = gemm_floor(MathMode::Bf16) * 1e6,
        optimizer_op_line = optimizer_op_line,
        size_line = size_line,
        fill = {
            let of_mode = |m: MathMode| fill_rows.iter().find(|(x, _)| *x == m).map(|(_, r)| *r);
            match of_mode(MathMode::Fp32) {
                Some(f32_rows) => {
                    let mut t = format!("gemm-fill-rows = {f32_rows:.3}\n");
                    if let Some(r) = of_mode(MathMode::Bf16) {
                        t.push_str(&format!("gemm-fill-rows-bf16 = {r:.3}\n"));
                    }
                    t.push_str(
                        "gemm-fill-source = \"calibrated: per-call fill of the gemm fits in rows \
                         of A, t = (2mnk + m0·2nk)/R + c·ops, with GEMMs of 1-32 rows among the \
                         samples\"\n",
                    );
                    t
                }
                None => String::new(),
            }
        },
        narrow = {
            let list = |m: MathMode| {
                narrow_fill.iter().find(|(x, _)| *x == m).map(|(_, f)| {
                    f.iter()
                        .map(|v| format!("{v:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            };
            match list(MathMode::Fp32) {
                Some(f32_list) => {
                    let mut t = format!("gemm-narrow-fill = [{f32_list}]\n");
                    if let Some(l) = list(MathMode::Bf16) {
                        t.push_str(&format!("gemm-narrow-fill-bf16 = [{l}]\n"));
                    }
                    t.push_str(&format!(
                        "gemm-narrow-fill-source = \"calibrated: per class ({}), the median over \
                         LoRA's rank-r products timed in nn.Linear's layouts of the narrow \
                         dimension's fill s0 = ((t - c)R/(2mnk) - 1)s\"\n",
                        NARROW_CLASSES.join(", ")
                    ));
                    t
                }
                None => String::new(),
            }
        },
        tiles = {
            let keys = [
                ("attention-tile-us", attention_tile[0][0]),
                ("attention-tile-bf16-us", attention_tile[0][1]),
                ("attention-backward-tile-us", attention_tile[1][0]),
                ("attention-backward-tile-bf16-us", attention_tile[1][1]),
            ];
            let mut t: String = keys
                .iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k} = {:.4}\n", v * 1e6)))
                .collect();
            if !t.is_empty() {
                t.push_str(
                    "attention-tile-source = \"calibrated: per-tile term of the attention fits, \
                     t = F/R + c_tile·tiles + c·ops (tiles as PyTorch's CPU flash attention \
                     blocks a slice)\"\n",
                );
            }
            t
        },
        floor_note = if base.synchronous {
            ", minus the dispatch cost (a CPU runs the op on the issuing thread)"
        } else {
            ""
        },
        py = base.host.python_op_s * 1e6,
        cpp = dispatch_s * 1e6,
        nd = of(Bench::Dispatch).count(),
        mc = base.host.module_call_s * 1e6,
        peft = base.host.peft_module_s * 1e6,
        node = node_host_s * 1e6,
        node_src = q(&if node_s.is_some() {
            "calibrated: backward of a chain of one-element ops, per node, minus the launch floor"
                .to_string()
        } else {
            format!("uncalibrated: from {}", base.origin)
        }),
        nfit = fits.len(),
        nstable = stable.len(),
        nunstable = unstable.len(),
    );
    // The result must load as a profile, under the name asked for.
    let loaded = costsim_hardware::parse_profile(&toml, "calibrated profile")?;
    if loaded.name != name {
        return Err(Error::InvalidArgument {
            what: "--name".into(),
            message: format!(
                "the written profile reads back as {:?}, not {name:?}; choose a plain name",
                loaded.name
            ),
        });
    }
    Ok(Calibration {
        fits,
        unstable,
        profile_toml: toml,
    })
}

/// A readable report of the fits.
pub fn render(c: &Calibration) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:>4} {:>7} {:>7}  coefficients (95% CI)",
        "fit", "n", "R²", "worst"
    );
    for f in &c.fits {
        let coefs: Vec<String> = f
            .names
            .iter()
            .zip(f.coef.iter().zip(&f.ci95))
            .map(|(n, (v, ci))| {
                if ci.is_finite() {
                    format!("{v:.4e} ± {ci:.1e} {n}")
                } else {
                    format!("{v:.4e} {n}")
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<18} {:>4} {:>7.4} {:>6.0}%  {}",
            f.what,
            f.n,
            f.r2,
            100.0 * f.worst_rel,
            coefs.join("; ")
        );
    }
    if c.unstable.is_empty() {
        let _ = writeln!(
            out,
            "all samples stable (spread ≤ {:.0}%)",
            100.0 * MAX_SPREAD
        );
    } else {
        let _ = writeln!(
            out,
            "{} unstable samples left out (spread > {:.0}% after repeats):",
            c.unstable.len(),
            100.0 * MAX_SPREAD
        );
        for (name, spread) in &c.unstable {
            let _ = writeln!(out, "  {name}: spread {:.0}%", 100.0 * spread);
        }
    }
    out
}

#[cfg(test)]
#[path = "fit_tests.rs"]
mod fit_tests;
