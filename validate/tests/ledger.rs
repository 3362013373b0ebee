//! The op ledger (`costsim validate --trace --ops`) on the committed CPU traces
//! (docs/results/traces/cpu): each trace's own op rows stand in for a ledger's measurement, so
//! that every row's calls can be checked against costsim's kernels. The traces come from
//! PyTorch, not costsim: a kernel costsim names differently from the op aten runs, or files
//! under another row, fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use costsim_validate::ledger::{sum_ledgers, Ledger, LedgerPhaseRec, OpTime, OpTimes};
use costsim_validate::trace::{compare_trace, read_trace, Trace};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A ledger record built from the trace's op rows: each call takes 1 µs, and each phase's plain
/// time is the ops' time plus 1 ms.
fn with_ledger(mut t: Trace) -> Trace {
    let phase = |name: &str| {
        let mut ops: BTreeMap<String, OpTime> = BTreeMap::new();
        for r in t.ops.iter().filter(|r| r.phase == name) {
            let e = ops
                .entry(r.op.clone())
                .or_insert(OpTime { calls: 0, us: 0.0 });
            e.calls += r.calls;
            e.us += r.calls as f64;
        }
        let op_us: f64 = ops.values().map(|o| o.us).sum();
        LedgerPhaseRec {
            plain_s: Some(op_us / 1e6 + 1e-3),
            wall_s: 0.0,
            op_us,
            ops,
        }
    };
    t.op_times = Some(OpTimes {
        steps: 1,
        forward: phase("forward"),
        backward: phase("backward"),
        optimizer: phase("optimizer"),
    });
    t
}

#[test]
fn every_kernel_row_meets_the_ops_aten_runs() {
    let hw = costsim_hardware::resolve_device("cpu").expect("built-in cpu profile");
    let dir = root().join("docs/results/traces/cpu");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("traces")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{} traces", files.len());
    let mut wrong = Vec::new();
    let mut ledgers: Vec<Ledger> = Vec::new();
    for f in &files {
        let t = read_trace(f).expect("trace");
        assert!(t.timings.is_none() || t.op_times.is_none());
        let mut t = with_ledger(t);
        if t.timings.is_none() {
            // The ledger needs timings only for records without plain_s; give none to check that
            // plain_s is what is used.
            t.timings = serde_json::from_str(
                r#"{"forward":{"median_s":9,"min_s":9},"backward":{"median_s":9,"min_s":9},
                    "optimizer":{"median_s":9,"min_s":9},"reps":1}"#,
            )
            .ok();
        }
        let c = compare_trace(&t, &f.display().to_string(), Some(&hw)).expect("comparison");
        let l = c
            .ledger
            .expect("a ledger for a trace with op_times and a profile");
        ledgers.push(l.clone());
        for ph in &l.phases {
            // costsim's kernels take time, and on a CPU (host and device on one thread) no more
            // than the phase it predicts.
            if ph.phase != "optimizer" {
                assert!(ph.ops_ms.predicted > 0.0, "{} {}", c.name, ph.phase);
            }
            assert!(ph.above_ms.predicted >= 0.0, "{} {}", c.name, ph.phase);
            // The split adds up on both sides.
            let rows_p: f64 = ph.rows.iter().map(|r| r.time_ms.predicted).sum();
            let rows_t: f64 = ph.rows.iter().map(|r| r.time_ms.traced).sum();
            assert!((rows_p - ph.ops_ms.predicted).abs() < 1e-9, "{}", c.name);
            assert!((rows_t - ph.ops_ms.traced).abs() < 1e-9, "{}", c.name);
            assert!((ph.ops_ms.traced + ph.above_ms.traced - ph.total_ms.traced).abs() < 1e-9);
            assert!(
                (ph.above_ms.traced - 1.0).abs() < 1e-9,
                "plain_s, not timings"
            );
            assert!(
                (ph.ops_ms.predicted + ph.above_ms.predicted - ph.total_ms.predicted).abs() < 1e-9
            );
            for r in &ph.rows {
                if r.op.starts_with("(no kernel") {
                    assert_eq!(r.calls.predicted, 0.0, "{} {}", c.name, ph.phase);
                    continue;
                }
                // `_record_function` marks and foreach ops aside (the optimizer's row counts differ
                // by design: costsim's `_foreach_add_` of the steps is a row of its own).
                if r.calls.predicted != r.calls.traced && ph.phase != "optimizer" {
                    wrong.push(format!(
                        "{} {} {}: costsim {} aten {}",
                        c.name, ph.phase, r.op, r.calls.predicted, r.calls.traced
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Summed over the traces, each phase's split and each row are the sums of the traces'.
    let sum = sum_ledgers(&ledgers).expect("a sum");
    assert_eq!(sum.phases.len(), 3);
    for (i, ph) in sum.phases.iter().enumerate() {
        let each = |f: &dyn Fn(&Ledger) -> f64| ledgers.iter().map(f).sum::<f64>();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.abs().max(1.0);
        assert!(close(
            ph.total_ms.predicted,
            each(&|l| l.phases[i].total_ms.predicted)
        ));
        assert!(close(
            ph.total_ms.traced,
            each(&|l| l.phases[i].total_ms.traced)
        ));
        assert!(close(
            ph.ops_ms.predicted,
            each(&|l| l.phases[i].ops_ms.predicted)
        ));
        assert!(close(
            ph.ops_ms.traced,
            each(&|l| l.phases[i].ops_ms.traced)
        ));
        assert!(close(
            ph.above_ms.traced,
            each(&|l| l.phases[i].above_ms.traced)
        ));
        for r in &ph.rows {
            let row = |f: &dyn Fn(&costsim_validate::ledger::LedgerRow) -> f64| {
                each(&|l| {
                    l.phases[i]
                        .rows
                        .iter()
                        .filter(|x| x.op == r.op)
                        .map(f)
                        .sum()
                })
            };
            assert_eq!(
                r.calls.traced,
                row(&|x| x.calls.traced),
                "{} {}",
                ph.phase,
                r.op
            );
            assert_eq!(r.calls.predicted, row(&|x| x.calls.predicted));
            assert!(close(r.time_ms.predicted, row(&|x| x.time_ms.predicted)));
            // Each call took 1 µs.
            assert!(close(r.time_ms.traced, r.calls.traced / 1e3), "{}", r.op);
            assert!(r.time_ms.predicted >= 0.0, "{}", r.op);
        }
        let rows: f64 = ph.rows.iter().map(|r| r.time_ms.traced).sum();
        assert!(close(rows, ph.ops_ms.traced));
    }
}

/// A GPU trace's kernel ledger: the profiler's device time per aten op (`--profile-kernels`)
/// stands in for the op times. Built here from each committed CPU trace's op rows (2 µs per
/// kernel, `aten::` names as the profiler gives them) and predicted on the H200 profile: the
/// ledger comes from that source, its rows meet costsim's kernels call for call as the op
/// ledger's do, ops that launch nothing carry no time, and a profile without device times gives
/// no ledger.
#[test]
fn a_profiled_gpu_trace_gives_a_kernel_ledger() {
    use costsim_validate::trace::{ProfiledOp, ProfiledPhase};
    let hw = costsim_hardware::resolve_device("h200").expect("built-in h200 profile");
    for name in ["llama-lora-all-d01-fp32.json", "gpt2-paca-bf16.json"] {
        let f = root().join("docs/results/traces/cpu").join(name);
        let mut t = read_trace(&f).expect("trace");
        let mut prof = BTreeMap::new();
        for ph in ["forward", "backward", "optimizer"] {
            let mut by_op: BTreeMap<String, ProfiledOp> = BTreeMap::new();
            for r in t.ops.iter().filter(|r| r.phase == ph) {
                let e = by_op
                    .entry(format!("aten::{}", r.op))
                    .or_insert(ProfiledOp {
                        calls: 0,
                        kernels: 0,
                        device_us: Some(0.0),
                        self_cpu_us: None,
                    });
                e.calls += r.calls;
                e.kernels += r.launches;
                e.device_us = e.device_us.map(|us| us + 2.0 * r.launches as f64);
            }
            prof.insert(ph.to_string(), ProfiledPhase { by_op });
        }
        t.cuda_kernels = Some(prof.clone());
        t.timings = serde_json::from_str(
            r#"{"forward":{"median_s":0.5,"min_s":0.5},"backward":{"median_s":0.5,"min_s":0.5},
                "optimizer":{"median_s":0.5,"min_s":0.5},"reps":1}"#,
        )
        .ok();
        let c = compare_trace(&t, name, Some(&hw)).expect("comparison");
        let l = c.ledger.expect("a kernel ledger");
        assert!(l.source.starts_with("kernel ledger"), "{}", l.source);
        // Each row's L2 bound is part of its predicted time, and the report takes it off on
        // a GPU. These tiny steps are launch-bound on an H200 (no bound anywhere), so on a
        // device with a thousandth of its DRAM bandwidth: in forward, LoRA's lora_A (and PaCA's
        // gather) read an output written just before (a dropout or a norm), well within its
        // 50 MiB L2, and are now memory-bound, so some bound is there.
        let mut slow = hw.clone();
        slow.bandwidth_bps /= 1000.0;
        let l = compare_trace(&t, name, Some(&slow))
            .expect("comparison")
            .ledger
            .expect("a kernel ledger");
        for ph in &l.phases {
            for r in &ph.rows {
                assert!(
                    r.l2_bound_ms >= 0.0 && r.l2_bound_ms <= r.time_ms.predicted + 1e-12,
                    "{name} {} {}: {} of {}",
                    ph.phase,
                    r.op,
                    r.l2_bound_ms,
                    r.time_ms.predicted
                );
            }
        }
        let fwd_l2: f64 = l.phases[0].rows.iter().map(|r| r.l2_bound_ms).sum();
        assert!(fwd_l2 > 0.0, "{name}: no forward re-read priced");
        let text = costsim_validate::ledger::render_ledger("t", &l, 0.0);
        let mm = l.phases[0]
            .rows
            .iter()
            .find(|r| r.op == "mm")
            .expect("an mm row");
        assert!(
            text.contains(&format!(
                "with L2 re-reads free {:>8.3}",
                mm.time_ms.predicted - mm.l2_bound_ms
            )),
            "{text}"
        );
        for ph in &l.phases {
            let kernels: u64 = prof[ph.phase].by_op.values().map(|o| o.kernels).sum();
            assert!((ph.ops_ms.traced - 2e-3 * kernels as f64).abs() < 1e-9);
            assert!((ph.ops_ms.traced + ph.above_ms.traced - 500.0).abs() < 1e-9);
            for r in &ph.rows {
                if r.op.starts_with("(no kernel") {
                    assert_eq!(r.time_ms.traced, 0.0, "{name} {}", ph.phase);
                } else if ph.phase != "optimizer" {
                    assert_eq!(
                        r.calls.predicted, r.calls.traced,
                        "{name} {} {}",
                        ph.phase, r.op
                    );
                }
            }
        }
        // Without device times (traces profiled before they were recorded): no ledger.
        for p in prof.values_mut() {
            for o in p.by_op.values_mut() {
                o.device_us = None;
            }
        }
        t.cuda_kernels = Some(prof);
        let c = compare_trace(&t, name, Some(&hw)).expect("comparison");
        assert!(c.ledger.is_none());
    }
}
