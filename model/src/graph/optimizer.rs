//! The optimizer phase and the trainable tensors it iterates over.
//!
//! Follows torch.optim: AdamW's multi-tensor ("foreach") variant by default, batched into
//! multi_tensor_apply launches; the fused (`fused=True`) single pass, the single-tensor loop, and
//! SGD as alternatives; GradScaler's unscale under fp16 and `clip_grad_norm_` (a foreach norm and
//! a scale pass) when clipping; with mixed precision the optimizer works on fp32 master weights.
//! See `kernels.md` (docs/sources.md).

use super::linear::{treatment, Treatment};
use super::{Ctx, Kernel, KernelKind, Segment};
use crate::arch::Family;
use crate::method::MethodKind;
use crate::workload::{DType, Optimizer as Opt, ParamGroups, Precision};
use rustc_hash::FxHashMap;
use smallvec::smallvec;

/// Multi-tensor launches of one foreach op over `tensors` (element counts): PyTorch's
/// multi_tensor_apply fills a launch with at most `max_tensors` tensors (110, 64, 48, 36, 30 for
/// depth 1–5: the tensor lists the kernel reads and writes, an out-of-place op's output list
/// included) and 320 chunks of 65,536 elements (torch 2.11's
/// `ATen/native/cuda/MultiTensorApply.cuh`, `depth_to_max_tensors`, `depth_to_max_blocks`).
pub fn foreach_launches(tensors: &[u64], depth: usize) -> u32 {
    const MAX_TENSORS: [u32; 5] = [110, 64, 48, 36, 30];
    launches_with_max(tensors, MAX_TENSORS[depth.clamp(1, 5) - 1])
}

/// [`foreach_launches`] of an op that also takes a list of scalars, one per tensor
/// (`_foreach_div_(tensors, [floats])`, `_foreach_addcdiv_(…, [floats])`): the scalars share the
/// kernel argument, so a launch holds at most 96, 64, 48, 36, 30 tensors for depth 1–5
/// (`depth_to_max_tensors_scalarlist`, the same header).
pub fn foreach_launches_scalarlist(tensors: &[u64], depth: usize) -> u32 {
    const MAX_TENSORS: [u32; 5] = [96, 64, 48, 36, 30];
    launches_with_max(tensors, MAX_TENSORS[depth.clamp(1, 5) - 1])
}

fn launches_with_max(tensors: &[u64], max_t: u32) -> u32 {
    const MAX_BLOCKS: u64 = 320;
    const CHUNK: u64 = 65_536;
    if tensors.is_empty() {
        return 0;
    }
    let (mut launches, mut nt, mut nb) = (0u32, 0u32, 0u64);
    for &n in tensors {
        let mut chunks = n.div_ceil(CHUNK).max(1);
        nt += 1;
        // The first piece fills the current launch.
        let take = chunks.min(MAX_BLOCKS - nb);
        nb += take;
        chunks -= take;
        if nb == MAX_BLOCKS || nt == max_t {
            launches = launches.saturating_add(1);
            nb = 0;
            nt = u32::from(chunks > 0);
        }
        // The rest of a large tensor: one launch per full set of blocks, the remainder opens the
        // next launch (closed form of filling launch after launch).
        if chunks > 0 {
            launches =
                launches.saturating_add(u32::try_from(chunks / MAX_BLOCKS).unwrap_or(u32::MAX));
            nb = chunks % MAX_BLOCKS;
            nt = u32::from(nb > 0);
        }
    }
    if nb > 0 || nt > 0 {
        launches = launches.saturating_add(1);
    }
    launches
}

/// [`Launches`] of `tensors` in every slot at once: depth 1–5 ([`foreach_launches`]), then depth
/// 1 with a scalar list ([`foreach_launches_scalarlist`]); the same counts as
/// [`launches_with_max`] for each (a proptest). A sweep of many ranks builds the phase at every
/// point once its memos are full, and a walk per slot was half its time at 1 000 ranks a line
/// (2026-11-30), so most slots are settled without their own walk:
/// - one walk without the tensor limit, filling launches by blocks alone, notes the most
///   tensors any of its launches held (`most`): a slot whose limit is above that never reaches
///   it, so its launches are exactly those (adapters of rank 100 fill a launch's 320 blocks
///   with a few dozen tensors);
/// - a slot whose limit times the largest tensor's chunks stays below 320 blocks never fills a
///   launch by blocks, so it closes one every `max_t` tensors: ⌈n / max_t⌉ (small adapters);
/// - any other slot is walked.
fn launches_all(tensors: &[u64]) -> [u32; 6] {
    const MAX_TENSORS: [u32; 6] = [110, 64, 48, 36, 30, 96];
    const MAX_BLOCKS: u64 = 320;
    const CHUNK: u64 = 65_536;
    let mut launches = [0u32; 6];
    if tensors.is_empty() {
        return launches;
    }
    let (mut by_blocks, mut nt, mut nb, mut most, mut largest) = (0u32, 0u32, 0u64, 0u32, 0u64);
    for &n in tensors {
        let chunks = n.div_ceil(CHUNK).max(1);
        largest = largest.max(chunks);
        nt = nt.saturating_add(1);
        most = most.max(nt);
        let take = chunks.min(MAX_BLOCKS - nb);
        nb += take;
        let rest = chunks - take;
        if nb == MAX_BLOCKS {
            by_blocks = by_blocks.saturating_add(1);
            nb = 0;
            nt = 0;
        }
        // The rest of a tensor (it filled the launch): whole launches, then an open one.
        if rest > 0 {
            by_blocks =
                by_blocks.saturating_add(u32::try_from(rest / MAX_BLOCKS).unwrap_or(u32::MAX));
            nb = rest % MAX_BLOCKS;
            nt = u32::from(nb > 0);
        }
    }
    // A launch still open holds a tensor, hence a block (every tensor has one).
    if nb > 0 {
        by_blocks = by_blocks.saturating_add(1);
    }
    let n = tensors.len() as u64;
    for (l, &max_t) in launches.iter_mut().zip(&MAX_TENSORS) {
        *l = if max_t > most {
            by_blocks
        } else if largest * u64::from(max_t) < MAX_BLOCKS {
            u32::try_from(n.div_ceil(u64::from(max_t))).unwrap_or(u32::MAX)
        } else {
            launches_with_max(tensors, max_t)
        };
    }
    launches
}

/// Tensor elements (all lists together) whose launch counts a worker thread remembers: 2 MiB,
/// enough for the lists of a hundred ranks of LoRA on an 80-layer model, which a sweep revisits
/// for every batch and sequence length.
const LAUNCH_MEMO_ELEMS: usize = 1 << 18;

/// Launch counts per depth (1–5) of a tensor list, and (slot 6) of a depth-1 op with a scalar
/// list, those computed so far.
type Launches = [Option<u32>; 6];

thread_local! {
    /// Launch counts of recently seen tensor lists, and their total length.
    static LAUNCH_MEMO: std::cell::RefCell<(FxHashMap<Vec<u64>, Launches>, usize)> =
        std::cell::RefCell::new((FxHashMap::default(), 0));
}

/// What this thread remembers of `tensors`' launch counts.
pub(super) fn launches_recalled(tensors: &[u64]) -> Launches {
    LAUNCH_MEMO.with_borrow(|(memo, _)| memo.get(tensors).copied().unwrap_or([None; 6]))
}

/// Remember `tensors`' launch counts, starting afresh when the memo is full.
pub(super) fn launches_remember(tensors: &[u64], v: Launches) {
    if tensors.len() > LAUNCH_MEMO_ELEMS {
        return;
    }
    LAUNCH_MEMO.with_borrow_mut(|(memo, elems)| {
        if let Some(e) = memo.get_mut(tensors) {
            *e = v;
            return;
        }
        if *elems + tensors.len() > LAUNCH_MEMO_ELEMS {
            memo.clear();
            *elems = 0;
        }
        *elems += tensors.len();
        memo.insert(tensors.to_vec(), v);
    });
}

/// Marks a scalar-list foreach op in the optimizer recipe's depth argument.
const SCALAR_LIST: usize = 0x10;

/// A tensor list the optimizer's foreach ops walk (all trainable tensors, or one parameter
/// group's), with its launch counts as far as they are known.
struct TensorList<'t> {
    tensors: &'t [u64],
    elems: f64,
    recalled: Launches,
    launches: std::cell::Cell<Launches>,
}

impl<'t> TensorList<'t> {
    fn new(tensors: &'t [u64], memo: bool) -> Self {
        let recalled = if memo {
            launches_recalled(tensors)
        } else {
            [None; 6]
        };
        Self {
            tensors,
            elems: tensors.iter().map(|&n| n as f64).sum(),
            recalled,
            launches: std::cell::Cell::new(recalled),
        }
    }

    /// Launches of a foreach op of `depth` (0x10 marks a scalar list) over the list.
    fn launches(&self, depth: usize) -> u32 {
        let scalar_list = depth & SCALAR_LIST != 0;
        let depth = depth & !SCALAR_LIST;
        let d = if scalar_list && depth == 1 {
            5
        } else {
            depth.clamp(1, 5) - 1
        };
        match self.launches.get()[d] {
            Some(n) => n,
            None => {
                // Every slot in one walk: the recipes ask for up to four of them.
                let all = launches_all(self.tensors);
                self.launches.set(all.map(Some));
                all[d]
            }
        }
    }

    /// Remember the counts found (a graph build's memo).
    fn remember(&self, memo: bool) {
        if memo && self.launches.get() != self.recalled {
            launches_remember(self.tensors, self.launches.get());
        }
    }
}

/// The optimizer phase: gradient unscale (fp16), clipping, and the update. `tensors`: the
/// trainable tensors in model order; `no_decay`: which of them a Trainer's second parameter
/// group holds ([`no_decay_mask`]; empty: none), read under [`ParamGroups::DecayAndNoDecay`].
/// `memo`: recall and remember the launch counts in this thread's memo (a graph build); a
/// sweep's rescaled points keep whole phases in a memo of their own, and on a miss there the
/// list is seldom in this one either (a line of more ranks than both hold), so they only walk it.
pub(super) fn optimizer(cx: &Ctx, tensors: &[u64], no_decay: &[bool], memo: bool) -> Segment {
    use KernelKind::*;
    let nt = tensors.len() as u32;
    if nt == 0 {
        return Segment::default();
    }
    // Trainable tensors, their gradients and states share one dtype: fp32 adapters (LoRA, PaCA)
    // on a bf16 base, fp32 master weights under mixed precision, else the parameter dtype.
    let dt = cx.method.master_dtype(cx.w.precision);
    let sz = dt.size();
    let mut ks = Vec::with_capacity(24);
    // Counting launches walks every tensor (over a thousand for LoRA on an 80-layer model), the
    // costly part of this phase, and a sweep builds it for every point: each list is walked once
    // for every depth ([`launches_all`]), and the counts are remembered per thread for the next
    // point with the same list.
    let all = TensorList::new(tensors, memo);
    let fe = |list: &TensorList,
              name: &'static str,
              depth: usize,
              reads: f64,
              writes: f64,
              flops: f64| {
        let mut k = Kernel::new(name, Optimizer, dt);
        k.launches = list.launches(depth);
        k.bytes_read = reads * list.elems * sz;
        k.bytes_written = writes * list.elems * sz;
        k.flops = flops * list.elems;
        k
    };
    let small = |name: &'static str, dtype: DType, read: f64, written: f64| {
        let mut k = Kernel::new(name, Elementwise, dtype);
        k.bytes_read = read;
        k.bytes_written = written;
        k
    };
    // A kernel on fp32 scalars (clipping's total and coefficient, the loss scale).
    let tiny = |name: &'static str| small(name, DType::F32, 8.0, 4.0);
    if cx.w.precision == Precision::Fp16Mixed {
        // GradScaler.unscale_ (torch 2.11.0, torch/amp/grad_scaler.py): the inverse scale in
        // fp64 (`_scale.double().reciprocal().float()`), `found_inf = torch.full((), 0.0)`, both
        // copied to the gradients' device (`_MultiDeviceReplicator.get`, `to(copy=True)`), then
        // the gradients unscaled and checked in one foreach pass (CPU trace,
        // docs/results/traces/cpu/*-fp16mixed.json): every group's gradients in one list.
        ks.push(small("_to_copy", DType::F64, 4.0, 8.0));
        ks.push(small("reciprocal", DType::F64, 8.0, 8.0));
        ks.push(small("_to_copy", DType::F32, 8.0, 4.0));
        ks.push(small("full", DType::F32, 0.0, 4.0));
        ks.push(small("_to_copy", DType::F32, 4.0, 4.0));
        ks.push(small("_to_copy", DType::F32, 4.0, 4.0));
        ks.push(fe(
            &all,
            "_amp_foreach_non_finite_check_and_unscale_",
            1,
            1.0,
            1.0,
            2.0,
        ));
    }
    if cx.w.grad_clip {
        // clip_grad_norm_(model.parameters()): one list in model order, whatever the groups.
        let mut norm = fe(&all, "_foreach_norm", 1, 1.0, 0.0, 2.0);
        norm.bytes_written = f64::from(nt) * 4.0;
        ks.push(norm);
        // total = ‖stack(norms)‖; coef = max_norm / (total + 1e-6) (a reciprocal and a mul);
        // clamp(coef, max=1) (torch/nn/utils/clip_grad.py).
        for name in [
            "stack",
            "linalg_vector_norm",
            "add",
            "reciprocal",
            "mul",
            "clamp",
        ] {
            ks.push(tiny(name));
        }
        ks.push(fe(&all, "_foreach_mul_", 1, 1.0, 1.0, 1.0));
    }
    if cx.w.precision == Precision::Fp16Mixed && cx.w.optimizer != Opt::AdamwFused {
        // GradScaler.step reads found_inf before it calls optimizer.step (torch 2.11.0,
        // torch/amp/grad_scaler.py `_maybe_opt_step`: `if not sum(v.item() for v in
        // found_inf_per_device.values())`): on CUDA a copy to the host that waits for the
        // unscaling and clipping to finish, so the update's Python runs with the device idle.
        // A fused optimizer takes found_inf and the scale on the device instead
        // (`_step_supports_amp_scaling`): no read, no wait.
        let mut item = Kernel::new("_local_scalar_dense(found_inf)", Host, DType::F32);
        item.launches = 0;
        item.syncs = true;
        ks.push(item);
    }
    if cx.w.precision == Precision::Fp16Mixed && cx.w.optimizer == Opt::AdamwFused {
        // GradScaler.step hands a fused optimizer `found_inf` summed over devices
        // (`sum([t.to(...) for t in found_inf_per_device.values()])`: 0 + found_inf, one add
        // on a scalar; torch/amp/grad_scaler.py; CPU trace, 2026-12-01).
        ks.push(tiny("add"));
    }
    // The parameter groups, each updated apart (torch.optim's `for group in self.param_groups`):
    // a Trainer's weights with decay, then its biases and norms (both in model order).
    let grouped = cx.w.param_groups == ParamGroups::DecayAndNoDecay
        && no_decay.len() == tensors.len()
        && no_decay.contains(&true);
    let split: [Vec<u64>; 2] = if grouped {
        [false, true].map(|nd| {
            tensors
                .iter()
                .zip(no_decay)
                .filter(|&(_, &x)| x == nd)
                .map(|(&n, _)| n)
                .collect()
        })
    } else {
        Default::default()
    };
    // A group without tensors (a Trainer's second under LoRA) steps nothing
    // (`_fused_adamw`/`_multi_tensor_adamw` return on an empty list).
    // The second group's weight decay is 0.0 whatever the first's (transformers 5.17,
    // `Trainer.get_optimizer_grouped_parameters`), and an AdamW group without decay skips its
    // multiply (`if weight_decay != 0`, torch/optim/adam.py).
    let lists: Vec<(TensorList, bool)> = split
        .iter()
        .zip([true, false])
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, decay)| (TensorList::new(g, memo), decay))
        .collect();
    if grouped {
        for (g, decay) in &lists {
            update(cx, g, *decay, dt, &fe, &mut ks);
        }
    } else {
        // One group over every tensor: `all` itself, with the counts clipping found.
        update(cx, &all, true, dt, &fe, &mut ks);
    }
    if cx.w.precision == Precision::Fp16Mixed {
        // GradScaler.update: the next scale from found_inf, on the device.
        ks.push(tiny("_amp_update_scale_"));
    }
    let mut zg = Kernel::new("zero_grad(set_to_none)", Host, DType::F32);
    zg.launches = 0;
    zg.host_tensors = nt;
    ks.push(zg);
    all.remember(memo);
    for (g, _) in &lists {
        g.remember(memo);
    }
    for (i, k) in ks.iter_mut().enumerate() {
        k.module = "";
        if i > 0 {
            k.deps = smallvec![i as u32 - 1];
        }
    }
    Segment { kernels: ks }
}

/// One parameter group's update (`optimizer.step` for the tensors of `g`): the parameter loop's
/// host work, then the optimizer's kernels. `decay`: the group has weight decay (AdamW's
/// decoupled multiply; costsim takes torch's default 0.01 for it, docs/model.md).
fn update(
    cx: &Ctx,
    g: &TensorList,
    decay: bool,
    dt: DType,
    fe: &impl Fn(&TensorList, &'static str, usize, f64, f64, f64) -> Kernel,
    ks: &mut Vec<Kernel>,
) {
    use KernelKind::*;
    let nt = g.tensors.len() as u32;
    let sz = dt.size();
    let mut host = Kernel::new("param_loop", Host, DType::F32);
    host.launches = 0;
    host.host_tensors = nt;
    ks.push(host);
    match cx.w.optimizer {
        Opt::AdamwForeach => {
            let mut step = Kernel::new("_foreach_add_(state_steps)", Host, DType::F32);
            step.launches = 0;
            ks.push(step);
            if decay {
                ks.push(fe(g, "_foreach_mul_", 1, 1.0, 1.0, 1.0)); // weight decay
            }
            ks.push(fe(g, "_foreach_lerp_", 2, 2.0, 1.0, 3.0));
            ks.push(fe(g, "_foreach_mul_", 1, 1.0, 1.0, 1.0));
            // In place with a scalar value: self, tensor1, tensor2 (ATen's
            // `foreach_pointwise_op_`, `multi_tensor_apply<3>`).
            ks.push(fe(g, "_foreach_addcmul_", 3, 2.0, 1.0, 3.0));
            let mut bc = Kernel::new("bias_correction", Host, DType::F32);
            bc.launches = 0;
            ks.push(bc);
            ks.push(fe(g, "_foreach_sqrt", 2, 1.0, 1.0, 1.0));
            // Divided by the list of bias corrections (floats), and stepped by the list of step
            // sizes: scalar-list variants (torch/optim/adam.py, `_multi_tensor_adam`).
            ks.push(fe(g, "_foreach_div_", 1 | SCALAR_LIST, 1.0, 1.0, 1.0));
            ks.push(fe(g, "_foreach_add_", 1, 1.0, 1.0, 1.0));
            ks.push(fe(g, "_foreach_addcdiv_", 3 | SCALAR_LIST, 3.0, 1.0, 3.0));
        }
        Opt::AdamwFused => {
            // A fused AdamW keeps its step counters on the parameters' device (fp32 0-dim
            // tensors, torch/optim/adam.py `_init_group`), so `_fused_adam`'s
            // `_foreach_add_(device_state_steps, 1)` launches on CUDA: one tensor of one
            // element each fills a launch by the tensor limit, ⌈n/110⌉ at depth 1. Under a
            // GradScaler the counters are stepped back by found_inf after the update
            // (`_foreach_sub_(steps, [found_inf] * n)`, depth 2: ⌈n/64⌉). CPU traces with the
            // counters on the device (docs/results/traces/cpu-optimizers, 2026-12-01).
            let counters = |name: &'static str, depth: u32, reads: f64| {
                let mut k = Kernel::new(name, Optimizer, DType::F32);
                k.launches = nt.div_ceil([110, 64][depth as usize - 1]);
                k.bytes_read = reads;
                k.bytes_written = 4.0 * f64::from(nt);
                k.flops = f64::from(nt);
                k
            };
            ks.push(counters(
                "_foreach_add_(state_steps)",
                1,
                4.0 * f64::from(nt),
            ));
            ks.push(fe(g, "_fused_adamw_", 4, 4.0, 3.0, 12.0));
            if cx.w.precision == Precision::Fp16Mixed {
                // The counters and the one found_inf they all read.
                ks.push(counters(
                    "_foreach_sub_(state_steps)",
                    2,
                    4.0 * f64::from(nt) + 4.0,
                ));
            }
        }
        Opt::Sgd => ks.push(fe(g, "_foreach_add_", 2, 2.0, 1.0, 2.0)),
        Opt::AdamwSingle => {
            // _single_tensor_adam (torch 2.11.0, torch/optim/adam.py): per tensor mul_ (decay),
            // lerp_, mul_, addcmul_, then `denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt)
            // .add_(eps)`: sqrt and the division each write a fresh tensor (the division is
            // not in place, unlike foreach's `_foreach_div_`), add_, addcdiv_ — the same 12
            // reads and 8 writes per element as foreach, one launch per op and tensor.
            const OPS: [(&str, f64, f64); 8] = [
                ("mul_", 1.0, 1.0),
                ("lerp_", 2.0, 1.0),
                ("mul_", 1.0, 1.0),
                ("addcmul_", 2.0, 1.0),
                ("sqrt", 1.0, 1.0),
                ("div", 1.0, 1.0),
                ("add_", 1.0, 1.0),
                ("addcdiv_", 3.0, 1.0),
            ];
            // Without weight decay the first multiply is skipped.
            let ops = if decay { &OPS[..] } else { &OPS[1..] };
            for &n in g.tensors {
                for &(name, reads, writes) in ops {
                    let mut k = Kernel::new(name, Optimizer, dt);
                    k.bytes_read = reads * n as f64 * sz;
                    k.bytes_written = writes * n as f64 * sz;
                    k.flops = 2.0 * n as f64;
                    ks.push(k);
                }
            }
        }
    }
}

/// The trainable tensors, in model order (what `model.parameters()` yields: the memory
/// footprint's list, and what clipping walks).
pub(super) fn trainable_tensors(cx: &Ctx) -> Vec<u64> {
    let mut v = Vec::new();
    walk_trainable(cx, |n, _| v.push(n));
    v
}

/// Which of [`trainable_tensors`] a Trainer puts in its group without weight decay (transformers
/// 5.17 `Trainer.get_decay_parameter_names`: parameters of `nn.LayerNorm` layers and those whose
/// name holds `bias`, `layernorm`, `rmsnorm`, `.norm` or `_norm`: every bias, GPT-2's `ln_1`,
/// `ln_2`, `ln_f`, Llama's `input_layernorm`, `post_attention_layernorm` and final `norm`). The
/// embeddings, the head, and LoRA's and PaCA's tensors have weight decay.
pub(super) fn no_decay_mask(cx: &Ctx) -> Vec<bool> {
    let mut v = Vec::new();
    walk_trainable(cx, |_, no_decay| v.push(no_decay));
    v
}

/// Every trainable tensor in model order: its elements, and whether a Trainer leaves it without
/// weight decay ([`no_decay_mask`]).
fn walk_trainable(cx: &Ctx, mut push: impl FnMut(u64, bool)) {
    let model = cx.model;
    let d = model.hidden;
    if cx.method.trains_embedding(model) {
        push(model.vocab * d, false);
        if model.family == Family::Gpt2 {
            push(model.max_positions * d, false);
        }
    }
    let (lo, hi) = cx.method.trained_layers(model);
    let r = cx.method.rank;
    let mut per_layer = Vec::new();
    // LayerNorm's weight and bias (GPT-2), RMSNorm's weight (Llama): no weight decay.
    let norm_tensors: &[(u64, bool)] = match model.family {
        Family::Gpt2 => &[(d, true), (d, true)],
        Family::Llama => &[(d, true)],
    };
    for lin in model.linears() {
        match treatment(cx, &lin, true) {
            Treatment::Full => {
                per_layer.push((lin.in_features * lin.out_features, false));
                if lin.bias {
                    per_layer.push((lin.out_features, true));
                }
            }
            Treatment::Lora => {
                per_layer.push((r * lin.in_features, false));
                per_layer.push((lin.out_features * r, false));
            }
            Treatment::Paca => per_layer.push((lin.out_features * r, false)),
            Treatment::Frozen => {}
        }
    }
    if cx.method.kind == MethodKind::Full {
        // two norms per block
        per_layer.extend_from_slice(norm_tensors);
        per_layer.extend_from_slice(norm_tensors);
    }
    for _ in lo..=hi {
        for &(n, no_decay) in &per_layer {
            push(n, no_decay);
        }
    }
    if cx.method.kind == MethodKind::Full {
        for &(n, no_decay) in norm_tensors {
            push(n, no_decay);
        }
        if cx.method.trains_head(model) && !model.tied_embeddings {
            push(model.vocab * d, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{foreach_launches, foreach_launches_scalarlist};
    use crate::graph::tests::graph;
    use crate::method::MethodName;
    use crate::workload::Workload;
    use proptest::strategy::{Just, Strategy};

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
    fn remembered_launch_counts_are_the_counts_of_that_list() {
        // Two lists that differ in one tensor, built alternately on one thread (as a sweep's
        // neighbouring ranks are): each optimizer phase has its own list's counts, not the
        // other's remembered ones. The foreach AdamW, whose launch counts walk the list.
        let w = Workload {
            optimizer: crate::workload::Optimizer::AdamwForeach,
            ..Workload::default()
        };
        for _ in 0..3 {
            for rank in [8, 64] {
                let m = crate::arch::preset("llama2-7b").unwrap();
                let opts = crate::method::MethodOptions {
                    rank: Some(rank),
                    ..Default::default()
                };
                let spec =
                    crate::method::MethodSpec::resolve(MethodName::Lora, &opts, &m, true).unwrap();
                let g = crate::graph::build(&m, &spec, &w);
                for k in g
                    .optimizer
                    .kernels
                    .iter()
                    .filter(|k| k.kind == crate::graph::KernelKind::Optimizer)
                {
                    let t = &g.trainable_tensors;
                    let want = match k.name {
                        "_foreach_lerp_" | "_foreach_sqrt" => foreach_launches(t, 2),
                        "_foreach_addcmul_" => foreach_launches(t, 3),
                        "_foreach_addcdiv_" => foreach_launches_scalarlist(t, 3),
                        "_foreach_div_" => foreach_launches_scalarlist(t, 1),
                        _ => foreach_launches(t, 1),
                    };
                    assert_eq!(k.launches, want, "rank {rank} {}", k.name);
                }
            }
        }
    }

    /// The launch-by-launch loop that `foreach_launches` computes in closed form.
    fn foreach_launches_loop(tensors: &[u64], depth: usize) -> u32 {
        const MAX_TENSORS: [u32; 5] = [110, 64, 48, 36, 30];
        launches_loop(tensors, MAX_TENSORS[depth.clamp(1, 5) - 1])
    }

    /// Launches filled chunk by chunk: at most `max_t` tensors and 320 chunks of 65 536
    /// elements each.
    fn launches_loop(tensors: &[u64], max_t: u32) -> u32 {
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

    /// Every slot of [`super::launches_all`], against the launch-by-launch loop.
    fn assert_all_slots_match_the_loop(tensors: &[u64]) {
        let all = super::launches_all(tensors);
        for depth in 1..=5 {
            assert_eq!(
                all[depth - 1],
                foreach_launches_loop(tensors, depth),
                "depth {depth}, {} tensors",
                tensors.len()
            );
        }
        assert_eq!(all[5], foreach_launches_scalarlist(tensors, 1));
        // The depth-1 scalar-list op: at most 96 tensors a launch.
        assert_eq!(all[5], launches_loop(tensors, 96));
    }

    proptest::proptest! {
        #[test]
        fn every_slot_at_once_matches_the_loop(
            tensors in proptest::prop_oneof![
                Just(70_000u64), Just(400_000), Just(2_000_000), Just(30_000_000),
                Just(100_000_000),
            ].prop_flat_map(|scale| proptest::collection::vec(1..scale, 0..700)),
        ) {
            assert_all_slots_match_the_loop(&tensors);
        }
    }

    /// Counts saturate rather than wrap: tensors of 2^62 elements (a corrupted trace's list,
    /// before its check) count u32::MAX launches, in every slot, without a panic.
    #[test]
    fn launch_counts_saturate() {
        let huge = [1u64 << 62; 8];
        assert_eq!(super::launches_all(&huge), [u32::MAX; 6]);
        assert_eq!(foreach_launches(&huge, 1), u32::MAX);
    }

    /// LoRA's tensor lists on llama2-7b (A r×in and B out×r of seven projections, 32 layers)
    /// cover the three ways `launches_all` settles a slot: at rank 1 no launch fills its
    /// blocks (⌈n / max_t⌉), at rank 100 every launch fills its blocks before its tensor
    /// limit (the walk by blocks), and in between some slots need their own walk.
    #[test]
    fn every_slot_at_once_matches_the_loop_on_lora_lists() {
        let shapes: [(u64, u64); 7] = [
            (4096, 4096),
            (4096, 4096),
            (4096, 4096),
            (4096, 4096),
            (4096, 11008),
            (4096, 11008),
            (11008, 4096),
        ];
        for r in [1, 2, 5, 8, 12, 16, 24, 36, 48, 64, 100, 128, 256, 1000] {
            let layer: Vec<u64> = shapes.iter().flat_map(|&(i, o)| [r * i, o * r]).collect();
            let tensors = layer.repeat(32);
            assert_all_slots_match_the_loop(&tensors);
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
}
