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
    Measured(Measured),
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

impl ResultsFile {
    /// Read a results file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = costsim_hardware::input::read_text(path, "results file").map_err(|source| {
            Error::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
        let file: Self = serde_json::from_str(&text).map_err(|e| Error::Parse {
            path: path.display().to_string(),
            line: e.line(),
            message: e.to_string(),
        })?;
        if file.schema != SCHEMA {
            return Err(Error::Parse {
                path: path.display().to_string(),
                line: 1,
                message: format!("schema {} is not the supported {SCHEMA}", file.schema),
            });
        }
        Ok(file)
    }

    /// Write atomically: to a temporary name beside the target, then rename.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        let tmp = path.with_extension("json.tmp");
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::write(&tmp, text + "\n").map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
