//! The per-kernel graph of one training step, as PyTorch eager launches it.
//!
//! Kernels come from a small symbolic autograd tracer: each forward op records the kernels it
//! launches (FLOPs, bytes read and written, dtype, launches, dependencies), the tensors it saves
//! for backward, and pushes the kernels of its backward onto a tape. Backward is the tape replayed
//! in reverse, so the usual autograd rules fall out of the recipe instead of being special-cased:
//! an op whose inputs and parameters do not require grad records nothing; an input gradient is
//! computed only for inputs that require grad (so the lowest trained layer computes no dX of its
//! own input); frozen weights get no weight-gradient GEMM; a gradient crossing a dtype boundary
//! gets a cast; a tensor consumed k times gets k−1 gradient additions; broadcast inputs get a
//! sum reduction; with gradient accumulation each trainable tensor gets an accumulate-add.
//!
//! Recipes follow `kernels.md` (docs/sources.md): Hugging Face `transformers` eager GPT-2 and Llama
//! blocks, peft's LoRA `Linear.forward`, the PaCA reference layer, torch.autocast's casts, and
//! torch.optim's multi-tensor AdamW. FLOPs are counted as floating-point operations (a multiply-add
//! is 2), never MACs.
//!
//! The code is split by concern, so each modelling rule lives in one place: `tracer` (the
//! symbolic autograd tracer and its saving rules), `linear` (linear layers and the full, LoRA and
//! PaCA adapters), `attention` (eager and SDPA attention, rotary embedding), `norms` (LayerNorm,
//! RMSNorm, dropout, residual adds, activations), `block` (transformer blocks and the embedding),
//! `head` (LM head and loss) and `optimizer` (the optimizer phase and its multi-tensor launches).

mod attention;
mod block;
mod head;
#[cfg(test)]
mod kernel_tests;
mod linear;
mod norms;
mod optimizer;
mod tracer;

pub use linear::{strided_columns_bytes, PACA_IDX, PACA_P, SECTOR_BYTES};
pub use optimizer::{foreach_launches, foreach_launches_scalarlist};

use crate::arch::{Family, ModelConfig};
use crate::method::MethodSpec;
use crate::workload::{DType, Workload};
use block::{block, embedding, LayerClass};
use costsim_hardware::MathMode;
use head::head;
use optimizer::{no_decay_mask, optimizer, trainable_tensors};
use serde::Serialize;
use smallvec::SmallVec;
use std::fmt;

/// Dependencies of a kernel: indices of the kernels it reads from, inline up to three (almost
/// every op has at most three inputs), so building a graph allocates once per segment, not per
/// kernel.
pub type Deps = SmallVec<[u32; 3]>;

/// Phase of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Forward,
    Backward,
    Optimizer,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Forward, Phase::Backward, Phase::Optimizer];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Backward => "backward",
            Self::Optimizer => "optimizer",
        }
    }
}

/// What a kernel does, which decides how its time is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum KernelKind {
    Gemm,
    Elementwise,
    Reduction,
    Norm,
    Softmax,
    Attention,
    Cast,
    Gather,
    Scatter,
    Optimizer,
    /// Host-side op with no kernel (view, reshape, CPU scalar math): host time only.
    Host,
}

impl KernelKind {
    pub const ALL: [KernelKind; 11] = [
        Self::Gemm,
        Self::Elementwise,
        Self::Reduction,
        Self::Norm,
        Self::Softmax,
        Self::Attention,
        Self::Cast,
        Self::Gather,
        Self::Scatter,
        Self::Optimizer,
        Self::Host,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gemm => "gemm",
            Self::Elementwise => "elementwise",
            Self::Reduction => "reduction",
            Self::Norm => "norm",
            Self::Softmax => "softmax",
            Self::Attention => "attention",
            Self::Cast => "cast",
            Self::Gather => "gather",
            Self::Scatter => "scatter",
            Self::Optimizer => "optimizer",
            Self::Host => "host",
        }
    }
}

/// Where a kernel sits in the model: the part before its module path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case", tag = "scope", content = "index")]
pub enum Scope {
    Embedding,
    Layer(u32),
    Head,
    Optimizer,
}

/// Shape of a (batched) GEMM: C[m×n] = A[m×k]·B[k×n], `batch` independent products.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Gemm {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub batch: u64,
}

/// One kernel (or host-only op) of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Op name as the profiler would show it (`addmm`, `dropout`, `_foreach_lerp_`).
    pub name: &'static str,
    /// Module path below the scope, e.g. `self_attn.q_proj`.
    pub module: &'static str,
    /// Sub-module, e.g. `lora_A`; empty when none.
    pub piece: &'static str,
    pub kind: KernelKind,
    pub dtype: DType,
    /// Math mode for GEMMs and attention.
    pub math: MathMode,
    pub flops: f64,
    pub bytes_read: f64,
    pub bytes_written: f64,
    /// GPU launches (0 for host-only ops; several for multi-tensor optimizer ops).
    pub launches: u32,
    pub gemm: Option<Gemm>,
    /// Indices, within the same segment, of the kernels whose outputs this one reads.
    pub deps: Deps,
    /// nn.Module calls that start at this op (host cost under pytorch-eager).
    pub module_calls: u8,
    /// peft adapted-module forwards that start at this op.
    pub peft_calls: u8,
    /// Extra host work in units of "one parameter tensor handled in Python" (optimizer loops).
    pub host_tensors: u32,
    /// Recomputed forward op under gradient checkpointing (issued in backward).
    pub recompute: bool,
    /// A host op that reads a result back from the device (`.item()`: a device-to-host copy
    /// that waits for the stream), so the host issues nothing after it until the device has run
    /// everything issued before it. At most one a segment (`simulate::CostedSegment`).
    pub syncs: bool,
}

impl Kernel {
    fn new(name: &'static str, kind: KernelKind, dtype: DType) -> Self {
        Self {
            name,
            module: "",
            piece: "",
            kind,
            dtype,
            math: MathMode::Fp32,
            flops: 0.0,
            bytes_read: 0.0,
            bytes_written: 0.0,
            launches: 1,
            gemm: None,
            deps: Deps::new(),
            module_calls: 0,
            peft_calls: 0,
            host_tensors: 0,
            recompute: false,
            syncs: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn new_for_test(kind: KernelKind, math: MathMode) -> Self {
        let mut k = Self::new("test", kind, DType::Bf16);
        k.math = math;
        k
    }

    /// Full dotted module path, `model.layers.3.self_attn.q_proj.lora_A`.
    pub fn path(&self, family: Family, scope: Scope) -> String {
        let mut s = String::new();
        match (family, scope) {
            (Family::Gpt2, Scope::Layer(i)) => s.push_str(&format!("transformer.h.{i}")),
            (Family::Llama, Scope::Layer(i)) => s.push_str(&format!("model.layers.{i}")),
            (Family::Gpt2, Scope::Embedding) => s.push_str("transformer"),
            (Family::Llama, Scope::Embedding) => s.push_str("model"),
            (_, Scope::Head) => {}
            (_, Scope::Optimizer) => s.push_str("optimizer"),
        }
        for part in [self.module, self.piece] {
            if !part.is_empty() {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(part);
            }
        }
        s
    }
}

/// The kernels of one scope in one phase, in issue order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Segment {
    pub kernels: Vec<Kernel>,
}

/// How a recipe used a comparison of two sizes a, b ([`ScopeGraph::guards`]): which of its
/// outcomes lead to the same graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardKind {
    /// `a.max(b)` or `a.min(b)`: only the value is used, and at a = b both operands give it,
    /// so a tie leads the same way as a < b and as a > b.
    Extremum,
    /// `a < b` as a condition: a tie is "not less", the same way as a > b.
    Less,
    /// The scope's running transient maximum, `transient = transient.max(size)` with a the
    /// transient so far (0 before the first) and b the size: nothing but
    /// [`ScopeGraph::transient_bytes`], the last maximum, depends on which is larger, so a
    /// rescaled graph recomputes the chain instead of refusing a point where it changes.
    Transient,
}

/// Forward and backward of one scope, plus what it keeps for backward.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScopeGraph {
    pub forward: Segment,
    /// Backward of the first micro-batch (no gradient accumulation adds).
    pub backward: Segment,
    /// Backward of later micro-batches (accumulate-grad adds included).
    pub backward_accum: Segment,
    /// Bytes saved for backward by the forward (0 when nothing below needs grad).
    pub saved_bytes: f64,
    /// `saved_bytes` by the module (below the scope) that kept each tensor, in first-save order.
    pub saved_by_module: Vec<(&'static str, f64)>,
    /// Bytes kept across the forward when gradient checkpointing (the block input).
    pub checkpoint_bytes: f64,
    /// Trainable parameters of this scope.
    pub trainable: u64,
    /// Bytes a recipe knows its backward holds beyond what is saved (0: estimate from the
    /// transient and saved bytes).
    pub backward_working_bytes: f64,
    /// Largest single tensor written in the forward that is not saved (transient), bytes.
    pub transient_bytes: f64,
    /// Whether the scope's output requires grad.
    pub output_rg: bool,
    /// The two operands of every comparison of sizes the recipes made (a max, a min, a
    /// broadcast test), in the order made, and how the recipe used it. A graph rescaled to
    /// other sizes (`sweep`'s rank templates) stands for a fresh build only where each of these
    /// leads the recipe the same way ([`GuardKind`]).
    pub guards: Vec<(f64, f64, GuardKind)>,
}

/// The whole step: scopes plus the optimizer.
#[derive(Debug, Clone, PartialEq)]
pub struct StepGraph {
    pub family: Family,
    pub embedding: ScopeGraph,
    /// Distinct layer graphs; `layer_class[i]` indexes into it.
    pub layer_graphs: Vec<ScopeGraph>,
    pub layer_class: Vec<usize>,
    pub head: ScopeGraph,
    pub optimizer: Segment,
    /// Trainable tensors (element counts), in optimizer order.
    pub trainable_tensors: Vec<u64>,
    /// nn.Modules of the model as built (what a Trainer's `model.train()` walks;
    /// [`crate::training_loop::nn_modules`]).
    pub nn_modules: u64,
}

impl StepGraph {
    /// Graph of layer `i`.
    pub fn layer(&self, i: usize) -> &ScopeGraph {
        &self.layer_graphs[self.layer_class[i]]
    }

    /// nn.Module calls and adapter-layer calls of one forward (what `host.module-call-us` and
    /// `host.peft-module-us` are charged on under pytorch-eager): the traces' `module_calls`
    /// and `adapter_calls` of the forward phase (`validate --trace` compares them).
    pub fn forward_module_calls(&self) -> (u64, u64) {
        let sum = |seg: &Segment| {
            seg.kernels.iter().fold((0u64, 0u64), |(m, p), k| {
                (m + u64::from(k.module_calls), p + u64::from(k.peft_calls))
            })
        };
        let (mut m, mut p) = sum(&self.embedding.forward);
        for &c in &self.layer_class {
            let (lm, lp) = sum(&self.layer_graphs[c].forward);
            m += lm;
            p += lp;
        }
        let (hm, hp) = sum(&self.head.forward);
        (m + hm, p + hp)
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Building the step
// ---------------------------------------------------------------------------------------------

/// Context shared by the recipes.
struct Ctx<'a> {
    model: &'a ModelConfig,
    method: &'a MethodSpec,
    w: &'a Workload,
    /// Tokens M = batch · seq.
    m: u64,
    /// Matmul dtype.
    c: DType,
    /// Parameter dtype.
    p: DType,
    /// Residual-stream dtype: fp32 under autocast (embeddings are fp32), else the param dtype.
    r: DType,
}

impl<'a> Ctx<'a> {
    fn new(model: &'a ModelConfig, method: &'a MethodSpec, w: &'a Workload) -> Self {
        let p = w.precision.param_dtype();
        Self {
            model,
            method,
            w,
            m: w.tokens(),
            c: w.precision.compute_dtype(),
            p,
            r: if w.precision.is_autocast() {
                DType::F32
            } else {
                p
            },
        }
    }
}

/// Build the step graph of a configuration.
pub fn build(model: &ModelConfig, method: &MethodSpec, w: &Workload) -> StepGraph {
    let cx = Ctx::new(model, method, w);
    let accum = w.grad_accum > 1;
    let mut embedding = embedding(&cx, false);
    if accum {
        embedding.backward_accum = self::embedding(&cx, true).backward;
    }
    let (lo, hi) = method.trained_layers(model);
    let mut classes: Vec<LayerClass> = Vec::new();
    let mut layer_graphs = Vec::new();
    let mut layer_class = Vec::with_capacity(model.layers as usize);
    let mut rg = embedding.output_rg;
    for i in 0..model.layers {
        let class = LayerClass {
            trained: (lo..=hi).contains(&i),
            input_rg: rg,
        };
        let ci = match classes.iter().position(|c| *c == class) {
            Some(ci) => ci,
            None => {
                let mut g = block(&cx, class, false);
                if accum {
                    g.backward_accum = block(&cx, class, true).backward;
                }
                classes.push(class);
                layer_graphs.push(g);
                classes.len() - 1
            }
        };
        rg = layer_graphs[ci].output_rg;
        layer_class.push(ci);
    }
    let mut head_g = head(&cx, rg, false);
    if accum {
        head_g.backward_accum = head(&cx, rg, true).backward;
    }
    let tensors = trainable_tensors(&cx);
    let optimizer = optimizer(&cx, &tensors, &param_group_mask(&cx), true);
    StepGraph {
        family: model.family,
        embedding,
        layer_graphs,
        layer_class,
        head: head_g,
        optimizer,
        trainable_tensors: tensors,
        nn_modules: crate::training_loop::nn_modules(model, method),
    }
}

/// Which trainable tensors a Trainer's group without weight decay holds, where the workload's
/// optimizer has that group (else empty: one group).
fn param_group_mask(cx: &Ctx) -> Vec<bool> {
    match cx.w.param_groups {
        crate::ParamGroups::DecayAndNoDecay => no_decay_mask(cx),
        crate::ParamGroups::One => Vec::new(),
    }
}

/// Tensors in each of the optimizer's parameter groups for `method` under `w`, as
/// torch.optim's `param_groups` hold them: one group, or a Trainer's two (with weight decay,
/// then without; the second may be empty).
pub fn param_group_sizes(model: &ModelConfig, method: &MethodSpec, w: &Workload) -> Vec<u64> {
    let cx = Ctx::new(model, method, w);
    let mask = no_decay_mask(&cx);
    let no_decay = mask.iter().filter(|&&x| x).count() as u64;
    match w.param_groups {
        crate::ParamGroups::DecayAndNoDecay => vec![mask.len() as u64 - no_decay, no_decay],
        crate::ParamGroups::One => vec![mask.len() as u64],
    }
}

/// Rebuild the trainable tensors and the optimizer phase of `g` for `method`, exactly as
/// [`build`] makes them. A graph rescaled to another adapter rank (`rescale`) rebuilds these
/// instead of rescaling them: the optimizer's multi-tensor launch counts are step functions of
/// the tensor sizes, not polynomials of the rank. Neither depends on the batch size or the
/// sequence length (a sweep reuses them across both; tested).
pub fn rebuild_optimizer(
    model: &ModelConfig,
    method: &MethodSpec,
    w: &Workload,
    g: &mut StepGraph,
) {
    (g.trainable_tensors, g.optimizer) = optimizer_phase(model, method, w);
}

/// The trainable tensors and the optimizer phase [`build`] makes for `method`, on their own
/// ([`rebuild_optimizer`]), the launch counts walked rather than recalled (the caller, a
/// sweep, keeps whole phases).
pub fn optimizer_phase(
    model: &ModelConfig,
    method: &MethodSpec,
    w: &Workload,
) -> (Vec<u64>, Segment) {
    let cx = Ctx::new(model, method, w);
    let tensors = trainable_tensors(&cx);
    let optimizer = optimizer(&cx, &tensors, &param_group_mask(&cx), false);
    (tensors, optimizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::preset;
    use crate::method::{MethodName, MethodOptions};
    use crate::workload::Precision;

    /// The step graph of a preset model under a method with default options.
    pub(super) fn graph(
        model: &str,
        method: MethodName,
        w: &Workload,
    ) -> (ModelConfig, MethodSpec, StepGraph) {
        let m = preset(model).unwrap();
        let spec = MethodSpec::resolve(method, &MethodOptions::default(), &m, true).unwrap();
        let g = build(&m, &spec, w);
        (m, spec, g)
    }

    #[test]
    fn the_optimizer_phase_does_not_depend_on_batch_or_seq() {
        // A sweep keeps a rescaled point's optimizer phase and trainable tensors for the same
        // model, method and precision at other batch sizes and sequence lengths.
        for model in ["gpt2", "llama2-7b"] {
            for method in MethodName::ALL {
                for precision in [Precision::Bf16Mixed, Precision::Fp16Mixed, Precision::Fp32] {
                    let w = |batch, seq| Workload {
                        batch,
                        seq,
                        precision,
                        ..Workload::default()
                    };
                    let (_, _, a) = graph(model, method, &w(1, 16));
                    let (_, _, b) = graph(model, method, &w(8, 1000));
                    assert_eq!(a.optimizer, b.optimizer, "{model} {method} {precision:?}");
                    assert_eq!(a.trainable_tensors, b.trainable_tensors);
                }
            }
        }
    }

    #[test]
    fn layer_selective_layers_below_cut_have_no_backward() {
        let w = Workload::default();
        let (m, spec, g) = graph("llama2-7b", MethodName::PacaUpperHalf, &w);
        let (lo, _) = spec.trained_layers(&m);
        assert_eq!(lo, 16);
        for i in 0..lo as usize {
            assert!(g.layer(i).backward.kernels.is_empty());
            assert_eq!(g.layer(i).saved_bytes, 0.0);
        }
        assert!(!g.layer(lo as usize).backward.kernels.is_empty());
        assert!(g.embedding.backward.kernels.is_empty());
    }
}
