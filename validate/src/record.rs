//! Records of a measurement run, as written to `results.json`.

use crate::{Error, Result};
use costsim_model::method::LayerSelection;
use costsim_model::{MethodName, ModelConfig, Precision};
use serde::{Deserialize, Serialize};

/// Format version of results files.
pub const SCHEMA: u32 = 1;

/// A whole run: where it ran and every configuration measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResultsFile {
    pub schema: u32,
    /// `cpu (N threads)` or the GPU's name.
    pub device: String,
    /// `cpu` or `cuda:N`.
    pub device_kind: String,
    /// Hardware profile the comparison uses by default (`cpu-generic`, `h200`, ...).
    pub profile: String,
    pub torch_version: String,
    pub git_commit: String,
    /// UTC, RFC 3339.
    pub timestamp: String,
    /// The command that produced the file.
    pub command: String,
    pub records: Vec<Record>,
}

/// One configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub model: ModelConfig,
    pub method: MethodName,
    /// LoRA rank or PaCA columns (0 for full).
    pub rank: u64,
    pub layers: LayerSelection,
    pub batch: u64,
    pub seq: u64,
    pub precision: Precision,
    pub warmup: u32,
    pub reps: u32,
    pub outcome: Outcome,
}

/// What happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Outcome {
    Measured(Box<Measured>),
    /// The device ran out of memory (set against the model's fit prediction).
    OutOfMemory {
        message: String,
    },
    Failed {
        message: String,
    },
}

/// Timing of one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Measured {
    pub forward: Stats,
    pub backward: Stats,
    pub optimizer: Stats,
    pub step: Stats,
    /// Ops the harness issued (each a kernel launch on CUDA), per phase; backward ops are issued
    /// by the autograd engine and are not counted, except PaCA's explicit dP ops.
    pub forward_ops: u64,
    pub backward_explicit_ops: u64,
    pub optimizer_ops: u64,
    pub final_loss: f64,
    /// Microbenchmark of one block alone (the top block, which trains in every method).
    #[serde(default)]
    pub layer: Option<LayerBench>,
}

/// Forward and backward of one block in isolation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerBench {
    /// 0-based block index.
    pub block: usize,
    pub forward: Stats,
    /// Backward of the block for an upstream gradient (plus one M×d multiply that seeds it).
    pub backward: Stats,
}

/// Statistics of repeated timings, milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub reps: u32,
}

impl Stats {
    /// Statistics of samples in seconds.
    pub fn from_seconds(samples: &[f64]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|s| s * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let pos = p * (ms.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            ms[lo] + (ms[hi] - ms[lo]) * (pos - lo as f64)
        };
        Self {
            median_ms: q(0.5),
            p10_ms: q(0.1),
            p90_ms: q(0.9),
            min_ms: ms.first().copied().unwrap_or(0.0),
            max_ms: ms.last().copied().unwrap_or(0.0),
            reps: ms.len() as u32,
        }
    }

    /// Relative spread (p90 − p10) / median.
    pub fn spread(&self) -> f64 {
        if self.median_ms > 0.0 {
            (self.p90_ms - self.p10_ms) / self.median_ms
        } else {
            0.0
        }
    }
}

/// Most records one comparison reads: 2,000. A measurement run of the whole paper grid is a few
/// hundred; the comparison ranks every pair of methods of a configuration, so the work grows with
/// the square of the records that share one.
pub const MAX_RECORDS: usize = 2_000;

/// A measured time in a results file: 1 ns to 10^9 ms (11.6 days). Outside it a record is
/// corrupt or hand-edited: 1e-320 ms would make every error infinite, 1e308 ms overflow the
/// percentage, a negative time has no meaning.
pub const TIME_MS: costsim_hardware::Range = costsim_hardware::Range {
    min: 1e-6,
    max: 1e9,
    unit: "ms",
    why: "a measured time from 1 ns to 11.6 days",
};

impl Stats {
    /// Every field a real time, the median inside [`TIME_MS`]; `key` names the stats in errors.
    pub fn check(&self, key: &str) -> std::result::Result<(), String> {
        for (field, v) in [
            ("median_ms", self.median_ms),
            ("p10_ms", self.p10_ms),
            ("p90_ms", self.p90_ms),
            ("min_ms", self.min_ms),
            ("max_ms", self.max_ms),
        ] {
            TIME_MS.check(&format!("{key}.{field}"), v)?;
        }
        if self.reps == 0 {
            return Err(format!(
                "{key}.reps = 0: statistics of no timings; a measurement has at least one"
            ));
        }
        // Order statistics of one sample: min ≤ p10 ≤ median ≤ p90 ≤ max.
        let order = [
            ("min_ms", self.min_ms),
            ("p10_ms", self.p10_ms),
            ("median_ms", self.median_ms),
            ("p90_ms", self.p90_ms),
            ("max_ms", self.max_ms),
        ];
        for w in order.windows(2) {
            let ((a, x), (b, y)) = (w[0], w[1]);
            if x > y {
                return Err(format!(
                    "{key}.{a} = {x} is above {key}.{b} = {y}: the statistics of one set of \
                     timings are ordered min ≤ p10 ≤ median ≤ p90 ≤ max"
                ));
            }
        }
        Ok(())
    }
}

/// How far a measured step's median may sit from its phases' medians summed (forward +
/// backward + optimizer, timed apart in the same run): a factor of 2 either way. The committed
/// records lie within 0.93–1.14; outside, the step or a phase was not measured with the others.
pub const STEP_TO_PHASES: f64 = 2.0;

impl Record {
    /// Whether two records measured the same configuration: model, method, rank, trained
    /// layers, batch, sequence and precision.
    pub fn same_configuration(&self, o: &Record) -> bool {
        self.model == o.model
            && self.method == o.method
            && self.rank == o.rank
            && self.layers == o.layers
            && self.batch == o.batch
            && self.seq == o.seq
            && self.precision == o.precision
    }

    /// The record is one the harness could have written: a valid model, method and workload,
    /// and real times. The message names the key and the allowed values.
    pub fn check(&self) -> std::result::Result<(), String> {
        self.model
            .validate()
            .map_err(|e| format!("model: {e}; fix the model sizes"))?;
        let w = crate::compare::workload_of(self);
        w.validate(&self.model)
            .map_err(|e| format!("batch/seq: {e}"))?;
        if self.rank == 0 && self.method != MethodName::Full {
            return Err(format!(
                "rank = 0 for {}: the harness records the rank (LoRA's r, PaCA's columns) it \
                 ran; set it",
                self.method
            ));
        }
        crate::compare::method_of(self).map_err(|e| format!("method/rank/layers: {e}"))?;
        if let Outcome::Measured(m) = &self.outcome {
            for (key, s) in [
                ("outcome.forward", &m.forward),
                ("outcome.backward", &m.backward),
                ("outcome.optimizer", &m.optimizer),
                ("outcome.step", &m.step),
            ] {
                s.check(key)?;
            }
            let phases = m.forward.median_ms + m.backward.median_ms + m.optimizer.median_ms;
            let ratio = m.step.median_ms / phases;
            if !(1.0 / STEP_TO_PHASES..=STEP_TO_PHASES).contains(&ratio) {
                return Err(format!(
                    "outcome.step.median_ms = {} is {ratio:.2}× the phases' medians summed \
                     ({phases}): a step runs those three, so it cannot be more than \
                     {STEP_TO_PHASES}× off them; re-measure the record",
                    m.step.median_ms
                ));
            }
            if let Some(l) = &m.layer {
                if l.block >= self.model.layers as usize {
                    return Err(format!(
                        "outcome.layer.block = {} must be a block of the model (0 to {}); fix \
                         or remove the layer benchmark",
                        l.block,
                        self.model.layers - 1
                    ));
                }
                l.forward.check("outcome.layer.forward")?;
                l.backward.check("outcome.layer.backward")?;
            }
        }
        Ok(())
    }
}

/// `s` as it may be printed to a terminal or a table: line breaks and tabs become spaces, other
/// control characters are dropped.
pub fn printable(s: &mut String) {
    if s.chars().any(char::is_control) {
        *s = s
            .chars()
            .filter_map(|c| match c {
                '\n' | '\r' | '\t' => Some(' '),
                c if c.is_control() => None,
                c => Some(c),
            })
            .collect();
    }
}

impl ResultsFile {
    /// Read a results file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = costsim_hardware::input::read_text(path, "results file").map_err(|source| {
            Error::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and check results text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let file: Self = serde_json::from_str(text)
            .map_err(|e| crate::parse_error(text, "results file", 0, origin, &e))?;
        if file.schema != SCHEMA {
            return Err(Error::Parse {
                kind: "results file",
                path: origin.to_string(),
                line: 1,
                message: format!("schema {} is not the supported {SCHEMA}", file.schema),
            });
        }
        let mut file = file;
        file.make_printable();
        file.check(origin)?;
        Ok(file)
    }

    /// The file's text fields as they will be printed: line breaks and tabs made spaces, other
    /// control characters (a terminal's escape sequences) dropped, as config.json names are
    /// (an audit's results file cleared the screen and split table rows, 2026-11-30).
    fn make_printable(&mut self) {
        for f in [
            &mut self.device,
            &mut self.device_kind,
            &mut self.profile,
            &mut self.torch_version,
            &mut self.git_commit,
            &mut self.timestamp,
            &mut self.command,
        ] {
            printable(f);
        }
        for r in &mut self.records {
            printable(&mut r.model.name);
            match &mut r.outcome {
                Outcome::OutOfMemory { message } | Outcome::Failed { message } => {
                    printable(message)
                }
                Outcome::Measured(_) => {}
            }
        }
    }

    /// Check every record ([`Record::check`]) and that there is at least one; `origin` names
    /// the file in errors.
    pub fn check(&self, origin: &str) -> Result<()> {
        if self.records.is_empty() {
            return Err(Error::InvalidArgument {
                what: format!("results file {origin}"),
                message: "it holds no records; pass a file written by `costsim validate --out`"
                    .into(),
            });
        }
        if self.records.len() > MAX_RECORDS {
            return Err(Error::InvalidArgument {
                what: format!("results file {origin}"),
                message: format!(
                    "it holds {} records, more than the {MAX_RECORDS} one comparison reads; split \
                     it by model or device",
                    self.records.len()
                ),
            });
        }
        for (i, r) in self.records.iter().enumerate() {
            let what = || {
                format!(
                    "results file {origin}, record {i} ({} {} {}x{})",
                    r.model.name, r.method, r.batch, r.seq
                )
            };
            r.check().map_err(|message| Error::InvalidArgument {
                what: what(),
                message: format!("{message}; correct or remove the record"),
            })?;
            // A configuration measured twice would count twice in every error and ranking.
            if let Some(j) = self.records[..i]
                .iter()
                .position(|p| p.same_configuration(r))
            {
                return Err(Error::InvalidArgument {
                    what: what(),
                    message: format!(
                        "it repeats record {j}'s configuration; keep one measurement of each"
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records of distinct configurations (batch sizes 1 to n).
    fn distinct(n: u64) -> Vec<Record> {
        (1..=n)
            .map(|b| Record {
                batch: b,
                ..record()
            })
            .collect()
    }

    #[test]
    fn a_file_holds_one_to_two_thousand_records() {
        assert!(file(distinct(2_000)).check("f").is_ok());
        let err = file(vec![record(); 2_001])
            .check("f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("2001 records"), "{err}");
        assert!(file(vec![]).check("f").is_err());
    }

    #[test]
    fn the_spread_of_a_zero_median_is_zero() {
        let z = Stats::from_seconds(&[0.0, 0.0, 0.0]);
        assert_eq!(z.spread(), 0.0);
        // p10 1, median 1, p90 1.2 of ten timings with the largest at 3 ms: 0.2.
        let mut v = vec![1e-3; 9];
        v.push(3e-3);
        assert!((Stats::from_seconds(&v).spread() - 0.2).abs() < 1e-12);
    }

    #[test]
    fn quantiles() {
        let s = Stats::from_seconds(&[0.004, 0.001, 0.003, 0.002, 0.005]);
        assert_eq!(s.median_ms, 3.0);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 5.0);
        assert!((s.p10_ms - 1.4).abs() < 1e-12);
        assert!((s.p90_ms - 4.6).abs() < 1e-12);
        assert!((s.spread() - 3.2 / 3.0).abs() < 1e-12);
    }

    fn stats(ms: f64) -> Stats {
        Stats {
            median_ms: ms,
            p10_ms: ms,
            p90_ms: ms,
            min_ms: ms,
            max_ms: ms,
            reps: 3,
        }
    }

    fn record() -> Record {
        Record {
            model: costsim_model::preset("gpt2").expect("preset"),
            method: MethodName::Lora,
            rank: 8,
            layers: LayerSelection::All,
            batch: 1,
            seq: 128,
            precision: Precision::Fp32,
            warmup: 1,
            reps: 3,
            outcome: Outcome::Measured(Box::new(Measured {
                forward: stats(10.0),
                backward: stats(20.0),
                optimizer: stats(1.0),
                step: stats(31.0),
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
            device: "cpu".into(),
            device_kind: "cpu".into(),
            profile: "cpu-generic".into(),
            torch_version: "t".into(),
            git_commit: "g".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            command: "c".into(),
            records,
        }
    }

    fn err_of(edit: impl Fn(&mut Record)) -> String {
        let mut r = record();
        edit(&mut r);
        file(vec![record(), r])
            .check("r.json")
            .expect_err("refused")
            .to_string()
    }

    fn step(r: &mut Record) -> &mut Stats {
        match &mut r.outcome {
            Outcome::Measured(m) => &mut m.step,
            _ => unreachable!("the test record is measured"),
        }
    }

    #[test]
    fn a_sound_record_passes() {
        file(vec![record()]).check("r.json").expect("sound");
        // At the step's limits (twice and half the phases' 31 ms), and another configuration.
        for ms in [62.0, 15.5] {
            let mut r = record();
            *step(&mut r) = stats(ms);
            file(vec![r]).check("r.json").expect("within the factor");
        }
        let mut other = record();
        other.seq = 64;
        file(vec![record(), other])
            .check("r.json")
            .expect("two configurations");
    }

    #[test]
    fn hostile_records_are_refused_naming_file_record_and_key() {
        #[allow(clippy::type_complexity)]
        let cases: [(&str, Box<dyn Fn(&mut Record)>); 16] = [
            ("must all be positive", Box::new(|r| r.model.heads = 0)),
            ("must all be positive", Box::new(|r| r.model.layers = 0)),
            ("not divisible", Box::new(|r| r.model.heads = 7)),
            ("is above", Box::new(|r| r.model.vocab = u64::MAX)),
            ("batch size must be at least 1", Box::new(|r| r.batch = 0)),
            (
                "outcome.step.median_ms must be in ms",
                Box::new(|r| step(r).median_ms = 1e-320),
            ),
            (
                "outcome.step.median_ms must be in ms",
                Box::new(|r| step(r).median_ms = 1e308),
            ),
            (
                "outcome.step.median_ms must be in ms",
                Box::new(|r| step(r).median_ms = -5.0),
            ),
            ("rank 100000 exceeds", Box::new(|r| r.rank = 100_000)),
            ("rank = 0 for lora", Box::new(|r| r.rank = 0)),
            ("outcome.step.reps = 0", Box::new(|r| step(r).reps = 0)),
            (
                "outcome.step.median_ms = 31 is above outcome.step.p90_ms = 30",
                Box::new(|r| step(r).p90_ms = 30.0),
            ),
            (
                "outcome.step.min_ms = 32 is above outcome.step.p10_ms = 31",
                Box::new(|r| step(r).min_ms = 32.0),
            ),
            // 1 ms against 31 ms of phases; 63 ms just past twice.
            (
                "is 0.03× the phases' medians summed (31)",
                Box::new(|r| *step(r) = stats(1.0)),
            ),
            ("is 2.03× the phases'", Box::new(|r| *step(r) = stats(63.0))),
            // A second record of record 0's configuration (its times differ).
            (
                "it repeats record 0's configuration",
                Box::new(|r| *step(r) = stats(32.0)),
            ),
        ];
        for (want, edit) in cases {
            let err = err_of(edit);
            assert!(
                err.contains("results file r.json, record 1 (gpt2 lora"),
                "{err}"
            );
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn a_layer_benchmark_of_a_missing_block_is_refused() {
        let err = err_of(|r| {
            if let Outcome::Measured(m) = &mut r.outcome {
                m.layer = Some(LayerBench {
                    block: 12,
                    forward: stats(1.0),
                    backward: stats(2.0),
                });
            }
        });
        assert!(
            err.contains("outcome.layer.block = 12 must be a block of the model (0 to 11)"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_record_set_is_refused() {
        let err = file(vec![]).check("r.json").unwrap_err().to_string();
        assert!(
            err.contains("r.json") && err.contains("holds no records"),
            "{err}"
        );
    }
}
