//! The head scope: final norm, LM head and cross-entropy loss, as Hugging Face transformers'
//! eager `*ForCausalLM` models compute them.
//!
//! The LM head is a linear over the vocabulary (tied to the token embedding in GPT-2 and
//! TinyLlama-style configs); the loss is transformers' ForCausalLMLoss: logits.float(),
//! log_softmax over M×vocab in fp32, nll_loss with the label shift done on the labels, the mean,
//! and GradScaler's loss scale under fp16. Every method pays its memory traffic. See
//! `kernels.md` (docs/sources.md).

use super::linear::{linear, Treatment};
use super::norms::{layer_norm, rms_norm};
use super::tracer::{Bwd, Tracer};
use super::{Ctx, GuardKind, Kernel, KernelKind, ScopeGraph};
use crate::arch::{Family, Linear};
use crate::method::MethodKind;
use crate::workload::{DType, Precision};

/// Final norm, LM head, cross-entropy loss (transformers' ForCausalLMLoss: logits.float(),
/// log_softmax, nll_loss with the label shift done on the labels).
pub(super) fn head(cx: &Ctx, input_rg: bool, accumulate: bool) -> ScopeGraph {
    use KernelKind::*;
    let mut t = Tracer::new(cx.w, accumulate);
    let (m, d, v) = (cx.m as f64, cx.model.hidden as f64, cx.model.vocab as f64);
    let x = t.input(m * d, cx.r, input_rg);
    let trains_norm = cx.method.kind == MethodKind::Full;
    let h = match cx.model.family {
        Family::Gpt2 => layer_norm(&mut t, cx, &x, "transformer.ln_f", trains_norm),
        Family::Llama => rms_norm(&mut t, cx, &x, "model.norm", trains_norm),
    };
    let head_trains = cx.method.trains_head(cx.model);
    let lm = Linear {
        role: crate::arch::LinearRole::Down,
        path: "lm_head",
        in_features: cx.model.hidden,
        out_features: cx.model.vocab,
        bias: false,
    };
    let logits = linear(
        &mut t,
        cx,
        &h,
        &lm,
        if head_trains {
            Treatment::Full
        } else {
            Treatment::Frozen
        },
    );
    if cx.model.tied_embeddings {
        // The head reuses wte: its parameters are counted in the embedding.
        t.trainable = t
            .trainable
            .saturating_sub(if head_trains { (v * d) as u64 } else { 0 });
    }
    // The logits are not saved for backward: the loss keeps its own fp32 log-softmax output, and a
    // Trainer-style loop drops the model output before backward (transformers'
    // `Trainer.compute_loss` returns the loss alone), as the ground-truth traces show.
    // The loss is a function (ForCausalLMLoss), not a module: no module call.
    t.module = "loss";
    for name in ["constant_pad_nd", "slice_copy"] {
        let mut k = Kernel::new(name, Elementwise, DType::I64);
        k.bytes_read = m * 8.0;
        k.bytes_written = m * 8.0;
        t.push_fwd(k, &[]);
    }
    let lf = t.cast(&logits, DType::F32);
    let ls = t.op(
        "log_softmax",
        Softmax,
        &[lf],
        lf.elems,
        DType::F32,
        5.0,
        &[],
        true,
        Bwd::Fused {
            name: "log_softmax_backward_data",
            kind: Softmax,
            reads: 2.0,
            writes: 1.0,
            launches: 1,
        },
    );
    // nll_loss reads one logit per token; its backward zero-fills M×V and scatters −1/N.
    let mut k = Kernel::new("nll_loss_forward", Reduction, DType::F32);
    k.bytes_read = m * 8.0 + m * 32.0;
    k.bytes_written = 8.0;
    let ni = t.push_fwd(k, &[ls]);
    let loss = t.tensor(1.0, DType::F32, ls.rg, Some(ni));
    if ls.rg {
        // One aten op, two CUDA kernels: zero-fill M×V, scatter −1/N.
        let mut nb = t.bk(
            "nll_loss_backward",
            Scatter,
            DType::F32,
            m * 8.0,
            ls.bytes() + m * 32.0,
            m,
        );
        nb.launches = 2;
        let g = t.tape.group_of(nb);
        t.tape.push(g);
    }
    // The mean over tokens happens inside nll_loss (reduction="mean"): no separate division.
    if cx.w.precision == Precision::Fp16Mixed {
        // GradScaler.scale(loss), and in backward its MulBackward: the seed times the scale
        // (CPU trace, docs/results/traces/cpu/*-fp16mixed.json).
        let mut k = Kernel::new("mul", Elementwise, DType::F32);
        k.bytes_read = 8.0;
        k.bytes_written = 4.0;
        t.push_fwd(k, &[loss]);
        if loss.rg {
            let mut mb = t.bk("mul", Elementwise, DType::F32, 8.0, 4.0, 1.0);
            mb.module = "loss";
            let g = t.tape.group_of(mb);
            t.tape.push(g);
        }
    }
    // backward() seeds the gradient with ones_like(loss).
    if loss.rg {
        let mut seed = t.bk("fill_", Elementwise, DType::F32, 0.0, 4.0, 0.0);
        seed.module = "loss";
        let g = t.tape.group_of(seed);
        t.tape.push(g);
    }
    let mut sg = t.finish(false, 0.0, loss.rg);
    // Forward peak of the loss: the model output still holds the logits and the last hidden
    // state, and the loss works on its fp32 copy of the logits while log_softmax's output (saved)
    // is written. Backward peak: nll_loss_backward's M×V gradient and log_softmax_backward's
    // M×V output, both fp32, over everything still saved. (The traces place both peaks there:
    // at nll_loss_forward and at _log_softmax_backward_data.)
    let fp32_copy = if logits.dtype == DType::F32 {
        0.0
    } else {
        lf.bytes()
    };
    let loss_peak = logits.bytes() + fp32_copy + h.bytes();
    // The scope's transient chain goes on (`GuardKind::Transient`).
    sg.guards
        .push((sg.transient_bytes, loss_peak, GuardKind::Transient));
    sg.transient_bytes = sg.transient_bytes.max(loss_peak);
    if loss.rg {
        sg.backward_working_bytes = 2.0 * m * v * DType::F32.size();
    }
    sg
}

#[cfg(test)]
mod tests {
    use crate::graph::tests::graph;
    use crate::method::MethodName;
    use crate::workload::Workload;

    /// The loss worked by hand on GPT-2, bf16-mixed, batch 2 × seq 8 (M = 16 tokens, V =
    /// 50,257): the bf16 logits (M·V·2 = 1,608,224 B) cast to fp32 (3,216,448 B), log-softmax
    /// over them, nll_loss reading one log-probability and the target per token.
    #[test]
    fn loss_kernels_by_hand() {
        let w = Workload {
            batch: 2,
            seq: 8,
            ..Workload::default()
        };
        let (_, _, g) = graph("gpt2", MethodName::Full, &w);
        let fwd: Vec<(&str, f64, f64)> = g
            .head
            .forward
            .kernels
            .iter()
            .filter(|k| k.module == "loss")
            .map(|k| (k.name, k.bytes_read, k.bytes_written))
            .collect();
        let (mv2, mv4) = (16.0 * 50_257.0 * 2.0, 16.0 * 50_257.0 * 4.0);
        assert_eq!(
            fwd,
            [
                // the labels shifted: pad and slice, int64 over the 16 tokens
                ("constant_pad_nd", 128.0, 128.0),
                ("slice_copy", 128.0, 128.0),
                ("to_copy", mv2, mv4),
                ("log_softmax", mv4, mv4),
                // 16 × (8 B target + a 32-byte sector of log-probabilities); the fp32 loss and
                // its weight total, 8 B
                ("nll_loss_forward", 16.0 * 8.0 + 16.0 * 32.0, 8.0),
            ]
        );
        let bwd: Vec<(&str, f64, f64, u32)> = g
            .head
            .backward
            .kernels
            .iter()
            .filter(|k| k.module == "loss")
            .map(|k| (k.name, k.bytes_read, k.bytes_written, k.launches))
            .collect();
        let nll = bwd
            .iter()
            .find(|k| k.0 == "nll_loss_backward")
            .expect("nll_loss_backward");
        // Zero-fill M×V fp32 and scatter −1/N at the 16 targets: reads the ids, writes the
        // whole gradient and a sector per target.
        assert_eq!(*nll, ("nll_loss_backward", 128.0, mv4 + 16.0 * 32.0, 2));
        let lsb = bwd
            .iter()
            .find(|k| k.0 == "log_softmax_backward_data")
            .expect("log_softmax_backward_data");
        assert_eq!((lsb.1, lsb.2), (2.0 * mv4, mv4));
    }
}
