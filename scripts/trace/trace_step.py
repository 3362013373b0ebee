#!/usr/bin/env python3
"""Ground truth from the real stack: one fine-tuning step of transformers + peft, traced.

What it records, per phase (forward incl. loss, backward, optimizer = clip_grad_norm_ + AdamW step
+ zero_grad), for one training step of one method:

* every aten op dispatched (a TorchDispatchMode sees forward, backward and optimizer ops), with
  its module path, shapes and dtypes, aggregated into rows (phase, module, op) with a call count,
  the CUDA kernel launches it stands for (see `cuda_launches`), and FLOPs of matrix products;
* every tensor saved for backward (`torch.autograd.graph.saved_tensors_hooks`), bytes counted once
  per storage; parameters (and views of them) are resident anyway and counted apart;
* live tensor bytes over the step (storages created by dispatched ops, freed when their last
  reference dies), giving the peak per phase on any device, `meta` included; on CUDA the caching
  allocator's own peak (`torch.cuda.max_memory_allocated`) is recorded beside it.

The step is the second one of a run (the first creates AdamW's states), as in a steady-state
training loop. Models come from configs with random weights: nothing is downloaded.

Methods: full; LoRA through peft's `get_peft_model` (default `autocast_adapter_dtype=True`, so
adapters stay fp32 on a 16-bit base unless --adapter-dtype base); PaCA as its authors' reference
implementation does it (`PacaLinear` below: the scaled trainable columns are written into W
before the forward, one GEMM, only x[..., idx] saved, W recast in backward under autocast);
layer-selective PaCA by freezing everything below the lowest trained layer.

Precisions: fp32; bf16 (weights and activations bf16, no autocast); bf16-mixed (fp32 weights,
forward under torch.autocast(bfloat16)). Autocast has no `meta` key, so bf16-mixed needs a real
device (cpu or cuda).

Device mapping: on CPU and meta, PyTorch picks kernels that a GPU does not. Two are mapped to what
CUDA runs, and the trace says so in `cuda_mapping`:
* dropout: `at::dropout` fuses into one `native_dropout` kernel (bool mask saved) only on CUDA-like
  devices (`is_fused_kernel_acceptable` in aten/src/ATen/native/Dropout.cpp); elsewhere it is
  bernoulli_ + div_ + mul with a mask in the input's dtype. The tracer calls native_dropout.
* SDPA: on meta, scaled_dot_product_attention falls back to the math path (materialised S×S
  scores); the tracer calls the fused flash kernel (`_scaled_dot_product_flash_attention_for_cpu`),
  which saves what CUDA's flash / memory-efficient kernels save: q, k, v, out and the logsumexp.

Usage: python3 scripts/trace/trace_step.py --family llama --preset tiny --method lora --out t.json
(see --help and scripts/trace/README.md).
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import math
import os
import tempfile
import platform
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

SCHEMA = "costsim-trace/1"

# --------------------------------------------------------------------------------------------
# Model configs
# --------------------------------------------------------------------------------------------

_GPT2_TINY = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=256)
_LLAMA_TINY = dict(
    num_hidden_layers=2,
    hidden_size=64,
    intermediate_size=176,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    max_position_embeddings=256,
)
# Micro widths for the host-cost fit: device work per op is negligible next to dispatch.
_GPT2_MICRO = dict(n_embd=16, n_head=2, vocab_size=64, n_positions=64)
_LLAMA_MICRO = dict(
    hidden_size=16,
    intermediate_size=32,
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=64,
    max_position_embeddings=64,
)

PRESETS = {
    # Tiny widths for CI: device work is negligible, every op is still there.
    ("gpt2", "tiny"): _GPT2_TINY,
    ("llama", "tiny"): _LLAMA_TINY,
    ("gpt2", "tiny4"): dict(_GPT2_TINY, n_layer=4),
    ("llama", "tiny4"): dict(_LLAMA_TINY, num_hidden_layers=4),
    ("llama", "tiny-mha"): dict(_LLAMA_TINY, num_hidden_layers=4, num_key_value_heads=4),
    **{("gpt2", f"micro{n}"): dict(_GPT2_MICRO, n_layer=n) for n in (1, 2, 4, 8)},
    **{("llama", f"micro{n}"): dict(_LLAMA_MICRO, num_hidden_layers=n) for n in (1, 2, 4, 8)},
    ("gpt2", "small"): dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024),
    ("gpt2", "medium"): dict(n_layer=24, n_embd=1024, n_head=16, vocab_size=50257, n_positions=1024),
    ("llama", "tinyllama-1.1b"): dict(
        num_hidden_layers=22,
        hidden_size=2048,
        intermediate_size=5632,
        num_attention_heads=32,
        num_key_value_heads=4,
        vocab_size=32000,
        max_position_embeddings=2048,
    ),
    ("llama", "llama2-7b"): dict(
        num_hidden_layers=32,
        hidden_size=4096,
        intermediate_size=11008,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
    ),
}


def build_model(args, device):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    model_type = None
    if args.config:
        # A Hugging Face config.json (sizes only; weights stay random).
        import json as _json

        with open(args.config) as f:
            kw = _json.load(f)
        model_type = kw.pop("model_type", None)
    else:
        if (args.family, args.preset) not in PRESETS:
            raise SystemExit(f"no preset '{args.preset}' for {args.family}; see --help or pass --config")
        kw = dict(PRESETS[(args.family, args.preset)])
    if args.family == "gpt2":
        cfg = GPT2Config(**kw)
        cls = GPT2LMHeadModel
    elif model_type == "mistral":
        # Mistral's own modules (Llama's layout plus the config's `sliding_window`, which
        # changes the attention mask transformers builds; docs/traces.md).
        from transformers import MistralConfig, MistralForCausalLM

        cfg = MistralConfig(**kw)
        cls = MistralForCausalLM
    elif model_type == "qwen2":
        # Qwen2's own modules: Llama's layout with biases on q, k and v.
        from transformers import Qwen2Config, Qwen2ForCausalLM

        cfg = Qwen2Config(**kw)
        cls = Qwen2ForCausalLM
    else:
        cfg = LlamaConfig(**kw)
        cls = LlamaForCausalLM
    # transformers' attention: "sdpa" (the default; the tracer routes it to the fused kernels
    # below) or "eager" (matmul, softmax, matmul as the model's own eager_attention_forward).
    cfg._attn_implementation = getattr(args, "attention", "sdpa")
    cfg.use_cache = False
    with torch.device(device):
        model = cls(cfg)
    return model, cfg


def _layers(model, family):
    base = _unwrap(model)
    return base.transformer.h if family == "gpt2" else base.model.layers


def _unwrap(model):
    # peft's PeftModel → LoraModel → the transformers model.
    while hasattr(model, "base_model") and model.base_model is not model and not hasattr(model, "lm_head"):
        model = model.base_model
    if hasattr(model, "model") and not hasattr(model, "lm_head"):
        model = model.model
    return model


TARGETS = {
    ("gpt2", "qv"): ["c_attn"],
    ("gpt2", "all"): ["c_attn", "c_proj", "c_fc"],
    ("llama", "qv"): ["q_proj", "v_proj"],
    ("llama", "all"): ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


# --------------------------------------------------------------------------------------------
# PaCA, as its authors' reference layer does it (peft/src/peft/tuners/paca/layer.py in
# github.com/WooSunghyeon/paca): the trainable columns P (n×r, stored unscaled) are written, scaled,
# into W's columns before the forward (no grad); the GEMM uses the whole W; autograd saves the
# gathered input x[..., idx] and W itself (the fp32 parameter, recast in backward under autocast).
# --------------------------------------------------------------------------------------------


class _PacaFn(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x, weight, paca_w, bias, idx, conv1d):
        # conv1d: GPT-2's Conv1D stores W as k×n (in×out); otherwise nn.Linear's n×k.
        if conv1d:
            out = x.matmul(weight)
        else:
            out = x.matmul(weight.t())
        if bias is not None:
            out += bias  # in place, as the reference: the output keeps autocast's dtype
        ctx.save_for_backward(x[..., idx], weight)
        ctx.conv1d = conv1d
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, dy):
        x_idx, weight = ctx.saved_tensors
        dx = dpw = db = None
        if ctx.needs_input_grad[0]:
            dx = dy.matmul(weight.t()) if ctx.conv1d else dy.matmul(weight)
        if ctx.needs_input_grad[2]:
            dpw = dy.reshape(-1, dy.shape[-1]).t().matmul(x_idx.reshape(-1, x_idx.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[3]:
            db = dy.reshape(-1, dy.shape[-1]).sum(0)
        return dx, None, dpw, db, None, None


# custom_fwd/custom_bwd read the autocast state of the device type they are declared for. The
# functions above are declared for "cpu"; a CUDA twin keeps the behaviour on a GPU.
class _PacaFnCuda(_PacaFn):
    forward = staticmethod(torch.amp.custom_fwd(device_type="cuda")(_PacaFn.forward.__wrapped__))
    backward = staticmethod(torch.amp.custom_bwd(device_type="cuda")(_PacaFn.backward.__wrapped__))


class PacaLinear(nn.Module):
    """Wraps an nn.Linear or GPT-2 Conv1D; trains r input columns of its weight in place."""

    def __init__(self, base: nn.Module, r: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.base_layer = base
        self.conv1d = type(base).__name__ == "Conv1D"
        w = base.weight
        in_f = w.shape[0] if self.conv1d else w.shape[1]
        out_f = w.shape[1] if self.conv1d else w.shape[0]
        if r > in_f:
            raise SystemExit(f"PaCA rank {r} exceeds in_features {in_f} of {type(base).__name__}")
        idx = torch.randperm(in_f, generator=generator)[:r].to(w.device)
        self.register_buffer("paca_indices", idx)
        self.scaling = alpha / r
        cols = w[idx, :].t() if self.conv1d else w[:, idx]
        # P is trained in the adapter's dtype; like peft's adapters the reference keeps it fp32
        # (it is created with torch.zeros, fp32 by default) and casts when writing into W.
        self.paca_w = nn.Parameter((cols.detach().float() / self.scaling).contiguous())
        self.iterations = 0

    def paca_update(self):
        with torch.no_grad():
            src = (self.scaling * self.paca_w).to(self.base_layer.weight.dtype)
            if self.conv1d:
                self.base_layer.weight[self.paca_indices, :] = src.t()
            else:
                self.base_layer.weight[:, self.paca_indices] = src

    def forward(self, x):
        self.iterations += 1
        # The reference writes P into W on odd forward calls (iterations % (2·grad_accum)); with
        # one micro-batch per step that is every other step. The traced step is the second one,
        # so the write happens here too, to keep the kernels in the trace.
        if self.training:
            self.paca_update()
        pw = self.paca_w * self.scaling
        fn = _PacaFnCuda if x.is_cuda else _PacaFn
        return fn.apply(x, self.base_layer.weight, pw, self.base_layer.bias, self.paca_indices, self.conv1d)


def apply_paca(model, args, lowest_layer):
    g = torch.Generator().manual_seed(0)
    names = TARGETS[(args.family, args.targets)]
    n = 0
    for i, layer in enumerate(_layers(model, args.family)):
        if i < lowest_layer:
            continue
        for mod_name, mod in list(layer.named_modules()):
            leaf = mod_name.rsplit(".", 1)[-1]
            if leaf in names and type(mod).__name__ in ("Linear", "Conv1D"):
                parent = layer.get_submodule(mod_name.rsplit(".", 1)[0]) if "." in mod_name else layer
                setattr(parent, leaf, PacaLinear(mod, args.rank, args.alpha, g))
                n += 1
    if n == 0:
        raise SystemExit("PaCA: no module matched the targets")


# --------------------------------------------------------------------------------------------
# Device mapping (see the module doc)
# --------------------------------------------------------------------------------------------


# Ops run only to map a CPU kernel onto what CUDA runs (GQA's head expansion below) are neither
# recorded nor counted in memory: CUDA's kernels do without them.
_SUPPRESS = [False]


class _suppressed:
    def __enter__(self):
        _SUPPRESS[0] = True

    def __exit__(self, *a):
        _SUPPRESS[0] = False
        return False


class _GqaFlash(torch.autograd.Function):
    """Grouped-query SDPA as CUDA's flash / cuDNN kernels run it with enable_gqa: k and v keep
    their n_kv heads and are saved so; the CPU flash kernel needs them expanded to n_heads, so
    the expansion (and the gradient's sum over each group) runs unrecorded."""

    @staticmethod
    def forward(ctx, q, k, v, is_causal, scale):
        rep = q.shape[-3] // k.shape[-3]
        with _suppressed():
            ke = k.repeat_interleave(rep, dim=-3)
            ve = v.repeat_interleave(rep, dim=-3)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, ke, ve, 0.0, is_causal, scale=scale
        )
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.rep, ctx.is_causal, ctx.scale = rep, is_causal, scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        with _suppressed():
            ke = k.repeat_interleave(ctx.rep, dim=-3)
            ve = v.repeat_interleave(ctx.rep, dim=-3)
        with _suppressed():
            dout = dout.contiguous()
        dq, dke, dve = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout, q, ke, ve, out, lse, 0.0, ctx.is_causal, scale=ctx.scale
        )
        with _suppressed():
            shape = k.shape[:-3] + (k.shape[-3], ctx.rep) + k.shape[-2:]
            # CUDA's kernels allocate each input gradient with its input's strides.
            dk = torch.empty_like(k).copy_(dke.reshape(shape).sum(-3))
            dv = torch.empty_like(v).copy_(dve.reshape(shape).sum(-3))
        return dq, dk, dv, None, None


_INSTALLED = {}


def install_cuda_mapping(device_type):
    """Install the CPU/meta → CUDA mapping once per process (run_grid calls main many times:
    wrapping the wrappers again would add Python time to every timed op)."""
    if device_type == "cuda":
        return []
    if device_type not in _INSTALLED:
        _INSTALLED[device_type] = _install(device_type)
    return list(_INSTALLED[device_type])


def _install(device_type):
    mapping = []
    if device_type == "meta":
        orig_bool = torch.Tensor.__bool__

        def meta_bool(self):
            # transformers' packed-sequence check, `if (mask[:, -1] == 0).all():`, asks a meta
            # tensor for its value; our batches are never packed, which True means there.
            return True if self.device.type == "meta" else orig_bool(self)

        torch.Tensor.__bool__ = meta_bool
        mapping.append(
            "meta: a tensor's truth value (transformers' packed-sequence check) reads as True, "
            "'not packed', which is what the same check finds on a real device"
        )
    orig_dropout = F.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        if training and 0.0 < p < 1.0 and input.numel() > 0:
            return torch.native_dropout(input, p, True)[0]
        return orig_dropout(input, p, training, inplace)

    F.dropout = dropout
    mapping.append(
        "dropout: native_dropout (one fused kernel, bool mask saved) as at::dropout does on CUDA; "
        "CPU/meta would run bernoulli_+div_+mul and save a mask in the input dtype "
        "(aten/src/ATen/native/Dropout.cpp, is_fused_kernel_acceptable)"
    )
    orig_sdpa = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if attn_mask is None and q.dim() == 4:
            # scaled_dot_product_attention is on autocast's lower-precision list: it casts q, k, v
            # to the autocast dtype. The aten kernel called here has no autocast entry, so cast
            # as autocast would.
            dt = q.device.type
            if dt in ("cpu", "cuda") and torch.is_autocast_enabled(dt):
                low = torch.get_autocast_dtype(dt)
                q, k, v = (t.to(low) if t.is_floating_point() and t.dtype != low else t for t in (q, k, v))
            if enable_gqa and k.shape[-3] != q.shape[-3]:
                if q.dtype == torch.float32:
                    # CUDA has no fused fp32 kernel with grouped-query attention (flash and
                    # cuDNN need 16-bit, memory-efficient has no GQA): SDPA runs its math path,
                    # S×S probabilities and all (seen in the H200 trace llama-tiny-full-fp32).
                    return torch.ops.aten._scaled_dot_product_attention_math(
                        q, k, v, None, dropout_p, is_causal, scale=scale, enable_gqa=True
                    )[0]
                return _GqaFlash.apply(q, k, v, is_causal, scale)
            # The CPU flash kernel refuses dropout; CUDA's flash kernel applies it inside the same
            # kernel and saves only an RNG state, so the kernels and saved tensors are the same.
            out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, 0.0, is_causal, scale=scale
            )
            return out[0]
        return orig_sdpa(q, k, v, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)

    orig_pow = torch.pow

    def pow_(input, exponent, *args, **kwargs):
        # CUDA's autocast runs pow in fp32 (its fp32 op list); CPU autocast leaves it in bf16.
        if (
            isinstance(input, torch.Tensor)
            and input.is_floating_point()
            and input.dtype != torch.float32
            and input.device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
        ):
            input = input.float()
        return orig_pow(input, exponent, *args, **kwargs)

    torch.pow = pow_
    mapping.append(
        "autocast pow: fp32, as CUDA's autocast op list has it (CPU autocast keeps bf16); "
        "torch.pow is what transformers' gelu_new calls"
    )
    F.scaled_dot_product_attention = sdpa
    torch.nn.functional.scaled_dot_product_attention = sdpa
    mapping.append(
        "sdpa: the fused flash kernel (_scaled_dot_product_flash_attention_for_cpu), saving q, k, "
        "v (k and v with their n_kv heads under grouped-query attention, as CUDA's kernels keep them; "
        "the CPU kernel's head expansion runs unrecorded; fp32 with grouped-query attention runs "
        "SDPA's math path, as CUDA does for want of a fused fp32 GQA kernel), "
        "v, out and logsumexp like CUDA's flash/efficient kernels; attention dropout, which CUDA's "
        "flash kernel applies inside the kernel, is left out (the CPU kernel refuses it)"
    )
    return mapping


# --------------------------------------------------------------------------------------------
# Op classification: what an aten op costs on CUDA
# --------------------------------------------------------------------------------------------

# Ops that allocate or relabel memory without a kernel.
NO_KERNEL = {
    "empty",
    "empty_like",
    "empty_strided",
    "new_empty",
    "new_empty_strided",
    "detach",
    "alias",
    "lift_fresh",
    "_unsafe_view",
    "set_",
    "resize_",
    "is_same_size",
    "sym_size",
    "sym_stride",
    "sym_numel",
    "_has_compatible_shallow_copy_type",
    "resolve_conj",
    "resolve_neg",
    "_local_scalar_dense",  # a device-to-host copy and a sync, not a kernel
    "_to_copy_meta",
    "_record_function_enter_new",  # profiler markers
    "_record_function_exit",
}


# Whether the optimizer keeps its step counters on the parameters' device: a fused (or
# capturable) AdamW does (torch/optim/adam.py, `_init_group`: `torch.zeros((), ...,
# device=p.device) if group["capturable"] or group["fused"]`), so on CUDA its
# `_foreach_add_(state_steps, 1)` (and, with a GradScaler, `_foreach_sub_(state_steps,
# found_inf)`) launch kernels; the foreach and single-tensor AdamW keep them on the CPU.
DEVICE_STEP_COUNTERS = [False]


def cuda_launches(func, args, out):
    """Whether this op launches on CUDA: 1, or 0 for views, metadata ops and host-side counters.

    A multi-tensor `_foreach_*` op counts 1 here; it launches one kernel per chunk of tensors
    (torch's multi_tensor_apply), which the comparison computes from the recorded tensor sizes.
    """
    name = func.overloadpacket.__name__
    if func.is_view or name in NO_KERNEL:
        return 0
    if name.startswith("_foreach_") and not DEVICE_STEP_COUNTERS[0]:
        lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
        if lists and all(t.dim() == 0 for t in lists[0]):
            # AdamW's step counters: 0-dim CPU tensors even on CUDA (capturable=False), so the
            # increment runs on the host (torch/optim/adam.py, _multi_tensor_adam).
            return 0
    return 1


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _tensors(y)


# In-place ops that write only part of `self`: what they write is their source tensor, not the
# whole of `self` (which is their return value).
_PARTIAL_WRITES = {
    "index_put_": "values",
    "index_copy_": "source",
    "index_add_": "source",
    "scatter_": "src",
    "scatter_add_": "src",
    "masked_scatter_": "source",
}


# Gathers read the rows they return (and their indices), not the whole table they index.
_GATHERS = {"embedding", "index_select", "index", "gather"}


def _nbytes(ts):
    return sum(t.numel() * t.element_size() for t in ts)


def io_bytes(func, name, args, kwargs, out):
    """(read, written) bytes of one op: the tensors it takes and the ones it returns, each
    tensor once; a gather (embedding, index_select, ...) reads the rows it returns and its
    indices, not the whole table; an in-place partial write (index_put_, ...) writes and reads
    its source (and reads its indices), not the whole of self. Views move no data: (0, 0).
    What a kernel physically moves can differ (a GEMM tile re-reads, a strided gather reads
    whole sectors): these are the tensors' sizes, the quantity costsim's bytes are built from."""
    if func.is_view:
        return 0, 0
    ins = {}
    for t in _tensors((args, kwargs)):
        ins.setdefault(id(t), t)
    if name in _GATHERS:
        written = _nbytes(_tensors(out))
        idx = _nbytes(t for t in ins.values() if not (t.is_floating_point() or t.is_complex()))
        return written + idx, written
    if name in _PARTIAL_WRITES:
        src = _arg(func, args, kwargs, _PARTIAL_WRITES[name])
        self_t = args[0] if args and isinstance(args[0], torch.Tensor) else None
        written = _nbytes(_tensors(src))
        read = _nbytes(t for t in ins.values() if t is not self_t)
        return read, written
    return _nbytes(ins.values()), _nbytes(_tensors(out))


def _arg(func, args, kwargs, name):
    """Value of argument `name` of an aten call, positional or keyword (None when absent)."""
    if kwargs and name in kwargs:
        return kwargs[name]
    for i, a in enumerate(func._schema.arguments):
        if a.name == name:
            return args[i] if i < len(args) else a.default_value
    return None


def op_flops(func, name, args, kwargs, out):
    """FLOPs (a multiply-add is 2) of matrix products and attention; 0 for everything else."""
    try:
        if name == "mm":
            a, b = args[0], args[1]
            return 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
        if name == "addmm":
            a, b = args[1], args[2]
            return 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
        if name in ("bmm", "baddbmm"):
            a, b = (args[0], args[1]) if name == "bmm" else (args[1], args[2])
            return 2.0 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
        if name.startswith("_scaled_dot_product"):
            bwd = "backward" in name
            q, k = (args[1], args[2]) if bwd else (args[0], args[1])
            bh = math.prod(q.shape[:-2])
            # Forward: QKᵀ and P·V, 2 GEMMs of S_q×S_k×D; backward: dV, dP, dQ, dK and the
            # recomputed QKᵀ, 5 (FlashAttention-2's count). A causal kernel skips the masked
            # half of the blocks: half of each.
            gemms = 5.0 if bwd else 2.0
            causal = _arg(func, args, kwargs, "is_causal")
            return gemms * 2.0 * bh * q.shape[-2] * k.shape[-2] * q.shape[-1] * (0.5 if causal else 1.0)
    except (IndexError, AttributeError, TypeError):
        return 0.0
    return 0.0


# --------------------------------------------------------------------------------------------
# The recorder
# --------------------------------------------------------------------------------------------


def storage_key(t):
    return t.untyped_storage()._cdata


def _is_adapter_layer(mod):
    """peft's LoRA layers (whose forward runs the adapter loop) and the PaCA reference layer."""
    if isinstance(mod, PacaLinear):
        return True
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return False
    return isinstance(mod, LoraLayer)


class NodeClaimer(torch.overrides.TorchFunctionMode):
    """Maps each autograd node to the module whose forward created it.

    A TorchFunctionMode runs above autograd: when a torch function returns, its outputs carry
    their grad_fn, and every node not seen before was created by this call, inside the module
    on top of the forward-hook stack. (Claiming in the modules' post-hooks instead would give a
    parent's own ops to whichever child finished last.)"""

    def __init__(self, rec):
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rec = self.rec
        if rec.active and rec.phase == "forward":
            rec._claim(out, rec.stack[-1] if rec.stack else "")
        return out


class Recorder(TorchDispatchMode):
    def __init__(self, strip_prefix):
        super().__init__()
        self.phase = None
        self.stack = []
        self.node_module = {}
        self.rows = collections.OrderedDict()
        self.foreach = []
        self.live = {}  # storage key → (bytes, weakref)
        self.baseline_keys = set()
        self.live_bytes = 0
        self.phase_stats = {}
        self.strip = strip_prefix
        self.param_keys = set()
        self.saved = {}
        self.saved_rows = collections.OrderedDict()
        self.active = False
        self.handles = []
        self.module_calls = 0
        self.adapter_calls = 0

    # -- module paths ------------------------------------------------------------------------
    def hook_modules(self, model):
        names = {}
        for name, mod in model.named_modules():
            names[mod] = self._clean(name)

        adapters = {m for m in names if _is_adapter_layer(m)}

        def pre(mod, _inp):
            self.stack.append(names[mod])
            if self.active and self.phase == "forward":
                self.module_calls += 1
                if mod in adapters:
                    self.adapter_calls += 1

        def post(mod, _inp, out):
            path = self.stack.pop() if self.stack else names[mod]
            # Forward only: under gradient checkpointing the modules run again inside backward
            # (the recompute), and claiming those nodes would keep them, and the tensors they
            # save, alive in `node_module` (a leak of the recorder's, not of the stack).
            if self.active and self.phase == "forward":
                self._claim(out, path)

        for mod in names:
            self.handles.append(mod.register_forward_pre_hook(pre))
            self.handles.append(mod.register_forward_hook(post))

    def unhook(self):
        """Remove the module hooks, so that timed steps run the bare stack."""
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _clean(self, name):
        # peft wraps the model: "" (PeftModel) → base_model (LoraModel) → base_model.model (the
        # transformers model). Paths are reported as in the bare transformers model.
        for p in self.strip:
            if name == p.rstrip(".") or name.startswith(p):
                return name[len(p):] if name.startswith(p) else ""
        return name

    def _claim(self, out, path):
        todo = [t.grad_fn for t in _tensors(out) if t.grad_fn is not None]
        while todo:
            node = todo.pop()
            if node is None or node in self.node_module:
                continue
            self.node_module[node] = path
            for nxt, _ in node.next_functions:
                if nxt is not None and nxt not in self.node_module:
                    todo.append(nxt)

    def module_path(self):
        if self.phase == "forward":
            return self.stack[-1] if self.stack else ""
        if self.phase == "backward":
            node = torch._C._current_autograd_node()
            if node is None:
                return ""
            path = self.node_module.get(node)
            if path is None and type(node).__name__ == "AccumulateGrad":
                return "accumulate_grad"
            return path if path is not None else ""
        return "optimizer"

    # -- memory --------------------------------------------------------------------------------
    def set_baseline(self, tensors):
        total = 0
        for t in tensors:
            k = storage_key(t)
            if k not in self.baseline_keys:
                self.baseline_keys.add(k)
                total += t.untyped_storage().nbytes()
        self.baseline_bytes = total

    def _track(self, out):
        for t in _tensors(out):
            try:
                st = t.untyped_storage()
            except (RuntimeError, NotImplementedError):
                continue
            k = st._cdata
            if k in self.live or k in self.baseline_keys:
                continue
            n = st.nbytes()
            self.live[k] = (n, StorageWeakRef(st))
            self.live_bytes += n

    def _sweep(self):
        dead = [k for k, (_, ref) in self.live.items() if ref.expired()]
        for k in dead:
            self.live_bytes -= self.live.pop(k)[0]

    def _note_peak(self, where=""):
        st = self.phase_stats[self.phase]
        now = self.baseline_bytes + self.live_bytes
        # The peak within each layer (and outside them), for aligning the memory model scope by
        # scope: "model.layers.3", "transformer.h.0", or the module path's first part.
        parts = where.split(":", 1)[0].split(".")
        scope = ".".join(parts[:3]) if len(parts) >= 3 and parts[2].isdigit() else parts[0]
        by = st.setdefault("peak_by_scope", {})
        if now > by.get(scope, 0):
            by[scope] = now
        if now > st["peak_bytes"]:
            st["peak_bytes"] = now
            st["peak_at"] = where

    def begin(self, phase):
        self._sweep()
        # A checkpointed recompute stops early by raising inside a module's forward, whose
        # post-hook then never pops it: start each phase from an empty stack.
        self.stack.clear()
        self.phase = phase
        self.phase_stats[phase] = dict(
            start_bytes=self.baseline_bytes + self.live_bytes,
            peak_bytes=self.baseline_bytes + self.live_bytes,
            peak_at="(phase start)",
        )

    def end(self):
        self._sweep()
        self.phase_stats[self.phase]["end_bytes"] = self.baseline_bytes + self.live_bytes

    # -- ops -------------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.active or self.phase is None or _SUPPRESS[0]:
            return out
        name = func.overloadpacket.__name__
        path = self.module_path()
        launches = cuda_launches(func, args, out)
        flops = op_flops(func, name, args, kwargs, out)
        key = (self.phase, path, name)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = dict(
                phase=self.phase,
                module=path,
                op=name,
                calls=0,
                launches=0,
                flops=0.0,
                out_bytes=0,
                read_bytes=0,
                written_bytes=0,
                dtypes=sorted({str(t.dtype).replace("torch.", "") for t in _tensors(out)}),
            )
        row["calls"] += 1
        row["launches"] += launches
        row["flops"] += flops
        if not func.is_view:
            row["out_bytes"] += sum(t.numel() * t.element_size() for t in _tensors(out))
        read, written = io_bytes(func, name, args, kwargs, out)
        row["read_bytes"] += read
        row["written_bytes"] += written
        if name.startswith("_foreach_") and launches > 0:
            lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
            # A list of Python numbers (AdamW's bias corrections, step sizes): the scalar-list
            # variant, whose launches hold fewer tensors (ATen's depth_to_max_tensors_scalarlist).
            scalar_list = any(
                isinstance(a, (list, tuple)) and a and isinstance(a[0], (int, float)) for a in args
            )
            rec = dict(
                phase=self.phase,
                op=name,
                lists=len(lists),
                numels=[t.numel() for t in lists[0]] if lists else [],
                dtype=str(lists[0][0].dtype).replace("torch.", "") if lists else "",
                scalar_list=scalar_list,
            )
            if lists and all(t.dim() == 0 for t in lists[0]):
                # A fused AdamW's step counters, on the device (see DEVICE_STEP_COUNTERS): the
                # reader would otherwise take the list for host-side counters of older traces.
                rec["counters_on_device"] = True
            self.foreach.append(rec)
        if not func.is_view:
            self._sweep()
            self._track(out)
            self._note_peak(f"{path}:{name}")
        return out

    # -- saved tensors -------------------------------------------------------------------------
    def pack(self, t):
        if not self.active:
            return t
        k = storage_key(t)
        nbytes = t.untyped_storage().nbytes()
        is_param = k in self.param_keys
        path = self.stack[-1] if self.stack else ""
        if k not in self.saved:
            self.saved[k] = (nbytes, is_param, path)
            key = (path, str(t.dtype).replace("torch.", ""), is_param)
            r = self.saved_rows.get(key)
            if r is None:
                r = self.saved_rows[key] = dict(
                    module=path, dtype=key[1], param=is_param, tensors=0, bytes=0, shapes=[]
                )
            r["tensors"] += 1
            r["bytes"] += nbytes
            if len(r["shapes"]) < 8:
                r["shapes"].append(list(t.shape))
        return t


class OpLedger(TorchDispatchMode):
    """Every aten op's own time (the call below autograd, autocast and the Python layers: the
    dispatcher's lower keys, allocation, the kernel), summed per phase and op name, on the
    issuing thread. CPU only: on a GPU the call returns before the kernel runs."""

    def __init__(self):
        super().__init__()
        self.phase = None
        self.totals = {}

    def start(self):
        self.totals = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        dt = time.perf_counter() - t
        row = self.totals.setdefault(self.phase, {}).setdefault(_op_name(func), [0, 0.0])
        row[0] += 1
        row[1] += dt
        return out


def _op_name(func):
    """aten::add.Tensor -> add: the schema name without its namespace, as the trace's op rows
    name ops."""
    return func._schema.name.split("::")[-1]


def ledger_record(runs, plain):
    """The op ledger over N steps: per phase, the median wall time of the plain steps run
    alternately with the ledger's (`plain_s`) and of the ledger's own (`wall_s`, the mode's
    overhead included), and per op name its calls per step and median µs per step (ops a step
    does not call count 0 there)."""
    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    out = {"steps": len(runs)}
    for ph in ("forward", "backward", "optimizer"):
        names = sorted({n for _, tot in runs for n in tot.get(ph, {})})
        ops = {}
        for n in names:
            per = [tot.get(ph, {}).get(n, [0, 0.0]) for _, tot in runs]
            ops[n] = dict(calls=median(x[0] for x in per), us=median(x[1] * 1e6 for x in per))
        out[ph] = dict(plain_s=median(p[ph] for p in plain), wall_s=median(w[ph] for w, _ in runs),
                       op_us=sum(o["us"] for o in ops.values()), ops=ops)
    return out


def structure_of(model):
    """What a training loop walks once per micro-batch (`model.train()`, a Trainer's
    parameter counts): every nn.Module of the model as built (peft's wrappers, ModuleDicts and
    ParameterDicts included) and every parameter tensor."""
    return dict(modules=sum(1 for _ in model.modules()), parameters=sum(1 for _ in model.parameters()))


def provenance(script, argv, **extra):
    """The provenance block of a CPU measurement record: versions, machine, time, and the command
    that made it (`argv` None: this process's arguments), plus `extra` fields (threads, ...)."""
    return dict(torch=torch.__version__, python=platform.python_version(),
                machine=platform.processor() or platform.machine(), **extra,
                utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                command=" ".join([script] + (argv if argv is not None else sys.argv[1:])))


def context_arguments(doc, steps_help, reps_help, rounds):
    """The options of gemm_context.py and op_context.py, which time one configuration's real CPU
    step (`cpu_training_step`) against its ops replayed alone: `rounds` alternations by default."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--family", choices=["gpt2", "llama"], required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--config", default=None, help="a Hugging Face config.json instead of --preset")
    ap.add_argument("--method", choices=["full", "lora", "paca"], default="full")
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank or PaCA column count")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3, help=steps_help)
    ap.add_argument("--reps", type=int, default=9, help=reps_help)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    return ap


def context_step(args):
    """The parsed `context_arguments` checked, the thread count and seed set, the preset named
    after a --config: `cpu_training_step(args)`."""
    if min(args.steps, args.reps, args.rounds) < 1:
        raise SystemExit("--steps, --reps and --rounds must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.config:
        args.preset = preset_of_config(args.config)
    return cpu_training_step(args)


def cpu_training_step(args):
    """A configuration's model on the CPU with prepare_model's other options at their defaults
    (LoRA and PaCA on every linear, no dropout, fp32 adapters; alpha 32 for LoRA, 64 for PaCA),
    AdamW (foreach) and a fixed batch of token ids: returns (config, step), `step()` running one
    training step (forward with the loss, backward, AdamW, zero_grad), after two warm-up steps
    (AdamW's states exist, the allocator has settled)."""
    args.targets, args.dropout = "all", 0.0
    args.alpha = 64.0 if args.method == "paca" else 32.0
    args.adapter_dtype, args.model_dropout = "fp32", 0.0
    model, cfg, _ = prepare_model(args, torch.device("cpu"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            foreach=True)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    return cfg, step


def prepare_model(args, device):
    """The model of one configuration as a user's script builds it: random weights from the
    preset or config, the precision, and the method (peft's LoRA, the PaCA reference layer,
    layer-selective PaCA). Returns (model, config, lowest trained layer). step_overhead.py
    builds its models here too."""
    model, cfg = build_model(args, device)
    n_layers = cfg.num_hidden_layers
    if args.family == "gpt2":
        for attr in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            setattr(cfg, attr, args.model_dropout)
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = args.model_dropout
            if hasattr(m, "attn_dropout") and isinstance(m.attn_dropout, nn.Dropout):
                m.attn_dropout.p = args.model_dropout
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)
    if getattr(args, "grad_checkpointing", False):
        # What a Trainer's `gradient_checkpointing=True` calls: transformers 5.17 checkpoints
        # every decoder layer with torch.utils.checkpoint (use_reentrant=False by default) and
        # makes the embeddings' output require grad (`enable_input_require_grads`).
        model.gradient_checkpointing_enable()

    lowest = 0
    if args.method == "paca-upper-half":
        lowest = n_layers // 2
    elif args.method == "paca-three-quarters":
        lowest = n_layers - (3 * n_layers) // 4

    if args.method == "full":
        pass
    elif args.method == "lora":
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=args.rank,
            lora_alpha=args.alpha,
            lora_dropout=args.dropout,
            target_modules=TARGETS[(args.family, args.targets)],
            fan_in_fan_out=args.family == "gpt2",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg, autocast_adapter_dtype=args.adapter_dtype == "fp32")
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        apply_paca(model, args, lowest)
        if args.adapter_dtype == "base" and args.precision == "bf16":
            for m in model.modules():
                if isinstance(m, PacaLinear):
                    m.paca_w.data = m.paca_w.data.to(torch.bfloat16)
    return model, cfg, lowest


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=["gpt2", "llama"], required=True)
    ap.add_argument("--preset", default="tiny", help="model size: " + ", ".join(sorted({p for _, p in PRESETS})))
    ap.add_argument("--method", choices=["full", "lora", "paca", "paca-upper-half", "paca-three-quarters"], required=True)
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank or PaCA column count (as given)")
    ap.add_argument("--alpha", type=float, default=None, help="default: 32 for LoRA, 64 for PaCA")
    ap.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout")
    ap.add_argument("--targets", choices=["qv", "all"], default="all")
    ap.add_argument("--adapter-dtype", choices=["fp32", "base"], default="fp32")
    ap.add_argument("--precision", choices=["fp32", "bf16", "bf16-mixed", "fp16-mixed"], default="fp32")
    ap.add_argument("--model-dropout", type=float, default=0.0,
                    help="GPT-2 resid/embd/attn dropout (transformers' default is 0.1)")
    ap.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa",
                    help="transformers' attention implementation")
    ap.add_argument("--optimizer", choices=["adamw-foreach", "adamw-fused", "adamw-single", "sgd", "trainer",
                                                 "trainer-foreach"],
                    default="adamw-foreach",
                    help="torch.optim.AdamW foreach (the default), fused=True or foreach=False; "
                         "plain SGD (foreach, no momentum); or the optimizer a default "
                         "transformers Trainer builds (Trainer.create_optimizer)")
    ap.add_argument("--grad-checkpointing", action="store_true",
                    help="model.gradient_checkpointing_enable(), as a Trainer's gradient_checkpointing=True")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="cpu, meta or cuda")
    ap.add_argument("--clip", type=float, default=1.0, help="clip_grad_norm_ max norm (0: none)")
    ap.add_argument("--profile-kernels", action="store_true",
                    help="on CUDA: count the kernels each aten op really launches (torch.profiler)")
    ap.add_argument("--time-reps", type=int, default=0,
                    help="time this many more steps per phase (device synchronised around each)")
    ap.add_argument("--op-times", type=int, default=0,
                    help="CPU: after the timed steps, this many more steps with every aten op timed "
                         "(the op ledger: where each phase's time goes, op by op)")
    ap.add_argument("--config", default=None, help="a Hugging Face config.json instead of --preset")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    if args.alpha is None:
        args.alpha = 32.0 if args.method == "lora" else 64.0
    device = torch.device(args.device)
    if args.precision in ("bf16-mixed", "fp16-mixed") and device.type == "meta":
        raise SystemExit(f"{args.precision} needs autocast, which has no meta key: trace it on cpu or cuda")
    if args.batch <= 0 or args.seq <= 0 or args.rank <= 0:
        raise SystemExit("--batch, --seq and --rank must be positive")
    if args.op_times < 0 or args.op_times and device.type != "cpu":
        raise SystemExit("--op-times N times ops on the issuing thread: give N >= 0, and only with --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config:
        args.preset = preset_of_config(args.config)
    torch.manual_seed(0)
    mapping = install_cuda_mapping(device.type)

    model, cfg, lowest = prepare_model(args, device)
    n_layers = cfg.num_hidden_layers
    model.train()

    trainable = [p for p in model.parameters() if p.requires_grad]
    # foreach AdamW and clipping, CUDA's defaults; the foreach API has no meta kernels, so a meta
    # trace runs them per tensor (its optimizer ops are then not CUDA's; see cuda_mapping).
    foreach = device.type != "meta"
    if not foreach:
        mapping.append("meta: clip_grad_norm_ and AdamW run per tensor (no foreach on meta)")
    optimizer = getattr(args, "optimizer", "adamw-foreach")
    # Per trace: a grid runs many in one process, and a fused AdamW's setting must not outlive
    # its trace (a foreach AdamW's CPU step counters launch nothing on CUDA).
    DEVICE_STEP_COUNTERS[0] = False
    if optimizer == "adamw-fused":
        opt = torch.optim.AdamW(trainable, lr=1e-4, fused=True)
        DEVICE_STEP_COUNTERS[0] = True
        mapping.append("fused AdamW: its step counters are device tensors (torch/optim/adam.py "
                       "_init_group), so their _foreach_add_ (and _foreach_sub_ of found_inf under "
                       "a GradScaler) count as CUDA launches")
    elif optimizer == "trainer":
        # What a default transformers Trainer builds (Trainer.create_optimizer with default
        # TrainingArguments: transformers 5.17 with torch >= 2.8 picks adamw_torch_fused, in two
        # parameter groups: weights with weight decay, biases and norms without; decay 0.0).
        import tempfile
        from transformers import Trainer, TrainingArguments
        with tempfile.TemporaryDirectory() as out_dir:
            ta = TrainingArguments(output_dir=out_dir, report_to=[], use_cpu=device.type == "cpu")
            opt = Trainer(model=model, args=ta).create_optimizer()
        groups = [len(g["params"]) for g in opt.param_groups]
        fused = all(g.get("fused") for g in opt.param_groups)
        DEVICE_STEP_COUNTERS[0] = fused
        mapping.append(f"trainer: Trainer.create_optimizer() with default TrainingArguments "
                       f"({type(opt).__name__}, fused={fused}, parameter groups of {groups} tensors)")
        args.param_groups = groups
    elif optimizer == "trainer-foreach":
        # A Trainer with `optim="adamw_torch"` (torch.optim.AdamW, foreach on CUDA by torch's own
        # default; forced here, as a CPU run would go per tensor) and weight_decay=0.01 (torch's
        # default, which costsim assumes): the same two groups, the second with decay 0.0.
        import tempfile
        from transformers import Trainer, TrainingArguments
        with tempfile.TemporaryDirectory() as out_dir:
            ta = TrainingArguments(output_dir=out_dir, report_to=[], use_cpu=device.type == "cpu",
                                   optim="adamw_torch", weight_decay=0.01)
            opt = Trainer(model=model, args=ta).create_optimizer()
        for group in opt.param_groups:
            group["foreach"] = foreach
        groups = [len(g["params"]) for g in opt.param_groups]
        decays = [g["weight_decay"] for g in opt.param_groups]
        mapping.append(f"trainer-foreach: Trainer.create_optimizer() with optim=adamw_torch, "
                       f"weight_decay=0.01 ({type(opt).__name__}, foreach={foreach}, parameter "
                       f"groups of {groups} tensors, weight decay {decays})")
        args.param_groups = groups
    elif optimizer == "adamw-single":
        opt = torch.optim.AdamW(trainable, lr=1e-4, foreach=False)
    elif optimizer == "sgd":
        # Plain SGD (no momentum, no weight decay): one foreach update.
        opt = torch.optim.SGD(trainable, lr=1e-4, foreach=foreach)
    else:
        opt = torch.optim.AdamW(trainable, lr=1e-4, foreach=foreach)
    g = torch.Generator(device="cpu").manual_seed(1)
    vocab = cfg.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(device)

    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if args.precision == "bf16-mixed"
        else torch.autocast(device.type, dtype=torch.float16)
        if args.precision == "fp16-mixed"
        else _Null()
    )
    # fp16-mixed: a GradScaler as a Trainer's `fp16=True` uses one (accelerate): the loss scaled
    # before backward, the gradients unscaled before clipping, the step skipped on inf/NaN and
    # the scale updated.
    scaler = torch.amp.GradScaler(device.type) if args.precision == "fp16-mixed" else None

    ledger = OpLedger()
    rec = Recorder(["base_model.model.", "base_model."])  # first match wins
    rec.hook_modules(model)
    rec.param_keys = {storage_key(p) for p in model.parameters()}

    def step(mode):
        """One training step. mode: "warm" (untraced), "trace" (recorded), "cuda" (allocator
        peaks per phase), "profile" (kernels per phase) or "time" (wall time per phase)."""
        traced = mode == "trace"
        peaks = {}
        marks = []

        def begin(phase):
            if mode == "profile":
                # One profiler per phase: every kernel it sees belongs to the phase, whichever
                # thread launched it (backward runs on the autograd engine's device thread).
                if device.type == "cuda":
                    torch.cuda.synchronize()
                marks.append(_phase_profiler(device))
                marks[-1].__enter__()
            if mode in ("time", "ledger"):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                peaks[phase] = time.perf_counter()
            if mode == "ledger":
                ledger.phase = phase
            if traced:
                rec.begin(phase)
            elif mode == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                peaks[phase] = dict(start_bytes=torch.cuda.memory_allocated())

        def end(phase):
            if mode == "profile":
                if device.type == "cuda":
                    torch.cuda.synchronize()
                prof = marks.pop()
                prof.__exit__(None, None, None)
                peaks[phase] = _kernels_of(prof)
            if mode in ("time", "ledger"):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                peaks[phase] = time.perf_counter() - peaks[phase]
            if traced:
                rec.end()
            elif mode == "cuda":
                torch.cuda.synchronize()
                peaks[phase]["peak_bytes"] = torch.cuda.max_memory_allocated()
                peaks[phase]["end_bytes"] = torch.cuda.memory_allocated()

        ctx = rec if traced else (ledger if mode == "ledger" else _Null())
        rec.active = traced
        with torch.autograd.graph.saved_tensors_hooks(rec.pack, lambda t: t):
            begin("forward")
            with ctx, (NodeClaimer(rec) if traced else _Null()):
                with autocast:
                    out = model(input_ids=ids, labels=ids)
                loss = out.loss
                del out
                if scaler:
                    # The scaled loss's multiply is recorded with the forward, where costsim
                    # places it (the head's last op).
                    loss = scaler.scale(loss)
            end("forward")
            begin("backward")
            with ctx:
                loss.backward()
            end("backward")
            begin("optimizer")
            with ctx:
                if scaler:
                    scaler.unscale_(opt)
                if args.clip > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, args.clip, foreach=foreach)
                if scaler:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
            end("optimizer")
        rec.active = False
        return peaks

    step("warm")  # creates AdamW's states: the traced step is a steady-state one
    base = list(model.parameters()) + list(model.buffers()) + [ids]
    for st in opt.state.values():
        base += [v for v in st.values() if isinstance(v, torch.Tensor)]
    rec.set_baseline(base)
    step("trace")
    # The caching allocator's own peaks, over one more untraced step (the recorder's bookkeeping
    # would otherwise sit in the numbers).
    cuda_peaks = step("cuda") if device.type == "cuda" else {}
    kernels = profile_kernels(step, device) if args.profile_kernels else None
    timings = None
    if args.time_reps > 0:
        # Host-cost fits use the minimum (noise only adds time); the median is kept too.
        rec.unhook()
        for _ in range(2):
            step("warm")
        runs = [step("time") for _ in range(args.time_reps)]
        timings = {
            ph: dict(
                median_s=sorted(r[ph] for r in runs)[len(runs) // 2],
                min_s=min(r[ph] for r in runs),
                p10_s=sorted(r[ph] for r in runs)[len(runs) // 10],
            )
            for ph in ("forward", "backward", "optimizer")
        }
        timings["reps"] = args.time_reps
    op_times = None
    if args.op_times > 0:
        rec.unhook()
        step("warm")
        runs, plain = [], []
        # Plain and ledger steps alternate, so that the phase's split (its plain time minus the
        # ops' own) compares steps of the same minute.
        for _ in range(args.op_times):
            plain.append(step("time"))
            ledger.start()
            runs.append((step("ledger"), ledger.totals))
        op_times = ledger_record(runs, plain)

    params_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable_elems = sum(p.numel() for p in trainable)
    state_bytes = sum(
        v.numel() * v.element_size()
        for st in opt.state.values()
        for v in st.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )
    saved_act = sum(b for b, is_param, _ in rec.saved.values() if not is_param)
    saved_param = sum(b for b, is_param, _ in rec.saved.values() if is_param)

    phases = {}
    for ph in ("forward", "backward", "optimizer"):
        rows = [r for r in rec.rows.values() if r["phase"] == ph]
        phases[ph] = dict(
            ops=sum(r["calls"] for r in rows),
            launches=sum(r["launches"] for r in rows),
            flops=sum(r["flops"] for r in rows),
            **rec.phase_stats[ph],
        )
    phases["forward"]["saved_bytes"] = saved_act
    # nn.Module calls in the forward, and how many of them are adapter layers (peft LoRA, PaCA):
    # the host-cost fit's regressors with the op counts.
    phases["forward"]["module_calls"] = rec.module_calls
    phases["forward"]["adapter_calls"] = rec.adapter_calls
    phases["optimizer"]["tensors"] = len(trainable)

    import transformers

    try:
        import peft

        peft_version = peft.__version__
    except ImportError:
        peft_version = None
    record = dict(
        schema=SCHEMA,
        provenance=dict(
            torch=torch.__version__,
            transformers=transformers.__version__,
            peft=peft_version,
            python=platform.python_version(),
            device=args.device,
            device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            command=" ".join([os.path.relpath(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
            utc=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            cuda_mapping=mapping,
        ),
        model=dict(family=args.family, preset=args.preset, hf_config=_hf_config(cfg, args.family)),
        structure=structure_of(model),
        method=dict(
            name=args.method,
            rank=args.rank if args.method != "full" else 0,
            alpha=args.alpha if args.method != "full" else 0.0,
            dropout=args.dropout if args.method == "lora" else 0.0,
            targets=args.targets,
            adapter_dtype=args.adapter_dtype,
            lowest_trained_layer=lowest,
        ),
        workload=dict(
            batch=args.batch,
            seq=args.seq,
            precision=args.precision,
            attention=getattr(args, "attention", "sdpa"),
            optimizer=getattr(args, "optimizer", "adamw-foreach"),
            clip_grad_norm=args.clip,
            model_dropout=args.model_dropout,
            # Only when on: the records from before the option read as without it.
            **(dict(grad_checkpointing=True) if args.grad_checkpointing else {}),
            # The trainer's parameter groups, tensors each (`--optimizer trainer[-foreach]`).
            **(dict(param_groups=args.param_groups) if getattr(args, "param_groups", None) else {}),
        ),
        totals=dict(
            param_bytes=params_bytes,
            trainable_elems=trainable_elems,
            optimizer_state_bytes=state_bytes,
            baseline_bytes=rec.baseline_bytes,
            saved_activation_bytes=saved_act,
            saved_param_bytes=saved_param,
        ),
        phases=phases,
        cuda_allocator_peaks=cuda_peaks,
        cuda_kernels=kernels,
        timings=timings,
        op_times=op_times,
        ops=list(rec.rows.values()),
        foreach=rec.foreach,
        saved=list(rec.saved_rows.values()),
    )
    write_json(args.out, record, compact=True)
    print(
        f"{args.family}-{args.preset} {args.method} {args.precision} b{args.batch}×s{args.seq}: "
        + ", ".join(f"{ph} {v['launches']} launches" for ph, v in phases.items())
        + f", saved {saved_act / 2**20:.3f} MiB, peak {max(v['peak_bytes'] for v in phases.values()) / 2**20:.2f} MiB"
        + f" → {args.out}"
    )


LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")


def profile_kernels(step, device):
    """Kernels launched per phase, and per aten op, from torch.profiler (one profiler per phase)."""
    return step("profile")


def _phase_profiler(device):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    return profile(activities=acts)


def _kernels_of(prof):
    """Device kernels a profiler saw (memcpy/memset included, named), and per aten op: its calls,
    the kernels it launched with their summed device time (CUDA), and its self CPU time (on a
    CPU, the op's own compute; on CUDA, its host-side dispatch and launch)."""
    events = prof.events()
    out = dict(launch_calls=0, kernels=0, device_events=0, device_us=0.0, self_cpu_us=0.0, by_op={})
    for e in events:
        if e.name in LAUNCH_CALLS:
            out["launch_calls"] += 1
        if str(getattr(e, "device_type", "")).endswith("CUDA"):
            out["device_events"] += 1
            continue
        ks = getattr(e, "kernels", None) or []
        if not (ks or e.name.startswith("aten::")):
            continue
        row = out["by_op"].setdefault(e.name, dict(calls=0, kernels=0, device_us=0.0, self_cpu_us=0.0, names=[]))
        row["calls"] += 1
        row["kernels"] += len(ks)
        out["kernels"] += len(ks)
        dev = sum(float(getattr(k, "duration", 0.0) or 0.0) for k in ks)
        row["device_us"] += dev
        out["device_us"] += dev
        cpu = float(getattr(e, "self_cpu_time_total", 0.0) or 0.0)
        row["self_cpu_us"] += cpu
        out["self_cpu_us"] += cpu
        for k in ks:
            if k.name not in row["names"] and len(row["names"]) < 6:
                row["names"].append(k.name[:120])
    return out


def preset_of_config(path):
    """The name a model from a config.json goes by in records: its folder's name
    (`docs/results/models/gpt2-tiny/config.json` is gpt2-tiny), or "custom"."""
    return os.path.basename(os.path.dirname(os.path.abspath(path))) or "custom"


def write_json(path, obj, compact=False):
    """Write `obj` as JSON to `path` through a uniquely named temporary beside it, flushed to disk
    and renamed over `path` only when complete: an interrupted run leaves nothing at `path` (an
    older file stays as it was). `compact` drops the indentation (trace records are large)."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            if compact:
                json.dump(obj, f, separators=(",", ":"))
            else:
                json.dump(obj, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _hf_config(cfg, family):
    keys = (
        ["n_layer", "n_embd", "n_head", "n_inner", "vocab_size", "n_positions", "tie_word_embeddings"]
        if family == "gpt2"
        else [
            "num_hidden_layers",
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
            "max_position_embeddings",
            "tie_word_embeddings",
        ]
    )
    if cfg.model_type == "mistral":
        keys.append("sliding_window")
    d = {k: getattr(cfg, k, None) for k in keys}
    d["model_type"] = cfg.model_type
    return d


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


if __name__ == "__main__":
    main()
