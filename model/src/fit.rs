//! What fits: the largest micro-batch (or sequence length) whose training step fits a device's
//! memory, and whether a configuration fits at all.
//!
//! "Fits" is the memory model's verdict (`predict::Memory::fits`): the step's peak allocated
//! bytes plus the 1 GiB reserve for the CUDA context and allocator (`predict::RESERVED_BYTES`,
//! uncalibrated; docs/model.md) must not exceed the device's capacity. The peak is
//! non-decreasing in batch and in sequence length (every activation term scales with tokens,
//! attention's with seq², weights, gradients and optimizer states are constant), so the largest
//! fitting value is found by bisection: ⌈log2(max)⌉ + 1 memory evaluations, each one graph
//! build, no time simulation. The property test below checks that monotonicity on random
//! configurations rather than trusting it.

use crate::graph;
use crate::predict::{memory, Config, Memory};
use crate::{Error, Result};

/// The workload dimension to search along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Micro-batch size at the configuration's sequence length.
    Batch,
    /// Sequence length at the configuration's micro-batch size.
    Seq,
}

impl Axis {
    pub fn as_str(self) -> &'static str {
        match self {
            Axis::Batch => "batch",
            Axis::Seq => "seq",
        }
    }
}

/// The outcome of a search along one axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Largest {
    /// The largest value in `1..=limit` that fits; `None` when even 1 does not.
    pub value: Option<u64>,
    /// The upper end searched: the caller's maximum, or the model's positions for `Axis::Seq`.
    pub limit: u64,
    /// Memory at `value` (at 1 when nothing fits).
    pub memory: Memory,
    /// Memory evaluations made.
    pub evaluations: u32,
}

/// The memory footprint of one configuration (graph built, not simulated).
pub fn memory_of(cfg: &Config) -> Memory {
    let g = graph::build(&cfg.model, &cfg.method, &cfg.workload);
    memory(cfg.as_ref(), &g)
}

fn with_value(cfg: &Config, axis: Axis, v: u64) -> Config {
    let mut c = cfg.clone();
    match axis {
        Axis::Batch => c.workload.batch = v,
        Axis::Seq => c.workload.seq = v,
    }
    c
}

/// The largest value of `axis` in `1..=max` at which `cfg` fits its device (the other workload
/// settings as in `cfg`). For `Axis::Seq` the search stops at the model's positions.
pub fn largest(cfg: &Config, axis: Axis, max: u64) -> Result<Largest> {
    // No further than the workload allows (Workload::validate: 2^40 tokens a micro-batch, 2^50
    // a step): a search to 2^64 batches ends there instead of failing on its first probe.
    let w = &cfg.workload;
    let tokens = (1u64 << 40).min((1u64 << 50) / u64::from(w.grad_accum.max(1)));
    let limit = match axis {
        Axis::Batch => max.min(tokens / w.seq.max(1)),
        Axis::Seq => max
            .min(cfg.model.max_positions)
            .min(tokens / w.batch.max(1)),
    };
    if limit == 0 {
        return Err(Error::InvalidArgument {
            what: "--max".into(),
            message: "the search needs an upper end of at least 1".into(),
        });
    }
    let mut evaluations = 0;
    let mut eval = |v: u64| -> Result<Memory> {
        let c = with_value(cfg, axis, v);
        c.workload.validate(&c.model)?;
        evaluations += 1;
        Ok(memory_of(&c))
    };
    let first = eval(1)?;
    if !first.fits {
        return Ok(Largest {
            value: None,
            limit,
            memory: first,
            evaluations,
        });
    }
    let top = eval(limit)?;
    if top.fits {
        return Ok(Largest {
            value: Some(limit),
            limit,
            memory: top,
            evaluations,
        });
    }
    // Invariant: lo fits, hi does not.
    let (mut lo, mut hi, mut at_lo) = (1u64, limit, first);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let m = eval(mid)?;
        if m.fits {
            lo = mid;
            at_lo = m;
        } else {
            hi = mid;
        }
    }
    Ok(Largest {
        value: Some(lo),
        limit,
        memory: at_lo,
        evaluations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::preset;
    use crate::method::{MethodName, MethodOptions, MethodSpec};
    use crate::predict::RESERVED_BYTES;
    use crate::workload::{AttentionImpl, Optimizer, Precision, Runtime, Workload};
    use proptest::prelude::*;

    fn cfg(model: &str, method: MethodName, hw: &str, batch: u64, seq: u64) -> Config {
        let model = preset(model).expect("preset");
        let method =
            MethodSpec::resolve(method, &MethodOptions::default(), &model, false).expect("method");
        Config {
            model,
            method,
            workload: Workload {
                batch,
                seq,
                grad_accum: 1,
                precision: Precision::Bf16Mixed,
                attention: AttentionImpl::Sdpa,
                optimizer: Optimizer::AdamwForeach,
                grad_checkpointing: false,
                grad_clip: true,
                runtime: Runtime::PytorchEager,
                training_loop: crate::TrainingLoop::Trainer,
                param_groups: crate::ParamGroups::DecayAndNoDecay,
            },
            hw: costsim_hardware::resolve_device(hw).expect("profile"),
        }
    }

    /// The answer is checked against the memory model directly, not against the search: the
    /// value fits, the next one does not.
    #[test]
    fn largest_batch_is_the_boundary() {
        for method in [
            MethodName::Lora,
            MethodName::Paca,
            MethodName::PacaUpperHalf,
        ] {
            let c = cfg("llama2-7b", method, "a100-80gb-sxm", 1, 512);
            let got = largest(&c, Axis::Batch, 4096).expect("search");
            let b = got
                .value
                .expect("LoRA and PaCA fit llama2-7b at batch 1 on 80 GB");
            assert!(
                memory_of(&with_value(&c, Axis::Batch, b)).fits,
                "{method:?} {b}"
            );
            assert!(
                !memory_of(&with_value(&c, Axis::Batch, b + 1)).fits,
                "{method:?} {b}"
            );
            assert_eq!(got.memory, memory_of(&with_value(&c, Axis::Batch, b)));
            // Bisection over 1..=4096: at most 2 + 12 evaluations.
            assert!(got.evaluations <= 14, "{}", got.evaluations);
        }
    }

    /// Full fine-tuning of llama2-7b in bf16-mixed with AdamW holds fp32 weights, fp32 gradients
    /// and two fp32 states: 16 B × 6.74e9 parameters = 108 GB before any activation, over the
    /// A6000's 48 GiB, so not even batch 1 fits.
    #[test]
    fn nothing_fits_when_batch_one_does_not() {
        let c = cfg("llama2-7b", MethodName::Full, "a6000", 1, 512);
        let m = memory_of(&c);
        assert!(m.peak_bytes + RESERVED_BYTES > 48.0 * (1u64 << 30) as f64);
        let got = largest(&c, Axis::Batch, 64).expect("search");
        assert_eq!(got.value, None);
        assert_eq!(got.evaluations, 1);
    }

    /// A small model fits at the top of the range: the search says so after two evaluations.
    #[test]
    fn the_limit_when_everything_fits() {
        let c = cfg("gpt2", MethodName::Lora, "h100-sxm", 1, 128);
        let got = largest(&c, Axis::Batch, 8).expect("search");
        assert_eq!((got.value, got.limit, got.evaluations), (Some(8), 8, 2));
    }

    /// Along the sequence the search stops at the model's positions (GPT-2: 1024).
    #[test]
    fn seq_search_stops_at_positions() {
        let c = cfg("gpt2", MethodName::Lora, "h100-sxm", 1, 128);
        let got = largest(&c, Axis::Seq, 1 << 20).expect("search");
        assert_eq!((got.value, got.limit), (Some(1024), 1024));
    }

    /// The search stops where the workload does (2^40 tokens a micro-batch, 2^50 a step): to
    /// 2^64 − 1 batches of 128 tokens it searches 2^33, and with 2^20 micro-batches a step
    /// 2^30 / 128 = 2^23; along seq at batch 2^30 the tokens allow 1,024, GPT-2's positions.
    #[test]
    fn the_search_stops_at_the_workload_s_limits() {
        let mut c = cfg("gpt2", MethodName::Lora, "h100-sxm", 1, 128);
        let got = largest(&c, Axis::Batch, u64::MAX).expect("search");
        assert_eq!(got.limit, 1 << 33);
        c.workload.grad_accum = 1 << 20;
        assert_eq!(
            largest(&c, Axis::Batch, u64::MAX).expect("search").limit,
            1 << 23
        );
        c.workload.grad_accum = 1;
        c.workload.batch = 1 << 30;
        assert_eq!(
            largest(&c, Axis::Seq, u64::MAX).expect("search").limit,
            1 << 10
        );
        c.workload.batch = 1 << 32;
        assert_eq!(
            largest(&c, Axis::Seq, u64::MAX).expect("search").limit,
            1 << 8
        );
    }

    #[test]
    fn a_zero_limit_is_refused() {
        let c = cfg("gpt2", MethodName::Lora, "h100-sxm", 1, 128);
        assert!(largest(&c, Axis::Batch, 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// What the bisection relies on: the peak never drops as batch or sequence grows.
        #[test]
        fn peak_is_monotone(
            model in prop::sample::select(vec!["gpt2", "gpt2-medium", "tinyllama-1.1b"]),
            method in prop::sample::select(MethodName::ALL.to_vec()),
            batch in 1u64..32, seq in 1u64..1000, axis in prop::bool::ANY,
        ) {
            let c = cfg(model, method, "a100-80gb-sxm", batch, seq);
            let axis = if axis { Axis::Batch } else { Axis::Seq };
            let v = match axis { Axis::Batch => batch, Axis::Seq => seq };
            let a = memory_of(&with_value(&c, axis, v)).peak_bytes;
            let b = memory_of(&with_value(&c, axis, v + 1)).peak_bytes;
            prop_assert!(b >= a, "{model} {method:?} {axis:?} {v}: {a} -> {b}");
        }
    }

    #[test]
    fn axis_names_are_the_workload_fields() {
        // The axes name the workload's `batch` and `seq`, as in the note of `costsim fit`:
        // "not even batch 1 fits".
        assert_eq!(Axis::Batch.as_str(), "batch");
        assert_eq!(Axis::Seq.as_str(), "seq");
    }
}
