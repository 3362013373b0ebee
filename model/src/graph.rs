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
//! Recipes follow `shared/reference/kernels.md`: Hugging Face `transformers` eager GPT-2 and Llama
//! blocks, peft's LoRA `Linear.forward`, the PaCA reference layer, torch.autocast's casts, and
//! torch.optim's multi-tensor AdamW. FLOPs are counted as floating-point operations (a multiply-add
//! is 2), never MACs.

use crate::arch::{Family, Linear, ModelConfig};
use crate::method::{AdapterDtype, MethodKind, MethodSpec};
use crate::workload::{AttentionImpl, DType, Optimizer as Opt, Precision, Workload};
use costsim_hardware::MathMode;
use serde::Serialize;
use smallvec::{smallvec, SmallVec};
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
    /// Bytes kept across the forward when gradient checkpointing (the block input).
    pub checkpoint_bytes: f64,
    /// Trainable parameters of this scope.
    pub trainable: u64,
    /// Largest single tensor written in the forward that is not saved (transient), bytes.
    pub transient_bytes: f64,
    /// Whether the scope's output requires grad.
    pub output_rg: bool,
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
}

impl StepGraph {
    /// Graph of layer `i`.
    pub fn layer(&self, i: usize) -> &ScopeGraph {
        &self.layer_graphs[self.layer_class[i]]
    }
}

// ---------------------------------------------------------------------------------------------
// The tracer
// ---------------------------------------------------------------------------------------------

/// A symbolic tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
struct T {
    id: u32,
    elems: f64,
    dtype: DType,
    /// requires_grad
    rg: bool,
    /// A parameter (resident anyway; saving it costs no memory).
    param: bool,
    /// Index of the producing kernel in the forward segment.
    producer: Option<u32>,
}

impl T {
    fn bytes(&self) -> f64 {
        self.elems * self.dtype.size()
    }
}

/// How an op's backward is launched.
#[derive(Debug, Clone, Copy)]
enum Bwd {
    /// Gradient passes through unchanged (add, view): no math kernel.
    Pass,
    /// One elementwise kernel per input that requires grad, reading `reads` out-sized tensors
    /// (dY included) and writing the input gradient.
    PerInput { reads: f64, flops: f64 },
    /// One backward op of `launches` kernels computing every input gradient at once, reading
    /// `reads` and writing `writes` out-sized tensors.
    Fused {
        name: &'static str,
        kind: KernelKind,
        reads: f64,
        writes: f64,
        launches: u32,
    },
}

struct Tracer<'a> {
    prec: Precision,
    accumulate: bool,
    fwd: Vec<Kernel>,
    tape: Vec<Vec<Kernel>>,
    next_id: u32,
    saved: Vec<(u32, f64)>,
    /// Number of gradient-requiring consumers seen per tensor id.
    uses: Vec<u32>,
    module: &'static str,
    trainable: u64,
    transient: f64,
    _life: std::marker::PhantomData<&'a Workload>,
}

impl<'a> Tracer<'a> {
    fn new(w: &'a Workload, accumulate: bool) -> Self {
        Self {
            prec: w.precision,
            accumulate,
            fwd: Vec::new(),
            tape: Vec::new(),
            next_id: 0,
            saved: Vec::new(),
            uses: Vec::new(),
            module: "",
            trainable: 0,
            transient: 0.0,
            _life: std::marker::PhantomData,
        }
    }

    fn tensor(&mut self, elems: f64, dtype: DType, rg: bool, producer: Option<u32>) -> T {
        let id = self.next_id;
        self.next_id += 1;
        self.uses.push(0);
        T {
            id,
            elems,
            dtype,
            rg,
            param: false,
            producer,
        }
    }

    /// An input activation.
    fn input(&mut self, elems: f64, dtype: DType, rg: bool) -> T {
        self.tensor(elems, dtype, rg, None)
    }

    /// A parameter tensor.
    fn param(&mut self, elems: f64, dtype: DType, trainable: bool) -> T {
        if trainable {
            self.trainable += elems as u64;
        }
        let mut t = self.tensor(elems, dtype, trainable, None);
        t.param = true;
        t
    }

    /// Keep `t` alive for backward. Views share their base's id; the largest view seen stands
    /// for the base. Parameters are resident anyway and cost nothing extra.
    fn save(&mut self, t: &T) {
        if t.param {
            return;
        }
        match self.saved.iter_mut().find(|(id, _)| *id == t.id) {
            Some(entry) => entry.1 = entry.1.max(t.bytes()),
            None => self.saved.push((t.id, t.bytes())),
        }
    }

    fn push_fwd(&mut self, mut k: Kernel, inputs: &[T]) -> u32 {
        if k.module.is_empty() {
            k.module = self.module;
        }
        k.deps = inputs.iter().filter_map(|t| t.producer).collect();
        k.deps.dedup();
        self.fwd.push(k);
        (self.fwd.len() - 1) as u32
    }

    /// Kernels that add a second (third...) gradient into a tensor consumed several times, the
    /// accumulate-grad add of a trainable leaf, and the cast of a gradient back to its input's
    /// dtype.
    fn grad_plumbing(&mut self, group: &mut Vec<Kernel>, input: &T, grad_dtype: DType) {
        if grad_dtype != input.dtype {
            group.push(self.bk(
                "to_copy_backward",
                KernelKind::Cast,
                input.dtype,
                input.elems * grad_dtype.size(),
                input.elems * input.dtype.size(),
                0.0,
            ));
        }
        let uses = &mut self.uses[input.id as usize];
        *uses += 1;
        let extra_use = *uses > 1;
        if extra_use || (input.param && self.accumulate) {
            let name = if input.param {
                "accumulate_grad"
            } else {
                "add"
            };
            group.push(self.bk(
                name,
                KernelKind::Elementwise,
                input.dtype,
                2.0 * input.bytes(),
                input.bytes(),
                input.elems,
            ));
        }
    }

    fn bk(
        &self,
        name: &'static str,
        kind: KernelKind,
        dtype: DType,
        read: f64,
        written: f64,
        flops: f64,
    ) -> Kernel {
        let mut k = Kernel::new(name, kind, dtype);
        k.module = self.module;
        k.bytes_read = read;
        k.bytes_written = written;
        k.flops = flops;
        k
    }

    /// A generic pointwise / reduction op. `saves` lists the inputs (by index) saved for backward;
    /// `save_out` saves the output.
    #[allow(clippy::too_many_arguments)]
    fn op(
        &mut self,
        name: &'static str,
        kind: KernelKind,
        inputs: &[T],
        out_elems: f64,
        out_dtype: DType,
        flops_per_out: f64,
        saves: &[usize],
        save_out: bool,
        bwd: Bwd,
    ) -> T {
        let mut k = Kernel::new(name, kind, out_dtype);
        k.flops = flops_per_out * out_elems;
        k.bytes_read = inputs.iter().map(T::bytes).sum();
        k.bytes_written = out_elems * out_dtype.size();
        let idx = self.push_fwd(k, inputs);
        let rg = inputs.iter().any(|t| t.rg);
        let out = self.tensor(out_elems, out_dtype, rg, Some(idx));
        if !rg {
            self.transient = self.transient.max(out.bytes());
            return out;
        }
        for &i in saves {
            self.save(&inputs[i]);
        }
        if save_out {
            self.save(&out);
        } else {
            self.transient = self.transient.max(out.bytes());
        }
        let mut group = Vec::new();
        let out_bytes = out.bytes();
        match bwd {
            Bwd::Pass => {}
            Bwd::Fused {
                name,
                kind,
                reads,
                writes,
                launches,
            } => {
                let mut b = self.bk(
                    name,
                    kind,
                    out_dtype,
                    reads * out_bytes,
                    writes * out_bytes,
                    0.0,
                );
                b.launches = launches;
                b.flops = 2.0 * flops_per_out * out_elems;
                group.push(b);
            }
            Bwd::PerInput { .. } => {}
        }
        for t in inputs.iter().filter(|t| t.rg) {
            if let Bwd::PerInput { reads, flops } = bwd {
                let b = self.bk(
                    backward_name(name),
                    KernelKind::Elementwise,
                    out_dtype,
                    reads * out_bytes,
                    out_bytes,
                    flops * out_elems,
                );
                group.push(b);
            }
            if t.elems < out_elems {
                // Broadcast input (a norm weight, a bias): sum the gradient over the tokens.
                group.push(self.bk(
                    "sum",
                    KernelKind::Reduction,
                    out_dtype,
                    out_bytes,
                    t.elems * out_dtype.size(),
                    out_elems,
                ));
            }
            self.grad_plumbing(&mut group, t, out_dtype);
        }
        self.tape.push(group);
        out
    }

    /// A cast to `to`. Backward is the cast back (added by `grad_plumbing`).
    fn cast(&mut self, x: &T, to: DType) -> T {
        if x.dtype == to {
            return *x;
        }
        self.op(
            "to_copy",
            KernelKind::Cast,
            &[*x],
            x.elems,
            to,
            0.0,
            &[],
            false,
            Bwd::Pass,
        )
    }

    /// A host-only op (view, reshape, transpose): no kernel, host time only.
    fn host_op(&mut self, name: &'static str) {
        let mut k = Kernel::new(name, KernelKind::Host, DType::F32);
        k.launches = 0;
        self.push_fwd(k, &[]);
    }

    /// C = A·Bᵀ-style GEMM: `x` is m×k, `w` is n×k (a weight or another activation), out m×n.
    /// `bias` is added in the same kernel (addmm). Backward: dX = dY·W (m,k,n) when x requires
    /// grad, dW = dYᵀ·X (n,k,m) when w requires grad, bias gradient = a sum over m.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &mut self,
        name: &'static str,
        piece: &'static str,
        x: &T,
        w: &T,
        bias: Option<&T>,
        m: u64,
        n: u64,
        k: u64,
        batch: u64,
    ) -> T {
        let dt = x.dtype;
        let math = self.prec.math_mode(dt);
        let mut kern = Kernel::new(name, KernelKind::Gemm, dt);
        kern.piece = piece;
        kern.math = math;
        let (mf, nf, kf, bf) = (m as f64, n as f64, k as f64, batch as f64);
        kern.flops = 2.0 * mf * nf * kf * bf;
        kern.bytes_read = x.bytes() + w.bytes() + bias.map_or(0.0, T::bytes);
        kern.bytes_written = mf * nf * bf * dt.size();
        kern.gemm = Some(Gemm { m, n, k, batch });
        let mut ins = vec![*x, *w];
        if let Some(b) = bias {
            ins.push(*b);
        }
        let idx = self.push_fwd(kern, &ins);
        let rg = x.rg || w.rg || bias.is_some_and(|b| b.rg);
        let out = self.tensor(mf * nf * bf, dt, rg, Some(idx));
        if !rg {
            self.transient = self.transient.max(out.bytes());
            return out;
        }
        if w.rg {
            self.save(x);
        }
        if x.rg {
            self.save(w);
        }
        let mut group = Vec::new();
        let g = |gm: u64, gn: u64, gk: u64, read: f64, written: f64, which: &'static str| {
            let mut b = Kernel::new(which, KernelKind::Gemm, dt);
            b.module = self.module;
            b.piece = piece;
            b.math = math;
            b.flops = 2.0 * gm as f64 * gn as f64 * gk as f64 * bf;
            b.bytes_read = read;
            b.bytes_written = written;
            b.gemm = Some(Gemm {
                m: gm,
                n: gn,
                k: gk,
                batch,
            });
            b
        };
        let dy_bytes = out.bytes();
        // Weight gradient first, as autograd's MmBackward computes it.
        let mut pending: Vec<(T, DType)> = Vec::new();
        if w.rg {
            group.push(g(
                n,
                k,
                m,
                dy_bytes + x.bytes(),
                nf * kf * bf * dt.size(),
                "mm_dW",
            ));
            pending.push((*w, dt));
        }
        if x.rg {
            group.push(g(
                m,
                k,
                n,
                dy_bytes + w.bytes(),
                mf * kf * bf * dt.size(),
                "mm_dX",
            ));
            pending.push((*x, dt));
        }
        if let Some(b) = bias.filter(|b| b.rg) {
            group.push(self.bk(
                "sum",
                KernelKind::Reduction,
                dt,
                dy_bytes,
                b.elems * dt.size(),
                mf * nf,
            ));
            pending.push((*b, dt));
        }
        for (t, gdt) in pending {
            self.grad_plumbing(&mut group, &t, gdt);
        }
        self.tape.push(group);
        out
    }

    /// Mark the start of an nn.Module call (host cost under pytorch-eager).
    fn module_call(&mut self, start_len: usize, peft: bool) {
        if let Some(k) = self.fwd.get_mut(start_len) {
            k.module_calls = k.module_calls.saturating_add(1);
            if peft {
                k.peft_calls = k.peft_calls.saturating_add(1);
            }
        }
    }

    fn finish(self, grad_checkpointing: bool, input_bytes: f64, output_rg: bool) -> ScopeGraph {
        let mut backward: Vec<Kernel> = Vec::new();
        if grad_checkpointing && output_rg {
            for k in &self.fwd {
                let mut r = k.clone();
                r.recompute = true;
                r.deps.clear();
                backward.push(r);
            }
        }
        for group in self.tape.into_iter().rev() {
            backward.extend(group);
        }
        // Backward is a chain: each kernel consumes the gradient the previous one produced.
        let offset = 0u32;
        for (i, k) in backward.iter_mut().enumerate() {
            if !k.recompute {
                k.deps = if i == 0 {
                    Deps::new()
                } else {
                    smallvec![offset + i as u32 - 1]
                };
            }
        }
        let saved: f64 = self.saved.iter().map(|(_, b)| b).sum();
        ScopeGraph {
            forward: Segment { kernels: self.fwd },
            backward: Segment { kernels: backward },
            backward_accum: Segment::default(),
            saved_bytes: if grad_checkpointing { 0.0 } else { saved },
            checkpoint_bytes: if grad_checkpointing && output_rg {
                input_bytes
            } else {
                0.0
            },
            trainable: self.trainable,
            transient_bytes: if grad_checkpointing {
                self.transient.max(saved)
            } else {
                self.transient
            },
            output_rg,
        }
    }
}

fn backward_name(name: &'static str) -> &'static str {
    match name {
        "mul" => "mul_backward",
        "pow" => "pow_backward",
        "tanh" => "tanh_backward",
        "silu" => "silu_backward",
        "rsqrt" => "rsqrt_backward",
        "dropout" => "dropout_backward",
        "where" => "where_backward",
        "div" => "div_backward",
        "neg" => "neg_backward",
        "cat" => "cat_backward",
        "mean" => "mean_backward",
        _ => "backward",
    }
}

// ---------------------------------------------------------------------------------------------
// Recipes
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

/// How one linear layer trains.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Treatment {
    Frozen,
    Full,
    Lora,
    Paca,
}

/// A linear layer: autocast casts, the base GEMM, and the method's additions.
fn linear(t: &mut Tracer, cx: &Ctx, x: &T, lin: &Linear, treat: Treatment) -> T {
    let (m, k, n) = (cx.m, lin.in_features, lin.out_features);
    let (mf, kf, nf) = (m as f64, k as f64, n as f64);
    let autocast = cx.w.precision.is_autocast();
    let prev = t.module;
    t.module = lin.path;
    let start = t.fwd.len();
    let r = cx.method.rank;
    let s_rank = r as f64;
    let w_trains = treat == Treatment::Full;
    let w = t.param(nf * kf, cx.p, w_trains);
    let b = lin.bias.then(|| t.param(nf, cx.p, w_trains));

    // PaCA: write the scaled trainable columns P into W before the GEMM (n×r kernels).
    let mut paca_p = None;
    if treat == Treatment::Paca {
        let pp = t.param(nf * s_rank, cx.p, true);
        // The scale-and-write runs under no_grad in the reference: no backward of its own (P's
        // gradient is formed by the replaced GEMM backward below).
        let p_nograd = T { rg: false, ..pp };
        t.op(
            "mul",
            KernelKind::Elementwise,
            &[p_nograd],
            nf * s_rank,
            cx.p,
            1.0,
            &[],
            false,
            Bwd::Pass,
        );
        let mut k_sc = Kernel::new("index_copy_", KernelKind::Scatter, cx.p);
        k_sc.piece = "paca_P";
        k_sc.bytes_read = nf * s_rank * cx.p.size();
        k_sc.bytes_written = nf * s_rank * cx.p.size();
        t.push_fwd(k_sc, &[]);
        paca_p = Some(pp);
    }

    // Under autocast the weight (and bias) are cast to the half type on every forward.
    let wc = if autocast { t.cast(&w, cx.c) } else { w };
    let bc = b.map(|b| if autocast { t.cast(&b, cx.c) } else { b });
    let xc = t.cast(x, cx.c);
    let mut y = t.gemm(
        if bc.is_some() { "addmm" } else { "mm" },
        if treat == Treatment::Lora {
            "base_layer"
        } else {
            ""
        },
        &xc,
        &wc,
        bc.as_ref(),
        m,
        n,
        k,
        1,
    );

    match treat {
        Treatment::Paca => {
            // Gather x[..., idx] (M×r) and save only that. A strided gather touches one 32-byte
            // sector per selected element, so it reads up to 32/elem-size times the useful bytes.
            let sector_elems = 32.0 / xc.dtype.size();
            let mut g = Kernel::new("index_select", KernelKind::Gather, xc.dtype);
            g.piece = "paca_idx";
            g.bytes_read = mf * kf.min(s_rank * sector_elems) * xc.dtype.size();
            g.bytes_written = mf * s_rank * xc.dtype.size();
            let gi = t.push_fwd(g, &[xc]);
            let x_idx = t.tensor(mf * s_rank, xc.dtype, false, Some(gi));
            t.save(&x_idx);
            // The reference's autograd Function replaces the GEMM's backward: dX = dY·W when x
            // requires grad, dP = dYᵀ·x_idx (n,r,M) then the scale s; W's own gradient is never
            // formed. Rebuild the GEMM's tape entry accordingly.
            let Some(pp) = paca_p else {
                unreachable!("PaCA's P is created above")
            };
            let group = if y.rg {
                t.tape.pop().unwrap_or_default()
            } else {
                Vec::new()
            };
            let mut new_group: Vec<Kernel> = group
                .into_iter()
                .filter(|k| k.name == "mm_dX" || k.kind == KernelKind::Cast)
                .collect();
            let dt = y.dtype;
            let mut dp = Kernel::new("mm_dP", KernelKind::Gemm, dt);
            dp.module = t.module;
            dp.piece = "paca_P";
            dp.math = t.prec.math_mode(dt);
            dp.flops = 2.0 * nf * s_rank * mf;
            dp.bytes_read = y.bytes() + x_idx.bytes();
            dp.bytes_written = nf * s_rank * dt.size();
            dp.gemm = Some(Gemm {
                m: n,
                n: r,
                k: m,
                batch: 1,
            });
            new_group.insert(0, dp);
            let mut sc = t.bk(
                "mul",
                KernelKind::Elementwise,
                dt,
                nf * s_rank * dt.size(),
                nf * s_rank * dt.size(),
                nf * s_rank,
            );
            sc.piece = "paca_P";
            new_group.insert(1, sc);
            t.grad_plumbing(&mut new_group, &pp, dt);
            t.tape.push(new_group);
            // The GEMM output requires grad through P.
            y.rg = true;
        }
        Treatment::Lora => {
            let ad = match cx.method.adapter_dtype {
                AdapterDtype::Fp32 => DType::F32,
                AdapterDtype::Base => cx.p,
            };
            let a = t.param(s_rank * kf, ad, true);
            let bb = t.param(nf * s_rank, ad, true);
            t.module = lin.path;
            // peft: x = self._cast_input_dtype(x, lora_A.weight.dtype)
            let mut xl = t.cast(x, ad);
            if cx.method.dropout > 0.0 {
                // Native dropout writes the output and a bool mask; the mask is saved.
                let mut dk = Kernel::new("native_dropout", KernelKind::Elementwise, xl.dtype);
                dk.piece = "lora_dropout";
                dk.flops = 2.0 * xl.elems;
                dk.bytes_read = xl.bytes();
                dk.bytes_written = xl.bytes() + xl.elems;
                let di = t.push_fwd(dk, &[xl]);
                let out = t.tensor(xl.elems, xl.dtype, xl.rg, Some(di));
                if xl.rg {
                    let mask = t.tensor(xl.elems, DType::Bool, false, Some(di));
                    t.save(&mask);
                    let mut group = vec![t.bk(
                        "dropout_backward",
                        KernelKind::Elementwise,
                        xl.dtype,
                        xl.bytes() + xl.elems,
                        xl.bytes(),
                        xl.elems,
                    )];
                    t.grad_plumbing(&mut group, &xl, xl.dtype);
                    t.tape.push(group);
                }
                xl = out;
            }
            // Under autocast lora_A/lora_B are nn.Linear too: their input and weights are cast.
            let (xa, ac, bc2) = if autocast {
                (t.cast(&xl, cx.c), t.cast(&a, cx.c), t.cast(&bb, cx.c))
            } else {
                (xl, a, bb)
            };
            let h = t.gemm("mm", "lora_A", &xa, &ac, None, m, r, k, 1);
            let yl = t.gemm("mm", "lora_B", &h, &bc2, None, m, n, r, 1);
            let scaled = t.op(
                "mul",
                KernelKind::Elementwise,
                &[yl],
                yl.elems,
                yl.dtype,
                1.0,
                &[],
                false,
                Bwd::PerInput {
                    reads: 1.0,
                    flops: 1.0,
                },
            );
            let out_dt = if scaled.dtype == y.dtype {
                y.dtype
            } else {
                DType::F32
            };
            let sum = t.op(
                "add",
                KernelKind::Elementwise,
                &[y, scaled],
                y.elems,
                out_dt,
                1.0,
                &[],
                false,
                Bwd::Pass,
            );
            // peft: result = result.to(torch_result_dtype)
            y = t.cast(&sum, y.dtype);
        }
        Treatment::Frozen | Treatment::Full => {}
    }
    t.module_call(start, treat == Treatment::Lora);
    t.module = prev;
    y
}

/// LayerNorm (GPT-2): one kernel forward (fp32 under autocast), saving mean and rstd; backward is
/// layer_norm_backward plus, when the weight trains, the weight/bias reduction.
fn layer_norm(t: &mut Tracer, cx: &Ctx, x: &T, path: &'static str, trains: bool) -> T {
    let prev = t.module;
    t.module = path;
    let start = t.fwd.len();
    let d = cx.model.hidden as f64;
    let tokens = x.elems / d;
    let wgt = t.param(d, cx.p, trains);
    let bias = t.param(d, cx.p, trains);
    // autocast runs layer_norm in fp32.
    let out_dt = if cx.w.precision.is_autocast() {
        DType::F32
    } else {
        x.dtype
    };
    let xin = t.cast(x, out_dt);
    let mut k = Kernel::new("native_layer_norm", KernelKind::Norm, out_dt);
    k.flops = 8.0 * xin.elems;
    k.bytes_read = xin.bytes() + 2.0 * d * cx.p.size();
    k.bytes_written = xin.elems * out_dt.size() + 2.0 * tokens * 4.0;
    let idx = t.push_fwd(k, &[xin]);
    let rg = xin.rg || trains;
    let out = t.tensor(xin.elems, out_dt, rg, Some(idx));
    if rg {
        t.save(&xin);
        let stats = t.tensor(2.0 * tokens, DType::F32, false, Some(idx));
        t.save(&stats);
        let mut group = vec![];
        if xin.rg {
            let b = t.bk(
                "native_layer_norm_backward",
                KernelKind::Norm,
                out_dt,
                2.0 * out.bytes() + 2.0 * tokens * 4.0,
                out.bytes(),
                8.0 * out.elems,
            );
            group.push(b);
        }
        if trains {
            group.push(t.bk(
                "layer_norm_backward_gamma_beta",
                KernelKind::Reduction,
                out_dt,
                2.0 * out.bytes(),
                2.0 * d * 4.0,
                4.0 * out.elems,
            ));
            t.grad_plumbing(&mut group, &wgt, out_dt);
            t.grad_plumbing(&mut group, &bias, out_dt);
        }
        if xin.rg {
            t.grad_plumbing(&mut group, &xin, out_dt);
        }
        t.tape.push(group);
    } else {
        t.transient = t.transient.max(out.bytes());
    }
    t.module_call(start, false);
    t.module = prev;
    out
}

/// Llama RMSNorm as transformers writes it: to(fp32), pow(2), mean, add eps, rsqrt, mul,
/// to(input dtype), weight * x.
fn rms_norm(t: &mut Tracer, cx: &Ctx, x: &T, path: &'static str, trains: bool) -> T {
    use KernelKind::*;
    let prev = t.module;
    t.module = path;
    let start = t.fwd.len();
    let d = cx.model.hidden as f64;
    let tokens = x.elems / d;
    let wgt = t.param(d, cx.p, trains);
    let in_dt = x.dtype;
    let xf = t.cast(x, DType::F32);
    let sq = t.op(
        "pow",
        Elementwise,
        &[xf],
        xf.elems,
        DType::F32,
        1.0,
        &[0],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 2.0,
        },
    );
    let var = t.op(
        "mean",
        Reduction,
        &[sq],
        tokens,
        DType::F32,
        d,
        &[],
        false,
        Bwd::Fused {
            name: "mean_backward",
            kind: Elementwise,
            reads: 1.0,
            writes: d,
            launches: 1,
        },
    );
    let ve = t.op(
        "add",
        Elementwise,
        &[var],
        tokens,
        DType::F32,
        1.0,
        &[],
        false,
        Bwd::Pass,
    );
    let rs = t.op(
        "rsqrt",
        Elementwise,
        &[ve],
        tokens,
        DType::F32,
        2.0,
        &[],
        true,
        Bwd::PerInput {
            reads: 2.0,
            flops: 3.0,
        },
    );
    let normed = t.op(
        "mul",
        Elementwise,
        &[xf, rs],
        xf.elems,
        DType::F32,
        1.0,
        &[0, 1],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 1.0,
        },
    );
    let back = t.cast(&normed, in_dt);
    let out_dt = if cx.p == DType::F32 || back.dtype == DType::F32 {
        DType::F32
    } else {
        cx.p
    };
    let y = t.op(
        "mul",
        Elementwise,
        &[wgt, back],
        back.elems,
        out_dt,
        1.0,
        &[0, 1],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 1.0,
        },
    );
    t.module_call(start, false);
    t.module = prev;
    y
}

/// Dropout as a kernel writing the output and a bool mask (skipped when p = 0).
fn dropout(t: &mut Tracer, x: &T, p: f64, path: &'static str) -> T {
    if p <= 0.0 {
        return *x;
    }
    let prev = t.module;
    t.module = path;
    let mut k = Kernel::new("native_dropout", KernelKind::Elementwise, x.dtype);
    k.flops = 2.0 * x.elems;
    k.bytes_read = x.bytes();
    k.bytes_written = x.bytes() + x.elems;
    let idx = t.push_fwd(k, &[*x]);
    let out = t.tensor(x.elems, x.dtype, x.rg, Some(idx));
    if x.rg {
        let mask = t.tensor(x.elems, DType::Bool, false, Some(idx));
        t.save(&mask);
        let mut group = vec![t.bk(
            "dropout_backward",
            KernelKind::Elementwise,
            x.dtype,
            x.bytes() + x.elems,
            x.bytes(),
            x.elems,
        )];
        t.grad_plumbing(&mut group, x, x.dtype);
        t.tape.push(group);
    }
    t.module = prev;
    out
}

fn add(t: &mut Tracer, a: &T, b: &T) -> T {
    let dt = if a.dtype == b.dtype {
        a.dtype
    } else {
        DType::F32
    };
    t.op(
        "add",
        KernelKind::Elementwise,
        &[*a, *b],
        a.elems.max(b.elems),
        dt,
        1.0,
        &[],
        false,
        Bwd::Pass,
    )
}

/// Attention over q, k, v (each M×(heads·hd) in the compute dtype, k/v with kv_heads).
fn attention(t: &mut Tracer, cx: &Ctx, q: &T, k: &T, v: &T, path: &'static str, p_drop: f64) -> T {
    use KernelKind::*;
    let prev = t.module;
    t.module = path;
    let (b, s) = (cx.w.batch, cx.w.seq);
    let h = cx.model.heads;
    let hd = cx.model.head_dim();
    let (bf, sf, hf, hdf) = (b as f64, s as f64, h as f64, hd as f64);
    let dt = q.dtype;
    let out = match cx.w.attention {
        AttentionImpl::Sdpa => {
            // Flash / memory-efficient attention: causal FLOPs 4·B·h·S²·hd / 2 forward; backward
            // recomputes the scores, 2.5× the forward FLOPs (FlashAttention-2).
            let flops = 2.0 * bf * hf * sf * sf * hdf;
            let mut kk = Kernel::new("scaled_dot_product_attention", Attention, dt);
            kk.math = t.prec.math_mode(dt);
            kk.flops = flops;
            kk.bytes_read = q.bytes() + k.bytes() + v.bytes();
            let lse = bf * hf * sf * 4.0;
            kk.bytes_written = q.bytes() + lse;
            let idx = t.push_fwd(kk, &[*q, *k, *v]);
            let rg = q.rg || k.rg || v.rg;
            let out = t.tensor(q.elems, dt, rg, Some(idx));
            if rg {
                for x in [q, k, v, &out] {
                    t.save(x);
                }
                let lse_t = t.tensor(bf * hf * sf, DType::F32, false, Some(idx));
                t.save(&lse_t);
                // dot(dO, O) preprocess, the main backward kernel, and the dq conversion.
                let mut bwk = t.bk(
                    "scaled_dot_product_attention_backward",
                    Attention,
                    dt,
                    2.0 * q.bytes() + k.bytes() + v.bytes() + 2.0 * lse,
                    q.bytes() + k.bytes() + v.bytes(),
                    2.5 * flops,
                );
                bwk.math = t.prec.math_mode(dt);
                bwk.launches = 3;
                let mut group = vec![bwk];
                if q.id == k.id {
                    // GPT-2: q, k, v are views of c_attn's output; split's backward is one cat.
                    let whole = T {
                        elems: 3.0 * q.elems,
                        ..*q
                    };
                    group.push(t.bk("cat", Elementwise, dt, whole.bytes(), whole.bytes(), 0.0));
                    t.grad_plumbing(&mut group, &whole, dt);
                } else {
                    for x in [q, k, v] {
                        if x.rg {
                            t.grad_plumbing(&mut group, x, dt);
                        }
                    }
                }
                t.tape.push(group);
            }
            out
        }
        AttentionImpl::Eager => {
            let rep = cx.model.heads / cx.model.kv_heads;
            let (kx, vx) = if rep > 1 {
                // repeat_kv: expand + reshape copies K and V to all heads; backward sums the
                // copies back.
                let mut repeat = |x: &T| {
                    let bwd = Bwd::Fused {
                        name: "sum",
                        kind: Reduction,
                        reads: 1.0,
                        writes: 1.0 / rep as f64,
                        launches: 1,
                    };
                    t.op(
                        "clone",
                        Elementwise,
                        &[*x],
                        q.elems,
                        dt,
                        0.0,
                        &[],
                        false,
                        bwd,
                    )
                };
                (repeat(k), repeat(v))
            } else {
                (*k, *v)
            };
            let scores = t.gemm("bmm", "qk", q, &kx, None, s, s, hd, b * h);
            let scaled = t.op(
                if cx.model.family == Family::Gpt2 {
                    "div"
                } else {
                    "mul"
                },
                Elementwise,
                &[scores],
                scores.elems,
                dt,
                1.0,
                &[],
                false,
                Bwd::PerInput {
                    reads: 1.0,
                    flops: 1.0,
                },
            );
            let mask = t.input(sf * sf, DType::Bool, false);
            let masked = if cx.model.family == Family::Gpt2 {
                t.op(
                    "where",
                    Elementwise,
                    &[mask, scaled],
                    scaled.elems,
                    dt,
                    1.0,
                    &[0],
                    false,
                    Bwd::PerInput {
                        reads: 1.0,
                        flops: 1.0,
                    },
                )
            } else {
                let madd = t.input(sf * sf, dt, false);
                t.op(
                    "add",
                    Elementwise,
                    &[scaled, madd],
                    scaled.elems,
                    dt,
                    1.0,
                    &[],
                    false,
                    Bwd::Pass,
                )
            };
            // softmax runs in fp32 (autocast or dtype=float32), then the probabilities are cast.
            let probs = t.op(
                "softmax",
                Softmax,
                &[masked],
                masked.elems,
                DType::F32,
                5.0,
                &[],
                true,
                Bwd::Fused {
                    name: "softmax_backward_data",
                    kind: Softmax,
                    reads: 2.0,
                    writes: 1.0,
                    launches: 1,
                },
            );
            let probs = t.cast(&probs, dt);
            let probs = dropout(t, &probs, p_drop, path);
            let ctx = t.gemm("bmm", "av", &probs, &vx, None, s, hd, s, b * h);
            // transpose(1, 2).contiguous(): a copy back to (B, S, h·hd).
            t.op(
                "clone",
                Elementwise,
                &[ctx],
                ctx.elems,
                dt,
                0.0,
                &[],
                false,
                Bwd::PerInput {
                    reads: 1.0,
                    flops: 0.0,
                },
            )
        }
    };
    t.module = prev;
    out
}

/// Rotary embedding on q or k as transformers applies it: x·cos + rotate_half(x)·sin, with
/// rotate_half = cat(−x2, x1).
fn rope(t: &mut Tracer, x: &T, cos: &T) -> T {
    use KernelKind::*;
    let dt = x.dtype;
    let a = t.op(
        "mul",
        Elementwise,
        &[*x, *cos],
        x.elems,
        dt,
        1.0,
        &[1],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 1.0,
        },
    );
    let half = t.op(
        "neg",
        Elementwise,
        &[*x],
        x.elems / 2.0,
        dt,
        1.0,
        &[],
        false,
        Bwd::PerInput {
            reads: 1.0,
            flops: 1.0,
        },
    );
    let rot = t.op(
        "cat",
        Elementwise,
        &[half, *x],
        x.elems,
        dt,
        0.0,
        &[],
        false,
        Bwd::Pass,
    );
    let b = t.op(
        "mul",
        Elementwise,
        &[rot, *cos],
        x.elems,
        dt,
        1.0,
        &[1],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 1.0,
        },
    );
    add(t, &a, &b)
}

/// The trained/frozen state of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LayerClass {
    trained: bool,
    input_rg: bool,
}

fn treatment(cx: &Ctx, lin: &Linear, trained: bool) -> Treatment {
    if !trained {
        return Treatment::Frozen;
    }
    match cx.method.kind {
        MethodKind::Full => Treatment::Full,
        MethodKind::Lora if cx.method.targets.contains(lin.role) => Treatment::Lora,
        MethodKind::Paca if cx.method.targets.contains(lin.role) => Treatment::Paca,
        _ => Treatment::Frozen,
    }
}

/// One transformer block.
fn block(cx: &Ctx, class: LayerClass, accumulate: bool) -> ScopeGraph {
    use KernelKind::*;
    let mut t = Tracer::new(cx.w, accumulate);
    let m = cx.m as f64;
    let d = cx.model.hidden as f64;
    let x = t.input(m * d, cx.r, class.input_rg);
    let full = class.trained && cx.method.kind == MethodKind::Full;
    let lins = cx.model.linears();
    let lin = |role| {
        lins.iter()
            .find(|l| l.role == role)
            .copied()
            .expect("block has linear")
    };
    use crate::arch::LinearRole as R;
    let out = match cx.model.family {
        Family::Gpt2 => {
            let h = layer_norm(&mut t, cx, &x, "ln_1", full);
            let l = lin(R::Qkv);
            let qkv = linear(&mut t, cx, &h, &l, treatment(cx, &l, class.trained));
            for _ in 0..6 {
                t.host_op("split/view/permute");
            }
            // q, k, v are views of the fused output.
            let q = T {
                elems: qkv.elems / 3.0,
                ..qkv
            };
            let a = attention(&mut t, cx, &q, &q, &q, "attn", cx.model.dropout);
            t.host_op("view");
            let l = lin(R::O);
            let o = linear(&mut t, cx, &a, &l, treatment(cx, &l, class.trained));
            let o = dropout(&mut t, &o, cx.model.dropout, "attn.resid_dropout");
            let x1 = add(&mut t, &x, &o);
            let h2 = layer_norm(&mut t, cx, &x1, "ln_2", full);
            let l = lin(R::Up);
            let f = linear(&mut t, cx, &h2, &l, treatment(cx, &l, class.trained));
            // gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), eight eager kernels; pow
            // runs in fp32 under autocast, so the chain after it is fp32.
            t.module = "mlp.act";
            let fdt = if cx.w.precision.is_autocast() {
                DType::F32
            } else {
                f.dtype
            };
            let e = f.elems;
            let p3 = t.op(
                "pow",
                Elementwise,
                &[f],
                e,
                fdt,
                2.0,
                &[0],
                false,
                Bwd::PerInput {
                    reads: 2.0,
                    flops: 3.0,
                },
            );
            let c1 = t.op(
                "mul",
                Elementwise,
                &[p3],
                e,
                fdt,
                1.0,
                &[],
                false,
                Bwd::PerInput {
                    reads: 1.0,
                    flops: 1.0,
                },
            );
            let s1 = add(&mut t, &f, &c1);
            let c2 = t.op(
                "mul",
                Elementwise,
                &[s1],
                e,
                fdt,
                1.0,
                &[],
                false,
                Bwd::PerInput {
                    reads: 1.0,
                    flops: 1.0,
                },
            );
            let th = t.op(
                "tanh",
                Elementwise,
                &[c2],
                e,
                fdt,
                4.0,
                &[],
                true,
                Bwd::PerInput {
                    reads: 2.0,
                    flops: 3.0,
                },
            );
            let s2 = t.op(
                "add",
                Elementwise,
                &[th],
                e,
                fdt,
                1.0,
                &[],
                false,
                Bwd::Pass,
            );
            let half = t.op(
                "mul",
                Elementwise,
                &[f],
                e,
                f.dtype,
                1.0,
                &[],
                false,
                Bwd::PerInput {
                    reads: 1.0,
                    flops: 1.0,
                },
            );
            let g = t.op(
                "mul",
                Elementwise,
                &[half, s2],
                e,
                fdt,
                1.0,
                &[0, 1],
                false,
                Bwd::PerInput {
                    reads: 2.0,
                    flops: 1.0,
                },
            );
            t.module = "";
            let l = lin(R::Down);
            let dn = linear(&mut t, cx, &g, &l, treatment(cx, &l, class.trained));
            let dn = dropout(&mut t, &dn, cx.model.dropout, "mlp.dropout");
            add(&mut t, &x1, &dn)
        }
        Family::Llama => {
            let h = rms_norm(&mut t, cx, &x, "input_layernorm", full);
            let (lq, lk, lv) = (lin(R::Q), lin(R::K), lin(R::V));
            let q = linear(&mut t, cx, &h, &lq, treatment(cx, &lq, class.trained));
            let k = linear(&mut t, cx, &h, &lk, treatment(cx, &lk, class.trained));
            let v = linear(&mut t, cx, &h, &lv, treatment(cx, &lv, class.trained));
            for _ in 0..6 {
                t.host_op("view/transpose");
            }
            t.module = "self_attn.rotary";
            let cos = t.input(cx.w.seq as f64 * cx.model.head_dim() as f64, q.dtype, false);
            let q = rope(&mut t, &q, &cos);
            let k = rope(&mut t, &k, &cos);
            t.module = "";
            let a = attention(&mut t, cx, &q, &k, &v, "self_attn", 0.0);
            t.host_op("reshape");
            let l = lin(R::O);
            let o = linear(&mut t, cx, &a, &l, treatment(cx, &l, class.trained));
            let x1 = add(&mut t, &x, &o);
            let h2 = rms_norm(&mut t, cx, &x1, "post_attention_layernorm", full);
            let (lg, lu, ld) = (lin(R::Gate), lin(R::Up), lin(R::Down));
            let g = linear(&mut t, cx, &h2, &lg, treatment(cx, &lg, class.trained));
            let u = linear(&mut t, cx, &h2, &lu, treatment(cx, &lu, class.trained));
            t.module = "mlp.act_fn";
            let a = t.op(
                "silu",
                Elementwise,
                &[g],
                g.elems,
                g.dtype,
                4.0,
                &[0],
                false,
                Bwd::PerInput {
                    reads: 2.0,
                    flops: 5.0,
                },
            );
            t.module = "mlp";
            let gu = t.op(
                "mul",
                Elementwise,
                &[a, u],
                u.elems,
                u.dtype,
                1.0,
                &[0, 1],
                false,
                Bwd::PerInput {
                    reads: 2.0,
                    flops: 1.0,
                },
            );
            t.module = "";
            let dn = linear(&mut t, cx, &gu, &ld, treatment(cx, &ld, class.trained));
            add(&mut t, &x1, &dn)
        }
    };
    t.finish(cx.w.grad_checkpointing, x.bytes(), out.rg)
}

/// Embedding scope: token (and GPT-2 position) lookups, dropout, rotary tables, causal mask.
fn embedding(cx: &Ctx, accumulate: bool) -> ScopeGraph {
    use KernelKind::*;
    let mut t = Tracer::new(cx.w, accumulate);
    let (m, d, s) = (cx.m as f64, cx.model.hidden as f64, cx.w.seq as f64);
    let trains = cx.method.trains_embedding(cx.model);
    let lookup = |t: &mut Tracer, table: &T, rows: f64, path: &'static str| -> T {
        t.module = path;
        let start = t.fwd.len();
        let mut k = Kernel::new("embedding", Gather, cx.p);
        k.bytes_read = rows * 8.0 + rows * d * cx.p.size();
        k.bytes_written = rows * d * cx.p.size();
        let idx = t.push_fwd(k, &[]);
        t.module_call(start, false);
        let out = t.tensor(rows * d, cx.p, table.rg, Some(idx));
        if table.rg {
            // embedding_dense_backward: zero the V×d gradient, sort the ids, scatter-add rows.
            let mut group = vec![
                t.bk(
                    "fill_",
                    Elementwise,
                    DType::F32,
                    0.0,
                    table.elems * 4.0,
                    0.0,
                ),
                t.bk("sort", Reduction, DType::I64, rows * 16.0, rows * 16.0, 0.0),
                t.bk(
                    "embedding_backward",
                    Scatter,
                    DType::F32,
                    rows * d * 4.0 + rows * 8.0,
                    rows * d * 4.0,
                    rows * d,
                ),
            ];
            t.grad_plumbing(&mut group, table, DType::F32);
            t.tape.push(group);
        }
        out
    };
    let out = match cx.model.family {
        Family::Gpt2 => {
            let wte = t.param(cx.model.vocab as f64 * d, cx.p, trains);
            let wpe = t.param(cx.model.max_positions as f64 * d, cx.p, trains);
            t.module = "";
            let mut ar = Kernel::new("arange", Elementwise, DType::I64);
            ar.bytes_written = s * 8.0;
            t.push_fwd(ar, &[]);
            let te = lookup(&mut t, &wte, m, "wte");
            let pe = lookup(&mut t, &wpe, s, "wpe");
            if trains && cx.model.tied_embeddings {
                // The tied LM head's gradient is added into wte's.
                let mut group = vec![];
                t.grad_plumbing(&mut group, &wte, DType::F32);
                t.tape.insert(0, group);
            }
            t.module = "";
            let h = add(&mut t, &te, &pe);
            dropout(&mut t, &h, cx.model.dropout, "drop")
        }
        Family::Llama => {
            let tab = t.param(cx.model.vocab as f64 * d, cx.p, trains);
            let h = lookup(&mut t, &tab, m, "embed_tokens");
            // rotary_emb: inv_freq ⊗ positions, cat, cos, sin, casts (S×hd, once per forward).
            t.module = "rotary_emb";
            let hd = cx.model.head_dim() as f64;
            for name in [
                "arange", "matmul", "cat", "cos", "sin", "to_copy", "to_copy",
            ] {
                let mut k = Kernel::new(name, Elementwise, DType::F32);
                k.bytes_read = s * hd * 4.0;
                k.bytes_written = s * hd * 4.0;
                k.flops = s * hd;
                t.push_fwd(k, &[]);
            }
            t.module = "";
            h
        }
    };
    if cx.w.attention == AttentionImpl::Eager {
        // The causal mask (full, triu, expand to the batch).
        for name in ["full", "triu", "expand_copy"] {
            let mut k = Kernel::new(name, Elementwise, cx.c);
            k.bytes_read = if name == "full" {
                0.0
            } else {
                s * s * cx.c.size()
            };
            k.bytes_written = s * s * cx.c.size();
            t.push_fwd(k, &[]);
        }
    }
    let out_rg = out.rg || cx.w.grad_checkpointing;
    t.finish(false, 0.0, out_rg)
}

/// Final norm, LM head, cross-entropy loss (transformers' ForCausalLMLoss: logits.float(),
/// log_softmax, nll_loss with the label shift done on the labels).
fn head(cx: &Ctx, input_rg: bool, accumulate: bool) -> ScopeGraph {
    use KernelKind::*;
    let mut t = Tracer::new(cx.w, accumulate);
    let (m, d, v) = (cx.m as f64, cx.model.hidden as f64, cx.model.vocab as f64);
    let x = t.input(m * d, cx.r, input_rg);
    let trains_norm = cx.method.kind == MethodKind::Full;
    let h = match cx.model.family {
        Family::Gpt2 => layer_norm(&mut t, cx, &x, "transformer.ln_f", trains_norm),
        Family::Llama => rms_norm(&mut t, cx, &x, "model.norm", trains_norm),
    };
    let head_trains = cx.method.trains_head(cx.model);
    let lm = Linear {
        role: crate::arch::LinearRole::Down,
        path: "lm_head",
        in_features: cx.model.hidden,
        out_features: cx.model.vocab,
        bias: false,
    };
    let logits = linear(
        &mut t,
        cx,
        &h,
        &lm,
        if head_trains {
            Treatment::Full
        } else {
            Treatment::Frozen
        },
    );
    if cx.model.tied_embeddings {
        // The head reuses wte: its parameters are counted in the embedding.
        t.trainable = t
            .trainable
            .saturating_sub(if head_trains { (v * d) as u64 } else { 0 });
    }
    // The returned logits stay alive in the model output until after backward.
    t.save(&logits);
    t.module = "loss";
    let start = t.fwd.len();
    for name in ["constant_pad_nd", "slice_copy"] {
        let mut k = Kernel::new(name, Elementwise, DType::I64);
        k.bytes_read = m * 8.0;
        k.bytes_written = m * 8.0;
        t.push_fwd(k, &[]);
    }
    t.module_call(start, false);
    let lf = t.cast(&logits, DType::F32);
    let ls = t.op(
        "log_softmax",
        Softmax,
        &[lf],
        lf.elems,
        DType::F32,
        5.0,
        &[],
        true,
        Bwd::Fused {
            name: "log_softmax_backward_data",
            kind: Softmax,
            reads: 2.0,
            writes: 1.0,
            launches: 1,
        },
    );
    // nll_loss reads one logit per token; its backward zero-fills M×V and scatters −1/N.
    let mut k = Kernel::new("nll_loss_forward", Reduction, DType::F32);
    k.bytes_read = m * 8.0 + m * 32.0;
    k.bytes_written = 8.0;
    let ni = t.push_fwd(k, &[ls]);
    let loss = t.tensor(1.0, DType::F32, ls.rg, Some(ni));
    if ls.rg {
        let group = vec![
            t.bk("fill_", Elementwise, DType::F32, 0.0, ls.bytes(), 0.0),
            t.bk(
                "nll_loss_backward",
                Scatter,
                DType::F32,
                m * 8.0,
                m * 32.0,
                m,
            ),
        ];
        t.tape.push(group);
    }
    let mut div = Kernel::new("div", Elementwise, DType::F32);
    div.bytes_read = 4.0;
    div.bytes_written = 4.0;
    t.push_fwd(div, &[loss]);
    if cx.w.precision == Precision::Fp16Mixed {
        // GradScaler.scale(loss)
        let mut k = Kernel::new("mul", Elementwise, DType::F32);
        k.bytes_read = 8.0;
        k.bytes_written = 4.0;
        t.push_fwd(k, &[loss]);
    }
    // backward() seeds the gradient with ones_like(loss).
    if loss.rg {
        let mut seed = t.bk("fill_", Elementwise, DType::F32, 0.0, 4.0, 0.0);
        seed.module = "loss";
        t.tape.push(vec![seed]);
    }
    t.finish(false, 0.0, loss.rg)
}

/// Multi-tensor launches of one foreach op over `tensors` (element counts): PyTorch's
/// multi_tensor_apply fills a launch with at most `max_tensors` tensors (110, 64, 48, 36, 30 for
/// depth 1–5) and 320 chunks of 65,536 elements.
pub fn foreach_launches(tensors: &[u64], depth: usize) -> u32 {
    const MAX_TENSORS: [u32; 5] = [110, 64, 48, 36, 30];
    const MAX_BLOCKS: u64 = 320;
    const CHUNK: u64 = 65_536;
    if tensors.is_empty() {
        return 0;
    }
    let max_t = MAX_TENSORS[depth.clamp(1, 5) - 1];
    let (mut launches, mut nt, mut nb) = (0u32, 0u32, 0u64);
    for &n in tensors {
        let mut chunks = n.div_ceil(CHUNK).max(1);
        nt += 1;
        // The first piece fills the current launch.
        let take = chunks.min(MAX_BLOCKS - nb);
        nb += take;
        chunks -= take;
        if nb == MAX_BLOCKS || nt == max_t {
            launches += 1;
            nb = 0;
            nt = u32::from(chunks > 0);
        }
        // The rest of a large tensor: one launch per full set of blocks, the remainder opens the
        // next launch (closed form of filling launch after launch).
        if chunks > 0 {
            launches += (chunks / MAX_BLOCKS) as u32;
            nb = chunks % MAX_BLOCKS;
            nt = u32::from(nb > 0);
        }
    }
    if nb > 0 || nt > 0 {
        launches += 1;
    }
    launches
}

/// The optimizer phase: gradient unscale (fp16), clipping, and the update.
fn optimizer(cx: &Ctx, tensors: &[u64]) -> Segment {
    use KernelKind::*;
    let elems: f64 = tensors.iter().map(|&n| n as f64).sum();
    let nt = tensors.len() as u32;
    let sz = cx.p.size(); // master params, grads and states share the param dtype
    let mut ks = Vec::new();
    let fe = |name: &'static str, depth: usize, reads: f64, writes: f64, flops: f64| {
        let mut k = Kernel::new(name, Optimizer, cx.p);
        k.launches = foreach_launches(tensors, depth);
        k.bytes_read = reads * elems * sz;
        k.bytes_written = writes * elems * sz;
        k.flops = flops * elems;
        k
    };
    let tiny = |name: &'static str| {
        let mut k = Kernel::new(name, Elementwise, DType::F32);
        k.bytes_read = 8.0;
        k.bytes_written = 4.0;
        k
    };
    if nt == 0 {
        return Segment::default();
    }
    if cx.w.precision == Precision::Fp16Mixed {
        ks.push(fe(
            "_amp_foreach_non_finite_check_and_unscale_",
            1,
            1.0,
            1.0,
            2.0,
        ));
        ks.push(tiny("_amp_update_scale_"));
    }
    if cx.w.grad_clip {
        let mut norm = fe("_foreach_norm", 1, 1.0, 0.0, 2.0);
        norm.bytes_written = f64::from(nt) * 4.0;
        ks.push(norm);
        for name in ["stack", "linalg_vector_norm", "add", "div", "clamp"] {
            ks.push(tiny(name));
        }
        ks.push(fe("_foreach_mul_", 1, 1.0, 1.0, 1.0));
    }
    let mut host = Kernel::new("param_loop", Host, DType::F32);
    host.launches = 0;
    host.host_tensors = nt;
    ks.push(host);
    match cx.w.optimizer {
        Opt::AdamwForeach => {
            let mut step = Kernel::new("_foreach_add_(state_steps)", Host, DType::F32);
            step.launches = 0;
            ks.push(step);
            ks.push(fe("_foreach_mul_", 1, 1.0, 1.0, 1.0)); // weight decay
            ks.push(fe("_foreach_lerp_", 2, 2.0, 1.0, 3.0));
            ks.push(fe("_foreach_mul_", 1, 1.0, 1.0, 1.0));
            ks.push(fe("_foreach_addcmul_", 2, 2.0, 1.0, 3.0));
            let mut bc = Kernel::new("bias_correction", Host, DType::F32);
            bc.launches = 0;
            ks.push(bc);
            ks.push(fe("_foreach_sqrt", 2, 1.0, 1.0, 1.0));
            ks.push(fe("_foreach_div_", 1, 1.0, 1.0, 1.0));
            ks.push(fe("_foreach_add_", 1, 1.0, 1.0, 1.0));
            ks.push(fe("_foreach_addcdiv_", 3, 3.0, 1.0, 3.0));
        }
        Opt::AdamwFused => ks.push(fe("_fused_adamw_", 4, 4.0, 3.0, 12.0)),
        Opt::Sgd => ks.push(fe("_foreach_add_", 2, 2.0, 1.0, 2.0)),
        Opt::AdamwSingle => {
            // _single_tensor_adamw: per tensor mul_ (decay), lerp_, mul_, addcmul_, sqrt, div_,
            // add_, addcdiv_ — the same 12 reads and 8 writes per element as foreach, one launch
            // per op and tensor.
            const OPS: [(&str, f64, f64); 8] = [
                ("mul_", 1.0, 1.0),
                ("lerp_", 2.0, 1.0),
                ("mul_", 1.0, 1.0),
                ("addcmul_", 2.0, 1.0),
                ("sqrt", 1.0, 1.0),
                ("div_", 1.0, 1.0),
                ("add_", 1.0, 1.0),
                ("addcdiv_", 3.0, 1.0),
            ];
            for &n in tensors {
                for (name, reads, writes) in OPS {
                    let mut k = Kernel::new(name, Optimizer, cx.p);
                    k.bytes_read = reads * n as f64 * sz;
                    k.bytes_written = writes * n as f64 * sz;
                    k.flops = 2.0 * n as f64;
                    ks.push(k);
                }
            }
        }
    }
    let mut zg = Kernel::new("zero_grad(set_to_none)", Host, DType::F32);
    zg.launches = 0;
    zg.host_tensors = nt;
    ks.push(zg);
    for (i, k) in ks.iter_mut().enumerate() {
        k.module = "";
        if i > 0 {
            k.deps = smallvec![i as u32 - 1];
        }
    }
    Segment { kernels: ks }
}

/// The trainable tensors, in model order (what the optimizer iterates over).
fn trainable_tensors(cx: &Ctx) -> Vec<u64> {
    let mut v = Vec::new();
    let model = cx.model;
    let d = model.hidden;
    if cx.method.trains_embedding(model) {
        v.push(model.vocab * d);
        if model.family == Family::Gpt2 {
            v.push(model.max_positions * d);
        }
    }
    let (lo, hi) = cx.method.trained_layers(model);
    let r = cx.method.rank;
    let mut per_layer = Vec::new();
    let norm_tensors: &[u64] = match model.family {
        Family::Gpt2 => &[d, d],
        Family::Llama => &[d],
    };
    for lin in model.linears() {
        match treatment(cx, &lin, true) {
            Treatment::Full => {
                per_layer.push(lin.in_features * lin.out_features);
                if lin.bias {
                    per_layer.push(lin.out_features);
                }
            }
            Treatment::Lora => {
                per_layer.push(r * lin.in_features);
                per_layer.push(lin.out_features * r);
            }
            Treatment::Paca => per_layer.push(lin.out_features * r),
            Treatment::Frozen => {}
        }
    }
    if cx.method.kind == MethodKind::Full {
        // two norms per block
        per_layer.extend_from_slice(norm_tensors);
        per_layer.extend_from_slice(norm_tensors);
    }
    for _ in lo..=hi {
        v.extend_from_slice(&per_layer);
    }
    if cx.method.kind == MethodKind::Full {
        v.extend_from_slice(norm_tensors);
        if cx.method.trains_head(model) && !model.tied_embeddings {
            v.push(model.vocab * d);
        }
    }
    v
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
    let optimizer = optimizer(&cx, &tensors);
    StepGraph {
        family: model.family,
        embedding,
        layer_graphs,
        layer_class,
        head: head_g,
        optimizer,
        trainable_tensors: tensors,
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::preset;
    use crate::method::{MethodName, MethodOptions};
    use proptest::strategy::Just;

    fn graph(
        model: &str,
        method: MethodName,
        w: &Workload,
    ) -> (ModelConfig, MethodSpec, StepGraph) {
        let m = preset(model).unwrap();
        let spec = MethodSpec::resolve(method, &MethodOptions::default(), &m, true).unwrap();
        let g = build(&m, &spec, w);
        (m, spec, g)
    }

    fn names(seg: &Segment) -> Vec<&'static str> {
        seg.kernels
            .iter()
            .filter(|k| k.launches > 0)
            .map(|k| k.name)
            .collect()
    }

    #[test]
    fn trainable_counts_agree_with_method_formulas() {
        let w = Workload::default();
        for model in ["gpt2", "tinyllama-1.1b", "llama2-7b"] {
            for method in MethodName::ALL {
                let (m, spec, g) = graph(model, method, &w);
                let traced: u64 = g.embedding.trainable
                    + (0..m.layers as usize)
                        .map(|i| g.layer(i).trainable)
                        .sum::<u64>()
                    + g.head.trainable;
                assert_eq!(traced, spec.trainable_params(&m), "{model} {method}");
                assert_eq!(
                    g.trainable_tensors.iter().sum::<u64>(),
                    traced,
                    "{model} {method}"
                );
            }
        }
    }

    #[test]
    fn full_linear_forward_and_backward_gemms() {
        // Llama q_proj, full FT, fp32: forward mm (M,n,k) = 2·M·n·k FLOPs; backward dW and dX.
        let w = Workload {
            precision: Precision::Fp32,
            batch: 1,
            seq: 128,
            ..Workload::default()
        };
        let (_, _, g) = graph("tinyllama-1.1b", MethodName::Full, &w);
        let l = g.layer(1);
        let q = l
            .forward
            .kernels
            .iter()
            .find(|k| k.module == "self_attn.q_proj" && k.kind == KernelKind::Gemm)
            .unwrap();
        assert_eq!(q.flops, 2.0 * 128.0 * 2048.0 * 2048.0);
        assert_eq!(q.bytes_read, (128.0 * 2048.0 + 2048.0 * 2048.0) * 4.0);
        let bw: Vec<_> = l
            .backward
            .kernels
            .iter()
            .filter(|k| k.module == "self_attn.q_proj" && k.kind == KernelKind::Gemm)
            .map(|k| k.name)
            .collect();
        assert_eq!(bw, ["mm_dW", "mm_dX"]);
    }

    #[test]
    fn lora_chain_under_autocast() {
        let w = Workload::default(); // bf16-mixed, fp32 adapters, dropout 0.1
        let (_, _, g) = graph("llama2-7b", MethodName::Lora, &w);
        let l = g.layer(1);
        let o: Vec<_> = l
            .forward
            .kernels
            .iter()
            .filter(|k| k.module == "self_attn.o_proj" && k.launches > 0)
            .map(|k| (k.name, k.piece))
            .collect();
        assert_eq!(
            o,
            [
                ("to_copy", ""), // W → bf16
                ("mm", "base_layer"),
                ("to_copy", ""), // x → fp32 (adapter dtype)
                ("native_dropout", "lora_dropout"),
                ("to_copy", ""), // autocast: x_d → bf16
                ("to_copy", ""), // A → bf16
                ("to_copy", ""), // B → bf16
                ("mm", "lora_A"),
                ("mm", "lora_B"),
                ("mul", ""),
                ("add", ""),
            ]
        );
        // The frozen base weight gets no weight-gradient GEMM.
        assert!(!l
            .backward
            .kernels
            .iter()
            .any(|k| k.piece == "base_layer" && k.name == "mm_dW"));
        assert!(l
            .backward
            .kernels
            .iter()
            .any(|k| k.piece == "lora_A" && k.name == "mm_dW"));
    }

    #[test]
    fn paca_backward_has_no_dense_weight_gradient_and_saves_only_idx() {
        let w = Workload {
            precision: Precision::Fp32,
            ..Workload::default()
        };
        let (_m, spec, g) = graph("llama2-7b", MethodName::Paca, &w);
        let l = g.layer(1);
        let dp: Vec<_> = l
            .backward
            .kernels
            .iter()
            .filter(|k| k.name == "mm_dP")
            .collect();
        assert_eq!(dp.len(), 7);
        assert!(!l.backward.kernels.iter().any(|k| k.name == "mm_dW"));
        let q = dp.iter().find(|k| k.module == "self_attn.q_proj").unwrap();
        let mt = w.tokens() as f64;
        assert_eq!(q.flops, 2.0 * 4096.0 * spec.rank as f64 * mt);
        // Layer 0's q/k/v need no dX (the embedding is frozen), layer 1's do.
        let l0 = g.layer(0);
        let dx0 = l0
            .backward
            .kernels
            .iter()
            .filter(|k| k.name == "mm_dX")
            .count();
        let dx1 = l
            .backward
            .kernels
            .iter()
            .filter(|k| k.name == "mm_dX")
            .count();
        assert_eq!(dx1 - dx0, 3);
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

    #[test]
    fn gpt2_gelu_is_eight_kernels() {
        let w = Workload::default();
        let (_, _, g) = graph("gpt2", MethodName::Full, &w);
        let act: Vec<_> = g
            .layer(0)
            .forward
            .kernels
            .iter()
            .filter(|k| k.module == "mlp.act")
            .map(|k| k.name)
            .collect();
        assert_eq!(
            act,
            ["pow", "mul", "add", "mul", "tanh", "add", "mul", "mul"]
        );
    }

    /// The launch-by-launch loop that `foreach_launches` computes in closed form.
    fn foreach_launches_loop(tensors: &[u64], depth: usize) -> u32 {
        const MAX_TENSORS: [u32; 5] = [110, 64, 48, 36, 30];
        let max_t = MAX_TENSORS[depth.clamp(1, 5) - 1];
        let (mut launches, mut nt, mut nb) = (0u32, 0u32, 0u64);
        for &n in tensors {
            let mut chunks = n.div_ceil(65_536).max(1);
            nt += 1;
            while chunks > 0 {
                let take = chunks.min(320 - nb);
                nb += take;
                chunks -= take;
                if nb == 320 || nt == max_t {
                    launches += 1;
                    nb = 0;
                    nt = u32::from(chunks > 0);
                }
            }
        }
        if nb > 0 || nt > 0 {
            launches += 1;
        }
        launches
    }

    proptest::proptest! {
        #[test]
        fn foreach_launches_closed_form_matches_the_loop(
            tensors in proptest::collection::vec(
                proptest::prop_oneof![1u64..70_000, 1u64..100_000_000, Just(320 * 65_536)],
                0..300,
            ),
            depth in 1usize..6,
        ) {
            proptest::prop_assert_eq!(
                foreach_launches(&tensors, depth),
                foreach_launches_loop(&tensors, depth)
            );
        }
    }

    #[test]
    fn foreach_launch_count() {
        assert_eq!(foreach_launches(&[10; 110], 1), 1);
        assert_eq!(foreach_launches(&[10; 111], 1), 2);
        assert_eq!(foreach_launches(&[10; 64], 2), 1);
        // One tensor of 320 chunks fills one launch; 321 chunks need two.
        assert_eq!(foreach_launches(&[320 * 65_536], 1), 1);
        assert_eq!(foreach_launches(&[320 * 65_536 + 1], 1), 2);
        assert_eq!(foreach_launches(&[], 1), 0);
    }

    #[test]
    fn grad_accum_adds_accumulate_kernels() {
        let w = Workload {
            grad_accum: 4,
            ..Workload::default()
        };
        let (_, _, g) = graph("gpt2", MethodName::Lora, &w);
        let first = names(&g.layer(1).backward);
        let later = names(&g.layer(1).backward_accum);
        let acc = later.iter().filter(|n| **n == "accumulate_grad").count();
        assert_eq!(acc, 8); // A and B of 4 adapted modules
        assert_eq!(later.len() - first.len(), acc);
    }
}
