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

/// The kinds of JSON file costsim reads, told apart by their `schema`, and the command that
/// reads each.
const KINDS: [(&str, &str); 4] = [
    ("a results file", "`costsim validate --from`"),
    ("calibration samples", "`costsim calibrate --from`"),
    (
        "a trace",
        "`costsim validate --trace` (or `calibrate --host`)",
    ),
    (
        "a Trainer step record",
        "`costsim validate --steps` (or `calibrate --loop`)",
    ),
];

/// The error for `text` that did not parse as `expected` (one of [`KINDS`]' names): when the
/// file is another kind that costsim reads, that is what it says, with the command that reads
/// it; otherwise the parser's message (`e`).
pub(crate) fn parse_error(
    text: &str,
    kind: &'static str,
    expected: usize,
    path: &str,
    e: &serde_json::Error,
) -> Error {
    let found = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| match &v["schema"] {
            serde_json::Value::Number(_) if v.get("records").is_some() => Some(0),
            serde_json::Value::Number(_) if v.get("samples").is_some() => Some(1),
            serde_json::Value::String(s) if s.starts_with("costsim-trace/") => Some(2),
            serde_json::Value::String(s) if s.starts_with("costsim-step-overhead/") => Some(3),
            _ => None,
        });
    match found {
        Some(k) if k != expected => Error::InvalidArgument {
            what: path.to_string(),
            message: format!(
                "this is {}, not {}; read it with {}",
                KINDS[k].0, KINDS[expected].0, KINDS[k].1
            ),
        },
        _ => Error::Parse {
            kind,
            path: path.to_string(),
            line: e.line(),
            message: e.to_string(),
        },
    }
}

/// Errors of the validate crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read results {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed {kind} {path} line {line}: {message}")]
    Parse {
        /// What the file was read as: "results file", "trace", "step record", ...
        kind: &'static str,
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
