//! The op ledger: where a timed phase's time goes, op by op, on the real stack and in costsim.
//!
//! `scripts/trace/trace_step.py --op-times N` (CPU) runs N more steps under a TorchDispatchMode
//! that times every aten op's own call — below autograd and autocast: the dispatcher's lower
//! keys, the allocation, the kernel — and records, per phase and op name, its calls and µs per
//! step (the median over the N steps). A phase's plain wall time (`--time-reps`, no mode) then
//! splits into
//!
//! ```text
//! measured phase = Σ op times + above the ops (Python, nn.Module code, peft, autograd's
//!                  recording in forward and its engine in backward, the optimizer's loops)
//! ```
//!
//! and costsim's prediction of the phase (a CPU runs host and device work on one thread, so they
//! add) into
//!
//! ```text
//! predicted phase = Σ kernel device time + host time (python-op, module-call, autograd-node,
//!                   optimizer-tensor charges)
//! ```
//!
//! The two are compared op by op after naming both sides alike ([`ledger_op`]): costsim's `mm_dX`
//! and `mm_dW` are the trace's `mm`, `to_copy` is `_to_copy`, SDPA's CPU flash kernels are `sdpa`,
//! and ops that launch nothing (views, metadata, scalar reads) fold into one row that costsim
//! prices at zero device time (its host per-op costs carry them).
//!
//! What the ledger cannot tell: the mode's own Python work between ops (about 10 µs an op on
//! this CPU) may cool the caches an op sees, so op times under the ledger can read high and the
//! "above the ops" remainder low; the remainder is taken against the plain steps, not the
//! ledger's. On a GPU an op's call returns before its kernel runs, so the script refuses
//! `--op-times` there.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use costsim_model::graph::Phase;
use costsim_model::predict::Prediction;
use serde::{Deserialize, Serialize};

use crate::trace::{pct, Pair, Trace};

/// The op ledger of a trace as the tracer writes it (`op_times`).
#[derive(Debug, Clone, Deserialize)]
pub struct OpTimes {
    /// Steps timed op by op.
    pub steps: u32,
    pub forward: LedgerPhaseRec,
    pub backward: LedgerPhaseRec,
    pub optimizer: LedgerPhaseRec,
}

/// One phase of the recorded ledger.
#[derive(Debug, Clone, Deserialize)]
pub struct LedgerPhaseRec {
    /// Median wall time of the plain steps run alternately with the ledger's, s (absent in the
    /// first records, whose plain time is the trace's `timings`).
    #[serde(default)]
    pub plain_s: Option<f64>,
    /// Median wall time of the phase with the ledger's mode on (its overhead included), s.
    pub wall_s: f64,
    /// Σ of the ops' median µs per step.
    pub op_us: f64,
    /// Per aten op name (no overload): calls and µs per step.
    pub ops: BTreeMap<String, OpTime>,
}

/// One aten op name in one phase, per step.
#[derive(Debug, Clone, Deserialize)]
pub struct OpTime {
    pub calls: u64,
    pub us: f64,
}

impl OpTimes {
    fn phase(&self, name: &str) -> Option<&LedgerPhaseRec> {
        match name {
            "forward" => Some(&self.forward),
            "backward" => Some(&self.backward),
            "optimizer" => Some(&self.optimizer),
            _ => None,
        }
    }
}

/// Ops that launch nothing: views, metadata, scalar reads, profiler marks.
const NO_KERNEL: [&str; 17] = [
    "view",
    "_unsafe_view",
    "t",
    "transpose",
    "unsqueeze",
    "squeeze",
    "expand",
    "alias",
    "detach",
    "slice",
    "select",
    "lift_fresh",
    "_local_scalar_dense",
    "as_strided",
    "permute",
    "reshape",
    "split",
];

/// The row of the ops that launch no kernel.
const NO_KERNEL_ROW: &str = "(no kernel: views, metadata)";

/// The row an op is filed under, for an aten op name (the trace's side) and a costsim kernel
/// name alike.
pub fn ledger_op(name: &str) -> String {
    let n = name.trim_start_matches("aten::");
    if NO_KERNEL.contains(&n)
        || n.starts_with("profiler::")
        || n.starts_with("_record_function")
        || n.starts_with("view/")
    {
        return NO_KERNEL_ROW.into();
    }
    if n.contains("scaled_dot_product") {
        return if n.ends_with("_backward") {
            "sdpa_backward"
        } else {
            "sdpa"
        }
        .into();
    }
    if let Some(base) = n.strip_suffix("(state_steps)") {
        return base.into();
    }
    match n {
        "mm_dX" | "mm_dW" | "mm_dP" => "mm",
        "bmm_dX" | "bmm_dW" => "bmm",
        "to_copy" | "to_copy_backward" => "_to_copy",
        "log_softmax" => "_log_softmax",
        "log_softmax_backward_data" => "_log_softmax_backward_data",
        "softmax" => "_softmax",
        "softmax_backward_data" => "_softmax_backward_data",
        "dropout_backward" => "native_dropout_backward",
        // A parameter's second gradient is added into the first; the loss's seed gradient.
        "accumulate_grad" => "add",
        "fill_" => "ones_like",
        // PaCA's gather of x[..., idx]: costsim's index_select, aten's advanced indexing.
        "index_select" => "index",
        // The loss's shifted logits made contiguous; and the tracer's name for a gradient
        // copied back through a view that needs a copy (`backward_name`'s fallback): both run
        // as aten's clone (checked on every committed CPU trace, validate/tests/ledger.rs).
        "slice_copy" | "backward" => "clone",
        "mul_backward" => "mul",
        "mean_backward" => "div",
        other => other,
    }
    .into()
}

/// The row of one of costsim's kernels: [`ledger_op`] of its name, with a batched GEMM's
/// gradients (named `mm_dX`, `mm_dW` like any GEMM's, with a batch in their shape) filed as
/// `bmm`, as aten runs them.
fn kernel_op(k: &costsim_model::predict::KernelRow) -> String {
    let batched = k
        .shape
        .as_deref()
        .is_some_and(|s| s.split('x').count() == 4);
    if k.kind == costsim_model::graph::KernelKind::Gemm && batched && k.name.starts_with("mm") {
        return "bmm".into();
    }
    ledger_op(k.name)
}

/// One row of a phase: an op (or a folded group) on both sides.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerRow {
    pub op: String,
    /// costsim's launching kernels against the trace's calls per step.
    pub calls: Pair,
    /// ms per step: costsim's device time against the ops' own time.
    pub time_ms: Pair,
    /// ms per step of costsim's device time that its kernels' re-reads of recent outputs cost
    /// at DRAM price (`costsim_model::l2`): the most L2 hits could take off `time_ms.predicted`.
    pub l2_bound_ms: f64,
}

/// One phase of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerPhase {
    pub phase: &'static str,
    /// The whole phase, ms: costsim's prediction against the plain steps' median.
    pub total_ms: Pair,
    /// Σ over ops, ms: costsim's device time against the ops' own time.
    pub ops_ms: Pair,
    /// The rest, ms: costsim's host time against the plain phase minus the ops.
    pub above_ms: Pair,
    pub rows: Vec<LedgerRow>,
}

/// The op ledger of one timed trace against a prediction of it.
#[derive(Debug, Clone, Serialize)]
pub struct Ledger {
    pub steps: u32,
    /// What measured it: "op ledger" (CPU op times) or the profiler's kernel ledger (GPU).
    pub source: &'static str,
    pub phases: Vec<LedgerPhase>,
}

/// The source of a CPU trace's ledger (op wall times).
pub const OP_LEDGER: &str = "op ledger";

const PHASES: [(Phase, &str); 3] = [
    (Phase::Forward, "forward"),
    (Phase::Backward, "backward"),
    (Phase::Optimizer, "optimizer"),
];

/// One phase as measured: its plain time, ms, and per aten op its calls and µs a step.
struct Measured {
    plain_ms: f64,
    ops: Vec<(String, f64, f64)>,
}

/// The measured side of a trace's ledger: the op ledger of a CPU trace (`op_times`), else the
/// profiler's kernel time per aten op of a GPU trace (`cuda_kernels` with `device_us`), whose
/// ops that launch no kernel (`aten::linear`, views) file under the no-kernel row with no time.
fn measured(t: &Trace) -> Option<(u32, &'static str, Vec<Measured>)> {
    let tm = t.timings.as_ref()?;
    if let Some(ot) = &t.op_times {
        let mut out = Vec::new();
        for (_, name) in PHASES {
            let rec = ot.phase(name)?;
            out.push(Measured {
                plain_ms: rec.plain_s.unwrap_or(tm.get(name)?.median_s) * 1e3,
                ops: rec
                    .ops
                    .iter()
                    .map(|(op, o)| (op.clone(), o.calls as f64, o.us))
                    .collect(),
            });
        }
        return Some((ot.steps, OP_LEDGER, out));
    }
    let prof = t.cuda_kernels.as_ref()?;
    let mut out = Vec::new();
    for (_, name) in PHASES {
        let ph = prof.get(name)?;
        let mut ops = Vec::new();
        for (op, o) in &ph.by_op {
            let us = match (o.kernels, o.device_us) {
                (0, _) => 0.0,
                (_, Some(us)) => us,
                // A profile without device times (older traces) gives no ledger.
                (_, None) => return None,
            };
            let row = if o.kernels == 0 { NO_KERNEL_ROW } else { op };
            ops.push((row.to_string(), o.calls as f64, us));
        }
        out.push(Measured {
            plain_ms: tm.get(name)?.median_s * 1e3,
            ops,
        });
    }
    Some((1, "kernel ledger (torch.profiler's device time)", out))
}

/// The ledger of a timed trace against `p`, a prediction of the same configuration with kernel
/// rows: from its op ledger (`op_times`, CPU; the phase's measured time that of the plain steps
/// run alternately with the ledger's, or the trace's `timings` in records without them), else
/// from the profiler's device time per op (`--profile-kernels` on a GPU: then "above the ops" is
/// the time the phase's kernels leave the device idle, against costsim's host wait and host
/// work). `None` when the trace has neither, or no `timings`.
pub fn ledger(p: &Prediction, t: &Trace) -> Option<Ledger> {
    let (steps, source, measured) = measured(t)?;
    let mut phases = Vec::new();
    for ((phase, name), m) in PHASES.into_iter().zip(measured) {
        let predicted_ms = match phase {
            Phase::Forward => p.forward_ms,
            Phase::Backward => p.backward_ms,
            Phase::Optimizer => p.optimizer_ms,
        };
        // (calls, ms, L2 bound ms) per row: costsim's, then the trace's (calls, ms).
        let mut acc: BTreeMap<String, ([f64; 3], [f64; 2])> = BTreeMap::new();
        for k in p.kernel_rows.iter().flatten().filter(|k| k.phase == phase) {
            let e = &mut acc.entry(kernel_op(k)).or_default().0;
            e[0] += f64::from(u8::from(k.launches > 0));
            e[1] += k.device_us / 1e3;
            e[2] += k.l2_bound_us / 1e3;
        }
        for (op, calls, us) in &m.ops {
            let e = &mut acc.entry(ledger_op(op)).or_default().1;
            e[0] += calls;
            e[1] += us / 1e3;
        }
        let device_ms: f64 = acc.values().map(|(c, _)| c[1]).sum();
        let op_ms: f64 = m.ops.iter().map(|(_, _, us)| us / 1e3).sum();
        let mut rows: Vec<LedgerRow> = acc
            .into_iter()
            .map(|(op, (c, m))| LedgerRow {
                op,
                calls: Pair {
                    predicted: c[0],
                    traced: m[0],
                },
                time_ms: Pair {
                    predicted: c[1],
                    traced: m[1],
                },
                l2_bound_ms: c[2],
            })
            .collect();
        let size = |r: &LedgerRow| r.time_ms.predicted.max(r.time_ms.traced);
        rows.sort_by(|a, b| size(b).total_cmp(&size(a)).then(a.op.cmp(&b.op)));
        phases.push(LedgerPhase {
            phase: name,
            total_ms: Pair {
                predicted: predicted_ms,
                traced: m.plain_ms,
            },
            ops_ms: Pair {
                predicted: device_ms,
                traced: op_ms,
            },
            above_ms: Pair {
                predicted: predicted_ms - device_ms,
                traced: m.plain_ms - op_ms,
            },
            rows,
        });
    }
    Some(Ledger {
        steps,
        source,
        phases,
    })
}

/// The ledgers summed per source, in the order each source first appears: (how many were
/// summed, their sum). A CPU op ledger (op wall times, the host above them) and a GPU kernel
/// ledger (device times, the idle device) measure different things, so a folder holding both
/// gets one sum of each rather than one sum titled with whichever came first.
pub fn sum_by_source<'a>(ls: impl IntoIterator<Item = &'a Ledger>) -> Vec<(usize, Ledger)> {
    let mut groups: Vec<(&'static str, Vec<&'a Ledger>)> = Vec::new();
    for l in ls {
        match groups.iter_mut().find(|(src, _)| *src == l.source) {
            Some((_, g)) => g.push(l),
            None => groups.push((l.source, vec![l])),
        }
    }
    groups
        .into_iter()
        .filter_map(|(_, g)| Some((g.len(), sum_ledgers(g)?)))
        .collect()
}

/// Several ledgers of one source summed row by row (phases, rows and the splits alike): where a
/// whole grid's time goes. `None` for no ledgers. The sum keeps the first ledger's `source`:
/// give it ledgers of one source ([`sum_by_source`] groups them).
pub fn sum_ledgers<'a>(ls: impl IntoIterator<Item = &'a Ledger>) -> Option<Ledger> {
    let add = |a: &mut Pair, b: &Pair| {
        a.predicted += b.predicted;
        a.traced += b.traced;
    };
    let mut out: Option<Ledger> = None;
    for l in ls {
        let Some(acc) = out.as_mut() else {
            out = Some(l.clone());
            continue;
        };
        acc.steps = acc.steps.min(l.steps);
        for (a, b) in acc.phases.iter_mut().zip(&l.phases) {
            add(&mut a.total_ms, &b.total_ms);
            add(&mut a.ops_ms, &b.ops_ms);
            add(&mut a.above_ms, &b.above_ms);
            for r in &b.rows {
                match a.rows.iter_mut().find(|x| x.op == r.op) {
                    Some(x) => {
                        add(&mut x.calls, &r.calls);
                        add(&mut x.time_ms, &r.time_ms);
                        x.l2_bound_ms += r.l2_bound_ms;
                    }
                    None => a.rows.push(r.clone()),
                }
            }
        }
    }
    if let Some(acc) = out.as_mut() {
        for ph in &mut acc.phases {
            let size = |r: &LedgerRow| r.time_ms.predicted.max(r.time_ms.traced);
            ph.rows
                .sort_by(|a, b| size(b).total_cmp(&size(a)).then(a.op.cmp(&b.op)));
        }
    }
    out
}

/// A text ledger: a title line, then per phase the split of the phase and the rows that hold at
/// least `min_share` of the phase on either side (the others summed into one row).
pub fn render_ledger(title: &str, l: &Ledger, min_share: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n{title}");
    for ph in &l.phases {
        let _ = writeln!(
            s,
            "{:<9} phase {:>8.2} / {:>8.2} {:>7}   ops {:>8.2} / {:>8.2} {:>+8.2}   above the ops {:>7.2} / {:>7.2} {:>+7.2}",
            ph.phase,
            ph.total_ms.predicted,
            ph.total_ms.traced,
            pct(ph.total_ms.error()),
            ph.ops_ms.predicted,
            ph.ops_ms.traced,
            ph.ops_ms.predicted - ph.ops_ms.traced,
            ph.above_ms.predicted,
            ph.above_ms.traced,
            ph.above_ms.predicted - ph.above_ms.traced,
        );
        let floor = min_share * ph.total_ms.traced.max(ph.total_ms.predicted);
        let (mut rest, mut n) = (
            LedgerRow {
                op: String::new(),
                calls: Pair {
                    predicted: 0.0,
                    traced: 0.0,
                },
                time_ms: Pair {
                    predicted: 0.0,
                    traced: 0.0,
                },
                l2_bound_ms: 0.0,
            },
            0,
        );
        // On a GPU, each row also gives costsim's time with its L2 bound taken off: where the
        // measured time sits between the two, re-reads from L2 are the candidate cause.
        let l2 = l.source != OP_LEDGER;
        for r in &ph.rows {
            if r.time_ms.predicted.max(r.time_ms.traced) >= floor {
                row(&mut s, &r.op, r, l2);
            } else {
                n += 1;
                rest.calls.predicted += r.calls.predicted;
                rest.calls.traced += r.calls.traced;
                rest.time_ms.predicted += r.time_ms.predicted;
                rest.time_ms.traced += r.time_ms.traced;
                rest.l2_bound_ms += r.l2_bound_ms;
            }
        }
        if n > 0 {
            row(&mut s, &format!("({n} smaller rows)"), &rest, l2);
        }
    }
    s
}

fn row(s: &mut String, op: &str, r: &LedgerRow, l2: bool) {
    let _ = write!(
        s,
        "  {:<32} calls {:>5}/{:<5} {:>8.3} / {:>8.3} {:>+8.3}",
        op,
        r.calls.predicted,
        r.calls.traced,
        r.time_ms.predicted,
        r.time_ms.traced,
        r.time_ms.predicted - r.time_ms.traced
    );
    if l2 {
        let _ = write!(
            s,
            "   with L2 re-reads free {:>8.3}",
            r.time_ms.predicted - r.l2_bound_ms
        );
    }
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_are_named_alike() {
        // costsim's kernel names and the trace's aten names land on one row.
        for (costsim, aten) in [
            ("mm_dX", "mm"),
            ("mm_dW", "mm"),
            ("to_copy", "_to_copy"),
            ("to_copy_backward", "_to_copy"),
            (
                "scaled_dot_product_attention",
                "_scaled_dot_product_flash_attention_for_cpu",
            ),
            (
                "scaled_dot_product_attention_backward",
                "_scaled_dot_product_flash_attention_for_cpu_backward",
            ),
            ("dropout_backward", "native_dropout_backward"),
            ("log_softmax", "_log_softmax"),
            ("_foreach_add_(state_steps)", "_foreach_add_"),
            ("view/transpose", "transpose"),
            ("reshape", "_unsafe_view"),
            ("split", "view"),
            ("accumulate_grad", "add"),
            ("fill_", "ones_like"),
            ("index_select", "index"),
            ("slice_copy", "clone"),
            ("backward", "clone"),
        ] {
            assert_eq!(ledger_op(costsim), ledger_op(aten), "{costsim} vs {aten}");
        }
        // Distinct ops stay apart.
        assert_ne!(ledger_op("mm"), ledger_op("bmm"));
        assert_ne!(ledger_op("sdpa"), ledger_op("sdpa_backward"));
        assert_ne!(ledger_op("mul"), ledger_op("add"));
        assert_eq!(ledger_op("aten::silu"), "silu");
        for mark in [
            "profiler::_record_function_enter_new",
            "_record_function_exit",
        ] {
            assert_eq!(ledger_op(mark), ledger_op("view"), "{mark}");
        }
    }

    fn pair(predicted: f64, traced: f64) -> Pair {
        Pair { predicted, traced }
    }

    fn row(op: &str, calls: (f64, f64), ms: (f64, f64)) -> LedgerRow {
        LedgerRow {
            op: op.into(),
            calls: pair(calls.0, calls.1),
            time_ms: pair(ms.0, ms.1),
            l2_bound_ms: 0.0,
        }
    }

    /// One phase (forward) with rows given largest first.
    fn one_phase(steps: u32, rows: Vec<LedgerRow>, above: (f64, f64)) -> Ledger {
        let ops = rows.iter().fold(pair(0.0, 0.0), |a, r| {
            pair(
                a.predicted + r.time_ms.predicted,
                a.traced + r.time_ms.traced,
            )
        });
        Ledger {
            steps,
            source: OP_LEDGER,
            phases: vec![LedgerPhase {
                phase: "forward",
                total_ms: pair(ops.predicted + above.0, ops.traced + above.1),
                ops_ms: ops,
                above_ms: pair(above.0, above.1),
                rows,
            }],
        }
    }

    #[test]
    fn ledgers_sum_row_by_row_and_sort_by_size() {
        let a = one_phase(
            5,
            vec![
                row("mm", (2.0, 2.0), (10.0, 12.0)),
                row("add", (3.0, 3.0), (1.0, 1.5)),
            ],
            (2.0, 4.0),
        );
        let b = one_phase(
            3,
            vec![
                row("tanh", (1.0, 1.0), (0.5, 9.0)),
                row("add", (1.0, 1.0), (0.25, 0.5)),
            ],
            (1.0, 1.0),
        );
        // L2-bound parts of the add rows (a GPU ledger's): summed too.
        let (mut a, mut b) = (a, b);
        a.phases[0].rows[1].l2_bound_ms = 0.5;
        b.phases[0].rows[1].l2_bound_ms = 0.125;
        let s = sum_ledgers([&a, &b]).expect("a sum");
        assert_eq!(s.steps, 3);
        let add = s.phases[0].rows.iter().find(|r| r.op == "add").unwrap();
        assert_eq!(add.l2_bound_ms, 0.625);
        let ph = &s.phases[0];
        // a: 11 + 2 and 13.5 + 4; b: 0.75 + 1 and 9.5 + 1.
        assert_eq!(ph.total_ms, pair(14.75, 28.0));
        assert_eq!(ph.ops_ms, pair(11.75, 23.0));
        assert_eq!(ph.above_ms, pair(3.0, 5.0));
        let got: Vec<(&str, Pair, Pair)> = ph
            .rows
            .iter()
            .map(|r| (r.op.as_str(), r.calls, r.time_ms))
            .collect();
        // By the larger side: mm 12, tanh 9, add 2.
        assert_eq!(
            got,
            [
                ("mm", pair(2.0, 2.0), pair(10.0, 12.0)),
                ("tanh", pair(1.0, 1.0), pair(0.5, 9.0)),
                ("add", pair(4.0, 4.0), pair(1.25, 2.0)),
            ]
        );
        assert!(sum_ledgers(std::iter::empty()).is_none());
    }

    #[test]
    fn mixed_sources_are_summed_apart() {
        let cpu = |ms: f64| one_phase(5, vec![row("mm", (1.0, 1.0), (ms, ms))], (0.0, 0.0));
        let mut gpu = cpu(100.0);
        gpu.source = "kernel ledger (torch.profiler's device time)";
        gpu.steps = 1;
        let (a, b) = (cpu(1.0), cpu(2.0));
        let sums = sum_by_source([&a, &gpu, &b]);
        let got: Vec<(usize, &str, u32, f64)> = sums
            .iter()
            .map(|(n, l)| (*n, l.source, l.steps, l.phases[0].total_ms.traced))
            .collect();
        assert_eq!(
            got,
            [
                (2, "op ledger", 5, 3.0),
                (1, "kernel ledger (torch.profiler's device time)", 1, 100.0)
            ]
        );
        assert!(sum_by_source(std::iter::empty()).is_empty());
    }

    #[test]
    fn the_report_by_hand() {
        // Rows under 1% of the phase (0.3 ms of 30.5 measured) fold into one line.
        let l = one_phase(
            5,
            vec![
                row("mm", (2.0, 2.0), (20.0, 24.0)),
                row("tanh", (4.0, 4.0), (0.5, 5.0)),
                row("add", (3.0, 3.0), (0.125, 0.25)),
                row("neg", (1.0, 1.0), (0.0625, 0.125)),
            ],
            (1.0, 1.125),
        );
        let got = render_ledger("title", &l, 0.01);
        let want = concat!(
            "\ntitle\n",
            "forward   phase    21.69 /    30.50  -28.9%   ops    20.69 /    29.38    -8.69   above the ops    1.00 /    1.12   -0.12\n",
            "  mm                               calls     2/2       20.000 /   24.000   -4.000\n",
            "  tanh                             calls     4/4        0.500 /    5.000   -4.500\n",
            "  (2 smaller rows)                 calls     4/4        0.188 /    0.375   -0.188\n",
        );
        assert_eq!(got, want);
        // Nothing folded, no fold line.
        let all = render_ledger("title", &l, 0.0);
        assert_eq!(all.lines().count(), 7);
        assert!(!all.contains("smaller rows"));
        // A kernel ledger (a GPU's) gives each row's time with its L2-bound part taken off,
        // the folded rows' parts summed: 0.1875 − (0.0625 + 0.03125) = 0.094.
        let mut gpu = l.clone();
        gpu.source = "kernel ledger (torch.profiler's device time)";
        gpu.phases[0].rows[2].l2_bound_ms = 0.0625;
        gpu.phases[0].rows[3].l2_bound_ms = 0.03125;
        let got = render_ledger("title", &gpu, 0.01);
        let fold = got.lines().find(|l| l.contains("smaller rows")).unwrap();
        assert!(fold.ends_with("with L2 re-reads free    0.094"), "{fold}");
        let mm = got.lines().find(|l| l.contains("  mm ")).unwrap();
        assert!(mm.ends_with("with L2 re-reads free   20.000"), "{mm}");
    }
}
