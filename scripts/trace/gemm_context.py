#!/usr/bin/env python3
"""GEMMs inside a real training step against the same GEMMs alone, timed in one process.

costsim's CPU profile prices each GEMM from microbenchmarks that run one matrix product at a
time (`costsim calibrate`). A real step runs the same products between other ops, with autograd
recording, allocation and freeing around them: this script measures how much slower (or not)
that makes them, on this machine, in the same minute, so that machine-to-machine and
minute-to-minute drift cancel in the ratio.

1. One configuration (trace_step.py's models: transformers + peft, random weights, nothing
   downloaded) runs `--steps` training steps (forward with the loss, backward, AdamW, zero_grad)
   under torch.profiler with shapes recorded; every aten::mm / addmm / bmm is grouped by its
   input shapes and layout (which operand is a transposed view): calls per step and self CPU
   time per call.
2. Each distinct shape is then run alone with fresh operands of the same layout, cycling through
   copies that together exceed 128 MB (cold operands, as calibrate does), `--reps` times; the
   median time per call.
3. Steps 1 and 2 alternate `--rounds` times, and each shape's ratio is the median of its per-round
   ratios (in-step / alone).

Output: one JSON record (schema costsim-gemm-context/1): provenance, the configuration, and per
shape its m, n, k, batch, layout, calls per step, in-step and alone µs per call per round, and the
ratio. CPU only (on a GPU the profiler's self CPU time is not the kernel's time).

    python3 scripts/trace/gemm_context.py --family gpt2 --config docs/results/models/gpt2-tiny/config.json --out g.json
"""

import argparse
import os
import platform
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import trace_step  # noqa: E402

SCHEMA = "costsim-gemm-context/1"
GEMMS = ("aten::mm", "aten::addmm", "aten::bmm")


def mnk(op, shapes):
    """m, n, k and batch of a profiled GEMM from its input shapes."""
    if op == "aten::addmm":
        a, b = shapes[1], shapes[2]
    else:
        a, b = shapes[0], shapes[1]
    if op == "aten::bmm":
        return a[1], b[2], a[2], a[0]
    return a[0], b[1], a[1], 1


def profile_step(step, steps):
    """Per (op, input shapes): calls per step and self CPU µs per call."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, acc_events=True) as p:
        for _ in range(steps):
            step()
    rows = {}
    for e in p.key_averages(group_by_input_shape=True):
        if e.key in GEMMS and e.count > 0:
            rows[(e.key, str(e.input_shapes))] = dict(
                op=e.key,
                shapes=e.input_shapes,
                calls_per_step=e.count / steps,
                us_per_call=e.self_cpu_time_total / e.count,
            )
    return rows


def alone(row, dtype, reps):
    """Median µs of the shape's product alone, cold operands (copies over 128 MB)."""
    op = row["op"]
    a_shape, b_shape, bias_shape = (row["shapes"][1], row["shapes"][2], row["shapes"][0]) \
        if op == "aten::addmm" else (row["shapes"][0], row["shapes"][1], None)
    size = torch.tensor([], dtype=dtype).element_size()
    per = (torch.Size(a_shape).numel() + torch.Size(b_shape).numel()) * size
    copies = max(2, min(16, int(128e6 // max(per, 1))))
    # Same contiguous layouts as the step cannot be read off the profile; products with the
    # same shapes, contiguous operands, are what calibrate times.
    xs = [(torch.randn(a_shape, dtype=dtype), torch.randn(b_shape, dtype=dtype)) for _ in range(copies)]
    bias = torch.randn(bias_shape, dtype=dtype) if bias_shape is not None else None
    if op == "aten::addmm":
        f = lambda a, b: torch.addmm(bias, a, b)  # noqa: E731
    elif op == "aten::bmm":
        f = torch.bmm
    else:
        f = torch.mm
    for i in range(2):
        f(*xs[i % copies])
    ts = []
    for r in range(reps):
        a, b = xs[r % copies]
        t = time.perf_counter()
        f(a, b)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=["gpt2", "llama"], required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--config", default=None, help="a Hugging Face config.json instead of --preset")
    ap.add_argument("--method", choices=["full", "lora"], default="full")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps per round")
    ap.add_argument("--reps", type=int, default=9, help="timed calls per shape alone per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if min(args.steps, args.reps, args.rounds) < 1:
        raise SystemExit("--steps, --reps and --rounds must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.config:
        args.preset = trace_step.preset_of_config(args.config)
    # trace_step.prepare_model's other options, at its defaults.
    args.targets, args.rank, args.alpha, args.dropout = "all", 8, 32.0, 0.0
    args.adapter_dtype, args.model_dropout = "fp32", 0.0
    device = torch.device("cpu")
    model, cfg, _ = trace_step.prepare_model(args, device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    shapes = {}
    for _ in range(args.rounds):
        prof = profile_step(step, args.steps)
        for key, row in prof.items():
            s = shapes.setdefault(key, dict(op=row["op"], shapes=row["shapes"],
                                            calls_per_step=row["calls_per_step"],
                                            in_step_us=[], alone_us=[]))
            s["in_step_us"].append(row["us_per_call"])
        for key, s in shapes.items():
            if len(s["alone_us"]) < len(s["in_step_us"]):
                s["alone_us"].append(alone(s, dtype, args.reps))
    out = []
    for s in shapes.values():
        m, n, k, batch = mnk(s["op"], s["shapes"])
        ratios = [a / b for a, b in zip(s["in_step_us"], s["alone_us"]) if b > 0]
        out.append(dict(op=s["op"].replace("aten::", ""), m=m, n=n, k=k, batch=batch,
                        shapes=s["shapes"], calls_per_step=s["calls_per_step"],
                        in_step_us=s["in_step_us"], alone_us=s["alone_us"],
                        ratio=statistics.median(ratios) if ratios else None))
    out.sort(key=lambda r: -r["calls_per_step"] * statistics.median(r["in_step_us"]))
    rec = dict(
        schema=SCHEMA,
        provenance=dict(torch=torch.__version__, python=platform.python_version(),
                        machine=platform.processor() or platform.machine(),
                        threads=args.threads, utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        command=" ".join(["gemm_context.py"] + (argv if argv is not None else sys.argv[1:]))),
        model=dict(family=args.family, preset=args.preset,
                   hf_config=trace_step._hf_config(cfg, args.family)),
        workload=dict(method=args.method, precision=args.precision, batch=args.batch, seq=args.seq),
        gemms=out,
    )
    trace_step.write_json(args.out, rec)
    w = sum(r["calls_per_step"] * statistics.median(r["in_step_us"]) for r in out)
    a = sum(r["calls_per_step"] * statistics.median(r["alone_us"]) for r in out)
    print(f"{len(out)} GEMM shapes; per step {w / 1e3:.2f} ms in the step, {a / 1e3:.2f} ms alone "
          f"(ratio {w / a if a else float('nan'):.3f})")


if __name__ == "__main__":
    main()
