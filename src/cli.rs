//! Command-line arguments (clap) and their resolution into model, method, workload and profile.

use crate::errors::usage_error as usage;
use crate::render::Format;
use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use costsim_model::method::{AdapterDtype, LayerSelection, Targets};
use costsim_model::{
    arch, AttentionImpl, Config, MethodName, MethodOptions, MethodSpec, ModelConfig, Optimizer,
    ParamGroups, Precision, Runtime, TrainingLoop, Workload,
};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "costsim",
    version,
    about = "Predicts and explains what a fine-tuning step costs on a GPU, kernel by kernel",
    long_about = "costsim predicts the time and memory of one fine-tuning step (full, LoRA, PaCA, \
                  layer-selective PaCA) on a GPU from a per-kernel model of what PyTorch launches, \
                  and explains where the time goes (compute, memory, launch, host)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Predict one training step (and optionally a whole run) for one or all methods.
    #[command(after_help = "Examples:\n  \
        costsim predict --hw a6000 --model llama2-7b                 every method, one step\n  \
        costsim predict --hw a100 --model llama2-7b --method lora --rank 16 --per-layer\n  \
        costsim predict --hw h100 --model llama2-7b --tokens 2e9 --price 2.99   run time and cost\n  \
        costsim predict --hw my-gpu.toml --model-config config.json --format json")]
    Predict(PredictArgs),
    /// List the built-in models with their parameter counts.
    #[command(after_help = "Examples:\n  \
        costsim models\n  \
        costsim models --format json")]
    Models(ListArgs),
    /// List the built-in hardware profiles, or print one (`costsim hardware show NAME`).
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  \
        costsim hardware                       list the built-in GPUs\n  \
        costsim hardware --format csv\n  \
        costsim hardware show a100 > my-gpu.toml   a profile to start from (or use base = \"a100\")"
    )]
    Hardware(HardwareArgs),
    /// Measure real training steps with libtorch and compare them with predictions (measuring
    /// needs the `tch` feature; `--from results.json` works on any build).
    #[command(after_help = "Examples:\n  \
        costsim validate --from docs/results/cpu/heldout-gpt2.json      compare saved results\n  \
        costsim validate --from results.json --hw a100 --format markdown\n  \
        costsim validate --trace docs/results/traces/cpu                 against traces\n  \
        costsim validate --device cuda --model gpt2 --out results.json (needs --features tch)")]
    Validate(ValidateArgs),
    /// Evaluate a grid of models, GPUs, methods, batch sizes, sequence lengths, ranks, trained
    /// layers and precisions (ranges such as --seq 128..4096:x2), in parallel.
    #[command(after_help = "Examples:\n  \
        costsim sweep --model llama2-7b --hw a6000,a100 --seq 128..4096:x2\n  \
        costsim sweep --model gpt2 --hw h100 --batch 1..64:x2 --rank 4,8,16 --format csv --out s.csv")]
    Sweep(crate::sweep::SweepArgs),
    /// Find where LoRA becomes faster or slower than full fine-tuning and than PaCA along one
    /// axis (seq, batch or rank), and what drives it.
    #[command(after_help = "Examples:\n  \
        costsim crossover --model llama2-7b --hw a6000 --vary seq\n  \
        costsim crossover --model gpt2 --hw h100 --vary rank --range 1..512:x2 --format json")]
    Crossover(crate::sweep::CrossoverArgs),
    /// Draw charts (SVG or PNG): per-layer breakdown, method comparison, crossover heatmap,
    /// predicted vs measured.
    #[command(after_help = "Examples:\n  \
        costsim plot breakdown --hw a6000 --model llama2-7b --out breakdown.svg\n  \
        costsim plot methods --hw a100 --model llama2-7b --out methods.png\n  \
        costsim plot heatmap --hw a6000 --model llama2-7b --out heat.svg --data heat.json\n  \
        costsim plot scatter --from results.json --out scatter.svg")]
    Plot(crate::plot::PlotArgs),
    /// Fit a device profile from microbenchmarks (needs the `tch` feature).
    #[command(after_help = "Examples:\n  \
        costsim calibrate --from samples.json --base a100 --out my-a100.toml\n  \
        costsim calibrate --host traces/ --base h200 --out h200-host.toml\n  \
        costsim calibrate --device cuda --out my-gpu.toml   (needs --features tch)")]
    Calibrate(crate::calibrate::CalibrateArgs),
    /// What fits in memory: the largest micro-batch or sequence per method and GPU, or the GPUs
    /// a configuration fits, smallest first.
    Fit(crate::fit::FitArgs),
}

/// Options of the listing commands.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `costsim hardware`: the list, or one profile.
#[derive(Debug, Args)]
pub struct HardwareArgs {
    #[command(subcommand)]
    pub action: Option<HardwareAction>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Debug, Subcommand)]
pub enum HardwareAction {
    /// Print a built-in profile's TOML, every value with its source: a file to copy and edit
    /// (or start a file from it with `base = "NAME"`, docs/profiles.md).
    #[command(after_help = "Examples:\n  \
        costsim hardware show a6000\n  \
        costsim hardware show a100 > my-a100.toml")]
    Show {
        /// A built-in name or alias (see `costsim hardware`).
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Redo the comparison from results files (comma-separated; merged; no libtorch needed).
    #[arg(long, value_name = "FILE", value_delimiter = ',', conflicts_with_all = ["device", "out"])]
    pub from: Vec<PathBuf>,
    /// Compare costsim with ground-truth traces of the real stack (scripts/trace/; JSON files or
    /// folders of them, comma-separated): launches, FLOPs, saved bytes and peak memory per phase.
    #[arg(long, value_name = "FILE|DIR", value_delimiter = ',', conflicts_with_all = ["device", "out", "from"])]
    pub trace: Vec<PathBuf>,
    /// With --trace: list, per trace, the modules whose kernel launches disagree.
    #[arg(long, requires = "trace")]
    pub modules: bool,
    /// With --trace and --hw: for traces timed op by op (scripts/trace/trace_step.py --op-times
    /// N, CPU), the op ledger: each phase split into the ops' own time and the host work above
    /// them, op by op, against costsim's device and host time; for GPU traces profiled with
    /// --profile-kernels, the same from each op's kernel time, beside costsim's time with the
    /// op's L2 re-reads free (docs/host.md).
    #[arg(long, requires_all = ["trace", "hw"])]
    pub ops: bool,
    /// Compare predicted Trainer steps (and their bare steps and loop work) with
    /// scripts/trace/step_overhead.py records (JSON files or folders, comma-separated); needs
    /// --hw.
    #[arg(long, value_name = "FILE|DIR", value_delimiter = ',', conflicts_with_all = ["device", "out", "from", "trace"], requires = "hw")]
    pub steps: Vec<PathBuf>,
    /// CPU threads libtorch may use (default: libtorch's own choice). One thread measures far
    /// more steadily on a shared machine.
    #[arg(long)]
    pub threads: Option<i32>,
    /// cpu, cuda or cuda:N.
    #[arg(long, required_unless_present_any = ["from", "trace", "steps"])]
    pub device: Option<String>,

    /// Built-in model, or a Hugging Face config.json with --model-config.
    #[arg(long, default_value = "gpt2")]
    pub model: String,
    #[arg(long, value_name = "FILE")]
    pub model_config: Option<PathBuf>,
    /// Methods to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "full,lora,paca,paca-upper-half,paca-three-quarters"
    )]
    pub methods: Vec<MethodArg>,
    /// LoRA reference rank (PaCA variants follow the paper's matching).
    #[arg(long)]
    pub rank: Option<u64>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<u64>,
    /// Sequence lengths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub seq: Vec<u64>,
    /// fp32 or bf16 (parameters, activations and optimizer states in bf16).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fp32")]
    pub precision: Vec<PrecisionArg>,
    /// Timed repetitions per configuration.
    #[arg(long, default_value_t = 5)]
    pub reps: u32,
    /// Untimed warm-up steps per configuration.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// Write the measurements here (JSON, written atomically).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Hardware profile for the predictions (default: cpu-generic on CPU, the GPU's own profile
    /// on CUDA, or the one recorded in --from's file). With --trace: predict the phase times of
    /// timed traces on it (without it, only counts, bytes and FLOPs are compared).
    #[arg(long)]
    pub hw: Option<String>,
    /// table, json or markdown (the comparison as text, as JSON, or as Markdown tables).
    #[arg(long, value_enum, default_value_t = Format::Table, hide_possible_values = true)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum MethodArg {
    Full,
    Lora,
    Paca,
    PacaUpperHalf,
    PacaThreeQuarters,
    /// Every method side by side (--rank is then the LoRA reference rank).
    All,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PrecisionArg {
    Fp32,
    Tf32,
    Bf16Mixed,
    Fp16Mixed,
    Bf16,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AttentionArg {
    Eager,
    Sdpa,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    /// torch.optim.AdamW, multi-tensor (PyTorch's default)
    Adamw,
    /// torch.optim.AdamW(fused=True)
    AdamwFused,
    /// torch.optim.AdamW(foreach=False), one op per tensor
    AdamwSingle,
    /// SGD without momentum
    Sgd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RuntimeArg {
    /// Python eager PyTorch (Hugging Face model code, peft)
    PytorchEager,
    /// The same ops from C++ (libtorch)
    Libtorch,
    /// Phases replayed from CUDA graphs
    CudaGraph,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LoopArg {
    /// transformers' Trainer (and TRL's trainers): host work per micro-batch and per step
    Trainer,
    /// a hand-written loop: nothing beyond forward, backward and the optimizer
    Bare,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ParamGroupsArg {
    /// one group over every trainable tensor (an optimizer you build and hand to the loop)
    One,
    /// a Trainer's own: weights with weight decay, then biases and norms without
    Decay,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AdapterDtypeArg {
    /// fp32 adapters (peft's default autocast_adapter_dtype=True)
    Fp32,
    /// the base model's dtype
    Base,
}

/// Which model: a built-in one or a Hugging Face config.json (predict, fit, crossover and the
/// charts share it).
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Built-in model (see `costsim models`).
    #[arg(
        long,
        required_unless_present = "model_config",
        conflicts_with = "model_config"
    )]
    pub model: Option<String>,
    /// A Hugging Face config.json (model_type gpt2, llama, mistral or qwen2).
    #[arg(long, value_name = "FILE")]
    pub model_config: Option<PathBuf>,
}

impl ModelArgs {
    /// The model named, or read from its config.json; a usage error otherwise.
    pub fn resolve(&self) -> Result<ModelConfig> {
        match (&self.model, &self.model_config) {
            (_, Some(path)) => arch::from_hf_config(path).map_err(usage),
            (Some(name), None) => arch::preset(name).map_err(usage),
            (None, None) => Err(usage("pass --model NAME or --model-config FILE")),
        }
    }
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// GPU: a built-in name or alias (see `costsim hardware`) or a profile file (.toml).
    #[arg(long)]
    pub hw: String,
    #[command(flatten)]
    pub source: ModelArgs,
    /// Fine-tuning method.
    #[arg(long, value_enum, default_value_t = MethodArg::All)]
    pub method: MethodArg,
    /// LoRA rank or PaCA column count. Default: the paper's (LoRA 8, PaCA 16, upper half 32,
    /// three quarters 24). With --method all it is the LoRA reference rank; full fine-tuning
    /// ignores it.
    #[arg(long)]
    pub rank: Option<u64>,
    /// Layers that train: all, upper:0.5, upper:0.75, last:K, or a range A..B (0-based,
    /// inclusive). Default: all (the PaCA presets set their own).
    #[arg(long)]
    pub train_layers: Option<String>,
    /// Micro-batch size.
    #[arg(long, default_value_t = 8)]
    pub batch: u64,
    /// Sequence length.
    #[arg(long, default_value_t = 512)]
    pub seq: u64,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Bf16Mixed)]
    pub precision: PrecisionArg,
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Estimate a whole run of N training tokens (2000000000, 2_000_000_000 or 2e9).
    #[arg(long, conflicts_with = "samples", value_parser = parse_count, allow_negative_numbers = true)]
    pub tokens: Option<u64>,
    /// Estimate a whole run of N training samples (sequences; 50000 or 5e4).
    #[arg(long, value_parser = parse_count, allow_negative_numbers = true)]
    pub samples: Option<u64>,
    /// Break the step down per layer.
    #[arg(long)]
    pub per_layer: bool,
    /// List every kernel, with the bytes it re-reads from recent outputs (L2 KB) and what they
    /// cost at DRAM price (L2 us: the most an L2 hit could save; docs/model.md).
    #[arg(long)]
    pub kernels: bool,
    /// Price of one GPU-hour in US dollars, for the cost of the run (--tokens/--samples);
    /// overrides the profile's `[price]` table. E.g. 2.49.
    #[arg(long, value_name = "USD_PER_HOUR", value_parser = parse_price, allow_negative_numbers = true)]
    pub price: Option<f64>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// A price per GPU-hour: a finite, non-negative number of dollars up to the profiles' limit.
pub fn parse_price(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim().trim_start_matches('$');
    let v: f64 = t
        .parse()
        .map_err(|_| format!("'{s}' is not a price; write US dollars per GPU-hour, e.g. 2.49"))?;
    // `-0` is zero dollars (it printed as "$-0").
    let v = v + 0.0;
    costsim_hardware::USD_PER_HOUR
        .check("--price", v)
        .map(|()| v)
}

/// Method and workload options shared by `predict`, `sweep` and `crossover`.
#[derive(Debug, Args)]
pub struct TrainingArgs {
    /// LoRA/PaCA alpha (scale = alpha / rank). Default: the paper's (LoRA 32, PaCA 64).
    #[arg(long, allow_negative_numbers = true)]
    pub alpha: Option<f64>,
    /// LoRA dropout probability. Default: the paper's 0.1.
    #[arg(long, allow_negative_numbers = true)]
    pub dropout: Option<f64>,
    /// Targeted linear layers: all, attn, mlp, or a list such as q,v (GPT-2 fuses q, k and v
    /// in c_attn: any of them targets c_attn). Default: all.
    #[arg(long)]
    pub targets: Option<String>,
    /// LoRA adapter dtype.
    #[arg(long, value_enum)]
    pub adapter_dtype: Option<AdapterDtypeArg>,
    /// Gradient accumulation steps per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: u32,
    #[arg(long, value_enum, default_value_t = AttentionArg::Sdpa)]
    pub attention: AttentionArg,
    /// The optimizer. Default: adamw-fused under a Trainer (transformers 5.17's
    /// `TrainingArguments.optim` with torch 2.8 or newer is `adamw_torch_fused`), adamw (the
    /// foreach AdamW torch.optim picks on CUDA) for a bare loop.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// The optimizer's parameter groups, each updated apart. Default: decay under a Trainer
    /// (the two that `Trainer.create_optimizer` builds), one for a bare loop.
    #[arg(long, value_enum)]
    pub param_groups: Option<ParamGroupsArg>,
    /// Recompute each block's forward in backward (transformers' gradient checkpointing).
    #[arg(long)]
    pub grad_checkpointing: bool,
    /// Skip gradient-norm clipping (Hugging Face Trainer clips to 1.0 by default).
    #[arg(long)]
    pub no_grad_clip: bool,
    /// What issues the kernels (sets the host cost per op).
    #[arg(long, value_enum, default_value_t = RuntimeArg::PytorchEager)]
    pub runtime: RuntimeArg,
    /// What drives the step: a Trainer adds its fetch, model.train() walk, FLOP count and
    /// scheduler per micro-batch and step (docs/host.md). Default: trainer under
    /// pytorch-eager, bare otherwise.
    #[arg(long = "loop", value_enum)]
    pub training_loop: Option<LoopArg>,
}

impl TrainingArgs {
    /// The workload with these options (batch, seq and precision as given).
    pub fn workload(&self, batch: u64, seq: u64, precision: Precision) -> Workload {
        Workload {
            batch,
            seq,
            grad_accum: self.grad_accum,
            precision,
            attention: match self.attention {
                AttentionArg::Eager => AttentionImpl::Eager,
                AttentionArg::Sdpa => AttentionImpl::Sdpa,
            },
            optimizer: match self.optimizer {
                Some(OptimizerArg::Adamw) => Optimizer::AdamwForeach,
                Some(OptimizerArg::AdamwFused) => Optimizer::AdamwFused,
                Some(OptimizerArg::AdamwSingle) => Optimizer::AdamwSingle,
                Some(OptimizerArg::Sgd) => Optimizer::Sgd,
                None if self.training_loop() == TrainingLoop::Trainer => Optimizer::AdamwFused,
                None => Optimizer::AdamwForeach,
            },
            grad_checkpointing: self.grad_checkpointing,
            grad_clip: !self.no_grad_clip,
            runtime: match self.runtime {
                RuntimeArg::PytorchEager => Runtime::PytorchEager,
                RuntimeArg::Libtorch => Runtime::Libtorch,
                RuntimeArg::CudaGraph => Runtime::CudaGraph,
            },
            training_loop: self.training_loop(),
            // A Trainer builds its optimizer in two groups (weights with decay, biases and
            // norms without); a bare loop's is built over every trainable tensor.
            param_groups: match (self.param_groups, self.training_loop()) {
                (Some(ParamGroupsArg::Decay), _) | (None, TrainingLoop::Trainer) => {
                    ParamGroups::DecayAndNoDecay
                }
                (Some(ParamGroupsArg::One), _)
                | (None, TrainingLoop::Bare | TrainingLoop::Timed) => ParamGroups::One,
            },
        }
    }

    /// The training loop: as given, else a Trainer under pytorch-eager and a bare loop
    /// otherwise.
    fn training_loop(&self) -> TrainingLoop {
        match (self.training_loop, self.runtime) {
            (Some(LoopArg::Trainer), _) | (None, RuntimeArg::PytorchEager) => TrainingLoop::Trainer,
            (Some(LoopArg::Bare), _) | (None, _) => TrainingLoop::Bare,
        }
    }

    /// Method options without rank and layers (those come per method or per sweep point).
    pub fn method_options(&self) -> Result<MethodOptions> {
        Ok(MethodOptions {
            rank: None,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: self
                .targets
                .as_deref()
                .map(Targets::parse)
                .transpose()
                .map_err(usage)?,
            adapter_dtype: self.adapter_dtype.map(|a| match a {
                AdapterDtypeArg::Fp32 => AdapterDtype::Fp32,
                AdapterDtypeArg::Base => AdapterDtype::Base,
            }),
            layers: None,
        })
    }
}

/// A count written as an integer (underscores allowed) or in scientific notation (`1e9`,
/// `2.5e6`), which must then be a whole number no larger than 2^53 (exact in f64).
pub fn parse_count(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().replace('_', "");
    if let Ok(v) = t.parse::<u64>() {
        return Ok(v);
    }
    let bad =
        || format!("'{s}' is not a whole number; write e.g. 1000000000, 1_000_000_000 or 1e9");
    let v: f64 = t.parse().map_err(|_| bad())?;
    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0) {
        return Err(bad());
    }
    if v > 9_007_199_254_740_992.0 {
        return Err(if t.bytes().all(|b| b.is_ascii_digit()) {
            // An integer `u64` could not hold.
            format!("'{s}' is above 2^64 − 1, the largest count costsim takes")
        } else {
            format!("'{s}' is above 2^53; write it as an integer")
        });
    }
    Ok(v as u64)
}

impl PrecisionArg {
    pub fn precision(self) -> Precision {
        match self {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Tf32 => Precision::Tf32,
            PrecisionArg::Bf16Mixed => Precision::Bf16Mixed,
            PrecisionArg::Fp16Mixed => Precision::Fp16Mixed,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

impl MethodArg {
    pub fn names(self) -> Vec<MethodName> {
        match self {
            MethodArg::All => MethodName::ALL.to_vec(),
            MethodArg::Full => vec![MethodName::Full],
            MethodArg::Lora => vec![MethodName::Lora],
            MethodArg::Paca => vec![MethodName::Paca],
            MethodArg::PacaUpperHalf => vec![MethodName::PacaUpperHalf],
            MethodArg::PacaThreeQuarters => vec![MethodName::PacaThreeQuarters],
        }
    }
}

impl PredictArgs {
    pub fn model(&self) -> Result<ModelConfig> {
        self.source.resolve()
    }

    /// The run `--tokens` or `--samples` asks for: at least one token or sample.
    pub fn amount(&self) -> Result<Option<costsim_model::Amount>> {
        match (self.tokens, self.samples) {
            (Some(0), _) | (None, Some(0)) => Err(usage(
                "--tokens and --samples estimate a run of at least 1; pass a positive count or \
                 leave them out for one step",
            )),
            (Some(t), _) => Ok(Some(costsim_model::Amount::Tokens(t))),
            (None, Some(s)) => Ok(Some(costsim_model::Amount::Samples(s))),
            (None, None) => Ok(None),
        }
    }

    pub fn workload(&self) -> Workload {
        self.training
            .workload(self.batch, self.seq, self.precision.precision())
    }

    fn method_options(&self) -> Result<MethodOptions> {
        Ok(MethodOptions {
            rank: self.rank,
            layers: self
                .train_layers
                .as_deref()
                .map(str::parse::<LayerSelection>)
                .transpose()
                .map_err(usage)?,
            ..self.training.method_options()?
        })
    }

    /// Resolve everything into one config per method.
    pub fn configs(&self) -> Result<Vec<Config>> {
        let model = self.model()?;
        let hw = costsim_hardware::resolve_device(&self.hw).map_err(usage)?;
        let workload = self.workload();
        workload.validate(&model).map_err(usage)?;
        let opts = self.method_options()?;
        let names = self.method.names();
        let all = self.method == MethodArg::All;
        // A preset's own layers are what it means: another choice would silently make it another
        // method. (Adapter options given with full fine-tuning are ignored, so that one command
        // line can loop over the methods.)
        match self.method {
            MethodArg::PacaUpperHalf | MethodArg::PacaThreeQuarters
                if self.train_layers.is_some() =>
            {
                let (name, layers) = if self.method == MethodArg::PacaUpperHalf {
                    ("paca-upper-half", "upper:0.5")
                } else {
                    ("paca-three-quarters", "upper:0.75")
                };
                return Err(usage(format!(
                    "--train-layers: {name} trains its own layers ({layers}); to choose them, \
                     use --method paca --train-layers ..."
                )));
            }
            _ => {}
        }
        names
            .into_iter()
            .map(|name| {
                let mut o = opts.clone();
                // With every method side by side, a --train-layers choice applies to the methods
                // without their own layer selection; the presets keep theirs.
                if all
                    && matches!(
                        name,
                        MethodName::PacaUpperHalf | MethodName::PacaThreeQuarters
                    )
                {
                    o.layers = None;
                }
                let method = MethodSpec::resolve(name, &o, &model, all).map_err(usage)?;
                Ok(Config {
                    model: model.clone(),
                    method,
                    workload: workload.clone(),
                    hw: hw.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_count, parse_price};

    #[test]
    fn a_price_of_minus_zero_is_zero() {
        let p = parse_price("-0").unwrap();
        assert!(p == 0.0 && p.is_sign_positive(), "{p}");
        assert_eq!(parse_price("$2.49"), Ok(2.49));
        assert!(parse_price("-1").is_err());
    }

    #[test]
    fn counts_in_every_notation() {
        assert_eq!(parse_count("1000000000"), Ok(1_000_000_000));
        assert_eq!(parse_count("1_000_000_000"), Ok(1_000_000_000));
        assert_eq!(parse_count("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_count("2.5e6"), Ok(2_500_000));
        assert_eq!(parse_count("18446744073709551615"), Ok(u64::MAX));
        // In exponent notation, up to 2^53 exactly (where f64 still counts every integer).
        assert_eq!(
            parse_count("9.007199254740992e15"),
            Ok(9_007_199_254_740_992)
        );
        assert!(parse_count("1e16").unwrap_err().contains("above 2^53"));
        // An integer past u64 is said to be, not told to be written as an integer.
        let e = parse_count("18446744073709551616").unwrap_err();
        assert!(
            e.contains("above 2^64 − 1") && !e.contains("write it as"),
            "{e}"
        );
        for bad in ["1.5", "-3", "1e300", "abc", "", "nan", "inf", "2.5e0"] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
    }
}
