//! Transformer blocks and the embedding scope, as Hugging Face transformers' eager GPT-2 and
//! Llama models assemble them.
//!
//! GPT-2: LayerNorm; c_attn (one addmm producing q, k, v); split/reshape; attention; c_proj;
//! dropout; residual add; LayerNorm; c_fc; "gelu_new"; c_proj; dropout; residual add. Llama:
//! RMSNorm; q, k, v projections (k, v with kv_heads); rotary embedding; SDPA or eager attention;
//! o_proj; residual add; RMSNorm; SwiGLU MLP (gate, up, SiLU, multiply, down); residual add. The
//! embedding scope holds the token (and GPT-2 position) lookups, dropout, the rotary tables and
//! the causal mask. See `kernels.md` (docs/sources.md).

use super::attention::{attention, rope};
use super::linear::{linear, treatment};
use super::norms::{add, dropout, gelu_new, layer_norm, rms_norm, silu_mul};
use super::tracer::{Tracer, T};
use super::{Ctx, Kernel, KernelKind, ScopeGraph};
use crate::arch::{Family, Linear, LinearRole as R};
use crate::method::MethodKind;
use crate::workload::{AttentionImpl, DType};

/// The trained/frozen state of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct LayerClass {
    pub(super) trained: bool,
    pub(super) input_rg: bool,
}

/// One transformer block.
pub(super) fn block(cx: &Ctx, class: LayerClass, accumulate: bool) -> ScopeGraph {
    let mut t = Tracer::new(cx.w, accumulate);
    let m = cx.m as f64;
    let d = cx.model.hidden as f64;
    let x = t.input(m * d, cx.r, class.input_rg);
    let out = match cx.model.family {
        Family::Gpt2 => gpt2_block(&mut t, cx, class, &x),
        Family::Llama => llama_block(&mut t, cx, class, &x),
    };
    t.finish(cx.w.grad_checkpointing, x.bytes(), out.rg)
}

/// The block's linear layer of `role`.
fn role_linear(lins: &[Linear], role: R) -> Linear {
    lins.iter()
        .find(|l| l.role == role)
        .copied()
        .expect("block has linear")
}

/// GPT-2 block on the residual stream `x`: attention and MLP with LayerNorms, Conv1D linears,
/// gelu_new and dropout.
fn gpt2_block(t: &mut Tracer, cx: &Ctx, class: LayerClass, x: &T) -> T {
    let full = class.trained && cx.method.kind == MethodKind::Full;
    let lins = cx.model.linears();
    let lin = |role| role_linear(&lins, role);
    // Module calls of the block's containers (the block, attn, mlp) and its activation and
    // dropout modules; the linears and norms count their own.
    t.enter_module(1, 0);
    let h = layer_norm(t, cx, x, "ln_1", full);
    let l = lin(R::Qkv);
    t.enter_module(1, 0);
    let qkv = linear(t, cx, &h, &l, treatment(cx, &l, class.trained));
    for _ in 0..6 {
        t.host_op("split/view/permute");
    }
    // q, k, v are views of the fused output.
    let q = T {
        elems: qkv.elems / 3.0,
        ..qkv
    };
    let a = attention(t, cx, &q, &q, &q, "attn", cx.model.dropout);
    t.host_op("view");
    let l = lin(R::O);
    let o = linear(t, cx, &a, &l, treatment(cx, &l, class.trained));
    t.enter_module(1, 0);
    let o = dropout(t, &o, cx.model.dropout, "attn.resid_dropout");
    let x1 = add(t, x, &o);
    let h2 = layer_norm(t, cx, &x1, "ln_2", full);
    let l = lin(R::Up);
    t.enter_module(1, 0);
    let f = linear(t, cx, &h2, &l, treatment(cx, &l, class.trained));
    t.enter_module(1, 0);
    let g = gelu_new(t, cx, &f, "mlp.act");
    let l = lin(R::Down);
    let dn = linear(t, cx, &g, &l, treatment(cx, &l, class.trained));
    t.enter_module(1, 0);
    let dn = dropout(t, &dn, cx.model.dropout, "mlp.dropout");
    add(t, &x1, &dn)
}

/// Llama block on the residual stream `x`: RMSNorms, q/k/v/o projections, rotary embedding,
/// attention, and the SwiGLU MLP.
fn llama_block(t: &mut Tracer, cx: &Ctx, class: LayerClass, x: &T) -> T {
    let full = class.trained && cx.method.kind == MethodKind::Full;
    let lins = cx.model.linears();
    let lin = |role| role_linear(&lins, role);
    // Module calls of the block's containers (the layer, self_attn, mlp) and act_fn; the
    // linears and norms count their own.
    t.enter_module(1, 0);
    let h = rms_norm(t, cx, x, "input_layernorm", full);
    let (lq, lk, lv) = (lin(R::Q), lin(R::K), lin(R::V));
    t.enter_module(1, 0);
    let q = linear(t, cx, &h, &lq, treatment(cx, &lq, class.trained));
    let k = linear(t, cx, &h, &lk, treatment(cx, &lk, class.trained));
    let v = linear(t, cx, &h, &lv, treatment(cx, &lv, class.trained));
    for _ in 0..6 {
        t.host_op("view/transpose");
    }
    t.module = "self_attn.rotary";
    // cos and sin (S×hd, the hidden states' dtype) are computed once per forward in the
    // embedding scope and shared by every layer: kept there once, resident here.
    let mut cos = t.input(cx.w.seq as f64 * cx.model.head_dim() as f64, cx.p, false);
    cos.param = true;
    let q = rope(t, &q, &cos);
    let k = rope(t, &k, &cos);
    // Under autocast SDPA takes q, k, v in the half type: rope's fp32 products are cast back.
    let (q, k) = if cx.w.precision.is_autocast() {
        (t.cast(&q, cx.c), t.cast(&k, cx.c))
    } else {
        (q, k)
    };
    t.module = "";
    let a = attention(t, cx, &q, &k, &v, "self_attn", 0.0);
    t.host_op("reshape");
    let l = lin(R::O);
    let o = linear(t, cx, &a, &l, treatment(cx, &l, class.trained));
    let x1 = add(t, x, &o);
    let h2 = rms_norm(t, cx, &x1, "post_attention_layernorm", full);
    let (lg, lu, ld) = (lin(R::Gate), lin(R::Up), lin(R::Down));
    t.enter_module(1, 0);
    let g = linear(t, cx, &h2, &lg, treatment(cx, &lg, class.trained));
    let u = linear(t, cx, &h2, &lu, treatment(cx, &lu, class.trained));
    t.enter_module(1, 0);
    let gu = silu_mul(t, &g, &u);
    let dn = linear(t, cx, &gu, &ld, treatment(cx, &ld, class.trained));
    add(t, &x1, &dn)
}

/// Embedding scope: token (and GPT-2 position) lookups, dropout, rotary tables, causal mask.
pub(super) fn embedding(cx: &Ctx, accumulate: bool) -> ScopeGraph {
    use KernelKind::*;
    let mut t = Tracer::new(cx.w, accumulate);
    let (m, d, s) = (cx.m as f64, cx.model.hidden as f64, cx.w.seq as f64);
    let trains = cx.method.trains_embedding(cx.model);
    let lookup = |t: &mut Tracer, table: &T, rows: f64, path: &'static str| -> T {
        t.module = path;
        t.enter_module(1, 0);
        let mut k = Kernel::new("embedding", Gather, cx.p);
        k.bytes_read = rows * 8.0 + rows * d * cx.p.size();
        k.bytes_written = rows * d * cx.p.size();
        let idx = t.push_fwd(k, &[]);
        let out = t.tensor(rows * d, cx.p, table.rg, Some(idx));
        if table.rg {
            // embedding_dense_backward, one aten op of three CUDA kernels: zero the V×d
            // gradient, sort the ids, scatter-add rows. The gradient takes the incoming
            // gradient's dtype (`at::zeros(..., grad.options())`): the table's, bf16 in a bf16
            // model (the meta trace writes V×d×2 bytes there).
            let size = cx.p.size();
            let mut eb = t.bk(
                "embedding_dense_backward",
                Scatter,
                cx.p,
                rows * d * size + rows * 24.0,
                table.elems * size + rows * 16.0,
                rows * d,
            );
            eb.launches = 3;
            let mut group = t.tape.group_of(eb);
            // The gradient comes out in the table's dtype (no cast in bf16).
            t.grad_plumbing(&mut group, table, table.dtype);
            t.tape.push(group);
        }
        out
    };
    // Position ids and the causal-mask check of transformers' model forward (cache_position =
    // arange; position_ids; create_causal_mask's padding test, which finds no padding and lets
    // SDPA run causal without a mask): small int64/bool kernels, seen in every trace.
    t.module = "";
    // The model's own module calls: *ForCausalLM and the base model, and peft's PeftModel and
    // LoraModel around them for LoRA.
    t.enter_module(
        if cx.method.kind == MethodKind::Lora {
            4
        } else {
            2
        },
        0,
    );
    for name in [
        "arange", "add", "sub", "sub", "cat", "ne", "cumsum", "eq", "all",
    ] {
        let mut k = Kernel::new(name, Elementwise, DType::I64);
        k.bytes_read = m * 8.0;
        k.bytes_written = m * 8.0;
        t.push_fwd(k, &[]);
    }
    let out = match cx.model.family {
        Family::Gpt2 => {
            let wte = t.param(cx.model.vocab as f64 * d, cx.p, trains);
            let wpe = t.param(cx.model.max_positions as f64 * d, cx.p, trains);
            let mut te = lookup(&mut t, &wte, m, "wte");
            // Under checkpointing transformers' `enable_input_require_grads` makes the input
            // embeddings' output require grad: the embedding dropout after it then saves its
            // mask and runs its backward even with the tables frozen (CPU trace,
            // docs/results/traces/cpu-checkpointing/gpt2-lora-all-bf16mixed.json).
            te.rg |= cx.w.grad_checkpointing;
            let pe = lookup(&mut t, &wpe, s, "wpe");
            if trains && cx.model.tied_embeddings {
                // The tied LM head's gradient is added into wte's (labelled with wte, whose
                // gradient it is).
                t.module = "wte";
                let mut group = t.tape.group();
                t.grad_plumbing(&mut group, &wte, wte.dtype);
                t.tape.insert_front(group);
            }
            t.module = "";
            let h = add(&mut t, &te, &pe);
            t.enter_module(1, 0);
            dropout(&mut t, &h, cx.model.dropout, "drop")
        }
        Family::Llama => {
            let tab = t.param(cx.model.vocab as f64 * d, cx.p, trains);
            let h = lookup(&mut t, &tab, m, "embed_tokens");
            if trains && cx.model.tied_embeddings {
                // A tied head (Llama 3.2, Qwen2 configs with tie_word_embeddings): its gradient
                // is summed into the table's, as GPT-2's wte.
                t.module = "embed_tokens";
                let mut group = t.tape.group();
                t.grad_plumbing(&mut group, &tab, tab.dtype);
                t.tape.insert_front(group);
            }
            // rotary_emb: positions to float, inv_freq ⊗ positions (bmm), cat, cos and sin each
            // times attention_scaling, cast to the hidden dtype (S×hd, once per forward).
            t.module = "rotary_emb";
            t.enter_module(1, 0);
            let hd = cx.model.head_dim() as f64;
            // In a bf16 model the inv_freq buffer is bf16 too: `.float()` casts it; cos and sin
            // are cast back to the hidden dtype.
            let (p, f) = (cx.p.size(), 4.0);
            let table = s * hd * f;
            // (name, bytes read, bytes written), each tensor counted once: the positions (S
            // int64) to float; inv_freq (hd/2) ⊗ positions; cat(freqs, freqs); cos and sin, each
            // times attention_scaling.
            let mut ops = vec![
                ("to_copy", s * 8.0, s * f),
                ("bmm", hd / 2.0 * f + s * f, table / 2.0),
                ("cat", table / 2.0, table),
                ("cos", table, table),
                ("mul", table, table),
                ("sin", table, table),
                ("mul", table, table),
            ];
            if cx.p != DType::F32 {
                ops.extend([
                    ("to_copy", hd / 2.0 * p, hd / 2.0 * f),
                    ("to_copy", table, s * hd * p),
                    ("to_copy", table, s * hd * p),
                ]);
            }
            for (name, read, written) in ops {
                let mut k = Kernel::new(name, Elementwise, DType::F32);
                k.bytes_read = read;
                k.bytes_written = written;
                k.flops = s * hd;
                t.push_fwd(k, &[]);
            }
            // rope's products keep cos and sin for q's and k's gradients: once for all layers.
            if t.less(0.0, cx.method.trainable_params(cx.model) as f64) {
                for _ in 0..2 {
                    let table = t.tensor(s * hd, cx.p, false, None);
                    t.save(&table);
                }
            }
            t.module = "";
            h
        }
    };
    if cx.w.attention == AttentionImpl::Eager {
        // transformers 5.17's create_causal_mask for eager attention (SDPA runs causal without
        // one): index vectors compared into an S×S bool, then `where` writes the (B, 1, S, S)
        // additive mask in the parameters' dtype. Bytes as the CPU traces record them
        // (docs/results/traces/cpu-eager): four aranges (S, S, B and 1 int64), two adds of
        // S int64, the comparison, a scalar fill and the where.
        //
        // With Mistral's sliding window (any length: eager always builds the mask) the causal
        // comparison becomes the window's and the causal one joined (`sliding_window_overlay`
        // and `causal_mask_function` in `and_masks`): a one-byte `new_ones` (the trace's bytes
        // rule counts the index tensor it takes its options from as read), kv index − window,
        // a `gt` into an S×S bool, `bitwise_and` with the ones, the `le`, and a second
        // `bitwise_and` (docs/results/traces/cpu-eager/mistral-*).
        let (b, p) = (cx.w.batch as f64, cx.p.size());
        let head = [
            ("arange", DType::I64, 0.0, s * 8.0),
            ("arange", DType::I64, 0.0, s * 8.0),
            ("arange", DType::I64, 0.0, b * 8.0),
            ("arange", DType::I64, 0.0, 8.0),
            ("add", DType::I64, s * 8.0, s * 8.0),
            ("add", DType::I64, s * 8.0, s * 8.0),
        ];
        let window = [
            ("new_ones", DType::Bool, s * 8.0, 1.0),
            ("sub", DType::I64, s * 8.0, s * 8.0),
            ("gt", DType::Bool, 2.0 * s * 8.0, s * s),
            ("bitwise_and", DType::Bool, 1.0 + s * s, s * s),
        ];
        let causal = [("le", DType::Bool, 2.0 * s * 8.0, s * s)];
        let joined = [("bitwise_and", DType::Bool, 2.0 * s * s, s * s)];
        let tail = [
            ("scalar_tensor", cx.p, 0.0, p),
            ("where", cx.p, s * 32.0 + s * s + 2.0 * p, b * s * s * p),
        ];
        let windowed = cx.model.sliding_window.is_some();
        let ops = head
            .iter()
            .chain(window.iter().filter(|_| windowed))
            .chain(&causal)
            .chain(joined.iter().filter(|_| windowed))
            .chain(&tail);
        for &(name, dtype, read, written) in ops {
            let mut k = Kernel::new(name, Elementwise, dtype);
            k.bytes_read = read;
            k.bytes_written = written;
            t.push_fwd(k, &[]);
        }
    }
    let out_rg = out.rg || cx.w.grad_checkpointing;
    t.finish(false, 0.0, out_rg)
}

#[cfg(test)]
mod tests {
    use crate::graph::tests::graph;
    use crate::graph::Kernel;
    use crate::method::MethodName;
    use crate::workload::{Precision, Workload};

    fn named<'a>(ks: &'a [Kernel], name: &str) -> Vec<&'a Kernel> {
        ks.iter().filter(|k| k.name == name).collect()
    }

    /// GPT-2's embeddings worked by hand, bf16-mixed (fp32 tables), batch 2 × seq 8 (M = 16,
    /// d = 768, V = 50,257, 1,024 positions), full fine-tuning.
    #[test]
    fn gpt2_embeddings_by_hand() {
        let w = Workload {
            batch: 2,
            seq: 8,
            ..Workload::default()
        };
        let (_, _, g) = graph("gpt2", MethodName::Full, &w);
        let fwd = &g.embedding.forward.kernels;
        let e = named(fwd, "embedding");
        // wte: 16 int64 ids (128 B) and 16 rows of 768 fp32 (49,152 B) read, the rows written;
        // wpe: 8 positions (64 B) and 8 rows (24,576 B).
        assert_eq!(
            e.iter()
                .map(|k| (k.bytes_read, k.bytes_written))
                .collect::<Vec<_>>(),
            [(49_280.0, 49_152.0), (24_640.0, 24_576.0)]
        );
        // transformers' position and padding checks: nine int64 ops over the 16 tokens.
        for name in ["arange", "add", "sub", "cat", "ne", "cumsum", "eq", "all"] {
            let k = named(fwd, name)[0];
            assert_eq!((k.bytes_read, k.bytes_written), (128.0, 128.0), "{name}");
        }
        // embedding_dense_backward: reads the incoming fp32 gradient rows and 24 B of ids and
        // sort keys per row; writes the whole V×d (or positions×d) gradient and 16 B per row.
        let b = named(&g.embedding.backward.kernels, "embedding_dense_backward");
        let got: Vec<(f64, f64, u32)> = b
            .iter()
            .map(|k| (k.bytes_read, k.bytes_written, k.launches))
            .collect();
        assert!(got.contains(&(49_536.0, 154_389_760.0, 3)), "{got:?}");
        assert!(got.contains(&(24_768.0, 3_145_856.0, 3)), "{got:?}");
    }

    /// Llama's rotary tables worked by hand in a bf16 model (tinyllama-1.1b, head_dim 64),
    /// seq 4: the S·hd fp32 table is 1,024 B.
    #[test]
    fn rotary_tables_by_hand() {
        let w = Workload {
            batch: 1,
            seq: 4,
            precision: Precision::Bf16,
            ..Workload::default()
        };
        let (_, _, g) = graph("tinyllama-1.1b", MethodName::Full, &w);
        let rot: Vec<(&str, f64, f64)> = g
            .embedding
            .forward
            .kernels
            .iter()
            .filter(|k| k.module == "rotary_emb")
            .map(|k| (k.name, k.bytes_read, k.bytes_written))
            .collect();
        assert_eq!(
            rot,
            [
                // positions (4 int64) to float
                ("to_copy", 32.0, 16.0),
                // inv_freq (32 fp32) ⊗ positions (4 fp32) → 4 × 32 fp32
                ("bmm", 144.0, 512.0),
                ("cat", 512.0, 1_024.0),
                ("cos", 1_024.0, 1_024.0),
                ("mul", 1_024.0, 1_024.0),
                ("sin", 1_024.0, 1_024.0),
                ("mul", 1_024.0, 1_024.0),
                // the bf16 inv_freq buffer to float, cos and sin back to bf16
                ("to_copy", 64.0, 128.0),
                ("to_copy", 1_024.0, 512.0),
                ("to_copy", 1_024.0, 512.0),
            ]
        );
    }
}
