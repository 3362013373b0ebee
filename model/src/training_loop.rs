//! The training loop around the kernels: what a Hugging Face Trainer does on the host once per
//! micro-batch and once per optimizer step that is not an op of the step itself.
//!
//! Measured with `scripts/trace/step_overhead.py` (docs/host.md): transformers 5.17.0's
//! `Trainer` against the same forward, backward, clip, AdamW and zero_grad as a bare loop. Its
//! profile (cProfile, this project's CPU) puts the difference in
//!
//! - per micro-batch, fixed: fetching and collating the batch, `_prepare_inputs`, callbacks,
//!   the loss's NaN/Inf check;
//! - per micro-batch, per nn.Module of the model: `training_step` calls `model.train()`, which
//!   walks every module (peft's wrappers, ModuleDicts and ParameterDicts included), and the
//!   FLOP count (`floating_point_ops` → `num_parameters`) walks them again with their
//!   parameters;
//! - per optimizer step: `scheduler.step`, accelerate's clipping wrapper, the step callbacks,
//!   and `model.zero_grad()`, which walks every module's parameters again.
//!
//! So a Trainer's loop costs, per optimizer step of K micro-batches over a model of M modules,
//!
//! ```text
//! t_loop = K · (loop_micro_batch + loop_module · M) + loop_step + loop_step_module · M    [s]
//! ```
//!
//! with the four costs from the profile's `[host]` section (`costsim calibrate --loop`); a
//! bare loop (a hand-written `for batch in loader:` step, the libtorch harness) costs nothing
//! beyond its ops. Where it falls in the step: docs/model.md.

use crate::arch::{Family, ModelConfig};
use crate::method::{MethodKind, MethodSpec};
use costsim_hardware::HostCosts;
use serde::Serialize;

/// Which loop drives the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainingLoop {
    /// transformers' `Trainer` (and the trainers built on it, such as TRL's `SFTTrainer`).
    Trainer,
    /// A hand-written loop with nothing around forward, backward and the optimizer.
    Bare,
    /// A bare loop timed phase by phase, as the measurements costsim is checked against are:
    /// `trace_step.py`'s time mode and the libtorch harness synchronise the device before and
    /// after the forward, the backward and the optimizer, so no phase's host work runs ahead
    /// into the next, and a phase lasts until both the host and the device are done with it
    /// (`simulate`). Not a loop users run; `validate` predicts its records with it.
    Timed,
}

impl TrainingLoop {
    pub fn as_str(self) -> &'static str {
        match self {
            TrainingLoop::Trainer => "trainer",
            TrainingLoop::Bare => "bare",
            TrainingLoop::Timed => "timed",
        }
    }
}

/// nn.Modules of the model as transformers and peft build it: what `model.train()` walks.
///
/// - GPT-2 (`GPT2LMHeadModel`): the model, `transformer`, `wte`, `wpe`, `drop`, `h`, `ln_f`,
///   `lm_head` (8), and per block `ln_1`, `attn` with `c_attn`, `c_proj`, `attn_dropout`,
///   `resid_dropout`, `ln_2`, `mlp` with `c_fc`, `c_proj`, `act`, `dropout`, and the block (13).
/// - Llama family (`LlamaForCausalLM`, Mistral, Qwen2): the model, `model`, `embed_tokens`,
///   `layers`, `norm`, `rotary_emb`, `lm_head` (7), and per block the block, `self_attn` with
///   q, k, v, o, `mlp` with gate, up, down, `act_fn`, and the two norms (13).
/// - peft's LoRA: `PeftModelForCausalLM` and `LoraModel` (2), and per adapted linear ten more
///   (the `lora.Linear` wrapper, `base_layer` moved under it, `lora_dropout` and `lora_A`,
///   `lora_B` ModuleDicts with one module each, `lora_embedding_A`/`_B` ParameterDicts,
///   `lora_magnitude_vector`): 1 module becomes 11.
/// - PaCA's reference layer wraps each adapted linear: one more module each.
///
/// Checked against the traces' `structure.modules` (`validate --trace`).
pub fn nn_modules(model: &ModelConfig, method: &MethodSpec) -> u64 {
    let (top, per_block) = match model.family {
        Family::Gpt2 => (8, 13),
        Family::Llama => (7, 13),
    };
    let base = top + per_block * u64::from(model.layers);
    let (lo, hi) = method.trained_layers(model);
    let adapted_per_layer = model
        .linears()
        .iter()
        .filter(|l| method.targets.contains(l.role))
        .count() as u64;
    let adapted = adapted_per_layer * u64::from(hi - lo + 1);
    match method.kind {
        MethodKind::Full => base,
        MethodKind::Lora => base + 2 + 10 * adapted,
        MethodKind::Paca => base + adapted,
    }
}

/// The loop's host work (s): (per micro-batch, per optimizer step).
pub fn loop_host_s(lp: TrainingLoop, host: &HostCosts, modules: u64) -> (f64, f64) {
    match lp {
        TrainingLoop::Bare | TrainingLoop::Timed => (0.0, 0.0),
        TrainingLoop::Trainer => (
            host.loop_micro_batch_s + host.loop_module_s * modules as f64,
            host.loop_step_s + host.loop_step_module_s * modules as f64,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::preset;
    use crate::method::{MethodName, MethodOptions, Targets};

    fn spec(model: &ModelConfig, name: MethodName, targets: &str) -> MethodSpec {
        let opts = MethodOptions {
            targets: Some(Targets::parse(targets).unwrap()),
            ..MethodOptions::default()
        };
        MethodSpec::resolve(name, &opts, model, false).unwrap()
    }

    #[test]
    fn modules_of_gpt2_and_llama_worked_by_hand() {
        // gpt2: 12 layers. Full: 8 + 13·12 = 164.
        let g = preset("gpt2").unwrap();
        assert_eq!(nn_modules(&g, &spec(&g, MethodName::Full, "all")), 164);
        // LoRA on c_attn only: 164 + 2 + 10·12 = 286.
        assert_eq!(nn_modules(&g, &spec(&g, MethodName::Lora, "qkv")), 286);
        // LoRA on all four GPT-2 linears (c_attn, attn.c_proj, c_fc, mlp.c_proj): 164 + 2 + 10·48.
        assert_eq!(nn_modules(&g, &spec(&g, MethodName::Lora, "all")), 646);
        // PaCA on all four: 164 + 48.
        assert_eq!(nn_modules(&g, &spec(&g, MethodName::Paca, "all")), 212);
        // Upper-half PaCA: layers 6..11, 4 linears each: 164 + 24.
        assert_eq!(
            nn_modules(&g, &spec(&g, MethodName::PacaUpperHalf, "all")),
            188
        );
        // llama2-7b: 32 layers. Full: 7 + 13·32 = 423; LoRA on q, v: 423 + 2 + 10·64 = 1065;
        // on all seven linears: 423 + 2 + 10·224 = 2665.
        let l = preset("llama2-7b").unwrap();
        assert_eq!(nn_modules(&l, &spec(&l, MethodName::Full, "all")), 423);
        assert_eq!(nn_modules(&l, &spec(&l, MethodName::Lora, "q,v")), 1065);
        assert_eq!(nn_modules(&l, &spec(&l, MethodName::Lora, "all")), 2665);
    }

    #[test]
    fn loop_costs_per_micro_batch_and_step() {
        let host = HostCosts {
            python_op_s: 0.0,
            cpp_op_s: 0.0,
            module_call_s: 0.0,
            peft_module_s: 0.0,
            autograd_node_s: 0.0,
            optimizer_tensor_s: 0.0,
            loop_micro_batch_s: 300e-6,
            loop_module_s: 2e-6,
            loop_step_s: 50e-6,
            loop_step_module_s: 0.5e-6,
        };
        // 300 µs + 2 µs · 100 modules = 500 µs per micro-batch; 50 + 0.5 · 100 = 100 µs per
        // step.
        let (mb, st) = loop_host_s(TrainingLoop::Trainer, &host, 100);
        assert!((mb - 500e-6).abs() < 1e-15 && (st - 100e-6).abs() < 1e-15);
        assert_eq!(loop_host_s(TrainingLoop::Bare, &host, 100), (0.0, 0.0));
    }

    #[test]
    fn loop_names_are_the_cli_and_json_names() {
        // `--loop trainer|bare` (docs/model.md); the JSON output's kebab-case names agree.
        assert_eq!(TrainingLoop::Trainer.as_str(), "trainer");
        assert_eq!(TrainingLoop::Bare.as_str(), "bare");
        for lp in [TrainingLoop::Trainer, TrainingLoop::Bare] {
            let json = serde_json::to_string(&lp).unwrap();
            assert_eq!(json, format!("\"{}\"", lp.as_str()));
        }
    }
}
