//! costsim-model: the analytical cost model of a fine-tuning step.
//!
//! Given an architecture ([`arch`]), a method ([`method`]), a workload ([`workload`]) and a
//! hardware profile (`costsim-hardware`), it builds the ordered per-kernel graph that PyTorch eager
//! launches for one training step ([`graph`]), costs every kernel against the device
//! ([`cost`]), simulates the host issuing kernels and the GPU running them ([`simulate`]), and
//! reports time, bounds and memory ([`predict()`]).
//!
//! Units: FLOPs count floating-point operations (a multiply-add is 2), never MACs; bytes are
//! bytes; times are seconds inside the crate and milliseconds (`_ms`) or microseconds (`_us`) in
//! reports. Sources: the reference notes `paper.md`, `kernels.md`, `gpus.md` (docs/sources.md); docs/model.md gives
//! every formula.

pub mod arch;
pub mod cost;
pub mod crossover;
pub mod fit;
pub mod graph;
pub mod l2;
pub mod method;
pub mod predict;
pub mod rescale;
pub mod simulate;
pub mod sweep;
pub mod training_loop;
pub mod workload;

pub use arch::{preset, Family, ModelConfig, PRESETS};
pub use method::{MethodName, MethodOptions, MethodSpec};
pub use predict::{predict, predict_with_graph, Amount, Config, ConfigRef, Detail, Prediction};
pub use training_loop::TrainingLoop;
pub use workload::{AttentionImpl, Optimizer, ParamGroups, Precision, Runtime, Workload};

use std::path::PathBuf;

/// A number as a message shows it: as Rust writes it from 10⁻⁶ to below 10¹⁵ (and 0), else in
/// scientific notation, so that `--dropout 1e300` is not echoed as 301 digits.
pub fn shown(v: f64) -> String {
    if v == 0.0 || (1e-6..1e15).contains(&v.abs()) || !v.is_finite() {
        v.to_string()
    } else {
        format!("{v:e}")
    }
}

#[cfg(test)]
mod shown_tests {
    use super::shown;

    #[test]
    fn large_and_tiny_numbers_are_shown_short() {
        assert_eq!(shown(0.25), "0.25");
        assert_eq!(shown(-3.0), "-3");
        assert_eq!(shown(0.0), "0");
        assert_eq!(shown(1e300), "1e300");
        assert_eq!(shown(-1e300), "-1e300");
        assert_eq!(shown(5e-324), "5e-324");
        assert_eq!(shown(f64::NAN), "NaN");
        assert_eq!(shown(f64::INFINITY), "inf");
        assert_eq!(shown(123_456_789_012_345.0), "123456789012345");
    }
}

/// Errors of the model crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unknown model '{name}'{hint}; known models: {known} (or pass --model-config config.json)"
    )]
    UnknownModel {
        name: String,
        hint: String,
        known: String,
    },
    #[error("invalid model {name}: {message}")]
    InvalidModel { name: String, message: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed config {path} line {line}: {message}")]
    ConfigParse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("unusable config {path}: {message}")]
    ConfigField { path: String, message: String },
    #[error("invalid {what}: {message}")]
    InvalidArgument { what: String, message: String },
    #[error(transparent)]
    Hardware(#[from] costsim_hardware::Error),
}

/// Result alias of the model crate.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn nearest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    costsim_hardware::nearest(word, candidates)
}
