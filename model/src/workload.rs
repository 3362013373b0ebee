//! The workload: batch, sequence, gradient accumulation, precision, attention implementation,
//! optimizer and runtime (which sets the host cost per op).

use crate::arch::ModelConfig;
use crate::training_loop::TrainingLoop;
use crate::{Error, Result};
use costsim_hardware::MathMode;
use serde::{Deserialize, Serialize};

/// Element types of tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    Bf16,
    F16,
    /// 1-byte boolean (dropout masks).
    Bool,
    /// 8-byte integer (token ids, indices).
    I64,
    /// 8-byte float (GradScaler's inverse scale, computed in fp64).
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> f64 {
        match self {
            Self::F32 => 4.0,
            Self::Bf16 | Self::F16 => 2.0,
            Self::Bool => 1.0,
            Self::I64 | Self::F64 => 8.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::Bool => "bool",
            Self::I64 => "i64",
            Self::F64 => "f64",
        }
    }
}

/// Training precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// fp32 everywhere, matmuls on CUDA cores (PyTorch's default: TF32 off for matmul).
    Fp32,
    /// fp32 storage, matmuls on TF32 tensor cores.
    Tf32,
    /// torch.autocast(bfloat16) over fp32 parameters (fp32 master weights).
    Bf16Mixed,
    /// torch.autocast(float16) with GradScaler over fp32 parameters.
    Fp16Mixed,
    /// Parameters, gradients and optimizer states all in bf16.
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Tf32 => "tf32",
            Self::Bf16Mixed => "bf16-mixed",
            Self::Fp16Mixed => "fp16-mixed",
            Self::Bf16 => "bf16",
        }
    }

    /// Dtype parameters are stored in.
    pub fn param_dtype(self) -> DType {
        match self {
            Self::Bf16 => DType::Bf16,
            _ => DType::F32,
        }
    }

    /// Dtype of matmul inputs and outputs.
    pub fn compute_dtype(self) -> DType {
        match self {
            Self::Fp32 | Self::Tf32 => DType::F32,
            Self::Bf16Mixed | Self::Bf16 => DType::Bf16,
            Self::Fp16Mixed => DType::F16,
        }
    }

    /// True under torch.autocast (weights cast to the half type every forward).
    pub fn is_autocast(self) -> bool {
        matches!(self, Self::Bf16Mixed | Self::Fp16Mixed)
    }

    /// Math mode of a matmul whose operands have dtype `dt`.
    pub fn math_mode(self, dt: DType) -> MathMode {
        match dt {
            DType::Bf16 => MathMode::Bf16,
            DType::F16 => MathMode::Fp16,
            _ if self == Self::Tf32 => MathMode::Tf32,
            _ => MathMode::Fp32,
        }
    }
}

/// Attention implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionImpl {
    /// transformers' eager attention: matmul, scale, mask, softmax, dropout, matmul.
    Eager,
    /// torch scaled_dot_product_attention (flash / memory-efficient kernels).
    Sdpa,
}

/// Optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Optimizer {
    /// torch.optim.AdamW, multi-tensor ("foreach") implementation: PyTorch's default.
    AdamwForeach,
    /// torch.optim.AdamW(fused=True): one pass.
    AdamwFused,
    /// torch.optim.AdamW(foreach=False): eight single-tensor ops per parameter tensor (what a
    /// libtorch loop issues; the validate harness uses it).
    AdamwSingle,
    /// Plain SGD without momentum: one foreach pass.
    Sgd,
}

impl Optimizer {
    /// Optimizer state tensors per parameter.
    pub fn states(self) -> u32 {
        match self {
            Self::AdamwForeach | Self::AdamwFused | Self::AdamwSingle => 2,
            Self::Sgd => 0,
        }
    }
}

/// How the optimizer holds the trainable tensors: torch.optim runs each parameter group's update
/// apart (`for group in self.param_groups`), its multi-tensor and fused kernels launched once a
/// group at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamGroups {
    /// One group: an optimizer built over the trainable parameters (costsim's harness, the
    /// project's scripts, a hand-written loop).
    One,
    /// What a transformers Trainer builds (`Trainer.create_optimizer`, transformers 5.17): the
    /// tensors with weight decay (weights, embeddings, adapters) in model order, then those
    /// without (biases, and norms by layer type or name: `get_decay_parameter_names`). A group
    /// with no tensor (LoRA's second) launches nothing.
    DecayAndNoDecay,
}

/// What issues the kernels, which sets the host cost per op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// PyTorch eager from Python (Hugging Face model code, peft, torch.optim).
    PytorchEager,
    /// The same ops issued from C++ through libtorch (what the validate harness runs).
    Libtorch,
    /// Whole phases replayed from CUDA graphs: no per-op host cost, a smaller launch floor.
    CudaGraph,
}

/// A resolved workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub batch: u64,
    pub seq: u64,
    pub grad_accum: u32,
    pub precision: Precision,
    pub attention: AttentionImpl,
    pub optimizer: Optimizer,
    pub grad_checkpointing: bool,
    /// Gradient-norm clipping before the step (Hugging Face Trainer's default max_grad_norm=1).
    pub grad_clip: bool,
    pub runtime: Runtime,
    /// What drives the step: a Hugging Face Trainer adds its own host work per micro-batch and
    /// per optimizer step ([`crate::training_loop`]).
    pub training_loop: TrainingLoop,
    /// The optimizer's parameter groups: a Trainer's two when it builds the optimizer.
    pub param_groups: ParamGroups,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            batch: 8,
            seq: 512,
            grad_accum: 1,
            precision: Precision::Bf16Mixed,
            attention: AttentionImpl::Sdpa,
            // What a Trainer builds by default (transformers 5.17 with torch 2.8 or newer:
            // `optim="adamw_torch_fused"`), the loop below.
            optimizer: Optimizer::AdamwFused,
            grad_checkpointing: false,
            grad_clip: true,
            runtime: Runtime::PytorchEager,
            training_loop: TrainingLoop::Trainer,
            param_groups: ParamGroups::DecayAndNoDecay,
        }
    }
}

impl Workload {
    /// Tokens per micro-batch, M = batch · seq.
    pub fn tokens(&self) -> u64 {
        self.batch * self.seq
    }

    /// Tokens per optimizer step.
    pub fn tokens_per_step(&self) -> u64 {
        self.tokens() * u64::from(self.grad_accum)
    }

    pub fn validate(&self, model: &ModelConfig) -> Result<()> {
        let err = |what: &str, m: String| Error::InvalidArgument {
            what: what.into(),
            message: m,
        };
        if self.batch == 0 {
            return Err(err("--batch", "batch size must be at least 1".into()));
        }
        if self.seq == 0 {
            return Err(err("--seq", "sequence length must be at least 1".into()));
        }
        if self.seq > model.max_positions {
            return Err(err(
                "--seq",
                format!(
                    "sequence length {} exceeds {}'s {} positions; use --seq {} or less",
                    self.seq, model.name, model.max_positions, model.max_positions
                ),
            ));
        }
        // transformers 5.17 lets SDPA run causal without a mask only below the window
        // (`_ignore_causal_mask_sdpa`: a window at or under the key length needs its pattern);
        // from there on SDPA gets an explicit mask, and k, v are expanded to every head
        // (CPU trace, docs/traces.md), which on CUDA leaves the flash kernel for one costsim has
        // not measured.
        if let Some(window) = model.sliding_window {
            if self.attention == AttentionImpl::Sdpa && self.seq >= window {
                return Err(err(
                    "--seq",
                    format!(
                        "sequence length {} reaches {}'s sliding window of {window} positions: \
                         transformers then gives SDPA an explicit sliding-window mask, whose \
                         kernels costsim does not model; use {}--attention eager (modelled \
                         with the window's mask), or a config.json without sliding_window \
                         (Mistral v0.2 on: null)",
                        self.seq,
                        model.name,
                        if window > 1 {
                            format!("--seq {} or less, ", window - 1)
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        if self.grad_accum == 0 {
            return Err(err(
                "--grad-accum",
                "gradient accumulation must be at least 1".into(),
            ));
        }
        // Keep every count exactly representable (no overflow) and every time finite.
        let per_step = self
            .batch
            .checked_mul(self.seq)
            .filter(|t| *t <= (1 << 40))
            .and_then(|t| t.checked_mul(u64::from(self.grad_accum)))
            .filter(|t| *t <= (1 << 50));
        if per_step.is_none() {
            return Err(err(
                "--batch/--seq/--grad-accum",
                "more than 2^40 tokens per micro-batch or 2^50 per optimizer step is not modelled; \
                 lower --batch, --seq or --grad-accum"
                    .into(),
            ));
        }
        if self.runtime == Runtime::Libtorch && self.training_loop == TrainingLoop::Trainer {
            return Err(err(
                "--loop",
                "a Trainer loop runs under Python: the libtorch runtime is costsim's own C++ \
                 harness loop; use --loop bare or --runtime pytorch-eager"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SDPA is refused from a sequence as long as the model's sliding window on (transformers
    /// then passes it an explicit mask, not modelled), with the longest sequence that is
    /// modelled and the ways out; below the window, and with eager attention at any length, the
    /// workload is costed.
    #[test]
    fn sdpa_reaching_the_sliding_window_is_refused() {
        let mut m = crate::arch::preset("mistral-7b").unwrap();
        m.sliding_window = Some(4096);
        let w = |seq, attention| Workload {
            seq,
            attention,
            ..Workload::default()
        };
        assert!(w(4095, AttentionImpl::Sdpa).validate(&m).is_ok());
        assert!(w(8192, AttentionImpl::Eager).validate(&m).is_ok());
        for seq in [4096, 8192] {
            let e = w(seq, AttentionImpl::Sdpa)
                .validate(&m)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--seq")
                    && e.contains("sliding window of 4096")
                    && e.contains("--seq 4095 or less")
                    && e.contains("--attention eager"),
                "{e}"
            );
        }
        // A window of one position leaves no shorter sequence to suggest.
        m.sliding_window = Some(1);
        let e = w(1, AttentionImpl::Sdpa)
            .validate(&m)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--attention eager") && !e.contains("--seq 0"),
            "{e}"
        );
        m.sliding_window = None;
        assert!(w(8192, AttentionImpl::Sdpa).validate(&m).is_ok());
    }

    /// The names reports print (JSON, CSV, tables) and the math mode each precision gives a
    /// matmul of each dtype: 16-bit operands run on their tensor cores whatever the precision,
    /// fp32 operands on TF32 tensor cores only under `tf32`.
    #[test]
    fn names_and_math_modes() {
        let names: Vec<&str> = [DType::F32, DType::Bf16, DType::F16, DType::Bool, DType::I64]
            .map(DType::as_str)
            .into();
        assert_eq!(names, ["f32", "bf16", "f16", "bool", "i64"]);
        use Precision::*;
        let all = [Fp32, Tf32, Bf16Mixed, Fp16Mixed, Bf16];
        let names: Vec<&str> = all.map(Precision::as_str).into();
        assert_eq!(names, ["fp32", "tf32", "bf16-mixed", "fp16-mixed", "bf16"]);
        for p in all {
            assert_eq!(p.math_mode(DType::Bf16), MathMode::Bf16, "{}", p.as_str());
            assert_eq!(p.math_mode(DType::F16), MathMode::Fp16, "{}", p.as_str());
            let fp32 = if p == Tf32 {
                MathMode::Tf32
            } else {
                MathMode::Fp32
            };
            assert_eq!(p.math_mode(DType::F32), fp32, "{}", p.as_str());
        }
    }

    /// libtorch is costsim's own C++ loop: a Trainer (Python) on it is refused, nothing else.
    #[test]
    fn a_trainer_loop_needs_python() {
        let m = crate::arch::preset("gpt2").unwrap();
        for (runtime, training_loop, ok) in [
            (Runtime::Libtorch, TrainingLoop::Trainer, false),
            (Runtime::Libtorch, TrainingLoop::Bare, true),
            (Runtime::PytorchEager, TrainingLoop::Trainer, true),
            (Runtime::PytorchEager, TrainingLoop::Bare, true),
        ] {
            let w = Workload {
                runtime,
                training_loop,
                ..Workload::default()
            };
            let r = w.validate(&m);
            assert_eq!(r.is_ok(), ok, "{runtime:?} {training_loop:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("use --loop bare"), "{e}");
            }
        }
    }
}
