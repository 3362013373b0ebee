//! Kernel recipes worked by hand: every expected number is derived in the test, with the
//! arithmetic in a comment, from PyTorch's own rules (cited), never copied from costsim's output.
//! Written for the recipes cargo-mutants showed weakest (docs/mutants.md): the optimizer phase
//! (single-tensor AdamW, foreach chunking, the launch memo), SDPA's math path and rope's
//! backward, LoRA's and PaCA's small n×r tensors, the embedding scope, the kernel-kind labels.
//! Where costsim and a trace of the real stack disagree on a kernel, the test leaves that value
//! out and says so (listed in docs/mutants.md), rather than pin a value known to be wrong.

use super::optimizer::{foreach_launches, launches_recalled, launches_remember, optimizer};
use super::{build, Ctx, Kernel, KernelKind, StepGraph};
use crate::arch::{preset, ModelConfig};
use crate::method::{MethodName, MethodOptions, MethodSpec, Targets};
use crate::workload::{DType, Optimizer as Opt, Precision, Workload};

fn spec(m: &ModelConfig, method: MethodName, opts: &MethodOptions) -> MethodSpec {
    MethodSpec::resolve(method, opts, m, true).unwrap()
}

/// The optimizer phase of `tensors` (element counts) under `w`, on GPT-2 with full
/// fine-tuning (the model and method only supply the context; the tensor list is given).
fn optimizer_of(w: &Workload, tensors: &[u64]) -> Vec<Kernel> {
    let m = preset("gpt2").unwrap();
    let s = spec(&m, MethodName::Full, &MethodOptions::default());
    let cx = Ctx::new(&m, &s, w);
    optimizer(&cx, tensors, &[], true).kernels
}

/// The default workload with the foreach AdamW (torch.optim's default on CUDA; the default
/// workload's is a Trainer's fused one).
fn foreach_adamw() -> Workload {
    Workload {
        optimizer: Opt::AdamwForeach,
        ..Workload::default()
    }
}

/// [`optimizer_of`] without the launch memo (as a sweep's rescaled points build the phase).
fn optimizer_walked(w: &Workload, tensors: &[u64]) -> Vec<Kernel> {
    let m = preset("gpt2").unwrap();
    let s = spec(&m, MethodName::Full, &MethodOptions::default());
    let cx = Ctx::new(&m, &s, w);
    optimizer(&cx, tensors, &[], false).kernels
}

/// Without the launch memo the phase walks the list even when the memo holds counts for it,
/// and leaves nothing there; with it, the same counts are remembered and recalled.
#[test]
fn a_phase_without_the_launch_memo_walks_the_list() {
    let w = foreach_adamw();
    let launches = |ks: &[Kernel]| -> Vec<u32> {
        ks.iter()
            .filter(|k| k.kind == KernelKind::Optimizer)
            .map(|k| k.launches)
            .collect()
    };
    // 77 one-chunk tensors: depth 1 one launch (110 a launch), depth 2 and 3 two (64, 48),
    // the depth-1 scalar-list op one (96): norm, mul, mul, lerp, mul, addcmul, sqrt, div,
    // add, addcdiv.
    let fresh = vec![11u64; 77];
    let walked = optimizer_walked(&w, &fresh);
    assert_eq!(launches(&walked), [1, 1, 1, 2, 1, 2, 2, 1, 1, 2]);
    assert_eq!(launches_recalled(&fresh), [None; 6], "nothing remembered");
    assert_eq!(optimizer_of(&w, &fresh), walked, "walked, then remembered");
    assert_ne!(launches_recalled(&fresh), [None; 6]);
    assert_eq!(optimizer_of(&w, &fresh), walked, "recalled");
    // Counts planted in the memo are used with it and ignored without it.
    let planted = vec![12u64; 77];
    launches_remember(&planted, [Some(50); 6]);
    assert!(launches(&optimizer_of(&w, &planted))
        .iter()
        .all(|&n| n == 50));
    assert_eq!(launches(&optimizer_walked(&w, &planted)), launches(&walked));
}

/// (name, kind, launches, bytes read, bytes written, FLOPs) of each kernel.
type Row = (&'static str, KernelKind, u32, f64, f64, f64);

fn rows(ks: &[Kernel]) -> Vec<Row> {
    ks.iter()
        .map(|k| {
            (
                k.name,
                k.kind,
                k.launches,
                k.bytes_read,
                k.bytes_written,
                k.flops,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Optimizer
// ---------------------------------------------------------------------------------------------

/// torch.optim's `_multi_tensor_adam` (torch/optim/adam.py, 2.11: `_foreach_mul_` decay,
/// `_foreach_lerp_`, `_foreach_mul_`, `_foreach_addcmul_`, `_foreach_sqrt`, `_foreach_div_`,
/// `_foreach_add_`, `_foreach_addcdiv_`) after `clip_grad_norm_(foreach=True)`, on two tensors
/// of 100 and 200,000 fp32 elements (bf16-mixed keeps fp32 master weights): 200,100 elements,
/// 800,400 bytes per pass over one state. Each op reads the lists it takes (lerp_: exp_avg and
/// grad; addcmul_: exp_avg_sq and grad; addcdiv_: param, exp_avg and the denominator) and writes
/// its first. 100 elements are one 65,536-element chunk, 200,000 are ⌈200,000 / 65,536⌉ = 4:
/// 5 blocks and 2 tensors, one launch at every depth.
#[test]
fn foreach_adamw_with_clipping_by_hand() {
    use KernelKind::*;
    let w = foreach_adamw();
    assert_eq!(
        (w.precision, w.optimizer, w.grad_clip),
        (Precision::Bf16Mixed, Opt::AdamwForeach, true)
    );
    let ks = optimizer_of(&w, &[100, 200_000]);
    let e = 200_100.0;
    let b = 800_400.0;
    // clip_grad_norm_: per-tensor norms (one fp32 each: 2 · 4 bytes written), then the scalar
    // math on fp32 scalars (reads two 4-byte operands, writes one), then the scale pass.
    let tiny = |name| (name, Elementwise, 1, 8.0, 4.0, 0.0);
    let expected: Vec<Row> = vec![
        ("_foreach_norm", Optimizer, 1, b, 8.0, 2.0 * e),
        tiny("stack"),
        tiny("linalg_vector_norm"),
        tiny("add"),
        tiny("reciprocal"),
        tiny("mul"),
        tiny("clamp"),
        ("_foreach_mul_", Optimizer, 1, b, b, e),
        ("param_loop", Host, 0, 0.0, 0.0, 0.0),
        ("_foreach_add_(state_steps)", Host, 0, 0.0, 0.0, 0.0),
        ("_foreach_mul_", Optimizer, 1, b, b, e),
        ("_foreach_lerp_", Optimizer, 1, 2.0 * b, b, 3.0 * e),
        ("_foreach_mul_", Optimizer, 1, b, b, e),
        ("_foreach_addcmul_", Optimizer, 1, 2.0 * b, b, 3.0 * e),
        ("bias_correction", Host, 0, 0.0, 0.0, 0.0),
        ("_foreach_sqrt", Optimizer, 1, b, b, e),
        ("_foreach_div_", Optimizer, 1, b, b, e),
        ("_foreach_add_", Optimizer, 1, b, b, e),
        ("_foreach_addcdiv_", Optimizer, 1, 3.0 * b, b, 3.0 * e),
        ("zero_grad(set_to_none)", Host, 0, 0.0, 0.0, 0.0),
    ];
    assert_eq!(rows(&ks), expected);
    // The Python loops over the two tensors: the param loop and zero_grad.
    assert_eq!(ks[8].host_tensors, 2);
    assert_eq!(ks[19].host_tensors, 2);
    // One chain, in issue order, in the optimizer scope.
    for (i, k) in ks.iter().enumerate() {
        assert_eq!(k.module, "");
        let want: &[u32] = if i == 0 { &[] } else { &[i as u32 - 1] };
        assert_eq!(k.deps.as_slice(), want, "{i} {}", k.name);
    }
    // No GradScaler under bf16.
    assert!(!ks.iter().any(|k| k.name.starts_with("_amp")));
}

/// A Trainer's two parameter groups (transformers 5.17 `Trainer.create_optimizer`: the
/// parameters `get_decay_parameter_names` returns with weight decay, the rest without), each
/// stepped apart by torch.optim (`for group in self.param_groups`). Tiny GPT-2 (d = 8, 2 layers,
/// vocabulary 16, 4 positions), full fine-tuning, fp32, no clipping, fused AdamW:
/// - in model order, wte 16·8 = 128, wpe 4·8 = 32, then per layer c_attn 8·24 = 192 + bias 24,
///   attn c_proj 64 + 8, c_fc 8·32 = 256 + 32, mlp c_proj 256 + 8, ln_1 and ln_2 8 + 8 each, then
///   ln_f 8 + 8 (the head is tied): 2 + 2·12 + 2 = 28 tensors;
/// - with decay: wte, wpe and the four weights of each layer, 2 + 8 = 10 tensors of
///   128 + 32 + 2·(192 + 64 + 256 + 256) = 1 696 elements; without: the biases and the
///   LayerNorms, 18 tensors of 2·(24 + 8 + 32 + 8 + 4·8) + 16 = 224 elements (the 10 and 18 a
///   Trainer holds for the tracer's tiny GPT-2: docs/results/traces/cpu-optimizers);
/// - each group: its Python loop over its tensors, its step counters (⌈10/110⌉ = ⌈18/110⌉ = 1
///   launch of one 4-byte counter a tensor) and one `_fused_adamw_` launch (every tensor is one
///   chunk, 10 and 18 < 36 tensors at depth 4) reading 4 and writing 3 fp32 values a parameter;
/// - one group over all 28 instead: one loop, one counter launch, one fused launch; the same
///   bytes over the step.
#[test]
fn a_trainers_two_parameter_groups_by_hand() {
    use KernelKind::*;
    let mut m = preset("gpt2").unwrap();
    (m.hidden, m.layers, m.vocab, m.max_positions, m.heads) = (8, 2, 16, 4, 2);
    m.intermediate = 32;
    let s = spec(&m, MethodName::Full, &MethodOptions::default());
    let w = Workload {
        precision: Precision::Fp32,
        grad_clip: false,
        ..Workload::default()
    };
    assert_eq!(
        (w.optimizer, w.param_groups),
        (Opt::AdamwFused, crate::ParamGroups::DecayAndNoDecay)
    );
    let g = build(&m, &s, &w);
    assert_eq!(g.trainable_tensors.len(), 28);
    assert_eq!(crate::graph::param_group_sizes(&m, &s, &w), [10, 18]);
    let group = |n: u32, e: f64| -> Vec<Row> {
        vec![
            ("param_loop", Host, 0, 0.0, 0.0, 0.0),
            (
                "_foreach_add_(state_steps)",
                Optimizer,
                1,
                4.0 * f64::from(n),
                4.0 * f64::from(n),
                f64::from(n),
            ),
            ("_fused_adamw_", Optimizer, 1, 16.0 * e, 12.0 * e, 12.0 * e),
        ]
    };
    let mut expected = group(10, 1_696.0);
    expected.extend(group(18, 224.0));
    expected.push(("zero_grad(set_to_none)", Host, 0, 0.0, 0.0, 0.0));
    let ks = &g.optimizer.kernels;
    assert_eq!(rows(ks), expected);
    assert_eq!(
        [ks[0].host_tensors, ks[3].host_tensors, ks[6].host_tensors],
        [10, 18, 28]
    );
    // One group: the same bytes in one update.
    let one = Workload {
        param_groups: crate::ParamGroups::One,
        ..w.clone()
    };
    assert_eq!(crate::graph::param_group_sizes(&m, &s, &one), [28]);
    let mut expected = group(28, 1_920.0);
    expected.push(("zero_grad(set_to_none)", Host, 0, 0.0, 0.0, 0.0));
    assert_eq!(rows(&build(&m, &s, &one).optimizer.kernels), expected);
    // The second group's weight decay is 0.0: a foreach AdamW skips its decay multiply there
    // (`if weight_decay != 0`), 8 ops on the 10 weights, 7 on the 18 biases and norms.
    let foreach = Workload {
        optimizer: Opt::AdamwForeach,
        ..w.clone()
    };
    let ks = build(&m, &s, &foreach).optimizer.kernels;
    let names = |elems: f64| -> Vec<&str> {
        ks.iter()
            .filter(|k| k.kind == Optimizer && k.bytes_written == 4.0 * elems)
            .map(|k| k.name)
            .collect()
    };
    let ops = [
        "_foreach_mul_",
        "_foreach_lerp_",
        "_foreach_mul_",
        "_foreach_addcmul_",
        "_foreach_sqrt",
        "_foreach_div_",
        "_foreach_add_",
        "_foreach_addcdiv_",
    ];
    assert_eq!(names(1_696.0), ops);
    assert_eq!(names(224.0), ops[1..]);
    // LoRA's tensors all have weight decay: the second group is empty and steps nothing.
    let lora = spec(&m, MethodName::Lora, &MethodOptions::default());
    let n = build(&m, &lora, &w).trainable_tensors.len() as u64;
    assert_eq!(crate::graph::param_group_sizes(&m, &lora, &w), [n, 0]);
    assert_eq!(
        rows(&build(&m, &lora, &w).optimizer.kernels),
        rows(&build(&m, &lora, &one).optimizer.kernels)
    );
}

/// fp16-mixed adds GradScaler's `unscale_` (torch/amp/grad_scaler.py, 2.11): the fp32 scale to
/// fp64 (4 → 8 bytes), its reciprocal (8 → 8), back to fp32 (8 → 4), `found_inf = full((), 0)`
/// (4 written), both copied to the gradients' device (4 → 4 each), and
/// `_amp_foreach_non_finite_check_and_unscale_` (reads and writes every fp32 gradient once:
/// 4 · 300 = 1,200 bytes each way, a check and a multiply per element); then `step`'s `.item()`
/// of found_inf (host only, and the host waits there for the device: `_maybe_opt_step` reads it
/// before it calls `optimizer.step`), SGD's one `_foreach_add_` (param and grad read, param
/// written; no clipping here) and `update`'s `_amp_update_scale_` on fp32 scalars — the ops of
/// the CPU traces (docs/results/traces/cpu/*-fp16mixed.json), in the order in which each first
/// appears there.
#[test]
fn fp16_unscale_and_sgd_by_hand() {
    use KernelKind::*;
    let w = Workload {
        precision: Precision::Fp16Mixed,
        optimizer: Opt::Sgd,
        grad_clip: false,
        ..Workload::default()
    };
    let ks = optimizer_of(&w, &[300]);
    let expected: Vec<Row> = vec![
        ("_to_copy", Elementwise, 1, 4.0, 8.0, 0.0),
        ("reciprocal", Elementwise, 1, 8.0, 8.0, 0.0),
        ("_to_copy", Elementwise, 1, 8.0, 4.0, 0.0),
        ("full", Elementwise, 1, 0.0, 4.0, 0.0),
        ("_to_copy", Elementwise, 1, 4.0, 4.0, 0.0),
        ("_to_copy", Elementwise, 1, 4.0, 4.0, 0.0),
        (
            "_amp_foreach_non_finite_check_and_unscale_",
            Optimizer,
            1,
            1_200.0,
            1_200.0,
            600.0,
        ),
        ("_local_scalar_dense(found_inf)", Host, 0, 0.0, 0.0, 0.0),
        ("param_loop", Host, 0, 0.0, 0.0, 0.0),
        ("_foreach_add_", Optimizer, 1, 2_400.0, 1_200.0, 600.0),
        ("_amp_update_scale_", Elementwise, 1, 8.0, 4.0, 0.0),
        ("zero_grad(set_to_none)", Host, 0, 0.0, 0.0, 0.0),
    ];
    assert_eq!(rows(&ks), expected);
    // The read of found_inf is the one op the host waits at.
    let syncs: Vec<_> = ks.iter().filter(|k| k.syncs).map(|k| k.name).collect();
    assert_eq!(syncs, ["_local_scalar_dense(found_inf)"]);
    // A fused AdamW reads found_inf on the device (`_step_supports_amp_scaling`): no read, no
    // wait; the unscaling and the scale's update stay.
    let fused = Workload {
        optimizer: Opt::AdamwFused,
        ..w
    };
    let ks = optimizer_of(&fused, &[300]);
    assert!(!ks
        .iter()
        .any(|k| k.syncs || k.name.starts_with("_local_scalar")));
    assert!(ks
        .iter()
        .any(|k| k.name == "_amp_foreach_non_finite_check_and_unscale_"));
    assert!(ks.iter().any(|k| k.name == "_amp_update_scale_"));
}

/// `_single_tensor_adam` (torch/optim/adam.py, 2.11, lines 414–547 with decoupled weight
/// decay): per tensor `param.mul_(1 − lr·wd)`, `exp_avg.lerp_(grad, 1 − β1)`,
/// `exp_avg_sq.mul_(β2).addcmul_(grad, grad, value=1 − β2)`,
/// `denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)`,
/// `param.addcdiv_(exp_avg, denom, value=−step_size)`: eight kernels per tensor, one launch
/// each (`step_t += 1` is a CPU tensor). Worked on pure bf16 (2-byte params and states) and
/// two tensors of 100 and 300 elements: 200 and 600 bytes per pass; 2 FLOPs per element each.
#[test]
fn single_tensor_adamw_by_hand() {
    use KernelKind::*;
    let w = Workload {
        precision: Precision::Bf16,
        optimizer: Opt::AdamwSingle,
        grad_clip: false,
        ..Workload::default()
    };
    let ks = optimizer_of(&w, &[100, 300]);
    let per_tensor = |b: f64, f: f64| -> Vec<Row> {
        vec![
            ("mul_", Optimizer, 1, b, b, f),
            ("lerp_", Optimizer, 1, 2.0 * b, b, f),
            ("mul_", Optimizer, 1, b, b, f),
            ("addcmul_", Optimizer, 1, 2.0 * b, b, f),
            ("sqrt", Optimizer, 1, b, b, f),
            // Out of place: `exp_avg_sq.sqrt() / bias_correction2_sqrt` (torch/optim/adam.py).
            ("div", Optimizer, 1, b, b, f),
            ("add_", Optimizer, 1, b, b, f),
            ("addcdiv_", Optimizer, 1, 3.0 * b, b, f),
        ]
    };
    let mut expected: Vec<Row> = vec![("param_loop", Host, 0, 0.0, 0.0, 0.0)];
    expected.extend(per_tensor(200.0, 200.0));
    expected.extend(per_tensor(600.0, 600.0));
    expected.push(("zero_grad(set_to_none)", Host, 0, 0.0, 0.0, 0.0));
    assert_eq!(rows(&ks), expected);
    assert!(ks.iter().all(|k| k.dtype == DType::Bf16 || k.kind == Host));
}

/// No trainable tensor, no optimizer phase.
#[test]
fn empty_optimizer_phase() {
    assert!(optimizer_of(&Workload::default(), &[]).is_empty());
}

/// multi_tensor_apply's chunking (ATen/native/cuda/MultiTensorApply.cuh, 2.11: kChunkSize
/// 65,536; at most 320 blocks and 110/64/48/36/30 tensors per launch for depth 1–5; a launch
/// closes when its blocks are full, or its tensors are full at a tensor's last chunk; a tensor
/// cut by a full launch carries on in the next) on lists beyond one launch, by hand.
#[test]
fn foreach_chunking_by_hand() {
    const C: u64 = 65_536;
    // 640 chunks: blocks full at chunk 320 and at chunk 640 (the last: nothing carried).
    assert_eq!(foreach_launches(&[640 * C], 1), 2);
    // 1 + 640 = 641 blocks: 320, 320, 1.
    assert_eq!(foreach_launches(&[10, 640 * C], 1), 3);
    // 65,537 elements are two chunks; one launch.
    assert_eq!(foreach_launches(&[C + 1], 1), 1);
    // Depth 5: 30 tensors a launch. 30 two-chunk tensors (60 blocks) close one launch at the
    // 30th's last chunk; a 31st opens a second.
    assert_eq!(foreach_launches(&[C + 1; 30], 5), 1);
    assert_eq!(foreach_launches(&[C + 1; 31], 5), 2);
    // 109 one-chunk tensors then one of 400 chunks at depth 1: the 110th tensor fills the
    // blocks at 320 (211 of its chunks), is carried, and its last 189 chunks make a second.
    let mut v = vec![10; 109];
    v.push(400 * C);
    assert_eq!(foreach_launches(&v, 1), 2);
    // The same list with the big tensor first: 400 chunks = 320 + 80, then 80 + 109 blocks
    // and 110 tensors (1 carried + 109) in the second launch: the tensors fill it exactly.
    v.rotate_right(1);
    assert_eq!(foreach_launches(&v, 1), 2);
    // Depth 5 (30 tensors a launch): the carried 400-chunk tensor counts in the second launch,
    // so 29 one-chunk tensors fill it (1 + 29 = 30) and a 30th opens a third.
    let mut v = vec![400 * C];
    v.extend([10; 30]);
    assert_eq!(foreach_launches(&v, 5), 3);
    // 100 one-chunk tensors: ⌈100/110⌉ = 1, ⌈100/64⌉ = 2, ⌈100/48⌉ = 3, ⌈100/36⌉ = 3,
    // ⌈100/30⌉ = 4 launches at depth 1–5; depth 0 and 9 clamp to 1 and 5.
    let small = [10u64; 100];
    let got: Vec<u32> = (0..=5)
        .chain([9])
        .map(|d| foreach_launches(&small, d))
        .collect();
    assert_eq!(got, [1, 1, 2, 3, 3, 4, 4]);
}

/// 100 tensors of 10 elements, each launch limited by its tensor count alone: depth 1 (one
/// list: norm, mul_, add_) ⌈100/110⌉ = 1; depth 2 (lerp_, sqrt: input and output) ⌈100/64⌉ = 2;
/// `_foreach_addcmul_` in place with a scalar value touches self, tensor1 and tensor2 (ATen's
/// `foreach_pointwise_op_`, `multi_tensor_apply<3>`): ⌈100/48⌉ = 3; `_foreach_div_` by the list
/// of bias corrections (floats) is a scalar-list op, at most 96 tensors a launch
/// (`depth_to_max_tensors_scalarlist`): ⌈100/96⌉ = 2; `_foreach_addcdiv_` by the list of step
/// sizes, depth 3 with a scalar list: ⌈100/48⌉ = 3 (torch/optim/adam.py, `_multi_tensor_adam`).
#[test]
fn foreach_launches_per_depth_in_the_phase() {
    let list = vec![10u64; 100];
    let w = foreach_adamw();
    let got: Vec<(&str, u32)> = optimizer_of(&w, &list)
        .iter()
        .filter(|k| k.kind == KernelKind::Optimizer)
        .map(|k| (k.name, k.launches))
        .collect();
    assert_eq!(
        got,
        [
            ("_foreach_norm", 1),
            ("_foreach_mul_", 1),
            ("_foreach_mul_", 1),
            ("_foreach_lerp_", 2),
            ("_foreach_mul_", 1),
            ("_foreach_addcmul_", 3),
            ("_foreach_sqrt", 2),
            ("_foreach_div_", 2),
            ("_foreach_add_", 1),
            ("_foreach_addcdiv_", 3),
        ]
    );
    // What the phase left in this thread's memo: every depth counted in one walk (⌈100/36⌉ = 3
    // at depth 4, ⌈100/30⌉ = 4 at depth 5), and the depth-1 scalar-list count in the sixth
    // slot.
    assert_eq!(
        launches_recalled(&list),
        [Some(1), Some(2), Some(3), Some(3), Some(4), Some(2)]
    );
    let fused = Workload {
        optimizer: Opt::AdamwFused,
        ..Workload::default()
    };
    let k = optimizer_of(&fused, &[10; 101]);
    let f = k.iter().find(|k| k.name == "_fused_adamw_").unwrap();
    // ⌈101/36⌉ = 3; 101 · 10 = 1,010 fp32 elements, 4,040 bytes a pass: reads param, grad,
    // exp_avg, exp_avg_sq (4 · 4,040), writes the last three (3 · 4,040).
    assert_eq!(
        (f.launches, f.bytes_read, f.bytes_written),
        (3, 16_160.0, 12_120.0)
    );
    assert_eq!(launches_recalled(&[10; 101])[3], Some(3));
}

/// The launch memo's contract: a count remembered for a list is recalled for that list (and
/// used by the phase instead of walking it again), not for another; a list longer than the
/// memo (2 MiB of u64: 2^18 elements) is not kept; a full memo starts afresh.
#[test]
fn launch_memo_contract() {
    const CAP: usize = 1 << 18; // 2 MiB / 8 bytes
    let a = [1u64, 2, 3];
    let b = [1u64, 2, 4];
    assert_eq!(launches_recalled(&a), [None; 6]);
    launches_remember(&a, [Some(7), Some(8), Some(9), None, None, Some(6)]);
    assert_eq!(
        launches_recalled(&a),
        [Some(7), Some(8), Some(9), None, None, Some(6)]
    );
    assert_eq!(launches_recalled(&b), [None; 6]);
    // The phase trusts the memo: depth-1 ops take 7, depth 2 take 8, depth 3 take 9, the
    // depth-1 scalar-list op 6.
    let ks = optimizer_of(&foreach_adamw(), &a);
    let l = |name| ks.iter().find(|k| k.name == name).unwrap().launches;
    assert_eq!(
        (
            l("_foreach_norm"),
            l("_foreach_lerp_"),
            l("_foreach_addcdiv_"),
            l("_foreach_div_")
        ),
        (7, 8, 9, 6)
    );
    // Remembering again replaces.
    launches_remember(&a, [Some(1); 6]);
    assert_eq!(launches_recalled(&a), [Some(1); 6]);

    // A list of exactly CAP elements is kept; one of CAP + 1 is not.
    let exact = vec![5u64; CAP];
    launches_remember(&exact, [Some(4); 6]);
    assert_eq!(launches_recalled(&exact), [Some(4); 6]);
    let over = vec![6u64; CAP + 1];
    launches_remember(&over, [Some(4); 6]);
    assert_eq!(launches_recalled(&over), [None; 6]);
    // `exact` filled the memo: the next list clears it first.
    launches_remember(&b, [Some(2); 6]);
    assert_eq!(launches_recalled(&b), [Some(2); 6]);
    assert_eq!(launches_recalled(&exact), [None; 6]);

    // Two halves fill the memo exactly (b's 3 elements counted too: 3 + (CAP/2 − 3) + CAP/2 =
    // CAP, not over): all three kept; one more list clears them all.
    let h1 = vec![7u64; CAP / 2 - 3];
    let h2 = vec![8u64; CAP / 2];
    launches_remember(&h1, [Some(3); 6]);
    launches_remember(&h2, [Some(3); 6]);
    for l in [&h1[..], &h2[..], &b[..]] {
        assert_ne!(launches_recalled(l), [None; 6], "{}", l.len());
    }
    launches_remember(&[9], [Some(5); 6]);
    assert_eq!(launches_recalled(&[9]), [Some(5); 6]);
    for l in [&h1[..], &h2[..], &b[..]] {
        assert_eq!(launches_recalled(l), [None; 6], "{}", l.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

/// (name, bytes read, bytes written, FLOPs) of each kernel.
type Io = (&'static str, f64, f64, f64);

fn io<'a>(ks: impl IntoIterator<Item = &'a Kernel>) -> Vec<Io> {
    ks.into_iter()
        .map(|k| (k.name, k.bytes_read, k.bytes_written, k.flops))
        .collect()
}

/// TinyLlama-1.1B (22 layers; 32 heads and 4 kv heads of 64; hidden 2048, MLP 5632) with
/// `method`/`opts` (ranks as given, not the paper's matching) on batch 1 × seq 4.
fn tiny_llama(method: MethodName, opts: &MethodOptions, precision: Precision) -> StepGraph {
    let m = preset("tinyllama-1.1b").unwrap();
    assert_eq!(
        (m.layers, m.heads, m.kv_heads, m.head_dim()),
        (22, 32, 4, 64)
    );
    let s = MethodSpec::resolve(method, opts, &m, false).unwrap();
    let w = Workload {
        batch: 1,
        seq: 4,
        precision,
        ..Workload::default()
    };
    build(&m, &s, &w)
}

/// SDPA's math path (fp32 with grouped-query attention) forward, worked by hand on TinyLlama
/// fp32, batch 1 × seq 4: q is 4 · 32 · 64 = 8,192 fp32 (32,768 B), k and v 4 · 4 · 64 = 1,024
/// (4,096 B), expanded 8× to q's size; the scores are B·h = 32 matrices of 4 × 4 (512 fp32,
/// 2,048 B); the causal mask 4 × 4 (16 bool bytes, 64 fp32 bytes).
/// `_scaled_dot_product_attention_math` (aten/src/ATen/native/transformers/attention.cpp):
/// q and k scaled by √scale (one mul each), the mask built (ones, tril, two 0-dim
/// scalar_tensor, where), k and v expanded and copied, q copied to (B·h, S, hd), bmm, mask add,
/// `_safe_softmax`, bmm, the output copied back.
#[test]
fn sdpa_math_path_forward_by_hand() {
    let g = tiny_llama(MethodName::Full, &MethodOptions::default(), Precision::Fp32);
    let ks: Vec<&Kernel> = g
        .layer(1)
        .forward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn")
        .collect();
    let (q, kv, sc) = (32_768.0, 4_096.0, 2_048.0);
    // The fills, (read, written), as the CPU trace records them
    // (docs/results/traces/cpu/llama-full-fp32.json, S = 32 there: ones 0 / 1,024, tril
    // 1,024 / 1,024, scalar_tensor 0 / 4 each, where 1,024 + 8 / 4,096): ones writes the
    // 16-byte bool S×S and reads nothing, tril reads it and writes another, the two 0-dim
    // scalars are written only, where reads the bool mask and both scalars (16 + 2·4) and
    // writes the fp32 S×S additive mask (64 B).
    let fills: Vec<(&str, f64, f64)> = ks[2..7]
        .iter()
        .map(|k| (k.name, k.bytes_read, k.bytes_written))
        .collect();
    assert_eq!(
        fills,
        [
            ("ones", 0.0, 16.0),
            ("tril", 16.0, 16.0),
            ("scalar_tensor", 0.0, 4.0),
            ("scalar_tensor", 0.0, 4.0),
            ("where", 24.0, 64.0)
        ]
    );
    assert_eq!(ks[3].dtype, DType::Bool); // tril of the bool ones
    let mut rest = io(ks[..2].iter().copied());
    rest.extend(io(ks[7..].iter().copied()));
    assert_eq!(
        rest,
        [
            // q·√scale, k·√scale: one FLOP an element
            ("mul", q, q, 8_192.0),
            ("mul", kv, kv, 1_024.0),
            // k and v expanded to 32 heads (read once, written 8×), q copied
            ("clone", kv, q, 0.0),
            ("clone", kv, q, 0.0),
            ("clone", q, q, 0.0),
            // q·kᵀ: 2 · 4 · 4 · 64 · 32 FLOPs, reading both 32-head operands
            ("bmm", 2.0 * q, sc, 65_536.0),
            // + mask (S×S fp32, 64 B): one FLOP per score
            ("add", sc + 64.0, sc, 512.0),
            // safe softmax, 5 FLOPs a score
            ("_safe_softmax", sc, sc, 2_560.0),
            // probs · v: 2 · 4 · 64 · 4 · 32 FLOPs
            ("bmm", sc + q, q, 65_536.0),
            // back to (B, S, h·hd)
            ("clone", q, q, 0.0),
        ]
    );
    // It keeps the S×S probabilities in fp32 (and q, k, v at all heads).
    assert_eq!(ks[12].dtype, DType::F32);
}

/// The math path's backward on the same shapes: the output copy's gradient, the two bmm
/// gradients of probs·v (d(v) = probsᵀ·dO reads dO and probs; d(probs) = dO·vᵀ reads dO and
/// v), `_softmax_backward_data` (reads the gradient and the kept probabilities, 2 FLOPs per
/// forward FLOP), the two bmm gradients of q·kᵀ (each reads dS and the other operand), q's copy
/// gradient, per expanded tensor (v, then k) one sum over the 8 heads of each group and one
/// kv-sized copy of the summed gradient (the CPU trace: `sum` and `clone`, one call each per
/// tensor, docs/results/traces/cpu/llama-full-fp32.json), and the scales' gradients
/// (grad · √scale).
#[test]
fn sdpa_math_path_backward_by_hand() {
    let g = tiny_llama(MethodName::Full, &MethodOptions::default(), Precision::Fp32);
    let got = io(g
        .layer(1)
        .backward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn"));
    let (q, kv, sc) = (32_768.0, 4_096.0, 2_048.0);
    assert_eq!(
        got,
        [
            ("backward", q, q, 0.0),
            ("mm_dW", q + sc, q, 65_536.0),
            ("mm_dX", 2.0 * q, sc, 65_536.0),
            ("softmax_backward_data", 2.0 * sc, sc, 5_120.0),
            ("mm_dW", sc + q, q, 65_536.0),
            ("mm_dX", sc + q, q, 65_536.0),
            ("backward", q, q, 0.0),
            // per expanded tensor, v's then k's: the kv-sized copy (reads and writes 4,096 B)
            // and the sum over each group of 8 heads (reads the 32-head gradient, 32,768 B,
            // writes 4,096 B; one FLOP per summed element: 8,192)
            ("clone", kv, kv, 0.0),
            ("sum", q, kv, 8_192.0),
            ("clone", kv, kv, 0.0),
            ("sum", q, kv, 8_192.0),
            ("mul_backward", kv, kv, 1_024.0),
            ("mul_backward", q, q, 8_192.0),
        ]
    );
}

/// Rotary embedding on q and k, fp32 (so cos, sin and the products share x's dtype: no casts),
/// TinyLlama batch 1 × seq 4: q is 8,192 fp32 (32,768 B; halves 16,384 B), k 1,024 (4,096 B;
/// halves 2,048 B); cos and sin are S × hd = 256 fp32 (1,024 B). Forward (transformers'
/// `apply_rotary_pos_emb`): x·cos, −x2, cat(−x2, x1), rotate_half(x)·sin, the sum. Backward, as
/// autograd runs it: grad·sin, neg of the x2 half, a `slice_backward` per half into x's shape,
/// grad·cos, two adds gathering x's three gradients.
#[test]
fn rope_forward_and_backward_by_hand() {
    let g = tiny_llama(MethodName::Full, &MethodOptions::default(), Precision::Fp32);
    let l = g.layer(1);
    let rope = |x: f64| -> (Vec<Io>, Vec<Io>) {
        let (h, c, e) = (x / 2.0, 1_024.0, x / 4.0); // half, cos, elements
        (
            vec![
                ("mul", x + c, x, e),
                ("neg", h, h, e / 2.0),
                ("cat", x, x, e),
                ("mul", x + c, x, e),
                ("add", 2.0 * x, x, e),
            ],
            vec![
                ("mul", x + c, x, e),
                ("neg", h, h, e / 2.0),
                ("slice_backward", h, x, 0.0),
                ("slice_backward", h, x, 0.0),
                ("mul", x + c, x, e),
                ("add", 2.0 * x, x, e),
                ("add", 2.0 * x, x, e),
            ],
        )
    };
    let ((qf, qb), (kf, kb)) = (rope(32_768.0), rope(4_096.0));
    let fwd = io(l
        .forward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn.rotary"));
    assert_eq!(fwd, [qf, kf].concat());
    // Backward replays the tape from the end: k's rope first.
    let bwd = io(l
        .backward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn.rotary"));
    assert_eq!(bwd, [kb, qb].concat());
    // Layer 0's q and k still need gradients (full fine-tuning trains q_proj/k_proj).
    assert_eq!(
        g.layer(0)
            .backward
            .kernels
            .iter()
            .filter(|k| k.name == "slice_backward")
            .count(),
        4
    );
}

// ---------------------------------------------------------------------------------------------
// LoRA and PaCA
// ---------------------------------------------------------------------------------------------

fn opts(rank: u64, targets: &str) -> MethodOptions {
    MethodOptions {
        rank: Some(rank),
        targets: Some(Targets::parse(targets).unwrap()),
        ..MethodOptions::default()
    }
}

/// peft LoRA (rank 2, dropout 0.1, fp32 adapters) on TinyLlama's q_proj only, fp32, batch 1 ×
/// seq 4 (M = 4): x and y are 4 × 2048 fp32 (32,768 B); A is 2 × 2048 and B 2048 × 2
/// (16,384 B each); h = x·Aᵀ is 4 × 2 (32 B). Forward after the base mm (peft's
/// `Linear.forward`): dropout (writes the output and a 4 × 2048 bool mask, 8,192 B; 2 FLOPs an
/// element), x·Aᵀ (2 · 4 · 2 · 2048 FLOPs), h·Bᵀ (2 · 4 · 2048 · 2), ·scale, + base.
#[test]
fn lora_small_tensors_by_hand() {
    let g = tiny_llama(MethodName::Lora, &opts(2, "q"), Precision::Fp32);
    let l = g.layer(1);
    let (x, ab, h, mask) = (32_768.0, 16_384.0, 32.0, 8_192.0);
    let fwd = io(l
        .forward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn.q_proj" && k.piece != "base_layer"));
    assert_eq!(
        fwd,
        [
            ("native_dropout", x, x + mask, 16_384.0),
            ("mm", x + ab, h, 32_768.0),
            ("mm", h + ab, x, 32_768.0),
            ("mul", x, x, 8_192.0),
            ("add", 2.0 * x, x, 8_192.0),
        ]
    );
    // Backward: the scale's gradient; dB = dYᵀ·h and dh = dY·B; dA = dhᵀ·x and dx = dh·A;
    // the dropout's gradient (reads the gradient and the mask); the add of x's two gradients
    // (base and adapter path); the base dX (no dW: the base weight is frozen).
    let bwd: Vec<(&str, &str, f64, f64, f64)> = l
        .backward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn.q_proj" && k.piece != "base_layer")
        .map(|k| (k.name, k.piece, k.bytes_read, k.bytes_written, k.flops))
        .collect();
    assert_eq!(
        bwd,
        [
            ("mul_backward", "", x, x, 8_192.0),
            ("mm_dW", "lora_B", x + h, ab, 32_768.0),
            ("mm_dX", "lora_B", x + ab, h, 32_768.0),
            ("mm_dW", "lora_A", h + x, ab, 32_768.0),
            ("mm_dX", "lora_A", h + ab, x, 32_768.0),
            ("dropout_backward", "", x + mask, x, 8_192.0),
            ("add", "", 2.0 * x, x, 8_192.0),
        ]
    );
    // The optimizer's tensors: A (2 · 2048) and B (2048 · 2) of each of the 22 q_projs.
    assert_eq!(g.trainable_tensors, [4_096; 44]);
    // lora_dropout = 0 is peft's nn.Identity: no dropout kernel, nothing saved for it.
    let o = MethodOptions {
        dropout: Some(0.0),
        ..opts(2, "q")
    };
    let g = tiny_llama(MethodName::Lora, &o, Precision::Fp32);
    let names: Vec<&str> = g
        .layer(1)
        .forward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn.q_proj")
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["mm", "mm", "mm", "mul", "add"]);
}

/// Under bf16-mixed the fp32 adapters are cast to bf16 on every forward (autocast: lora_A and
/// lora_B are nn.Linear): A and B, 4,096 fp32 each, read 16,384 B and write 8,192 B; the
/// dropped input is cast too (4 × 2048: 32,768 B → 16,384 B).
#[test]
fn lora_adapter_casts_under_autocast_by_hand() {
    let g = tiny_llama(MethodName::Lora, &opts(2, "q"), Precision::Bf16Mixed);
    let casts: Vec<(f64, f64)> = g
        .layer(1)
        .forward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn.q_proj" && k.kind == KernelKind::Cast)
        .map(|k| (k.bytes_read, k.bytes_written))
        .collect();
    // W → bf16 (2048 · 2048 · 4 B → · 2 B); x (fp32 residual stream) → bf16 for the base
    // GEMM; x_d → bf16; A → bf16; B → bf16. No cast back at the end: lora_B's output is bf16
    // under autocast, so the scale and the add into the (bf16) base result stay bf16 and
    // peft's `result.to(torch_result_dtype)` is a no-op.
    let w = 2048.0 * 2048.0;
    assert_eq!(
        casts,
        [
            (4.0 * w, 2.0 * w),
            (32_768.0, 16_384.0),
            (32_768.0, 16_384.0),
            (16_384.0, 8_192.0),
            (16_384.0, 8_192.0),
        ]
    );
}

/// PaCA (rank 4, fp32 P) on q_proj and v_proj only, fp32, batch 1 × seq 4: P is n × 4
/// (q: 2048 · 4 = 8,192 fp32, 32,768 B; v: 256 · 4 = 1,024, 4,096 B). Forward (the reference
/// layer): s·P under no_grad, index_put_ of it into W's columns, the tracked s·P, the base mm,
/// then x[..., idx]: 4 × 4 fp32 written (64 B); a strided gather touches a 32-byte sector (8
/// fp32) per selected element: 4 · 4 · 8 · 4 = 512 B read. The index_put_ reads s·P and writes
/// a sector per written element the same way: q 2048 rows · 4 · 8 · 4 = 262,144 B, v 256 rows ·
/// 4 · 8 · 4 = 32,768 B. Backward: dP = dYᵀ·x_idx (reads dY,
/// 32,768 B, and x_idx, 64 B; 2 · n · 4 · 4 FLOPs), its scale, dX. Other linears are frozen.
#[test]
fn paca_on_a_subset_of_targets_by_hand() {
    let g = tiny_llama(MethodName::Paca, &opts(4, "q,v"), Precision::Fp32);
    let l = g.layer(1);
    let paca = |module: &str, ks: &[Kernel]| -> Vec<Io> {
        io(ks
            .iter()
            .filter(|k| k.module == module && k.kind != KernelKind::Gemm || k.name == "mm_dP")
            .filter(|k| k.module == module))
    };
    let x = 32_768.0; // the block's normed input, 4 × 2048 fp32
                      // The shared formula (calibration prices its samples with it) gives the same hand values.
    assert_eq!(
        super::strided_columns_bytes(2048.0, 2048.0, 4.0, 4.0),
        262_144.0
    );
    assert_eq!(super::strided_columns_bytes(4.0, 2048.0, 4.0, 4.0), 512.0);
    for (module, p, y, sectors, extra) in [
        ("self_attn.q_proj", 32_768.0, 32_768.0, 262_144.0, vec![]),
        // v is the third consumer of the normed input: its dX adds into the other two (k's
        // dX group holds the second add).
        (
            "self_attn.v_proj",
            4_096.0,
            4_096.0,
            32_768.0,
            vec![("add", 2.0 * x, x, 8_192.0)],
        ),
    ] {
        let e = p / 4.0; // elements of P
        assert_eq!(
            paca(module, &l.forward.kernels),
            [
                ("mul", p, p, e),
                ("index_put_", p, sectors, 0.0),
                ("mul", p, p, e),
                ("index_select", 512.0, 64.0, 0.0),
            ],
            "{module}"
        );
        // Everything of the module's backward but the dX GEMM: dP, its scale, and (v) the add;
        // no cast in fp32, no gradient of W or of the no-grad s·P.
        let mut want = vec![("mm_dP", y + 64.0, p, 2.0 * e * 4.0), ("mul", p, p, e)];
        want.extend(extra);
        assert_eq!(paca(module, &l.backward.kernels), want, "{module}");
    }
    // k, o and the MLP are frozen: no P, no gather, no dP.
    for module in ["self_attn.k_proj", "self_attn.o_proj", "mlp.down_proj"] {
        assert!(
            !l.forward
                .kernels
                .iter()
                .chain(&l.backward.kernels)
                .any(|k| k.module == module && !k.piece.is_empty()),
            "{module}"
        );
    }
    assert_eq!(
        l.backward
            .kernels
            .iter()
            .filter(|k| k.name == "mm_dP")
            .count(),
        2
    );
    // Trainable: q's P (2048 · 4) and v's (256 · 4) per layer.
    assert_eq!(g.trainable_tensors, [8_192, 1_024].repeat(22));
    assert_eq!(l.trainable, 9_216);
}

/// PaCA under bf16-mixed: W (fp32) is cast to bf16 for the GEMM and again in backward (the
/// reference saves W, not autocast's copy: 2048 · 2048 · 4 B read, · 2 B written); the gathered
/// fp32 x_idx (4 × 4, 64 B) is cast to bf16 (32 B) for dYᵀ·x_idx; dP and its scale are bf16
/// (2048 · 4 · 2 = 16,384 B) and dP is cast back to fp32 P (16,384 B → 32,768 B); the fp32
/// input's dX is cast back too (4 × 2048: 16,384 B → 32,768 B).
#[test]
fn paca_casts_under_autocast_by_hand() {
    let g = tiny_llama(MethodName::Paca, &opts(4, "q"), Precision::Bf16Mixed);
    let bwd: Vec<(&str, KernelKind, f64, f64)> = g
        .layer(1)
        .backward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn.q_proj" && k.kind != KernelKind::Gemm)
        .map(|k| (k.name, k.kind, k.bytes_read, k.bytes_written))
        .collect();
    let w = 2048.0 * 2048.0;
    assert_eq!(
        bwd,
        [
            ("to_copy", KernelKind::Cast, 64.0, 32.0),
            ("mul", KernelKind::Elementwise, 16_384.0, 16_384.0),
            // W cast again for dX = dY·W
            ("to_copy", KernelKind::Cast, 4.0 * w, 2.0 * w),
            // dX (4 × 2048 bf16, 16,384 B) back to the fp32 input's dtype (32,768 B)
            ("to_copy_backward", KernelKind::Cast, 16_384.0, 32_768.0),
            // dP (bf16) back to fp32 P
            ("to_copy_backward", KernelKind::Cast, 16_384.0, 32_768.0),
        ]
    );
}

/// Flash / memory-efficient SDPA on grouped-query attention (TinyLlama bf16-mixed, batch 1 ×
/// seq 4): q is 8,192 bf16 (16,384 B), k and v 1,024 (2,048 B each), read unexpanded; the
/// log-sum-exp is B·h·S = 128 fp32 (512 B). FLOPs 2 · B·h·S²·hd = 2 · 32 · 16 · 64 = 65,536
/// (causal half of 4·B·h·S²·hd), backward 2.5× that. Llama's q and k are rope's fresh
/// (B, h, S, hd) outputs: their gradients are copied (reshape of a transposed tensor) on the
/// way back, one clone each; v's views back for free.
#[test]
fn sdpa_grouped_query_by_hand() {
    let g = tiny_llama(
        MethodName::Full,
        &MethodOptions::default(),
        Precision::Bf16Mixed,
    );
    let (q, kv, lse) = (16_384.0, 2_048.0, 512.0);
    let l = g.layer(1);
    let fwd = io(l.forward.kernels.iter().filter(|k| k.module == "self_attn"));
    assert_eq!(
        fwd,
        [(
            "scaled_dot_product_attention",
            q + 2.0 * kv,
            q + lse,
            65_536.0
        )]
    );
    let bwd = io(l
        .backward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn"));
    assert_eq!(
        bwd,
        [
            // reads dO, q, O (q-sized), k, v and the log-sum-exp twice; writes dq, dk, dv
            (
                "scaled_dot_product_attention_backward",
                3.0 * q + 2.0 * kv + 2.0 * lse,
                q + 2.0 * kv,
                163_840.0
            ),
            ("clone", q, q, 0.0),
            ("clone", kv, kv, 0.0),
        ]
    );
}

/// Eager attention (`--attention eager`) on grouped-query Llama, fp32, TinyLlama batch 1 ×
/// seq 4 (transformers' `eager_attention_forward`, as the CPU traces run it): repeat_kv copies k
/// and v to all 32 heads (reads 4,096 B, writes 32,768 B), q is copied for the batched matmul,
/// q·kᵀ, `* scaling`, `+ causal_mask` (the model's (B, 1, S, S) fp32 mask, 64 B), softmax in
/// fp32 (the casts are no-ops in fp32; the attention dropout is 0: no kernel), ·v, the transpose
/// copy. Backward: the copy's gradient, the bmm gradients, softmax's, the scale's, q's copy back,
/// and per repeated tensor the kv-sized copy and the sum over its group (as the math path's
/// expand: one of each per tensor).
#[test]
fn eager_grouped_query_attention_by_hand() {
    let w = Workload {
        batch: 1,
        seq: 4,
        precision: Precision::Fp32,
        attention: crate::workload::AttentionImpl::Eager,
        ..Workload::default()
    };
    let m = preset("tinyllama-1.1b").unwrap();
    let s = spec(&m, MethodName::Full, &MethodOptions::default());
    let g = build(&m, &s, &w);
    let l = g.layer(1);
    let (q, kv, sc) = (32_768.0, 4_096.0, 2_048.0);
    let fwd = io(l.forward.kernels.iter().filter(|k| k.module == "self_attn"));
    assert_eq!(
        fwd,
        [
            ("clone", kv, q, 0.0),
            ("clone", kv, q, 0.0),
            ("clone", q, q, 0.0),
            ("bmm", 2.0 * q, sc, 65_536.0),
            ("mul", sc, sc, 512.0),
            ("add", sc + 64.0, sc, 512.0),
            ("softmax", sc, sc, 2_560.0),
            ("bmm", sc + q, q, 65_536.0),
            ("clone", q, q, 0.0),
        ]
    );
    let bwd = io(l
        .backward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn"));
    assert_eq!(
        bwd,
        [
            ("backward", q, q, 0.0),
            ("mm_dW", q + sc, q, 65_536.0),
            ("mm_dX", 2.0 * q, sc, 65_536.0),
            ("softmax_backward_data", 2.0 * sc, sc, 5_120.0),
            ("mul_backward", sc, sc, 512.0),
            ("mm_dW", sc + q, q, 65_536.0),
            ("mm_dX", sc + q, q, 65_536.0),
            ("backward", q, q, 0.0),
            // repeat_kv's backward, v's then k's: the kv-sized copy (4,096 B each way) and the
            // sum over each group of 8 heads (32,768 B read, 4,096 B written, 8,192 FLOPs)
            ("clone", kv, kv, 0.0),
            ("sum", q, kv, 8_192.0),
            ("clone", kv, kv, 0.0),
            ("sum", q, kv, 8_192.0),
        ]
    );
}

/// PaCA on GPT-2's c_attn (768 → 2304, with bias) in pure bf16 with P in the base dtype
/// (`--adapter-dtype base`), rank 4, batch 1 × seq 4: P is 2304 · 4 = 9,216 bf16 (18,432 B);
/// y is 4 × 2304 bf16 (18,432 B) and the bias 2304 bf16 (4,608 B). The reference Function
/// adds the bias in place after its matmul (`output += bias`: reads y and the bias, writes y,
/// one FLOP an element) instead of an addmm. The gather reads a 32-byte sector (16 bf16) per
/// selected element: 4 · 4 · 16 · 2 = 512 B (under 768 columns), and writes 4 · 4 · 2 = 32 B.
/// The write of s·P into W's columns reads s·P (18,432 B) and writes a sector per written
/// element, the same way: 2304 rows · 4 · 16 · 2 = 294,912 B (64 of 768 columns' bytes per row).
#[test]
fn paca_bias_and_base_dtype_on_gpt2_by_hand() {
    let m = preset("gpt2").unwrap();
    let o = MethodOptions {
        rank: Some(4),
        targets: Some(Targets::parse("c_attn").unwrap()),
        adapter_dtype: Some(crate::method::AdapterDtype::Base),
        ..MethodOptions::default()
    };
    let s = MethodSpec::resolve(MethodName::Paca, &o, &m, false).unwrap();
    let w = Workload {
        batch: 1,
        seq: 4,
        precision: Precision::Bf16,
        ..Workload::default()
    };
    let g = build(&m, &s, &w);
    let fwd: Vec<(&str, KernelKind, DType, f64, f64, f64)> = g
        .layer(1)
        .forward
        .kernels
        .iter()
        .filter(|k| k.module == "attn.c_attn")
        .map(|k| {
            (
                k.name,
                k.kind,
                k.dtype,
                k.bytes_read,
                k.bytes_written,
                k.flops,
            )
        })
        .collect();
    let (p, y, b) = (18_432.0, 18_432.0, 4_608.0);
    use KernelKind::*;
    assert_eq!(
        fwd,
        [
            ("mul", Elementwise, DType::Bf16, p, p, 9_216.0),
            ("index_put_", Scatter, DType::Bf16, p, 294_912.0, 0.0),
            ("mul", Elementwise, DType::Bf16, p, p, 9_216.0),
            // x·W: 2 · 4 · 2304 · 768 FLOPs; reads x (4 · 768 · 2) and W (768 · 2304 · 2)
            (
                "mm",
                Gemm,
                DType::Bf16,
                6_144.0 + 3_538_944.0,
                y,
                14_155_776.0
            ),
            ("add_", Elementwise, DType::Bf16, y + b, y, 9_216.0),
            ("index_select", Gather, DType::Bf16, 512.0, 32.0, 0.0),
        ]
    );
    // dP = dYᵀ·x_idx (bf16: reads dY 18,432 B and x_idx 32 B; 2 · 2304 · 4 · 4 FLOPs), its
    // scale; P is bf16 already: no cast of dP. The bias (frozen) gets no gradient.
    let bwd: Vec<Io> = io(g
        .layer(1)
        .backward
        .kernels
        .iter()
        .filter(|k| k.module == "attn.c_attn" && k.piece == "paca_P"));
    assert_eq!(
        bwd,
        [("mm_dP", y + 32.0, p, 73_728.0), ("mul", p, p, 9_216.0)]
    );
    assert_eq!(g.trainable_tensors, [9_216; 12]);
}

/// What SDPA keeps for backward (`_scaled_dot_product_flash_attention`'s saved tensors: q, k,
/// v, the output and the log-sum-exp). TinyLlama bf16-mixed, batch 1 × seq 4: q and the output
/// 16,384 B each, k and v 2,048 B each, the log-sum-exp 512 B: 37,376 B. GPT-2 bf16-mixed,
/// batch 2 × seq 8: q, k, v are views of c_attn's one B·S·3d output (3 · 12,288 bf16 =
/// 73,728 B, kept whole), the output 24,576 B, the log-sum-exp 2 · 12 · 8 · 4 = 768 B:
/// 99,072 B.
#[test]
fn sdpa_saved_bytes_by_hand() {
    let saved = |g: &StepGraph, module: &str| -> f64 {
        g.layer(1)
            .saved_by_module
            .iter()
            .filter(|(m, _)| *m == module)
            .map(|(_, b)| b)
            .sum()
    };
    let g = tiny_llama(
        MethodName::Full,
        &MethodOptions::default(),
        Precision::Bf16Mixed,
    );
    assert_eq!(saved(&g, "self_attn"), 37_376.0);
    // Both SDPA kernels carry one slice's score GEMM shape, S × S × hd, over B · h = 32 slices.
    let l = g.layer(1);
    for k in l.forward.kernels.iter().chain(&l.backward.kernels) {
        if k.kind == KernelKind::Attention {
            assert_eq!(
                k.gemm,
                Some(super::Gemm {
                    m: 4,
                    n: 4,
                    k: 64,
                    batch: 32
                }),
                "{}",
                k.name
            );
        }
    }
    let w = Workload {
        batch: 2,
        seq: 8,
        ..Workload::default()
    };
    let m = preset("gpt2").unwrap();
    let s = spec(&m, MethodName::Full, &MethodOptions::default());
    assert_eq!(saved(&build(&m, &s, &w), "attn"), 99_072.0);
}

/// Rope's backward under bf16-mixed (TinyLlama batch 1 × seq 4): cos and sin are fp32, so
/// x·cos and rotate_half(x)·sin are fp32 products of bf16 inputs. grad·sin and grad·cos read the
/// fp32 gradient (q: 8,192 · 4 = 32,768 B; k: 4,096 B) and sin/cos (1,024 B) and write fp32;
/// each product's gradient is cast back to bf16 (reads 32,768 B, writes 16,384 B for q) before
/// the rest runs, so neg, the two slice_backward and the two adds run in bf16, as in the CPU
/// trace (docs/results/traces/cpu/llama-full-bf16mixed.json: neg 6,144 B each way for q and k
/// at 2 × 32 tokens, slice_backward 12,288 read / 24,576 written, the adds 49,152 / 24,576).
/// Here, bf16: q's half 8,192 B, q 16,384 B; k's half 1,024 B, k 2,048 B.
#[test]
fn rope_backward_products_and_cast_under_autocast_by_hand() {
    let g = tiny_llama(
        MethodName::Full,
        &MethodOptions::default(),
        Precision::Bf16Mixed,
    );
    let got: Vec<(&str, DType, f64, f64)> = g
        .layer(1)
        .backward
        .kernels
        .iter()
        .filter(|k| k.module == "self_attn.rotary")
        .map(|k| (k.name, k.dtype, k.bytes_read, k.bytes_written))
        .collect();
    let (f, h) = (DType::F32, DType::Bf16);
    // One tensor's backward: x's fp32 gradient g (gb B), x in bf16 (xs B, halves xs/2).
    let one = |gb: f64, xs: f64| {
        [
            ("mul", f, gb + 1_024.0, gb),        // grad·sin
            ("to_copy", h, gb, xs),              // cast back to bf16
            ("neg", h, xs / 2.0, xs / 2.0),      // −x2's half
            ("slice_backward", h, xs / 2.0, xs), // each half into x's shape
            ("slice_backward", h, xs / 2.0, xs),
            ("mul", f, gb + 1_024.0, gb), // grad·cos
            ("to_copy", h, gb, xs),       // cast back to bf16
            ("add", h, 2.0 * xs, xs),     // x's three gradients gathered
            ("add", h, 2.0 * xs, xs),
        ]
    };
    // First the backward of autocast's casts of rope's fp32 outputs to bf16 for SDPA (k's,
    // then q's): bf16 gradient to fp32. Then the tape runs backward: k's rope (4,096 B fp32
    // gradient, 2,048 B bf16) before q's. Six casts in all, as the trace's six `_to_copy`.
    let want: Vec<_> = [
        ("to_copy_backward", f, 2_048.0, 4_096.0),
        ("to_copy_backward", f, 16_384.0, 32_768.0),
    ]
    .into_iter()
    .chain(one(4_096.0, 2_048.0))
    .chain(one(32_768.0, 16_384.0))
    .collect();
    assert_eq!(got, want);
}

/// In layer 0 under LoRA (the embedding frozen) only the adapted projection's output requires
/// grad: with LoRA on v alone SDPA still runs its backward (v needs dv) but neither q nor k
/// needs its gradient copied back; with LoRA on q alone q's gradient is copied (rope's fresh
/// output, 8,192 bf16 = 16,384 B) and k's is not. TinyLlama bf16-mixed, batch 1 × seq 4.
#[test]
fn sdpa_backward_when_one_input_requires_grad() {
    for (targets, want) in [
        ("v", vec!["scaled_dot_product_attention_backward"]),
        ("q", vec!["scaled_dot_product_attention_backward", "clone"]),
    ] {
        let g = tiny_llama(MethodName::Lora, &opts(2, targets), Precision::Bf16Mixed);
        let got: Vec<(&str, f64)> = g
            .layer(0)
            .backward
            .kernels
            .iter()
            .filter(|k| k.module == "self_attn")
            .map(|k| (k.name, k.bytes_written))
            .collect();
        let names: Vec<&str> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, want, "{targets}");
        if targets == "q" {
            assert_eq!(got[1].1, 16_384.0);
        }
    }
}

/// Host work per module call, as the real stack's forward pre-hooks count them (the traces'
/// `module_calls`): with LoRA on q_proj alone, a Llama block calls 13 modules (the layer,
/// input_layernorm, self_attn, q, k, v, o, post_attention_layernorm, mlp, gate, up, down,
/// act_fn) and peft's q_proj four more (base_layer, lora_dropout, lora_A, lora_B): 17, one of
/// them an adapter layer. Each call is charged on its module's first op: self_attn's with
/// q_proj's on q_proj's first op (1 + 5 = 6), mlp's with gate_proj's (2).
#[test]
fn lora_module_and_peft_calls_by_hand() {
    let g = tiny_llama(MethodName::Lora, &opts(2, "q"), Precision::Fp32);
    let kernels = &g.layer(1).forward.kernels;
    let calls = |f: &dyn Fn(&Kernel) -> u8, proj: bool| -> u32 {
        kernels
            .iter()
            .filter(|k| !proj || k.module.ends_with("_proj"))
            .map(|k| u32::from(f(k)))
            .sum()
    };
    assert_eq!(calls(&|k| k.module_calls, false), 17);
    // The 7 linears, q_proj's four peft modules, self_attn and mlp.
    assert_eq!(calls(&|k| k.module_calls, true), 13);
    assert_eq!(calls(&|k| k.peft_calls, false), 1);
    let first = |module: &str| {
        kernels
            .iter()
            .find(|k| k.module == module)
            .map(|k| (k.module_calls, k.peft_calls))
    };
    assert_eq!(first("self_attn.q_proj"), Some((6, 1)));
    assert_eq!(first("mlp.gate_proj"), Some((2, 0)));
    assert_eq!(first("self_attn.k_proj"), Some((1, 0)));
    // A step's forward: the model and base model, peft's PeftModel and LoraModel,
    // embed_tokens, rotary_emb, 17 per block of 22, the final norm and lm_head.
    assert_eq!(g.forward_module_calls(), (4 + 2 + 17 * 22 + 2, 22));
}
// ---------------------------------------------------------------------------------------------
// Embedding scope
// ---------------------------------------------------------------------------------------------

/// GPT-2's embedding backward, fp32, batch 1 × seq 4 (d = 768, V = 50,257, 1,024 positions),
/// full fine-tuning, two micro-batches. `embedding_dense_backward` (three kernels: zero the
/// table's gradient, sort the ids, scatter-add the rows) reads the 4 gradient rows (4 · 768 ·
/// 4 = 12,288 B) and 24 B of ids per row (the ids, the sorted ids and their positions:
/// 4 · 24 = 96 B), writes the whole table's gradient and the two sorted int64 arrays (4 · 16 =
/// 64 B): wte 50,257 · 768 · 4 = 154,389,504 B, wpe 1,024 · 768 · 4 = 3,145,728 B. The tied LM
/// head's gradient is added into wte's (reads two V×d gradients, writes one, one FLOP an
/// element). With accumulation each table's gradient is also added into `.grad`.
#[test]
fn gpt2_embedding_backward_by_hand() {
    let m = preset("gpt2").unwrap();
    let w = Workload {
        batch: 1,
        seq: 4,
        precision: Precision::Fp32,
        grad_accum: 2,
        ..Workload::default()
    };
    let (wte, wpe) = (154_389_504.0, 3_145_728.0);
    let (rows, x) = (12_288.0, 12_288.0);
    let s = spec(&m, MethodName::Full, &MethodOptions::default());
    let g = build(&m, &s, &w);
    let eb = |table: f64| {
        (
            "embedding_dense_backward",
            rows + 96.0,
            table + 64.0,
            3_072.0,
        )
    };
    let add = |table: f64| ("accumulate_grad", 2.0 * table, table, table / 4.0);
    // dropout's gradient reads the gradient and the bool mask (3,072 B).
    let drop = ("dropout_backward", x + 3_072.0, x, 3_072.0);
    assert_eq!(
        io(&g.embedding.backward.kernels),
        [drop, eb(wpe), eb(wte), add(wte)]
    );
    // The tied head's gradient add belongs to wte (it was once filed under wpe).
    let modules: Vec<&str> = g
        .embedding
        .backward
        .kernels
        .iter()
        .map(|k| k.module)
        .collect();
    assert_eq!(modules[1..], ["wpe", "wte", "wte"]);
    assert_eq!(
        io(&g.embedding.backward_accum.kernels),
        [drop, eb(wpe), add(wpe), eb(wte), add(wte), add(wte)]
    );
    assert!(g
        .embedding
        .backward
        .kernels
        .iter()
        .filter(|k| k.name == "embedding_dense_backward")
        .all(|k| k.launches == 3));
    // Under LoRA the tables are frozen: no embedding backward, even when accumulating.
    let s = spec(&m, MethodName::Lora, &MethodOptions::default());
    let g = build(&m, &s, &w);
    assert!(g.embedding.backward.kernels.is_empty());
    assert!(g.embedding.backward_accum.kernels.is_empty());
}

/// A Llama-family model with a tied head (Llama 3.2's and small Qwen2 configs'
/// `tie_word_embeddings`): as GPT-2's wte, the head's gradient is added into the table's after
/// the embedding's backward (two V×d fp32 gradients read, one written); untied, nothing is
/// added.
#[test]
fn a_tied_llama_head_adds_its_gradient_into_the_table() {
    let w = Workload {
        batch: 1,
        seq: 4,
        precision: Precision::Fp32,
        ..Workload::default()
    };
    let table = 32_000.0 * 2_048.0 * 4.0;
    for tied in [false, true] {
        let mut m = preset("tinyllama-1.1b").unwrap();
        m.tied_embeddings = tied;
        let g = build(
            &m,
            &spec(&m, MethodName::Full, &MethodOptions::default()),
            &w,
        );
        let got: Vec<(&str, f64, f64)> = g
            .embedding
            .backward
            .kernels
            .iter()
            .filter(|k| k.module == "embed_tokens")
            .map(|k| (k.name, k.bytes_read, k.bytes_written))
            .collect();
        let mut want = vec![(
            "embedding_dense_backward",
            4.0 * 2_048.0 * 4.0 + 96.0,
            table + 64.0,
        )];
        if tied {
            want.push(("accumulate_grad", 2.0 * table, table));
        }
        assert_eq!(got, want, "tied {tied}");
    }
}

/// Llama's rotary tables in a pure-bf16 model (transformers' `LlamaRotaryEmbedding.forward`),
/// TinyLlama batch 1 × seq 4 (hd = 64): the positions (4 int64, 32 B) to fp32 (16 B);
/// inv_freq (32 bf16, 64 B) `.float()` (128 B); inv_freq ⊗ positions (reads 128 + 16 B,
/// writes 4 · 32 fp32 = 512 B); cat to 4 · 64 fp32 (1,024 B); cos, ·scaling, sin, ·scaling
/// (1,024 B each way); cos and sin cast to bf16 (1,024 B → 512 B). rope keeps cos and sin for
/// q's and k's gradients, once for all layers: 2 · 4 · 64 · 2 = 1,024 B.
#[test]
fn rotary_tables_in_bf16_by_hand() {
    let g = tiny_llama(MethodName::Full, &MethodOptions::default(), Precision::Bf16);
    let got: Vec<(&str, f64, f64)> = g
        .embedding
        .forward
        .kernels
        .iter()
        .filter(|k| k.module == "rotary_emb")
        .map(|k| (k.name, k.bytes_read, k.bytes_written))
        .collect();
    let t = 1_024.0;
    assert_eq!(
        got,
        [
            ("to_copy", 32.0, 16.0),
            ("bmm", 144.0, 512.0),
            ("cat", 512.0, t),
            ("cos", t, t),
            ("mul", t, t),
            ("sin", t, t),
            ("mul", t, t),
            ("to_copy", 64.0, 128.0),
            ("to_copy", t, 512.0),
            ("to_copy", t, 512.0),
        ]
    );
    // cos, sin and the two scalings: one operation per table element, 4 · 64 = 256 FLOPs.
    let flops: Vec<f64> = g
        .embedding
        .forward
        .kernels
        .iter()
        .filter(|k| k.module == "rotary_emb" && matches!(k.name, "cos" | "sin" | "mul"))
        .map(|k| k.flops)
        .collect();
    assert_eq!(flops, [256.0; 4]);
    assert_eq!(g.embedding.saved_by_module, [("rotary_emb", 1_024.0)]);
}

/// fp32, batch 2 × seq 4, eager attention: the workload of the two mask tests below.
fn eager_fp32_b2_s4() -> Workload {
    Workload {
        batch: 2,
        seq: 4,
        precision: Precision::Fp32,
        attention: crate::workload::AttentionImpl::Eager,
        ..Workload::default()
    }
}

/// Eager attention's causal mask, built once in the model's forward as transformers 5.17's
/// `create_causal_mask` does for eager attention (fp32, TinyLlama batch 2 × seq 4): four aranges
/// (S, S, B and 1 int64: 32, 32, 16 and 8 B), two adds of S int64 (32 B each way), the `le`
/// comparison (reads both index vectors, 64 B; writes the S×S bool, 16 B), a scalar fill (4 B)
/// and `where` (reads 32·S + S² + 2 scalars = 128 + 16 + 8 B, writes the (B, 1, S, S) fp32 mask,
/// 2 · 16 · 4 = 128 B): the bytes the CPU traces record (docs/results/traces/cpu-eager).
#[test]
fn eager_causal_mask_by_hand() {
    let m = preset("tinyllama-1.1b").unwrap();
    let s = spec(&m, MethodName::Full, &MethodOptions::default());
    let w = eager_fp32_b2_s4();
    let g = build(&m, &s, &w);
    let sdpa = build(
        &m,
        &s,
        &Workload {
            attention: crate::workload::AttentionImpl::Sdpa,
            ..w
        },
    );
    // The mask's ops follow everything SDPA's embedding scope runs.
    let (eager, base) = (
        &g.embedding.forward.kernels,
        &sdpa.embedding.forward.kernels,
    );
    assert_eq!(eager.len(), base.len() + 9);
    let got: Vec<(&str, f64, f64)> = eager[base.len()..]
        .iter()
        .map(|k| (k.name, k.bytes_read, k.bytes_written))
        .collect();
    assert_eq!(
        got,
        [
            ("arange", 0.0, 32.0),
            ("arange", 0.0, 32.0),
            ("arange", 0.0, 16.0),
            ("arange", 0.0, 8.0),
            ("add", 32.0, 32.0),
            ("add", 32.0, 32.0),
            ("le", 64.0, 16.0),
            ("scalar_tensor", 0.0, 4.0),
            ("where", 152.0, 128.0),
        ]
    );
}

/// The same mask with Mistral's sliding window (any length: eager always builds it), as the
/// CPU traces of a windowed Mistral record it (docs/results/traces/cpu-eager/mistral-*; S = 32
/// there: new_ones 256 / 1, sub 256 / 256, gt 512 / 1,024, the two bitwise_ands 1 + 1,024 and
/// 2,048 / 1,024 each). At batch 2 × seq 4: `new_ones` (reads the S int64 index it takes its
/// options from, 32 B, writes one bool), kv index − window (32 B each way), `gt` (64 B / the S×S
/// bool, 16 B), `bitwise_and` with the ones (1 + 16 / 16), then the causal `le` and a second
/// `bitwise_and` (32 / 16) before the scalar fill and `where`, which do not change.
#[test]
fn eager_sliding_window_mask_by_hand() {
    let mut m = preset("tinyllama-1.1b").unwrap();
    let s = spec(&m, MethodName::Full, &MethodOptions::default());
    let w = eager_fp32_b2_s4();
    let causal = build(&m, &s, &w);
    let mask = |g: &crate::graph::StepGraph| -> Vec<(&'static str, f64, f64)> {
        let k = &g.embedding.forward.kernels;
        k[k.len() - 10..]
            .iter()
            .map(|k| (k.name, k.bytes_read, k.bytes_written))
            .collect()
    };
    // A window longer than the sequence changes the eager mask all the same.
    for window in [2, 4096] {
        m.sliding_window = Some(window);
        let g = build(&m, &s, &w);
        assert_eq!(
            g.embedding.forward.kernels.len(),
            causal.embedding.forward.kernels.len() + 5
        );
        assert_eq!(
            mask(&g),
            [
                ("add", 32.0, 32.0),
                ("add", 32.0, 32.0),
                ("new_ones", 32.0, 1.0),
                ("sub", 32.0, 32.0),
                ("gt", 64.0, 16.0),
                ("bitwise_and", 17.0, 16.0),
                ("le", 64.0, 16.0),
                ("bitwise_and", 32.0, 16.0),
                ("scalar_tensor", 0.0, 4.0),
                ("where", 152.0, 128.0),
            ]
        );
        // The layers' kernels are the causal model's.
        assert_eq!(g.layer_graphs.len(), causal.layer_graphs.len());
        for (a, b) in g.layer_graphs.iter().zip(&causal.layer_graphs) {
            assert_eq!(a.forward.kernels.len(), b.forward.kernels.len());
            assert_eq!(a.backward.kernels.len(), b.backward.kernels.len());
        }
    }
    // SDPA below the window runs causal without a mask: the causal model's kernels.
    let sdpa = Workload {
        attention: crate::workload::AttentionImpl::Sdpa,
        ..w
    };
    m.sliding_window = None;
    let plain = build(&m, &s, &sdpa).embedding.forward.kernels.len();
    m.sliding_window = Some(5);
    sdpa.validate(&m).unwrap();
    assert_eq!(build(&m, &s, &sdpa).embedding.forward.kernels.len(), plain);
}

// ---------------------------------------------------------------------------------------------
// Labels and the step's segments
// ---------------------------------------------------------------------------------------------

/// Each kernel kind's label (`as_str`, `Display`) is the name its JSON output carries (serde's
/// kebab-case derive, a separate code path).
#[test]
fn kernel_kind_labels_match_their_json_names() {
    for kind in KernelKind::ALL {
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(format!("\"{}\"", kind.as_str()), json);
        assert_eq!(format!("\"{kind}\""), json);
    }
}

/// With one micro-batch per step there is no later micro-batch: the accumulating backward is
/// not built (empty in every scope); with two it holds the accumulate-grad adds.
#[test]
fn accumulating_backward_only_with_accumulation() {
    let m = preset("gpt2").unwrap();
    let s = spec(&m, MethodName::Full, &MethodOptions::default());
    for accum in [1, 2] {
        let w = Workload {
            batch: 1,
            seq: 4,
            grad_accum: accum,
            ..Workload::default()
        };
        let g = build(&m, &s, &w);
        let scopes = [&g.embedding, g.layer(0), &g.head];
        let built = scopes
            .iter()
            .filter(|sg| !sg.backward_accum.kernels.is_empty())
            .count();
        assert_eq!(built, if accum == 1 { 0 } else { 3 }, "grad_accum {accum}");
    }
}
