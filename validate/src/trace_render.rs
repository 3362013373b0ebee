//! The text report of trace comparisons (`costsim validate --trace`).

use super::*;

/// A text report of several comparisons: one summary line per trace, then (with `modules`) the
/// modules whose launches disagree and (with `ops`) the op ledgers of traces timed op by op.
pub fn render(cmps: &[TraceComparison], modules: bool, ops: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<44} {:>17} {:>17} {:>17} {:>21} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "trace",
        "fwd launches p/t",
        "bwd launches p/t",
        "opt launches p/t",
        "saved MiB p/t",
        "saved",
        "peak",
        "flops",
        "read",
        "written"
    );
    for c in cmps {
        let l = |i: usize| {
            let p = &c.phases[i].launches;
            format!("{}/{} {}", p.predicted, p.traced, pct(p.error()))
        };
        let worst_peak = c
            .phases
            .iter()
            .map(|p| p.peak_bytes.error())
            .fold(0.0_f64, |a, e| if e.abs() > a.abs() { e } else { a });
        let flops = Pair {
            predicted: c.phases.iter().map(|p| p.flops.predicted).sum(),
            traced: c.phases.iter().map(|p| p.flops.traced).sum(),
        };
        // Worst forward/backward error of the bytes, when the trace records them.
        let worst_bytes = |f: &dyn Fn(&PhaseComparison) -> Option<Pair>| {
            c.phases
                .iter()
                .filter(|p| p.phase != "optimizer")
                .filter_map(f)
                .map(|p| p.error())
                .reduce(|a, e| if e.abs() > a.abs() { e } else { a })
                .map_or("-".to_string(), pct)
        };
        let _ = writeln!(
            s,
            "{:<44} {:>17} {:>17} {:>17} {:>21} {:>8} {:>8} {:>8} {:>8} {:>8}",
            c.name,
            l(0),
            l(1),
            l(2),
            format!(
                "{:.2}/{:.2}",
                c.saved_bytes.predicted / 1048576.0,
                c.saved_bytes.traced / 1048576.0
            ),
            pct(c.saved_bytes.error()),
            pct(worst_peak),
            pct(flops.error()),
            worst_bytes(&|p| p.bytes_read),
            worst_bytes(&|p| p.bytes_written)
        );
    }
    let counted: Vec<(&str, Pair)> = cmps
        .iter()
        .filter_map(|c| c.nn_modules.map(|m| (c.name.as_str(), m)))
        .collect();
    if !counted.is_empty() {
        let agree = counted
            .iter()
            .filter(|(_, m)| m.predicted == m.traced)
            .count();
        let _ = writeln!(
            s,
            "\nnn.Modules (what a Trainer's model.train() walks): costsim's count equals the \
             trace's in {agree} of {} traces",
            counted.len()
        );
        for (name, m) in counted.iter().filter(|(_, m)| m.predicted != m.traced) {
            let _ = writeln!(s, "  {name:<44} costsim {} trace {}", m.predicted, m.traced);
        }
    }
    if cmps
        .iter()
        .any(|c| c.phases.iter().any(|p| p.time_ms.is_some()))
    {
        let _ = writeln!(
            s,
            "\n{:<44} {:>22} {:>22} {:>22}",
            "phase times, ms", "forward p/m", "backward p/m", "optimizer p/m"
        );
        let mut errs: Vec<[f64; 3]> = Vec::new();
        for c in cmps {
            let cell = |i: usize| {
                c.phases[i]
                    .time_ms
                    .map(|t| format!("{:.2}/{:.2} {}", t.predicted, t.traced, pct(t.error())))
                    .unwrap_or_default()
            };
            if c.phases.iter().all(|p| p.time_ms.is_some()) {
                errs.push([0, 1, 2].map(|i| c.phases[i].time_ms.map_or(0.0, |t| t.error().abs())));
            }
            let _ = writeln!(
                s,
                "{:<44} {:>22} {:>22} {:>22}",
                c.name,
                cell(0),
                cell(1),
                cell(2)
            );
        }
        if !errs.is_empty() {
            let n = errs.len() as f64;
            let mape = |i: usize| 100.0 * errs.iter().map(|e| e[i]).sum::<f64>() / n;
            let _ = writeln!(
                s,
                "MAPE over {} timed traces: forward {:.1}%, backward {:.1}%, optimizer {:.1}%",
                errs.len(),
                mape(0),
                mape(1),
                mape(2)
            );
        }
    }
    if cmps.iter().any(|c| !c.kinds.is_empty()) {
        // Summed over the profiled traces: where costsim's device time is short or long.
        let mut acc: BTreeMap<(&str, &str), (f64, f64, u64)> = BTreeMap::new();
        for k in cmps.iter().flat_map(|c| &c.kinds) {
            let e = acc.entry((k.phase, k.kind)).or_default();
            e.0 += k.time_ms.predicted;
            e.1 += k.time_ms.traced;
            e.2 += k.traced_ops;
        }
        let _ = writeln!(
            s,
            "\n{:<10} {:<12} {:>14} {:>14} {:>8} {:>8}",
            "profiled", "kind", "predicted ms", "profiled ms", "error", "ops"
        );
        for ((phase, kind), (p, t, n)) in acc {
            let e = Pair {
                predicted: p,
                traced: t,
            }
            .error();
            let _ = writeln!(
                s,
                "{phase:<10} {kind:<12} {p:>14.3} {t:>14.3} {:>8} {n:>8}",
                pct(e)
            );
        }
    }
    if modules {
        for c in cmps {
            let _ = writeln!(
                s,
                "\n{} ({}): modules whose launches differ",
                c.name, c.source
            );
            let total = c.saved_bytes.traced.max(1.0);
            for m in c
                .saved_modules
                .iter()
                .filter(|m| (m.predicted - m.traced).abs() > 0.005 * total)
            {
                let _ = writeln!(
                    s,
                    "  saved     {:<34} costsim {:>12.0} B  trace {:>12.0} B  ({})",
                    m.module, m.predicted, m.traced, m.traced_detail
                );
            }
            for m in c.modules.iter().filter(|m| m.predicted != m.traced) {
                let _ = writeln!(
                    s,
                    "  {:<9} {:<34} costsim {:>4}  trace {:>4}\n      costsim: {}\n      trace:   {}",
                    m.phase, m.module, m.predicted, m.traced, m.predicted_ops, m.traced_ops
                );
            }
        }
    }
    if ops {
        use crate::ledger::{render_ledger, sum_by_source};
        for (n, sum) in sum_by_source(cmps.iter().filter_map(|c| c.ledger.as_ref())) {
            if n > 1 {
                let title = format!(
                    "{} summed over {n} traces, ms per step, predicted / measured",
                    sum.source
                );
                s += &render_ledger(&title, &sum, 0.005);
            }
        }
        for c in cmps {
            if let Some(l) = &c.ledger {
                // The file's name, not its path: the same records give the same report from
                // any checkout.
                let file = Path::new(&c.source)
                    .file_name()
                    .map_or(c.source.clone(), |f| f.to_string_lossy().into_owned());
                let title = format!(
                    "{} ({file}): {} over {} steps, ms per step, predicted / measured",
                    c.name, l.source, l.steps
                );
                s += &render_ledger(&title, l, 0.01);
            }
        }
    }
    s
}
