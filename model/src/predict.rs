//! Prediction of one configuration: the graph, its costs, the simulated timeline, the memory
//! footprint, and the report rows (phases, per layer, per kernel).
//!
//! Memory model (docs/model.md): weights (+ LoRA adapters / PaCA's P), gradients and optimizer
//! states of the trainable parameters in the master dtype, activations saved for backward as the
//! graph's tracer recorded them, and the largest transient tensor. Peaks are taken at the end of
//! forward, while backward frees saved tensors scope by scope and fills gradients, and in the
//! optimizer (foreach AdamW's temporary sqrt list, the largest parameter group's; single-tensor
//! AdamW's largest sqrt and quotient).

use crate::arch::ModelConfig;
use crate::cost::{Bound, GemmMemo};
use crate::graph::{self, KernelKind, Phase, Scope, ScopeGraph, StepGraph};
use crate::method::{MethodKind, MethodSpec};
use crate::simulate::{self, Span};
use crate::workload::{Optimizer, Runtime, Workload};
use costsim_hardware::Profile;
use serde::Serialize;

/// Device memory assumed taken by the CUDA context and the caching allocator's reserve before
/// any tensor: uncalibrated (docs/model.md), 1 GiB.
pub const RESERVED_BYTES: f64 = 1024.0 * 1024.0 * 1024.0;

/// Everything a prediction needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub model: ModelConfig,
    pub method: MethodSpec,
    pub workload: Workload,
    pub hw: Profile,
}

/// A configuration by reference: what a sweep assembles per point without cloning models and
/// profiles.
#[derive(Debug, Clone, Copy)]
pub struct ConfigRef<'a> {
    pub model: &'a ModelConfig,
    pub method: &'a MethodSpec,
    pub workload: &'a Workload,
    pub hw: &'a Profile,
}

impl Config {
    pub fn as_ref(&self) -> ConfigRef<'_> {
        ConfigRef {
            model: &self.model,
            method: &self.method,
            workload: &self.workload,
            hw: &self.hw,
        }
    }
}

/// What to include beyond the summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Detail {
    pub per_layer: bool,
    pub kernels: bool,
}

/// Counts per phase.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct PhaseCounts {
    pub forward: u64,
    pub backward: u64,
    pub optimizer: u64,
}

/// One phase of the step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseReport {
    pub phase: Phase,
    /// Wall time of the phase: per micro-batch for forward/backward, per step for optimizer.
    pub time_ms: f64,
    pub gpu_busy_ms: f64,
    /// Share of the phase the GPU spent waiting on the host.
    pub host_wait_share: f64,
    pub launches: u64,
    pub flops: f64,
    pub bytes: f64,
    /// Device time by bound, ms: compute, memory, launch, host (GPU waiting).
    pub compute_ms: f64,
    pub memory_ms: f64,
    pub launch_ms: f64,
    pub host_ms: f64,
}

/// Memory footprint, bytes.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Memory {
    pub weights_bytes: f64,
    pub gradients_bytes: f64,
    pub optimizer_state_bytes: f64,
    pub activations_bytes: f64,
    pub forward_peak_bytes: f64,
    pub backward_peak_bytes: f64,
    pub optimizer_peak_bytes: f64,
    pub peak_bytes: f64,
    pub reserved_bytes: f64,
    pub capacity_bytes: f64,
    pub fits: bool,
    /// peak + reserved − capacity when it does not fit, else 0.
    pub shortfall_bytes: f64,
}

/// One row of the per-layer breakdown (embedding, each block, head, optimizer).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LayerRow {
    /// `embedding`, `layer.N`, `head`, `optimizer`.
    pub scope: String,
    pub trained: bool,
    pub trainable_params: u64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    pub forward_kernels: u64,
    pub backward_kernels: u64,
    pub optimizer_kernels: u64,
    pub flops: f64,
    pub bytes: f64,
    pub saved_bytes: f64,
}

/// One kernel of the graph (first micro-batch, plus the optimizer).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KernelRow {
    pub phase: Phase,
    /// Index within its phase, issue order.
    pub index: usize,
    pub name: &'static str,
    pub module: String,
    pub kind: KernelKind,
    pub dtype: &'static str,
    pub flops: f64,
    pub bytes_read: f64,
    pub bytes_written: f64,
    pub launches: u32,
    /// GEMM shape m×n×k (×batch) when a GEMM.
    pub shape: Option<String>,
    pub device_us: f64,
    pub host_us: f64,
    pub bound: Bound,
    /// Indices (within the phase) of the kernels it reads from.
    pub deps: Vec<usize>,
    pub recompute: bool,
    /// Bytes it re-reads from outputs written within the last L2-size of traffic, which costsim
    /// prices at DRAM bandwidth like every other byte ([`crate::l2`]).
    pub l2_reread_bytes: f64,
    /// Device time those re-reads cost at DRAM price, µs: the most an L2 hit could save.
    pub l2_bound_us: f64,
}

/// Training-time estimate from `--tokens` / `--samples`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrainingEstimate {
    pub optimizer_steps: u64,
    pub seconds: f64,
    /// h:mm:ss
    pub wall_clock: String,
}

/// The prediction of one method.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    pub method: String,
    pub kind: MethodKind,
    pub rank: u64,
    pub trained_layers: String,
    pub targets: String,
    pub trainable_params: u64,
    pub total_params: u64,
    /// Kernel launches: forward and backward per micro-batch, optimizer per step.
    pub kernels: PhaseCounts,
    /// FLOPs of one optimizer step (all micro-batches and the optimizer).
    pub flops: f64,
    /// Bytes read + written in one optimizer step.
    pub bytes: f64,
    /// Per micro-batch.
    pub forward_ms: f64,
    /// Per micro-batch.
    pub backward_ms: f64,
    /// Per optimizer step.
    pub optimizer_ms: f64,
    /// Per optimizer step: GPU time the training loop's own host work adds (a Trainer's
    /// fetch, `model.train()`, FLOP count, scheduler; 0 for a bare loop). docs/model.md.
    pub loop_ms: f64,
    /// The loop's host work per optimizer step, whether or not the GPU waits for it.
    pub loop_host_ms: f64,
    /// nn.Modules of the model as transformers and peft build it (what a Trainer walks).
    pub nn_modules: u64,
    /// One optimizer step: grad_accum × (forward + backward) + optimizer + loop.
    pub step_ms: f64,
    pub tokens_per_s: f64,
    pub peak_memory_bytes: f64,
    pub fits: bool,
    pub dominant_bound: Bound,
    pub phases: Vec<PhaseReport>,
    pub memory: Memory,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingEstimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_layer: Option<Vec<LayerRow>>,
    #[serde(skip_serializing_if = "Option::is_none", rename = "kernel_rows")]
    pub kernel_rows: Option<Vec<KernelRow>>,
}

pub(crate) fn memory(cfg: ConfigRef, g: &StepGraph) -> Memory {
    footprint(cfg.model, cfg.method, cfg.workload, g).on(cfg.hw)
}

/// [`memory`] on no device yet (capacity 0; take it [`Memory::on`] one): everything of the
/// footprint but whether it fits depends on the model, the method, the workload and the graph
/// only, so a sweep walks it once a point for all its devices.
pub(crate) fn footprint(
    model: &ModelConfig,
    method: &MethodSpec,
    w: &Workload,
    g: &StepGraph,
) -> Memory {
    footprint_counted(model, method, w, g, ParamCounts::of(model, method))
}

/// A configuration's parameter counts, read by its memory footprint and by its summary: a
/// sweep counts them once a point ([`footprint_counted`], [`summarize_with_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParamCounts {
    /// [`MethodSpec::trainable_params`].
    pub trainable: u64,
    /// [`ModelConfig::total_params`].
    pub total: u64,
}

impl ParamCounts {
    pub(crate) fn of(model: &ModelConfig, method: &MethodSpec) -> Self {
        Self {
            trainable: method.trainable_params(model),
            total: model.total_params(),
        }
    }
}

/// [`footprint`] with the parameters already counted (`counts`: [`ParamCounts::of`] the same
/// model and method).
pub(crate) fn footprint_counted(
    model: &ModelConfig,
    method: &MethodSpec,
    w: &Workload,
    g: &StepGraph,
    counts: ParamCounts,
) -> Memory {
    footprint_walk(model, method, w, g, true, counts)
}

/// [`footprint`], walking runs of identical layers at once where that is exact (`by_runs`) or
/// every layer one by one (what `footprint` did until 2026-12-01, and its tests' reference).
fn footprint_walk(
    model: &ModelConfig,
    method: &MethodSpec,
    w: &Workload,
    g: &StepGraph,
    by_runs: bool,
    counts: ParamCounts,
) -> Memory {
    let trainable = counts.trainable as f64;
    let p = w.precision.param_dtype().size();
    let master = method.master_dtype(w.precision).size();
    let extra_params = match method.kind {
        MethodKind::Full => 0.0,
        MethodKind::Lora | MethodKind::Paca => trainable,
    };
    let weights = counts.total as f64 * p + extra_params * master;
    let grads = trainable * master;
    let states = trainable * master * f64::from(w.optimizer.states());
    let kept = |s: &ScopeGraph| s.saved_bytes + s.checkpoint_bytes;
    // The layers from the last to the first as runs of one class (identical layers next to
    // each other, `together`) or one by one: (class, count).
    let runs_rev = |together: bool| {
        let classes = &g.layer_class;
        let mut end = classes.len();
        std::iter::from_fn(move || {
            let c = *classes.get(end.checked_sub(1)?)?;
            let n = if together {
                classes[..end].iter().rev().take_while(|&&x| x == c).count()
            } else {
                1
            };
            end -= n;
            Some((c, n))
        })
    };
    // Every byte count here is an integer below 2⁵⁰ (tensor sizes times whole dtype sizes), so
    // every sum and difference below is exact in f64, in any order: a run of n identical
    // layers adds n times its bytes at once, and its backward peak, a maximum of functions
    // linear in the layer's position, lies at the run's first or last layer. Where a count is
    // not such an integer (none of today's recipes makes one), the layers are walked one by
    // one, as before 2026-12-01. A test compares the two walks bit for bit
    // (`footprint_by_runs_equals_the_walk_layer_by_layer`).
    // (A round trip through i64, where `fract` would call libm's trunc on baseline x86-64.)
    let whole = |v: f64| v.abs() < (1u64 << 50) as f64 && (v as i64) as f64 == v;
    let scope_whole = |s: &ScopeGraph| {
        whole(kept(s))
            && whole(s.transient_bytes)
            && whole(s.saved_bytes)
            && whole(s.backward_working_bytes)
            && whole(s.trainable as f64)
    };
    let exact = by_runs
        && whole(weights)
        && whole(states)
        && whole(grads)
        && whole(master)
        && g.layer_graphs.iter().all(scope_whole)
        && scope_whole(&g.embedding)
        && scope_whole(&g.head);
    // Walked three times below: found once (one entry a run; a layer each where not `exact`).
    let runs: smallvec::SmallVec<[(usize, usize); 8]> = runs_rev(exact).collect();
    let activations: f64 = if exact {
        kept(&g.embedding)
            + runs
                .iter()
                .map(|&(c, n)| n as f64 * kept(&g.layer_graphs[c]))
                .sum::<f64>()
            + kept(&g.head)
    } else {
        std::iter::once(&g.embedding)
            .chain((0..g.layer_class.len()).map(|i| g.layer(i)))
            .chain(std::iter::once(&g.head))
            .map(kept)
            .sum()
    };
    // A maximum: the same in any order.
    let transient = runs
        .iter()
        .map(|&(c, _)| &g.layer_graphs[c])
        .chain([&g.embedding, &g.head])
        .map(|s| s.transient_bytes)
        .fold(0.0, f64::max);
    let accum_grads = if w.grad_accum > 1 { grads } else { 0.0 };
    let forward_peak = weights + states + accum_grads + activations + transient;
    // Backward walks the scopes in reverse: each frees what it kept and adds its gradients.
    let mut remaining = activations;
    let mut grads_so_far = accum_grads;
    let mut backward_peak: f64 = 0.0;
    let grad_share = if trainable > 0.0 {
        grads / trainable
    } else {
        0.0
    };
    // A tied LM head (GPT-2's wte) gets two gradients, the head's and the embedding's, which
    // autograd sums out of place before the weight's `AccumulateGrad` (torch/csrc/autograd/
    // input_buffer.cpp): the head's V×d part is held from the head's backward to the
    // embedding's, where both parts and their sum are alive at once. Measured on torch 2.11.0
    // (docs/model.md, "Memory"): a 51.46 MB `add` of two [V, d] fp32 gradients, three V×d
    // tensors alive at the backward's peak of gpt2-tiny at 1 × 128; with gradient accumulation
    // the sum is then added into `.grad` in place.
    let tied = if model.tied_embeddings && method.trains_embedding(model) {
        (model.vocab * model.hidden) as f64 * master
    } else {
        0.0
    };
    let own_of = |s: &ScopeGraph| {
        if w.grad_accum == 1 {
            s.trainable as f64 * grad_share
        } else {
            0.0
        }
    };
    // One scope's backward from (remaining, gradients so far): its peak.
    let at_peak = |s: &ScopeGraph, remaining: f64, grads_before: f64, grads_after: f64| {
        if s.backward_working_bytes > 0.0 {
            // A recipe that knows its working set (the loss) peaks before its own weight
            // gradients exist; they appear once that working set has shrunk.
            (weights + states + remaining + grads_before + s.backward_working_bytes)
                .max(weights + states + remaining + grads_after)
        } else {
            // Under checkpointing the scope's recomputed activations live during its backward.
            let working = s
                .transient_bytes
                .max(2.0 * s.saved_bytes.min(s.transient_bytes));
            // The scope frees what it kept while its weight gradients appear: the peak lies
            // between its start (all kept, none of its gradients) and its end.
            let start = weights + states + remaining + grads_before + working;
            let end = weights + states + (remaining - kept(s)) + grads_after + working;
            start.max(end)
        }
    };
    // The scopes in reverse, the layers as runs (one layer a run unless `exact`).
    let reversed = std::iter::once((&g.head, 1))
        .chain(runs.iter().map(|&(c, n)| (&g.layer_graphs[c], n)))
        .chain(std::iter::once((&g.embedding, 1)));
    for (s, n) in reversed {
        if s.backward.kernels.is_empty() {
            continue;
        }
        let grads_before = grads_so_far;
        let own = own_of(s);
        grads_so_far += own;
        if std::ptr::eq(s, &g.head) {
            // The head's part of the tied gradient, held until the embedding's backward.
            grads_so_far += tied;
        }
        if std::ptr::eq(s, &g.embedding) && tied > 0.0 {
            // The embedding's part and the sum join the head's part (the sum is the weight's
            // gradient, counted in `own` without accumulation); then both parts are freed.
            let at_sum = weights
                + states
                + (remaining - kept(s))
                + grads_before
                + 2.0 * tied
                + (own - tied).max(0.0);
            backward_peak = backward_peak.max(at_sum);
            grads_so_far -= tied;
        }
        backward_peak = backward_peak.max(at_peak(s, remaining, grads_before, grads_so_far));
        if n > 1 {
            // The run's last layer (exact: see above); between, no higher peak.
            let m = (n - 1) as f64;
            let (r, before) = (remaining - m * kept(s), grads_before + m * own);
            backward_peak = backward_peak.max(at_peak(s, r, before, before + own));
            grads_so_far = grads_before + n as f64 * own;
        }
        remaining -= n as f64 * kept(s);
    }
    let temp = match w.optimizer {
        // `_foreach_sqrt`'s list: one temporary per element of a parameter group, freed
        // before the next group's update (a Trainer's two groups: the larger one's).
        Optimizer::AdamwForeach => g
            .optimizer
            .kernels
            .iter()
            .filter(|k| k.name == "_foreach_sqrt")
            .map(|k| k.bytes_written)
            .fold(0.0, f64::max),
        // The largest tensor's sqrt and its quotient, alive together while the division runs.
        Optimizer::AdamwSingle => {
            2.0 * g.trainable_tensors.iter().copied().max().unwrap_or(0) as f64 * master
        }
        Optimizer::AdamwFused | Optimizer::Sgd => 0.0,
    };
    let optimizer_peak = weights + states + grads + temp;
    let peak = forward_peak.max(backward_peak).max(optimizer_peak);
    Memory {
        weights_bytes: weights,
        gradients_bytes: grads,
        optimizer_state_bytes: states,
        activations_bytes: activations,
        forward_peak_bytes: forward_peak,
        backward_peak_bytes: backward_peak,
        optimizer_peak_bytes: optimizer_peak,
        peak_bytes: peak,
        reserved_bytes: RESERVED_BYTES,
        capacity_bytes: 0.0,
        fits: false,
        shortfall_bytes: 0.0,
    }
}

impl Memory {
    /// This footprint on `hw`: the same bytes (nothing of the footprint depends on the device
    /// but its capacity), with `hw`'s capacity, whether it fits and the shortfall. A sweep walks
    /// a point's footprint once for all its devices.
    pub(crate) fn on(self, hw: &costsim_hardware::Profile) -> Memory {
        let capacity = hw.memory_bytes;
        let need = self.peak_bytes + self.reserved_bytes;
        let fits = need <= capacity;
        Memory {
            capacity_bytes: capacity,
            fits,
            shortfall_bytes: if fits { 0.0 } else { need - capacity },
            ..self
        }
    }
}

fn ms(s: f64) -> f64 {
    s * 1e3
}

fn phase_report(phase: Phase, span: &Span, per: f64, flops: f64, bytes: f64) -> PhaseReport {
    PhaseReport {
        phase,
        time_ms: phase_time_ms(span, per),
        gpu_busy_ms: ms(span.busy_s / per),
        host_wait_share: if span.time_s > 0.0 {
            span.host_wait_s / span.time_s
        } else {
            0.0
        },
        launches: phase_launches(span, per),
        flops,
        bytes,
        compute_ms: ms(span.by_bound[0] / per),
        memory_ms: ms(span.by_bound[1] / per),
        launch_ms: ms(span.by_bound[2] / per),
        host_ms: ms(span.by_bound[3] / per),
    }
}

/// Format seconds as h:mm:ss.
pub fn hms(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// How much training to estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Tokens(u64),
    Samples(u64),
}

/// Predict one configuration.
pub fn predict(cfg: &Config, detail: Detail, amount: Option<Amount>) -> Prediction {
    let g = graph::build(&cfg.model, &cfg.method, &cfg.workload);
    predict_with_graph(cfg.as_ref(), &g, detail, amount, &mut GemmMemo::default())
}

/// Predict one configuration from its already built graph (`graph::build` of the same model,
/// method and workload): sweeps build a graph once and cost it on every device. `memo` must
/// belong to `cfg.hw` (a fresh one, or one kept for that profile).
pub fn predict_with_graph(
    cfg: ConfigRef,
    g: &StepGraph,
    detail: Detail,
    amount: Option<Amount>,
    memo: &mut GemmMemo,
) -> Prediction {
    let cg = simulate::cost_graph_memo(g, cfg.workload, cfg.hw, memo, detail.kernels);
    predict_costed(cfg, g, &cg, detail, amount)
}

/// Predict one configuration from its graph and the graph's costed segments on `cfg.hw`
/// (`simulate::cost_graph_memo`, with `keep_kernels` when `detail.kernels`): a sweep keeps
/// segment costs across points whose kernels did not change.
pub fn predict_costed(
    cfg: ConfigRef,
    g: &StepGraph,
    cg: &simulate::CostedGraph,
    detail: Detail,
    amount: Option<Amount>,
) -> Prediction {
    predict_costed_with(cfg, g, cg, detail, amount)
}

/// The numbers of a [`Prediction`] that a sweep's row carries, computed by the code
/// [`predict_costed`] takes them from ([`summary`]); without the labels, FLOP and byte totals,
/// phase reports and per-layer rows that no row shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub trainable_params: u64,
    /// Launches: forward and backward per micro-batch, optimizer per step.
    pub kernels: PhaseCounts,
    /// Per micro-batch.
    pub forward_ms: f64,
    /// Per micro-batch.
    pub backward_ms: f64,
    /// Per optimizer step.
    pub optimizer_ms: f64,
    pub loop_ms: f64,
    pub step_ms: f64,
    pub tokens_per_s: f64,
    pub peak_memory_bytes: f64,
    pub fits: bool,
    pub dominant_bound: Bound,
}

/// Whether `a` and `b` agree to `rel` of the larger in size (tests: a sweep's rows against
/// single predictions, the same sums in another order).
#[cfg(test)]
pub(crate) fn agree_to(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs())
}

#[cfg(test)]
impl Summary {
    /// Whether two summaries agree: counts, the verdict and the bound exactly, times and bytes
    /// to `rel` of their size. A sweep's rescaled points fold a segment's unchanged kernels
    /// once and join them (`simulate::Piece`), the same sums in another order as a fresh
    /// costing: equal up to rounding, a few units of 1e-16 (tests allow 1e-12).
    pub(crate) fn agrees_with(&self, o: &Summary, rel: f64) -> bool {
        let close = |a: f64, b: f64| agree_to(a, b, rel);
        self.trainable_params == o.trainable_params
            && self.kernels == o.kernels
            && self.fits == o.fits
            && self.dominant_bound == o.dominant_bound
            && [
                (self.forward_ms, o.forward_ms),
                (self.backward_ms, o.backward_ms),
                (self.optimizer_ms, o.optimizer_ms),
                (self.loop_ms, o.loop_ms),
                (self.step_ms, o.step_ms),
                (self.tokens_per_s, o.tokens_per_s),
                (self.peak_memory_bytes, o.peak_memory_bytes),
            ]
            .into_iter()
            .all(|(a, b)| close(a, b))
    }
}

/// [`Summary`] of a configuration from its graph and costed segments (as [`predict_costed`]
/// without detail: every number the same). Sweeps call [`summarize_with_memory`], the footprint
/// walked once for all devices.
#[cfg(test)]
pub(crate) fn summarize_costed(
    cfg: ConfigRef,
    g: &StepGraph,
    cg: &simulate::CostedGraph,
) -> Summary {
    let trainable = cfg.method.trainable_params(cfg.model);
    summarize_with_memory(cfg, g, cg, &memory(cfg, g), trainable)
}

/// `summarize_costed` (the tests' entry, above) with the point's memory footprint already walked
/// ([`footprint`]; it is taken [`Memory::on`] `cfg`'s device) and its trainable parameters
/// counted ([`ParamCounts`]).
pub(crate) fn summarize_with_memory(
    cfg: ConfigRef,
    g: &StepGraph,
    cg: &simulate::CostedGraph,
    mem: &Memory,
    trainable_params: u64,
) -> Summary {
    let tl = simulate::simulate_with(g, cg, cfg.workload, cfg.hw, false, false);
    summary(cfg, &tl, &mem.on(cfg.hw), trainable_params)
}

/// A phase's wall time in ms per `per` (micro-batches, or 1 for the optimizer).
fn phase_time_ms(span: &simulate::Span, per: f64) -> f64 {
    ms(span.time_s / per)
}

/// A phase's launches per `per`.
fn phase_launches(span: &simulate::Span, per: f64) -> u64 {
    (span.launches as f64 / per).round() as u64
}

/// The numbers of [`Summary`] from the simulated timeline, the memory footprint and the
/// trainable parameters ([`MethodSpec::trainable_params`] of `cfg`'s model).
fn summary(
    cfg: ConfigRef,
    tl: &simulate::Timeline,
    mem: &Memory,
    trainable_params: u64,
) -> Summary {
    let w = cfg.workload;
    let accum = f64::from(w.grad_accum);
    // Dominant bound: where the step's time went.
    let mut by_bound = [0.0; 4];
    for span in tl.phases.iter().chain(std::iter::once(&tl.training_loop)) {
        for (i, v) in span.by_bound.iter().enumerate() {
            by_bound[i] += v;
        }
    }
    let dominant_bound = Bound::ALL
        .into_iter()
        .zip(by_bound)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(Bound::Compute, |(b, _)| b);
    let step_s = tl.step_s;
    let tokens = w.tokens_per_step() as f64;
    Summary {
        trainable_params,
        kernels: PhaseCounts {
            forward: phase_launches(&tl.phases[0], accum),
            backward: phase_launches(&tl.phases[1], accum),
            optimizer: phase_launches(&tl.phases[2], 1.0),
        },
        forward_ms: phase_time_ms(&tl.phases[0], accum),
        backward_ms: phase_time_ms(&tl.phases[1], accum),
        optimizer_ms: phase_time_ms(&tl.phases[2], 1.0),
        loop_ms: ms(tl.training_loop.time_s),
        step_ms: ms(step_s),
        tokens_per_s: if step_s > 0.0 { tokens / step_s } else { 0.0 },
        peak_memory_bytes: mem.peak_bytes,
        fits: mem.fits,
        dominant_bound,
    }
}

fn predict_costed_with(
    cfg: ConfigRef,
    g: &StepGraph,
    cg: &simulate::CostedGraph,
    detail: Detail,
    amount: Option<Amount>,
) -> Prediction {
    // Per-scope spans are read only for per-layer rows.
    let tl = simulate::simulate_with(
        g,
        cg,
        cfg.workload,
        cfg.hw,
        detail.kernels,
        detail.per_layer,
    );
    let w = cfg.workload;
    let accum = f64::from(w.grad_accum);
    let n_layers = g.layer_class.len();

    // FLOPs and bytes per phase (first micro-batch's backward; accumulate variants added).
    let mut fwd_fb = (0.0, 0.0);
    let mut bwd_fb = (0.0, 0.0);
    let scopes = std::iter::once((Scope::Embedding, &g.embedding))
        .chain((0..n_layers).map(|i| (Scope::Layer(i as u32), g.layer(i))))
        .chain(std::iter::once((Scope::Head, &g.head)));
    let mut layer_rows = Vec::new();
    // Sums per distinct scope graph, from its costed segments (layers share their class's).
    type Sums = [(f64, f64, u64); 3];
    let sums =
        |s: &[simulate::CostedSegment; 3]| -> Sums { [s[0].totals, s[1].totals, s[2].totals] };
    let class_sums: Vec<Sums> = cg.layers.iter().map(sums).collect();
    let (emb_sums, head_sums) = (sums(&cg.embedding), sums(&cg.head));
    for (idx, (scope, s)) in scopes.enumerate() {
        let [(ff, fbytes, fl), (bf1, bb1, bl1), (bfa, bba, bla)] = match scope {
            Scope::Embedding => emb_sums,
            Scope::Layer(i) => class_sums[g.layer_class[i as usize]],
            _ => head_sums,
        };
        let bwd_f = (bf1 + bfa * (accum - 1.0)) / accum;
        let bwd_b = (bb1 + bba * (accum - 1.0)) / accum;
        fwd_fb.0 += ff;
        fwd_fb.1 += fbytes;
        bwd_fb.0 += bwd_f;
        bwd_fb.1 += bwd_b;
        if detail.per_layer {
            let f_span = &tl.scopes[2 * idx].2;
            let b_span = &tl.scopes[2 * idx + 1].2;
            let trained = !s.backward.kernels.is_empty();
            layer_rows.push(LayerRow {
                scope: match scope {
                    Scope::Embedding => "embedding".into(),
                    Scope::Layer(i) => format!("layer.{i}"),
                    Scope::Head => "head".into(),
                    Scope::Optimizer => "optimizer".into(),
                },
                trained,
                trainable_params: s.trainable,
                forward_ms: ms(f_span.time_s / accum),
                backward_ms: ms(b_span.time_s / accum),
                optimizer_ms: 0.0,
                forward_kernels: fl,
                backward_kernels: ((bl1 as f64 + bla as f64 * (accum - 1.0)) / accum).round()
                    as u64,
                optimizer_kernels: 0,
                flops: ff + bwd_f,
                bytes: fbytes + bwd_b,
                saved_bytes: s.saved_bytes + s.checkpoint_bytes,
            });
        }
    }
    let (of, ob, ol) = cg.optimizer.totals;
    let opt_span = &tl.phases[2];
    if detail.per_layer {
        layer_rows.push(LayerRow {
            scope: "optimizer".into(),
            trained: ol > 0,
            trainable_params: 0,
            forward_ms: 0.0,
            backward_ms: 0.0,
            optimizer_ms: ms(opt_span.time_s),
            forward_kernels: 0,
            backward_kernels: 0,
            optimizer_kernels: ol,
            flops: of,
            bytes: ob,
            saved_bytes: 0.0,
        });
        if w.training_loop != crate::TrainingLoop::Bare {
            // The loop's per-step time sits in the per-step column, like the optimizer's.
            layer_rows.push(LayerRow {
                scope: "loop".into(),
                trained: false,
                trainable_params: 0,
                forward_ms: 0.0,
                backward_ms: 0.0,
                optimizer_ms: ms(tl.training_loop.time_s),
                forward_kernels: 0,
                backward_kernels: 0,
                optimizer_kernels: 0,
                flops: 0.0,
                bytes: 0.0,
                saved_bytes: 0.0,
            });
        }
    }

    let phases = vec![
        phase_report(Phase::Forward, &tl.phases[0], accum, fwd_fb.0, fwd_fb.1),
        phase_report(Phase::Backward, &tl.phases[1], accum, bwd_fb.0, bwd_fb.1),
        phase_report(Phase::Optimizer, opt_span, 1.0, of, ob),
    ];
    let mem = memory(cfg, g);
    let sum = summary(cfg, &tl, &mem, cfg.method.trainable_params(cfg.model));
    let step_s = tl.step_s;
    let training = amount.map(|a| {
        let steps = match a {
            Amount::Tokens(n) => n.div_ceil(w.tokens_per_step()),
            Amount::Samples(n) => n.div_ceil(w.batch * u64::from(w.grad_accum)),
        };
        let seconds = steps as f64 * step_s;
        TrainingEstimate {
            optimizer_steps: steps,
            seconds,
            wall_clock: hms(seconds),
        }
    });
    let kernel_rows = detail
        .kernels
        .then(|| kernel_rows(g, cg, &tl, cfg.hw, w.runtime == Runtime::CudaGraph));
    let (lo, hi) = cfg.method.trained_layers(cfg.model);
    Prediction {
        method: cfg.method.name.to_string(),
        kind: cfg.method.kind,
        rank: cfg.method.rank,
        trained_layers: format!("{lo}..{hi}"),
        targets: if cfg.method.kind == MethodKind::Full {
            "all".into()
        } else {
            cfg.method.targets.describe(cfg.model)
        },
        trainable_params: sum.trainable_params,
        total_params: cfg.model.total_params(),
        kernels: sum.kernels,
        flops: accum * (fwd_fb.0 + bwd_fb.0) + of,
        bytes: accum * (fwd_fb.1 + bwd_fb.1) + ob,
        forward_ms: sum.forward_ms,
        backward_ms: sum.backward_ms,
        optimizer_ms: sum.optimizer_ms,
        loop_ms: sum.loop_ms,
        loop_host_ms: ms(tl.training_loop.host_s),
        nn_modules: g.nn_modules,
        step_ms: sum.step_ms,
        tokens_per_s: sum.tokens_per_s,
        peak_memory_bytes: sum.peak_memory_bytes,
        fits: sum.fits,
        dominant_bound: sum.dominant_bound,
        phases,
        memory: mem,
        training,
        per_layer: detail.per_layer.then_some(layer_rows),
        kernel_rows,
    }
}

fn kernel_rows(
    g: &StepGraph,
    cg: &simulate::CostedGraph,
    tl: &simulate::Timeline,
    hw: &Profile,
    graph_replay: bool,
) -> Vec<KernelRow> {
    let mut rows = Vec::new();
    let n_layers = g.layer_class.len();
    let mut counters = [0usize; 3];
    let mut memo = GemmMemo::default();
    // L2 bounds per distinct segment (a layer class's is the same for each of its layers).
    let mut l2_of: Vec<(*const graph::Segment, Vec<(f64, f64)>)> = Vec::new();
    let mut push = |scope: Scope,
                    phase: Phase,
                    seg: &graph::Segment,
                    costs: &simulate::CostedSegment,
                    waited: &[bool]| {
        let base = counters[phase as usize];
        let key: *const graph::Segment = seg;
        let at = match l2_of.iter().position(|(s, _)| *s == key) {
            Some(at) => at,
            None => {
                let device: Vec<f64> = costs.kernels.iter().map(|(_, c)| c.device_s).collect();
                let b = crate::l2::bound(seg, &device, hw, graph_replay, &mut memo);
                l2_of.push((key, b));
                l2_of.len() - 1
            }
        };
        let l2 = &l2_of[at].1;
        for (i, ((k, (host, c)), &(l2_bytes, l2_s))) in
            seg.kernels.iter().zip(&costs.kernels).zip(l2).enumerate()
        {
            let bound = if waited.get(i).copied().unwrap_or(false) {
                Bound::Host
            } else {
                c.bound
            };
            rows.push(KernelRow {
                phase,
                index: base + i,
                name: k.name,
                module: k.path(g.family, scope),
                kind: k.kind,
                dtype: k.dtype.as_str(),
                flops: k.flops,
                bytes_read: k.bytes_read,
                bytes_written: k.bytes_written,
                launches: k.launches,
                shape: k.gemm.map(|s| {
                    if s.batch > 1 {
                        format!("{}x{}x{}x{}", s.m, s.n, s.k, s.batch)
                    } else {
                        format!("{}x{}x{}", s.m, s.n, s.k)
                    }
                }),
                device_us: c.device_s * 1e6,
                host_us: host * 1e6,
                bound,
                deps: k.deps.iter().map(|&d| base + d as usize).collect(),
                recompute: k.recompute,
                l2_reread_bytes: l2_bytes,
                l2_bound_us: l2_s * 1e6,
            });
        }
        counters[phase as usize] += seg.kernels.len();
    };
    let waited = |scope: Scope, phase: Phase| -> &[bool] {
        tl.host_waited
            .iter()
            .find(|(s, p, _)| *s == scope && *p == phase)
            .map_or(&[], |(_, _, v)| v.as_slice())
    };
    push(
        Scope::Embedding,
        Phase::Forward,
        &g.embedding.forward,
        &cg.embedding[0],
        waited(Scope::Embedding, Phase::Forward),
    );
    for i in 0..n_layers {
        let s = Scope::Layer(i as u32);
        push(
            s,
            Phase::Forward,
            &g.layer(i).forward,
            &cg.layers[g.layer_class[i]][0],
            waited(s, Phase::Forward),
        );
    }
    push(
        Scope::Head,
        Phase::Forward,
        &g.head.forward,
        &cg.head[0],
        waited(Scope::Head, Phase::Forward),
    );
    push(
        Scope::Head,
        Phase::Backward,
        &g.head.backward,
        &cg.head[1],
        waited(Scope::Head, Phase::Backward),
    );
    for i in (0..n_layers).rev() {
        let s = Scope::Layer(i as u32);
        push(
            s,
            Phase::Backward,
            &g.layer(i).backward,
            &cg.layers[g.layer_class[i]][1],
            waited(s, Phase::Backward),
        );
    }
    push(
        Scope::Embedding,
        Phase::Backward,
        &g.embedding.backward,
        &cg.embedding[1],
        waited(Scope::Embedding, Phase::Backward),
    );
    push(
        Scope::Optimizer,
        Phase::Optimizer,
        &g.optimizer,
        &cg.optimizer,
        waited(Scope::Optimizer, Phase::Optimizer),
    );
    rows
}

/// Step time of one scope split two ways, ms per optimizer step (all micro-batches).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScopeBreakdown {
    /// `embedding`, `layer.N`, `head`, `optimizer`.
    pub scope: String,
    /// Device time by kernel kind, in [`KernelKind::ALL`] order (host-only ops have none).
    pub by_kind_ms: Vec<(KernelKind, f64)>,
    /// Device time by bound (compute, memory, launch) and GPU time spent waiting on the host.
    pub compute_ms: f64,
    pub memory_ms: f64,
    pub launch_ms: f64,
    pub host_wait_ms: f64,
}

/// Where each scope's time goes, for the per-layer stacked chart. Kind and bound totals of a
/// scope agree up to the host wait: Σ by_kind = compute + memory + launch.
pub fn breakdown(cfg: &Config) -> Vec<ScopeBreakdown> {
    let g = graph::build(&cfg.model, &cfg.method, &cfg.workload);
    let cg = simulate::cost_graph(&g, &cfg.workload, &cfg.hw);
    let tl = simulate::simulate(&g, &cg, &cfg.workload, &cfg.hw, false);
    let accum = f64::from(cfg.workload.grad_accum);
    let by_kind = |segs: &[(&simulate::CostedSegment, &graph::Segment, f64)]| {
        let mut v: Vec<(KernelKind, f64)> = KernelKind::ALL.iter().map(|&k| (k, 0.0)).collect();
        for (c, s, times) in segs {
            for (k, (_, cost)) in s.kernels.iter().zip(&c.kernels) {
                let i = KernelKind::ALL
                    .iter()
                    .position(|x| *x == k.kind)
                    .unwrap_or(0);
                v[i].1 += cost.device_s * 1e3 * times;
            }
        }
        v
    };
    let scope_name = |s: Scope| match s {
        Scope::Embedding => "embedding".to_string(),
        Scope::Layer(i) => format!("layer.{i}"),
        Scope::Head => "head".into(),
        Scope::Optimizer => "optimizer".into(),
    };
    let mut out = Vec::new();
    let n_layers = g.layer_class.len();
    for i in 0..n_layers + 2 {
        let (scope, sg, costs): (Scope, &ScopeGraph, &[simulate::CostedSegment; 3]) = if i == 0 {
            (Scope::Embedding, &g.embedding, &cg.embedding)
        } else if i <= n_layers {
            let c = g.layer_class[i - 1];
            (
                Scope::Layer((i - 1) as u32),
                &g.layer_graphs[c],
                &cg.layers[c],
            )
        } else {
            (Scope::Head, &g.head, &cg.head)
        };
        let kinds = by_kind(&[
            (&costs[0], &sg.forward, accum),
            (&costs[1], &sg.backward, 1.0),
            (&costs[2], &sg.backward_accum, accum - 1.0),
        ]);
        let mut bounds = [0.0; 4];
        for (_, _, span) in tl.scopes.iter().filter(|(s, ..)| *s == scope) {
            for (b, v) in bounds.iter_mut().zip(span.by_bound) {
                *b += v * 1e3;
            }
        }
        out.push(ScopeBreakdown {
            scope: scope_name(scope),
            by_kind_ms: kinds,
            compute_ms: bounds[0],
            memory_ms: bounds[1],
            launch_ms: bounds[2],
            host_wait_ms: bounds[3],
        });
    }
    let opt = &tl.phases[2];
    out.push(ScopeBreakdown {
        scope: "optimizer".into(),
        by_kind_ms: by_kind(&[(&cg.optimizer, &g.optimizer, 1.0)]),
        compute_ms: opt.by_bound[0] * 1e3,
        memory_ms: opt.by_bound[1] * 1e3,
        launch_ms: opt.by_bound[2] * 1e3,
        host_wait_ms: opt.by_bound[3] * 1e3,
    });
    if cfg.workload.training_loop != crate::TrainingLoop::Bare {
        // The training loop runs no kernel: its time is the GPU waiting on it.
        out.push(ScopeBreakdown {
            scope: "loop".into(),
            by_kind_ms: by_kind(&[]),
            compute_ms: 0.0,
            memory_ms: 0.0,
            launch_ms: 0.0,
            host_wait_ms: tl.training_loop.time_s * 1e3,
        });
    }
    out
}

#[cfg(test)]
#[path = "predict_tests.rs"]
mod tests;
