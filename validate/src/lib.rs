//! costsim-validate: checks costsim's predictions against real training steps.
//!
//! - [`record`]: the serde records a measurement run writes (device, torch version, git commit,
//!   timestamp, full configuration, per-phase timing statistics or the failure, op counts).
//! - [`compare`]: predicted (runtime libtorch) vs measured, per phase and method, with mean
//!   absolute percentage error, worst case and ranking agreement. Works without libtorch, so
//!   `costsim validate --from results.json` runs on any build.
//! - `harness` (feature `tch`): builds GPT-2 and Llama models with random weights in libtorch,
//!   applies full fine-tuning, LoRA, PaCA and layer-selective training as the cost model describes
//!   them, and times forward, backward and optimizer steps on CPU or CUDA.

pub mod compare;
pub mod fit;
pub mod host;
pub mod ledger;
pub mod record;
pub mod steploop;
pub mod trace;

#[cfg(feature = "tch")]
pub mod harness;

#[cfg(feature = "tch")]
pub mod calibrate;

/// Errors of the validate crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read results {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed results file {path} line {line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("invalid {what}: {message}")]
    InvalidArgument { what: String, message: String },
    #[error("device: {0}")]
    Device(String),
    #[error("libtorch: {0}")]
    Torch(String),
    #[error(transparent)]
    Model(#[from] costsim_model::Error),
    #[error(transparent)]
    Hardware(#[from] costsim_hardware::Error),
}

/// Result alias of the validate crate.
pub type Result<T> = std::result::Result<T, Error>;
