//! Kernel recipes worked by hand: every expected number is derived in the test, with the
//! arithmetic in a comment, from PyTorch's own rules (cited), never copied from costsim's output.
//! Written for the recipes cargo-mutants showed weakest (docs/mutants.md): the optimizer phase
//! (single-tensor AdamW, foreach chunking, the launch memo), SDPA's math path and rope's
//! backward, LoRA's and PaCA's small n×r tensors.

use super::optimizer::{foreach_launches, launches_recalled, launches_remember, optimizer};
use super::{Ctx, Kernel, KernelKind};
use crate::arch::{preset, ModelConfig};
use crate::method::{MethodName, MethodOptions, MethodSpec};
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
    optimizer(&cx, tensors).kernels
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
    let w = Workload::default();
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

/// fp16-mixed adds GradScaler's `_amp_foreach_non_finite_check_and_unscale_` (reads and writes
/// every fp32 gradient once: 4 · 300 = 1,200 bytes each way, a check and a multiply per element)
/// and `_amp_update_scale_` on fp32 scalars; no clipping here, SGD's one `_foreach_add_` (param
/// and grad read, param written).
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
        (
            "_amp_foreach_non_finite_check_and_unscale_",
            Optimizer,
            1,
            1_200.0,
            1_200.0,
            600.0,
        ),
        ("_amp_update_scale_", Elementwise, 1, 8.0, 4.0, 0.0),
        ("param_loop", Host, 0, 0.0, 0.0, 0.0),
        ("_foreach_add_", Optimizer, 1, 2_400.0, 1_200.0, 600.0),
        ("zero_grad(set_to_none)", Host, 0, 0.0, 0.0, 0.0),
    ];
    assert_eq!(rows(&ks), expected);
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
            ("div_", Optimizer, 1, b, b, f),
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
    // 100 one-chunk tensors: ⌈100/110⌉ = 1, ⌈100/64⌉ = 2, ⌈100/48⌉ = 3, ⌈100/36⌉ = 3,
    // ⌈100/30⌉ = 4 launches at depth 1–5; depth 0 and 9 clamp to 1 and 5.
    let small = [10u64; 100];
    let got: Vec<u32> = (0..=5)
        .chain([9])
        .map(|d| foreach_launches(&small, d))
        .collect();
    assert_eq!(got, [1, 1, 2, 3, 3, 4, 4]);
}

/// The foreach ops take their launch counts at their depth: with 100 one-chunk tensors,
/// 1 launch at depth 1 (mul_, div_, add_, norm), 2 at depth 2 (lerp_, addcmul_, sqrt), 3 at
/// depth 3 (addcdiv_), 3 at depth 4 (fused AdamW: ⌈100/36⌉) and 2 for SGD's depth-2 add_.
#[test]
fn foreach_launches_per_depth_in_the_phase() {
    let list = vec![10u64; 100];
    let w = Workload::default();
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
            ("_foreach_addcmul_", 2),
            ("_foreach_sqrt", 2),
            ("_foreach_div_", 1),
            ("_foreach_add_", 1),
            ("_foreach_addcdiv_", 3),
        ]
    );
    // What the phase left in this thread's memo: depths 1, 2 and 3 counted, 4 and 5 not.
    assert_eq!(
        launches_recalled(&list),
        [Some(1), Some(2), Some(3), None, None]
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
    assert_eq!(launches_recalled(&a), [None; 5]);
    launches_remember(&a, [Some(7), Some(8), Some(9), None, None]);
    assert_eq!(
        launches_recalled(&a),
        [Some(7), Some(8), Some(9), None, None]
    );
    assert_eq!(launches_recalled(&b), [None; 5]);
    // The phase trusts the memo: depth-1 ops take 7, depth 2 take 8, depth 3 take 9.
    let ks = optimizer_of(&Workload::default(), &a);
    let l = |name| ks.iter().find(|k| k.name == name).unwrap().launches;
    assert_eq!(
        (
            l("_foreach_norm"),
            l("_foreach_lerp_"),
            l("_foreach_addcdiv_")
        ),
        (7, 8, 9)
    );
    // Remembering again replaces.
    launches_remember(&a, [Some(1); 5]);
    assert_eq!(launches_recalled(&a), [Some(1); 5]);

    // A list of exactly CAP elements is kept; one of CAP + 1 is not.
    let exact = vec![5u64; CAP];
    launches_remember(&exact, [Some(4); 5]);
    assert_eq!(launches_recalled(&exact), [Some(4); 5]);
    let over = vec![6u64; CAP + 1];
    launches_remember(&over, [Some(4); 5]);
    assert_eq!(launches_recalled(&over), [None; 5]);
    // `exact` filled the memo: the next list clears it first.
    launches_remember(&b, [Some(2); 5]);
    assert_eq!(launches_recalled(&b), [Some(2); 5]);
    assert_eq!(launches_recalled(&exact), [None; 5]);

    // Two halves fill the memo exactly (b's 3 elements counted too: 3 + (CAP/2 − 3) + CAP/2 =
    // CAP, not over): all three kept; one more list clears them all.
    let h1 = vec![7u64; CAP / 2 - 3];
    let h2 = vec![8u64; CAP / 2];
    launches_remember(&h1, [Some(3); 5]);
    launches_remember(&h2, [Some(3); 5]);
    for l in [&h1[..], &h2[..], &b[..]] {
        assert_ne!(launches_recalled(l), [None; 5], "{}", l.len());
    }
    launches_remember(&[9], [Some(5); 5]);
    assert_eq!(launches_recalled(&[9]), [Some(5); 5]);
    for l in [&h1[..], &h2[..], &b[..]] {
        assert_eq!(launches_recalled(l), [None; 5], "{}", l.len());
    }
}
