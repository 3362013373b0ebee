//! GPU device profiles for costsim.
//!
//! A profile is a TOML file (see `docs/profiles.md`) holding a device's dense math peaks, memory
//! bandwidth and capacity, SM count, L2 size, the per-kernel launch floor, default achievable
//! efficiencies and the host (framework) costs per op. Every value carries its source: a
//! datasheet figure from `shared/reference/gpus.md`, a published measurement, a calibration run,
//! or the word "uncalibrated". The built-in profiles live in `hardware/profiles/*.toml` and are
//! compiled into the binary; `--hw FILE.toml` loads any other.
//!
//! Files are parsed into [`ProfileFile`] (serde, kebab-case, unknown keys rejected) and resolved
//! once into the plain [`Profile`] with SI units (FLOP/s, bytes/s, bytes, seconds).

pub mod input;
mod ranges;
mod user;

pub use ranges::*;
pub use user::{parse_user_profile, whole_profile_text, USER_SUPPLIED};

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Errors of the hardware crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unknown GPU '{name}'{hint}; known GPUs: {known} (or pass a profile file: --hw FILE.toml)"
    )]
    UnknownDevice {
        name: String,
        hint: String,
        known: String,
    },
    #[error("cannot read hardware profile {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed hardware profile {path}{line}: {message}")]
    Parse {
        path: PathBuf,
        line: String,
        message: String,
    },
    #[error("invalid hardware profile {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Result alias of the hardware crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Math modes a kernel can run in; each has its own dense peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MathMode {
    /// FP32 on CUDA cores (PyTorch's default for fp32 matmul: TF32 off).
    Fp32,
    /// TF32 tensor cores (fp32 storage).
    Tf32,
    /// BF16 tensor cores with fp32 accumulation.
    Bf16,
    /// FP16 tensor cores with fp32 accumulation.
    Fp16,
}

/// How a built-in or loaded profile came to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Provenance {
    /// Datasheet and published figures, defaults uncalibrated where marked.
    Datasheet,
    /// Fitted from microbenchmarks (`costsim calibrate`).
    Calibrated { note: String },
}

/// Classes of skinny GEMMs with their own narrow-dimension fill (`gemm-narrow-fill`), by the
/// GEMM's role in an nn.Linear (y = x·Wᵀ), which fixes its operands' layout, and its narrow
/// dimension (m × n × k, the smallest ≤ 64):
/// - `forward-n`, `forward-k`: y = x·Wᵀ, W a transposed view ("nt"): LoRA's A (n = r) and B (k = r);
/// - `dx-n`, `dx-k`: dX = dY·W, both row-major ("nn"): B's dX (n = r) and A's dX (k = r);
/// - `dw-m`, `dw-n`: dW = dYᵀ·X, dY a transposed view ("tn"): A's dW (m = r), B's and PaCA's
///   partial dW (n = r).
pub const NARROW_CLASSES: [&str; 6] = ["forward-n", "forward-k", "dx-n", "dx-k", "dw-m", "dw-n"];

/// A resolved device profile, SI units, no optional fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Canonical short name, e.g. `a100-80gb-sxm`.
    pub name: String,
    /// Marketing name, e.g. `NVIDIA A100 80GB SXM4`.
    pub display_name: String,
    pub aliases: Vec<String>,
    /// True for CPUs: each op runs on the thread that issues it, so host and device time add up
    /// instead of overlapping.
    pub synchronous: bool,
    /// Compute units: SMs of a GPU, cores of a CPU.
    pub sms: u32,
    pub boost_mhz: f64,
    /// Device memory capacity in bytes.
    pub memory_bytes: f64,
    /// L2 cache size in bytes.
    pub l2_bytes: f64,
    /// Dense peaks in FLOP/s.
    pub peak_fp32_flops: f64,
    pub peak_tf32_flops: f64,
    pub peak_bf16_flops: f64,
    pub peak_fp16_flops: f64,
    /// DRAM bandwidth in bytes/s.
    pub bandwidth_bps: f64,
    /// Achieved fraction of the math peak for large, well-shaped GEMMs.
    pub gemm_efficiency: f64,
    /// Achieved fraction of DRAM bandwidth for streaming kernels.
    pub bandwidth_efficiency: f64,
    /// Achieved fraction of the tensor-core peak for fused attention.
    pub attention_efficiency: f64,
    /// Attention efficiency by \[direction\]\[precision\]: \[forward, backward\] × [fp32, 16-bit];
    /// every entry `attention_efficiency` unless calibrated.
    pub attention_by: [[f64; 2]; 2],
    /// Achieved fraction of DRAM bandwidth for skinny (rank-r) GEMMs.
    pub small_gemm_bandwidth_efficiency: f64,
    /// Achieved fraction of DRAM bandwidth per memory-bound kernel kind.
    pub kind_bandwidth: KindBandwidth,
    /// Device time of a back-to-back tiny kernel, seconds.
    pub launch_floor_s: f64,
    /// Device time per kernel replayed from a CUDA graph, seconds.
    pub graph_launch_floor_s: f64,
    /// Device-side gap between queued kernels (GPUs): the launch floor is then a minimum period
    /// per kernel rather than an addition. None: additive floor (CPUs).
    pub kernel_gap_s: Option<f64>,
    /// Extra fixed time per GEMM call, seconds: fp32 and 16-bit (0 unless calibrated).
    pub gemm_floor_s: [f64; 2],
    /// CPUs (calibrated): fixed device time per optimizer op, fp32 and 16-bit tensors, seconds,
    /// in place of the launch floor. None: the launch floor.
    pub optimizer_op_s: Option<[f64; 2]>,
    /// CPUs (calibrated): the optimizer's rate by the size of the tensor an op updates,
    /// (tensor bytes, bytes/s) in increasing size, fp32 and 16-bit tensors; between two sizes
    /// the rate is interpolated in log size, outside them the nearest one's. None: the
    /// optimizer kind's bandwidth.
    pub optimizer_size_rate: Option<[Vec<(f64, f64)>; 2]>,
    /// CPUs (calibrated): a GEMM's per-call fill in rows of A, fp32 and 16-bit. With it the GEMM's
    /// math time is 2·batch·(m + m₀)·n·k / rate, as a CPU library runs an m×k by k×n product
    /// in register blocks of a few rows after packing B (n×k) once per call, work that a small m
    /// does not amortise; without it (GPUs) tile and wave quantization (`cost::gemm_math_time`).
    pub gemm_fill_rows: Option<[f64; 2]>,
    /// CPUs (calibrated): the fill of a skinny GEMM's narrow dimension (≤ 64), by dtype
    /// (fp32, 16-bit) and [`NARROW_CLASSES`] (the GEMM's role in nn.Linear's forward, dX or dW,
    /// which fixes its operands' layout, and which dimension is narrow). With it the math time of
    /// a GEMM in one of these classes (unbatched) is 2·m·n·k·(s + s₀)/s / rate, s the narrow dimension.
    pub gemm_narrow_fill: Option<[[f64; 6]; 2]>,
    /// Fixed time per tile of fused attention (a query block × key block of one batch × head
    /// slice, as PyTorch's CPU flash attention blocks it), seconds, by \[direction\]\[precision\]:
    /// [forward, backward] × [fp32, 16-bit] (0 unless calibrated; on this project's CPU the
    /// bf16 backward spends about 45 µs a tile beyond its FLOPs: five small GEMM calls).
    pub attention_tile_s: [[f64; 2]; 2],
    /// First-touch cost of fresh outputs: (bytes/s, minimum output bytes); None: free.
    pub first_touch: Option<(f64, f64)>,
    /// Host costs, seconds.
    pub host: HostCosts,
    pub provenance: Provenance,
    /// Where the file came from (`builtin:NAME` or a path).
    pub origin: String,
    /// Every value's source, keyed by the TOML key (`efficiency.gemm` ...).
    pub sources: Vec<(String, String)>,
    /// On-demand rental price, if the profile has one.
    pub price: Option<Price>,
}

/// A device's rental price per hour, with where and when it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub usd_per_hour: f64,
    pub source: String,
    /// YYYY-MM-DD, or None when the file gives no date.
    pub date: Option<String>,
}

/// Memory-bound kernel kinds with their own bandwidth efficiency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemKind {
    Elementwise,
    /// Dropout: elementwise, but bound by drawing random numbers on CPUs.
    Dropout,
    Cast,
    Reduction,
    Norm,
    Softmax,
    Gather,
    Scatter,
    Optimizer,
    /// Elementwise ops that evaluate a transcendental function per element (tanh, sin, cos,
    /// exp): on CPUs that arithmetic, not DRAM, bounds them (tanh ≈ 2.2 ns an fp32 element on
    /// this project's CPU, 12× an add; docs/host.md, the op ledger). Without a calibrated value
    /// a profile prices them as `elementwise`.
    Transcendental,
}

impl MemKind {
    pub const ALL: [MemKind; 10] = [
        Self::Elementwise,
        Self::Dropout,
        Self::Cast,
        Self::Reduction,
        Self::Norm,
        Self::Softmax,
        Self::Gather,
        Self::Scatter,
        Self::Optimizer,
        Self::Transcendental,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Elementwise => "elementwise",
            Self::Dropout => "dropout",
            Self::Cast => "cast",
            Self::Reduction => "reduction",
            Self::Norm => "norm",
            Self::Softmax => "softmax",
            Self::Gather => "gather",
            Self::Scatter => "scatter",
            Self::Optimizer => "optimizer",
            Self::Transcendental => "transcendental",
        }
    }
}

/// Achieved fractions of DRAM bandwidth per memory-bound kernel kind, for fp32 and for 16-bit
/// tensors. Without calibration every kind uses the profile's streaming `bandwidth` efficiency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindBandwidth {
    pub fp32: [f64; 10],
    pub half: [f64; 10],
}

impl KindBandwidth {
    /// Every kind at the same efficiency.
    pub fn uniform(e: f64) -> Self {
        Self {
            fp32: [e; 10],
            half: [e; 10],
        }
    }

    /// Efficiency of a kind; `half` for bf16/fp16 tensors.
    pub fn get(&self, kind: MemKind, half: bool) -> f64 {
        // `MemKind::ALL` lists the variants in declaration order.
        let i = kind as usize;
        if half {
            self.half[i]
        } else {
            self.fp32[i]
        }
    }
}

/// Host-side (framework) costs in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostCosts {
    /// One CUDA op issued from Python eager PyTorch.
    pub python_op_s: f64,
    /// One op issued from C++ (libtorch).
    pub cpp_op_s: f64,
    /// One `nn.Module.__call__` with the model code around it.
    pub module_call_s: f64,
    /// peft's Python per adapted module per forward.
    pub peft_module_s: f64,
    /// One node run by the C++ autograd engine in backward.
    pub autograd_node_s: f64,
    /// Python work per trainable tensor per optimizer step under pytorch-eager.
    pub optimizer_tensor_s: f64,
    /// A Trainer loop's own work per micro-batch, outside any op: fetching and collating the
    /// batch, moving it to the device, callbacks and bookkeeping (0 when not measured).
    pub loop_micro_batch_s: f64,
    /// A Trainer loop's work per nn.Module of the model per micro-batch: `model.train()` and
    /// the parameter walks of its FLOP count (0 when not measured).
    pub loop_module_s: f64,
    /// A Trainer loop's work per optimizer step beyond the optimizer's own ops: the scheduler,
    /// the clipping wrapper, callbacks (0 when not measured).
    pub loop_step_s: f64,
    /// A Trainer loop's work per nn.Module per optimizer step: `model.zero_grad()` walks every
    /// module's parameters (0 when not measured).
    pub loop_step_module_s: f64,
}

impl HostCosts {
    /// Whether any training-loop cost is set (`loop-*` keys): without one (the generic CPU
    /// profile), a Trainer loop's own host work is predicted as 0, not modelled.
    pub fn has_loop_costs(&self) -> bool {
        [
            self.loop_micro_batch_s,
            self.loop_module_s,
            self.loop_step_s,
            self.loop_step_module_s,
        ]
        .iter()
        .any(|&v| v != 0.0)
    }
}

impl Profile {
    /// Dense peak of a math mode, FLOP/s.
    pub fn peak_flops(&self, mode: MathMode) -> f64 {
        match mode {
            MathMode::Fp32 => self.peak_fp32_flops,
            MathMode::Tf32 => self.peak_tf32_flops,
            MathMode::Bf16 => self.peak_bf16_flops,
            MathMode::Fp16 => self.peak_fp16_flops,
        }
    }

    /// Achievable DRAM bandwidth for streaming kernels, bytes/s.
    pub fn achievable_bandwidth_bps(&self) -> f64 {
        self.bandwidth_bps * self.bandwidth_efficiency
    }

    /// True when every efficiency and host cost came from a calibration run.
    pub fn is_calibrated(&self) -> bool {
        matches!(self.provenance, Provenance::Calibrated { .. })
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.display_name)
    }
}

// ---------------------------------------------------------------------------------------------
// File format
// ---------------------------------------------------------------------------------------------

/// The TOML file as written on disk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProfileFile {
    pub device: DeviceSection,
    pub peak: PeakSection,
    pub efficiency: EfficiencySection,
    pub overheads: OverheadSection,
    pub host: HostSection,
    pub price: Option<PriceSection>,
    pub calibration: Option<CalibrationSection>,
}

/// `[price]`: what renting one such device costs, optional. A built-in price names a public
/// price list and the date it was read; prices change, so `--price` overrides it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PriceSection {
    /// On-demand price of one device for one hour, US dollars.
    pub usd_per_hour: f64,
    pub usd_per_hour_source: String,
    /// When the price was read (YYYY-MM-DD).
    pub usd_per_hour_date: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeviceSection {
    pub name: String,
    pub display_name: String,
    /// `gpu` (default) or `cpu`: a CPU runs ops synchronously on the issuing thread.
    pub kind: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub sms: u32,
    pub boost_mhz: f64,
    pub memory_gib: f64,
    pub l2_mib: f64,
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeakSection {
    pub fp32_tflops: f64,
    pub tf32_tflops: f64,
    pub bf16_tflops: f64,
    pub fp16_tflops: f64,
    pub bandwidth_gbps: f64,
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EfficiencySection {
    pub gemm: f64,
    pub gemm_source: String,
    pub bandwidth: f64,
    pub bandwidth_source: String,
    pub attention: f64,
    pub attention_source: String,
    /// Optional (calibrated profiles): attention with 16-bit inputs, and attention's backward,
    /// fp32 and 16-bit. Absent: `attention`.
    pub attention_bf16: Option<f64>,
    pub attention_backward: Option<f64>,
    pub attention_backward_bf16: Option<f64>,
    pub small_gemm_bandwidth: f64,
    pub small_gemm_bandwidth_source: String,
    /// Per-kernel-kind fractions of DRAM bandwidth (calibrated profiles); a kind left out uses
    /// `bandwidth`.
    pub kinds: Option<KindSection>,
}

/// `[efficiency.kinds]`: achieved fraction of DRAM bandwidth per memory-bound kernel kind, for
/// fp32 tensors (`norm = 0.5`) and for bf16/fp16 tensors (`norm-bf16 = 0.2`; default: the fp32
/// value). Calibrated profiles write them; a kind left out uses `bandwidth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KindSection {
    pub elementwise: Option<f64>,
    pub elementwise_bf16: Option<f64>,
    pub dropout: Option<f64>,
    pub dropout_bf16: Option<f64>,
    pub cast: Option<f64>,
    pub cast_bf16: Option<f64>,
    pub reduction: Option<f64>,
    pub reduction_bf16: Option<f64>,
    pub norm: Option<f64>,
    pub norm_bf16: Option<f64>,
    pub softmax: Option<f64>,
    pub softmax_bf16: Option<f64>,
    pub gather: Option<f64>,
    pub gather_bf16: Option<f64>,
    pub scatter: Option<f64>,
    pub scatter_bf16: Option<f64>,
    pub optimizer: Option<f64>,
    pub optimizer_bf16: Option<f64>,
    /// Default: the `elementwise` values (profiles calibrated before this kind existed price
    /// tanh as any elementwise op).
    pub transcendental: Option<f64>,
    pub transcendental_bf16: Option<f64>,
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OverheadSection {
    pub launch_floor_us: f64,
    pub launch_floor_source: String,
    pub graph_launch_floor_us: f64,
    pub graph_launch_floor_source: String,
    /// GPUs: device-side gap between back-to-back queued kernels, µs. With it the launch floor
    /// is a minimum period per kernel, t = max(work + gap, floor); without it (CPUs, where each
    /// op runs on the issuing thread) the floor is added, t = work + floor.
    pub kernel_gap_us: Option<f64>,
    pub kernel_gap_source: Option<String>,
    /// Extra fixed time per GEMM (calibrated CPU profiles: oneDNN's per-call setup), fp32 and
    /// 16-bit. Absent: 0.
    pub gemm_floor_us: Option<f64>,
    pub gemm_floor_bf16_us: Option<f64>,
    pub gemm_floor_source: Option<String>,
    /// CPUs: a GEMM's per-call fill in rows of A (B's packing, amortised over the rows), fp32
    /// and 16-bit (a 16-bit value left out takes the fp32 one). Absent: GPU-style tile and wave
    /// quantization.
    pub gemm_fill_rows: Option<f64>,
    pub gemm_fill_rows_bf16: Option<f64>,
    pub gemm_fill_source: Option<String>,
    /// CPUs: the narrow dimension's fill of a skinny GEMM, in elements of that dimension, per
    /// class in the order of [`NARROW_CLASSES`], fp32 and 16-bit (a 16-bit array left out takes
    /// the fp32 one). Absent: skinny GEMMs take the row fill and the skinny-GEMM bandwidth only.
    pub gemm_narrow_fill: Option<Vec<f64>>,
    pub gemm_narrow_fill_bf16: Option<Vec<f64>>,
    pub gemm_narrow_fill_source: Option<String>,
    /// Fixed time per tile of fused attention, µs, forward and backward, fp32 and 16-bit (a
    /// 16-bit value left out takes its direction's fp32 one). Absent: 0.
    pub attention_tile_us: Option<f64>,
    pub attention_tile_bf16_us: Option<f64>,
    pub attention_backward_tile_us: Option<f64>,
    pub attention_backward_tile_bf16_us: Option<f64>,
    pub attention_tile_source: Option<String>,
    /// CPUs: rate at which freshly allocated output memory is page-faulted in on first touch,
    /// GB/s, for outputs of at least `first-touch-min-mib` (default 32: glibc's largest
    /// mmap threshold, above which every allocation is a fresh mapping). Absent: no cost.
    pub first_touch_gbps: Option<f64>,
    pub first_touch_min_mib: Option<f64>,
    pub first_touch_source: Option<String>,
    /// CPUs: fixed device time per optimizer op, in place of the launch floor, µs, fp32 and
    /// 16-bit tensors (a 16-bit value left out takes the fp32 one; calibrate fits it on
    /// single-tensor AdamW over adapter-sized lists, less the dispatch cost). Absent: the
    /// launch floor.
    pub optimizer_op_us: Option<f64>,
    pub optimizer_op_bf16_us: Option<f64>,
    pub optimizer_op_source: Option<String>,
    /// CPUs: the optimizer's rate by the size of the tensor each op updates, as
    /// `[[tensor MiB, GB/s], ...]` in increasing size, fp32 and 16-bit tensors (the 16-bit
    /// table needs the fp32 one and defaults to it; calibrate measures single-tensor AdamW over
    /// lists of equal tensors, one size a list). Absent: the optimizer kind's bandwidth.
    pub optimizer_size_gbps: Option<Vec<[f64; 2]>>,
    pub optimizer_size_bf16_gbps: Option<Vec<[f64; 2]>>,
    pub optimizer_size_source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostSection {
    pub python_op_us: f64,
    pub python_op_source: String,
    pub cpp_op_us: f64,
    pub cpp_op_source: String,
    pub module_call_us: f64,
    pub module_call_source: String,
    pub peft_module_us: f64,
    pub peft_module_source: String,
    pub autograd_node_us: f64,
    pub autograd_node_source: String,
    /// Python work per trainable tensor per optimizer step (torch.optim's grouping loop,
    /// clip_grad_norm_'s and zero_grad's loops) under pytorch-eager. Optional: without it the
    /// C++ per-op cost stands in (the value every profile used before it was measured).
    pub optimizer_tensor_us: Option<f64>,
    pub optimizer_tensor_source: Option<String>,
    /// A Trainer loop's fixed work per micro-batch, per module per micro-batch and per
    /// optimizer step (`costsim calibrate --loop`, docs/host.md). Optional, each with its
    /// source: without them a Trainer loop costs nothing beyond its ops.
    pub loop_micro_batch_us: Option<f64>,
    pub loop_micro_batch_source: Option<String>,
    pub loop_module_us: Option<f64>,
    pub loop_module_source: Option<String>,
    pub loop_step_us: Option<f64>,
    pub loop_step_source: Option<String>,
    pub loop_step_module_us: Option<f64>,
    pub loop_step_module_source: Option<String>,
}

/// Present in profiles written by `costsim calibrate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CalibrationSection {
    pub date: String,
    pub device: String,
    pub libraries: String,
    pub fit: String,
}

impl ProfileFile {
    /// Validate and resolve into a [`Profile`]. `origin` names the file in errors.
    pub fn resolve(self, origin: &str) -> Result<Profile> {
        let invalid = |message: String| Error::Invalid {
            path: PathBuf::from(origin),
            message,
        };
        let d = &self.device;
        if d.name.trim().is_empty() {
            return Err(invalid("device.name is empty".into()));
        }
        let synchronous = match d.kind.as_deref() {
            None | Some("gpu") => false,
            Some("cpu") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "device.kind must be \"gpu\" or \"cpu\", got \"{other}\""
                )))
            }
        };
        for (text, key) in [
            (&d.name, "device.name"),
            (&d.display_name, "device.display-name"),
        ] {
            if text.chars().any(char::is_control) || text.len() > 200 {
                return Err(invalid(format!(
                    "{key} must be one line of at most 200 characters without control characters \
                     (got {text:?}); shorten it"
                )));
            }
        }
        let o = &self.overheads;
        let p = &self.peak;
        let ranged = [
            ("device.sms", f64::from(d.sms), &SMS),
            ("device.boost-mhz", d.boost_mhz, &CLOCK_MHZ),
            ("device.memory-gib", d.memory_gib, &MEMORY_GIB),
            ("device.l2-mib", d.l2_mib, &L2_MIB),
            ("peak.fp32-tflops", p.fp32_tflops, &PEAK_TFLOPS),
            ("peak.tf32-tflops", p.tf32_tflops, &PEAK_TFLOPS),
            ("peak.bf16-tflops", p.bf16_tflops, &PEAK_TFLOPS),
            ("peak.fp16-tflops", p.fp16_tflops, &PEAK_TFLOPS),
            ("peak.bandwidth-gbps", p.bandwidth_gbps, &BANDWIDTH_GBPS),
            ("overheads.launch-floor-us", o.launch_floor_us, &FLOOR_US),
            (
                "overheads.graph-launch-floor-us",
                o.graph_launch_floor_us,
                &FLOOR_US,
            ),
        ]
        .into_iter()
        .chain(
            [
                (
                    "overheads.first-touch-gbps",
                    o.first_touch_gbps,
                    &TOUCH_GBPS,
                ),
                (
                    "overheads.first-touch-min-mib",
                    o.first_touch_min_mib,
                    &TOUCH_MIN_MIB,
                ),
                ("overheads.optimizer-op-us", o.optimizer_op_us, &HOST_US),
                (
                    "overheads.optimizer-op-bf16-us",
                    o.optimizer_op_bf16_us,
                    &HOST_US,
                ),
            ]
            .into_iter()
            .filter_map(|(k, v, r)| v.map(|v| (k, v, r))),
        );
        for (key, v, range) in ranged {
            range.check(key, v).map_err(invalid)?;
        }
        let fractions = [
            ("efficiency.gemm", self.efficiency.gemm),
            ("efficiency.bandwidth", self.efficiency.bandwidth),
            ("efficiency.attention", self.efficiency.attention),
            (
                "efficiency.small-gemm-bandwidth",
                self.efficiency.small_gemm_bandwidth,
            ),
        ];
        let uniform = KindBandwidth::uniform(self.efficiency.bandwidth);
        let kind_bandwidth = match &self.efficiency.kinds {
            None => uniform,
            Some(k) => {
                let pairs = [
                    (k.elementwise, k.elementwise_bf16),
                    (k.dropout, k.dropout_bf16),
                    (k.cast, k.cast_bf16),
                    (k.reduction, k.reduction_bf16),
                    (k.norm, k.norm_bf16),
                    (k.softmax, k.softmax_bf16),
                    (k.gather, k.gather_bf16),
                    (k.scatter, k.scatter_bf16),
                    (k.optimizer, k.optimizer_bf16),
                ];
                let mut kb = uniform;
                for (i, (f, h)) in pairs.into_iter().enumerate() {
                    kb.fp32[i] = f.unwrap_or(self.efficiency.bandwidth);
                    kb.half[i] = h.unwrap_or(kb.fp32[i]);
                }
                let (t, e) = (
                    MemKind::Transcendental as usize,
                    MemKind::Elementwise as usize,
                );
                kb.fp32[t] = k.transcendental.unwrap_or(kb.fp32[e]);
                kb.half[t] = k.transcendental_bf16.unwrap_or(match k.transcendental {
                    Some(f) => f,
                    None => kb.half[e],
                });
                kb
            }
        };
        let kind_keys: Vec<(String, f64)> = MemKind::ALL
            .iter()
            .enumerate()
            .flat_map(|(i, k)| {
                [
                    (
                        format!("efficiency.kinds.{}", k.as_str()),
                        kind_bandwidth.fp32[i],
                    ),
                    (
                        format!("efficiency.kinds.{}-bf16", k.as_str()),
                        kind_bandwidth.half[i],
                    ),
                ]
            })
            .collect();
        let e = &self.efficiency;
        let attn_extra: Vec<(String, f64)> = [
            ("efficiency.attention-bf16", e.attention_bf16),
            ("efficiency.attention-backward", e.attention_backward),
            (
                "efficiency.attention-backward-bf16",
                e.attention_backward_bf16,
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
        let fractions: Vec<(String, f64)> = fractions
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(kind_keys)
            .chain(attn_extra)
            .collect();
        for (key, v) in fractions {
            EFFICIENCY.check(&key, v).map_err(invalid)?;
        }
        let h = &self.host;
        let host_values = [
            ("host.python-op-us", h.python_op_us),
            ("host.cpp-op-us", h.cpp_op_us),
            ("host.module-call-us", h.module_call_us),
            ("host.peft-module-us", h.peft_module_us),
            ("host.autograd-node-us", h.autograd_node_us),
        ];
        let optional = [
            (
                "host.optimizer-tensor",
                h.optimizer_tensor_us,
                &h.optimizer_tensor_source,
            ),
            (
                "host.loop-micro-batch",
                h.loop_micro_batch_us,
                &h.loop_micro_batch_source,
            ),
            ("host.loop-module", h.loop_module_us, &h.loop_module_source),
            ("host.loop-step", h.loop_step_us, &h.loop_step_source),
            (
                "host.loop-step-module",
                h.loop_step_module_us,
                &h.loop_step_module_source,
            ),
        ];
        for (key, v) in host_values.into_iter() {
            HOST_US.check(key, v).map_err(invalid)?;
        }
        for (key, v, source) in optional {
            if v.is_some() != source.is_some() {
                return Err(invalid(format!(
                    "{key}-us and {key}-source go together: give both or neither"
                )));
            }
            if let Some(v) = v {
                HOST_US.check(&format!("{key}-us"), v).map_err(invalid)?;
            }
        }
        {
            let o = &self.overheads;
            let (v, source) = (o.optimizer_op_us.is_some(), o.optimizer_op_source.is_some());
            if v != source || (o.optimizer_op_bf16_us.is_some() && !v) {
                return Err(invalid(
                    "overheads.optimizer-op-us and optimizer-op-source go together, and \
                     optimizer-op-bf16-us needs them: give optimizer-op-us with its source, or \
                     none of the three"
                        .into(),
                ));
            }
        }
        if self.overheads.kernel_gap_us.is_some() != self.overheads.kernel_gap_source.is_some() {
            return Err(invalid(
                "overheads.kernel-gap-us and overheads.kernel-gap-source go together: give both \
                 or neither"
                    .to_string(),
            ));
        }
        if let Some(g) = self.overheads.kernel_gap_us {
            if !(g.is_finite() && (0.0..=100.0).contains(&g)) {
                return Err(invalid(format!(
                    "overheads.kernel-gap-us must be between 0 and 100 µs, got {g}"
                )));
            }
        }
        let sources = vec![
            ("device".to_string(), d.source.clone()),
            ("peak".to_string(), self.peak.source.clone()),
            (
                "efficiency.gemm".to_string(),
                self.efficiency.gemm_source.clone(),
            ),
            (
                "efficiency.bandwidth".to_string(),
                self.efficiency.bandwidth_source.clone(),
            ),
            (
                "efficiency.attention".to_string(),
                self.efficiency.attention_source.clone(),
            ),
            (
                "efficiency.small-gemm-bandwidth".to_string(),
                self.efficiency.small_gemm_bandwidth_source.clone(),
            ),
            (
                "overheads.launch-floor".to_string(),
                self.overheads.launch_floor_source.clone(),
            ),
            (
                "overheads.graph-launch-floor".to_string(),
                self.overheads.graph_launch_floor_source.clone(),
            ),
            (
                "overheads.kernel-gap".to_string(),
                self.overheads.kernel_gap_source.clone().unwrap_or_else(|| {
                    "none: the launch floor adds to each op (a CPU runs it on the issuing thread)"
                        .to_string()
                }),
            ),
            ("host.python-op".to_string(), h.python_op_source.clone()),
            ("host.cpp-op".to_string(), h.cpp_op_source.clone()),
            ("host.module-call".to_string(), h.module_call_source.clone()),
            ("host.peft-module".to_string(), h.peft_module_source.clone()),
            (
                "host.autograd-node".to_string(),
                h.autograd_node_source.clone(),
            ),
            (
                "host.optimizer-tensor".to_string(),
                h.optimizer_tensor_source.clone().unwrap_or_else(|| {
                    "uncalibrated: the C++ per-op cost (cpp-op) per tensor, no measurement of \
                     torch.optim's Python loop on this profile"
                        .to_string()
                }),
            ),
        ];
        let loop_keys = [
            ("host.loop-micro-batch", &h.loop_micro_batch_source),
            ("host.loop-module", &h.loop_module_source),
            ("host.loop-step", &h.loop_step_source),
            ("host.loop-step-module", &h.loop_step_module_source),
        ];
        let sources: Vec<(String, String)> = sources
            .into_iter()
            .chain(loop_keys.into_iter().map(|(k, s)| {
                (
                    k.to_string(),
                    s.clone().unwrap_or_else(|| {
                        "not measured on this profile: a Trainer loop's own work costs 0 \
                         (costsim calibrate --loop measures it)"
                            .to_string()
                    }),
                )
            }))
            .collect();
        let mut sources = sources;
        let o = &self.overheads;
        let tiles = [
            o.attention_tile_us,
            o.attention_tile_bf16_us,
            o.attention_backward_tile_us,
            o.attention_backward_tile_bf16_us,
        ];
        for (key, v) in [
            ("overheads.gemm-floor-us", o.gemm_floor_us),
            ("overheads.gemm-floor-bf16-us", o.gemm_floor_bf16_us),
            ("overheads.attention-tile-us", tiles[0]),
            ("overheads.attention-tile-bf16-us", tiles[1]),
            ("overheads.attention-backward-tile-us", tiles[2]),
            ("overheads.attention-backward-tile-bf16-us", tiles[3]),
        ] {
            if let Some(v) = v {
                HOST_US.check(key, v).map_err(invalid)?;
            }
        }
        if o.first_touch_gbps.is_some() {
            sources.push((
                "overheads.first-touch".to_string(),
                o.first_touch_source.clone().unwrap_or_default(),
            ));
        }
        for (key, v) in [
            ("overheads.gemm-fill-rows", o.gemm_fill_rows),
            ("overheads.gemm-fill-rows-bf16", o.gemm_fill_rows_bf16),
        ] {
            if let Some(v) = v {
                GEMM_FILL_ROWS.check(key, v).map_err(invalid)?;
            }
        }
        if o.gemm_fill_rows_bf16.is_some() && o.gemm_fill_rows.is_none() {
            return Err(invalid(
                "overheads.gemm-fill-rows-bf16 without overheads.gemm-fill-rows: give the fp32 \
                 value too (the bf16 one defaults to it, not the other way)"
                    .to_string(),
            ));
        }
        for (key, v) in [
            ("overheads.gemm-narrow-fill", &o.gemm_narrow_fill),
            ("overheads.gemm-narrow-fill-bf16", &o.gemm_narrow_fill_bf16),
        ] {
            if let Some(v) = v {
                if v.len() != NARROW_CLASSES.len() {
                    return Err(invalid(format!(
                        "{key} has {} values; give one per class, in this order: {}",
                        v.len(),
                        NARROW_CLASSES.join(", ")
                    )));
                }
                for (x, class) in v.iter().zip(NARROW_CLASSES) {
                    GEMM_FILL_ROWS
                        .check(&format!("{key} ({class})"), *x)
                        .map_err(invalid)?;
                }
            }
        }
        for (key, v) in [
            ("overheads.optimizer-size-gbps", &o.optimizer_size_gbps),
            (
                "overheads.optimizer-size-bf16-gbps",
                &o.optimizer_size_bf16_gbps,
            ),
        ] {
            if let Some(v) = v {
                if v.is_empty() {
                    return Err(invalid(format!(
                        "{key} is empty; give at least one [tensor MiB, GB/s] pair"
                    )));
                }
                for (i, [mib, gbps]) in v.iter().enumerate() {
                    TENSOR_MIB
                        .check(&format!("{key}[{i}] size"), *mib)
                        .map_err(invalid)?;
                    BANDWIDTH_GBPS
                        .check(&format!("{key}[{i}] rate"), *gbps)
                        .map_err(invalid)?;
                    if i > 0 && *mib <= v[i - 1][0] {
                        return Err(invalid(format!(
                            "{key}: sizes must increase, but pair {i} ({mib} MiB) follows {} MiB",
                            v[i - 1][0]
                        )));
                    }
                }
            }
        }
        if o.optimizer_size_bf16_gbps.is_some() && o.optimizer_size_gbps.is_none() {
            return Err(invalid(
                "overheads.optimizer-size-bf16-gbps without overheads.optimizer-size-gbps: give \
                 the fp32 table too (the bf16 one defaults to it, not the other way)"
                    .to_string(),
            ));
        }
        if o.optimizer_size_gbps.is_some() {
            sources.push((
                "overheads.optimizer-size".to_string(),
                o.optimizer_size_source.clone().unwrap_or_default(),
            ));
        }
        if o.gemm_narrow_fill_bf16.is_some() && o.gemm_narrow_fill.is_none() {
            return Err(invalid(
                "overheads.gemm-narrow-fill-bf16 without overheads.gemm-narrow-fill: give the \
                 fp32 values too (the bf16 ones default to them, not the other way)"
                    .to_string(),
            ));
        }
        if o.gemm_narrow_fill.is_some() {
            sources.push((
                "overheads.gemm-narrow-fill".to_string(),
                o.gemm_narrow_fill_source.clone().unwrap_or_default(),
            ));
        }
        if o.gemm_fill_rows.is_some() {
            sources.push((
                "overheads.gemm-fill".to_string(),
                o.gemm_fill_source.clone().unwrap_or_default(),
            ));
        }
        if o.optimizer_op_us.is_some() {
            sources.push((
                "overheads.optimizer-op".to_string(),
                o.optimizer_op_source.clone().unwrap_or_default(),
            ));
        }
        if o.gemm_floor_us.is_some() || o.gemm_floor_bf16_us.is_some() {
            sources.push((
                "overheads.gemm-floor".to_string(),
                o.gemm_floor_source.clone().unwrap_or_default(),
            ));
        }
        if tiles.iter().any(Option::is_some) {
            sources.push((
                "overheads.attention-tile".to_string(),
                o.attention_tile_source.clone().unwrap_or_default(),
            ));
        }
        if let Some(k) = &self.efficiency.kinds {
            sources.push(("efficiency.kinds".to_string(), k.source.clone()));
        }
        if let Some((key, _)) = sources.iter().find(|(_, s)| s.trim().is_empty()) {
            return Err(invalid(format!(
                "the source of {key} is empty: every value must name where it comes from \
                 (a datasheet, a measurement, or \"uncalibrated\")"
            )));
        }
        let price = match &self.price {
            None => None,
            Some(pr) => {
                USD_PER_HOUR
                    .check("price.usd-per-hour", pr.usd_per_hour)
                    .map_err(invalid)?;
                if pr.usd_per_hour_source.trim().is_empty() {
                    return Err(invalid(
                        "the source of price.usd-per-hour is empty: name the price list (and \
                         its date in usd-per-hour-date), or leave the price out"
                            .to_string(),
                    ));
                }
                if let Some(d) = &pr.usd_per_hour_date {
                    let ok = d.len() == 10
                        && d.chars().enumerate().all(|(i, c)| {
                            if i == 4 || i == 7 {
                                c == '-'
                            } else {
                                c.is_ascii_digit()
                            }
                        });
                    if !ok {
                        return Err(invalid(format!(
                            "price.usd-per-hour-date must be a date YYYY-MM-DD, got {d:?}"
                        )));
                    }
                }
                Some(Price {
                    usd_per_hour: pr.usd_per_hour,
                    source: pr.usd_per_hour_source.clone(),
                    date: pr.usd_per_hour_date.clone(),
                })
            }
        };
        if let Some(pr) = &price {
            sources.push(("price.usd-per-hour".to_string(), pr.source.clone()));
        }
        let provenance = match self.calibration {
            Some(c) => Provenance::Calibrated {
                note: format!(
                    "{} on {} ({}); fit: {}",
                    c.date, c.device, c.libraries, c.fit
                ),
            },
            None => Provenance::Datasheet,
        };
        const TERA: f64 = 1e12;
        const US: f64 = 1e-6;
        Ok(Profile {
            name: d.name.clone(),
            display_name: d.display_name.clone(),
            aliases: d.aliases.clone(),
            synchronous,
            sms: d.sms,
            boost_mhz: d.boost_mhz,
            memory_bytes: d.memory_gib * (1u64 << 30) as f64,
            l2_bytes: d.l2_mib * (1u64 << 20) as f64,
            peak_fp32_flops: self.peak.fp32_tflops * TERA,
            peak_tf32_flops: self.peak.tf32_tflops * TERA,
            peak_bf16_flops: self.peak.bf16_tflops * TERA,
            peak_fp16_flops: self.peak.fp16_tflops * TERA,
            bandwidth_bps: self.peak.bandwidth_gbps * 1e9,
            gemm_efficiency: self.efficiency.gemm,
            bandwidth_efficiency: self.efficiency.bandwidth,
            attention_efficiency: self.efficiency.attention,
            attention_by: {
                let e = &self.efficiency;
                let fwd16 = e.attention_bf16.unwrap_or(e.attention);
                let bwd32 = e.attention_backward.unwrap_or(e.attention);
                [
                    [e.attention, fwd16],
                    [bwd32, e.attention_backward_bf16.unwrap_or(bwd32)],
                ]
            },
            small_gemm_bandwidth_efficiency: self.efficiency.small_gemm_bandwidth,
            kind_bandwidth,
            launch_floor_s: self.overheads.launch_floor_us * US,
            graph_launch_floor_s: self.overheads.graph_launch_floor_us * US,
            kernel_gap_s: self.overheads.kernel_gap_us.map(|g| g * US),
            first_touch: self.overheads.first_touch_gbps.map(|g| {
                (
                    g * 1e9,
                    self.overheads.first_touch_min_mib.unwrap_or(32.0) * 1048576.0,
                )
            }),
            gemm_fill_rows: self
                .overheads
                .gemm_fill_rows
                .map(|f| [f, self.overheads.gemm_fill_rows_bf16.unwrap_or(f)]),
            gemm_narrow_fill: self.overheads.gemm_narrow_fill.as_deref().map(|f| {
                let half = self.overheads.gemm_narrow_fill_bf16.as_deref().unwrap_or(f);
                // Lengths are checked when the profile is validated.
                let arr = |v: &[f64]| std::array::from_fn(|i| v.get(i).copied().unwrap_or(0.0));
                [arr(f), arr(half)]
            }),
            gemm_floor_s: [
                self.overheads.gemm_floor_us.unwrap_or(0.0) * US,
                self.overheads
                    .gemm_floor_bf16_us
                    .or(self.overheads.gemm_floor_us)
                    .unwrap_or(0.0)
                    * US,
            ],
            optimizer_size_rate: self.overheads.optimizer_size_gbps.as_deref().map(|f| {
                let half = self
                    .overheads
                    .optimizer_size_bf16_gbps
                    .as_deref()
                    .unwrap_or(f);
                let si = |v: &[[f64; 2]]| -> Vec<(f64, f64)> {
                    v.iter()
                        .map(|[mib, gbps]| (mib * 1048576.0, gbps * 1e9))
                        .collect()
                };
                [si(f), si(half)]
            }),
            optimizer_op_s: self.overheads.optimizer_op_us.map(|c| {
                [
                    c * US,
                    self.overheads.optimizer_op_bf16_us.unwrap_or(c) * US,
                ]
            }),
            attention_tile_s: {
                let o = &self.overheads;
                let fwd = o.attention_tile_us.unwrap_or(0.0);
                let bwd = o.attention_backward_tile_us.unwrap_or(0.0);
                [
                    [fwd * US, o.attention_tile_bf16_us.unwrap_or(fwd) * US],
                    [
                        bwd * US,
                        o.attention_backward_tile_bf16_us.unwrap_or(bwd) * US,
                    ],
                ]
            },
            host: HostCosts {
                python_op_s: h.python_op_us * US,
                cpp_op_s: h.cpp_op_us * US,
                module_call_s: h.module_call_us * US,
                peft_module_s: h.peft_module_us * US,
                autograd_node_s: h.autograd_node_us * US,
                optimizer_tensor_s: h.optimizer_tensor_us.unwrap_or(h.cpp_op_us) * US,
                loop_micro_batch_s: h.loop_micro_batch_us.unwrap_or(0.0) * US,
                loop_module_s: h.loop_module_us.unwrap_or(0.0) * US,
                loop_step_s: h.loop_step_us.unwrap_or(0.0) * US,
                loop_step_module_s: h.loop_step_module_us.unwrap_or(0.0) * US,
            },
            provenance,
            origin: origin.to_string(),
            sources,
            price,
        })
    }
}

/// Parse and resolve profile text; `origin` names it in errors (a path or `builtin:NAME`).
pub fn parse_profile(text: &str, origin: &str) -> Result<Profile> {
    let file: ProfileFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| {
                let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" line {line_no}")
            })
            .unwrap_or_default();
        Error::Parse {
            path: PathBuf::from(origin),
            line,
            message: e.message().to_string(),
        }
    })?;
    file.resolve(origin)
}

/// Load a profile file from disk (a user's file: see [`parse_user_profile`]).
pub fn load_profile(path: &Path) -> Result<Profile> {
    let text = input::read_text(path, "hardware profile").map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_user_profile(&text, &path.display().to_string())
}

/// The name (and TOML text) of the built-in profile `arg` names (a name or alias,
/// case-insensitive).
pub fn builtin(arg: &str) -> Result<(&'static str, &'static str)> {
    let wanted = arg.trim().to_ascii_lowercase();
    for (name, text) in BUILTIN {
        let profile = parse_profile(text, &format!("builtin:{name}"))?;
        if profile.name == wanted || profile.aliases.contains(&wanted) {
            return Ok((name, text));
        }
    }
    Err(unknown_device(arg))
}

fn unknown_device(arg: &str) -> Error {
    let wanted = arg.trim().to_ascii_lowercase();
    let mut candidates: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
    candidates.extend(["a100".to_string(), "h100".to_string(), "cpu".to_string()]);
    Error::UnknownDevice {
        name: arg.to_string(),
        hint: nearest(&wanted, &candidates)
            .map(|n| format!(" (did you mean '{n}'?)"))
            .unwrap_or_default(),
        known: candidates.join(", "),
    }
}

/// The built-in profiles' names and TOML text, in catalog order.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "a100-40gb-sxm",
        include_str!("../profiles/a100-40gb-sxm.toml"),
    ),
    (
        "a100-80gb-sxm",
        include_str!("../profiles/a100-80gb-sxm.toml"),
    ),
    (
        "a100-80gb-pcie",
        include_str!("../profiles/a100-80gb-pcie.toml"),
    ),
    ("a6000", include_str!("../profiles/a6000.toml")),
    ("h100-sxm", include_str!("../profiles/h100-sxm.toml")),
    ("h100-pcie", include_str!("../profiles/h100-pcie.toml")),
    ("h200", include_str!("../profiles/h200.toml")),
    ("l40s", include_str!("../profiles/l40s.toml")),
    ("l4", include_str!("../profiles/l4.toml")),
    ("rtx4090", include_str!("../profiles/rtx4090.toml")),
    ("rtx3090", include_str!("../profiles/rtx3090.toml")),
    ("v100-32gb", include_str!("../profiles/v100-32gb.toml")),
    ("t4", include_str!("../profiles/t4.toml")),
    ("cpu-generic", include_str!("../profiles/cpu-generic.toml")),
];

/// All built-in profiles, parsed.
pub fn builtin_profiles() -> Result<Vec<Profile>> {
    BUILTIN
        .iter()
        .map(|(name, text)| parse_profile(text, &format!("builtin:{name}")))
        .collect()
}

/// Resolve a `--hw` argument: a built-in name or alias (case-insensitive), or a path to a
/// `.toml` file.
pub fn resolve_device(arg: &str) -> Result<Profile> {
    if is_profile_path(arg) {
        return load_profile(Path::new(arg));
    }
    let (name, text) = builtin(arg)?;
    parse_profile(text, &format!("builtin:{name}"))
}

/// Whether a `--hw` argument names a profile file (`.toml`, or a path) rather than a built-in.
pub fn is_profile_path(arg: &str) -> bool {
    arg.ends_with(".toml") || arg.contains('/') || arg.contains('\\')
}

/// The candidate closest to `word` by Jaro-Winkler similarity, if reasonably close.
pub fn nearest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.as_str())
}

#[cfg(test)]
mod tests {
    #[test]
    fn mem_kinds_are_listed_in_declaration_order() {
        for (i, k) in super::MemKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }

    use super::*;

    #[test]
    fn every_builtin_profile_parses_and_names_its_sources() {
        let profiles = builtin_profiles().expect("built-in profiles parse");
        assert_eq!(profiles.len(), 14);
        assert_eq!(profiles.iter().filter(|p| p.synchronous).count(), 1);
        for p in &profiles {
            assert!(
                p.peak_bf16_flops > 0.0 && p.bandwidth_bps > 0.0,
                "{}",
                p.name
            );
            assert!(p.sources.iter().all(|(_, s)| !s.is_empty()), "{}", p.name);
            assert_eq!(p.provenance, Provenance::Datasheet);
            // File name and device name agree, so `--hw NAME` finds each file.
            assert!(BUILTIN.iter().any(|(n, _)| *n == p.name), "{}", p.name);
        }
    }

    #[test]
    fn aliases_resolve() {
        assert_eq!(resolve_device("a100").unwrap().name, "a100-80gb-sxm");
        assert_eq!(resolve_device("H100").unwrap().name, "h100-sxm");
        assert_eq!(resolve_device("a6000").unwrap().sms, 84);
    }

    #[test]
    fn datasheet_figures_are_transcribed() {
        let a100 = resolve_device("a100").unwrap();
        assert_eq!(a100.peak_bf16_flops, 312e12);
        assert_eq!(a100.bandwidth_bps, 2039e9);
        assert_eq!(a100.memory_bytes, 80.0 * 1024.0 * 1024.0 * 1024.0);
        let a6000 = resolve_device("a6000").unwrap();
        assert_eq!(a6000.peak_bf16_flops, 154.8e12);
        assert_eq!(a6000.bandwidth_bps, 768e9);
    }

    #[test]
    fn unknown_device_lists_known_and_nearest() {
        let err = resolve_device("a10O").unwrap_err().to_string();
        assert!(err.contains("did you mean 'a100'"), "{err}");
        assert!(err.contains("rtx4090"), "{err}");
    }

    /// `transcendental` defaults to the `elementwise` values (not `bandwidth`), and its bf16
    /// value to its fp32 one when that is given.
    #[test]
    fn transcendental_falls_back_to_elementwise() {
        let cpu = include_str!("../profiles/cpu-generic.toml");
        let with = |kinds: &str| {
            let text = cpu.replace(
                "\n[overheads]",
                &format!("\n[efficiency.kinds]\n{kinds}source = \"test\"\n\n[overheads]"),
            );
            let p = parse_profile(&text, "x.toml").expect("parses");
            let get = |k, half| p.kind_bandwidth.get(k, half);
            [
                get(MemKind::Transcendental, false),
                get(MemKind::Transcendental, true),
                get(MemKind::Elementwise, false),
                get(MemKind::Elementwise, true),
            ]
        };
        // bandwidth is 0.6 in the built-in cpu profile.
        assert_eq!(
            with("elementwise = 0.5\nelementwise-bf16 = 0.4\n"),
            [0.5, 0.4, 0.5, 0.4]
        );
        assert_eq!(
            with("elementwise = 0.5\ntranscendental = 0.05\n"),
            [0.05, 0.05, 0.5, 0.5]
        );
        assert_eq!(
            with("transcendental = 0.05\ntranscendental-bf16 = 0.09\n"),
            [0.05, 0.09, 0.6, 0.6]
        );
        let err = parse_profile(
            &cpu.replace(
                "\n[overheads]",
                "\n[efficiency.kinds]\ntranscendental = 1.5\nsource = \"t\"\n\n[overheads]",
            ),
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("efficiency.kinds.transcendental must be"),
            "{err}"
        );
    }

    #[test]
    fn malformed_toml_names_path_and_line() {
        let text = "[device]\nname = \"x\"\nsms = \"many\"\n";
        let err = parse_profile(text, "custom.toml").unwrap_err().to_string();
        assert!(err.contains("custom.toml line 3"), "{err}");
    }

    #[test]
    fn out_of_range_efficiency_is_rejected() {
        let text = BUILTIN[0].1.replace("gemm = 0.83", "gemm = 1.7");
        let err = parse_profile(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("efficiency.gemm must be a fraction"), "{err}");
    }

    #[test]
    fn empty_source_is_rejected() {
        // A known key, `efficiency.attention-source`, set to the empty string: the file has no
        // unknown key, so only the empty-source check can reject it.
        let original = BUILTIN[0].1;
        let mut replaced = 0;
        let text: String = original
            .lines()
            .map(|l| {
                if l.starts_with("attention-source = ") {
                    replaced += 1;
                    "attention-source = \"\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(replaced, 1, "the profile has one attention-source line");
        // The untouched file loads: the edit alone is what breaks it.
        assert!(parse_profile(original, "x.toml").is_ok());
        let err = parse_profile(&text, "x.toml").unwrap_err().to_string();
        assert!(
            err.contains("the source of efficiency.attention is empty"),
            "{err}"
        );
        assert!(!err.contains("unknown field"), "{err}");
        // Whitespace only counts as empty too.
        let text = original.replace(
            "source = \"gpus.md table (NVIDIA datasheets and architecture whitepapers)\"",
            "source = \" \"",
        );
        assert_ne!(text, original);
        let err = parse_profile(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("source of device is empty"), "{err}");
    }
}
