//! A Trainer loop's own host work, fitted from `scripts/trace/step_overhead.py` records.
//!
//! Each record times one configuration at micro widths (docs/host.md): the phases apart, the
//! same step as a bare loop, and transformers' `Trainer` driving it, where each Trainer step's
//! period less the time inside the step's own work (forward with the loss, backward,
//! clip_grad_norm_, optimizer.step, each wrapped and timed) is the loop's work per optimizer
//! step. Measured within each step, it holds on a busy machine where `trainer − bare`, two
//! loops timed apart, does not; the two agree on a quiet one. It carries the model's structure (nn.Modules, what
//! `model.train()` walks every micro-batch) and the micro-batches per step K. Non-negative least
//! squares with rows weighted by 1/t ([`crate::fit::fit_linear`]) over the medians:
//!
//! ```text
//! loop ≈ loop_micro_batch · K + loop_module · K · M + loop_step + loop_step_module · M    [s]
//! ```
//!
//! the model of `costsim_model::training_loop`, whose three costs go into a profile's `[host]`
//! section (`costsim calibrate --loop`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fit::{fit_linear, Fit};
use crate::host::{set_host_keys, HostKey};
use crate::record::printable;
pub use crate::trace::Structure;
use crate::trace::{layers_from, targets_of, Pair};
use crate::{Error, Result};
use costsim_model::arch::{parse_hf_config, ModelConfig};
use costsim_model::method::{AdapterDtype, MethodName, MethodOptions, MethodSpec};
use costsim_model::predict::{predict, Config, Detail};
use costsim_model::workload::{
    AttentionImpl, Optimizer, ParamGroups, Precision, Runtime, Workload,
};
use costsim_model::TrainingLoop;

/// The record's schema tag.
pub const SCHEMA: &str = "costsim-step-overhead/2";

/// Minimum and median of a timed quantity, µs.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Stat {
    pub min_us: f64,
    pub median_us: f64,
    pub n: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StepProvenance {
    pub torch: String,
    pub transformers: String,
    pub device: String,
    #[serde(default)]
    pub threads: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StepConfig {
    pub family: String,
    pub preset: String,
    pub method: String,
    #[serde(default = "all_targets")]
    pub targets: String,
    /// LoRA rank or PaCA column count; absent in records written before the field (the
    /// method's default then).
    #[serde(default)]
    pub rank: Option<u64>,
    /// Layer-selective PaCA's lowest trained layer (0: every layer; records before this field
    /// lack it).
    #[serde(default)]
    pub lowest_trained_layer: u32,
    pub batch: u64,
    pub seq: u64,
    pub grad_accum: u64,
    pub trainable_tensors: u64,
}

fn all_targets() -> String {
    "all".into()
}

/// The model a record ran (records since the held-out step validation).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StepModel {
    pub family: String,
    pub preset: String,
    pub hf_config: serde_json::Value,
}

/// One `step_overhead.py` record (the fields costsim reads).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StepRecord {
    pub schema: String,
    pub provenance: StepProvenance,
    pub config: StepConfig,
    pub structure: Structure,
    pub bare: Stat,
    pub trainer: Stat,
    /// Per Trainer step, its period less the time inside the step's own work (forward with the
    /// loss, backward, clip_grad_norm_, optimizer.step): the loop's work, timed within steps.
    #[serde(rename = "loop")]
    pub loop_work: Stat,
    #[serde(default)]
    pub phases: BTreeMap<String, Stat>,
    #[serde(default)]
    pub model: Option<StepModel>,
    /// `adamw-foreach` or `adamw-single` (torch's default on a CPU).
    #[serde(default)]
    pub optimizer: Option<String>,
}

impl StepRecord {
    /// The loop's work per optimizer step, seconds: the median over Trainer steps of the
    /// period less the time inside the step's own work.
    pub fn loop_s(&self) -> f64 {
        self.loop_work.median_us * 1e-6
    }
}

fn invalid(what: &str, message: String) -> Error {
    Error::InvalidArgument {
        what: what.to_string(),
        message,
    }
}

/// Read and check one record.
pub fn read_step_record(path: &Path) -> Result<StepRecord> {
    let origin = path.display().to_string();
    let text =
        costsim_hardware::input::read_text(path, "step record").map_err(|source| Error::Io {
            path: origin.clone(),
            source,
        })?;
    parse_step_record(&text, &origin)
}

/// Parse and check one record's text; `origin` names it in errors.
pub fn parse_step_record(text: &str, origin: &str) -> Result<StepRecord> {
    let origin = origin.to_string();
    let mut r: StepRecord = serde_json::from_str(text)
        .map_err(|e| crate::parse_error(text, "step record", 3, &origin, &e))?;
    // Names printed in tables: a terminal's escape sequences dropped (as results records').
    printable(&mut r.config.family);
    printable(&mut r.config.preset);
    if let Some(m) = &mut r.model {
        printable(&mut m.family);
        printable(&mut m.preset);
    }
    if r.schema != SCHEMA {
        return Err(invalid(
            &origin,
            format!(
                "step record schema '{}' is not '{SCHEMA}'; regenerate it with \
                 scripts/trace/step_overhead.py",
                r.schema
            ),
        ));
    }
    let c = &r.config;
    if !(1..=1 << 20).contains(&c.grad_accum) {
        return Err(invalid(
            &origin,
            format!("config.grad_accum must be 1 to 2^20, got {}", c.grad_accum),
        ));
    }
    if !(1..=1 << 24).contains(&r.structure.modules) {
        return Err(invalid(
            &origin,
            format!(
                "structure.modules must be 1 to 2^24, got {}",
                r.structure.modules
            ),
        ));
    }
    for (what, s) in [("bare", &r.bare), ("trainer", &r.trainer)] {
        for (key, v) in [("min_us", s.min_us), ("median_us", s.median_us)] {
            // From 1 ns, as results records' timings: a subnormal median read "+inf%".
            if !(v.is_finite() && (1e-3..1e9).contains(&v)) {
                return Err(invalid(
                    &origin,
                    format!(
                        "{what}.{key} must be 1 ns (0.001 µs) to below 10^9 µs (1000 s), got {}",
                        costsim_model::shown(v)
                    ),
                ));
            }
        }
    }
    // The configuration as `validate --steps` reads it, checked here once for every command
    // (`calibrate --loop` fitted from records `validate --steps` refused).
    match r.model {
        Some(_) => {
            config_parts(&r, &origin)?;
        }
        None => {
            method_of(&r.config, &origin)?;
            optimizer_of(&r, &origin)?;
            for (key, v) in [
                ("config.batch", r.config.batch),
                ("config.seq", r.config.seq),
            ] {
                if v == 0 {
                    return Err(invalid(&origin, format!("{key} must be at least 1")));
                }
            }
        }
    }
    Ok(r)
}

/// An error of the model crate about one key of the record, said of the file and key rather
/// than of a command-line option.
fn keyed(origin: &str, key: &str, e: costsim_model::Error) -> Error {
    let message = match e {
        costsim_model::Error::InvalidArgument { message, .. } => message,
        other => other.to_string(),
    };
    invalid(origin, format!("{key}: {message}"))
}

fn method_of(c: &StepConfig, origin: &str) -> Result<MethodName> {
    c.method
        .parse()
        .map_err(|e| keyed(origin, "config.method", e))
}

fn optimizer_of(r: &StepRecord, origin: &str) -> Result<Optimizer> {
    match r.optimizer.as_deref() {
        Some("adamw-foreach") => Ok(Optimizer::AdamwForeach),
        Some("adamw-single") | None => Ok(Optimizer::AdamwSingle),
        Some(other) => Err(invalid(
            origin,
            format!("optimizer '{other}' is not adamw-foreach or adamw-single"),
        )),
    }
}

/// The fit and where it was measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoopFit {
    pub fit: Fit,
    pub device: String,
    pub torch: String,
    pub transformers: String,
}

/// Fit the loop's costs from records (`(record, name for errors)`).
pub fn fit_loop(records: &[(StepRecord, String)]) -> Result<LoopFit> {
    let mut rows = Vec::new();
    let mut device: Option<String> = None;
    for (r, src) in records {
        let dev = r.provenance.device.clone();
        match &device {
            None => device = Some(dev),
            Some(d) if *d != dev => {
                return Err(invalid(
                    src,
                    format!("measured on {dev}, the first record on {d}: fit one host at a time"),
                ))
            }
            Some(_) => {}
        }
        let t = r.loop_s();
        if t <= 0.0 {
            return Err(invalid(
                src,
                format!(
                    "the loop's median work is {:.0} µs, not positive: rerun \
                     scripts/trace/step_overhead.py (--clock cpu on a shared CPU)",
                    r.loop_work.median_us
                ),
            ));
        }
        let k = r.config.grad_accum as f64;
        let m = r.structure.modules as f64;
        rows.push((vec![k, k * m, 1.0, m], t));
    }
    let first = records.first().ok_or_else(|| {
        invalid(
            "--loop",
            "no step records: give step_overhead.py records (scripts/trace/step-grid.txt)"
                .to_string(),
        )
    })?;
    let fit = fit_linear(
        "loop",
        vec![
            "s per micro-batch",
            "s per module per micro-batch",
            "s per step",
            "s per module per step",
        ],
        &rows,
    )
    .ok_or_else(|| {
        invalid(
            "--loop",
            format!(
                "{} records cannot fit 4 loop costs; give at least 4 (scripts/trace/step-grid.txt \
                 has 38)",
                rows.len()
            ),
        )
    })?;
    Ok(LoopFit {
        fit,
        device: device.unwrap_or_default(),
        torch: first.0.provenance.torch.clone(),
        transformers: first.0.provenance.transformers.clone(),
    })
}

/// `base` profile text with its `[host]` loop keys set from the fit (added when absent) and its
/// name replaced by `name`; parsed back before it is returned.
pub fn write_loop_profile(base: &str, name: &str, f: &LoopFit, date: &str) -> Result<String> {
    let src = |what: &str| {
        format!(
            "calibrated: a Trainer loop's work {what}, NNLS over the median loop work within \
             Trainer steps of {} step_overhead.py runs, transformers {} + torch \
             {} on {} (R² {:.3}, worst {:.0}%), {date}",
            f.fit.n,
            f.transformers,
            f.torch,
            f.device,
            f.fit.r2,
            100.0 * f.fit.worst_rel
        )
    };
    let keys = [
        HostKey::new("loop-micro-batch", f.fit.coef[0], src("per micro-batch")),
        HostKey::new(
            "loop-module",
            f.fit.coef[1],
            src("per nn.Module per micro-batch"),
        ),
        HostKey::new("loop-step", f.fit.coef[2], src("per optimizer step")),
        HostKey::new(
            "loop-step-module",
            f.fit.coef[3],
            src("per nn.Module per optimizer step"),
        ),
    ];
    set_host_keys(base, name, &keys, &[])
}

/// The fit as text: coefficients in µs with 95% intervals, R², worst residual.
pub fn render(f: &LoopFit) -> String {
    let coefs: Vec<String> = f
        .fit
        .names
        .iter()
        .zip(&f.fit.coef)
        .zip(&f.fit.ci95)
        .map(|((n, c), ci)| {
            let n = n.trim_start_matches("s ");
            if ci.is_finite() {
                format!("{:.2} ± {:.2} µs {n}", c * 1e6, ci * 1e6)
            } else {
                format!("{:.2} µs {n}", c * 1e6)
            }
        })
        .collect();
    format!(
        "Trainer loop costs from {} step records on {} (torch {}, transformers {}):\n  R² {:.3}  \
         worst {:.0}%  {}\n",
        f.fit.n,
        f.device,
        f.torch,
        f.transformers,
        f.fit.r2,
        100.0 * f.fit.worst_rel,
        coefs.join("; ")
    )
}

/// The configuration a record ran, as costsim predicts it: the record's model, method, batch,
/// sequence, micro-batches and optimizer, fp32, eager, under a Trainer loop.
pub fn config_of_step(
    r: &StepRecord,
    origin: &str,
    hw: &costsim_hardware::Profile,
) -> Result<Config> {
    let (model, method, workload) = config_parts(r, origin)?;
    Ok(Config {
        model,
        method,
        workload,
        hw: hw.clone(),
    })
}

/// [`config_of_step`] but for the device; errors name the file and the record's key.
fn config_parts(r: &StepRecord, origin: &str) -> Result<(ModelConfig, MethodSpec, Workload)> {
    let m = r.model.as_ref().ok_or_else(|| {
        invalid(
            origin,
            "the record has no model (hf_config): regenerate it with scripts/trace/step_overhead.py"
                .to_string(),
        )
    })?;
    let mut model = parse_hf_config(&m.hf_config.to_string(), origin)?;
    model.name = m.preset.clone();
    model.dropout = 0.0;
    model
        .validate()
        .map_err(|e| keyed(origin, "model.hf_config", e))?;
    let c = &r.config;
    let name = method_of(c, origin)?;
    let targets = targets_of(&c.targets).ok_or_else(|| {
        invalid(
            origin,
            format!("config.targets '{}' is not qv or all", c.targets),
        )
    })?;
    let opts = MethodOptions {
        rank: c.rank,
        alpha: None,
        dropout: Some(0.0),
        targets: Some(targets),
        adapter_dtype: Some(AdapterDtype::Fp32),
        layers: Some(
            layers_from(c.lowest_trained_layer, &model)
                .map_err(|e| invalid(origin, format!("config.lowest_trained_layer: {e}")))?,
        ),
    };
    let method = MethodSpec::resolve(name, &opts, &model, false)
        .map_err(|e| keyed(origin, "config (method, rank, targets)", e))?;
    let optimizer = optimizer_of(r, origin)?;
    let grad_accum = u32::try_from(c.grad_accum)
        .map_err(|_| invalid(origin, format!("grad_accum {} too large", c.grad_accum)))?;
    let workload = Workload {
        batch: c.batch,
        seq: c.seq,
        grad_accum,
        precision: Precision::Fp32,
        attention: AttentionImpl::Sdpa,
        optimizer,
        grad_checkpointing: false,
        grad_clip: true,
        runtime: Runtime::PytorchEager,
        training_loop: TrainingLoop::Trainer,
        // step_overhead.py hands the Trainer its own AdamW over every trainable tensor.
        param_groups: ParamGroups::One,
    };
    workload
        .validate(&model)
        .map_err(|e| keyed(origin, "config (batch, seq)", e))?;
    Ok((model, method, workload))
}

/// A Trainer step predicted against one record, ms per optimizer step.
#[derive(Debug, Clone, Serialize)]
pub struct StepComparison {
    pub name: String,
    pub source: String,
    /// The whole Trainer step: costsim's `step_ms` against the Trainer's median period.
    pub trainer_step: Pair,
    /// The same step in a bare loop: costsim's step less the loop's GPU time against the bare
    /// loop's median.
    pub bare_step: Pair,
    /// The loop's own host work: `loop_host_ms` against the work timed within Trainer steps.
    pub loop_work: Pair,
}

/// Predict one record on `hw` and set it against the measurement.
pub fn compare_step(
    r: &StepRecord,
    origin: &str,
    hw: &costsim_hardware::Profile,
) -> Result<StepComparison> {
    let cfg = config_of_step(r, origin, hw)?;
    let p = predict(&cfg, Detail::default(), None);
    let c = &r.config;
    let model = if c.preset.starts_with(&c.family) {
        c.preset.clone()
    } else {
        format!("{}-{}", c.family, c.preset)
    };
    Ok(StepComparison {
        name: format!(
            "{model} {} {} b{}×s{} ×{}",
            c.method, c.targets, c.batch, c.seq, c.grad_accum
        ),
        source: origin.to_string(),
        trainer_step: Pair {
            predicted: p.step_ms,
            traced: r.trainer.median_us / 1e3,
        },
        bare_step: Pair {
            predicted: p.step_ms - p.loop_ms,
            traced: r.bare.median_us / 1e3,
        },
        loop_work: Pair {
            predicted: p.loop_host_ms,
            traced: r.loop_work.median_us / 1e3,
        },
    })
}

/// One line per record, then the mean absolute percentage error of each quantity.
pub fn render_steps(cmps: &[StepComparison]) -> String {
    let mut s = format!(
        "{:<44} {:>24} {:>24} {:>24}\n",
        "Trainer steps, ms (predicted/measured)", "Trainer step", "bare step", "loop work"
    );
    let cell = |p: &Pair| {
        format!(
            "{:.2}/{:.2} {:+.1}%",
            p.predicted,
            p.traced,
            100.0 * p.error()
        )
    };
    for c in cmps {
        s.push_str(&format!(
            "{:<44} {:>24} {:>24} {:>24}\n",
            c.name,
            cell(&c.trainer_step),
            cell(&c.bare_step),
            cell(&c.loop_work)
        ));
    }
    if !cmps.is_empty() {
        let mape = |f: &dyn Fn(&StepComparison) -> Pair| {
            100.0 * cmps.iter().map(|c| f(c).error().abs()).sum::<f64>() / cmps.len() as f64
        };
        s.push_str(&format!(
            "MAPE over {} records: Trainer step {:.1}%, bare step {:.1}%, loop work {:.1}%\n",
            cmps.len(),
            mape(&|c| c.trainer_step),
            mape(&|c| c.bare_step),
            mape(&|c| c.loop_work)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(accum: u64, modules: u64, bare_us: f64, loop_us: f64) -> StepRecord {
        let stat = |us: f64| Stat {
            min_us: us,
            median_us: us,
            n: 40,
        };
        StepRecord {
            schema: SCHEMA.into(),
            provenance: StepProvenance {
                torch: "2.11.0".into(),
                transformers: "5.17.0".into(),
                device: "cpu".into(),
                threads: Some(1),
            },
            config: StepConfig {
                family: "gpt2".into(),
                preset: "micro1".into(),
                method: "full".into(),
                targets: "all".into(),
                rank: None,
                lowest_trained_layer: 0,
                batch: 1,
                seq: 8,
                grad_accum: accum,
                trainable_tensors: 16,
            },
            structure: Structure {
                modules,
                parameters: 16,
            },
            model: None,
            optimizer: None,
            bare: stat(bare_us),
            trainer: stat(bare_us + loop_us),
            loop_work: stat(loop_us),
            phases: BTreeMap::new(),
        }
    }

    #[test]
    fn known_loop_costs_are_recovered() {
        // 300 µs per micro-batch, 2 µs per module per micro-batch, 50 µs per step, 0.5 µs per
        // module per step.
        let truth =
            |k: u64, m: u64| 300.0 * k as f64 + 2.0 * (k * m) as f64 + 50.0 + 0.5 * m as f64;
        let recs: Vec<(StepRecord, String)> = [(1, 21), (1, 63), (1, 112), (4, 34), (4, 116)]
            .into_iter()
            .map(|(k, m)| (record(k, m, 2000.0, truth(k, m)), format!("{k}x{m}")))
            .collect();
        let f = fit_loop(&recs).unwrap();
        for (got, want) in f.fit.coef.iter().zip([300e-6, 2e-6, 50e-6, 0.5e-6]) {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
        // Written into a profile, read back as the same seconds.
        let base = costsim_hardware::BUILTIN
            .iter()
            .find(|(n, _)| *n == "h200")
            .unwrap()
            .1;
        let text = write_loop_profile(base, "h200-loop", &f, "2026-11-29").unwrap();
        let p = costsim_hardware::parse_profile(&text, "test").unwrap();
        assert!((p.host.loop_micro_batch_s - 300e-6).abs() < 1e-9);
        assert!((p.host.loop_module_s - 2e-6).abs() < 1e-9);
        assert!((p.host.loop_step_s - 50e-6).abs() < 1e-9);
        assert!((p.host.loop_step_module_s - 0.5e-6).abs() < 1e-9);
        assert_eq!(p.name, "h200-loop");
    }

    /// `record` with its model: a one-block GPT-2 micro config, as step_overhead.py writes it.
    fn with_model(mut r: StepRecord) -> StepRecord {
        r.model = Some(StepModel {
            family: "gpt2".into(),
            preset: "micro1".into(),
            hf_config: serde_json::json!({
                "model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2,
                "vocab_size": 64, "n_positions": 64
            }),
        });
        r
    }

    #[test]
    fn a_record_is_predicted_as_its_configuration_and_set_against_its_times() {
        // The H200 profile carries a Trainer loop's costs, which a micro model's idle GPU waits
        // for: the loop's GPU time is not 0.
        let hw = costsim_hardware::resolve_device("h200").unwrap();
        let r = with_model(record(2, 21, 2000.0, 500.0));
        let cmp = compare_step(&r, "r.json", &hw).unwrap();
        let cfg = config_of_step(&r, "r.json", &hw).unwrap();
        assert_eq!(
            (
                cfg.workload.batch,
                cfg.workload.seq,
                cfg.workload.grad_accum
            ),
            (1, 8, 2)
        );
        assert_eq!(cfg.model.layers, 1);
        let p = predict(&cfg, Detail::default(), None);
        // Measured in µs, compared in ms: the Trainer's period 2500 µs, the bare loop's 2000,
        // the loop's own work 500.
        assert_eq!(cmp.trainer_step.predicted, p.step_ms);
        assert_eq!(cmp.trainer_step.traced, 2.5);
        assert_eq!(cmp.bare_step.predicted, p.step_ms - p.loop_ms);
        assert_eq!(cmp.bare_step.traced, 2.0);
        assert!(p.loop_ms > 0.0);
        assert_eq!(cmp.loop_work.predicted, p.loop_host_ms);
        assert_eq!(cmp.loop_work.traced, 0.5);
        assert_eq!(cmp.name, "gpt2-micro1 full all b1×s8 ×2");
    }

    /// A record without a rank (written before the field) takes the method's default; an
    /// explicit 0 is refused when the record is read, naming the file and key, as traces refuse
    /// it (it was the default silently until 2026-11-30).
    #[test]
    fn a_records_missing_rank_is_the_methods_default_and_zero_is_refused() {
        let hw = costsim_hardware::resolve_device("cpu").unwrap();
        let mut r = with_model(record(1, 21, 2000.0, 500.0));
        r.config.method = "lora".into();
        r.config.rank = None;
        assert_eq!(config_of_step(&r, "r", &hw).unwrap().method.rank, 8);
        r.config.rank = Some(4);
        assert_eq!(config_of_step(&r, "r", &hw).unwrap().method.rank, 4);
        r.config.rank = Some(0);
        let text = serde_json::to_string(&r).unwrap();
        let err = parse_step_record(&text, "r0.json").unwrap_err().to_string();
        assert!(err.contains("r0.json") && err.contains("config"), "{err}");
        assert!(
            !err.contains("--rank"),
            "names the record's key, not a flag: {err}"
        );
        // No model: the fix is named.
        r.model = None;
        let err = config_of_step(&r, "r", &hw).unwrap_err().to_string();
        assert!(err.contains("step_overhead.py"), "{err}");
    }

    /// What `validate --steps` refuses, every reader refuses when the record is read
    /// (`calibrate --loop` fitted from such records), naming the file and key.
    #[test]
    fn a_records_configuration_is_checked_when_read() {
        let text = |r: &StepRecord| serde_json::to_string(r).unwrap();
        for with_model_too in [false, true] {
            let base = if with_model_too {
                with_model(record(1, 21, 2000.0, 500.0))
            } else {
                record(1, 21, 2000.0, 500.0)
            };
            assert!(parse_step_record(&text(&base), "ok.json").is_ok());
            let mut batch0 = base.clone();
            batch0.config.batch = 0;
            let mut qlora = base.clone();
            qlora.config.method = "qlora".into();
            let mut sgd = base.clone();
            sgd.optimizer = Some("sgd".into());
            for (bad, key) in [(batch0, "config"), (qlora, "config.method"), (sgd, "sgd")] {
                let err = parse_step_record(&text(&bad), "bad.json")
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("bad.json") && err.contains(key), "{err}");
                assert!(
                    !err.contains("--batch") && !err.contains("--method"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn records_are_checked_when_read() {
        let text = |r: &StepRecord| serde_json::to_string(r).unwrap();
        let ok = record(1, 21, 2000.0, 500.0);
        assert!(parse_step_record(&text(&ok), "ok").is_ok());
        // A record written before `targets` existed reads as all-linear.
        let mut v: serde_json::Value = serde_json::from_str(&text(&ok)).unwrap();
        v["config"].as_object_mut().unwrap().remove("targets");
        assert_eq!(
            parse_step_record(&v.to_string(), "old")
                .unwrap()
                .config
                .targets,
            "all"
        );
        let mut bad = ok.clone();
        bad.schema = "costsim-step-overhead/1".into();
        let err = parse_step_record(&text(&bad), "s.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("schema") && err.contains("step_overhead.py"),
            "{err}"
        );
        // Each bound of the bare and Trainer times: 1 ns or more, finite, under 1000 s.
        for v in [0.0, -1.0, 5e-324, 9.9e-4, 1e9, 2e9, 1e308] {
            for which in ["bare", "trainer"] {
                let mut r = ok.clone();
                let st = if which == "bare" {
                    &mut r.bare
                } else {
                    &mut r.trainer
                };
                st.median_us = v;
                let err = parse_step_record(&text(&r), "t.json")
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains(&format!("{which}.median_us must be 1 ns")),
                    "{which} {v}: {err}"
                );
                assert!(err.len() < 200, "a huge number is written short: {err}");
            }
        }
        let mut r = ok.clone();
        r.bare.min_us = 999_999_999.0;
        assert!(parse_step_record(&text(&r), "max").is_ok());
    }

    #[test]
    fn records_from_two_devices_are_not_fitted_together() {
        let mut other = record(1, 63, 2000.0, 700.0);
        other.provenance.device = "cuda".into();
        let recs = vec![
            (record(1, 21, 2000.0, 500.0), "a".to_string()),
            (other, "b".to_string()),
            (record(4, 34, 2000.0, 900.0), "c".to_string()),
        ];
        let err = fit_loop(&recs).unwrap_err().to_string();
        assert!(err.contains("cuda") && err.contains("cpu"), "{err}");
    }

    #[test]
    fn a_record_without_positive_loop_work_is_refused() {
        let recs = vec![
            (record(1, 21, 2000.0, 500.0), "a".to_string()),
            (record(1, 63, 2000.0, -10.0), "b".to_string()),
            (record(4, 34, 2000.0, 900.0), "c".to_string()),
        ];
        let err = fit_loop(&recs).unwrap_err().to_string();
        assert!(err.contains("b") && err.contains("rerun"), "{err}");
    }
}
