//! Attention and rotary embedding, as Hugging Face transformers' eager GPT-2 and Llama blocks run
//! them.
//!
//! SDPA is one flash / memory-efficient attention kernel forward and its backward
//! (FlashAttention-2: dot(dO, O) preprocess, main kernel, dq conversion); eager attention is
//! transformers' `eager_attention_forward`: copies (or repeat_kv), matmul, scale, the additive
//! causal mask, softmax, cast, dropout, matmul and the transpose copy. Llama's rotary embedding
//! is x·cos + rotate_half(x)·sin applied to q and k. See `kernels.md` (docs/sources.md).

use super::norms::{add, dropout};
use super::tracer::{Bwd, Tracer, T};
use super::{Ctx, Kernel, KernelKind};
use crate::arch::Family;
use crate::workload::{AttentionImpl, DType};

/// Backward of k or v expanded to every query head (SDPA's math path, eager's repeat_kv) beside
/// the tracer's broadcast sum over the groups: the kv-sized copy of the summed gradient.
fn gqa_expand_bwd(rep: f64) -> Bwd {
    Bwd::Fused {
        name: "clone",
        kind: KernelKind::Elementwise,
        reads: 1.0 / rep,
        writes: 1.0 / rep,
        launches: 1,
    }
}

/// Attention over q, k, v (each M×(heads·hd) in the compute dtype, k/v with kv_heads).
pub(super) fn attention(
    t: &mut Tracer,
    cx: &Ctx,
    q: &T,
    k: &T,
    v: &T,
    path: &'static str,
    p_drop: f64,
) -> T {
    let prev = t.module;
    t.module = path;
    // CUDA has no fused fp32 kernel with grouped-query attention (flash and cuDNN need 16-bit,
    // memory-efficient has no GQA): SDPA runs its math path there (H200 trace).
    let fp32_gqa = q.dtype == DType::F32 && cx.model.kv_heads != cx.model.heads;
    let out = match cx.w.attention {
        AttentionImpl::Sdpa if fp32_gqa => sdpa_math(t, cx, q, k, v),
        AttentionImpl::Sdpa => sdpa(t, cx, q, k, v),
        AttentionImpl::Eager => eager_attention(t, cx, q, k, v, path, p_drop),
    };
    t.module = prev;
    out
}

/// GPT-2's q, k and v are views of c_attn's output (one of them is `q`): split's backward is one
/// cat of their gradients into the whole output's, added to `group`.
fn split_cat(t: &mut Tracer, group: &mut Vec<Kernel>, q: &T) {
    let whole = T {
        elems: 3.0 * q.elems,
        ..*q
    };
    group.push(t.bk(
        "cat",
        KernelKind::Elementwise,
        q.dtype,
        whole.bytes(),
        whole.bytes(),
        0.0,
    ));
    t.grad_plumbing(group, &whole, q.dtype);
}

/// SDPA: one flash / memory-efficient attention kernel, saving q, k, v, the output and the
/// log-sum-exp.
fn sdpa(t: &mut Tracer, cx: &Ctx, q: &T, k: &T, v: &T) -> T {
    use KernelKind::*;
    let (b, s) = (cx.w.batch, cx.w.seq);
    let h = cx.model.heads;
    let hd = cx.model.head_dim();
    let (bf, sf, hf, hdf) = (b as f64, s as f64, h as f64, hd as f64);
    let dt = q.dtype;
    // Flash / memory-efficient attention: causal FLOPs 4·B·h·S²·hd / 2 forward; backward
    // recomputes the scores, 2.5× the forward FLOPs (FlashAttention-2).
    let flops = 2.0 * bf * hf * sf * sf * hdf;
    // The shape of one (batch × head) slice's score GEMM, S×S×hd, over B·h slices: what a
    // profile's per-tile attention cost counts tiles from (`cost::attention_tiles`).
    let shape = Some(super::Gemm {
        m: s,
        n: s,
        k: hd,
        batch: b * h,
    });
    let mut kk = Kernel::new("scaled_dot_product_attention", Attention, dt);
    kk.math = t.prec.math_mode(dt);
    kk.flops = flops;
    kk.gemm = shape;
    kk.bytes_read = q.bytes() + k.bytes() + v.bytes();
    let lse = bf * hf * sf * 4.0;
    kk.bytes_written = q.bytes() + lse;
    let idx = t.push_fwd(kk, &[*q, *k, *v]);
    let rg = q.rg || k.rg || v.rg;
    let out = t.tensor(q.elems, dt, rg, Some(idx));
    if rg {
        if q.id_differs(k) {
            for x in [q, k, v] {
                t.save(x);
            }
        } else {
            // GPT-2: q, k, v are views of c_attn's fused output; the saved views keep that
            // whole M×3d storage alive (the traces count it once, whole).
            t.save(&T {
                elems: 3.0 * q.elems,
                ..*q
            });
        }
        t.save(&out);
        let lse_t = t.tensor(bf * hf * sf, DType::F32, false, Some(idx));
        t.save(&lse_t);
        // dot(dO, O) preprocess, the main backward kernel, and the dq conversion. Reads what
        // the op takes: dO, q, k, v, the output O (dO and O q-sized) and the log-sum-exp, once
        // for the main kernel and once as the preprocess's row sums (the traces' argument bytes,
        // docs/traces.md; the preprocess's second pass over dO and O and the fp32 dq
        // accumulator's round trip are not counted).
        let mut bwk = t.bk(
            "scaled_dot_product_attention_backward",
            Attention,
            dt,
            3.0 * q.bytes() + k.bytes() + v.bytes() + 2.0 * lse,
            q.bytes() + k.bytes() + v.bytes(),
            2.5 * flops,
        );
        bwk.math = t.prec.math_mode(dt);
        bwk.gemm = shape;
        bwk.launches = 3;
        let mut group = t.tape.group_of(bwk);
        // SDPA's backward allocates each input gradient with its input's strides. v (and
        // GPT-2's q, k, v) are transposed views of (B, S, h, hd), so their gradients view back
        // for free; Llama's q and k are rope's fresh (B, h, S, hd) outputs, whose gradients
        // must be copied (reshape of a non-contiguous tensor) on the way back to q_proj/k_proj.
        if q.id_differs(k) {
            for x in [q, k] {
                if x.rg {
                    group.push(t.bk("clone", Elementwise, dt, x.bytes(), x.bytes(), 0.0));
                }
            }
        }
        if !q.id_differs(k) {
            split_cat(t, &mut group, q);
        } else {
            for x in [q, k, v] {
                if x.rg {
                    t.grad_plumbing(&mut group, x, dt);
                }
            }
        }
        t.tape.push(group);
    }
    out
}

/// SDPA's math path (`_scaled_dot_product_attention_math`), what CUDA runs for fp32 with
/// grouped-query attention, op for op as the traces show it: q and k scaled by √scale, the causal
/// mask built (ones, tril, two scalar_tensor, where), k and v expanded to every head and copied,
/// q·kᵀ (bmm), the mask added, a safe softmax (kept), ·v (bmm). It keeps q, k, v (all heads)
/// and the S×S probabilities; backward adds the bmm gradients, the softmax backward, the scale
/// gradients and the sums of the expanded heads.
fn sdpa_math(t: &mut Tracer, cx: &Ctx, q: &T, k: &T, v: &T) -> T {
    use KernelKind::*;
    let (b, s) = (cx.w.batch, cx.w.seq);
    let h = cx.model.heads;
    let hd = cx.model.head_dim();
    let sf = s as f64;
    let dt = q.dtype;
    let rep = (cx.model.heads / cx.model.kv_heads) as f64;
    let scale = |t: &mut Tracer, x: &T| {
        t.op(
            "mul",
            Elementwise,
            &[*x],
            x.elems,
            dt,
            1.0,
            &[],
            false,
            Bwd::PerInput {
                reads: 1.0,
                flops: 1.0,
            },
        )
    };
    let qs = scale(t, q);
    let ks = scale(t, k);
    // Bytes as the CPU trace records them (docs/results/traces/cpu/llama-full-fp32.json): the
    // fills read nothing, tril reads the ones, where reads the bool mask and the two scalars.
    let (mask, scalar) = (sf * sf * DType::Bool.size(), dt.size());
    for (name, dtype, read, written) in [
        ("ones", DType::Bool, 0.0, mask),
        ("tril", DType::Bool, mask, mask),
        ("scalar_tensor", dt, 0.0, scalar),
        ("scalar_tensor", dt, 0.0, scalar),
        ("where", dt, mask + 2.0 * scalar, sf * sf * dt.size()),
    ] {
        let mut kk = Kernel::new(name, Elementwise, dtype);
        kk.bytes_read = read;
        kk.bytes_written = written;
        t.push_fwd(kk, &[]);
    }
    // Expanded to every head and copied. Backward: the tracer's broadcast sum adds each group's
    // gradients back (reads the expanded gradient, writes k's size), then the kv-sized gradient
    // is copied to contiguous for the view back through the transpose (filed first here; the
    // order within the group does not change its cost). The CPU trace shows one sum and one
    // kv-sized clone per tensor (docs/results/traces/cpu/llama-full-fp32.json).
    let expand = |t: &mut Tracer, x: &T| {
        t.op(
            "clone",
            Elementwise,
            &[*x],
            x.elems * rep,
            dt,
            0.0,
            &[],
            false,
            gqa_expand_bwd(rep),
        )
    };
    let kx = expand(t, &ks);
    let vx = expand(t, v);
    // q's and the output's reshapes between (B, h, S, hd) and (B·h, S, hd) copy them too.
    let copy = |t: &mut Tracer, x: &T| {
        t.op(
            "clone",
            Elementwise,
            &[*x],
            x.elems,
            dt,
            0.0,
            &[],
            false,
            Bwd::PerInput {
                reads: 1.0,
                flops: 0.0,
            },
        )
    };
    let qx = copy(t, &qs);
    let scores = t.gemm("bmm", "qk", &qx, &kx, None, s, s, hd, b * h);
    let madd = t.input(sf * sf, dt, false);
    let masked = t.op(
        "add",
        Elementwise,
        &[scores, madd],
        scores.elems,
        dt,
        1.0,
        &[],
        false,
        Bwd::Pass,
    );
    let probs = t.op(
        "_safe_softmax",
        Softmax,
        &[masked],
        masked.elems,
        DType::F32,
        5.0,
        &[],
        true,
        Bwd::Fused {
            name: "softmax_backward_data",
            kind: Softmax,
            reads: 2.0,
            writes: 1.0,
            launches: 1,
        },
    );
    let out = t.gemm("bmm", "av", &probs, &vx, None, s, hd, s, b * h);
    copy(t, &out)
}

/// Eager attention as transformers 5.17's `eager_attention_forward` runs it (GPT-2's and
/// Llama's), checked op by op against CPU traces (`docs/results/traces/cpu-eager`):
///
/// - the 4-D q, kᵀ and v are copied for the batched matmuls (with grouped-query attention,
///   repeat_kv's expand copies k and v to every head instead); backward copies q's and k's
///   gradients back (or sums each group's copies and copies the kv-sized gradient);
/// - scores = q·kᵀ, times the scale (a mul), plus the model's (B, 1, S, S) additive causal mask
///   in the parameters' dtype, which promotes bf16 scores to fp32 under autocast;
/// - softmax: GPT-2's in the scores' dtype, then `.type(value.dtype)`; Llama's with
///   `dtype=float32` (a cast up first when the scores are not fp32), then `.to(query.dtype)`;
/// - dropout (functional), probabilities · v, and the transpose back to (B, S, h·hd) copied.
fn eager_attention(
    t: &mut Tracer,
    cx: &Ctx,
    q: &T,
    k: &T,
    v: &T,
    path: &'static str,
    p_drop: f64,
) -> T {
    use KernelKind::*;
    let (b, s) = (cx.w.batch, cx.w.seq);
    let h = cx.model.heads;
    let hd = cx.model.head_dim();
    let (bf, sf) = (b as f64, s as f64);
    let dt = q.dtype;
    let rep = cx.model.heads / cx.model.kv_heads;
    let copy = |t: &mut Tracer, x: &T, bwd: Bwd| {
        t.op(
            "clone",
            Elementwise,
            &[*x],
            q.elems,
            dt,
            0.0,
            &[],
            false,
            bwd,
        )
    };
    let back = || Bwd::PerInput {
        reads: 1.0,
        flops: 0.0,
    };
    // GPT-2: q, k, v are views of c_attn's output; split's backward is one cat of the three
    // gradients (filed before the copies, so it runs after their backward).
    let (q, k, v) = if !q.id_differs(k) {
        if q.rg {
            let mut group = t.tape.group();
            split_cat(t, &mut group, q);
            t.tape.push(group);
        }
        let view = |t: &mut Tracer| t.tensor(q.elems, dt, q.rg, q.producer);
        (&view(t), &view(t), &view(t))
    } else {
        (q, k, v)
    };
    let (qx, kx, vx) = if rep > 1 {
        // repeat_kv: expand + reshape copies K and V to all heads; backward sums the copies
        // back and copies the kv-sized gradient, as SDPA's math path does (CPU trace).
        let kx = copy(t, k, gqa_expand_bwd(rep as f64));
        let vx = copy(t, v, gqa_expand_bwd(rep as f64));
        (copy(t, q, back()), kx, Some(vx))
    } else {
        (copy(t, q, back()), copy(t, k, back()), None)
    };
    let scores = t.gemm("bmm", "qk", &qx, &kx, None, s, s, hd, b * h);
    let scaled = t.op(
        "mul",
        Elementwise,
        &[scores],
        scores.elems,
        dt,
        1.0,
        &[],
        false,
        Bwd::PerInput {
            reads: 1.0,
            flops: 1.0,
        },
    );
    // The model's causal mask (block.rs, the embedding scope), in the parameters' dtype, is
    // broadcast over the heads; type promotion decides the sum's dtype.
    let mask = t.input(bf * sf * sf, cx.p, false);
    let mdt = if dt == DType::F32 || cx.p == DType::F32 {
        DType::F32
    } else {
        dt
    };
    let masked = t.op(
        "add",
        Elementwise,
        &[scaled, mask],
        scaled.elems,
        mdt,
        1.0,
        &[],
        false,
        Bwd::Pass,
    );
    let sm_in = match cx.model.family {
        Family::Gpt2 => masked,
        Family::Llama => t.cast(&masked, DType::F32),
    };
    let probs = t.op(
        "softmax",
        Softmax,
        &[sm_in],
        sm_in.elems,
        sm_in.dtype,
        5.0,
        &[],
        true,
        Bwd::Fused {
            name: "softmax_backward_data",
            kind: Softmax,
            reads: 2.0,
            writes: 1.0,
            launches: 1,
        },
    );
    let probs = t.cast(&probs, dt);
    let probs = dropout(t, &probs, p_drop, path);
    let vx = match vx {
        Some(vx) => vx,
        // v's gradient needs no copy back (the split's backward, a cat, takes it as it is).
        None => copy(t, v, Bwd::Pass),
    };
    let ctx = t.gemm("bmm", "av", &probs, &vx, None, s, hd, s, b * h);
    // transpose(1, 2).reshape(...).contiguous(): a copy back to (B, S, h·hd).
    t.op(
        "clone",
        Elementwise,
        &[ctx],
        ctx.elems,
        dt,
        0.0,
        &[],
        false,
        back(),
    )
}

/// Rotary embedding on q or k as transformers applies it: x·cos + rotate_half(x)·sin, with
/// rotate_half = cat(−x2, x1) over the halves x1, x2 (views) of x.
///
/// Forward: mul, neg, cat, mul, add. Backward, as autograd runs it: grad·sin (the cat's input
/// gradient, sliced into its halves as views), neg for −x2, `slice_backward` for each half back
/// into x's shape, grad·cos, and two adds gathering x's three gradients.
pub(super) fn rope(t: &mut Tracer, x: &T, cos: &T) -> T {
    use KernelKind::*;
    // cos and sin come in the hidden states' dtype (fp32 under autocast): the products promote.
    let dt = if cos.dtype == DType::F32 {
        DType::F32
    } else {
        x.dtype
    };
    let xr = T { rg: false, ..*x };
    let pass = |t: &mut Tracer, name, ins: &[T], elems: f64, dtype| {
        t.op(
            name,
            Elementwise,
            ins,
            elems,
            dtype,
            1.0,
            &[],
            false,
            Bwd::Pass,
        )
    };
    let a = pass(t, "mul", &[xr, *cos], x.elems, dt);
    // rotate_half: cat(−x2, x1) of x's two halves (views): neg reads one half, cat the negated
    // half and the other.
    let x_half = T {
        elems: x.elems / 2.0,
        ..xr
    };
    let half = pass(t, "neg", &[x_half], x.elems / 2.0, x.dtype);
    let rot = pass(t, "cat", &[half, x_half], x.elems, x.dtype);
    let b = pass(t, "mul", &[rot, *cos], x.elems, dt);
    let mut out = add(t, &a, &b);
    if x.rg {
        out.rg = true;
        let xb = x.elems * dt.size();
        // Under autocast (dt fp32, x bf16) each product's gradient is cast back to x's dtype
        // before the rest runs: neg, the slice_backwards and the adds run in x's dtype, as the
        // CPU trace shows (docs/results/traces/cpu/llama-full-bf16mixed.json).
        let xd = x.dtype;
        let xs = x.elems * xd.size();
        let hs = xs / 2.0;
        let mut group =
            t.tape
                .group_of(t.bk("mul", Elementwise, dt, xb + cos.bytes(), xb, x.elems));
        if dt != xd {
            group.push(t.bk("to_copy", Cast, xd, xb, xs, 0.0));
        }
        group.extend([
            t.bk("neg", Elementwise, xd, hs, hs, x.elems / 2.0),
            t.bk("slice_backward", Elementwise, xd, hs, xs, 0.0),
            t.bk("slice_backward", Elementwise, xd, hs, xs, 0.0),
            t.bk("mul", Elementwise, dt, xb + cos.bytes(), xb, x.elems),
        ]);
        if dt != xd {
            group.push(t.bk("to_copy", Cast, xd, xb, xs, 0.0));
        }
        group.extend([
            t.bk("add", Elementwise, xd, 2.0 * xs, xs, x.elems),
            t.bk("add", Elementwise, xd, 2.0 * xs, xs, x.elems),
        ]);
        t.grad_plumbing(&mut group, x, xd);
        t.tape.push(group);
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::graph::tests::graph;
    use crate::graph::Kernel;
    use crate::method::MethodName;
    use crate::workload::{DType, Precision, Workload};

    fn one<'a>(ks: &'a [Kernel], name: &str) -> &'a Kernel {
        let found: Vec<&Kernel> = ks.iter().filter(|k| k.name == name).collect();
        assert_eq!(found.len(), 1, "{name}: {}", found.len());
        found[0]
    }

    /// SDPA worked by hand on GPT-2 (12 heads of 64), bf16-mixed, batch 2 × seq 8, full
    /// fine-tuning: q, k, v are bf16 (autocast's GEMM outputs), B·S·d = 2 · 8 · 768 = 12,288
    /// elements, 24,576 bytes each; the log-sum-exp is fp32, B·h·S · 4 = 768 bytes.
    #[test]
    fn sdpa_kernels_by_hand() {
        let w = Workload {
            batch: 2,
            seq: 8,
            ..Workload::default()
        };
        assert_eq!(w.precision, Precision::Bf16Mixed);
        let (_, _, g) = graph("gpt2", MethodName::Full, &w);
        let q = 24_576.0;
        let lse = 768.0;
        let f = one(&g.layer(0).forward.kernels, "scaled_dot_product_attention");
        assert_eq!(f.dtype, DType::Bf16);
        // Causal: 2 · B·h·S²·hd = 2 · 2 · 12 · 64 · 64 = 196,608 FLOPs (half of 4·B·h·S²·hd).
        assert_eq!(f.flops, 196_608.0);
        assert_eq!(f.bytes_read, 3.0 * q);
        assert_eq!(f.bytes_written, q + lse);
        let b = one(
            &g.layer(1).backward.kernels,
            "scaled_dot_product_attention_backward",
        );
        // 2.5× the forward's FLOPs; reads dO, q, k, v, O and the log-sum-exp twice; writes
        // dq, dk, dv; three kernels (preprocess, main, dq conversion).
        assert_eq!(b.flops, 491_520.0);
        assert_eq!(b.bytes_read, 5.0 * q + 2.0 * lse);
        assert_eq!(b.bytes_written, 3.0 * q);
        assert_eq!(b.launches, 3);
        // GPT-2's q, k, v are views of c_attn's output: their gradients are joined by one cat
        // of the whole B·S·3d.
        let cat = one(&g.layer(1).backward.kernels, "cat");
        assert_eq!((cat.bytes_read, cat.bytes_written), (3.0 * q, 3.0 * q));
    }

    /// Eager attention (`--attention eager`) worked by hand on GPT-2, fp32, batch 2 × seq 8,
    /// 12 heads of 64, as transformers 5.17 runs it (docs/results/traces/cpu-eager): q, k, v
    /// are 2 · 8 · 768 fp32 (49,152 B); the scores are B·h = 24 matrices of 8 × 8 (1,536 fp32,
    /// 6,144 B); the model's additive causal mask is (B, 1, S, S) fp32 (512 B).
    #[test]
    fn eager_attention_by_hand() {
        let w = Workload {
            batch: 2,
            seq: 8,
            precision: Precision::Fp32,
            attention: crate::workload::AttentionImpl::Eager,
            ..Workload::default()
        };
        let (m, _, g) = graph("gpt2", MethodName::Full, &w);
        assert_eq!(m.dropout, 0.1);
        let got: Vec<(&str, f64, f64, f64)> = g
            .layer(0)
            .forward
            .kernels
            .iter()
            .filter(|k| k.module == "attn")
            .map(|k| (k.name, k.bytes_read, k.bytes_written, k.flops))
            .collect();
        let (x, sc) = (49_152.0, 6_144.0);
        assert_eq!(
            got,
            [
                // the 4-D q and kᵀ copied for the batched matmul
                ("clone", x, x, 0.0),
                ("clone", x, x, 0.0),
                // q·kᵀ: 2 · 8 · 8 · 64 · 24 FLOPs
                ("bmm", 2.0 * x, sc, 196_608.0),
                // × the scale, then + the mask (read once, broadcast over the heads)
                ("mul", sc, sc, 1_536.0),
                ("add", sc + 512.0, sc, 1_536.0),
                // softmax in the scores' dtype, 5 FLOPs an element
                ("softmax", sc, sc, 7_680.0),
                // attention dropout: the probabilities and a bool mask
                ("native_dropout", sc, sc + 1_536.0, 3_072.0),
                // v copied, probs · v: 2 · 8 · 64 · 8 · 24 FLOPs
                ("clone", x, x, 0.0),
                ("bmm", sc + x, x, 196_608.0),
                // transpose back to (B, S, h·hd): a copy
                ("clone", x, x, 0.0),
            ]
        );
        // Backward: the output copy's gradient, the two matmuls' (2 each), dropout's,
        // softmax's, the scale's, q's and k's copies back, and split's cat of q, k and v.
        let bwd: Vec<&str> = g
            .layer(1)
            .backward
            .kernels
            .iter()
            .filter(|k| k.module == "attn")
            .map(|k| k.name)
            .collect();
        assert_eq!(
            bwd,
            [
                "backward",
                "mm_dW",
                "mm_dX",
                "dropout_backward",
                "softmax_backward_data",
                "mul_backward",
                "mm_dW",
                "mm_dX",
                "backward",
                "backward",
                "cat",
            ]
        );
        // The cat joins the three gradients into c_attn's output gradient: 3 · 49,152 B.
        let cat = one(&g.layer(1).backward.kernels, "cat");
        assert_eq!((cat.bytes_read, cat.bytes_written), (3.0 * x, 3.0 * x));
    }

    /// GPT-2's eager softmax runs in the scores' dtype: bf16 in a bf16 model, with no cast;
    /// under autocast the fp32 mask promotes the bf16 scores, softmax runs in fp32 and
    /// `.type(value.dtype)` casts back. Llama's asks for fp32 (`dtype=torch.float32`): a cast up
    /// first in a bf16 model, and `.to(query.dtype)` after (docs/results/traces/cpu-eager).
    #[test]
    fn eager_softmax_dtypes_follow_each_family() {
        use crate::workload::DType;
        let dtypes = |model: &str, precision: Precision| -> Vec<(&'static str, DType)> {
            let w = Workload {
                batch: 1,
                seq: 8,
                precision,
                attention: crate::workload::AttentionImpl::Eager,
                ..Workload::default()
            };
            let (_, _, g) = graph(model, MethodName::Full, &w);
            let attn = if model == "gpt2" { "attn" } else { "self_attn" };
            let ks = &g.layer(0).forward.kernels;
            let at = ks
                .iter()
                .position(|k| k.name == "add" && k.module == attn)
                .unwrap();
            ks[at..]
                .iter()
                .take_while(|k| k.name != "native_dropout" && k.name != "clone")
                .take_while(|k| k.name != "bmm")
                .map(|k| (k.name, k.dtype))
                .collect()
        };
        use DType::{Bf16, F32};
        assert_eq!(
            dtypes("gpt2", Precision::Bf16),
            [("add", Bf16), ("softmax", Bf16)]
        );
        assert_eq!(
            dtypes("gpt2", Precision::Bf16Mixed),
            [("add", F32), ("softmax", F32), ("to_copy", Bf16)]
        );
        assert_eq!(
            dtypes("tinyllama-1.1b", Precision::Bf16),
            [
                ("add", Bf16),
                ("to_copy", F32),
                ("softmax", F32),
                ("to_copy", Bf16)
            ]
        );
        assert_eq!(
            dtypes("tinyllama-1.1b", Precision::Bf16Mixed),
            [("add", F32), ("softmax", F32), ("to_copy", Bf16)]
        );
    }

    /// rotate_half worked by hand on tinyllama-1.1b (32 heads and 4 kv heads of 64), bf16-mixed,
    /// batch 1 × seq 4: q is 4 · 2048 bf16 values (16,384 bytes), k 4 · 256 (2,048 bytes). Each
    /// rope's neg reads and writes one half; its cat reads the two halves and writes the whole.
    #[test]
    fn rotate_half_reads_halves() {
        let w = Workload {
            batch: 1,
            seq: 4,
            ..Workload::default()
        };
        let (_, _, g) = graph("tinyllama-1.1b", MethodName::Full, &w);
        let fwd = &g.layer(0).forward.kernels;
        let negs: Vec<(f64, f64)> = fwd
            .iter()
            .filter(|k| k.name == "neg")
            .map(|k| (k.bytes_read, k.bytes_written))
            .collect();
        assert_eq!(negs, [(8_192.0, 8_192.0), (1_024.0, 1_024.0)]);
        let cats: Vec<(f64, f64)> = fwd
            .iter()
            .filter(|k| k.name == "cat")
            .map(|k| (k.bytes_read, k.bytes_written))
            .collect();
        assert_eq!(cats, [(16_384.0, 16_384.0), (2_048.0, 2_048.0)]);
    }
}
