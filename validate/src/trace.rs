//! Ground-truth traces of the real eager stack, set against costsim's graph.
//!
//! A trace (`scripts/trace/trace_step.py`, schema `costsim-trace/1`) records one steady-state
//! training step of transformers + peft (or the PaCA reference layer) op by op: every aten op
//! dispatched per phase with its module path and the CUDA kernel launches it stands for, every
//! tensor saved for backward (bytes once per storage), and the live tensor bytes over the step.
//! This module rebuilds the same configuration in costsim (model from the trace's config.json
//! fields, method, precision, batch, sequence, foreach AdamW with clipping) and compares, per
//! phase: kernel launches, FLOPs, saved-activation bytes and peak memory; then aligns launches
//! module by module so that a disagreement names the layer part it comes from.
//!
//! Launch counting on the trace side: views and metadata ops launch nothing (the tracer's
//! `cuda_launches`); each `_foreach_*` op launches what torch's multi_tensor_apply launches for
//! its tensor sizes ([`costsim_model::graph::foreach_launches`], the same rule the model uses);
//! profiler markers (`_record_function_*`) are not kernels.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use costsim_model::arch::parse_hf_config;
use costsim_model::graph::{
    self, foreach_launches, foreach_launches_scalarlist, KernelKind, Phase,
};
use costsim_model::method::{
    AdapterDtype, LayerSelection, MethodName, MethodOptions, MethodSpec, Targets,
};
use costsim_model::predict::{predict, Config, Detail};
use costsim_model::workload::{
    AttentionImpl, Optimizer, ParamGroups, Precision, Runtime, Workload,
};
use costsim_model::TrainingLoop;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The schema this reader understands.
pub const SCHEMA: &str = "costsim-trace/1";

/// A trace as written by the tracer (fields costsim does not use are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Trace {
    pub schema: String,
    pub provenance: Provenance,
    pub model: TraceModel,
    pub method: TraceMethod,
    pub workload: TraceWorkload,
    pub totals: Totals,
    /// nn.Modules and parameter tensors of the model as built (traces since the training-loop
    /// model; older traces lack it).
    #[serde(default)]
    pub structure: Option<Structure>,
    pub phases: BTreeMap<String, PhaseRec>,
    #[serde(default)]
    pub cuda_allocator_peaks: Option<BTreeMap<String, AllocatorPeak>>,
    pub ops: Vec<OpRow>,
    #[serde(default)]
    pub foreach: Vec<ForeachRec>,
    #[serde(default)]
    pub saved: Vec<SavedRow>,
    /// Per-phase wall times of steps run after the traced one (`--time-reps`).
    #[serde(default)]
    pub timings: Option<Timings>,
    /// Per phase, what torch.profiler saw over one more step (`--profile-kernels`): per aten op,
    /// its kernels' device time (CUDA) and its self CPU time.
    #[serde(default)]
    pub cuda_kernels: Option<BTreeMap<String, ProfiledPhase>>,
    /// Per phase, every aten op's own time over N more steps (`--op-times N`, CPU): the op
    /// ledger ([`crate::ledger`]).
    #[serde(default)]
    pub op_times: Option<crate::ledger::OpTimes>,
}

/// What `model.modules()` and `model.parameters()` yield for the traced model.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Structure {
    pub modules: u64,
    pub parameters: u64,
}

/// One phase under torch.profiler.
#[derive(Debug, Clone, Deserialize)]
pub struct ProfiledPhase {
    #[serde(default)]
    pub by_op: BTreeMap<String, ProfiledOp>,
}

/// One aten op under torch.profiler, summed over its calls in the phase.
#[derive(Debug, Clone, Deserialize)]
pub struct ProfiledOp {
    pub calls: u64,
    #[serde(default)]
    pub kernels: u64,
    /// Summed duration of the device kernels it launched, µs (absent in older traces).
    #[serde(default)]
    pub device_us: Option<f64>,
    /// Its own CPU time without its children, µs (absent in older traces).
    #[serde(default)]
    pub self_cpu_us: Option<f64>,
}

/// The costsim kernel kind an aten op's time is filed under, by the op's name: what each kind's
/// efficiency is calibrated for. Ops with no kernel of their own (`aten::linear`, views) are
/// dispatch: on a CPU their self time is host work.
pub fn op_kind(aten: &str) -> &'static str {
    let n = aten.trim_start_matches("aten::");
    match n {
        "mm" | "addmm" | "bmm" | "baddbmm" => "gemm",
        _ if n.contains("scaled_dot_product") || n.contains("flash_attention") => "attention",
        "native_layer_norm" | "native_layer_norm_backward" => "norm",
        "_softmax"
        | "_log_softmax"
        | "_softmax_backward_data"
        | "_log_softmax_backward_data"
        | "_safe_softmax"
        | "nll_loss_forward"
        | "nll_loss_backward" => "softmax",
        "_to_copy" | "copy_" | "to" | "clone" | "contiguous" => "cast",
        "sum" | "mean" | "linalg_vector_norm" | "norm" | "all" | "cumsum" | "stack" => "reduction",
        "embedding" | "index_select" | "index" | "gather" => "gather",
        "index_put_" | "embedding_dense_backward" | "scatter_" | "scatter_add_" | "index_add_" => {
            "scatter"
        }
        "native_dropout" | "native_dropout_backward" => "dropout",
        _ if n.starts_with("_foreach_") || n.starts_with("_fused_adam") => "optimizer",
        "linear" | "matmul" | "t" | "view" | "reshape" | "transpose" | "permute" | "expand"
        | "slice" | "select" | "split" | "unsqueeze" | "squeeze" | "detach" | "empty"
        | "empty_like" | "zeros" | "as_strided" | "_unsafe_view" | "dropout" | "alias"
        | "lift_fresh" | "resolve_conj" | "resolve_neg" => "dispatch",
        _ => "elementwise",
    }
}

/// costsim's kernel kinds folded into the classes `op_kind` gives the trace's ops.
fn kind_class(k: KernelKind, name: &str) -> &'static str {
    match k {
        KernelKind::Gemm => "gemm",
        KernelKind::Attention => "attention",
        KernelKind::Norm => "norm",
        KernelKind::Softmax => "softmax",
        KernelKind::Cast => "cast",
        KernelKind::Reduction => "reduction",
        KernelKind::Gather => "gather",
        KernelKind::Scatter => "scatter",
        KernelKind::Optimizer => "optimizer",
        KernelKind::Host => "dispatch",
        KernelKind::Elementwise if name == "native_dropout" => "dropout",
        KernelKind::Elementwise => "elementwise",
    }
}

/// Time of one class of kernels in one phase: costsim's against the profiler's.
#[derive(Debug, Clone, Serialize)]
pub struct KindTime {
    pub phase: &'static str,
    pub kind: &'static str,
    /// ms: costsim's device time of the class against, on a GPU, the device time of the kernels
    /// the class's ops launched, and on a CPU (synchronous profile), the ops' self CPU time,
    /// which also holds the few µs of dispatch inside aten that costsim counts as host time.
    pub time_ms: Pair,
    pub traced_ops: u64,
}

/// Wall times of N timed steps, per phase (the device synchronised around each).
#[derive(Debug, Clone, Deserialize)]
pub struct Timings {
    pub forward: PhaseTiming,
    pub backward: PhaseTiming,
    pub optimizer: PhaseTiming,
    pub reps: u32,
}

impl Timings {
    pub fn get(&self, phase: &str) -> Option<&PhaseTiming> {
        match phase {
            "forward" => Some(&self.forward),
            "backward" => Some(&self.backward),
            "optimizer" => Some(&self.optimizer),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PhaseTiming {
    pub median_s: f64,
    pub min_s: f64,
}

/// Tensors saved for backward by one module in one dtype (bytes once per storage).
#[derive(Debug, Clone, Deserialize)]
pub struct SavedRow {
    pub module: String,
    pub dtype: String,
    pub param: bool,
    pub tensors: u64,
    pub bytes: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Provenance {
    pub torch: String,
    pub transformers: String,
    pub peft: Option<String>,
    pub device: String,
    #[serde(default)]
    pub device_name: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub cuda_mapping: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TraceModel {
    pub family: String,
    pub preset: String,
    pub hf_config: serde_json::Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TraceMethod {
    pub name: String,
    pub rank: u64,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: String,
    pub adapter_dtype: String,
    pub lowest_trained_layer: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TraceWorkload {
    pub batch: u64,
    pub seq: u64,
    pub precision: String,
    pub clip_grad_norm: f64,
    #[serde(default)]
    pub model_dropout: f64,
    /// transformers' attention implementation (`sdpa`, `eager`); traces before it was an
    /// option ran SDPA.
    #[serde(default = "sdpa")]
    pub attention: String,
    /// The optimizer the tracer ran (`adamw-foreach`; older traces do not say).
    #[serde(default = "adamw_foreach")]
    pub optimizer: String,
    /// transformers' gradient checkpointing (`trace_step.py --grad-checkpointing`; absent: off).
    #[serde(default)]
    pub grad_checkpointing: bool,
    /// `--optimizer trainer`: the tensors in each parameter group of the optimizer a default
    /// Trainer built (weights with decay, then biases and norms without); absent otherwise.
    #[serde(default)]
    pub param_groups: Vec<u64>,
}

fn sdpa() -> String {
    "sdpa".into()
}

fn adamw_foreach() -> String {
    "adamw-foreach".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct Totals {
    pub param_bytes: f64,
    pub trainable_elems: u64,
    pub optimizer_state_bytes: f64,
    pub baseline_bytes: f64,
    pub saved_activation_bytes: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PhaseRec {
    pub ops: u64,
    pub launches: u64,
    pub flops: f64,
    pub start_bytes: f64,
    pub peak_bytes: f64,
    /// Forward only: nn.Module calls, and adapter-layer (peft LoRA, PaCA) calls among them.
    #[serde(default)]
    pub module_calls: Option<u64>,
    #[serde(default)]
    pub adapter_calls: Option<u64>,
    /// Optimizer only: trainable tensors.
    #[serde(default)]
    pub tensors: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AllocatorPeak {
    pub start_bytes: f64,
    pub peak_bytes: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OpRow {
    pub phase: String,
    pub module: String,
    pub op: String,
    pub calls: u64,
    pub launches: u64,
    pub flops: f64,
    /// Bytes of the op's outputs over all its calls (an in-place op's output is the tensor it
    /// wrote).
    #[serde(default)]
    pub out_bytes: f64,
    /// Bytes the op's calls read (their tensor arguments, each storage once) and wrote (their
    /// outputs; an in-place partial write such as index_put_ counts its source): traces from
    /// before these fields were recorded have neither.
    #[serde(default)]
    pub read_bytes: Option<f64>,
    #[serde(default)]
    pub written_bytes: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ForeachRec {
    pub phase: String,
    pub op: String,
    /// Tensor lists among the call's arguments (an out-of-place op's output list is not one).
    pub lists: usize,
    pub numels: Vec<u64>,
    /// Whether the call also took a list of scalars (AdamW's bias corrections and step sizes);
    /// traces before this field lack it.
    #[serde(default)]
    pub scalar_list: bool,
    /// 0-dim tensors on the device: a fused AdamW's step counters (torch/optim/adam.py,
    /// `_init_group` puts them on the parameters' device when `fused` or `capturable`), whose
    /// `_foreach_add_` and `_foreach_sub_` launch on CUDA. Traces before 2026-12-01 lack it.
    #[serde(default)]
    pub counters_on_device: bool,
}

impl ForeachRec {
    /// AdamW's increment of its step counters (`_foreach_add_` over one-element tensors):
    /// 0-dim CPU tensors even on CUDA without `capturable` or `fused`, so host work that
    /// launches nothing (torch/optim/adam.py, `_multi_tensor_adam`). Today's tracer leaves the
    /// call out of its list; traces recorded before 2026-11-29 (the H200 ones) list it. A fused
    /// AdamW's counters are on the device and launch (`counters_on_device`).
    fn is_step_counters(&self) -> bool {
        self.op == "_foreach_add_"
            && !self.counters_on_device
            && !self.numels.is_empty()
            && self.numels.iter().all(|&n| n == 1)
    }

    /// multi_tensor_apply launches of this call: its depth is the tensor lists it reads plus,
    /// for an out-of-place op, the list it writes (`_foreach_norm` writes per-tensor scalars
    /// outside the lists), with the scalar-list limits when it took scalars.
    pub fn launches(&self) -> u32 {
        if self.is_step_counters() {
            return 0;
        }
        let out = !self.op.ends_with('_') && self.op != "_foreach_norm";
        let depth = self.lists.max(1) + usize::from(out);
        if self.scalar_list {
            foreach_launches_scalarlist(&self.numels, depth)
        } else {
            foreach_launches(&self.numels, depth)
        }
    }
}

/// Read a trace file.
pub fn read_trace(path: &Path) -> Result<Trace> {
    let text = costsim_hardware::input::read_text(path, "trace").map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut t: Trace = serde_json::from_str(&text)
        .map_err(|e| crate::parse_error(&text, "trace", 2, &path.display().to_string(), &e))?;
    // Names printed in tables: a terminal's escape sequences dropped (as results records').
    crate::record::printable(&mut t.model.family);
    crate::record::printable(&mut t.model.preset);
    if t.schema != SCHEMA {
        return Err(Error::InvalidArgument {
            what: path.display().to_string(),
            message: format!(
                "trace schema '{}' is not '{SCHEMA}'; regenerate it with scripts/trace/trace_step.py",
                t.schema
            ),
        });
    }
    t.check().map_err(|message| Error::InvalidArgument {
        what: path.display().to_string(),
        message: format!(
            "{message} (a corrupted trace? regenerate it with scripts/trace/trace_step.py)"
        ),
    })?;
    Ok(t)
}

#[path = "trace_check.rs"]
mod check;

/// The targets the scripts name (`--targets qv|all`, scripts/trace/trace_step.py's TARGETS).
pub fn targets_of(name: &str) -> Option<Targets> {
    match name {
        "qv" => Targets::parse("q,v").ok(),
        "all" => Some(Targets::all()),
        _ => None,
    }
}

/// The trained layers of a record whose lowest trained layer is `lowest` (0: all of them), as
/// the scripts' layer-selective PaCA trains them.
pub fn layers_from(lowest: u32, model: &costsim_model::ModelConfig) -> Result<LayerSelection> {
    Ok(if lowest > 0 {
        format!("{}..{}", lowest, model.layers - 1).parse()?
    } else {
        LayerSelection::All
    })
}

/// The costsim configuration a trace describes, predicted on `hw` (memory and counts do not
/// depend on the device; times do).
pub fn config_of(
    t: &Trace,
    origin: &str,
    hw: Option<&costsim_hardware::Profile>,
) -> Result<Config> {
    let mut model = parse_hf_config(&t.model.hf_config.to_string(), origin)?;
    model.name = format!("{}-{}", t.model.family, t.model.preset);
    model.dropout = t.workload.model_dropout;
    // The trace's own dropout replaces the config's: checked like the rest of the model.
    // Errors of the model, method and workload name the trace they come from.
    let in_trace = |e: costsim_model::Error| Error::InvalidArgument {
        what: origin.to_string(),
        message: e.to_string(),
    };
    model.validate().map_err(in_trace)?;
    let bad = |what: &str, v: &str| Error::InvalidArgument {
        what: format!("{origin}: {what}"),
        message: format!("'{v}' is not understood"),
    };
    let name: MethodName = t.method.name.parse().map_err(in_trace)?;
    let optimizer = match t.workload.optimizer.as_str() {
        // What the trace ran: foreach AdamW, except on meta, which has no foreach kernels and
        // runs AdamW one tensor at a time (trace_step.py; its `cuda_mapping` says so).
        "adamw-foreach" if t.provenance.device == "meta" => Optimizer::AdamwSingle,
        // A Trainer with `optim="adamw_torch"`: the foreach AdamW, in two groups (below).
        "adamw-foreach" | "trainer-foreach" => Optimizer::AdamwForeach,
        // A default Trainer's: the fused AdamW, in two parameter groups (below).
        "adamw-fused" | "trainer" => Optimizer::AdamwFused,
        "adamw-single" => Optimizer::AdamwSingle,
        "sgd" => Optimizer::Sgd,
        other => return Err(bad("optimizer", other)),
    };
    let precision = match t.workload.precision.as_str() {
        "fp32" => Precision::Fp32,
        "bf16" => Precision::Bf16,
        "bf16-mixed" => Precision::Bf16Mixed,
        "fp16-mixed" => Precision::Fp16Mixed,
        other => return Err(bad("precision", other)),
    };
    let adapter_dtype = match t.method.adapter_dtype.as_str() {
        "fp32" => AdapterDtype::Fp32,
        "base" => AdapterDtype::Base,
        other => return Err(bad("adapter_dtype", other)),
    };
    let targets = targets_of(&t.method.targets).ok_or_else(|| bad("targets", &t.method.targets))?;
    if name != MethodName::Full {
        // The tracer records the rank and alpha it ran; 0 would silently become the default.
        let refuse = |what: &str, message: String| Error::InvalidArgument {
            what: format!("{origin}: {what}"),
            message,
        };
        if t.method.rank == 0 {
            return Err(refuse(
                "method.rank",
                format!("0 for {name}: the trace must record the rank it ran (at least 1)"),
            ));
        }
        if !(t.method.alpha.is_finite() && t.method.alpha > 0.0) {
            return Err(refuse(
                "method.alpha",
                format!(
                    "{} for {name}: the trace must record the positive alpha it ran",
                    t.method.alpha
                ),
            ));
        }
    }
    let layers = layers_from(t.method.lowest_trained_layer, &model).map_err(|e| match e {
        Error::Model(e) => in_trace(e),
        e => e,
    })?;
    let opts = MethodOptions {
        // Checked above for LoRA and PaCA; full fine-tuning has neither.
        rank: (name != MethodName::Full).then_some(t.method.rank),
        alpha: (name != MethodName::Full).then_some(t.method.alpha),
        dropout: Some(t.method.dropout),
        targets: Some(targets),
        adapter_dtype: Some(adapter_dtype),
        layers: Some(layers),
    };
    let method = MethodSpec::resolve(name, &opts, &model, false).map_err(in_trace)?;
    let workload = Workload {
        batch: t.workload.batch,
        seq: t.workload.seq,
        grad_accum: 1,
        precision,
        attention: match t.workload.attention.as_str() {
            "sdpa" => AttentionImpl::Sdpa,
            "eager" => AttentionImpl::Eager,
            other => return Err(bad("attention", other)),
        },
        optimizer,
        grad_checkpointing: t.workload.grad_checkpointing,
        grad_clip: t.workload.clip_grad_norm > 0.0,
        runtime: Runtime::PytorchEager,
        // The traces time forward, backward and the optimizer alone, the device synchronised
        // around each: no loop around them.
        training_loop: TrainingLoop::Timed,
        // `--optimizer trainer` records the Trainer's groups (with and without weight decay);
        // the tracer's own optimizers take every trainable tensor in one.
        param_groups: match t.workload.param_groups.len() {
            0 | 1 => ParamGroups::One,
            2 => ParamGroups::DecayAndNoDecay,
            n => {
                return Err(bad(
                    "param_groups",
                    &format!("{n} groups (a Trainer builds two)"),
                ))
            }
        },
    };
    workload.validate(&model).map_err(in_trace)?;
    let hw = match hw {
        Some(h) => h.clone(),
        None => costsim_hardware::resolve_device("h100")?,
    };
    Ok(Config {
        model,
        method,
        workload,
        hw,
    })
}

/// One compared quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pair {
    pub predicted: f64,
    pub traced: f64,
}

impl Pair {
    /// Signed relative error of the prediction, (predicted − traced) / traced; 0 when both are 0.
    pub fn error(&self) -> f64 {
        if self.traced == 0.0 {
            if self.predicted == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (self.predicted - self.traced) / self.traced
        }
    }
}

/// Per phase: kernel-launching ops, FLOPs and peak live bytes.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseComparison {
    pub phase: &'static str,
    /// Kernel-launching aten ops: costsim's kernel records (a multi-tensor op counts its chunked
    /// launches on both sides) against the trace's dispatched non-view ops.
    pub launches: Pair,
    /// costsim's CUDA kernel launches for the phase (an op such as SDPA's backward or
    /// embedding_dense_backward launches several), for reference.
    pub kernels: u64,
    /// Phase time, ms: predicted on the given profile against the trace's median (timed traces
    /// compared with `--hw` only).
    pub time_ms: Option<Pair>,
    pub flops: Pair,
    pub peak_bytes: Pair,
    /// Bytes read and written by the kernel-launching ops (multi-tensor `_foreach_*` ops left
    /// out on both sides), when the trace records them.
    pub bytes_read: Option<Pair>,
    pub bytes_written: Option<Pair>,
}

/// Launches of one module (all layers' copies summed) in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleRow {
    pub phase: &'static str,
    pub module: String,
    pub predicted: u64,
    pub traced: u64,
    /// Ops of the trace in this module with their launch counts, for reading a mismatch.
    pub traced_ops: String,
    pub predicted_ops: String,
    /// Bytes read and written by the module's launching ops, when the trace records them.
    pub bytes_read: Option<Pair>,
    pub bytes_written: Option<Pair>,
}

/// Saved bytes of one module (all layers' copies summed; adapter pieces folded into their
/// linear layer).
#[derive(Debug, Clone, Serialize)]
pub struct SavedModuleRow {
    pub module: String,
    pub predicted: f64,
    pub traced: f64,
    /// The trace's dtypes and tensor counts in this module, for reading a mismatch.
    pub traced_detail: String,
}

/// A trace set against the model.
#[derive(Debug, Clone, Serialize)]
pub struct TraceComparison {
    pub name: String,
    pub source: String,
    pub phases: Vec<PhaseComparison>,
    pub saved_bytes: Pair,
    pub modules: Vec<ModuleRow>,
    pub saved_modules: Vec<SavedModuleRow>,
    /// Time per kernel class and phase, for a profiled trace compared on a profile (`--hw`).
    pub kinds: Vec<KindTime>,
    /// nn.Modules of the model (what a Trainer's `model.train()` walks): costsim's count and the
    /// trace's, where the trace records it.
    pub nn_modules: Option<Pair>,
    /// nn.Module calls of the forward (what `host.module-call-us` is charged on): costsim's
    /// count and the trace's, where the trace records it.
    pub module_calls: Option<Pair>,
    /// Adapter-layer calls of the forward (peft LoRA, PaCA; `host.peft-module-us`).
    pub adapter_calls: Option<Pair>,
    /// The op ledger, for a trace timed op by op compared on a profile (`--hw`).
    pub ledger: Option<crate::ledger::Ledger>,
}

/// `module_key` with peft's and PaCA's pieces folded into the linear layer they adapt.
fn linear_key(path: &str) -> String {
    let key = module_key(path);
    let mut parts: Vec<&str> = key.split('.').collect();
    while parts.last().is_some_and(|p| {
        matches!(
            *p,
            "lora_A" | "lora_B" | "base_layer" | "lora_dropout" | "paca_P" | "paca_idx"
        )
    }) {
        parts.pop();
    }
    parts.join(".")
}

fn saved_modules(t: &Trace, cfg: &Config) -> Vec<SavedModuleRow> {
    let g = graph::build(&cfg.model, &cfg.method, &cfg.workload);
    /// predicted bytes, traced bytes, traced (tensors, bytes) by dtype
    type Row = (f64, f64, BTreeMap<String, (u64, f64)>);
    let mut acc: BTreeMap<String, Row> = BTreeMap::new();
    let emb_prefix = match cfg.model.family {
        costsim_model::arch::Family::Gpt2 => "transformer",
        costsim_model::arch::Family::Llama => "model",
    };
    let mut add = |key: String, b: f64| acc.entry(key).or_default().0 += b;
    for (m, b) in &g.embedding.saved_by_module {
        add(linear_key(&format!("{emb_prefix}.{m}")), *b);
    }
    for i in 0..g.layer_class.len() {
        for (m, b) in &g.layer(i).saved_by_module {
            add(linear_key(&format!("{emb_prefix}.layers.{i}.{m}")), *b);
        }
    }
    for (m, b) in &g.head.saved_by_module {
        // transformers computes the loss in the top-level model's forward: the trace files it
        // under the root path, costsim under "loss".
        add(linear_key(m), *b);
    }
    for r in t.saved.iter().filter(|r| !r.param) {
        let e = acc.entry(linear_key(&r.module)).or_default();
        e.1 += r.bytes;
        let d = e.2.entry(r.dtype.clone()).or_default();
        d.0 += r.tensors;
        d.1 += r.bytes;
    }
    acc.into_iter()
        .map(|(module, (predicted, traced, detail))| SavedModuleRow {
            module,
            predicted,
            traced,
            traced_detail: detail
                .iter()
                .map(|(dt, (n, b))| format!("{n}×{dt} {b:.0} B"))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect()
}

const PHASES: [(Phase, &str); 3] = [
    (Phase::Forward, "forward"),
    (Phase::Backward, "backward"),
    (Phase::Optimizer, "optimizer"),
];

/// Ops the tracer counts as launches that are not kernels.
fn not_a_kernel(op: &str) -> bool {
    op.starts_with("_record_function")
}

/// Launches of the trace per phase: the tracer's counts, with each `_foreach_*` op replaced by
/// the multi_tensor_apply launches of its tensor sizes.
pub fn traced_launches(t: &Trace, phase: &str) -> u64 {
    let rows: u64 = t
        .ops
        .iter()
        .filter(|r| r.phase == phase && !r.op.starts_with("_foreach_") && !not_a_kernel(&r.op))
        .map(|r| r.launches)
        .sum();
    let foreach: u64 = t
        .foreach
        .iter()
        .filter(|f| f.phase == phase)
        .map(|f| u64::from(f.launches()))
        .sum();
    rows + foreach
}

/// costsim's kernel-launching ops in a phase: one per kernel record that launches anything,
/// the chunked launches for multi-tensor (`_foreach_*`) ops, as the trace side counts them.
fn predicted_ops(p: &costsim_model::predict::Prediction, phase: Phase) -> u64 {
    p.kernel_rows
        .iter()
        .flatten()
        .filter(|k| k.phase == phase && k.launches > 0)
        .map(|k| {
            if k.name.starts_with("_foreach_") {
                u64::from(k.launches)
            } else {
                1
            }
        })
        .sum()
}

/// FLOPs of costsim's matrix products and attention in a phase: what the trace counts (its
/// elementwise ops carry no FLOPs there).
fn matmul_flops(p: &costsim_model::predict::Prediction, phase: Phase) -> f64 {
    p.kernel_rows
        .iter()
        .flatten()
        .filter(|k| k.phase == phase && matches!(k.kind, KernelKind::Gemm | KernelKind::Attention))
        .map(|k| k.flops)
        .sum()
}

/// Module key shared by both sides: the path below the layer index (`layers.*.self_attn.q_proj`),
/// peft's adapter name (`.default`) and GPT-2's `transformer.` prefix removed.
pub fn module_key(path: &str) -> String {
    let mut parts: Vec<&str> = path.split('.').filter(|p| *p != "default").collect();
    if parts.first() == Some(&"transformer") || parts.first() == Some(&"model") {
        parts.remove(0);
    }
    if parts.len() >= 2 && (parts[0] == "layers" || parts[0] == "h") {
        if parts[1].parse::<u32>().is_ok() {
            parts[1] = "*";
        }
        parts[0] = "layers";
    }
    // costsim's own names for parts transformers runs inline: rope inside self_attn, eager
    // attention's two batched matmuls (q·kᵀ, probabilities·v), the loss in the top-level
    // model's forward.
    if matches!(parts.last(), Some(&"rotary" | &"qk" | &"av")) {
        parts.pop();
    }
    if parts == ["loss"] {
        parts.clear();
    }
    parts.join(".")
}

/// Compare one trace with the model; with `hw`, also the phase times of a timed trace.
pub fn compare_trace(
    t: &Trace,
    source: &str,
    hw: Option<&costsim_hardware::Profile>,
) -> Result<TraceComparison> {
    let cfg = config_of(t, source, hw)?;
    let p = predict(
        &cfg,
        Detail {
            per_layer: false,
            kernels: true,
        },
        None,
    );
    let mut phases = Vec::new();
    for (phase, name) in PHASES {
        let rec = t.phases.get(name).ok_or_else(|| Error::InvalidArgument {
            what: source.to_string(),
            message: format!("trace has no '{name}' phase"),
        })?;
        let pr =
            p.phases
                .iter()
                .find(|r| r.phase == phase)
                .ok_or_else(|| Error::InvalidArgument {
                    what: source.to_string(),
                    message: format!("prediction has no '{name}' phase"),
                })?;
        let peak = match phase {
            Phase::Forward => p.memory.forward_peak_bytes,
            Phase::Backward => p.memory.backward_peak_bytes,
            Phase::Optimizer => p.memory.optimizer_peak_bytes,
        };
        phases.push(PhaseComparison {
            phase: name,
            launches: Pair {
                predicted: predicted_ops(&p, phase) as f64,
                traced: traced_launches(t, name) as f64,
            },
            kernels: pr.launches,
            flops: Pair {
                predicted: matmul_flops(&p, phase),
                traced: rec.flops,
            },
            peak_bytes: Pair {
                predicted: peak,
                traced: rec.peak_bytes,
            },
            time_ms: match (hw, &t.timings) {
                (Some(_), Some(tm)) => tm.get(name).map(|x| Pair {
                    predicted: match phase {
                        Phase::Forward => p.forward_ms,
                        Phase::Backward => p.backward_ms,
                        Phase::Optimizer => p.optimizer_ms,
                    },
                    traced: x.median_s * 1e3,
                }),
                _ => None,
            },
            bytes_read: None,
            bytes_written: None,
        });
    }
    let saved_bytes = Pair {
        predicted: p.memory.activations_bytes,
        traced: t.totals.saved_activation_bytes,
    };
    let nn_modules = t.structure.as_ref().map(|s| Pair {
        predicted: costsim_model::training_loop::nn_modules(&cfg.model, &cfg.method) as f64,
        traced: s.modules as f64,
    });
    let (module_calls, adapter_calls) = {
        let f = t.phases.get("forward");
        let (m, a) = graph::build(&cfg.model, &cfg.method, &cfg.workload).forward_module_calls();
        let pair = |pred: u64, traced: Option<u64>| {
            traced.map(|x| Pair {
                predicted: pred as f64,
                traced: x as f64,
            })
        };
        (
            pair(m, f.and_then(|f| f.module_calls)),
            pair(a, f.and_then(|f| f.adapter_calls)),
        )
    };
    // Module alignment.
    #[derive(Default)]
    struct Side {
        launches: u64,
        ops: BTreeMap<String, u64>,
        read: f64,
        written: f64,
    }
    let has_bytes = t
        .ops
        .iter()
        .all(|r| r.read_bytes.is_some() && r.written_bytes.is_some());
    let mut acc: BTreeMap<(&'static str, String), (Side, Side)> = BTreeMap::new();
    for r in &t.ops {
        let Some(&(_, ph)) = PHASES.iter().find(|(_, n)| *n == r.phase) else {
            continue;
        };
        if r.op.starts_with("_foreach_") || not_a_kernel(&r.op) || r.launches == 0 {
            continue;
        }
        let e = &mut acc.entry((ph, linear_key(&r.module))).or_default().1;
        e.launches += r.launches;
        *e.ops.entry(r.op.clone()).or_default() += r.launches;
        e.read += r.read_bytes.unwrap_or(0.0);
        e.written += r.written_bytes.unwrap_or(0.0);
    }
    for k in p.kernel_rows.iter().flatten() {
        if k.launches == 0 {
            continue;
        }
        let Some(&(_, ph)) = PHASES.iter().find(|(p, _)| *p == k.phase) else {
            continue;
        };
        if k.name.starts_with("_foreach_") {
            continue;
        }
        let e = &mut acc.entry((ph, linear_key(&k.module))).or_default().0;
        e.launches += 1;
        *e.ops.entry(k.name.to_string()).or_default() += 1;
        // The trace counts tensors; costsim prices PaCA's two strided kernels per touched
        // sector (docs/model.md), a cost decision the kernel tests check by hand. Compared here
        // as tensors: the gather reads what it returns, the column write writes what it reads.
        let (read, written) = match k.name {
            "index_select" => (k.bytes_written, k.bytes_written),
            "index_put_" => (k.bytes_read, k.bytes_read),
            _ => (k.bytes_read, k.bytes_written),
        };
        e.read += read;
        e.written += written;
    }
    let fmt_ops = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let pair = |p: f64, t: f64| {
        has_bytes.then_some(Pair {
            predicted: p,
            traced: t,
        })
    };
    let modules: Vec<ModuleRow> = acc
        .into_iter()
        .map(|((phase, module), (pred, traced))| ModuleRow {
            phase,
            module,
            predicted: pred.launches,
            traced: traced.launches,
            traced_ops: fmt_ops(&traced.ops),
            predicted_ops: fmt_ops(&pred.ops),
            bytes_read: pair(pred.read, traced.read),
            bytes_written: pair(pred.written, traced.written),
        })
        .collect();
    // Phase totals of the bytes: the modules summed.
    for pc in &mut phases {
        let sum = |f: &dyn Fn(&ModuleRow) -> Option<Pair>| {
            modules
                .iter()
                .filter(|m| m.phase == pc.phase)
                .filter_map(f)
                .fold(None, |acc: Option<Pair>, p| {
                    let a = acc.unwrap_or(Pair {
                        predicted: 0.0,
                        traced: 0.0,
                    });
                    Some(Pair {
                        predicted: a.predicted + p.predicted,
                        traced: a.traced + p.traced,
                    })
                })
        };
        pc.bytes_read = sum(&|m| m.bytes_read);
        pc.bytes_written = sum(&|m| m.bytes_written);
    }
    let saved_modules = saved_modules(t, &cfg);
    let kinds = match (hw, &t.cuda_kernels) {
        (Some(hw), Some(prof)) => kind_times(&p, prof, hw.synchronous),
        _ => Vec::new(),
    };
    let ledger = hw.and_then(|_| crate::ledger::ledger(&p, t));
    Ok(TraceComparison {
        ledger,
        kinds,
        saved_modules,
        name: format!(
            "{}-{} {} {} b{}×s{}",
            t.model.family,
            t.model.preset,
            t.method.name,
            t.workload.precision,
            t.workload.batch,
            t.workload.seq
        ),
        source: source.to_string(),
        phases,
        saved_bytes,
        modules,
        nn_modules,
        module_calls,
        adapter_calls,
    })
}

/// Per phase and kernel class, costsim's time against the profiler's: device time on a GPU,
/// self CPU time on a CPU. Ops the profiler timed without a time field (older traces) are left
/// out; classes neither side has are not listed.
fn kind_times(
    p: &costsim_model::predict::Prediction,
    prof: &BTreeMap<String, ProfiledPhase>,
    synchronous: bool,
) -> Vec<KindTime> {
    let mut out = Vec::new();
    for (phase, name) in PHASES {
        let Some(pp) = prof.get(name) else {
            continue;
        };
        let mut acc: BTreeMap<&'static str, (f64, f64, u64)> = BTreeMap::new();
        for (op, r) in &pp.by_op {
            let t = if synchronous {
                r.self_cpu_us
            } else {
                r.device_us
            };
            let Some(t) = t else { continue };
            let e = acc.entry(op_kind(op)).or_default();
            e.1 += t / 1e3;
            e.2 += r.calls;
        }
        if acc.is_empty() {
            continue;
        }
        for k in p.kernel_rows.iter().flatten().filter(|k| k.phase == phase) {
            let class = kind_class(k.kind, k.name);
            acc.entry(class).or_default().0 += k.device_us / 1e3;
        }
        for (kind, (pred, traced, ops)) in acc {
            out.push(KindTime {
                phase: name,
                kind,
                time_ms: Pair {
                    predicted: pred,
                    traced,
                },
                traced_ops: ops,
            });
        }
    }
    out
}

/// Bytes read and written by one part of the model in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct BytesPart {
    pub part: String,
    pub read: Pair,
    pub written: Pair,
}

/// The module rows' bytes grouped into parts both sides attribute alike: in forward, each module
/// (costsim's `self_attn.qk`/`.av` GEMMs of SDPA's math path folded into `self_attn`, where the
/// trace runs them); in backward, each layer whole and the embeddings together, since autograd
/// runs a residual gradient's add, or a tied weight's sum, under whichever module's backward
/// finishes it, and costsim under the block or the other use. `None` when the trace does not
/// record bytes.
pub fn bytes_parts(c: &TraceComparison, phase: &str) -> Option<Vec<BytesPart>> {
    let mut parts: BTreeMap<String, (Pair, Pair)> = BTreeMap::new();
    for m in c.modules.iter().filter(|m| m.phase == phase) {
        let (read, written) = (m.bytes_read?, m.bytes_written?);
        let mut key = m.module.clone();
        for suffix in [".qk", ".av"] {
            if let Some(k) = key.strip_suffix(suffix) {
                key = k.to_string();
            }
        }
        if phase == "backward" {
            if key.starts_with("layers.*") {
                key = "layers.*".into();
            } else if matches!(key.as_str(), "wte" | "wpe" | "embed_tokens") {
                key = "embeddings".into();
            }
        }
        let zero = Pair {
            predicted: 0.0,
            traced: 0.0,
        };
        let e = parts.entry(key).or_insert((zero, zero));
        e.0.predicted += read.predicted;
        e.0.traced += read.traced;
        e.1.predicted += written.predicted;
        e.1.traced += written.traced;
    }
    Some(
        parts
            .into_iter()
            .map(|(part, (read, written))| BytesPart {
                part,
                read,
                written,
            })
            .collect(),
    )
}

pub(crate) fn pct(e: f64) -> String {
    if e.is_finite() {
        format!("{:+.1}%", 100.0 * e)
    } else {
        "n/a".to_string()
    }
}

#[path = "trace_render.rs"]
mod report;
pub use report::render;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traced_foreach_launches_by_hand() {
        // 100 tensors of 10 elements: only the tensor limit binds (torch 2.11's
        // MultiTensorApply.cuh: 110, 64, 48 tensors at depth 1, 2, 3; 96 at depth 1 with a
        // scalar list).
        let rec = |op: &str, lists: usize, scalar_list: bool| ForeachRec {
            phase: "optimizer".into(),
            op: op.into(),
            lists,
            numels: vec![10; 100],
            scalar_list,
            counters_on_device: false,
        };
        // Out of place: the input list and the output list, depth 2: ⌈100/64⌉ = 2.
        assert_eq!(rec("_foreach_sqrt", 1, false).launches(), 2);
        // The norm writes per-tensor scalars, not a list: depth 1, ⌈100/110⌉ = 1.
        assert_eq!(rec("_foreach_norm", 1, false).launches(), 1);
        // In place by a list of floats: ⌈100/96⌉ = 2.
        assert_eq!(rec("_foreach_div_", 1, true).launches(), 2);
        assert_eq!(rec("_foreach_div_", 1, false).launches(), 1);
        // addcmul_ in place over self, tensor1, tensor2: depth 3, ⌈100/48⌉ = 3.
        assert_eq!(rec("_foreach_addcmul_", 3, false).launches(), 3);
        // AdamW's step counters, as older traces list them: one-element tensors, no launch;
        // the same op over the 10-element tensors launches ⌈100/110⌉ = 1.
        let steps = ForeachRec {
            numels: vec![1; 448],
            ..rec("_foreach_add_", 1, false)
        };
        assert_eq!(steps.launches(), 0);
        assert_eq!(rec("_foreach_add_", 1, false).launches(), 1);
        // A fused AdamW's counters are on the device: ⌈448/110⌉ = 5 launches.
        let on_device = ForeachRec {
            counters_on_device: true,
            ..steps
        };
        assert_eq!(on_device.launches(), 5);
    }

    #[test]
    fn aten_ops_fall_into_costsim_kinds() {
        for (op, kind) in [
            ("aten::mm", "gemm"),
            ("aten::addmm", "gemm"),
            (
                "aten::_scaled_dot_product_flash_attention_for_cpu",
                "attention",
            ),
            (
                "aten::_scaled_dot_product_efficient_attention_backward",
                "attention",
            ),
            ("aten::native_layer_norm_backward", "norm"),
            ("aten::_log_softmax", "softmax"),
            ("aten::_to_copy", "cast"),
            ("aten::linalg_vector_norm", "reduction"),
            ("aten::embedding", "gather"),
            ("aten::embedding_dense_backward", "scatter"),
            ("aten::native_dropout", "dropout"),
            ("aten::_foreach_addcdiv_", "optimizer"),
            ("aten::linear", "dispatch"),
            ("aten::view", "dispatch"),
            ("aten::mul", "elementwise"),
            ("aten::silu_backward", "elementwise"),
        ] {
            assert_eq!(op_kind(op), kind, "{op}");
        }
        // Every costsim kind lands in a class the trace side can produce.
        let classes: Vec<&str> = [
            "aten::mm",
            "aten::_scaled_dot_product_flash_attention",
            "aten::native_layer_norm",
            "aten::_softmax",
            "aten::_to_copy",
            "aten::sum",
            "aten::index_select",
            "aten::index_put_",
            "aten::native_dropout",
            "aten::_foreach_add_",
            "aten::linear",
            "aten::add",
        ]
        .iter()
        .map(|o| op_kind(o))
        .collect();
        for k in [
            KernelKind::Gemm,
            KernelKind::Attention,
            KernelKind::Norm,
            KernelKind::Softmax,
            KernelKind::Cast,
            KernelKind::Reduction,
            KernelKind::Gather,
            KernelKind::Scatter,
            KernelKind::Optimizer,
            KernelKind::Host,
            KernelKind::Elementwise,
        ] {
            assert!(classes.contains(&kind_class(k, "x")), "{k:?}");
        }
        assert_eq!(
            kind_class(KernelKind::Elementwise, "native_dropout"),
            "dropout"
        );
    }

    #[test]
    fn module_keys_join_both_sides() {
        assert_eq!(
            module_key("model.layers.3.self_attn.q_proj"),
            "layers.*.self_attn.q_proj"
        );
        assert_eq!(
            module_key("model.layers.12.self_attn.q_proj.lora_A.default"),
            "layers.*.self_attn.q_proj.lora_A"
        );
        assert_eq!(
            module_key("transformer.h.0.attn.c_attn"),
            "layers.*.attn.c_attn"
        );
        assert_eq!(module_key("lm_head"), "lm_head");
        // costsim's names for eager attention's matmuls and rope fold into the attention.
        assert_eq!(module_key("transformer.h.0.attn.qk"), "layers.*.attn");
        assert_eq!(
            module_key("model.layers.1.self_attn.av"),
            "layers.*.self_attn"
        );
        assert_eq!(
            module_key("model.layers.1.self_attn.rotary"),
            "layers.*.self_attn"
        );
    }

    #[test]
    fn record_function_markers_are_not_kernels() {
        // torch.profiler's `record_function` ranges reach the dispatcher as ops; they launch
        // nothing on the device.
        assert!(not_a_kernel("_record_function_enter_new"));
        assert!(not_a_kernel("_record_function_exit"));
        assert!(!not_a_kernel("mm"));
        assert!(!not_a_kernel("native_dropout"));
    }

    #[test]
    fn pair_error_is_relative_to_the_trace() {
        // predicted 110 against traced 100 is +10%.
        let p = Pair {
            predicted: 110.0,
            traced: 100.0,
        };
        assert!((p.error() - 0.10).abs() < 1e-12);
        assert_eq!(
            Pair {
                predicted: 0.0,
                traced: 0.0
            }
            .error(),
            0.0
        );
    }
}
