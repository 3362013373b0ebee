//! Predicted vs measured: per phase and method, % error, mean absolute percentage error, worst
//! case, ranking agreement between methods, and out-of-memory runs set against the fit prediction.
//!
//! Predictions use the configuration the harness ran: runtime libtorch (C++ host cost per op),
//! single-tensor AdamW (what a libtorch loop issues), no gradient clipping, SDPA attention, one
//! micro-batch.

use crate::record::{Outcome, Record, ResultsFile};
use crate::Result;
use costsim_hardware::Profile;
use costsim_model::{
    predict, AttentionImpl, Config, Detail, MethodOptions, MethodSpec, Optimizer, ParamGroups,
    Prediction, Runtime, TrainingLoop, Workload,
};
use serde::Serialize;

/// The workload the harness runs for a record.
pub fn workload_of(r: &Record) -> Workload {
    Workload {
        batch: r.batch,
        seq: r.seq,
        grad_accum: 1,
        precision: r.precision,
        attention: AttentionImpl::Sdpa,
        optimizer: Optimizer::AdamwSingle,
        grad_checkpointing: false,
        grad_clip: false,
        runtime: Runtime::Libtorch,
        // The harness synchronises the device around each phase it times (`train_step`).
        training_loop: TrainingLoop::Timed,
        // The harness builds its optimizer over every trainable tensor.
        param_groups: ParamGroups::One,
    }
}

/// The method the harness runs for a record.
pub fn method_of(r: &Record) -> Result<MethodSpec> {
    let opts = MethodOptions {
        rank: (r.rank > 0).then_some(r.rank),
        layers: Some(r.layers),
        ..MethodOptions::default()
    };
    Ok(MethodSpec::resolve(r.method, &opts, &r.model, false)?)
}

/// Predict what a record measured.
pub fn predict_record(r: &Record, hw: &Profile) -> Result<Prediction> {
    let cfg = Config {
        model: r.model.clone(),
        method: method_of(r)?,
        workload: workload_of(r),
        hw: hw.clone(),
    };
    Ok(predict(
        &cfg,
        Detail {
            per_layer: true,
            kernels: false,
        },
        None,
    ))
}

/// A per-layer microbenchmark: block index, then (predicted, measured) ms of its forward and of
/// its backward.
pub type LayerTimes = (usize, (f64, f64), (f64, f64));

/// One compared configuration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// `model b×s precision`.
    pub config: String,
    pub method: String,
    /// (predicted ms, measured ms) for forward, backward, optimizer, step; None when not measured.
    pub phases: [Option<(f64, f64)>; 4],
    /// Predicted forward launches vs ops the harness issued in forward.
    pub forward_kernels: (u64, u64),
    /// Per-layer microbenchmark: block index, (predicted, measured) forward and backward ms.
    pub layer: Option<LayerTimes>,
    /// `measured`, `oom (predicted: does not fit)`, ...
    pub note: String,
}

/// Error summary of one phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseSummary {
    pub phase: &'static str,
    /// Mean absolute percentage error, %.
    pub mape: f64,
    /// Largest absolute percentage error, %.
    pub worst: f64,
    pub n: usize,
}

/// The comparison of a results file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub device: String,
    pub profile: String,
    pub rows: Vec<Row>,
    pub phases: Vec<PhaseSummary>,
    /// Pairs of methods (same configuration) whose measured steps differ by more than 5%, and how
    /// many of them the prediction orders the same way.
    pub ranking_pairs: usize,
    pub ranking_agree: usize,
    /// Out-of-memory runs, and how many the model predicted would not fit.
    pub oom_runs: usize,
    pub oom_predicted: usize,
    /// Step-time error per method.
    pub methods: Vec<MethodSummary>,
    /// The same step-time figures for reduced models (what each part of costsim buys).
    pub ablations: Vec<Ablation>,
}

/// Step-time error of one method across configurations.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MethodSummary {
    pub method: String,
    pub n: usize,
    pub mape: f64,
    pub worst: f64,
    /// Ranking pairs (measured steps > 5% apart, same configuration) that involve this method,
    /// and how many the prediction orders as measured.
    pub ranking_pairs: usize,
    pub ranking_agree: usize,
}

/// Step-time accuracy of a reduced model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ablation {
    pub model: &'static str,
    pub mape: f64,
    pub worst: f64,
    pub ranking_pairs: usize,
    pub ranking_agree: usize,
}

/// The reduced models the ablations compare.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reduced {
    /// Step = 6 · N · tokens / the profile's GEMM rate for the precision (the usual rule of
    /// thumb; the same for every method).
    FlopsOnly,
    /// The full kernel graph with max(math, memory) per kernel, but no launch floor, no per-GEMM
    /// setup and no host cost.
    Roofline,
}

/// Step time of a record under a reduced model, ms.
fn reduced_step_ms(r: &Record, hw: &Profile, m: Reduced) -> Result<f64> {
    match m {
        Reduced::FlopsOnly => {
            let mode = r.precision.math_mode(r.precision.compute_dtype());
            let rate = hw.peak_flops(mode) * hw.gemm_efficiency;
            let tokens = (r.batch * r.seq) as f64;
            Ok(1e3 * 6.0 * r.model.total_params() as f64 * tokens / rate)
        }
        Reduced::Roofline => {
            let mut p = hw.clone();
            p.launch_floor_s = 0.0;
            p.graph_launch_floor_s = 0.0;
            p.gemm_floor_s = [0.0, 0.0];
            p.optimizer_op_s = None;
            p.attention_tile_s = [[0.0; 2]; 2];
            p.host = costsim_hardware::HostCosts {
                python_op_s: 0.0,
                cpp_op_s: 0.0,
                module_call_s: 0.0,
                peft_module_s: 0.0,
                autograd_node_s: 0.0,
                optimizer_tensor_s: 0.0,
                loop_micro_batch_s: 0.0,
                loop_module_s: 0.0,
                loop_step_s: 0.0,
                loop_step_module_s: 0.0,
            };
            Ok(predict_record(r, &p)?.step_ms)
        }
    }
}

/// Ranking agreement over (config, predicted, measured) steps: pairs of the same config whose
/// measured times differ by more than 5%; a tie in the prediction counts as disagreement.
fn ranking(steps: &[(String, f64, f64)]) -> (usize, usize) {
    let (mut n, mut ok) = (0, 0);
    for (i, a) in steps.iter().enumerate() {
        for b in steps.iter().skip(i + 1).filter(|b| b.0 == a.0) {
            let (lo, hi) = (a.2.min(b.2), a.2.max(b.2));
            if hi > 1.05 * lo {
                n += 1;
                if a.1 != b.1 && (a.1 < b.1) == (a.2 < b.2) {
                    ok += 1;
                }
            }
        }
    }
    (n, ok)
}

/// The configuration a record's step is ranked within: model, batch × seq, precision.
fn config_of(r: &Record) -> String {
    format!(
        "{} {}x{} {}",
        r.model.name,
        r.batch,
        r.seq,
        r.precision.as_str()
    )
}

/// Mean and largest of absolute percentage errors, %; (0, 0) for none.
fn mape_worst(errs: &[f64]) -> (f64, f64) {
    if errs.is_empty() {
        return (0.0, 0.0);
    }
    (
        errs.iter().sum::<f64>() / errs.len() as f64,
        errs.iter().copied().fold(0.0, f64::max),
    )
}

pub const PHASES: [&str; 4] = ["forward", "backward", "optimizer", "step"];

/// Absolute percentage error of a prediction, %.
pub fn ape(pred: f64, meas: f64) -> f64 {
    if meas > 0.0 {
        100.0 * (pred - meas).abs() / meas
    } else {
        0.0
    }
}

/// Compare every record of a results file with its prediction on `hw`.
pub fn compare(file: &ResultsFile, hw: &Profile) -> Result<Report> {
    let mut rows = Vec::new();
    let mut steps: Vec<(String, f64, f64)> = Vec::new(); // config, predicted, measured
    let mut by_method: Vec<(String, String, f64, f64)> = Vec::new(); // method, config, p, m
    let (mut oom_runs, mut oom_predicted) = (0, 0);
    for r in &file.records {
        let p = predict_record(r, hw)?;
        let config = config_of(r);
        let mut layer = None;
        let (phases, fk, note) = match &r.outcome {
            Outcome::Measured(m) => {
                steps.push((config.clone(), p.step_ms, m.step.median_ms));
                by_method.push((
                    r.method.to_string(),
                    config.clone(),
                    p.step_ms,
                    m.step.median_ms,
                ));
                if let Some(lb) = &m.layer {
                    let name = format!("layer.{}", lb.block);
                    if let Some(row) = p.per_layer.iter().flatten().find(|row| row.scope == name) {
                        layer = Some((
                            lb.block,
                            (row.forward_ms, lb.forward.median_ms),
                            (row.backward_ms, lb.backward.median_ms),
                        ));
                    }
                }
                (
                    [
                        Some((p.forward_ms, m.forward.median_ms)),
                        Some((p.backward_ms, m.backward.median_ms)),
                        Some((p.optimizer_ms, m.optimizer.median_ms)),
                        Some((p.step_ms, m.step.median_ms)),
                    ],
                    (p.kernels.forward, m.forward_ops),
                    "measured".to_string(),
                )
            }
            Outcome::OutOfMemory { .. } => {
                oom_runs += 1;
                if !p.fits {
                    oom_predicted += 1;
                }
                let verdict = if p.fits {
                    "predicted to fit"
                } else {
                    "predicted not to fit"
                };
                (
                    [None; 4],
                    (p.kernels.forward, 0),
                    format!("out of memory ({verdict})"),
                )
            }
            Outcome::Failed { message } => (
                [None; 4],
                (p.kernels.forward, 0),
                format!("failed: {message}"),
            ),
        };
        rows.push(Row {
            config,
            method: r.method.to_string(),
            phases,
            forward_kernels: fk,
            layer,
            note,
        });
    }
    if steps.is_empty() && oom_runs == 0 {
        return Err(crate::Error::InvalidArgument {
            what: "results".into(),
            message: format!(
                "none of the {} records was measured or ran out of memory (all failed), so there \
                 is nothing to compare; rerun the measurement",
                file.records.len()
            ),
        });
    }
    let summary = |phase: &'static str, errs: Vec<f64>| {
        let (mape, worst) = mape_worst(&errs);
        PhaseSummary {
            phase,
            mape,
            worst,
            n: errs.len(),
        }
    };
    let mut phases: Vec<PhaseSummary> = PHASES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            summary(
                name,
                rows.iter()
                    .filter_map(|r| r.phases[i])
                    .map(|(p, m)| ape(p, m))
                    .collect(),
            )
        })
        .collect();
    let layer_errs = |f: fn(&LayerTimes) -> (f64, f64)| -> Vec<f64> {
        rows.iter()
            .filter_map(|r| r.layer.as_ref())
            .map(f)
            .map(|(p, m)| ape(p, m))
            .collect()
    };
    phases.push(summary("layer fwd", layer_errs(|l| l.1)));
    phases.push(summary("layer bwd", layer_errs(|l| l.2)));
    let (pairs, agree) = ranking(&steps);
    // Per method, in first-seen order.
    let mut methods: Vec<MethodSummary> = Vec::new();
    for r in &rows {
        if methods.iter().any(|m| m.method == r.method) {
            continue;
        }
        let errs: Vec<f64> = rows
            .iter()
            .filter(|x| x.method == r.method)
            .filter_map(|x| x.phases[3])
            .map(|(p, m)| ape(p, m))
            .collect();
        let (mape, worst) = mape_worst(&errs);
        // Pairs with one side this method: rank this method's steps against every other's.
        let (mut rp, mut ra) = (0, 0);
        for a in by_method.iter().filter(|a| a.0 == r.method) {
            for b in by_method.iter().filter(|b| b.0 != r.method && b.1 == a.1) {
                let (n, ok) = ranking(&[(a.1.clone(), a.2, a.3), (b.1.clone(), b.2, b.3)]);
                rp += n;
                ra += ok;
            }
        }
        methods.push(MethodSummary {
            method: r.method.clone(),
            n: errs.len(),
            mape,
            worst,
            ranking_pairs: rp,
            ranking_agree: ra,
        });
    }
    let mut ablations = Vec::new();
    for (name, m) in [
        ("flops-only (6·N·tokens)", Reduced::FlopsOnly),
        ("roofline (no launch, no host)", Reduced::Roofline),
    ] {
        let mut steps_m = Vec::new();
        let mut errs = Vec::new();
        for r in &file.records {
            if let Outcome::Measured(meas) = &r.outcome {
                let p = reduced_step_ms(r, hw, m)?;
                let config = config_of(r);
                errs.push(ape(p, meas.step.median_ms));
                steps_m.push((config, p, meas.step.median_ms));
            }
        }
        let (mape, worst) = mape_worst(&errs);
        let (ranking_pairs, ranking_agree) = ranking(&steps_m);
        ablations.push(Ablation {
            model: name,
            mape,
            worst,
            ranking_pairs,
            ranking_agree,
        });
    }
    Ok(Report {
        device: file.device.clone(),
        profile: hw.name.clone(),
        rows,
        phases,
        ranking_pairs: pairs,
        ranking_agree: agree,
        oom_runs,
        oom_predicted,
        methods,
        ablations,
    })
}

/// A readable table of a report.
pub fn render(rep: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "measured on {}; predicted with profile {} (runtime libtorch)\n",
        rep.device, rep.profile
    );
    let mut table: Vec<Vec<String>> = vec![vec![
        "config".into(),
        "method".into(),
        "fwd pred/meas ms".into(),
        "err".into(),
        "bwd pred/meas ms".into(),
        "err".into(),
        "opt pred/meas ms".into(),
        "err".into(),
        "step pred/meas ms".into(),
        "err".into(),
        "fwd kernels pred/ops".into(),
        "layer fwd pred/meas".into(),
        "layer bwd pred/meas".into(),
        "note".into(),
    ]];
    for r in &rep.rows {
        let mut row = vec![r.config.clone(), r.method.clone()];
        for ph in r.phases {
            match ph {
                Some((p, m)) => {
                    row.push(format!("{p:.2}/{m:.2}"));
                    row.push(format!(
                        "{:+.1}%",
                        if m > 0.0 { 100.0 * (p - m) / m } else { 0.0 }
                    ));
                }
                None => {
                    row.push("-".into());
                    row.push("-".into());
                }
            }
        }
        row.push(format!("{}/{}", r.forward_kernels.0, r.forward_kernels.1));
        match r.layer {
            Some((_, (pf, mf), (pb, mb))) => {
                row.push(format!("{pf:.3}/{mf:.3}"));
                row.push(format!("{pb:.3}/{mb:.3}"));
            }
            None => {
                row.push("-".into());
                row.push("-".into());
            }
        }
        row.push(r.note.clone());
        table.push(row);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &table {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            // Padded by hand: a format width past 65 535 (a name that long) panics.
            .map(|(c, s)| {
                let pad = widths[c].saturating_sub(s.chars().count());
                format!("{s}{}", " ".repeat(pad))
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(out);
    for s in &rep.phases {
        if s.n == 0 {
            // No measurement is not a perfect score.
            let _ = writeln!(out, "{:<9} not measured", s.phase);
            continue;
        }
        let _ = writeln!(
            out,
            "{:<9} MAPE {:>6.1}%  worst {:>6.1}%  (n = {})",
            s.phase, s.mape, s.worst, s.n
        );
    }
    if rep.ranking_pairs > 0 {
        let _ = writeln!(
            out,
            "ranking: {}/{} method pairs (measured steps >5% apart) ordered as measured ({:.0}%)",
            rep.ranking_agree,
            rep.ranking_pairs,
            100.0 * rep.ranking_agree as f64 / rep.ranking_pairs as f64
        );
    } else {
        let _ = writeln!(out, "ranking: no method pairs more than 5% apart");
    }
    if rep.oom_runs > 0 {
        let _ = writeln!(
            out,
            "out of memory: {} runs, {} predicted not to fit",
            rep.oom_runs, rep.oom_predicted
        );
    }
    for m in &rep.methods {
        let _ = writeln!(
            out,
            "{:<20} step MAPE {:>6.1}%  worst {:>6.1}%  (n = {})",
            m.method, m.mape, m.worst, m.n
        );
    }
    for a in &rep.ablations {
        let _ = writeln!(
            out,
            "ablation {:<30} step MAPE {:>7.1}%  worst {:>7.1}%  ranking {}/{}",
            a.model, a.mape, a.worst, a.ranking_agree, a.ranking_pairs
        );
    }
    out
}

/// The summary tables as Markdown: per phase, per method, ranking, ablations. Deterministic for
/// a given results file and profile (docs/validation.md embeds it; a test regenerates it).
pub fn render_summary(rep: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measured on {}; predicted with profile `{}` (runtime libtorch, single-tensor AdamW).\n",
        rep.device, rep.profile
    );
    let _ = writeln!(out, "| phase | n | MAPE | worst |\n|---|---:|---:|---:|");
    for p in &rep.phases {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1}% | {:.1}% |",
            p.phase, p.n, p.mape, p.worst
        );
    }
    let pct = |a: usize, n: usize| {
        if n == 0 {
            "-".to_string()
        } else {
            format!("{:.0}%", 100.0 * a as f64 / n as f64)
        }
    };
    let _ = writeln!(
        out,
        "\n| method | n | step MAPE | step worst | ranking agreement |\n|---|---:|---:|---:|---:|"
    );
    for m in &rep.methods {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1}% | {:.1}% | {}/{} ({}) |",
            m.method,
            m.n,
            m.mape,
            m.worst,
            m.ranking_agree,
            m.ranking_pairs,
            pct(m.ranking_agree, m.ranking_pairs)
        );
    }
    let _ = writeln!(
        out,
        "\n| model | step MAPE | step worst | ranking agreement |\n|---|---:|---:|---:|"
    );
    let _ = writeln!(
        out,
        "| costsim | {:.1}% | {:.1}% | {}/{} ({}) |",
        rep.phases[3].mape,
        rep.phases[3].worst,
        rep.ranking_agree,
        rep.ranking_pairs,
        pct(rep.ranking_agree, rep.ranking_pairs)
    );
    for a in &rep.ablations {
        let _ = writeln!(
            out,
            "| {} | {:.1}% | {:.1}% | {}/{} ({}) |",
            a.model,
            a.mape,
            a.worst,
            a.ranking_agree,
            a.ranking_pairs,
            pct(a.ranking_agree, a.ranking_pairs)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Measured, Stats, SCHEMA};
    use costsim_model::method::LayerSelection;
    use costsim_model::{MethodName, Precision};

    fn record(method: MethodName, step_ms: f64) -> Record {
        let st = |ms: f64| Stats::from_seconds(&[ms / 1e3]);
        Record {
            model: costsim_model::preset("gpt2").unwrap(),
            method,
            rank: if method == MethodName::Full { 0 } else { 8 },
            layers: LayerSelection::All,
            batch: 1,
            seq: 64,
            precision: Precision::Fp32,
            warmup: 1,
            reps: 1,
            outcome: Outcome::Measured(Box::new(Measured {
                forward: st(step_ms / 3.0),
                backward: st(step_ms / 2.0),
                optimizer: st(step_ms / 6.0),
                step: st(step_ms),
                forward_ops: 100,
                backward_explicit_ops: 0,
                optimizer_ops: 10,
                final_loss: 1.0,
                layer: None,
            })),
        }
    }

    fn file(records: Vec<Record>) -> ResultsFile {
        ResultsFile {
            schema: SCHEMA,
            device: "test".into(),
            device_kind: "cpu".into(),
            profile: "cpu-generic".into(),
            torch_version: "2.11.0".into(),
            git_commit: "x".into(),
            timestamp: "t".into(),
            command: "c".into(),
            records,
        }
    }

    #[test]
    fn absolute_percentage_error_divides_by_the_measurement() {
        // Literal values: |110 − 100| / 100 = 10%; |90 − 100| / 100 = 10%; predicted 100 against
        // measured 110: 10 / 110 = 9.0909…% (dividing by the prediction would give 10%).
        assert_eq!(ape(110.0, 100.0), 10.0);
        assert_eq!(ape(90.0, 100.0), 10.0);
        assert!((ape(100.0, 110.0) - 100.0 / 11.0).abs() < 1e-12);
        assert!((ape(100.0, 50.0) - 100.0).abs() < 1e-12);
        // A missing measurement contributes no error rather than a division by zero.
        assert_eq!(ape(5.0, 0.0), 0.0);
    }

    #[test]
    fn errors_are_measured_against_the_prediction() {
        let hw = costsim_hardware::resolve_device("cpu").unwrap();
        let p = predict_record(&record(MethodName::Full, 1.0), &hw)
            .unwrap()
            .step_ms;
        // Measurements placed so that the prediction is 10% above one and 30% below the other:
        // measured = p / 1.1 → |p − p/1.1| / (p/1.1) = 0.1 → 10%;
        // measured = p / 0.7 → |p − p/0.7| / (p/0.7) = 0.3 → 30%.
        // MAPE = (10 + 30) / 2 = 20%, worst 30%. (Dividing by the prediction instead would give
        // 0.1/1.1 = 9.09% and 0.3/0.7 = 42.86%: MAPE 25.97%, worst 42.86%.)
        let rep = compare(
            &file(vec![
                record(MethodName::Full, p / 1.1),
                record(MethodName::Full, p / 0.7),
            ]),
            &hw,
        )
        .unwrap();
        let step = &rep.phases[3];
        assert_eq!(step.phase, "step");
        assert_eq!(step.n, 2);
        assert!((step.mape - 20.0).abs() < 1e-9, "{}", step.mape);
        assert!((step.worst - 30.0).abs() < 1e-9, "{}", step.worst);
        for (row, meas) in rep.rows.iter().zip([p / 1.1, p / 0.7]) {
            let (rp, rm) = row.phases[3].unwrap();
            assert_eq!(rp, p);
            assert!((rm - meas).abs() < 1e-9 * meas, "{rm} vs {meas}");
        }
        // The per-method summary agrees: one method, both records.
        assert_eq!(rep.methods.len(), 1);
        assert_eq!(rep.methods[0].n, 2);
        assert!((rep.methods[0].mape - 20.0).abs() < 1e-9);
        assert!((rep.methods[0].worst - 30.0).abs() < 1e-9);
    }

    #[test]
    fn ranking_counts_only_pairs_more_than_five_percent_apart() {
        let hw = costsim_hardware::resolve_device("cpu").unwrap();
        let pf = predict_record(&record(MethodName::Full, 1.0), &hw)
            .unwrap()
            .step_ms;
        let pp = predict_record(&record(MethodName::Paca, 1.0), &hw)
            .unwrap()
            .step_ms;
        // Measured in the predicted order: agrees.
        let (a, b) = if pf > pp {
            (200.0, 100.0)
        } else {
            (100.0, 200.0)
        };
        let rep = compare(
            &file(vec![
                record(MethodName::Full, a),
                record(MethodName::Paca, b),
            ]),
            &hw,
        )
        .unwrap();
        assert_eq!((rep.ranking_pairs, rep.ranking_agree), (1, 1));
        // Measured in the opposite order: disagrees.
        let rep = compare(
            &file(vec![
                record(MethodName::Full, b),
                record(MethodName::Paca, a),
            ]),
            &hw,
        )
        .unwrap();
        assert_eq!((rep.ranking_pairs, rep.ranking_agree), (1, 0));
        // Within 5%: not a pair.
        let rep = compare(
            &file(vec![
                record(MethodName::Full, 100.0),
                record(MethodName::Paca, 104.0),
            ]),
            &hw,
        )
        .unwrap();
        assert_eq!(rep.ranking_pairs, 0);
    }

    #[test]
    fn ablations_follow_their_definitions() {
        let hw = costsim_hardware::resolve_device("cpu").unwrap();
        let r = record(MethodName::Lora, 100.0);
        let rep = compare(&file(vec![r.clone()]), &hw).unwrap();
        // FLOPs-only: 6 · N · tokens at the profile's fp32 GEMM rate.
        let flops_ms = 1e3 * 6.0 * r.model.total_params() as f64 * 64.0
            / (hw.peak_fp32_flops * hw.gemm_efficiency);
        // Measured 100 ms: the error is |flops_ms − 100| / 100 in percent, i.e. |flops_ms − 100|.
        assert!((rep.ablations[0].mape - (flops_ms - 100.0).abs()).abs() < 1e-9);
        // Roofline: no floor and no host cost, so faster than the full model, and its error is
        // the one reported.
        let full = rep.phases[3].mape;
        let p = predict_record(&r, &hw).unwrap().step_ms;
        let roof_ms = reduced_step_ms(&r, &hw, Reduced::Roofline).unwrap();
        assert!(roof_ms < p, "{roof_ms} {p}");
        assert!((rep.ablations[1].mape - (roof_ms - 100.0).abs()).abs() < 1e-9);
        assert_eq!(rep.methods.len(), 1);
        assert_eq!(rep.methods[0].method, "lora");
        assert!((rep.methods[0].mape - full).abs() < 1e-12);
    }

    #[test]
    fn a_tie_in_the_prediction_is_not_agreement() {
        let steps = vec![
            ("c".to_string(), 1.0, 100.0),
            ("c".to_string(), 1.0, 200.0),
            ("d".to_string(), 1.0, 100.0),
        ];
        assert_eq!(ranking(&steps), (1, 0));
    }

    #[test]
    fn ranking_by_hand() {
        // (config, predicted, measured). Config c: (1, 100) and (2, 200) agree, (1, 100) and
        // (3, 150) agree, (2, 200) and (3, 150) disagree (predicted 2 < 3, measured 200 > 150);
        // config d: (5, 100) and (4, 300) disagree; config e: 100 and 105 ms are exactly 5%
        // apart, not more, so not a pair; pairs across configs never count.
        let steps: Vec<(String, f64, f64)> = [
            ("c", 1.0, 100.0),
            ("c", 2.0, 200.0),
            ("c", 3.0, 150.0),
            ("d", 5.0, 100.0),
            ("d", 4.0, 300.0),
            ("e", 1.0, 100.0),
            ("e", 2.0, 105.0),
        ]
        .iter()
        .map(|&(c, p, m)| (c.to_string(), p, m))
        .collect();
        assert_eq!(ranking(&steps), (4, 2));
        // The same pairs listed in the other order rank alike.
        let rev: Vec<_> = steps.iter().rev().cloned().collect();
        assert_eq!(ranking(&rev), (4, 2));
    }

    #[test]
    fn records_of_different_sizes_are_not_ranked_against_each_other() {
        let hw = costsim_hardware::resolve_device("cpu").unwrap();
        let mut paca = record(MethodName::Paca, 500.0);
        paca.seq = 128;
        let rep = compare(&file(vec![record(MethodName::Full, 100.0), paca]), &hw).unwrap();
        assert_eq!(rep.rows[0].config, "gpt2 1x64 fp32");
        assert_eq!(rep.rows[1].config, "gpt2 1x128 fp32");
        assert_eq!((rep.ranking_pairs, rep.ranking_agree), (0, 0));
        assert!(rep.methods.iter().all(|m| m.ranking_pairs == 0));
        assert_eq!(rep.ablations[0].ranking_pairs, 0);
    }

    #[test]
    fn each_method_is_ranked_against_the_others_of_its_configuration() {
        let hw = costsim_hardware::resolve_device("cpu").unwrap();
        let p = |m| predict_record(&record(m, 1.0), &hw).unwrap().step_ms;
        let (full, lora, paca) = (
            p(MethodName::Full),
            p(MethodName::Lora),
            p(MethodName::Paca),
        );
        // Measured: full 100 ms, LoRA 300, PaCA 200; each pair agrees when the predictions
        // order the two methods the same way.
        let meas = [
            (MethodName::Full, 100.0, full),
            (MethodName::Lora, 300.0, lora),
            (MethodName::Paca, 200.0, paca),
        ];
        let rep = compare(
            &file(meas.iter().map(|&(m, ms, _)| record(m, ms)).collect()),
            &hw,
        )
        .unwrap();
        let agrees = |a: usize, b: usize| {
            let (pa, pb) = (meas[a].2, meas[b].2);
            usize::from(pa != pb && (pa < pb) == (meas[a].1 < meas[b].1))
        };
        assert_eq!(rep.ranking_pairs, 3);
        assert_eq!(
            rep.ranking_agree,
            agrees(0, 1) + agrees(0, 2) + agrees(1, 2)
        );
        let names: Vec<&str> = rep.methods.iter().map(|m| m.method.as_str()).collect();
        assert_eq!(names, ["full", "lora", "paca"]);
        for (i, m) in rep.methods.iter().enumerate() {
            // Each method is in two pairs, with the other two.
            assert_eq!(m.ranking_pairs, 2, "{}", m.method);
            let others: usize = (0..3)
                .filter(|&j| j != i)
                .map(|j| agrees(i.min(j), i.max(j)))
                .sum();
            assert_eq!(m.ranking_agree, others, "{}", m.method);
            assert_eq!(m.n, 1);
        }
    }

    #[test]
    fn a_method_is_not_ranked_against_itself() {
        // Two LoRA runs of one configuration (ranks 8 and 64), 100 and 300 ms, beside a full
        // fine-tuning of 200 ms: the configuration has three pairs, but LoRA's own summary
        // counts only its two pairs with full fine-tuning.
        let hw = costsim_hardware::resolve_device("cpu").unwrap();
        let mut wide = record(MethodName::Lora, 300.0);
        wide.rank = 64;
        let rep = compare(
            &file(vec![
                record(MethodName::Lora, 100.0),
                wide,
                record(MethodName::Full, 200.0),
            ]),
            &hw,
        )
        .unwrap();
        assert_eq!(rep.ranking_pairs, 3);
        let lora = rep.methods.iter().find(|m| m.method == "lora").unwrap();
        assert_eq!((lora.n, lora.ranking_pairs), (2, 2));
        let full = rep.methods.iter().find(|m| m.method == "full").unwrap();
        assert_eq!((full.n, full.ranking_pairs), (1, 2));
    }

    #[test]
    fn a_measured_layer_is_set_against_the_same_layers_prediction() {
        let hw = costsim_hardware::resolve_device("cpu").unwrap();
        let mut r = record(MethodName::Full, 100.0);
        if let Outcome::Measured(m) = &mut r.outcome {
            m.layer = Some(crate::record::LayerBench {
                block: 1,
                forward: Stats::from_seconds(&[0.002]),
                backward: Stats::from_seconds(&[0.004]),
            });
        }
        let p = predict_record(&r, &hw).unwrap();
        let row = p
            .per_layer
            .iter()
            .flatten()
            .find(|row| row.scope == "layer.1")
            .expect("layer.1 predicted");
        let rep = compare(&file(vec![r]), &hw).unwrap();
        let (block, fwd, bwd) = rep.rows[0].layer.expect("layer times");
        assert_eq!(block, 1);
        assert_eq!(fwd.0, row.forward_ms);
        assert_eq!(bwd.0, row.backward_ms);
        assert!(
            (fwd.1 - 2.0).abs() < 1e-9 && (bwd.1 - 4.0).abs() < 1e-9,
            "{fwd:?} {bwd:?}"
        );
        let (lfwd, lbwd) = (&rep.phases[4], &rep.phases[5]);
        assert_eq!((lfwd.phase, lfwd.n), ("layer fwd", 1));
        assert_eq!((lbwd.phase, lbwd.n), ("layer bwd", 1));
        assert!((lfwd.mape - ape(row.forward_ms, 2.0)).abs() < 1e-9);
        assert!((lbwd.mape - ape(row.backward_ms, 4.0)).abs() < 1e-9);
    }

    #[test]
    fn method_of_keeps_the_records_rank_and_layers() {
        let mut r = record(MethodName::Paca, 1.0);
        r.rank = 24;
        r.layers = LayerSelection::Upper { fraction: 0.5 };
        let spec = method_of(&r).unwrap();
        assert_eq!(spec.rank, 24);
        // gpt2's 12 layers, the upper half: 6..=11.
        assert_eq!(spec.trained_layers(&r.model), (6, 11));
        // Rank 0 is the method's default: LoRA's 8.
        let mut r = record(MethodName::Lora, 1.0);
        r.rank = 0;
        assert_eq!(method_of(&r).unwrap().rank, 8);
    }

    #[test]
    fn out_of_memory_runs_count_the_ones_predicted_not_to_fit() {
        let hw = costsim_hardware::resolve_device("cpu").unwrap();
        let oom = |mut r: Record| {
            r.outcome = Outcome::OutOfMemory {
                message: "out of memory".into(),
            };
            r
        };
        // gpt2 at 1 × 64 fits the CPU profile; gpt2-xl at 64 × 1024 does not.
        let small = oom(record(MethodName::Full, 1.0));
        let mut big = oom(record(MethodName::Full, 1.0));
        big.model = costsim_model::preset("gpt2-xl").unwrap();
        big.batch = 64;
        big.seq = 1024;
        assert!(predict_record(&small, &hw).unwrap().fits);
        assert!(!predict_record(&big, &hw).unwrap().fits);
        let rep = compare(
            &file(vec![
                small.clone(),
                big,
                small,
                record(MethodName::Full, 1.0),
            ]),
            &hw,
        )
        .unwrap();
        assert_eq!((rep.oom_runs, rep.oom_predicted), (3, 1));
        assert_eq!(rep.rows[0].note, "out of memory (predicted to fit)");
        assert_eq!(rep.rows[1].note, "out of memory (predicted not to fit)");
    }

    #[test]
    fn oom_is_set_against_the_fit_prediction() {
        let hw = costsim_hardware::resolve_device("cpu").unwrap();
        let mut r = record(MethodName::Full, 1.0);
        r.outcome = Outcome::OutOfMemory {
            message: "CUDA out of memory".into(),
        };
        let rep = compare(&file(vec![r]), &hw).unwrap();
        assert_eq!(rep.oom_runs, 1);
        assert!(rep.rows[0].note.starts_with("out of memory"));
        assert_eq!(rep.phases[3].n, 0);
    }
}
