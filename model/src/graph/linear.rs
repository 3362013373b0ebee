//! Linear layers and their adapters: how each method trains one nn.Linear.
//!
//! Full fine-tuning is one GEMM forward (bias fused via addmm) and the dX and dW GEMMs backward;
//! a frozen layer keeps dX only. LoRA follows Hugging Face peft's `Linear.forward`
//! (peft/tuners/lora/layer.py): cast the input to the adapter dtype, dropout, GEMM A, GEMM B,
//! scale, add into the base result, cast back; under autocast lora_A/lora_B are nn.Linear too, so
//! their input and weights are cast. PaCA follows the authors' reference layer
//! (github WooSunghyeon/paca, peft/src/peft/tuners/paca/layer.py): write the scaled trainable
//! columns P into W, one GEMM, gather x[..., idx] and save only that; its autograd Function
//! replaces the GEMM backward with dX = dY·W and dP = dYᵀ·x_idx. Under torch.autocast every
//! linear casts its weight (and bias) to the half type on each forward. See
//! `kernels.md` (docs/sources.md).

use super::tracer::{Bwd, Tracer, T};
use super::{Ctx, Gemm, Kernel, KernelKind};
use crate::arch::Linear;
use crate::method::{AdapterDtype, MethodKind};
use crate::workload::DType;

/// Bytes of one sector, the unit a strided access moves per element it touches (GPU DRAM and L2
/// sectors are 32 bytes; a CPU moves 64-byte lines, a factor its calibrated efficiency absorbs
/// because the calibration prices its samples with this same formula).
pub const SECTOR_BYTES: f64 = 32.0;

/// Bytes a strided access to `picked` of `cols` columns in each of `rows` rows moves: each picked
/// element costs its own sector of `elem_bytes`-byte elements, up to the whole row. PaCA's gather
/// x[..., idx] reads this much and its write of s·P into W's columns writes it.
pub fn strided_columns_bytes(rows: f64, cols: f64, picked: f64, elem_bytes: f64) -> f64 {
    rows * cols.min(picked * SECTOR_BYTES / elem_bytes) * elem_bytes
}

/// The piece (`Kernel::piece`) of PaCA's kernels on its trainable columns P: the write of s·P
/// into W, dP and their scales and casts.
pub const PACA_P: &str = "paca_P";
/// The piece of PaCA's gather x[..., idx].
pub const PACA_IDX: &str = "paca_idx";

/// How one linear layer trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Treatment {
    Frozen,
    Full,
    Lora,
    Paca,
}

/// How `lin` trains under the method, in a trained (`trained`) or frozen block.
pub(super) fn treatment(cx: &Ctx, lin: &Linear, trained: bool) -> Treatment {
    if !trained {
        return Treatment::Frozen;
    }
    match cx.method.kind {
        MethodKind::Full => Treatment::Full,
        MethodKind::Lora if cx.method.targets.contains(lin.role) => Treatment::Lora,
        MethodKind::Paca if cx.method.targets.contains(lin.role) => Treatment::Paca,
        _ => Treatment::Frozen,
    }
}

/// A linear layer: autocast casts, the base GEMM, and the method's additions.
pub(super) fn linear(t: &mut Tracer, cx: &Ctx, x: &T, lin: &Linear, treat: Treatment) -> T {
    let (m, k, n) = (cx.m, lin.in_features, lin.out_features);
    let (kf, nf) = (k as f64, n as f64);
    let autocast = cx.w.precision.is_autocast();
    let prev = t.module;
    t.module = lin.path;
    // The layer's module call; peft's LoRA layer also calls base_layer, lora_dropout (an
    // nn.Identity at p = 0), lora_A and lora_B. PaCA's layer is one module.
    match treat {
        Treatment::Lora => t.enter_module(5, 1),
        Treatment::Paca => t.enter_module(1, 1),
        Treatment::Frozen | Treatment::Full => t.enter_module(1, 0),
    }
    let s_rank = cx.method.rank as f64;
    let w_trains = treat == Treatment::Full;
    let w = t.param(nf * kf, cx.p, w_trains);
    let b = lin.bias.then(|| t.param(nf, cx.p, w_trains));

    // PaCA: write the scaled trainable columns P into W before the GEMM (n×r kernels).
    let paca_p = (treat == Treatment::Paca).then(|| paca_write_columns(t, cx, nf, kf, s_rank));

    // Under autocast the weight (and bias) are cast to the half type on every forward.
    let wc = if autocast { t.cast(&w, cx.c) } else { w };
    // PaCA's Function adds the bias in place after its matmul (`output += bias`), outside
    // autocast's op list: no addmm, no cast of the bias.
    let paca_bias = if treat == Treatment::Paca { b } else { None };
    let b = if treat == Treatment::Paca { None } else { b };
    let bc = b.map(|b| if autocast { t.cast(&b, cx.c) } else { b });
    let xc = t.cast(x, cx.c);
    let mut y = t.gemm(
        if bc.is_some() { "addmm" } else { "mm" },
        if treat == Treatment::Lora {
            "base_layer"
        } else {
            ""
        },
        &xc,
        &wc,
        bc.as_ref(),
        m,
        n,
        k,
        1,
    );

    if let Some(pb) = paca_bias {
        let mut k = Kernel::new("add_", KernelKind::Elementwise, y.dtype);
        k.flops = y.elems;
        k.bytes_read = y.bytes() + pb.bytes();
        k.bytes_written = y.bytes();
        t.push_fwd(k, &[y]);
    }
    match treat {
        Treatment::Paca => {
            let Some(pp) = paca_p else {
                unreachable!("PaCA's P is created above")
            };
            // The reference's Function receives the layer input itself (autocast casts only
            // inside its GEMM), so x[..., idx] is gathered in the input's dtype.
            y = paca_gather_and_backward(t, cx, lin, x, &w, &wc, y, &pp);
        }
        Treatment::Lora => y = lora(t, cx, lin, x, y),
        Treatment::Frozen | Treatment::Full => {}
    }
    t.module = prev;
    y
}

/// PaCA before the GEMM: the trainable columns P (n×r), scaled and written into W's columns.
///
/// The reference creates P with `torch.zeros` (fp32) whatever W's dtype, like peft's fp32
/// adapters: P is kept in the adapter dtype (`--adapter-dtype`, fp32 by default). Each training
/// forward writes s·P, cast to W's dtype, into W's columns under no_grad (`paca_update`: mul,
/// cast, index_put_), then computes the autograd-tracked s·P that the Function receives (one more
/// n×r mul; its backward is the scale applied to dP below). The write into W (n×k) touches one
/// sector per written element, like the gather: it reads s·P (n×r) and writes
/// [`strided_columns_bytes`]`(n, k, r)` of W.
fn paca_write_columns(t: &mut Tracer, cx: &Ctx, nf: f64, kf: f64, s_rank: f64) -> T {
    let pd = match cx.method.adapter_dtype {
        AdapterDtype::Fp32 => DType::F32,
        AdapterDtype::Base => cx.p,
    };
    let pp = t.param(nf * s_rank, pd, true);
    // The scale-and-write runs under no_grad in the reference: no backward of its own (P's
    // gradient is formed by the replaced GEMM backward below).
    let p_nograd = T { rg: false, ..pp };
    let sp = t.op(
        "mul",
        KernelKind::Elementwise,
        &[p_nograd],
        nf * s_rank,
        pd,
        1.0,
        &[],
        false,
        Bwd::Pass,
    );
    t.cast(&sp, cx.p);
    let mut k_sc = Kernel::new("index_put_", KernelKind::Scatter, cx.p);
    k_sc.piece = PACA_P;
    k_sc.bytes_read = nf * s_rank * cx.p.size();
    k_sc.bytes_written = nf * t.min(kf, s_rank * SECTOR_BYTES / cx.p.size()) * cx.p.size();
    t.push_fwd(k_sc, &[]);
    let mut k_s = Kernel::new("mul", KernelKind::Elementwise, pd);
    k_s.piece = PACA_P;
    k_s.flops = nf * s_rank;
    k_s.bytes_read = nf * s_rank * pd.size();
    k_s.bytes_written = nf * s_rank * pd.size();
    t.push_fwd(k_s, &[]);
    pp
}

/// PaCA after the GEMM `y` of `xc`: gather and save x[..., idx], and replace the GEMM's backward
/// with dX = dY·W and dP = dYᵀ·x_idx times the scale.
///
/// The reference's `ctx.save_for_backward(x_idx, weight)` keeps the parameter W itself (resident)
/// rather than the 16-bit copy autocast made for the GEMM; its backward runs under the same
/// autocast state (`custom_bwd`), so dY·W casts W again: one n×k cast in backward.
#[allow(clippy::too_many_arguments)]
fn paca_gather_and_backward(
    t: &mut Tracer,
    cx: &Ctx,
    lin: &Linear,
    xc: &T,
    w: &T,
    wc: &T,
    y: T,
    pp: &T,
) -> T {
    let (m, k, n) = (cx.m, lin.in_features, lin.out_features);
    let (mf, kf, nf) = (m as f64, k as f64, n as f64);
    let r = cx.method.rank;
    let s_rank = r as f64;
    let mut y = y;
    // Gather x[..., idx] (M×r) and save only that. A strided gather touches one 32-byte
    // sector per selected element, so it reads up to 32/elem-size times the useful bytes.
    let sector_elems = SECTOR_BYTES / xc.dtype.size();
    let mut g = Kernel::new("index_select", KernelKind::Gather, xc.dtype);
    g.piece = PACA_IDX;
    g.bytes_read = mf * t.min(kf, s_rank * sector_elems) * xc.dtype.size();
    g.bytes_written = mf * s_rank * xc.dtype.size();
    let gi = t.push_fwd(g, &[*xc]);
    let x_idx = t.tensor(mf * s_rank, xc.dtype, false, Some(gi));
    t.save(&x_idx);
    // The reference's autograd Function replaces the GEMM's backward: dX = dY·W when x
    // requires grad, dP = dYᵀ·x_idx (n,r,M) then the scale s; W's own gradient is never
    // formed. Rebuild the GEMM's tape entry accordingly.
    let group = if y.rg {
        t.tape.pop().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut new_group: Vec<Kernel> = Vec::new();
    for k in group
        .into_iter()
        // dX with its gradient plumbing (casts, the adds of a multiply-consumed input); the
        // weight's own gradient is never formed.
        .filter(|k| k.name == "mm_dX" || k.name == "add" || k.kind == KernelKind::Cast)
    {
        if k.name == "mm_dX" && wc.id_differs(w) {
            // Autocast's copy of W is not kept: cast the fp32 parameter again for dY·W.
            new_group.push(t.bk(
                "to_copy",
                KernelKind::Cast,
                wc.dtype,
                w.bytes(),
                wc.bytes(),
                0.0,
            ));
        }
        new_group.push(k);
    }
    if wc.id_differs(w) {
        t.unsave(wc);
    }
    let dt = y.dtype;
    let mut dp = Kernel::new("mm_dP", KernelKind::Gemm, dt);
    dp.module = t.module;
    dp.piece = PACA_P;
    dp.math = t.prec.math_mode(dt);
    dp.flops = 2.0 * nf * s_rank * mf;
    dp.bytes_read = y.bytes() + x_idx.bytes();
    dp.bytes_written = nf * s_rank * dt.size();
    dp.gemm = Some(Gemm {
        m: n,
        n: r,
        k: m,
        batch: 1,
    });
    new_group.insert(0, dp);
    if x_idx.dtype != dt {
        // Under autocast dYᵀ·x_idx casts the (fp32) gathered input to the half type first.
        let c = t.bk(
            "to_copy",
            KernelKind::Cast,
            dt,
            x_idx.bytes(),
            mf * s_rank * dt.size(),
            0.0,
        );
        new_group.insert(0, c);
    }
    let mut sc = t.bk(
        "mul",
        KernelKind::Elementwise,
        dt,
        nf * s_rank * dt.size(),
        nf * s_rank * dt.size(),
        nf * s_rank,
    );
    sc.piece = PACA_P;
    new_group.insert(1, sc);
    t.grad_plumbing(&mut new_group, pp, dt);
    t.tape.push(new_group);
    // The GEMM output requires grad through P.
    y.rg = true;
    y
}

/// LoRA after the base GEMM `y` of `x`, as peft's `Linear.forward` runs it: the adapters' input
/// cast and dropout, GEMMs A and B, the scale, the add into the base result, the cast back.
fn lora(t: &mut Tracer, cx: &Ctx, lin: &Linear, x: &T, y: T) -> T {
    let (m, k, n) = (cx.m, lin.in_features, lin.out_features);
    let (kf, nf) = (k as f64, n as f64);
    let autocast = cx.w.precision.is_autocast();
    let r = cx.method.rank;
    let s_rank = r as f64;
    let ad = match cx.method.adapter_dtype {
        AdapterDtype::Fp32 => DType::F32,
        AdapterDtype::Base => cx.p,
    };
    let a = t.param(s_rank * kf, ad, true);
    let bb = t.param(nf * s_rank, ad, true);
    t.module = lin.path;
    // peft: x = self._cast_input_dtype(x, lora_A.weight.dtype)
    let mut xl = t.cast(x, ad);
    if cx.method.dropout > 0.0 {
        // Native dropout writes the output and a bool mask; the mask is saved.
        let mut dk = Kernel::new("native_dropout", KernelKind::Elementwise, xl.dtype);
        dk.piece = "lora_dropout";
        dk.flops = 2.0 * xl.elems;
        dk.bytes_read = xl.bytes();
        dk.bytes_written = xl.bytes() + xl.elems;
        let di = t.push_fwd(dk, &[xl]);
        let out = t.tensor(xl.elems, xl.dtype, xl.rg, Some(di));
        if xl.rg {
            let mask = t.tensor(xl.elems, DType::Bool, false, Some(di));
            t.save(&mask);
            let mut group = t.tape.group_of(t.bk(
                "dropout_backward",
                KernelKind::Elementwise,
                xl.dtype,
                xl.bytes() + xl.elems,
                xl.bytes(),
                xl.elems,
            ));
            t.grad_plumbing(&mut group, &xl, xl.dtype);
            t.tape.push(group);
        }
        xl = out;
    }
    // Under autocast lora_A/lora_B are nn.Linear too: their input and weights are cast.
    let (xa, ac, bc2) = if autocast {
        (t.cast(&xl, cx.c), t.cast(&a, cx.c), t.cast(&bb, cx.c))
    } else {
        (xl, a, bb)
    };
    let h = t.gemm("mm", "lora_A", &xa, &ac, None, m, r, k, 1);
    let yl = t.gemm("mm", "lora_B", &h, &bc2, None, m, n, r, 1);
    let scaled = t.op(
        "mul",
        KernelKind::Elementwise,
        &[yl],
        yl.elems,
        yl.dtype,
        1.0,
        &[],
        false,
        Bwd::PerInput {
            reads: 1.0,
            flops: 1.0,
        },
    );
    let out_dt = if scaled.dtype == y.dtype {
        y.dtype
    } else {
        DType::F32
    };
    let sum = t.op(
        "add",
        KernelKind::Elementwise,
        &[y, scaled],
        y.elems,
        out_dt,
        1.0,
        &[],
        false,
        Bwd::Pass,
    );
    // peft: result = result.to(torch_result_dtype)
    t.cast(&sum, y.dtype)
}

#[cfg(test)]
mod tests {
    use crate::graph::tests::graph;
    use crate::graph::KernelKind;
    use crate::method::MethodName;
    use crate::workload::{Precision, Workload};

    #[test]
    fn full_linear_forward_and_backward_gemms() {
        // Llama q_proj, full FT, fp32: forward mm (M,n,k) = 2·M·n·k FLOPs; backward dW and dX.
        let w = Workload {
            precision: Precision::Fp32,
            batch: 1,
            seq: 128,
            ..Workload::default()
        };
        let (_, _, g) = graph("tinyllama-1.1b", MethodName::Full, &w);
        let l = g.layer(1);
        let q = l
            .forward
            .kernels
            .iter()
            .find(|k| k.module == "self_attn.q_proj" && k.kind == KernelKind::Gemm)
            .unwrap();
        assert_eq!(q.flops, 2.0 * 128.0 * 2048.0 * 2048.0);
        assert_eq!(q.bytes_read, (128.0 * 2048.0 + 2048.0 * 2048.0) * 4.0);
        let bw: Vec<_> = l
            .backward
            .kernels
            .iter()
            .filter(|k| k.module == "self_attn.q_proj" && k.kind == KernelKind::Gemm)
            .map(|k| k.name)
            .collect();
        assert_eq!(bw, ["mm_dW", "mm_dX"]);
    }

    #[test]
    fn lora_chain_under_autocast() {
        let w = Workload::default(); // bf16-mixed, fp32 adapters, dropout 0.1
        let (_, _, g) = graph("llama2-7b", MethodName::Lora, &w);
        let l = g.layer(1);
        let o: Vec<_> = l
            .forward
            .kernels
            .iter()
            .filter(|k| k.module == "self_attn.o_proj" && k.launches > 0)
            .map(|k| (k.name, k.piece))
            .collect();
        assert_eq!(
            o,
            [
                ("to_copy", ""), // W → bf16
                ("mm", "base_layer"),
                ("to_copy", ""), // x → fp32 (adapter dtype)
                ("native_dropout", "lora_dropout"),
                ("to_copy", ""), // autocast: x_d → bf16
                ("to_copy", ""), // A → bf16
                ("to_copy", ""), // B → bf16
                ("mm", "lora_A"),
                ("mm", "lora_B"),
                ("mul", ""),
                ("add", ""),
            ]
        );
        // The frozen base weight gets no weight-gradient GEMM.
        assert!(!l
            .backward
            .kernels
            .iter()
            .any(|k| k.piece == "base_layer" && k.name == "mm_dW"));
        assert!(l
            .backward
            .kernels
            .iter()
            .any(|k| k.piece == "lora_A" && k.name == "mm_dW"));
    }

    #[test]
    fn paca_backward_has_no_dense_weight_gradient_and_saves_only_idx() {
        let w = Workload {
            precision: Precision::Fp32,
            ..Workload::default()
        };
        let (_m, spec, g) = graph("llama2-7b", MethodName::Paca, &w);
        let l = g.layer(1);
        let dp: Vec<_> = l
            .backward
            .kernels
            .iter()
            .filter(|k| k.name == "mm_dP")
            .collect();
        assert_eq!(dp.len(), 7);
        assert!(!l.backward.kernels.iter().any(|k| k.name == "mm_dW"));
        let q = dp.iter().find(|k| k.module == "self_attn.q_proj").unwrap();
        let mt = w.tokens() as f64;
        assert_eq!(q.flops, 2.0 * 4096.0 * spec.rank as f64 * mt);
        // Layer 0's q/k/v need no dX (the embedding is frozen), layer 1's do.
        let l0 = g.layer(0);
        let dx0 = l0
            .backward
            .kernels
            .iter()
            .filter(|k| k.name == "mm_dX")
            .count();
        let dx1 = l
            .backward
            .kernels
            .iter()
            .filter(|k| k.name == "mm_dX")
            .count();
        assert_eq!(dx1 - dx0, 3);
    }
}
