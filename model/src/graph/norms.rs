//! Normalisations, dropout, residual adds and activations, as Hugging Face transformers' eager
//! GPT-2 and Llama blocks launch them.
//!
//! GPT-2's LayerNorm is one `native_layer_norm` kernel (fp32 under autocast) and its "gelu_new"
//! is the tanh approximation written out as eight elementwise kernels; Llama's RMSNorm upcasts to
//! fp32 and runs pow, mean, add eps, rsqrt, mul, cast and the weight multiply; its SwiGLU MLP
//! applies SiLU to the gate and multiplies by the up projection. Dropout is one kernel writing the
//! output and a bool mask. See `kernels.md` (docs/sources.md).

use super::tracer::{Bwd, Tracer, T};
use super::{Ctx, Kernel, KernelKind};
use crate::workload::DType;

/// LayerNorm (GPT-2): one kernel forward (fp32 under autocast), saving mean and rstd; backward is
/// layer_norm_backward plus, when the weight trains, the weight/bias reduction.
pub(super) fn layer_norm(t: &mut Tracer, cx: &Ctx, x: &T, path: &'static str, trains: bool) -> T {
    let prev = t.module;
    t.module = path;
    t.enter_module(1, 0);
    let d = cx.model.hidden as f64;
    let tokens = x.elems / d;
    let wgt = t.param(d, cx.p, trains);
    let bias = t.param(d, cx.p, trains);
    // autocast runs layer_norm in fp32.
    let out_dt = if cx.w.precision.is_autocast() {
        DType::F32
    } else {
        x.dtype
    };
    let xin = t.cast(x, out_dt);
    let mut k = Kernel::new("native_layer_norm", KernelKind::Norm, out_dt);
    k.flops = 8.0 * xin.elems;
    k.bytes_read = xin.bytes() + 2.0 * d * cx.p.size();
    k.bytes_written = xin.elems * out_dt.size() + 2.0 * tokens * 4.0;
    let idx = t.push_fwd(k, &[xin]);
    let rg = xin.rg || trains;
    let out = t.tensor(xin.elems, out_dt, rg, Some(idx));
    if rg {
        t.save(&xin);
        let stats = t.tensor(2.0 * tokens, DType::F32, false, Some(idx));
        t.save(&stats);
        // One aten op (native_layer_norm_backward with its output mask): a dX kernel when the
        // input needs a gradient, a γ/β reduction kernel when the weights train.
        let mut b = t.bk(
            "native_layer_norm_backward",
            KernelKind::Norm,
            out_dt,
            0.0,
            0.0,
            0.0,
        );
        b.launches = 0;
        if xin.rg {
            b.bytes_read += 2.0 * out.bytes() + 2.0 * tokens * 4.0;
            b.bytes_written += out.bytes();
            b.flops += 8.0 * out.elems;
            b.launches += 1;
        }
        if trains {
            b.bytes_read += 2.0 * out.bytes();
            b.bytes_written += 2.0 * d * 4.0;
            b.flops += 4.0 * out.elems;
            b.launches += 1;
        }
        let mut group = t.tape.group_of(b);
        if trains {
            t.grad_plumbing(&mut group, &wgt, out_dt);
            t.grad_plumbing(&mut group, &bias, out_dt);
        }
        if xin.rg {
            t.grad_plumbing(&mut group, &xin, out_dt);
        }
        t.tape.push(group);
    } else {
        t.transient_max(out.bytes());
    }
    t.module = prev;
    out
}

/// Llama RMSNorm as transformers writes it: to(fp32), pow(2), mean, add eps, rsqrt, mul,
/// to(input dtype), weight * x.
pub(super) fn rms_norm(t: &mut Tracer, cx: &Ctx, x: &T, path: &'static str, trains: bool) -> T {
    use KernelKind::*;
    let prev = t.module;
    t.module = path;
    t.enter_module(1, 0);
    let d = cx.model.hidden as f64;
    let tokens = x.elems / d;
    let wgt = t.param(d, cx.p, trains);
    let in_dt = x.dtype;
    let xf = t.cast(x, DType::F32);
    let sq = t.op(
        "pow",
        Elementwise,
        &[xf],
        xf.elems,
        DType::F32,
        1.0,
        &[0],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 2.0,
        },
    );
    let var = t.op(
        "mean",
        Reduction,
        &[sq],
        tokens,
        DType::F32,
        d,
        &[],
        false,
        Bwd::Fused {
            name: "mean_backward",
            kind: Elementwise,
            reads: 1.0,
            writes: d,
            launches: 1,
        },
    );
    let ve = t.op(
        "add",
        Elementwise,
        &[var],
        tokens,
        DType::F32,
        1.0,
        &[],
        false,
        Bwd::Pass,
    );
    let rs = t.op(
        "rsqrt",
        Elementwise,
        &[ve],
        tokens,
        DType::F32,
        2.0,
        &[],
        true,
        Bwd::PerInput {
            reads: 2.0,
            flops: 3.0,
        },
    );
    let normed = t.op(
        "mul",
        Elementwise,
        &[xf, rs],
        xf.elems,
        DType::F32,
        1.0,
        &[0, 1],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 1.0,
        },
    );
    let back = t.cast(&normed, in_dt);
    let out_dt = if cx.p == DType::F32 || back.dtype == DType::F32 {
        DType::F32
    } else {
        cx.p
    };
    let y = t.op(
        "mul",
        Elementwise,
        &[wgt, back],
        back.elems,
        out_dt,
        1.0,
        &[0, 1],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 1.0,
        },
    );
    t.module = prev;
    y
}

/// Dropout as a kernel writing the output and a bool mask (skipped when p = 0).
pub(super) fn dropout(t: &mut Tracer, x: &T, p: f64, path: &'static str) -> T {
    if p <= 0.0 {
        return *x;
    }
    let prev = t.module;
    t.module = path;
    let mut k = Kernel::new("native_dropout", KernelKind::Elementwise, x.dtype);
    k.flops = 2.0 * x.elems;
    k.bytes_read = x.bytes();
    k.bytes_written = x.bytes() + x.elems;
    let idx = t.push_fwd(k, &[*x]);
    let out = t.tensor(x.elems, x.dtype, x.rg, Some(idx));
    if x.rg {
        let mask = t.tensor(x.elems, DType::Bool, false, Some(idx));
        t.save(&mask);
        let mut group = t.tape.group_of(t.bk(
            "dropout_backward",
            KernelKind::Elementwise,
            x.dtype,
            x.bytes() + x.elems,
            x.bytes(),
            x.elems,
        ));
        t.grad_plumbing(&mut group, x, x.dtype);
        t.tape.push(group);
    }
    t.module = prev;
    out
}

pub(super) fn add(t: &mut Tracer, a: &T, b: &T) -> T {
    let dt = if a.dtype == b.dtype {
        a.dtype
    } else {
        DType::F32
    };
    let elems = t.max(a.elems, b.elems);
    t.op(
        "add",
        KernelKind::Elementwise,
        &[*a, *b],
        elems,
        dt,
        1.0,
        &[],
        false,
        Bwd::Pass,
    )
}

/// GPT-2's "gelu_new": 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), eight eager kernels; pow
/// runs in fp32 under CUDA's autocast (its input cast first: a ninth kernel), so the chain after
/// it is fp32.
pub(super) fn gelu_new(t: &mut Tracer, cx: &Ctx, f: &T, path: &'static str) -> T {
    use KernelKind::*;
    let prev = t.module;
    t.module = path;
    let fdt = if cx.w.precision.is_autocast() {
        DType::F32
    } else {
        f.dtype
    };
    let e = f.elems;
    // Autocast's fp32 policy casts pow's input (one more kernel); pow keeps that fp32 copy.
    let fin = t.cast(f, fdt);
    let p3 = t.op(
        "pow",
        Elementwise,
        &[fin],
        e,
        fdt,
        2.0,
        &[0],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 3.0,
        },
    );
    let c1 = t.op(
        "mul",
        Elementwise,
        &[p3],
        e,
        fdt,
        1.0,
        &[],
        false,
        Bwd::PerInput {
            reads: 1.0,
            flops: 1.0,
        },
    );
    let s1 = add(t, f, &c1);
    let c2 = t.op(
        "mul",
        Elementwise,
        &[s1],
        e,
        fdt,
        1.0,
        &[],
        false,
        Bwd::PerInput {
            reads: 1.0,
            flops: 1.0,
        },
    );
    let th = t.op(
        "tanh",
        Elementwise,
        &[c2],
        e,
        fdt,
        4.0,
        &[],
        true,
        Bwd::PerInput {
            reads: 2.0,
            flops: 3.0,
        },
    );
    let s2 = t.op(
        "add",
        Elementwise,
        &[th],
        e,
        fdt,
        1.0,
        &[],
        false,
        Bwd::Pass,
    );
    let half = t.op(
        "mul",
        Elementwise,
        &[*f],
        e,
        f.dtype,
        1.0,
        &[],
        false,
        Bwd::PerInput {
            reads: 1.0,
            flops: 1.0,
        },
    );
    let g = t.op(
        "mul",
        Elementwise,
        &[half, s2],
        e,
        fdt,
        1.0,
        &[0, 1],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 1.0,
        },
    );
    t.module = prev;
    g
}

/// Llama's SwiGLU activation: SiLU on the gate projection `g` (module `mlp.act_fn`), times the up
/// projection `u` (module `mlp`).
pub(super) fn silu_mul(t: &mut Tracer, g: &T, u: &T) -> T {
    use KernelKind::*;
    let prev = t.module;
    t.module = "mlp.act_fn";
    let a = t.op(
        "silu",
        Elementwise,
        &[*g],
        g.elems,
        g.dtype,
        4.0,
        &[0],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 5.0,
        },
    );
    t.module = "mlp";
    let gu = t.op(
        "mul",
        Elementwise,
        &[a, *u],
        u.elems,
        u.dtype,
        1.0,
        &[0, 1],
        false,
        Bwd::PerInput {
            reads: 2.0,
            flops: 1.0,
        },
    );
    t.module = prev;
    gu
}

#[cfg(test)]
mod tests {
    use crate::graph::tests::graph;
    use crate::method::MethodName;
    use crate::workload::Workload;

    /// GPT-2's LayerNorm worked by hand, fp32, batch 2 × seq 8 (M = 16 tokens, d = 768), full
    /// fine-tuning (input and weights need gradients).
    #[test]
    fn layer_norm_bytes_and_flops_by_hand() {
        let w = Workload {
            batch: 2,
            seq: 8,
            precision: crate::workload::Precision::Fp32,
            ..Workload::default()
        };
        let (_, _, g) = graph("gpt2", MethodName::Full, &w);
        let pick = |ks: &[crate::graph::Kernel], name: &str| {
            ks.iter()
                .find(|k| k.module == "ln_1" && k.name == name)
                .cloned()
                .unwrap_or_else(|| panic!("no {name} in ln_1"))
        };
        let (m, d) = (16.0, 768.0);
        let f = pick(&g.layer(0).forward.kernels, "native_layer_norm");
        // Reads x (M·d·4 = 49,152 B) and γ, β (2·d·4 = 6,144 B); writes y (49,152 B) and the
        // fp32 mean and rstd (2·M·4 = 128 B); 8 FLOPs per element.
        assert_eq!(f.bytes_read, m * d * 4.0 + 2.0 * d * 4.0);
        assert_eq!(f.bytes_read, 55_296.0);
        assert_eq!(f.bytes_written, 49_280.0);
        assert_eq!(f.flops, 8.0 * m * d);
        assert_eq!(f.launches, 1);
        let b = pick(&g.layer(0).backward.kernels, "native_layer_norm_backward");
        // dX kernel: reads dY and X (2 · 49,152) and the statistics (128), writes dX (49,152);
        // γ/β kernel: reads dY and X again (2 · 49,152), writes dγ and dβ (2·d·4 = 6,144).
        assert_eq!(b.launches, 2);
        assert_eq!(b.bytes_read, 4.0 * 49_152.0 + 128.0);
        assert_eq!(b.bytes_written, 49_152.0 + 6_144.0);
        assert_eq!(b.flops, 12.0 * m * d);
        // Frozen (LoRA): only the dX kernel, in a layer whose input needs a gradient (the
        // second: the first one's input comes from the frozen embeddings, so its LayerNorm has
        // no backward at all).
        let (_, _, g) = graph("gpt2", MethodName::Lora, &w);
        assert!(!g
            .layer(0)
            .backward
            .kernels
            .iter()
            .any(|k| k.module == "ln_1"));
        let b = pick(&g.layer(1).backward.kernels, "native_layer_norm_backward");
        assert_eq!(b.launches, 1);
        assert_eq!(b.bytes_read, 2.0 * 49_152.0 + 128.0);
        assert_eq!(b.bytes_written, 49_152.0);
        assert_eq!(b.flops, 8.0 * m * d);
    }

    #[test]
    fn gpt2_gelu_is_eight_kernels_and_autocasts_pow() {
        // Under bf16-mixed (the default), CUDA's autocast runs pow in fp32: its input is cast
        // first, a ninth kernel (seen in the H200 trace: _to_copy float32 before pow).
        let w = Workload::default();
        let (_, _, g) = graph("gpt2", MethodName::Full, &w);
        let act: Vec<_> = g
            .layer(0)
            .forward
            .kernels
            .iter()
            .filter(|k| k.module == "mlp.act")
            .map(|k| k.name)
            .collect();
        assert_eq!(
            act,
            ["to_copy", "pow", "mul", "add", "mul", "tanh", "add", "mul", "mul"]
        );
        let w32 = Workload {
            precision: crate::workload::Precision::Fp32,
            ..Workload::default()
        };
        let (_, _, g) = graph("gpt2", MethodName::Full, &w32);
        let n = g
            .layer(0)
            .forward
            .kernels
            .iter()
            .filter(|k| k.module == "mlp.act")
            .count();
        assert_eq!(n, 8);
    }
}
