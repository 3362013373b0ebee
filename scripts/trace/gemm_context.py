#!/usr/bin/env python3
"""GEMMs inside a real training step against the same GEMMs alone, timed in one process.

costsim's CPU profile prices each GEMM from microbenchmarks that run one matrix product at a
time (`costsim calibrate`). A real step runs the same products between other ops, with autograd
recording, allocation and freeing around them: this script measures how much slower (or not)
that makes them, on this machine, in the same minute, so that machine-to-machine and
minute-to-minute drift cancel in the ratio.

1. One configuration (trace_step.py's models: transformers + peft, random weights, nothing
   downloaded) runs `--steps` training steps (forward with the loss, backward, AdamW, zero_grad)
   under a TorchDispatchMode that times every aten::mm / addmm / bmm call (perf_counter around
   the kernel alone, below autograd) and groups the calls by the operands' shapes, strides and
   dtypes: calls per step and mean µs per call.
2. Each distinct group is then run alone with fresh operands of the same shapes, strides and
   dtypes, (a) cold: cycling through copies that together exceed 128 MB, as calibrate does, and
   (b) warm: the same operands every call; `--reps` calls, the median.
3. Steps 1 and 2 alternate `--rounds` times, and each group's ratio is the median of its
   per-round ratios (in-step / alone cold).

Schema 1 (until 2026-11-29) grouped by shapes only, from torch.profiler, and ran every shape
alone in the model's precision with contiguous operands. That was wrong for LoRA under bf16,
whose adapter products run in fp32 (peft keeps the adapters fp32 and casts the input), and for
every product whose operand is a transposed view (nn.Linear's weight): schema 2 replays each
product as the step ran it.

Output: one JSON record (schema costsim-gemm-context/2): provenance, the configuration, and per
group its op, m, n, k, batch, dtype, layout (per operand `n` row-major, `t` a transposed view,
`s` other strides), shapes, strides, calls per step, in-step, alone (cold) and warm µs per call
per round, and the ratio. CPU only.

    python3 scripts/trace/gemm_context.py --family gpt2 --config docs/results/models/gpt2-tiny/config.json --out g.json
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

SCHEMA = "costsim-gemm-context/2"
GEMMS = ("aten::mm", "aten::addmm", "aten::bmm")


def mnk(op, shapes):
    """m, n, k and batch of a GEMM from its tensor operands' shapes (addmm: bias first)."""
    if op == "aten::addmm":
        a, b = shapes[1], shapes[2]
    else:
        a, b = shapes[0], shapes[1]
    if op == "aten::bmm":
        return a[1], b[2], a[2], a[0]
    return a[0], b[1], a[1], 1


def layout_of(shape, stride):
    """`n` row-major (last dimension unit stride), `t` a transposed view (the one before it unit
    stride), `s` anything else; a dimension of size 1 may have any stride."""
    if len(shape) < 2:
        return "n"
    rows, cols = shape[-2], shape[-1]
    if cols == 1 or stride[-1] == 1:
        if rows == 1 or stride[-2] >= cols:
            return "n"
    if rows == 1 or stride[-2] == 1:
        if cols == 1 or stride[-1] >= rows:
            return "t"
    return "s"


class GemmTimer(TorchDispatchMode):
    """Times each GEMM the step dispatches, keyed by (op, shapes, strides, dtypes)."""

    def __init__(self):
        super().__init__()
        self.calls = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name not in GEMMS or func._overloadname not in ("", "default"):
            return func(*args, **kwargs)
        t = time.perf_counter()
        out = func(*args, **kwargs)
        dt = time.perf_counter() - t
        ts = [a for a in args if isinstance(a, torch.Tensor)]
        key = (name, tuple(tuple(a.shape) for a in ts), tuple(tuple(a.stride()) for a in ts),
               tuple(str(a.dtype).replace("torch.", "") for a in ts))
        self.calls.setdefault(key, []).append(dt)
        return out


def time_step(step, steps):
    """Per (op, shapes, strides, dtypes): calls per step and mean µs per call in the step."""
    timer = GemmTimer()
    with timer:
        for _ in range(steps):
            step()
    return {key: dict(calls_per_step=len(ts) / steps, us_per_call=sum(ts) / len(ts) * 1e6)
            for key, ts in timer.calls.items()}


def operand(shape, stride, dtype):
    """A tensor of this shape, strides and dtype, filled with normal values."""
    t = torch.empty_strided(shape, stride, dtype=dtype)
    t.copy_(torch.randn(shape, dtype=torch.float32))
    return t


def alone(key, reps):
    """Median µs of the group's product alone: (cold, warm). Cold cycles through copies of the
    operands that together exceed 128 MB; warm repeats one set."""
    op, shapes, strides, dtypes = key
    dts = [getattr(torch, d) for d in dtypes]
    size = sum(torch.Size(s).numel() * torch.tensor([], dtype=d).element_size()
               for s, d in zip(shapes, dts))
    copies = max(2, min(16, int(128e6 // max(size, 1))))
    sets = [[operand(s, st, d) for s, st, d in zip(shapes, strides, dts)] for _ in range(copies)]
    f = {"aten::addmm": torch.addmm, "aten::bmm": torch.bmm, "aten::mm": torch.mm}[op]

    def median_of(pick):
        for i in range(2):
            f(*pick(i))
        ts = []
        for r in range(reps):
            xs = pick(r)
            t = time.perf_counter()
            f(*xs)
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1e6

    return median_of(lambda r: sets[r % copies]), median_of(lambda r: sets[0])


def main(argv=None):
    ap = trace_step.context_arguments(__doc__, "profiled steps per round",
                                      "timed calls per shape alone per round", rounds=3)
    args = ap.parse_args(argv)
    cfg, step = trace_step.context_step(args)
    groups = {}
    for _ in range(args.rounds):
        timed = time_step(step, args.steps)
        for key, row in timed.items():
            g = groups.setdefault(key, dict(calls_per_step=row["calls_per_step"], in_step_us=[],
                                            alone_us=[], warm_us=[]))
            g["in_step_us"].append(row["us_per_call"])
        for key, g in groups.items():
            if len(g["alone_us"]) < len(g["in_step_us"]):
                cold, warm = alone(key, args.reps)
                g["alone_us"].append(cold)
                g["warm_us"].append(warm)
    out = []
    for key, g in groups.items():
        op, shapes, strides, dtypes = key
        m, n, k, batch = mnk(op, shapes)
        ab = shapes[1:3] if op == "aten::addmm" else shapes[:2]
        ab_strides = strides[1:3] if op == "aten::addmm" else strides[:2]
        ratios = [a / b for a, b in zip(g["in_step_us"], g["alone_us"]) if b > 0]
        out.append(dict(op=op.replace("aten::", ""), m=m, n=n, k=k, batch=batch,
                        dtype=dtypes[-1],
                        layout="".join(layout_of(s, st) for s, st in zip(ab, ab_strides)),
                        shapes=[list(s) for s in shapes], strides=[list(s) for s in strides],
                        dtypes=list(dtypes), calls_per_step=g["calls_per_step"],
                        in_step_us=g["in_step_us"], alone_us=g["alone_us"], warm_us=g["warm_us"],
                        ratio=statistics.median(ratios) if ratios else None))
    out.sort(key=lambda r: -r["calls_per_step"] * statistics.median(r["in_step_us"]))
    rec = dict(
        schema=SCHEMA,
        provenance=trace_step.provenance("gemm_context.py", argv, threads=args.threads),
        model=dict(family=args.family, preset=args.preset,
                   hf_config=trace_step._hf_config(cfg, args.family)),
        workload=dict(method=args.method, rank=args.rank, precision=args.precision, batch=args.batch,
                      seq=args.seq),
        gemms=out,
    )
    trace_step.write_json(args.out, rec)
    w = sum(r["calls_per_step"] * statistics.median(r["in_step_us"]) for r in out)
    a = sum(r["calls_per_step"] * statistics.median(r["alone_us"]) for r in out)
    print(f"{len(out)} GEMM groups; per step {w / 1e3:.2f} ms in the step, {a / 1e3:.2f} ms alone "
          f"(ratio {w / a if a else float('nan'):.3f})")


if __name__ == "__main__":
    main()
