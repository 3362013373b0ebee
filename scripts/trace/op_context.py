#!/usr/bin/env python3
"""Small ops inside a real training step against the same ops alone, cold and warm.

gemm_context.py does this for matrix products; this script does it for the elementwise, cast and
reduction ops between them (LoRA's casts, scale and add, the norms' pieces, activations), which
costsim prices from calibrate's microbenchmarks. Those cycle through at most 8 copies of their
operands, so a small op's operands stay in the caches; in a step, the large products and
attention between two small ops may have evicted them.

1. One configuration (trace_step.py's models: transformers + peft, random weights) runs `--steps`
   training steps under a TorchDispatchMode that times every call of the ops in OPS (the kernel
   alone, below autograd) and groups the calls by op, shapes, strides, dtypes and the other
   arguments: calls per step and mean µs per call.
2. Each group is replayed alone with fresh operands of the same shapes, strides and dtypes and the
   same other arguments, (a) cold: cycling through copies that together exceed 128 MB, (b) warm:
   the same operands every call; `--reps` calls each, the median. Timed the same way as in the
   step (from Python, around the op's call).
3. Steps 1 and 2 alternate `--rounds` times.

Output: one JSON record (schema costsim-op-context/1): provenance, the configuration, and per
group its op, shapes, dtypes, output bytes, calls per step, in-step, cold and warm µs per call per
round. CPU only.

    python3 scripts/trace/op_context.py --family llama --config docs/results/models/llama-small/config.json \
        --method lora --precision bf16 --out o.json
"""

import os
import statistics
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import trace_step  # noqa: E402

SCHEMA = "costsim-op-context/1"
# Ops whose tensor arguments can be replaced by any values of the same shape and dtype.
OPS = {
    "aten::mul.Tensor", "aten::add.Tensor", "aten::sub.Tensor", "aten::div.Tensor",
    "aten::mul.Scalar", "aten::add.Scalar", "aten::_to_copy", "aten::silu",
    "aten::silu_backward", "aten::neg", "aten::pow.Tensor_Scalar", "aten::rsqrt",
    "aten::mean.dim", "aten::sum.dim_IntList", "aten::gelu", "aten::gelu_backward",
    "aten::tanh", "aten::native_layer_norm", "aten::cat",
}


def key_of(name, args, kwargs):
    """A hashable description of a call: op, and per argument either (shape, stride, dtype) of a
    tensor or the value itself."""
    def one(a):
        if isinstance(a, torch.Tensor):
            return ("T", tuple(a.shape), tuple(a.stride()), str(a.dtype).replace("torch.", ""))
        if isinstance(a, (list, tuple)):
            return ("L", tuple(one(x) for x in a))
        if isinstance(a, torch.dtype):
            return ("D", str(a).replace("torch.", ""))
        if isinstance(a, torch.device):
            return ("E", str(a))
        if isinstance(a, torch.layout):
            return ("Y", str(a).replace("torch.", ""))
        if isinstance(a, torch.memory_format):
            return ("M", str(a).replace("torch.", ""))
        if isinstance(a, (int, float, bool, str)) or a is None:
            return ("V", a)
        return ("?", repr(a))
    return (name, tuple(one(a) for a in args), tuple(sorted((k, one(v)) for k, v in kwargs.items())))


def rebuild(desc):
    """Arguments from a description: fresh normal tensors of the same shapes, strides, dtypes."""
    kind = desc[0]
    if kind == "T":
        _, shape, stride, dtype = desc
        t = torch.empty_strided(shape, stride, dtype=getattr(torch, dtype))
        t.copy_(torch.randn(shape, dtype=torch.float32))
        return t
    if kind == "L":
        return [rebuild(x) for x in desc[1]]
    if kind in ("D", "Y", "M"):
        return getattr(torch, desc[1])
    if kind == "E":
        return torch.device(desc[1])
    if kind == "V":
        return desc[1]
    raise ValueError(f"cannot rebuild {desc}")


def nbytes(desc):
    if desc[0] == "T":
        n = 1
        for d in desc[1]:
            n *= d
        return n * torch.tensor([], dtype=getattr(torch, desc[3])).element_size()
    if desc[0] == "L":
        return sum(nbytes(x) for x in desc[1])
    return 0


class OpTimer(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = {}
        self.funcs = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name + ("." + func._overloadname if func._overloadname not in ("", "default") else "")
        if name not in OPS:
            return func(*args, **kwargs)
        t = time.perf_counter()
        out = func(*args, **kwargs)
        dt = time.perf_counter() - t
        key = key_of(name, args, kwargs)
        self.calls.setdefault(key, []).append(dt)
        self.funcs[key] = func
        return out


def alone(func, key, reps):
    """(cold, warm) median µs of the call replayed alone."""
    _, args, kwargs = key
    size = max(1, sum(nbytes(a) for a in args))
    copies = max(2, min(4096, -(-int(128e6) // size)))
    sets = [([rebuild(a) for a in args], {k: rebuild(v) for k, v in kwargs}) for _ in range(copies)]

    def median_of(pick):
        for i in range(2):
            a, k = pick(i)
            func(*a, **k)
        ts = []
        for r in range(reps):
            a, k = pick(r)
            t = time.perf_counter()
            func(*a, **k)
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1e6

    return median_of(lambda r: sets[r % copies]), median_of(lambda r: sets[0])


def main(argv=None):
    ap = trace_step.context_arguments(__doc__, "measured steps per round",
                                      "timed calls per group alone per round", rounds=2)
    args = ap.parse_args(argv)
    _, step = trace_step.context_step(args)
    groups = {}
    for _ in range(args.rounds):
        timer = OpTimer()
        with timer:
            for _ in range(args.steps):
                step()
        for key, ts in timer.calls.items():
            g = groups.setdefault(key, dict(func=timer.funcs[key], calls_per_step=len(ts) / args.steps,
                                            in_step_us=[], cold_us=[], warm_us=[]))
            g["in_step_us"].append(sum(ts) / len(ts) * 1e6)
        for key, g in groups.items():
            if len(g["cold_us"]) < len(g["in_step_us"]):
                cold, warm = alone(g["func"], key, args.reps)
                g["cold_us"].append(cold)
                g["warm_us"].append(warm)
    out = []
    for key, g in groups.items():
        name, a, _ = key
        tensors = [x for x in a if x[0] == "T"]
        out.append(dict(op=name.replace("aten::", ""),
                        shapes=[list(x[1]) for x in tensors], dtypes=[x[3] for x in tensors],
                        input_bytes=sum(nbytes(x) for x in a),
                        calls_per_step=g["calls_per_step"], in_step_us=g["in_step_us"],
                        cold_us=g["cold_us"], warm_us=g["warm_us"]))
    out.sort(key=lambda r: -r["calls_per_step"] * statistics.median(r["in_step_us"]))
    rec = dict(
        schema=SCHEMA,
        provenance=trace_step.provenance("op_context.py", argv, threads=args.threads),
        model=dict(family=args.family, preset=args.preset),
        workload=dict(method=args.method, rank=args.rank, precision=args.precision,
                      batch=args.batch, seq=args.seq),
        ops=out,
    )
    trace_step.write_json(args.out, rec)
    tot = {k: sum(r["calls_per_step"] * statistics.median(r[k]) for r in out) / 1e3
           for k in ("in_step_us", "cold_us", "warm_us")}
    print(f"{len(out)} op groups; per step {tot['in_step_us']:.2f} ms in the step, "
          f"{tot['cold_us']:.2f} cold, {tot['warm_us']:.2f} warm")


if __name__ == "__main__":
    main()
