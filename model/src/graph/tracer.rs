//! The symbolic autograd tracer and its saving rules.
//!
//! Each forward op records the kernels it launches (FLOPs, bytes read and written, dtype,
//! launches, dependencies), the tensors it saves for backward, and pushes the kernels of its
//! backward onto a tape; backward is the tape replayed in reverse. The autograd rules of PyTorch
//! eager mode live here: an op whose inputs and parameters do not require grad records nothing;
//! an input gradient is computed only for inputs that require grad; frozen weights get no
//! weight-gradient GEMM (autograd's MmBackward); a gradient crossing a dtype boundary gets a cast
//! (torch.autocast's `to_copy`); a tensor consumed k times gets k−1 gradient additions; broadcast
//! inputs get a sum reduction; with gradient accumulation each trainable tensor gets an
//! accumulate-add. Saving: views share their base's storage, parameters cost no extra memory, and
//! gradient checkpointing keeps only the block input and recomputes the forward in backward, up
//! to the op that saves the block's last tensor (torch.utils.checkpoint's early stop, below).

use super::{Deps, Gemm, GuardKind, Kernel, KernelKind, ScopeGraph, Segment};
use crate::workload::{DType, Precision, Workload};
use smallvec::smallvec;

/// A symbolic tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct T {
    pub(super) id: u32,
    pub(super) elems: f64,
    pub(super) dtype: DType,
    /// requires_grad
    pub(super) rg: bool,
    /// A parameter (resident anyway; saving it costs no memory).
    pub(super) param: bool,
    /// Index of the producing kernel in the forward segment.
    pub(super) producer: Option<u32>,
}

impl T {
    /// Whether `self` is a different tensor from `other` (a cast copy rather than the tensor).
    pub(super) fn id_differs(&self, other: &T) -> bool {
        self.id != other.id
    }

    pub(super) fn bytes(&self) -> f64 {
        self.elems * self.dtype.size()
    }
}

/// How an op's backward is launched.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bwd {
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

/// The backward tape: each forward op's backward kernels (a group), in forward order, stored
/// flat so recording a scope allocates once, not once per op. Groups come from [`Tape::group`],
/// which hands back the storage of the last group pushed.
#[derive(Default)]
pub(super) struct Tape {
    kernels: Vec<Kernel>,
    /// Where each group starts in `kernels`.
    starts: Vec<u32>,
    /// An empty vector with capacity, for the next group.
    spare: Vec<Kernel>,
}

impl Tape {
    fn with_capacity(kernels: usize, groups: usize) -> Self {
        Self {
            kernels: Vec::with_capacity(kernels),
            starts: Vec::with_capacity(groups),
            spare: Vec::with_capacity(8),
        }
    }

    /// An empty group to fill and [`Tape::push`].
    pub(super) fn group(&mut self) -> Vec<Kernel> {
        std::mem::take(&mut self.spare)
    }

    /// A group of one kernel.
    pub(super) fn group_of(&mut self, k: Kernel) -> Vec<Kernel> {
        let mut g = self.group();
        g.push(k);
        g
    }

    /// Append a group (the backward of the latest forward op).
    pub(super) fn push(&mut self, mut group: Vec<Kernel>) {
        self.starts.push(self.kernels.len() as u32);
        self.kernels.append(&mut group);
        if group.capacity() > self.spare.capacity() {
            self.spare = group;
        }
    }

    /// Remove and return the latest group.
    pub(super) fn pop(&mut self) -> Option<Vec<Kernel>> {
        let start = self.starts.pop()? as usize;
        Some(self.kernels.drain(start..).collect())
    }

    /// Put a group before every other (its kernels run last in backward).
    pub(super) fn insert_front(&mut self, group: Vec<Kernel>) {
        let n = group.len() as u32;
        self.kernels.splice(0..0, group);
        for s in &mut self.starts {
            *s += n;
        }
        self.starts.insert(0, 0);
    }

    /// Kernels on the tape.
    fn len(&self) -> usize {
        self.kernels.len()
    }

    /// Move the kernels into `out`, groups in reverse order (backward replays the tape from
    /// the end), each group's kernels in their own order.
    fn drain_reversed_into(mut self, out: &mut Vec<Kernel>) {
        while let Some(start) = self.starts.pop() {
            out.extend(self.kernels.drain(start as usize..));
        }
    }
}

/// The tracer of one scope: its forward kernels, the backward tape, and what it saves.
pub(super) struct Tracer<'a> {
    pub(super) prec: Precision,
    accumulate: bool,
    pub(super) fwd: Vec<Kernel>,
    pub(super) tape: Tape,
    next_id: u32,
    /// Tensors kept for backward: id, bytes, module that saved it.
    saved: Vec<(u32, f64, &'static str)>,
    /// How many of the forward kernels a checkpointed recompute runs ([`Tracer::finish`]): up to
    /// the last save. torch.utils.checkpoint (non-reentrant, transformers 5.17's default) stops
    /// recomputing once every tensor the forward saved has been saved again, and an op of
    /// PyTorch's generated autograd code saves its inputs *before* its kernel runs, its outputs
    /// after; a custom Function saves after its kernels. So a block's recompute ends before the
    /// kernel of its last saving op when that op saves only inputs (its last projection's GEMM),
    /// and skips what follows (the residual add): measured in CPU traces of transformers + peft
    /// (docs/results/traces/cpu-checkpointing).
    recompute_cut: u32,
    /// Number of gradient-requiring consumers seen per tensor id.
    uses: Vec<u32>,
    pub(super) module: &'static str,
    pub(super) trainable: u64,
    pub(super) transient: f64,
    /// Operands of every comparison on sizes, in order (see [`ScopeGraph::guards`]).
    guards: Vec<(f64, f64, GuardKind)>,
    /// nn.Module and adapter-layer calls entered but not yet charged: charged on the next op
    /// recorded (a module's pre-hook runs before its first op).
    pending_calls: (u8, u8),
    _life: std::marker::PhantomData<&'a Workload>,
}

/// Add `(modules, adapters)` entered calls to the host work of op `k`.
fn charge_calls(k: &mut Kernel, (modules, adapters): (u8, u8)) {
    k.module_calls = k.module_calls.saturating_add(modules);
    k.peft_calls = k.peft_calls.saturating_add(adapters);
}

impl<'a> Tracer<'a> {
    pub(super) fn new(w: &'a Workload, accumulate: bool) -> Self {
        Self {
            prec: w.precision,
            accumulate,
            // Sized for a transformer block (about 60 forward ops and 150 tensors without
            // adapters; LoRA on all seven projections of a Llama block, 113 forward and 141
            // backward kernels), so building a scope does not grow these vectors op by op (a
            // sweep builds millions of scopes; growing `fwd` past 96 copied it, a tenth of a
            // LoRA block's build).
            fwd: Vec::with_capacity(160),
            tape: Tape::with_capacity(192, 160),
            next_id: 0,
            saved: Vec::with_capacity(32),
            recompute_cut: 0,
            uses: Vec::with_capacity(192),
            module: "",
            trainable: 0,
            transient: 0.0,
            guards: Vec::with_capacity(16),
            pending_calls: (0, 0),
            _life: std::marker::PhantomData,
        }
    }

    pub(super) fn tensor(
        &mut self,
        elems: f64,
        dtype: DType,
        rg: bool,
        producer: Option<u32>,
    ) -> T {
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

    /// `a.max(b)` of two sizes, the comparison logged in [`ScopeGraph::guards`].
    pub(super) fn max(&mut self, a: f64, b: f64) -> f64 {
        self.guards.push((a, b, GuardKind::Extremum));
        a.max(b)
    }

    /// `a.min(b)` of two sizes, the comparison logged in [`ScopeGraph::guards`].
    pub(super) fn min(&mut self, a: f64, b: f64) -> f64 {
        self.guards.push((a, b, GuardKind::Extremum));
        a.min(b)
    }

    /// The running transient maximum takes `size` into account, the comparison logged in
    /// [`ScopeGraph::guards`] as a link of the scope's transient chain ([`GuardKind::Transient`]).
    pub(super) fn transient_max(&mut self, size: f64) {
        self.guards
            .push((self.transient, size, GuardKind::Transient));
        self.transient = self.transient.max(size);
    }

    /// `a < b` of two sizes, the comparison logged in [`ScopeGraph::guards`].
    pub(super) fn less(&mut self, a: f64, b: f64) -> bool {
        self.guards.push((a, b, GuardKind::Less));
        a < b
    }

    /// An input activation.
    pub(super) fn input(&mut self, elems: f64, dtype: DType, rg: bool) -> T {
        self.tensor(elems, dtype, rg, None)
    }

    /// A parameter tensor.
    pub(super) fn param(&mut self, elems: f64, dtype: DType, trainable: bool) -> T {
        if trainable {
            self.trainable += elems as u64;
        }
        let mut t = self.tensor(elems, dtype, trainable, None);
        t.param = true;
        t
    }

    /// Keep `t` alive for backward, saved after the kernels recorded so far (an op's output, or
    /// a custom Function's `save_for_backward`). Views share their base's id; the largest view
    /// seen stands for the base. Parameters are resident anyway and cost nothing extra, but
    /// saving one still counts for the recompute's early stop.
    pub(super) fn save(&mut self, t: &T) {
        self.recompute_cut = self.fwd.len() as u32;
        self.keep(t);
    }

    /// Keep `t`, an input of forward kernel `idx` that autograd's generated code saves before
    /// that kernel runs ([`Tracer::recompute_cut`]).
    pub(super) fn save_input(&mut self, t: &T, idx: u32) {
        self.recompute_cut = self.recompute_cut.max(idx);
        self.keep(t);
    }

    fn keep(&mut self, t: &T) {
        if t.param {
            return;
        }
        let module = self.module;
        match self.saved.iter().position(|(id, _, _)| *id == t.id) {
            Some(i) => self.saved[i].1 = self.max(self.saved[i].1, t.bytes()),
            None => self.saved.push((t.id, t.bytes(), module)),
        }
    }

    /// Drop `t` from what is kept for backward (a recipe whose autograd Function saves
    /// something else instead).
    pub(super) fn unsave(&mut self, t: &T) {
        self.saved.retain(|(id, _, _)| *id != t.id);
    }

    pub(super) fn push_fwd(&mut self, mut k: Kernel, inputs: &[T]) -> u32 {
        if k.module.is_empty() {
            k.module = self.module;
        }
        k.deps = inputs.iter().filter_map(|t| t.producer).collect();
        k.deps.dedup();
        charge_calls(&mut k, std::mem::take(&mut self.pending_calls));
        self.fwd.push(k);
        (self.fwd.len() - 1) as u32
    }

    /// Kernels that add a second (third...) gradient into a tensor consumed several times, the
    /// accumulate-grad add of a trainable leaf, and the cast of a gradient back to its input's
    /// dtype.
    pub(super) fn grad_plumbing(&mut self, group: &mut Vec<Kernel>, input: &T, grad_dtype: DType) {
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

    pub(super) fn bk(
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
    pub(super) fn op(
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
            self.transient_max(out.bytes());
            return out;
        }
        // autograd saves an input only for a gradient that will be computed
        // (`should_compute_output` in PyTorch's generated autograd code): a unary op's input for
        // its own gradient; a binary op's operand for the other operand's gradient, so
        // `weight * x` with a frozen weight keeps nothing but the (resident) weight.
        for &i in saves {
            let needed = if inputs.len() == 1 {
                inputs[0].rg
            } else {
                inputs.iter().enumerate().any(|(j, t)| j != i && t.rg)
            };
            if needed {
                self.save_input(&inputs[i], idx);
            }
        }
        if save_out {
            self.save(&out);
        } else {
            self.transient_max(out.bytes());
        }
        let mut group = self.tape.group();
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
                if matches!(name, "rsqrt" | "pow") {
                    // Derivative formulas written out as three ops (tools/autograd/
                    // derivatives.yaml): rsqrt: -0.5 · grad · result.pow(3); pow:
                    // grad · (exponent · self.pow(exponent − 1)).
                    for (op, r) in [("pow", 1.0), ("mul", 1.0), ("mul", reads)] {
                        group.push(self.bk(
                            op,
                            KernelKind::Elementwise,
                            out_dtype,
                            r * out_bytes,
                            out_bytes,
                            // One rounding of the exact product: a rescaled graph
                            // (`rescale::SeqFit`) reproduces it from the integer numerator.
                            flops * out_elems / 3.0,
                        ));
                    }
                } else {
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
            }
            if self.less(t.elems, out_elems) {
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
    pub(super) fn cast(&mut self, x: &T, to: DType) -> T {
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
    pub(super) fn host_op(&mut self, name: &'static str) {
        let mut k = Kernel::new(name, KernelKind::Host, DType::F32);
        k.launches = 0;
        self.push_fwd(k, &[]);
    }

    /// C = A·Bᵀ-style GEMM: `x` is m×k, `w` is n×k (a weight or another activation), out m×n.
    /// `bias` is added in the same kernel (addmm). Backward: dX = dY·W (m,k,n) when x requires
    /// grad, dW = dYᵀ·X (n,k,m) when w requires grad, bias gradient = a sum over m.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm(
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
        let idx = match bias {
            Some(b) => self.push_fwd(kern, &[*x, *w, *b]),
            None => self.push_fwd(kern, &[*x, *w]),
        };
        let rg = x.rg || w.rg || bias.is_some_and(|b| b.rg);
        let out = self.tensor(mf * nf * bf, dt, rg, Some(idx));
        if !rg {
            self.transient_max(out.bytes());
            return out;
        }
        if w.rg {
            self.save_input(x, idx);
        }
        if x.rg {
            self.save_input(w, idx);
        }
        let mut group = self.tape.group();
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
        let mut pending: smallvec::SmallVec<[(T, DType); 3]> = smallvec::SmallVec::new();
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

    /// Enter `modules` nn.Module calls, `adapters` of them adapter layers (peft LoRA, PaCA), as
    /// the real stack's forward pre-hooks count them (host cost under pytorch-eager): charged on
    /// the next op recorded, which is the module's first op, or the next module's when it
    /// launches none (an nn.Identity, a dropout of p = 0).
    pub(super) fn enter_module(&mut self, modules: u8, adapters: u8) {
        self.pending_calls.0 = self.pending_calls.0.saturating_add(modules);
        self.pending_calls.1 = self.pending_calls.1.saturating_add(adapters);
    }

    pub(super) fn finish(
        mut self,
        grad_checkpointing: bool,
        input_bytes: f64,
        output_rg: bool,
    ) -> ScopeGraph {
        // Modules entered after the scope's last op (none in the recipes) are charged on it.
        if let Some(k) = self.fwd.last_mut() {
            charge_calls(k, self.pending_calls);
        }
        let saved: f64 = self.saved.iter().map(|(_, b, _)| b).sum();
        if grad_checkpointing {
            self.transient_max(saved);
        }
        let transient = self.transient;
        let recomputed = if grad_checkpointing && output_rg {
            self.recompute_cut as usize
        } else {
            0
        };
        let mut backward: Vec<Kernel> = Vec::with_capacity(recomputed + self.tape.len());
        if grad_checkpointing && output_rg {
            for k in &self.fwd[..recomputed] {
                let mut r = k.clone();
                r.recompute = true;
                r.deps.clear();
                backward.push(r);
            }
        }
        self.tape.drain_reversed_into(&mut backward);
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

        let mut saved_by_module: Vec<(&'static str, f64)> = Vec::new();
        if !grad_checkpointing {
            for &(_, b, m) in &self.saved {
                match saved_by_module.iter_mut().find(|(n, _)| *n == m) {
                    Some(e) => e.1 += b,
                    None => saved_by_module.push((m, b)),
                }
            }
        }
        ScopeGraph {
            forward: Segment { kernels: self.fwd },
            backward: Segment { kernels: backward },
            backward_accum: Segment::default(),
            saved_bytes: if grad_checkpointing { 0.0 } else { saved },
            saved_by_module,
            backward_working_bytes: 0.0,
            checkpoint_bytes: if grad_checkpointing && output_rg {
                input_bytes
            } else {
                0.0
            },
            trainable: self.trainable,
            transient_bytes: transient,
            output_rg,
            guards: self.guards,
        }
    }
}

/// The name of an elementwise op's per-input backward kernel (`rsqrt` and `pow` are written out
/// as three ops in [`Tracer::op`] and never come here). The op ledger files these names under
/// aten's ops (`validate/src/ledger.rs`, `ledger_op`): `mul_backward` as `mul`, `mean_backward`
/// as `div`, the `backward` fallback as `clone`; `tanh_backward` and `silu_backward` are aten's own.
fn backward_name(name: &'static str) -> &'static str {
    match name {
        "mul" => "mul_backward",
        "tanh" => "tanh_backward",
        "silu" => "silu_backward",
        "dropout" => "dropout_backward",
        "where" => "where_backward",
        "div" => "div_backward",
        "neg" => "neg_backward",
        "cat" => "cat_backward",
        "mean" => "mean_backward",
        _ => "backward",
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::tests::graph;
    use crate::graph::Segment;
    use crate::method::MethodName;
    use crate::workload::Workload;

    fn names(seg: &Segment) -> Vec<&'static str> {
        seg.kernels
            .iter()
            .filter(|k| k.launches > 0)
            .map(|k| k.name)
            .collect()
    }

    use super::{Bwd, Tracer, T};
    use crate::graph::KernelKind;
    use crate::workload::DType;

    /// A per-input backward of 2 out-sized reads and `flops` FLOPs an element.
    fn per_input(flops: f64) -> Bwd {
        Bwd::PerInput { reads: 2.0, flops }
    }

    /// An fp32 elementwise op `name` of one FLOP an output element, saving `saves`.
    fn elementwise(
        t: &mut Tracer,
        name: &'static str,
        inputs: &[T],
        out_elems: f64,
        saves: &[usize],
        bwd: Bwd,
    ) -> T {
        let k = KernelKind::Elementwise;
        t.op(
            name,
            k,
            inputs,
            out_elems,
            DType::F32,
            1.0,
            saves,
            false,
            bwd,
        )
    }

    /// Saved bytes of a scope with one op `name` on `inputs` (elems, dtype, requires_grad).
    fn saved_by_one_op(name: &'static str, inputs: &[(f64, DType, bool)], saves: &[usize]) -> f64 {
        let w = Workload::default();
        let mut t = Tracer::new(&w, false);
        let ins: Vec<_> = inputs.iter().map(|&(e, d, rg)| t.input(e, d, rg)).collect();
        elementwise(&mut t, name, &ins, 100.0, saves, per_input(1.0));
        t.finish(false, 0.0, true).saved_bytes
    }

    #[test]
    fn an_operand_is_saved_only_for_a_gradient_that_is_computed() {
        // Unary: its input, for its own gradient (100 fp32 elements, 400 B).
        assert_eq!(
            saved_by_one_op("tanh", &[(100.0, DType::F32, true)], &[0]),
            400.0
        );
        // Binary a · b, only b requiring grad: a is kept (b's gradient needs it), b is not
        // (a's gradient is not computed). a is bf16 (200 B), b fp32 (400 B).
        let a_b = [(100.0, DType::Bf16, false), (100.0, DType::F32, true)];
        assert_eq!(saved_by_one_op("mul", &a_b, &[0, 1]), 200.0);
        // Both requiring grad: both kept.
        let both = [(100.0, DType::Bf16, true), (100.0, DType::F32, true)];
        assert_eq!(saved_by_one_op("mul", &both, &[0, 1]), 600.0);
    }

    #[test]
    fn save_and_unsave_keep_the_others() {
        let w = Workload::default();
        let mut t = Tracer::new(&w, false);
        let a = t.input(10.0, DType::F32, true);
        let b = t.input(30.0, DType::F32, true);
        t.save(&a);
        t.save(&b);
        t.unsave(&a);
        // Without checkpointing, the scope's input is not kept as a checkpoint.
        let g = t.finish(false, 64.0, true);
        assert_eq!((g.saved_bytes, g.checkpoint_bytes), (120.0, 0.0));
    }

    #[test]
    fn forward_ops_point_at_their_producers_and_views_are_host_records() {
        let w = Workload::default();
        let mut t = Tracer::new(&w, false);
        let x = t.input(64.0, DType::F32, true);
        let y = elementwise(&mut t, "tanh", &[x], 64.0, &[0], Bwd::Pass);
        t.host_op("view");
        let z = elementwise(&mut t, "mul", &[y, x], 64.0, &[], Bwd::Pass);
        assert_eq!((y.producer, z.producer), (Some(0), Some(2)));
        let g = t.finish(false, 0.0, true);
        let f = &g.forward.kernels;
        assert_eq!(
            f.iter().map(|k| k.name).collect::<Vec<_>>(),
            ["tanh", "view", "mul"]
        );
        assert_eq!((f[1].kind, f[1].launches), (KernelKind::Host, 0));
        // mul reads tanh's output (kernel 0); the input x has no producer.
        assert_eq!(f[2].deps.as_slice(), &[0]);
    }

    #[test]
    fn rsqrt_and_pow_backward_are_three_ops_sharing_the_flops() {
        let w = Workload::default();
        for name in ["rsqrt", "pow"] {
            let mut t = Tracer::new(&w, false);
            let x = t.input(50.0, DType::F32, true);
            elementwise(&mut t, name, &[x], 50.0, &[0], per_input(6.0));
            let g = t.finish(false, 0.0, true);
            let b = &g.backward.kernels;
            assert_eq!(
                b.iter().map(|k| k.name).collect::<Vec<_>>(),
                ["pow", "mul", "mul"]
            );
            // 6 FLOPs an element over 50 elements, a third in each: 100 FLOPs.
            assert!(b.iter().all(|k| k.flops == 100.0), "{name}");
            // Out-sized reads (200 B): 1, 1 and `reads` of them; each writes one.
            let reads: Vec<f64> = b.iter().map(|k| k.bytes_read).collect();
            assert_eq!(reads, [200.0, 200.0, 400.0]);
            assert!(b.iter().all(|k| k.bytes_written == 200.0));
        }
    }

    #[test]
    fn addmm_reads_its_bias_and_sums_the_bias_gradient_over_rows() {
        // x 4×3 (activation), W 5×3 and b 5 (trainable parameters), all fp32: out 4×5.
        let w = Workload::default();
        let mut t = Tracer::new(&w, false);
        let x = t.input(12.0, DType::F32, false);
        let wt = t.param(15.0, DType::F32, true);
        let b = t.param(5.0, DType::F32, true);
        t.gemm("addmm", "", &x, &wt, Some(&b), 4, 5, 3, 1);
        let g = t.finish(false, 0.0, true);
        let f = &g.forward.kernels[0];
        // Reads x, W and b: (12 + 15 + 5) · 4 B; writes 4 × 5 · 4 B.
        assert_eq!((f.bytes_read, f.bytes_written), (128.0, 80.0));
        let sum = g.backward.kernels.iter().find(|k| k.name == "sum").unwrap();
        // dY (80 B) summed over the 4 rows into b's gradient (5 · 4 B), one FLOP an element of dY.
        assert_eq!(
            (sum.bytes_read, sum.bytes_written, sum.flops),
            (80.0, 20.0, 20.0)
        );
    }

    /// The names of a scope's recomputed kernels, in order.
    fn recomputed(g: &crate::graph::ScopeGraph) -> Vec<&'static str> {
        let ks = &g.backward.kernels;
        ks.iter().filter(|k| k.recompute).map(|k| k.name).collect()
    }

    /// A checkpointed scope recomputes its forward without dependencies, then chains the
    /// gradients, and stops where torch.utils.checkpoint does: x → tanh (saves its input) →
    /// tanh (saves its input, before its kernel) → add (saves nothing) recomputes only the first
    /// tanh; a last op that saves its output (or a custom Function's save after its kernels)
    /// runs; a frozen GEMM saving only its (resident) weight stops the recompute before it all
    /// the same.
    #[test]
    fn checkpointed_backward_recomputes_without_deps_then_chains_the_gradients() {
        let w = Workload::default();
        let mut t = Tracer::new(&w, false);
        let x = t.input(64.0, DType::F32, true);
        let y = elementwise(&mut t, "tanh", &[x], 64.0, &[0], per_input(1.0));
        let z = elementwise(&mut t, "tanh", &[y], 64.0, &[0], per_input(1.0));
        elementwise(&mut t, "add", &[z, x], 64.0, &[], per_input(1.0));
        let g = t.finish(true, 256.0, true);
        let b = &g.backward.kernels;
        assert_eq!(recomputed(&g), ["tanh"]);
        // Then the gradient kernels, each on the one before.
        for (i, k) in b.iter().enumerate() {
            let want: &[u32] = if k.recompute { &[] } else { &[i as u32 - 1] };
            assert_eq!(k.deps.as_slice(), want, "{i} {}", k.name);
        }
        assert_eq!((g.saved_bytes, g.checkpoint_bytes), (0.0, 256.0));

        // The last save after its kernel: everything up to it is recomputed.
        let mut t = Tracer::new(&w, false);
        let x = t.input(64.0, DType::F32, true);
        let y = elementwise(&mut t, "tanh", &[x], 64.0, &[0], per_input(1.0));
        let z = elementwise(&mut t, "exp", &[y], 64.0, &[], per_input(1.0));
        t.save(&z);
        elementwise(&mut t, "add", &[z, x], 64.0, &[], per_input(1.0));
        let g = t.finish(true, 256.0, true);
        assert_eq!(recomputed(&g), ["tanh", "exp"]);

        // A frozen weight saved for dX: the GEMM's pack comes before its kernel.
        let mut t = Tracer::new(&w, false);
        let x = t.input(8.0 * 4.0, DType::F32, true);
        let h = elementwise(&mut t, "tanh", &[x], 32.0, &[0], per_input(1.0));
        let wt = t.param(4.0 * 4.0, DType::F32, false);
        t.gemm("mm", "", &h, &wt, None, 8, 4, 4, 1);
        let g = t.finish(true, 128.0, true);
        assert_eq!(recomputed(&g), ["tanh"]);
        // Without checkpointing nothing is recomputed.
        let mut t = Tracer::new(&w, false);
        let x = t.input(64.0, DType::F32, true);
        elementwise(&mut t, "tanh", &[x], 64.0, &[0], per_input(1.0));
        assert!(t
            .finish(false, 256.0, true)
            .backward
            .kernels
            .iter()
            .all(|k| !k.recompute));
    }

    #[test]
    fn per_input_backward_kernels_keep_the_names_the_ledger_files() {
        let names = [
            ("mul", "mul_backward"),
            ("tanh", "tanh_backward"),
            ("silu", "silu_backward"),
            ("dropout", "dropout_backward"),
            ("where", "where_backward"),
            ("div", "div_backward"),
            ("neg", "neg_backward"),
            ("cat", "cat_backward"),
            ("mean", "mean_backward"),
            ("expand", "backward"),
        ];
        for (op, bwd) in names {
            assert_eq!(super::backward_name(op), bwd, "{op}");
        }
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
