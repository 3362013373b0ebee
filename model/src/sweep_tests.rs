//! Tests of sweep.rs: grids against single predictions, streaming, limits, optimizer memo.
use super::*;
use crate::arch::preset;
use crate::predict::{predict, Config, Detail, Prediction};
use costsim_hardware::resolve_device;

/// A point's optimizer phase held in this thread's memo for its key, spec and device count is
/// lent in place (`with_optimizer`): what the point collects stays in the memo's entry, and the
/// byte count is unchanged; another spec or device count under the key gets a fresh phase, kept
/// in its place.
#[test]
fn a_held_optimizer_phase_is_lent_in_place() {
    let model = preset("gpt2").unwrap();
    let w = Workload::default();
    let spec = |r| {
        let opts = MethodOptions {
            rank: Some(r),
            ..MethodOptions::default()
        };
        MethodSpec::resolve(MethodName::Lora, &opts, &model, true).unwrap()
    };
    let key = OptimizerKey {
        run: u64::MAX - 9,
        model: 0,
        method: MethodName::Lora,
        precision: w.precision,
        layers: 0,
        rank: Some(8),
    };
    OPTIMIZERS.with_borrow_mut(|(memo, bytes, saturated)| {
        memo.clear();
        *bytes = 0;
        *saturated = None;
    });
    // (entries, bytes, the entry's costed devices) after each point.
    let state = || {
        OPTIMIZERS.with_borrow(|(memo, bytes, _)| {
            let entries: usize = memo.values().map(optimizer_bytes).sum();
            assert_eq!(*bytes, entries);
            let costed = memo[&key].costed.iter().filter(|c| c.is_some()).count();
            (memo.len(), *bytes, costed)
        })
    };
    let (tensors, _) = graph::optimizer_phase(&model, &spec(8), &w);
    // Not held: built, then kept.
    with_optimizer(key, &model, &spec(8), &w, 2, |p| {
        assert!(p.costed.iter().all(Option::is_none));
        assert_eq!(p.tensors, tensors);
        p.costed[1] = Some(CostedSegment::empty());
    });
    let (n, bytes, costed) = state();
    assert_eq!((n, costed), (1, 1));
    // Held: lent in place, with what the first point collected; what this one adds stays.
    with_optimizer(key, &model, &spec(8), &w, 2, |p| {
        assert!(p.costed[1].is_some());
        p.costed[0] = Some(CostedSegment::empty());
    });
    assert_eq!(state(), (1, bytes, 2));
    // Another spec under the key, then another device count: fresh phases in its place.
    with_optimizer(key, &model, &spec(12), &w, 2, |p| {
        assert!(p.costed.iter().all(Option::is_none));
        assert_ne!(p.tensors, tensors);
    });
    assert_eq!(state().2, 0);
    with_optimizer(key, &model, &spec(12), &w, 3, |p| {
        assert_eq!(p.costed.len(), 3)
    });
    assert_eq!(state().0, 1);
}

/// The per-thread optimizer memo: a phase given back is lent again for its key and spec
/// (with the costs it collected), a different spec under the same key or another device
/// count gets a fresh phase, and the byte count is always the entries' sum. Past its budget it
/// keeps the phases of the stretch it is in (a line's first ranks, hit again at every batch and
/// sequence length) and makes room by dropping other stretches'.
#[test]
fn optimizer_phases_are_lent_and_given_back() {
    let model = preset("gpt2").unwrap();
    let w = Workload::default();
    let spec = |r| {
        let opts = MethodOptions {
            rank: Some(r),
            ..MethodOptions::default()
        };
        MethodSpec::resolve(MethodName::Lora, &opts, &model, true).unwrap()
    };
    let key = |r| OptimizerKey {
        run: u64::MAX - 7,
        model: 0,
        method: MethodName::Lora,
        precision: w.precision,
        layers: 0,
        rank: Some(r),
    };
    let sum = || {
        OPTIMIZERS.with_borrow(|(memo, bytes, _)| {
            let entries: usize = memo.values().map(optimizer_bytes).sum();
            assert_eq!(*bytes, entries);
            assert!(*bytes <= OPTIMIZER_BYTES_PER_THREAD);
            memo.len()
        })
    };
    OPTIMIZERS.with_borrow_mut(|(memo, bytes, saturated)| {
        memo.clear();
        *bytes = 0;
        *saturated = None;
    });
    let (tensors, seg) = graph::optimizer_phase(&model, &spec(8), &w);
    let mut p = take_optimizer(key(8), &model, &spec(8), &w, 2);
    assert_eq!((&p.tensors, &p.seg), (&tensors, &seg));
    assert!(p.costed.iter().all(Option::is_none));
    p.costed[1] = Some(CostedSegment::empty());
    keep_optimizer(key(8), p);
    keep_optimizer(key(16), take_optimizer(key(16), &model, &spec(16), &w, 2));
    assert_eq!(sum(), 2);
    // Lent again, with what it collected; taken out of the memo while lent.
    let p = take_optimizer(key(8), &model, &spec(8), &w, 2);
    assert!(p.costed[1].is_some());
    assert_eq!(sum(), 1);
    keep_optimizer(key(8), p);
    assert_eq!(sum(), 2);
    // Another spec under the same key, or another number of devices: built afresh.
    let other = take_optimizer(key(8), &model, &spec(12), &w, 2);
    assert!(other.costed.iter().all(Option::is_none));
    assert_ne!(other.tensors, tensors);
    keep_optimizer(key(8), other);
    assert_eq!(sum(), 2);
    let p = take_optimizer(key(16), &model, &spec(16), &w, 3);
    assert_eq!(p.costed.len(), 3);
    keep_optimizer(key(16), p);
    assert_eq!(sum(), 2);
    // A phase kept twice under one key replaces the first, counted once.
    keep_optimizer(key(16), take_optimizer(key(17), &model, &spec(17), &w, 2));
    keep_optimizer(key(16), take_optimizer(key(18), &model, &spec(18), &w, 2));
    assert_eq!(sum(), 2);
    // Past the budget: the first ranks of the stretch stay (a line's later ranks are not
    // kept), and a kept one lent and given back stays too; its bytes never exceed the budget.
    let p = take_optimizer(key(8), &model, &spec(8), &w, 2);
    let one = optimizer_bytes(&p);
    keep_optimizer(key(8), p);
    let n = OPTIMIZER_BYTES_PER_THREAD / one + 2;
    for r in 0..n as u64 {
        keep_optimizer(
            key(100 + r),
            take_optimizer(key(100 + r), &model, &spec(8), &w, 2),
        );
        sum();
    }
    let has = |k: OptimizerKey| OPTIMIZERS.with_borrow(|(memo, _, _)| memo.contains_key(&k));
    let full = sum();
    assert!(full < n, "{full} of {n} kept");
    assert!(has(key(100)) && has(key(8)) && !has(key(100 + n as u64 - 1)));
    keep_optimizer(key(100), take_optimizer(key(100), &model, &spec(8), &w, 2));
    assert!(has(key(100)), "a kept phase lent and given back stays");
    assert_eq!(sum(), full);
    // Another stretch (another model) makes room by dropping this one's phases.
    let other = OptimizerKey { model: 1, ..key(8) };
    keep_optimizer(other, take_optimizer(other, &model, &spec(8), &w, 2));
    assert!(has(other) && !has(key(100)));
    assert_eq!(sum(), 1);
    // Filling it again with the first stretch drops the other's phase once full, counting the
    // bytes it drops (`sum` checks them against the entries after every phase given back).
    for r in 0..n as u64 {
        keep_optimizer(
            key(100 + r),
            take_optimizer(key(100 + r), &model, &spec(8), &w, 2),
        );
        sum();
    }
    assert!(!has(other));
    assert_eq!(sum(), full);
    // The line's first ranks, each of them: the one that overflowed with the other's phase
    // still there is kept once that phase has made room.
    assert!((0..full as u64).all(|r| has(key(100 + r))));
}

/// The optimizer memo's estimate of a phase (`optimizer_bytes`) bounds what the phase holds
/// (its lists' capacities, the costs kept on each device, the entry itself) from above, by less
/// than twice: the budget neither overruns nor keeps half the phases it could.
#[test]
fn optimizer_bytes_bound_what_a_phase_holds() {
    // The foreach AdamW: the phase with the most kernels to hold.
    let w = Workload {
        optimizer: crate::workload::Optimizer::AdamwForeach,
        ..Workload::default()
    };
    for (name, r) in [("llama2-7b", 16), ("gpt2", 8)] {
        let model = preset(name).unwrap();
        let opts = MethodOptions {
            rank: Some(r),
            ..MethodOptions::default()
        };
        let spec = MethodSpec::resolve(MethodName::Lora, &opts, &model, true).unwrap();
        let (tensors, seg) = graph::optimizer_phase(&model, &spec, &w);
        let mut p = OptimizerPhase {
            spec,
            tensors,
            seg,
            costed: vec![None; 2],
        };
        for (j, hw) in ["h200", "cpu"].into_iter().enumerate() {
            let hw = resolve_device(hw).unwrap();
            p.costed[j] = Some(crate::simulate::cost_segment(
                &p.seg,
                crate::graph::Phase::Optimizer,
                &w,
                &hw,
                &mut GemmMemo::default(),
                false,
            ));
        }
        let held = p.tensors.capacity() * std::mem::size_of::<u64>()
            + p.seg.kernels.capacity() * std::mem::size_of::<graph::Kernel>()
            + p.costed
                .iter()
                .flatten()
                .map(|c| std::mem::size_of::<Option<CostedSegment>>() + c.heap_bytes())
                .sum::<usize>()
            + std::mem::size_of::<(OptimizerKey, OptimizerPhase)>();
        let est = optimizer_bytes(&p);
        assert!(
            held <= est && est < 2 * held,
            "{name}: holds {held} B, counted {est} B"
        );
    }
}

#[test]
fn axis_lists_and_ranges() {
    assert_eq!(parse_axis("8", "--batch").unwrap(), [8]);
    assert_eq!(parse_axis("1,2, 4", "--batch").unwrap(), [1, 2, 4]);
    assert_eq!(
        parse_axis("128..4096:x2", "--seq").unwrap(),
        [128, 256, 512, 1024, 2048, 4096]
    );
    assert_eq!(
        parse_axis("128..1000:x2", "--seq").unwrap().last(),
        Some(&512)
    );
    assert_eq!(parse_axis("8..32:+8", "--rank").unwrap(), [8, 16, 24, 32]);
    assert_eq!(parse_axis("1..3,8,2", "--batch").unwrap(), [1, 2, 3, 8]);
    for bad in [
        "", "a", "4..2", "1..8:x1", "0..8:x2", "1..8:+0", "1..8:/2", "1..8:xq", "1,,2", "8,", ",8",
    ] {
        let e = parse_axis(bad, "--seq").unwrap_err().to_string();
        assert!(e.contains("--seq"), "{bad}: {e}");
    }
    // A range of one value, and the values-per-axis limit counted from the range itself:
    // (hi − lo) / step + 1 values, exactly 10⁶ allowed, one more refused.
    assert_eq!(parse_axis("4..4", "--batch").unwrap(), [4]);
    assert_eq!(
        parse_axis("1..1999999:+2", "--seq").unwrap().len(),
        1_000_000
    );
    for over in ["1..2000001:+2", "3..2000003:+2"] {
        let e = parse_axis(over, "--seq").unwrap_err().to_string();
        assert!(e.contains("more than 1000000 values"), "{over}: {e}");
    }
    assert_eq!(parse_axis("1..1000000", "--seq").unwrap().len(), 1_000_000);
    assert!(parse_axis("0..1000000", "--seq").is_err());
}

/// An empty grid has no points; the layer-selective PaCA presets keep their own trained
/// layers whatever `--train-layers` gives, while LoRA takes each.
#[test]
fn empty_grids_and_the_presets_own_layers() {
    let mut g = grid();
    assert!(!g.is_empty());
    g.batches.clear();
    assert!(g.is_empty());
    let mut g = grid();
    g.models.truncate(1);
    g.hws.truncate(1);
    g.batches = vec![1];
    g.seqs = vec![256];
    g.ranks = vec![Some(8)];
    g.methods = vec![MethodName::Lora, MethodName::PacaUpperHalf];
    g.train_layers = vec![
        Some(LayerSelection::Upper { fraction: 0.25 }),
        Some(LayerSelection::All),
    ];
    let rows = g.run(&|_| {}).unwrap();
    let got: Vec<(MethodName, &str)> = rows.iter().map(|r| (r.method, &*r.train_layers)).collect();
    // gpt2's 12 layers: upper quarter 9..11, all 0..11; upper half 6..11 once.
    assert_eq!(
        got,
        [
            (MethodName::Lora, "9..11"),
            (MethodName::Lora, "0..11"),
            (MethodName::PacaUpperHalf, "6..11"),
        ]
    );
}

fn grid() -> Grid {
    Grid {
        models: vec![preset("gpt2").unwrap(), preset("llama2-7b").unwrap()],
        hws: vec![
            resolve_device("a100").unwrap(),
            resolve_device("l4").unwrap(),
        ],
        methods: MethodName::ALL.to_vec(),
        batches: vec![1, 8],
        seqs: vec![256, 2048],
        ranks: vec![Some(8), Some(64)],
        train_layers: vec![None],
        precisions: vec![Precision::Bf16Mixed],
        base: Workload::default(),
        options: MethodOptions::default(),
    }
}

#[test]
fn every_point_matches_a_single_prediction() {
    let g = grid();
    let rows = g.run(&|_| {}).unwrap();
    // full: 1 rank; the four others: 2 ranks → 9 method-rank pairs × 2 models × 2 batch ×
    // 2 seq × 2 devices.
    assert_eq!(rows.len() as u64, g.len());
    assert_eq!(rows.len(), 9 * 2 * 2 * 2 * 2);
    let mut checked = 0;
    for r in &rows {
        let model = preset(&r.model).unwrap();
        if r.seq > model.max_positions {
            assert!(matches!(r.status, Status::Invalid(ref m) if m.contains("--seq")));
            assert!(r.step_ms.is_nan());
            continue;
        }
        let p = single_prediction(
            r,
            Workload {
                batch: r.batch,
                seq: r.seq,
                ..Workload::default()
            },
        );
        assert_eq!(p.step_ms, r.step_ms, "{r:?}");
        assert_eq!(p.fits, r.status == Status::Ok);
        checked += 1;
    }
    // gpt2 has 1024 positions: its seq-2048 points are invalid.
    assert_eq!(checked, rows.len() - rows.len() / 4);
}

/// `predict` of a row's point on its own, with `workload`: the row's method at the LoRA
/// reference rank its rank came from (PaCA 2r, upper-half 4r, three-quarters 3r).
/// Whether a row's times, throughput and memory agree with a single prediction's: to 1e-12 of
/// their size, since a rescaled point folds its segments' unchanged kernels once and joins them
/// (`simulate::Piece`): the same sums as the prediction's in another order.
fn rows_agree(got: [f64; 7], want: [f64; 7]) -> bool {
    got.iter()
        .zip(&want)
        .all(|(&a, &b)| crate::predict::agree_to(a, b, 1e-12))
}

fn single_prediction(r: &Row, workload: Workload) -> Prediction {
    let model = preset(&r.model).unwrap();
    let lora_rank = match r.method {
        MethodName::Full => None,
        MethodName::Lora => Some(r.rank),
        MethodName::Paca => Some(r.rank / 2),
        MethodName::PacaUpperHalf => Some(r.rank / 4),
        MethodName::PacaThreeQuarters => Some(r.rank / 3),
    };
    let mut opts = MethodOptions {
        rank: lora_rank,
        ..MethodOptions::default()
    };
    let mut method = MethodSpec::resolve(r.method, &opts, &model, true).unwrap();
    // A row trained on other layers than the method's own (`--train-layers`): those layers.
    let (lo, hi) = method.trained_layers(&model);
    if *r.train_layers != *format!("{lo}..{hi}") {
        let (start, end) = r.train_layers.split_once("..").unwrap();
        opts.layers = Some(LayerSelection::Range {
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        });
        method = MethodSpec::resolve(r.method, &opts, &model, true).unwrap();
    }
    let cfg = Config {
        method,
        model,
        workload,
        hw: resolve_device(&r.hw).unwrap(),
    };
    predict(&cfg, Detail::default(), None)
}

/// Rows of `g` against `predict` of each point on its own: every number exactly equal.
fn assert_rows_equal_predictions(g: &Grid) {
    let rows = g.run(&|_| {}).unwrap();
    assert_eq!(rows.len() as u64, g.len());
    for r in &rows {
        let precision = *g
            .precisions
            .iter()
            .find(|p| p.as_str() == r.precision)
            .unwrap();
        let p = single_prediction(
            r,
            Workload {
                batch: r.batch,
                seq: r.seq,
                precision,
                ..g.base.clone()
            },
        );
        let want = [
            p.step_ms,
            p.forward_ms,
            p.backward_ms,
            p.optimizer_ms,
            p.loop_ms,
            p.tokens_per_s,
            p.peak_memory_bytes / f64::from(1u32 << 30),
        ];
        let got = [
            r.step_ms,
            r.forward_ms,
            r.backward_ms,
            r.optimizer_ms,
            r.loop_ms,
            r.tokens_per_s,
            r.peak_memory_gib,
        ];
        assert!(rows_agree(got, want), "{r:?}: {got:?} vs {want:?}");
        assert_eq!(r.trainable_params, p.trainable_params, "{r:?}");
        assert_eq!(
            r.kernels_per_step,
            u64::from(g.base.grad_accum) * (p.kernels.forward + p.kernels.backward)
                + p.kernels.optimizer
        );
        assert_eq!(r.dominant_bound, Some(p.dominant_bound));
        assert_eq!(r.status == Status::Ok, p.fits);
    }
}

#[test]
fn points_on_many_devices_match_single_predictions() {
    // Five devices, a CPU among them, and two ranks a line (no templates): every point is
    // built in full and costed by classes of equal kernels, found once for the five.
    let mut g = grid();
    g.models = vec![preset("gpt2").unwrap(), preset("tinyllama-1.1b").unwrap()];
    g.hws = ["h200", "a100", "l4", "t4", "cpu-generic"]
        .iter()
        .map(|d| resolve_device(d).unwrap())
        .collect();
    assert!(g.hws.len() >= CLASSED_DEVICES);
    g.batches = vec![2];
    g.seqs = vec![128];
    g.ranks = vec![Some(4), Some(16)];
    let eager = Workload::default();
    for base in [
        eager.clone(),
        Workload {
            precision: Precision::Fp32,
            ..eager.clone()
        },
        Workload {
            grad_accum: 3,
            ..eager.clone()
        },
        Workload {
            runtime: crate::workload::Runtime::Libtorch,
            training_loop: crate::TrainingLoop::Bare,
            ..eager.clone()
        },
        Workload {
            runtime: crate::workload::Runtime::CudaGraph,
            training_loop: crate::TrainingLoop::Bare,
            ..eager
        },
    ] {
        // (The single predictions take the precision from `base`.)
        g.precisions = vec![base.precision];
        g.base = base;
        assert_rows_equal_predictions(&g);
    }
    // Eight ranks a line: the same five devices share rank templates, each device keeping
    // its own kernel costs (gpt2's PaCA lines also cross guards, refits built in full).
    g.models = vec![preset("gpt2").unwrap()];
    g.ranks = (1..=8).map(|r| Some(4 * r)).collect();
    assert!(g.ranks.len() >= MIN_TEMPLATE_RANKS && g.hws.len() <= MAX_TEMPLATE_DEVICES);
    for base in [
        Workload::default(),
        Workload {
            grad_accum: 2,
            ..Workload::default()
        },
    ] {
        g.precisions = vec![base.precision];
        g.base = base;
        assert_rows_equal_predictions(&g);
    }
}

#[test]
fn ranks_past_the_largest_are_invalid_as_a_single_resolve_says() {
    // gpt2's narrowest targeted input is 768 wide: LoRA lines valid to rank 768, PaCA's (twice
    // the LoRA rank under `--method all`) to 384, upper-half PaCA's (4r) to 192. Each line
    // resolves its method once and checks later ranks against the largest
    // (`resolve_line`): every row past it is invalid with `resolve`'s own message, every
    // row up to it equals a single prediction.
    let model = preset("gpt2").unwrap();
    let mut g = grid();
    g.models = vec![model.clone()];
    g.hws = vec![resolve_device("h200").unwrap()];
    g.methods = vec![
        MethodName::Lora,
        MethodName::Paca,
        MethodName::PacaUpperHalf,
    ];
    g.batches = vec![2];
    g.seqs = vec![128];
    g.ranks = (186..=198)
        .chain(378..=390)
        .chain(760..=772)
        .map(Some)
        .collect();
    let rows = g.run(&|_| {}).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for r in &rows {
        let lora_rank = r.rank / r.method.matched_factor();
        let opts = MethodOptions {
            rank: Some(lora_rank),
            ..MethodOptions::default()
        };
        match MethodSpec::resolve(r.method, &opts, &model, true) {
            Ok(_) => {
                assert_eq!(r.status, Status::Ok, "{r:?}");
                let p = single_prediction(
                    r,
                    Workload {
                        batch: r.batch,
                        seq: r.seq,
                        ..Workload::default()
                    },
                );
                assert_eq!(r.trainable_params, p.trainable_params, "{r:?}");
                assert!(
                    crate::predict::agree_to(r.step_ms, p.step_ms, 1e-12),
                    "{r:?}"
                );
                valid += 1;
            }
            Err(e) => {
                assert_eq!(r.status, Status::Invalid(e.to_string()), "{r:?}");
                invalid += 1;
            }
        }
    }
    // Per method, the ranks up to its largest: LoRA 186..=198, 378..=390, 760..=768; PaCA
    // 186..=198, 378..=384; upper-half PaCA 186..=192.
    assert_eq!(valid, (13 + 13 + 9) + (13 + 7) + 7);
    assert_eq!(invalid, rows.len() - valid);
}

#[test]
fn lines_crossing_guards_match_single_predictions() {
    // gpt2's PaCA lines over forty consecutive ranks cross several guards (the gather's
    // min(K, 16·r) at exactly K/16 columns among them, where a probe compares equal): the
    // fits refused around them slide their probes, and every point stays exact.
    let mut g = grid();
    g.models = vec![preset("gpt2").unwrap()];
    g.hws = vec![resolve_device("h200").unwrap()];
    g.methods = vec![
        MethodName::Paca,
        MethodName::PacaUpperHalf,
        MethodName::PacaThreeQuarters,
    ];
    g.batches = vec![4];
    g.seqs = vec![16, 400];
    g.ranks = (1..=40).map(Some).collect();
    assert_rows_equal_predictions(&g);
}

#[test]
fn rescaled_points_match_single_predictions() {
    // Twelve ranks per (batch, seq): from the fourth on, points come from rank templates
    // (gpt2's PaCA variants refuse some past their gather's guard and fit again there).
    let mut g = grid();
    g.models = vec![preset("gpt2").unwrap(), preset("tinyllama-1.1b").unwrap()];
    g.hws.push(resolve_device("cpu").unwrap());
    g.seqs = vec![64, 256];
    g.batches = vec![2];
    g.ranks = (1..=12).map(|r| Some(r * 5)).collect();
    assert_rows_equal_predictions(&g);
}

#[test]
fn lines_derived_from_sequence_templates_match_single_predictions() {
    // Eight sequence lengths a (model, method, precision, batch): after four lines fitted from
    // probes, the others take their rank templates from the sequence template, on one worker
    // thread (so that none of its lines fits on another thread), in bf16 and fp32, with the
    // lower layers frozen or not, on a GPU and the CPU; every row equals `predict` of its point.
    let mut g = grid();
    g.models = vec![preset("gpt2").unwrap(), preset("tinyllama-1.1b").unwrap()];
    g.hws = vec![
        resolve_device("h200").unwrap(),
        resolve_device("cpu").unwrap(),
    ];
    g.batches = vec![3];
    g.seqs = (1..=8).map(|i| 40 * i).collect();
    g.ranks = (1..=7).map(|r| Some(3 * r)).collect();
    g.precisions = vec![Precision::Bf16Mixed, Precision::Fp32];
    g.train_layers = vec![None, Some(LayerSelection::Upper { fraction: 0.5 })];
    g.base.grad_accum = 2;
    assert!(g.seqs.len() >= MIN_SEQ_TEMPLATE_SEQS && g.ranks.len() >= MIN_TEMPLATE_RANKS);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let derived = pool.install(|| {
        assert_rows_equal_predictions(&g);
        DERIVED.with(std::cell::Cell::get)
    });
    // Per (model, ranked method, precision, layers): four of the eight lines are derived (the
    // layer-selective PaCA presets keep their own layers, so they have one selection).
    let keys = 2 * (2 * 2 + 2) * 2;
    assert_eq!(derived, keys * 4);
}

#[test]
fn rows_come_back_in_grid_order_with_progress() {
    let g = grid();
    let done = std::sync::atomic::AtomicU64::new(0);
    let rows = g
        .run(&|n| {
            done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    assert_eq!(done.into_inner(), rows.len() as u64);
    assert_eq!(&*rows[0].hw, "a100-80gb-sxm");
    assert_eq!(&*rows[1].hw, "l4");
    assert_eq!(
        (&*rows[0].model, rows[0].method),
        ("gpt2", MethodName::Full)
    );
    assert_eq!(rows.last().unwrap().method, MethodName::PacaThreeQuarters);
}

#[test]
fn huge_ranges_are_refused_before_they_are_materialised() {
    // Each of these would need gigabytes (or wrap around) if generated first.
    for bad in [
        "0..18446744073709551615",
        "1..18446744073709551615:+1",
        "1..4000000000",
        "1..1000000,1..1000000",
        "5,0..999999",
    ] {
        let e = parse_axis(bad, "--seq").unwrap_err().to_string();
        assert!(
            e.contains("--seq") && e.contains("coarser step"),
            "{bad}: {e}"
        );
    }
    // Exactly the limit is fine; the largest u64 as a value or a geometric end is fine.
    assert_eq!(
        parse_axis("1..1000000", "--seq").unwrap().len() as u64,
        MAX_AXIS_VALUES
    );
    assert_eq!(
        parse_axis("18446744073709551615", "--seq").unwrap(),
        [u64::MAX]
    );
    assert_eq!(
        parse_axis("1..18446744073709551615:x2", "--seq")
            .unwrap()
            .len(),
        64
    );
    assert_eq!(
        parse_axis("18446744073709551610..18446744073709551615:+4", "--seq").unwrap(),
        [u64::MAX - 5, u64::MAX - 1]
    );
}

#[test]
fn a_grid_whose_size_overflows_is_refused_not_wrapped() {
    // 2^22 values on each of three axes and 2^21 ranks × 3 ranked methods...: the product
    // of the axis lengths exceeds 2^64, which plain multiplication would wrap.
    let mut g = grid();
    let big: Vec<u64> = (1..=(1u64 << 20)).collect();
    g.batches = big.clone();
    g.seqs = big.clone();
    g.ranks = big.iter().map(|&r| Some(r)).collect();
    g.train_layers = vec![None; 1 << 10];
    assert_eq!(g.points(), None);
    assert_eq!(g.len(), u64::MAX);
    let e = g.check().unwrap_err().to_string();
    assert!(
        e.contains("more than 2^64 points") && e.contains("split"),
        "{e}"
    );
    // Just over the cap, without overflow: the count is named.
    let mut g = grid();
    g.batches = (1..=1000).collect();
    g.seqs = (1..=1000).collect();
    g.ranks = (1..=1000).map(Some).collect();
    assert_eq!(g.points(), Some(2 * 2 * 1000 * 1000 * (1 + 4 * 1000)));
    let e = g.check().unwrap_err().to_string();
    assert!(e.contains("16004000000 points"), "{e}");
}

#[test]
fn streamed_chunks_are_bounded_and_in_grid_order() {
    // Chunks of at most 37 points, i.e. 18 groups of two devices: the chunks the sink sees
    // are at most that and together are exactly the grid's points in order.
    let mut g = grid();
    g.models = vec![preset("gpt2").unwrap()];
    g.seqs = vec![128, 256, 384];
    g.ranks = (1..=5).map(Some).collect();
    let n = g.len() as usize;
    assert_eq!(n, 2 * (1 + 4 * 5) * 2 * 3);
    let mut chunks = Vec::new();
    let mut streamed = Vec::new();
    g.stream_in(37, &|_| {}, |rows| {
        chunks.push(rows.len());
        streamed.extend(
            rows.iter()
                .map(|r| (r.method, r.batch, r.seq, r.rank, r.hw.clone())),
        );
        Ok::<(), Error>(())
    })
    .unwrap();
    assert_eq!(chunks.len(), n.div_ceil(36), "{chunks:?}");
    assert!(chunks.iter().all(|&c| c == 36 || c == n % 36), "{chunks:?}");
    let mut want = Vec::new();
    for method in MethodName::ALL {
        for &batch in &g.batches {
            for &seq in &g.seqs {
                let ranks: Vec<u64> = if method == MethodName::Full {
                    vec![0]
                } else {
                    g.ranks.iter().map(|r| r.unwrap()).collect()
                };
                for rank in ranks {
                    for hw in &g.hws {
                        want.push((method, batch, seq, rank, Arc::from(hw.name.as_str())));
                    }
                }
            }
        }
    }
    // Resolved ranks of the PaCA variants are the matched counts; compare the LoRA
    // reference rank they came from.
    let reference = |(m, b, s, r, h): (MethodName, u64, u64, u64, Arc<str>)| {
        let r = match m {
            MethodName::Paca => r / 2,
            MethodName::PacaUpperHalf => r / 4,
            MethodName::PacaThreeQuarters => r / 3,
            _ => r,
        };
        (m, b, s, r, h)
    };
    let streamed: Vec<_> = streamed.into_iter().map(reference).collect();
    assert_eq!(streamed, want);
}

#[test]
fn a_sweep_after_others_on_the_same_thread_streams_only_its_own_rows() {
    // The chunk lists' storage is kept from sweep to sweep on a thread (`CHUNK_BUFFERS`): a
    // sweep after a larger one, and after one whose sink failed mid-chunk, streams exactly what
    // it streams on a fresh thread, where nothing was kept.
    let collect = |g: &Grid| {
        let mut out = Vec::new();
        g.stream_in(37, &|_| {}, |rows| {
            out.extend_from_slice(rows);
            Ok::<(), Error>(())
        })
        .unwrap();
        out
    };
    let big = grid();
    let mut small = grid();
    small.models = vec![preset("gpt2").unwrap()];
    small.seqs = vec![128];
    small.ranks = vec![Some(4), Some(16)];
    let on_fresh = {
        let small = small.clone();
        std::thread::spawn(move || collect(&small)).join().unwrap()
    };
    assert_eq!(on_fresh.len(), small.len() as usize);
    assert_eq!(collect(&big).len(), big.len() as usize);
    let stopped = big.stream_in(37, &|_| {}, |_| {
        Err(Error::InvalidArgument {
            what: "sink".into(),
            message: "full".into(),
        })
    });
    assert!(stopped.is_err());
    assert_eq!(collect(&small), on_fresh);
}

#[test]
fn a_failing_sink_stops_the_sweep() {
    let g = grid();
    let mut calls = 0;
    let r = g.stream_in(4, &|_| {}, |_| {
        calls += 1;
        Err(Error::InvalidArgument {
            what: "sink".into(),
            message: "full".into(),
        })
    });
    assert!(r.unwrap_err().to_string().contains("full"));
    assert_eq!(calls, 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// The sweep's path (graphs built per group, rescaled over the rank or derived over the
    /// sequence length, costed on every
    /// device with GEMM memos kept across points, streamed in chunks) gives exactly what `predict` gives for each
    /// point on its own: equal floats, not close ones, since both run the same formulas in
    /// the same order.
    #[test]
    fn sweep_rows_equal_single_predictions(
        model in proptest::sample::select(
            crate::arch::PRESETS.iter().map(|p| p.name).collect::<Vec<_>>()
        ),
        method in proptest::sample::select(MethodName::ALL.to_vec()),
        batches in proptest::collection::vec(1u64..16, 1..3),
        // Up to eight sequence lengths: with six or more (`MIN_SEQ_TEMPLATE_SEQS`), lines after
        // the first four take their rank templates from a sequence template (`rescale_seq`).
        seqs in proptest::collection::vec(16u64..2048, 1..9),
        // Up to eleven ranks: with six or more (`MIN_TEMPLATE_RANKS`), from the fourth on a
        // point is rescaled from the rank template of its first three (`rescale`).
        ranks in proptest::collection::vec(1u64..128, 1..12),
        precision in proptest::sample::select(vec![
            Precision::Bf16Mixed, Precision::Fp32, Precision::Fp16Mixed
        ]),
        accum in 1u32..3,
        // Single-tensor AdamW's memory peak holds its largest tensor's temporaries, so a
        // rescaled point must carry its own optimizer phase into the memory model.
        optimizer in proptest::sample::select(vec![
            crate::workload::Optimizer::AdamwForeach,
            crate::workload::Optimizer::AdamwSingle,
        ]),
    ) {
        let g = Grid {
            models: vec![preset(model).unwrap()],
            hws: vec![
                resolve_device("h200").unwrap(),
                resolve_device("l4").unwrap(),
                resolve_device("cpu").unwrap(),
            ],
            methods: vec![method],
            batches,
            seqs,
            ranks: ranks.into_iter().map(Some).collect(),
            train_layers: vec![None],
            precisions: vec![precision],
            base: Workload { grad_accum: accum, optimizer, ..Workload::default() },
            options: MethodOptions::default(),
        };
        let mut rows = Vec::new();
        g.stream_in(5, &|_| {}, |chunk| {
            rows.extend_from_slice(chunk);
            Ok::<(), Error>(())
        })
        .unwrap();
        proptest::prop_assert_eq!(rows.len() as u64, g.len());
        for r in &rows {
            let model = preset(&r.model).unwrap();
            let workload = Workload {
                batch: r.batch,
                seq: r.seq,
                precision,
                grad_accum: accum,
                optimizer,
                ..Workload::default()
            };
            if workload.validate(&model).is_err() {
                proptest::prop_assert!(matches!(r.status, Status::Invalid(_)));
                continue;
            }
            let p = single_prediction(r, workload);
            let want = [
                p.step_ms, p.forward_ms, p.backward_ms, p.optimizer_ms, p.loop_ms,
                p.tokens_per_s, p.peak_memory_bytes / f64::from(1u32 << 30),
            ];
            let got = [
                r.step_ms, r.forward_ms, r.backward_ms, r.optimizer_ms, r.loop_ms,
                r.tokens_per_s, r.peak_memory_gib,
            ];
            proptest::prop_assert!(rows_agree(got, want), "{:?}: {:?} vs {:?}", r, got, want);
            proptest::prop_assert_eq!(r.trainable_params, p.trainable_params);
            proptest::prop_assert_eq!(
                r.kernels_per_step,
                u64::from(accum) * (p.kernels.forward + p.kernels.backward)
                    + p.kernels.optimizer
            );
            proptest::prop_assert_eq!(r.dominant_bound, Some(p.dominant_bound));
            proptest::prop_assert_eq!(r.status == Status::Ok, p.fits);
        }
    }
}

#[test]
fn oversized_and_empty_grids_are_refused() {
    let mut g = grid();
    g.batches = (1..=100_000).collect();
    g.seqs = (1..=1000).collect();
    assert!(g
        .check()
        .unwrap_err()
        .to_string()
        .contains("narrow a range"));
    let mut g = grid();
    g.methods.clear();
    assert!(g.check().unwrap_err().to_string().contains("--method"));
}
