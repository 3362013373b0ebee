//! Tests of simulate.rs, each case worked by hand.

use super::*;
use crate::arch::preset;
use crate::graph::build;
use crate::method::{MethodName, MethodOptions, MethodSpec};
use crate::workload::{Precision, Runtime};
use crate::TrainingLoop;
use costsim_hardware::{resolve_device, MathMode, Profile};

const US: f64 = 1e-6;

#[test]
fn host_cost_per_runtime_worked_by_hand() {
    // h200's [host]: python-op 24.699, cpp-op 1.0, module-call 25.310, peft-module 0,
    // autograd-node 29.345, optimizer-tensor 30.651 µs.
    let hw = resolve_device("h200").unwrap();
    let h = &hw.host;
    let mut k = Kernel::new_for_test(crate::graph::KernelKind::Elementwise, MathMode::Bf16);
    k.launches = 3;
    k.module_calls = 2;
    k.peft_calls = 1;
    k.host_tensors = 4;
    let eager = |k: &Kernel, ph| host_cost(k, ph, Runtime::PytorchEager, &hw);
    // Forward: one Python op, two extra launches at the C++ cost, two module calls, one
    // adapter layer, four tensors of the optimizer's per-tensor work.
    let fwd = h.python_op_s
        + 2.0 * h.cpp_op_s
        + 2.0 * h.module_call_s
        + h.peft_module_s
        + 4.0 * h.optimizer_tensor_s;
    assert!((eager(&k, Phase::Forward) - fwd).abs() < 1e-15);
    assert!((fwd - (24.699 + 2.0 + 50.620 + 0.0 + 122.604) * US).abs() < 1e-12);
    // Backward: the autograd engine's per-op cost instead of Python's.
    let bwd = fwd - h.python_op_s + h.autograd_node_s;
    assert!((eager(&k, Phase::Backward) - bwd).abs() < 1e-15);
    // A recomputed forward op in backward (checkpointing) pays Python again.
    let mut r = k.clone();
    r.recompute = true;
    assert!((eager(&r, Phase::Backward) - fwd).abs() < 1e-15);
    // zero_grad's tensors are already in the per-tensor cost: not charged twice.
    let mut z = k.clone();
    z.name = "zero_grad(set_to_none)";
    assert!((eager(&z, Phase::Optimizer) - (fwd - 4.0 * h.optimizer_tensor_s)).abs() < 1e-15);
    // Host-only records cost no per-op time of their own.
    let mut v = Kernel::new_for_test(crate::graph::KernelKind::Host, MathMode::Bf16);
    v.launches = 0;
    assert_eq!(eager(&v, Phase::Forward), 0.0);
    // libtorch: the C++ per-op cost, extra launches at it too, a tenth of it per tensor.
    let lt = host_cost(&k, Phase::Forward, Runtime::Libtorch, &hw);
    assert!((lt - (h.cpp_op_s + 2.0 * h.cpp_op_s + 0.4 * h.cpp_op_s)).abs() < 1e-15);
    let lb = host_cost(&k, Phase::Backward, Runtime::Libtorch, &hw);
    assert!((lb - (h.autograd_node_s + 2.0 * h.cpp_op_s + 0.4 * h.cpp_op_s)).abs() < 1e-15);
    // CUDA graphs: nothing per op.
    assert_eq!(host_cost(&k, Phase::Forward, Runtime::CudaGraph, &hw), 0.0);
}

/// A costed segment built by hand: per op (host µs, device µs); device 0 is a host-only op
/// (no launch). The fast list folds host-only ops into the next launch's host time, as
/// `cost_segment` documents.
fn seg(ops: &[(f64, f64)]) -> CostedSegment {
    let mut kernels = Vec::new();
    let mut fast = Vec::new();
    let mut pending = 0.0;
    for &(h, d) in ops {
        let cost = KernelCost {
            math_s: 0.0,
            mem_s: d * US,
            floor_s: 0.0,
            device_s: d * US,
            bound: Bound::Memory,
        };
        kernels.push((h * US, cost));
        pending += h * US;
        if d > 0.0 {
            fast.push((pending, d * US, 1));
            pending = 0.0;
        }
    }
    let launches = ops.iter().filter(|(_, d)| *d > 0.0).count() as u64;
    CostedSegment {
        kernels,
        closed: Closed::of(&fast),
        fast,
        tail_host_s: pending,
        sync: None,
        totals: (0.0, 0.0, launches),
    }
}

/// Run one segment from both clocks at 0 through both code paths (fast, and recording
/// waits); returns (GPU end µs, host end µs, span, per-kernel waited flags).
fn run_both(sync: bool, s: &CostedSegment) -> (f64, f64, Span, Vec<bool>) {
    let mut results = Vec::new();
    for record in [false, true] {
        let mut clock = Clock {
            host: 0.0,
            gpu: 0.0,
        };
        let mut span = Span::default();
        let mut flags = Vec::new();
        run(sync, &mut clock, s, &mut span, record.then_some(&mut flags));
        results.push((clock.gpu / US, clock.host / US, span, flags));
    }
    let (fast, slow) = (&results[0], &results[1]);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(
        close(fast.0, slow.0) && close(fast.1, slow.1),
        "{results:?}"
    );
    // The fast path (no flags) accumulates every field of the span as the recording one.
    let (a, b) = (&fast.2, &slow.2);
    for (x, y) in span_fields(a, b) {
        assert!(close(x / US, y / US), "{results:?}");
    }
    results.pop().unwrap()
}

fn assert_us(got_s: f64, want_us: f64) {
    assert!(
        (got_s / US - want_us).abs() < 1e-6,
        "{} µs, want {want_us} µs",
        got_s / US
    );
}

#[test]
fn host_bound_chain_takes_the_host_time_plus_the_last_kernel() {
    // 5 ops, host 10 µs, device 1 µs: op i is issued at 10·(i+1) µs and runs at once (the
    // GPU finished the previous one 9 µs earlier). End = 5 × 10 + 1 = 51 µs; the GPU waits
    // 10 µs before the first and 9 µs before each later one: 10 + 4 × 9 = 46 µs.
    let (gpu, host, span, waited) = run_both(false, &seg(&[(10.0, 1.0); 5]));
    assert!((gpu - 51.0).abs() < 1e-9, "{gpu}");
    assert!((host - 50.0).abs() < 1e-9, "{host}");
    assert_us(span.time_s, 51.0);
    assert_us(span.busy_s, 5.0);
    assert_us(span.host_wait_s, 46.0);
    assert_us(span.by_bound[3], 46.0);
    assert_us(span.by_bound[1], 5.0);
    assert_us(span.host_s, 50.0);
    assert_eq!(waited, [true; 5]);
}

#[test]
fn gpu_bound_chain_takes_the_first_issue_plus_the_device_time() {
    // 5 ops, host 1 µs, device 10 µs: the first starts at 1 µs, each later one is queued
    // before the GPU is free. End = 1 + 5 × 10 = 51 µs; only the first op waited (1 µs);
    // the host is done at 5 µs.
    let (gpu, host, span, waited) = run_both(false, &seg(&[(1.0, 10.0); 5]));
    assert!((gpu - 51.0).abs() < 1e-9, "{gpu}");
    assert!((host - 5.0).abs() < 1e-9, "{host}");
    assert_us(span.time_s, 51.0);
    assert_us(span.busy_s, 50.0);
    assert_us(span.host_wait_s, 1.0);
    assert_eq!(waited, [true, false, false, false, false]);
}

#[test]
fn on_a_cpu_host_and_device_time_add() {
    // Synchronous device: each op runs on the issuing thread, so the host resumes only after
    // it: 5 × (10 + 1) = 55 µs whichever side is larger, and the "GPU" waits for each issue.
    for ops in [[(10.0, 1.0); 5], [(1.0, 10.0); 5]] {
        let (gpu, host, span, waited) = run_both(true, &seg(&ops));
        assert!((gpu - 55.0).abs() < 1e-9, "{ops:?}: {gpu}");
        assert!((host - 55.0).abs() < 1e-9, "{ops:?}: {host}");
        assert_us(span.time_s, 55.0);
        assert_us(span.host_wait_s, 5.0 * ops[0].0);
        assert_eq!(waited, [true; 5]);
    }
}

#[test]
fn host_only_ops_delay_the_next_launch() {
    // Host 10 µs (launch, device 5 µs), host-only 20 µs, host 10 µs (launch, device 5 µs),
    // host-only 7 µs at the end: second launch issued at 10 + 20 + 10 = 40 µs, runs to 45;
    // the host finishes at 47 µs, after the GPU. GPU waits 10 + (40 − 15) = 35 µs.
    let (gpu, host, span, waited) = run_both(
        false,
        &seg(&[(10.0, 5.0), (20.0, 0.0), (10.0, 5.0), (7.0, 0.0)]),
    );
    assert!((gpu - 45.0).abs() < 1e-9, "{gpu}");
    assert!((host - 47.0).abs() < 1e-9, "{host}");
    assert_us(span.time_s, 45.0);
    assert_us(span.host_wait_s, 35.0);
    assert_us(span.host_s, 47.0);
    assert_eq!(waited, [true, false, true, false]);
}

/// A whole step of gpt2's 12-layer structure with every segment replaced by hand-made ops:
/// embedding forward 2 ops, each layer forward 3, head forward 2, head backward 2, each layer
/// backward 4, embedding backward 1, optimizer 3 (+ a trailing host-only op of `tail` µs).
/// Forward has 2 + 36 + 2 = 40 ops, backward 2 + 48 + 1 = 51, the optimizer 3: 94 per step
/// at grad_accum 1. Driven by a Trainer whose own work costs nothing: its loss check after
/// each micro-batch's backward, a synchronisation, is all it adds.
fn synthetic_step(host: f64, device: f64, tail: f64, sync: bool, grad_accum: u32) -> [Timeline; 2] {
    synthetic_step_with(
        host,
        device,
        tail,
        sync,
        grad_accum,
        TrainingLoop::Trainer,
        no_loop_costs,
    )
}

/// A Trainer's host work set to nothing.
fn no_loop_costs(hw: &mut Profile) {
    hw.host.loop_micro_batch_s = 0.0;
    hw.host.loop_module_s = 0.0;
    hw.host.loop_step_s = 0.0;
    hw.host.loop_step_module_s = 0.0;
}

#[test]
fn a_bare_loop_does_not_wait_for_the_loss() {
    // As `a_host_bound_step_is_the_host_time_plus_the_last_kernel` without the Trainer's loss
    // check: the host issues the optimizer's ops at 920, 930 and 940 µs right after the
    // backward's last at 910, so the step ends at 941 µs (942 with the check), the optimizer
    // phase at 941 − 911 = 30 µs, and the GPU waits 9 µs before each of the 93 ops after the
    // first (10 µs).
    let bare = |k| synthetic_step_with(10.0, 1.0, 0.0, false, k, TrainingLoop::Bare, no_loop_costs);
    for tl in bare(1) {
        assert_us(tl.step_s, 941.0);
        assert_us(tl.phases[1].time_s, 510.0);
        assert_us(tl.phases[2].time_s, 30.0);
        let wait: f64 = tl.phases.iter().map(|p| p.host_wait_s).sum();
        assert_us(wait, 10.0 + 93.0 * 9.0);
    }
    // Two micro-batches: 185 ops issued 10 µs apart with no shift: 1851 µs (1853 with the
    // two checks).
    for tl in bare(2) {
        assert_us(tl.step_s, 1851.0);
    }
    // GPU-bound (1 µs host, 10 µs device): the host runs ahead into the second micro-batch
    // and the GPU never idles after its first wait: 185 × 10 + 1 = 1851 µs, where the
    // Trainer's check makes the GPU wait 1 µs for the second micro-batch's first issue and
    // 1 µs for the optimizer's first: 1853 µs.
    for tl in synthetic_step_with(1.0, 10.0, 0.0, false, 2, TrainingLoop::Bare, no_loop_costs) {
        assert_us(tl.step_s, 1851.0);
    }
    for tl in synthetic_step(1.0, 10.0, 0.0, false, 2) {
        assert_us(tl.step_s, 1853.0);
    }
}

#[test]
fn a_timed_step_synchronises_around_each_phase() {
    let timed =
        |h, d, sync| synthetic_step_with(h, d, 0.0, sync, 1, TrainingLoop::Timed, no_loop_costs);
    // Host-bound (10 µs host, 1 µs device): the forward ends at 401 as in a bare loop, but the
    // host, done at 400, waits there; the backward's 51 ops are issued at 411 … 911 and end at
    // 912 (511 µs, one more than bare, whose host issued from 400); the optimizer's at 922, 932,
    // 942, done at 943 (31 µs).
    for tl in timed(10.0, 1.0, false) {
        assert_us(tl.phases[0].time_s, 401.0);
        assert_us(tl.phases[1].time_s, 511.0);
        assert_us(tl.phases[2].time_s, 31.0);
        assert_us(tl.step_s, 943.0);
    }
    // GPU-bound (1 µs host, 10 µs device): the host, done issuing the forward at 40, waits
    // until 401 instead of issuing the backward early; the backward's first op waits 1 µs
    // (issued at 402), the 51 run to 912 (511 µs); the optimizer 913 … 943 (31 µs). Bare: the
    // backward queued behind the forward runs 401 … 911 and the step ends at 941.
    for tl in timed(1.0, 10.0, false) {
        assert_us(tl.phases[0].time_s, 401.0);
        assert_us(tl.phases[1].time_s, 511.0);
        assert_us(tl.phases[1].host_wait_s, 1.0);
        assert_us(tl.phases[2].time_s, 31.0);
        assert_us(tl.step_s, 943.0);
    }
    for tl in synthetic_step_with(1.0, 10.0, 0.0, false, 1, TrainingLoop::Bare, no_loop_costs) {
        assert_us(tl.step_s, 941.0);
    }
    // A synchronous profile's host waits for every op anyway: with no host work after a
    // phase's last op (here none), timed is the bare loop, field for field.
    for (h, d) in [(10.0, 1.0), (1.0, 10.0)] {
        let bare = synthetic_step_with(h, d, 0.0, true, 1, TrainingLoop::Bare, no_loop_costs);
        for (t, b) in timed(h, d, true).iter().zip(&bare) {
            assert_eq!(t.phases, b.phases);
            assert_eq!(t.step_s, b.step_s);
        }
    }
}

proptest::proptest! {
    /// Synchronising the device around each phase can only hold the host back: on random
    /// segments (a third host-only ops) the timed step is never shorter than the bare loop's
    /// and each timed phase lasts at least its device time. On a synchronous profile, whose
    /// host waits for every op anyway, the clocks run the same and the step is as long: only
    /// host time after a phase's last op moves, into that phase from the next one's first wait.
    #[test]
    fn a_timed_step_is_never_shorter_than_a_bare_one(
        parts in proptest::collection::vec(
            proptest::collection::vec((0.0f64..30.0, 0.0f64..30.0, 0u8..3), 1..8),
            7,
        ),
        synchronous in proptest::bool::ANY,
        grad_accum in 1u32..3,
    ) {
        let m = preset("gpt2").unwrap();
        let spec =
            MethodSpec::resolve(MethodName::Full, &MethodOptions::default(), &m, true).unwrap();
        let ops = |i: usize| -> Vec<(f64, f64)> {
            parts[i].iter().map(|&(h, d, k)| (h, if k == 0 { 0.0 } else { d + 0.01 })).collect()
        };
        let three = |f: usize, b: usize| [seg(&ops(f)), seg(&ops(b)), seg(&ops(b))];
        let mut hw = resolve_device("a100").unwrap();
        hw.synchronous = synchronous;
        no_loop_costs(&mut hw);
        let step = |training_loop| {
            let w = Workload { grad_accum, training_loop, ..Workload::default() };
            let g = build(&m, &spec, &w);
            let cg = CostedGraph {
                embedding: three(0, 1),
                layers: g.layer_graphs.iter().map(|_| three(2, 3)).collect(),
                head: three(4, 5),
                optimizer: seg(&ops(6)),
            };
            simulate(&g, &cg, &w, &hw, false)
        };
        let (timed, bare) = (step(TrainingLoop::Timed), step(TrainingLoop::Bare));
        proptest::prop_assert!(timed.step_s >= bare.step_s * (1.0 - 1e-12), "{} < {}", timed.step_s, bare.step_s);
        for p in &timed.phases {
            proptest::prop_assert!(p.time_s >= p.busy_s * (1.0 - 1e-12));
        }
        if synchronous {
            let (t, b) = (timed.step_s, bare.step_s);
            proptest::prop_assert!((t - b).abs() <= 1e-12 * b.max(1e-9), "{t} vs {b}");
        }
    }
}

proptest::proptest! {
    /// A segment refilled from stretches (`refill_pieces`: runs of kernels folded once and
    /// joined, the changed kernels one by one) holds what folding every kernel gives
    /// (`refill_times`): on random segments (a third host-only ops, some of them at either
    /// end), with a random set of kernels costed afresh (none, some, all), and with the
    /// stretches of those in a row folded apart as blocks.
    #[test]
    fn stretches_fold_as_every_kernel(
        ops in proptest::collection::vec((0.0f64..30.0, 0.0f64..30.0, 0u8..3, proptest::bool::ANY), 1..40),
    ) {
        let list: Vec<(f64, f64)> =
            ops.iter().map(|&(h, d, k, _)| (h, if k == 0 { 0.0 } else { d + 0.01 })).collect();
        let whole = seg(&list);
        let costs = whole.kernels.clone();
        let mut pieces = Vec::new();
        let mut i = 0;
        while i < ops.len() {
            if ops[i].3 {
                pieces.push(Piece::Kernel { host_s: costs[i].0, cost_at: i as u32 });
                i += 1;
            } else {
                let j = (i..ops.len()).find(|&j| ops[j].3).unwrap_or(ops.len());
                pieces.push(Piece::run(&costs[i..j]));
                i = j;
            }
        }
        // The same with every stretch of two or more changed kernels in a row folded apart as
        // a block (`Piece::Block`, as a sweep does with those that recur), the blocks given in
        // reverse order of appearance.
        let mut blocked = Vec::new();
        let mut block_runs = Vec::new();
        let mut i = 0;
        while i < pieces.len() {
            let kernel_at = |j: usize| match pieces[j] {
                Piece::Kernel { cost_at, .. } => Some(cost_at as usize),
                _ => None,
            };
            let j = (i..pieces.len()).find(|&j| kernel_at(j).is_none()).unwrap_or(pieces.len());
            if j - i >= 2 {
                let at: Vec<usize> = (i..j).filter_map(kernel_at).collect();
                block_runs.push(Stretch::of(at.iter().map(|&k| (costs[k].0, &costs[k].1))));
                blocked.push(Piece::Block { block: block_runs.len() as u32 - 1 });
                i = j;
            } else {
                blocked.push(pieces[i]);
                i += 1;
            }
        }
        let n = block_runs.len() as u32;
        block_runs.reverse();
        for p in &mut blocked {
            if let Piece::Block { block } = p {
                *block = n - 1 - *block;
            }
        }
        let mut want = whole.clone();
        want.refill_times(&costs, false);
        for (pieces, block_runs) in [(&pieces, &[][..]), (&blocked, &block_runs[..])] {
            let mut got = whole.clone();
            got.refill_pieces(pieces, &costs, block_runs);
            let (a, b) = (got.closed, want.closed);
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * (1.0 + y.abs());
            proptest::prop_assert!(close(got.tail_host_s, want.tail_host_s), "{got:?} vs {want:?}");
            proptest::prop_assert!(close(a.host_s, b.host_s) && close(a.device_s, b.device_s), "{a:?} vs {b:?}");
            proptest::prop_assert_eq!(a.lead_s == f64::NEG_INFINITY, b.lead_s == f64::NEG_INFINITY);
            if b.lead_s > f64::NEG_INFINITY {
                proptest::prop_assert!(close(a.lead_s, b.lead_s), "{a:?} vs {b:?}");
            }
            for (x, y) in a.by_bound.into_iter().zip(b.by_bound) {
                proptest::prop_assert!(close(x, y), "{a:?} vs {b:?}");
            }
        }
    }
}

#[test]
fn copies_of_a_segment_compose_in_closed_form() {
    // One launch issued after 10 µs of host time, 4 µs on the device, and 1 µs of host time
    // after it: H = 11, D = 4, L = 10. Three copies from both clocks at 0, host-bound: issued
    // at 10, 21, 32, each runs 4 µs, the GPU ends at 36 and the host at 33; L₃ = 10 + 2·(11 −
    // 4) = 24, the GPU's wait 24 µs (10 + 7 + 7 between launches).
    let host_bound = seg(&[(10.0, 4.0), (1.0, 0.0)]);
    // Device-bound: issued at 1, 3, 5 (H = 2), 4 µs each: back to back from 1, GPU ends at 13;
    // L₃ = 1 + max(0, 2·(2 − 4)) = 1, the GPU's wait only the first 1 µs.
    let device_bound = seg(&[(1.0, 4.0), (1.0, 0.0)]);
    for (s, gpu, host, wait) in [
        (&host_bound, 36.0, 33.0, 24.0),
        (&device_bound, 13.0, 6.0, 1.0),
    ] {
        let mut clock = Clock {
            host: 0.0,
            gpu: 0.0,
        };
        let mut span = Span::default();
        run_gpu_k(&mut clock, s, 3, &mut span);
        let close = |a: f64, b: f64| (a - b * US).abs() < 1e-15;
        assert!(
            close(clock.gpu, gpu) && close(clock.host, host),
            "{clock:?}"
        );
        assert!(
            close(span.host_wait_s, wait) && close(span.by_bound[3], wait),
            "{span:?}"
        );
        assert!(
            close(span.busy_s, 12.0) && close(span.by_bound[1], 12.0),
            "{span:?}"
        );
        assert!(
            close(span.time_s, gpu) && close(span.host_s, host),
            "{span:?}"
        );
        // The same as three copies one by one.
        let (mut one, mut by_one) = (
            Clock {
                host: 0.0,
                gpu: 0.0,
            },
            Span::default(),
        );
        for _ in 0..3 {
            run_gpu_k(&mut one, s, 1, &mut by_one);
        }
        assert!((one.gpu - clock.gpu).abs() < 1e-18 && (one.host - clock.host).abs() < 1e-18);
        assert!((by_one.host_wait_s - span.host_wait_s).abs() < 1e-18);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// The phase-level simulation (runs of identical layers composed, `simulate_phases`) and
    /// the layer-by-layer one (`simulate_scoped`) agree on random steps: three layer classes in
    /// a random order over gpt2's 12 layers, random segments (a third host-only ops), an op the
    /// host waits at in some segments, 1 to 4 micro-batches, every loop and runtime.
    #[test]
    fn composed_layers_simulate_as_layer_by_layer(
        parts in proptest::collection::vec(
            proptest::collection::vec((0.0f64..30.0, 0.0f64..30.0, 0u8..3), 1..8),
            12,
        ),
        syncs in proptest::collection::vec(proptest::option::of(0usize..8), 12),
        classes in proptest::collection::vec(0usize..3, 12),
        grad_accum in 1u32..5,
        training_loop in proptest::sample::select(
            vec![TrainingLoop::Trainer, TrainingLoop::Bare, TrainingLoop::Timed]),
        runtime in proptest::sample::select(
            vec![Runtime::PytorchEager, Runtime::CudaGraph, Runtime::Libtorch]),
    ) {
        let m = preset("gpt2").unwrap();
        let spec =
            MethodSpec::resolve(MethodName::Full, &MethodOptions::default(), &m, true).unwrap();
        let part = |i: usize| -> CostedSegment {
            let ops: Vec<(f64, f64)> = parts[i]
                .iter()
                .map(|&(h, d, k)| (h, if k == 0 { 0.0 } else { d + 0.01 }))
                .collect();
            let mut s = seg(&ops);
            if let Some(at) = syncs[i].filter(|&at| at < ops.len()) {
                s.sync = Some(SyncPoint { at, before: Closed::EMPTY, before_tail_s: 0.0 });
                let costs = s.kernels.clone();
                s.refill_times(&costs, false);
            }
            s
        };
        let three = |f: usize, b: usize| [part(f), part(b), part(b + 1)];
        let hw = resolve_device("a100").unwrap();
        let w = Workload { grad_accum, training_loop, runtime, ..Workload::default() };
        let mut g = build(&m, &spec, &w);
        g.layer_class = classes.clone();
        let cg = CostedGraph {
            embedding: three(0, 1),
            layers: vec![three(3, 4), three(5, 6), three(7, 8)],
            head: three(9, 10),
            optimizer: part(11),
        };
        let fast = simulate_phases(&g, &cg, &w, &hw);
        let slow = simulate_scoped(&g, &cg, &w, &hw, false, false);
        // Waits are differences of clock readings: rounding relative to the step.
        let step = slow.step_s;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (b.abs() + step);
        proptest::prop_assert!(close(fast.step_s, slow.step_s), "{} vs {}", fast.step_s, slow.step_s);
        let spans = fast.phases.iter().zip(&slow.phases).chain([(&fast.training_loop, &slow.training_loop)]);
        for (a, b) in spans {
            proptest::prop_assert_eq!(a.launches, b.launches);
            let pairs = [(a.time_s, b.time_s), (a.busy_s, b.busy_s), (a.host_wait_s, b.host_wait_s), (a.host_s, b.host_s)];
            for (x, y) in pairs.into_iter().chain(a.by_bound.into_iter().zip(b.by_bound)) {
                proptest::prop_assert!(close(x, y), "{a:?} vs {b:?}");
            }
        }
    }
}

#[test]
fn a_timed_phase_lasts_until_its_host_work_is_done() {
    // The host-bound synthetic step with a host-only op of 30 µs ending the head's forward
    // (the loss's bookkeeping): the host is done with the forward at 430, the GPU at 401.
    // Timed, the forward lasts 430 µs, its last 29 the GPU idle, charged to the head's forward;
    // the backward then issues at 440 … 940 (511 µs) and the optimizer ends at 972. Bare, the
    // forward is the GPU's 401 µs and the backward's first op waits 39 µs (540 µs).
    let m = preset("gpt2").unwrap();
    let spec = MethodSpec::resolve(MethodName::Full, &MethodOptions::default(), &m, true).unwrap();
    let op = (10.0, 1.0);
    let three = |n_fwd: usize, n_bwd: usize, tail: bool| {
        let mut fwd = vec![op; n_fwd];
        if tail {
            fwd.push((30.0, 0.0));
        }
        [seg(&fwd), seg(&vec![op; n_bwd]), seg(&vec![op; n_bwd])]
    };
    let mut hw = resolve_device("a100").unwrap();
    hw.synchronous = false;
    no_loop_costs(&mut hw);
    let step = |training_loop| {
        let w = Workload {
            training_loop,
            ..Workload::default()
        };
        let g = build(&m, &spec, &w);
        let cg = CostedGraph {
            embedding: three(2, 1, false),
            layers: g.layer_graphs.iter().map(|_| three(3, 4, false)).collect(),
            head: three(2, 2, true),
            optimizer: seg(&[op, op, op]),
        };
        simulate(&g, &cg, &w, &hw, false)
    };
    let timed = step(TrainingLoop::Timed);
    assert_us(timed.phases[0].time_s, 430.0);
    assert_us(timed.phases[0].host_wait_s, 10.0 + 39.0 * 9.0 + 29.0);
    assert_us(timed.phases[1].time_s, 511.0);
    assert_us(timed.step_s, 972.0);
    let bare = step(TrainingLoop::Bare);
    assert_us(bare.phases[0].time_s, 401.0);
    assert_us(bare.phases[1].time_s, 540.0);
    assert_us(bare.step_s, 971.0);
}

/// [`synthetic_step`] with a training loop and the profile adjusted by `edit`.
fn synthetic_step_with(
    host: f64,
    device: f64,
    tail: f64,
    sync: bool,
    grad_accum: u32,
    training_loop: TrainingLoop,
    edit: impl Fn(&mut Profile),
) -> [Timeline; 2] {
    let m = preset("gpt2").unwrap();
    let spec = MethodSpec::resolve(MethodName::Full, &MethodOptions::default(), &m, true).unwrap();
    let w = Workload {
        grad_accum,
        training_loop,
        ..Workload::default()
    };
    let g = build(&m, &spec, &w);
    assert_eq!(g.layer_class.len(), 12);
    let op = (host, device);
    let three = |n_fwd: usize, n_bwd: usize| {
        [
            seg(&vec![op; n_fwd]),
            seg(&vec![op; n_bwd]),
            seg(&vec![op; n_bwd]),
        ]
    };
    let cg = CostedGraph {
        embedding: three(2, 1),
        layers: g.layer_graphs.iter().map(|_| three(3, 4)).collect(),
        head: three(2, 2),
        optimizer: seg(&[op, op, op, (tail, 0.0)]),
    };
    let mut hw = resolve_device("a100").unwrap();
    hw.synchronous = sync;
    edit(&mut hw);
    [false, true].map(|record| simulate(&g, &cg, &w, &hw, record))
}

#[test]
fn a_trainer_loop_adds_its_work_where_the_gpu_idles() {
    // gpt2 full: 8 + 13 × 12 = 164 modules. Loop costs 60 µs per micro-batch + 0.25 µs per
    // module (41 µs) = 101 µs per micro-batch, 19 µs per step.
    let costs = |hw: &mut Profile| {
        hw.host.loop_micro_batch_s = 60e-6;
        hw.host.loop_module_s = 0.25e-6;
        hw.host.loop_step_s = 19e-6;
        hw.host.loop_step_module_s = 0.0;
    };
    let trainer = |h, d, k| synthetic_step_with(h, d, 0.0, false, k, TrainingLoop::Trainer, costs);
    // Host-bound (10 µs host, 1 µs device per op; 942 µs bare, host done at 941): the
    // next step's fetch and this step's per-step work, 101 + 19 = 120 µs, start at 941 and
    // end at 1061; the GPU, done at 942, idles 119 µs of them.
    for tl in trainer(10.0, 1.0, 1) {
        assert_us(tl.step_s, 1061.0);
        assert_us(tl.training_loop.host_s, 120.0);
        assert_us(tl.training_loop.time_s, 119.0);
        assert_us(tl.training_loop.host_wait_s, 119.0);
        assert_us(tl.training_loop.by_bound[3], 119.0);
        assert_us(tl.phases[2].time_s, 31.0);
    }
    // Two micro-batches: the second's fetch (101 µs) follows the first one's sync at 911,
    // with the GPU idle; its 91 ops then run from 1012 to 1012 + 910 + 1 = 1923, the
    // optimizer's issues end at 1953 and its kernel at 1954; the end's 120 µs run from 1953
    // to 2073 (119 µs idle). Bare: 1853 µs; the loop adds 101 + 119 = 220 µs.
    for tl in trainer(10.0, 1.0, 2) {
        assert_us(tl.step_s, 2073.0);
        assert_us(tl.training_loop.host_s, 101.0 + 120.0);
        assert_us(tl.training_loop.time_s, 101.0 + 119.0);
    }
    // GPU-bound (1 µs host, 10 µs device; 942 µs bare): the optimizer's three issues end at
    // 914 while its kernels run until 942, so the end's 120 µs overlap 28 µs of them: the
    // step ends at 914 + 120 = 1034, the loop's GPU idle is 92 µs.
    for tl in trainer(1.0, 10.0, 1) {
        assert_us(tl.step_s, 1034.0);
        assert_us(tl.training_loop.time_s, 92.0);
        assert_us(tl.phases[2].time_s, 31.0);
    }
    // A bare loop with the same profile costs nothing, and has no loss check: 941 µs
    // (`a_bare_loop_does_not_wait_for_the_loss`).
    for tl in synthetic_step_with(10.0, 1.0, 0.0, false, 1, TrainingLoop::Bare, costs) {
        assert_us(tl.step_s, 941.0);
        assert_eq!(tl.training_loop.host_s, 0.0);
    }
}

#[test]
fn a_host_bound_step_is_the_host_time_plus_the_last_kernel() {
    // Host 10 µs, device 1 µs per op: every op starts when issued. Forward ends at
    // 40 × 10 + 1 = 401 µs, backward at 91 × 10 + 1 = 911 µs (510 µs). The loss check after
    // the backward (pytorch-eager, a Trainer's NaN/Inf test) holds the host until the GPU is
    // done: 910 → 911 µs; the optimizer's ops are issued at 921, 931, 941 and it ends at
    // 942 µs (31 µs).
    for tl in synthetic_step(10.0, 1.0, 0.0, false, 1) {
        assert_us(tl.step_s, 942.0);
        assert_us(tl.phases[0].time_s, 401.0);
        assert_us(tl.phases[1].time_s, 510.0);
        assert_us(tl.phases[2].time_s, 31.0);
        assert_us(tl.phases[0].busy_s, 40.0);
        // The GPU waits 10 µs before the first op, 9 µs before each of the 92 others but
        // the optimizer's first, and 10 µs before that one (issued 10 µs after the sync).
        let wait: f64 = tl.phases.iter().map(|p| p.host_wait_s).sum();
        assert_us(wait, 10.0 + 92.0 * 9.0 + 10.0);
        assert_eq!(tl.phases[0].launches, 40);
        assert_eq!(tl.phases[1].launches, 51);
        assert_eq!(tl.phases[2].launches, 3);
    }
    // Two micro-batches: 2 × 91 + 3 = 185 ops issued 10 µs apart, shifted 1 µs by each of
    // the two syncs: 1850 + 2 + 1 = 1853 µs.
    for tl in synthetic_step(10.0, 1.0, 0.0, false, 2) {
        assert_us(tl.step_s, 1853.0);
        // Forward and backward of both: the GPU ends at 182 × 10 + 1 + 1 = 1822 µs (the
        // second micro-batch starts from the first one's sync at 911).
        assert_us(tl.phases[0].time_s + tl.phases[1].time_s, 1822.0);
    }
    // A host-only op of 50 µs after the optimizer's last launch: the host ends at
    // 941 + 50 = 991 µs, after the GPU (942), and the step ends with it.
    // The GPU idles for the host's last 991 − 942 = 49 µs, after its waits of 10, 9 and
    // 9 µs before the optimizer's kernels: 77 µs.
    for tl in synthetic_step(10.0, 1.0, 50.0, false, 1) {
        assert_us(tl.step_s, 991.0);
        assert_us(tl.phases[2].time_s, 991.0 - 911.0);
        assert_us(tl.phases[2].host_wait_s, 28.0 + 49.0);
        assert_us(tl.phases[2].by_bound[3], 28.0 + 49.0);
        assert_us(tl.phases[2].busy_s, 3.0);
    }
}

#[test]
fn a_gpu_bound_step_is_the_first_issue_plus_the_device_time() {
    // Host 1 µs, device 10 µs per op: after the first issue (1 µs) the GPU never idles until
    // the backward ends at 1 + 91 × 10 = 911 µs. The loss check holds the host there (it had
    // issued everything by 92 µs); the optimizer's first op is issued at 912, so the GPU
    // idles 1 µs: optimizer 1 + 3 × 10 = 31 µs, step 942 µs.
    for tl in synthetic_step(1.0, 10.0, 0.0, false, 1) {
        assert_us(tl.step_s, 942.0);
        assert_us(tl.phases[0].time_s, 401.0);
        assert_us(tl.phases[1].time_s, 510.0);
        assert_us(tl.phases[2].time_s, 31.0);
        let wait: f64 = tl.phases.iter().map(|p| p.host_wait_s).sum();
        assert_us(wait, 2.0);
    }
    // The host's trailing 50 µs now starts after the sync: it ends at 911 + 3 + 50 =
    // 964 µs, after the GPU (942), and the step ends with it.
    for tl in synthetic_step(1.0, 10.0, 50.0, false, 1) {
        assert_us(tl.step_s, 964.0);
    }
    // Two micro-batches: each micro-batch and the optimizer start with one exposed issue:
    // 3 × 1 + (2 × 91 + 3) × 10 = 1853 µs.
    for tl in synthetic_step(1.0, 10.0, 0.0, false, 2) {
        assert_us(tl.step_s, 1853.0);
    }
}

#[test]
fn a_synchronous_step_adds_host_and_device_time() {
    // CPU: every op costs host + device = 11 µs, 94 ops → 1034 µs, in either proportion.
    for (h, d) in [(10.0, 1.0), (1.0, 10.0)] {
        for tl in synthetic_step(h, d, 0.0, true, 1) {
            assert_us(tl.step_s, 94.0 * 11.0);
            assert_us(tl.phases[0].time_s, 40.0 * 11.0);
            assert_us(tl.phases[1].time_s, 51.0 * 11.0);
            assert_us(tl.phases[2].time_s, 3.0 * 11.0);
        }
    }
}

/// The fast simulation (GPUs: each segment in closed form; CPUs: identical layers replayed at
/// their fixed point) gives what stepping through every launch gives (recording waits turns
/// both off). Equal up to rounding: a closed form or a replayed layer adds its span as one sum.
#[test]
fn replaying_identical_layers_equals_simulating_them() {
    let cases = [
        (
            "llama2-7b",
            "a100",
            Runtime::PytorchEager,
            1,
            Precision::Bf16Mixed,
            8,
            512,
        ),
        (
            "gpt2",
            "h100",
            Runtime::PytorchEager,
            2,
            Precision::Bf16Mixed,
            1,
            128,
        ),
        (
            "tinyllama-1.1b",
            "l4",
            Runtime::Libtorch,
            1,
            Precision::Fp32,
            4,
            1024,
        ),
        (
            "llama2-13b",
            "h100",
            Runtime::CudaGraph,
            3,
            Precision::Bf16,
            2,
            256,
        ),
        ("gpt2", "cpu", Runtime::Libtorch, 1, Precision::Fp32, 1, 128),
        (
            "tinyllama-1.1b",
            "cpu",
            Runtime::PytorchEager,
            2,
            Precision::Bf16,
            1,
            256,
        ),
        // GPU-bound backward in which the host catches up layer by layer until it waits:
        // replayed within the first layer's slack (LoRA), then at the fixed point.
        (
            "llama2-7b",
            "h200",
            Runtime::PytorchEager,
            1,
            Precision::Bf16Mixed,
            1,
            2048,
        ),
    ];
    let mut replayed = 0;
    for (model, hw, runtime, grad_accum, precision, batch, seq) in cases {
        let m = preset(model).unwrap();
        let hw = resolve_device(hw).unwrap();
        let w = Workload {
            runtime,
            grad_accum,
            precision,
            batch,
            seq,
            ..Workload::default()
        };
        for name in MethodName::ALL {
            let spec = MethodSpec::resolve(name, &MethodOptions::default(), &m, true).unwrap();
            let g = build(&m, &spec, &w);
            let cg = cost_graph(&g, &w, &hw);
            let fast = simulate(&g, &cg, &w, &hw, false);
            let slow = simulate(&g, &cg, &w, &hw, true);
            // Rounding grows with the clocks' magnitude (a wait is a difference of two clock
            // readings), so a trillionth of the step is allowed on top of a relative 1e-9.
            let step = slow.step_s;
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-6) + 1e-12 * step;
            assert!(close(fast.step_s, slow.step_s), "{model} {name}");
            // Embedding, layers and head in two phases, and the optimizer.
            let n_scopes = 2 * (g.layer_class.len() + 2) + 1;
            assert_eq!(fast.scopes.len(), n_scopes, "{model} {name}");
            assert_eq!(slow.scopes.len(), n_scopes, "{model} {name}");
            for ((sa, pa, a), (sb, pb, b)) in fast.scopes.iter().zip(&slow.scopes) {
                assert_eq!((sa, pa), (sb, pb));
                assert!(close(a.time_s, b.time_s), "{model} {name} {sa:?} {pa:?}");
                assert!(close(a.host_wait_s, b.host_wait_s), "{model} {name} {sa:?}");
                assert!(close(a.busy_s, b.busy_s), "{model} {name} {sa:?}");
                assert!(close(a.host_s, b.host_s), "{model} {name} {sa:?}");
                for i in 0..4 {
                    assert!(close(a.by_bound[i], b.by_bound[i]), "{model} {name}");
                }
            }
            replayed += 1;
        }
    }
    assert_eq!(replayed, 35);
}

#[test]
fn many_micro_batches_are_replayed_not_simulated_one_by_one() {
    // Each micro-batch is 91 ops (40 forward + 51 backward), then 3 optimizer ops, with the
    // loss check's sync after each backward. Host-bound (10 µs issue, 1 µs device): ops
    // issued 10 µs apart, each sync shifting the host 1 µs: (91·N + 3)·10 + N + 1 µs.
    // GPU-bound (1 µs issue, 10 µs device): one exposed 1 µs issue per micro-batch and one
    // for the optimizer: (91·N + 3)·10 + N + 1 µs too. N = 1 and 2 are worked above.
    for n in [63u32, 64, 65, 100, 5000, u32::MAX] {
        let ops = 91.0 * f64::from(n) + 3.0;
        let start = std::time::Instant::now();
        for (host, device) in [(10.0, 1.0), (1.0, 10.0)] {
            for tl in synthetic_step(host, device, 0.0, false, n) {
                let want = ops * 10.0 + f64::from(n) + 1.0;
                let rel = (tl.step_s * 1e6 - want).abs() / want;
                assert!(
                    rel < 1e-9,
                    "N {n} ({host}, {device}): {} vs {want}",
                    tl.step_s * 1e6
                );
                assert_eq!(tl.phases[0].launches, 40 * u64::from(n), "N {n}");
                assert_eq!(tl.phases[1].launches, 51 * u64::from(n), "N {n}");
            }
        }
        assert!(
            start.elapsed().as_secs() < 5,
            "N {n} took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn replayed_micro_batches_extend_the_simulated_ones_linearly() {
    // On a real graph: beyond EXACT_MICRO_BATCHES each extra micro-batch adds what the last
    // simulated one took, so T(200) - T(100) = 100 · (T(64) - T(63)).
    let m = preset("gpt2").unwrap();
    let hw = resolve_device("a100").unwrap();
    let spec = MethodSpec::resolve(MethodName::Lora, &MethodOptions::default(), &m, true).unwrap();
    let step = |grad_accum: u32| {
        let w = Workload {
            grad_accum,
            batch: 1,
            seq: 128,
            ..Workload::default()
        };
        let g = build(&m, &spec, &w);
        let cg = cost_graph(&g, &w, &hw);
        simulate(&g, &cg, &w, &hw, false).step_s
    };
    let per = step(64) - step(63);
    assert!(per > 0.0);
    let grew = step(200) - step(100);
    assert!(
        (grew - 100.0 * per).abs() <= 1e-9 * grew,
        "{grew} vs {}",
        100.0 * per
    );
}

#[test]
fn host_cost_of_adapter_calls_and_of_libtorch_recompute_by_hand() {
    // h200's [host] (above), with a peft per-adapted-module cost of 7 µs (the file's is 0).
    let mut hw = resolve_device("h200").unwrap();
    hw.host.peft_module_s = 7.0 * US;
    let mut k = Kernel::new_for_test(crate::graph::KernelKind::Elementwise, MathMode::Bf16);
    k.launches = 1;
    k.peft_calls = 3;
    // pytorch-eager forward: one Python op and three adapted modules: 24.699 + 3 × 7 =
    // 45.699 µs.
    assert_us(
        host_cost(&k, Phase::Forward, Runtime::PytorchEager, &hw),
        45.699,
    );
    // libtorch backward: an autograd node, 29.345 µs; a recomputed forward op there is a C++
    // op, 1.0 µs.
    assert_us(
        host_cost(&k, Phase::Backward, Runtime::Libtorch, &hw),
        29.345,
    );
    k.recompute = true;
    assert_us(host_cost(&k, Phase::Backward, Runtime::Libtorch, &hw), 1.0);
}

#[test]
fn refill_sums_and_folds_what_cost_segment_does() {
    // Kernels a (100 FLOPs, 10 + 20 bytes, 1 launch), a host-only record, b (50 FLOPs,
    // 5 + 7 bytes, 2 launches): totals 150 FLOPs, 42 bytes, 3 launches.
    let mut a = Kernel::new_for_test(crate::graph::KernelKind::Elementwise, MathMode::Bf16);
    (a.flops, a.bytes_read, a.bytes_written, a.launches) = (100.0, 10.0, 20.0, 1);
    let mut v = Kernel::new_for_test(crate::graph::KernelKind::Host, MathMode::Bf16);
    v.launches = 0;
    let mut b = Kernel::new_for_test(crate::graph::KernelKind::Elementwise, MathMode::Bf16);
    (b.flops, b.bytes_read, b.bytes_written, b.launches) = (50.0, 5.0, 7.0, 2);
    let seg = Segment {
        kernels: vec![a, v, b],
    };
    let cost = |d: f64, bound| KernelCost {
        math_s: 0.0,
        mem_s: d * US,
        floor_s: 0.0,
        device_s: d * US,
        bound,
    };
    // Host 2 µs before a (3 µs, compute-bound); the record's 4 µs and b's 1 µs before b
    // (5 µs, launch-bound).
    let costs = [
        (2.0 * US, cost(3.0, Bound::Compute)),
        (4.0 * US, cost(0.0, Bound::Memory)),
        (1.0 * US, cost(5.0, Bound::Launch)),
    ];
    let mut c = CostedSegment::empty();
    for _ in 0..2 {
        // Twice: a refill replaces what the segment held.
        c.refill(&seg, &costs, true);
        assert_eq!(c.totals, (150.0, 42.0, 3));
        assert_eq!(c.fast.len(), 2);
        assert_us(c.fast[0].0, 2.0);
        assert_us(c.fast[0].1, 3.0);
        assert_eq!(c.fast[0].2, 0);
        assert_us(c.fast[1].0, 5.0);
        assert_us(c.fast[1].1, 5.0);
        assert_eq!(c.fast[1].2, 2);
        assert_eq!(c.tail_host_s, 0.0);
        assert!(c.kernels.is_empty());
        // The closed form: host 2 + 5 = 7 µs, device 3 + 5 = 8 µs, L = max(2 − 0, 7 − 3) = 4 µs,
        // device by bound: compute 3, launch 5.
        assert_us(c.closed.host_s, 7.0);
        assert_us(c.closed.device_s, 8.0);
        assert_us(c.closed.lead_s, 4.0);
        for (i, want) in [3.0, 0.0, 5.0, 0.0].into_iter().enumerate() {
            assert_us(c.closed.by_bound[i], want);
        }
    }
    // For a GPU (not synchronous) the same sums, without the launch list.
    let mut g = CostedSegment::empty();
    g.refill(&seg, &costs, false);
    assert!(g.fast.is_empty());
    assert_eq!(g.totals, c.totals);
    assert_eq!(
        (
            g.closed.host_s,
            g.closed.device_s,
            g.closed.lead_s,
            g.closed.by_bound
        ),
        (
            c.closed.host_s,
            c.closed.device_s,
            c.closed.lead_s,
            c.closed.by_bound
        )
    );
    // cost_segment counts the same totals from the same kernels.
    let hw = resolve_device("h200").unwrap();
    let w = Workload::default();
    let mut memo = GemmMemo::default();
    let full = cost_segment(&seg, Phase::Forward, &w, &hw, &mut memo, false);
    assert_eq!(full.totals, (150.0, 42.0, 3));
    // refill_times: other costs (b now 9 µs and memory-bound) folded into the times exactly as
    // refill folds them, the totals left as they were, on both kinds of device.
    let mut other = costs;
    other[2].1 = cost(9.0, Bound::Memory);
    for sync in [true, false] {
        let mut want = CostedSegment::empty();
        want.refill(&seg, &other, sync);
        let mut got = CostedSegment::empty();
        got.refill(&seg, &costs, sync);
        got.totals = (1.0, 2.0, 3);
        got.refill_times(&other, sync);
        assert_eq!(got.totals, (1.0, 2.0, 3));
        assert_eq!(got.fast, want.fast);
        assert_eq!(got.fast.len(), if sync { 2 } else { 0 });
        assert_eq!(got.tail_host_s, want.tail_host_s);
        assert_eq!(
            (got.closed.host_s, got.closed.device_s, got.closed.lead_s),
            (want.closed.host_s, want.closed.device_s, want.closed.lead_s)
        );
        assert_eq!(got.closed.by_bound, want.closed.by_bound);
        assert_us(got.closed.by_bound[1], 9.0);
    }
}

#[test]
fn device_time_is_filed_under_each_kernels_bound() {
    // Three ops issued at 1, 2, 3 µs: compute 10 µs (1 → 11), memory 20 µs (11 → 31),
    // launch 3 µs (31 → 34). The GPU waits 1 µs, before the first.
    let mut k = Kernel::new_for_test(crate::graph::KernelKind::Elementwise, MathMode::Bf16);
    k.launches = 1;
    let seg = Segment {
        kernels: vec![k.clone(), k.clone(), k],
    };
    let costs: Vec<(f64, KernelCost)> = [
        (10.0, Bound::Compute),
        (20.0, Bound::Memory),
        (3.0, Bound::Launch),
    ]
    .map(|(d, bound)| {
        (
            US,
            KernelCost {
                math_s: 0.0,
                mem_s: 0.0,
                floor_s: d * US,
                device_s: d * US,
                bound,
            },
        )
    })
    .to_vec();
    let mut c = CostedSegment::empty();
    c.refill(&seg, &costs, false);
    c.kernels = costs;
    let (gpu, host, span, waited) = run_both(false, &c);
    assert!((gpu - 34.0).abs() < 1e-9, "{gpu}");
    assert!((host - 3.0).abs() < 1e-9, "{host}");
    for (i, want) in [10.0, 20.0, 3.0, 1.0].into_iter().enumerate() {
        assert_us(span.by_bound[i], want);
    }
    assert_us(span.busy_s, 33.0);
    assert_eq!(waited, [true, false, false]);
}

#[test]
fn spans_scale_add_and_subtract_field_by_field() {
    let s = Span {
        time_s: 1.0,
        busy_s: 2.0,
        host_wait_s: 3.0,
        host_s: 4.0,
        launches: 5,
        by_bound: [6.0, 7.0, 8.0, 9.0],
    };
    let t = s.times(3);
    assert_eq!(
        t,
        Span {
            time_s: 3.0,
            busy_s: 6.0,
            host_wait_s: 9.0,
            host_s: 12.0,
            launches: 15,
            by_bound: [18.0, 21.0, 24.0, 27.0],
        }
    );
    let mut sum = t;
    sum.add(&s);
    assert_eq!(
        sum,
        Span {
            time_s: 4.0,
            busy_s: 8.0,
            host_wait_s: 12.0,
            host_s: 16.0,
            launches: 20,
            by_bound: [24.0, 28.0, 32.0, 36.0],
        }
    );
    assert_eq!(span_delta(&sum, &t), s);
    // Launch counts saturate.
    let many = Span {
        launches: u64::MAX / 2 + 1,
        ..Span::default()
    };
    assert_eq!(many.times(2).launches, u64::MAX);
}

#[test]
fn the_clock_offset_is_host_minus_gpu() {
    let c = Clock {
        host: 5.0 * US,
        gpu: 3.0 * US,
    };
    assert_us(c.offset(), 2.0);
}

/// A `Steady` that has observed one layer of class 4: entered at offset 2 µs (host 12, GPU
/// 10), it added `span` and moved the host 30 µs and the GPU `span.time_s`.
fn observed(span: Span) -> Steady {
    let mut s = Steady::default();
    let after = Clock {
        host: 42.0 * US,
        gpu: 10.0 * US + span.time_s,
    };
    s.observe(4, 2.0 * US, 12.0 * US, &after, span);
    s
}

#[test]
fn steady_replays_a_layer_entered_at_the_same_offset() {
    let waited = Span {
        time_s: 25.0 * US,
        host_wait_s: 5.0 * US,
        busy_s: 20.0 * US,
        ..Span::default()
    };
    // Nothing observed: simulate.
    let mut clock = Clock {
        host: 102.0 * US,
        gpu: 100.0 * US,
    };
    let mut span = Span::default();
    assert!(!Steady::default().replay(4, &mut clock, &mut span));
    // Same class at the same offset (2 µs): replayed, the span added and the clocks moved
    // 30 µs (host) and 25 µs (GPU).
    let mut s = observed(waited);
    assert!(s.replay(4, &mut clock, &mut span));
    assert_eq!(span, waited);
    assert_us(clock.host, 132.0);
    assert_us(clock.gpu, 125.0);
    // Again from there (offset 7 µs, 5 µs off, and the layer waited): simulate.
    assert!(!s.replay(4, &mut clock, &mut span));
    assert_us(clock.host, 132.0);
    assert_eq!(span, waited);
    // Another class at the same offset: simulate.
    let mut clock = Clock {
        host: 102.0 * US,
        gpu: 100.0 * US,
    };
    assert!(!s.replay(5, &mut clock, &mut span));
    // Within a picosecond of the offset: replayed; a nanosecond off: not.
    for (host_us, repeats) in [(102.0 + 0.5e-6, true), (102.0 + 1e-3, false)] {
        let mut clock = Clock {
            host: host_us * US,
            gpu: 100.0 * US,
        };
        let mut span = Span::default();
        assert_eq!(s.replay(4, &mut clock, &mut span), repeats, "{host_us}");
    }
}

#[test]
fn replayed_micro_batches_add_every_field_of_their_spans() {
    // 100 micro-batches (36 replayed after the 64 simulated ones) of the synthetic step.
    // Host-bound (10 µs issue, 1 µs device): each micro-batch's forward takes 401 µs (40
    // ops; the GPU waits 10 µs before the first, 9 before each other: 361), its backward
    // 510 µs (51 ops, 9 µs waits: 459); the host issues 400 and 510 µs. The optimizer:
    // waits 10 + 9 + 9, 3 µs busy, 31 µs, 30 µs of issue.
    for tl in synthetic_step(10.0, 1.0, 0.0, false, 100) {
        let [f, b, o] = tl.phases;
        for (got, want) in [
            (f.time_s, 40_100.0),
            (f.busy_s, 4_000.0),
            (f.host_wait_s, 36_100.0),
            (f.host_s, 40_000.0),
            (f.by_bound[1], 4_000.0),
            (f.by_bound[3], 36_100.0),
            (b.time_s, 51_000.0),
            (b.busy_s, 5_100.0),
            (b.host_wait_s, 45_900.0),
            (b.host_s, 51_000.0),
            (b.by_bound[1], 5_100.0),
            (b.by_bound[3], 45_900.0),
            (o.time_s, 31.0),
            (o.host_wait_s, 28.0),
            (o.host_s, 30.0),
        ] {
            assert!((got / US - want).abs() < 1e-9 * want, "{got} vs {want} µs");
        }
        assert_eq!(
            f.by_bound[0] + f.by_bound[2] + b.by_bound[0] + b.by_bound[2],
            0.0
        );
        assert_us(tl.step_s, 91_131.0);
    }
    // GPU-bound (1 µs issue, 10 µs device): forward 401 µs with one 1 µs wait and 400 µs
    // busy, 40 µs of issue; backward 510 µs busy without a wait, 51 µs of issue.
    for tl in synthetic_step(1.0, 10.0, 0.0, false, 100) {
        let [f, b, _] = tl.phases;
        for (got, want) in [
            (f.time_s, 40_100.0),
            (f.busy_s, 40_000.0),
            (f.host_wait_s, 100.0),
            (f.host_s, 4_000.0),
            (b.time_s, 51_000.0),
            (b.busy_s, 51_000.0),
            (b.host_s, 5_100.0),
        ] {
            assert!((got / US - want).abs() < 1e-9 * want, "{got} vs {want} µs");
        }
        assert_eq!(b.host_wait_s, 0.0);
    }
}

#[test]
fn micro_batches_are_not_replayed_while_a_backlog_drains() {
    // libtorch (no loss-check sync), bare loop, gpt2's structure as in `synthetic_step`:
    // every op 10 µs of issue and 1 µs on the GPU, except the first micro-batch's 51
    // backward ops, 1200 µs each. Ops are issued 10 µs apart (op k at 10·k µs); the heavy
    // ones (ops 41..91) leave a backlog the light ones drain by 9 µs per op: the GPU is at
    // 410 + 61 200 = 61 610 µs after op 91 and catches the host at op k with
    // 61 610 + (k − 92) < 10·k, k ≥ 6836: micro-batch 75. At micro-batch 64 the offset is
    // still changing (by 819 µs per micro-batch), so the replay must wait for the fixed
    // point. 100 micro-batches are 9100 ops + 3 for the optimizer: the last is issued at
    // 91 030 µs and ends at 91 031 µs; the last backward ends at 91 001 µs. Busy:
    // 9052 × 1 + 51 × 1200 = 70 252 µs, so the GPU waits 91 031 − 70 252 = 20 779 µs.
    let m = preset("gpt2").unwrap();
    let spec = MethodSpec::resolve(MethodName::Full, &MethodOptions::default(), &m, true).unwrap();
    let w = Workload {
        grad_accum: 100,
        runtime: Runtime::Libtorch,
        training_loop: TrainingLoop::Bare,
        ..Workload::default()
    };
    let g = build(&m, &spec, &w);
    let light = (10.0, 1.0);
    let heavy = (10.0, 1200.0);
    let three = |n_fwd: usize, n_bwd: usize| {
        [
            seg(&vec![light; n_fwd]),
            seg(&vec![heavy; n_bwd]),
            seg(&vec![light; n_bwd]),
        ]
    };
    let cg = CostedGraph {
        embedding: three(2, 1),
        layers: g.layer_graphs.iter().map(|_| three(3, 4)).collect(),
        head: three(2, 2),
        optimizer: seg(&[light; 3]),
    };
    let hw = resolve_device("a100").unwrap();
    for record in [false, true] {
        let tl = simulate(&g, &cg, &w, &hw, record);
        assert_us(tl.step_s, 91_031.0);
        assert_us(tl.phases[0].time_s + tl.phases[1].time_s, 91_001.0);
        assert_us(tl.phases[2].time_s, 30.0);
        let wait: f64 = tl.phases.iter().map(|p| p.host_wait_s).sum();
        assert_us(wait, 20_779.0);
        let busy: f64 = tl.phases.iter().map(|p| p.busy_s).sum();
        assert_us(busy, 70_252.0);
    }
}

#[test]
fn a_cuda_graph_step_adds_one_graph_launch_per_phase_and_files_each_scope() {
    // CUDA graphs: one graph launch (the profile's Python op cost, set to 24 µs) before the
    // forward, the backward and the optimizer. Host-bound synthetic step (10 µs issue, 1 µs
    // device), no sync: forward op j is issued at 24 + 10·j µs (j = 1..40), backward op j at
    // 48 + 10·j (j = 41..91), optimizer op j at 72 + 10·j (j = 92..94): the step ends at
    // 72 + 941 = 1013 µs. Forward 0 → 425, backward 425 → 959 (534), optimizer 959 → 1013
    // (54).
    let m = preset("gpt2").unwrap();
    let spec = MethodSpec::resolve(MethodName::Full, &MethodOptions::default(), &m, true).unwrap();
    let w = Workload {
        runtime: Runtime::CudaGraph,
        training_loop: TrainingLoop::Bare,
        ..Workload::default()
    };
    let g = build(&m, &spec, &w);
    let op = (10.0, 1.0);
    let three = |n_fwd: usize, n_bwd: usize| {
        [
            seg(&vec![op; n_fwd]),
            seg(&vec![op; n_bwd]),
            seg(&vec![op; n_bwd]),
        ]
    };
    let cg = CostedGraph {
        embedding: three(2, 1),
        layers: g.layer_graphs.iter().map(|_| three(3, 4)).collect(),
        head: three(2, 2),
        optimizer: seg(&[op; 3]),
    };
    let mut hw = resolve_device("a100").unwrap();
    hw.host.python_op_s = 24.0 * US;
    for record in [false, true] {
        let tl = simulate(&g, &cg, &w, &hw, record);
        assert_us(tl.step_s, 1013.0);
        assert_us(tl.phases[0].time_s, 425.0);
        assert_us(tl.phases[1].time_s, 534.0);
        assert_us(tl.phases[2].time_s, 54.0);
        // Per scope: the embedding's forward waits 24 + 10 µs for its first op (2 ops:
        // 34 + 1 + 9 + 1 = 45 µs); each layer's 3 ops and the head's 2 take 10 µs each; the
        // head's backward waits for the graph launch too (24 + 20 µs), each layer's
        // backward 40 µs, the embedding's 10.
        let scope = |s: Scope, p: Phase| {
            tl.scopes
                .iter()
                .find(|(a, b, _)| *a == s && *b == p)
                .map(|t| t.2)
                .unwrap_or_else(|| panic!("{s:?} {p:?}"))
        };
        assert_eq!(tl.scopes.len(), 2 * 14 + 1);
        assert_us(scope(Scope::Embedding, Phase::Forward).time_s, 45.0);
        for i in 0..12 {
            assert_us(scope(Scope::Layer(i), Phase::Forward).time_s, 30.0);
            assert_us(scope(Scope::Layer(i), Phase::Backward).time_s, 40.0);
        }
        assert_us(scope(Scope::Head, Phase::Forward).time_s, 20.0);
        assert_us(scope(Scope::Head, Phase::Backward).time_s, 44.0);
        assert_us(scope(Scope::Embedding, Phase::Backward).time_s, 10.0);
        assert_us(scope(Scope::Optimizer, Phase::Optimizer).time_s, 54.0);
        if record {
            // Host-bound: the GPU waited before every kernel of every scope.
            assert_eq!(tl.host_waited.len(), 2 * 14 + 1);
            for (s, p, flags) in &tl.host_waited {
                assert!(!flags.is_empty() && flags.iter().all(|&f| f), "{s:?} {p:?}");
            }
        }
    }
    // Recording waits keeps the scopes even when they are not asked for.
    let tl = simulate_with(&g, &cg, &w, &hw, true, false);
    assert_eq!(tl.scopes.len(), 2 * 14 + 1);
    let tl = simulate_with(&g, &cg, &w, &hw, false, false);
    assert!(tl.scopes.is_empty());
}

#[test]
fn a_backward_layer_is_observed_by_its_own_span_in_later_micro_batches() {
    // Two micro-batches of the host-bound synthetic step (10 µs issue, 1 µs device), the
    // first micro-batch's two head-backward ops 15 µs on the GPU. Micro-batch 0: the forward
    // ends at 401 µs; head backward ops issued at 410 and 420 run 410 → 425 → 440 (39 µs);
    // layer 11's ops issued at 430, 440, 450, 460 run 440 → 441 → 442, 450 → 451, 460 → 461
    // (21 µs); every lower layer 40 µs, the embedding 10 µs; the sync at 911. Micro-batch 1
    // is all 1 µs ops: head 20, each layer 40, embedding 10 µs (the step ends at 1853 µs).
    // Summed: head 59, layer 11 61, layers 0..=10 80 each, embedding 20 µs. Layers 10..0 of
    // micro-batch 1 are replayed from layer 11's own 40 µs, not from what layer 10 held.
    let m = preset("gpt2").unwrap();
    let spec = MethodSpec::resolve(MethodName::Full, &MethodOptions::default(), &m, true).unwrap();
    // A Trainer whose own work costs nothing: its loss check is the sync at 911.
    let w = Workload {
        grad_accum: 2,
        training_loop: TrainingLoop::Trainer,
        ..Workload::default()
    };
    let g = build(&m, &spec, &w);
    let op = (10.0, 1.0);
    let three = |n_fwd: usize, n_bwd: usize| {
        [
            seg(&vec![op; n_fwd]),
            seg(&vec![op; n_bwd]),
            seg(&vec![op; n_bwd]),
        ]
    };
    let mut head = three(2, 2);
    head[1] = seg(&[(10.0, 15.0); 2]);
    let cg = CostedGraph {
        embedding: three(2, 1),
        layers: g.layer_graphs.iter().map(|_| three(3, 4)).collect(),
        head,
        optimizer: seg(&[op; 3]),
    };
    let mut hw = resolve_device("a100").unwrap();
    no_loop_costs(&mut hw);
    for record in [false, true] {
        let tl = simulate(&g, &cg, &w, &hw, record);
        assert_us(tl.step_s, 1853.0);
        let bwd = |s: Scope| {
            tl.scopes
                .iter()
                .find(|(a, p, _)| *a == s && *p == Phase::Backward)
                .map(|t| t.2.time_s)
                .unwrap()
        };
        assert_us(bwd(Scope::Head), 59.0);
        assert_us(bwd(Scope::Layer(11)), 61.0);
        for i in 0..11 {
            assert_us(bwd(Scope::Layer(i)), 80.0);
        }
        assert_us(bwd(Scope::Embedding), 20.0);
    }
}

/// Under CUDA graphs a segment's launches take the profile's graph-replay floor, under eager
/// PyTorch its launch floor (every built-in profile sets the two equal, so only a profile where
/// they differ tells them apart): one empty elementwise launch costs exactly its floor.
#[test]
fn cost_segment_takes_the_runtimes_launch_floor() {
    let mut hw = resolve_device("h200").unwrap();
    (hw.launch_floor_s, hw.graph_launch_floor_s) = (4.0 * US, 1.5 * US);
    let mut k = Kernel::new_for_test(crate::graph::KernelKind::Elementwise, MathMode::Bf16);
    k.launches = 1;
    let seg = Segment { kernels: vec![k] };
    for (runtime, floor_us) in [
        (Runtime::PytorchEager, 4.0),
        (Runtime::Libtorch, 4.0),
        (Runtime::CudaGraph, 1.5),
    ] {
        let w = Workload {
            runtime,
            ..Workload::default()
        };
        let c = cost_segment(
            &seg,
            Phase::Forward,
            &w,
            &hw,
            &mut GemmMemo::default(),
            true,
        );
        assert_us(c.kernels[0].1.device_s, floor_us);
        assert_us(c.closed.device_s, floor_us);
    }
}

#[test]
fn each_bound_sums_only_its_own_launches() {
    // Compute 3 µs, memory ∞, launch 2 µs, compute 4 µs: the infinite time stays in the memory
    // sum (the others add +0.0 for it, not 0·∞ = NaN), and each sum is its bound's in order.
    let mut c = Closed::EMPTY;
    for (d, b) in [(3.0, 0u8), (f64::INFINITY, 1), (2.0, 2), (4.0, 0)] {
        c.push(0.0, d * US, b);
    }
    assert_us(c.by_bound[0], 7.0);
    assert_eq!(c.by_bound[1], f64::INFINITY);
    assert_us(c.by_bound[2], 2.0);
    assert_eq!(c.by_bound[3].to_bits(), 0.0f64.to_bits());
    assert_eq!(c.device_s, f64::INFINITY);
}

/// A costed segment's every number, as bits (so that a NaN or a −0.0 compares too).
fn segment_bits(s: &CostedSegment) -> Vec<u64> {
    let c = &s.closed;
    let mut v = vec![
        c.host_s.to_bits(),
        c.device_s.to_bits(),
        c.lead_s.to_bits(),
        s.tail_host_s.to_bits(),
        s.totals.0.to_bits(),
        s.totals.1.to_bits(),
        s.totals.2,
    ];
    v.extend(c.by_bound.map(f64::to_bits));
    for &(h, d, b) in &s.fast {
        v.extend([h.to_bits(), d.to_bits(), u64::from(b)]);
    }
    v
}

fn graph_bits(cg: &CostedGraph) -> Vec<u64> {
    let mut segs: Vec<&CostedSegment> = cg.embedding.iter().collect();
    segs.extend(cg.layers.iter().flatten());
    segs.extend(&cg.head);
    segs.push(&cg.optimizer);
    segs.into_iter().flat_map(segment_bits).collect()
}

#[test]
fn classed_costing_equals_costing_every_kernel() {
    // Every preset family, every method, accumulation on and off, the three runtimes, 16-bit
    // and fp32, on a GPU and on both CPUs (one calibrated: GEMM fills, optimizer rates): the
    // classes change nothing, to the bit.
    let mut calibrated = resolve_device("cpu-generic").unwrap();
    calibrated.gemm_fill_rows = Some([4.0, 16.0]);
    calibrated.optimizer_op_s = Some([0.6e-6, 0.7e-6]);
    let rates = vec![(1048576.0, 30e9), (16.0 * 1048576.0, 20e9)];
    calibrated.optimizer_size_rate = Some([rates.clone(), rates]);
    let mut hws: Vec<Profile> = ["h200", "l4", "cpu-generic"]
        .iter()
        .map(|n| resolve_device(n).unwrap())
        .collect();
    hws.push(calibrated);
    let mut classed_fewer = 0;
    for model in ["gpt2", "tinyllama-1.1b"] {
        let m = preset(model).unwrap();
        for method in MethodName::ALL {
            let spec = MethodSpec::resolve(
                method,
                &MethodOptions {
                    rank: Some(8),
                    ..MethodOptions::default()
                },
                &m,
                true,
            )
            .unwrap();
            for (accum, runtime, precision) in [
                (1, Runtime::PytorchEager, Precision::Bf16Mixed),
                (3, Runtime::PytorchEager, Precision::Fp32),
                (2, Runtime::Libtorch, Precision::Bf16Mixed),
                (1, Runtime::CudaGraph, Precision::Fp16Mixed),
            ] {
                let w = Workload {
                    batch: 2,
                    seq: 128,
                    grad_accum: accum,
                    runtime,
                    precision,
                    ..Workload::default()
                };
                let g = build(&m, &spec, &w);
                let classes = cost_classes(&g);
                let kernels: usize = graph_segments(&g).map(|(s, _)| s.kernels.len()).sum();
                assert_eq!(classes.len(), kernels);
                let distinct = classes.iter().max().map_or(0, |&c| c as usize + 1);
                if distinct < kernels {
                    classed_fewer += 1;
                }
                for hw in &hws {
                    let want = cost_graph_memo(&g, &w, hw, &mut GemmMemo::default(), false);
                    let got = cost_graph_classed(&g, &classes, &w, hw, &mut GemmMemo::default());
                    assert_eq!(
                        graph_bits(&got),
                        graph_bits(&want),
                        "{model} {method:?} {w:?} {}",
                        hw.name
                    );
                }
            }
        }
    }
    // Every graph has equal kernels to share (a layer's projections, its backward's adds).
    assert_eq!(classed_fewer, 2 * 5 * 4);
}

#[test]
fn cost_classes_number_first_uses_in_order_and_tell_apart_every_field_costs_read() {
    let hw = resolve_device("h200").unwrap();
    let mut base = Kernel::new_for_test(crate::graph::KernelKind::Gemm, MathMode::Bf16);
    base.gemm = Some(crate::graph::Gemm {
        m: 512,
        n: 64,
        k: 4096,
        batch: 1,
    });
    base.flops = 1e9;
    base.bytes_read = 4e6;
    base.bytes_written = 1e5;
    type Edit = fn(&mut Kernel);
    // What kernel_cost_memo or host_cost reads: each edit makes another class.
    let read: [(&str, Edit); 16] = [
        ("name", |k| k.name = "other"),
        ("name length", |k| k.name = &k.name[..2]),
        ("piece", |k| k.piece = "lora_A"),
        ("kind", |k| k.kind = crate::graph::KernelKind::Reduction),
        ("dtype", |k| k.dtype = crate::workload::DType::F32),
        ("math", |k| k.math = MathMode::Tf32),
        ("launches", |k| k.launches += 1),
        ("flops", |k| k.flops += 1.0),
        ("bytes_read", |k| k.bytes_read += 1.0),
        ("bytes_written", |k| k.bytes_written += 1.0),
        ("gemm", |k| k.gemm.as_mut().unwrap().k += 1),
        ("no gemm", |k| k.gemm = None),
        ("recompute", |k| k.recompute ^= true),
        ("module_calls", |k| k.module_calls += 1),
        ("peft_calls", |k| k.peft_calls += 1),
        ("host_tensors", |k| k.host_tensors += 1),
    ];
    // What neither reads: the same class.
    let unread: [Edit; 2] = [|k| k.module = "other", |k| k.deps.push(0)];
    // The classes of a graph whose only kernels are `kernels`, in a layer's forward or backward.
    let m = preset("gpt2").unwrap();
    let spec = MethodSpec::resolve(MethodName::Full, &MethodOptions::default(), &m, true).unwrap();
    let empty = {
        let mut g = build(&m, &spec, &Workload::default());
        for sc in std::iter::once(&mut g.embedding)
            .chain(&mut g.layer_graphs)
            .chain(std::iter::once(&mut g.head))
        {
            sc.forward.kernels.clear();
            sc.backward.kernels.clear();
            sc.backward_accum.kernels.clear();
        }
        g.optimizer.kernels.clear();
        g
    };
    let classes_of = |kernels: Vec<Kernel>, phases: &[Phase]| {
        let mut g = empty.clone();
        for (k, phase) in kernels.into_iter().zip(phases) {
            let s = &mut g.layer_graphs[0];
            match phase {
                Phase::Forward => s.forward.kernels.push(k),
                _ => s.backward.kernels.push(k),
            }
        }
        cost_classes(&g)
    };
    // `ClassKey::same` (one kernel compared with another without building keys) agrees.
    let same = |a: &Kernel, pa, b: &Kernel, pb| {
        let by_keys = ClassKey::of(a, pa) == ClassKey::of(b, pb);
        assert_eq!(ClassKey::same(a, pa, b, pb), by_keys);
        by_keys
    };
    assert!(same(&base, Phase::Backward, &base.clone(), Phase::Backward));
    assert!(!same(&base, Phase::Forward, &base, Phase::Backward));
    for (what, edit) in read {
        let mut k = base.clone();
        edit(&mut k);
        assert!(!same(&base, Phase::Backward, &k, Phase::Backward), "{what}");
        assert_eq!(
            classes_of(vec![base.clone(), k], &[Phase::Backward, Phase::Backward]),
            [0, 1],
            "{what}"
        );
    }
    // The phase alone (host cost: Python per op in forward, the autograd engine in backward).
    assert_eq!(
        classes_of(
            vec![base.clone(), base.clone()],
            &[Phase::Forward, Phase::Backward]
        ),
        [0, 1]
    );
    let k = base.clone();
    assert_ne!(
        host_cost(&k, Phase::Forward, Runtime::PytorchEager, &hw),
        host_cost(&k, Phase::Backward, Runtime::PytorchEager, &hw)
    );
    for edit in unread {
        let mut k = base.clone();
        edit(&mut k);
        assert!(same(&base, Phase::Backward, &k, Phase::Backward));
        assert_eq!(
            classes_of(vec![base.clone(), k], &[Phase::Backward, Phase::Backward]),
            [0, 0]
        );
    }
}

/// Every time field of two spans, paired: times, waits, host and busy time, and the four bounds.
fn span_fields(a: &Span, b: &Span) -> impl Iterator<Item = (f64, f64)> {
    [
        (a.time_s, b.time_s),
        (a.host_wait_s, b.host_wait_s),
        (a.host_s, b.host_s),
        (a.busy_s, b.busy_s),
    ]
    .into_iter()
    .chain(a.by_bound.into_iter().zip(b.by_bound))
}

#[path = "simulate_closed_tests.rs"]
mod closed;
