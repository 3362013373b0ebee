#!/usr/bin/env python3
"""LoRA's six rank-r products in the layouts nn.Linear passes them, timed alone on this CPU.

For a k → n linear over m tokens at rank r, peft's LoRA runs A's forward x·Aᵀ (m × r × k, A a
transposed view: "nt"), B's forward h·Bᵀ (m × n × r, "nt"), B's dX dY·B (m × r × n, both
row-major: "nn"), A's dX dh·A (m × k × r, "nn"), A's dW dhᵀ·x (r × k × m, dh a transposed view:
"tn") and B's dW dYᵀ·h (n × r × m, "tn"). costsim prices each role with its own fill of the
narrow dimension (`gemm-narrow-fill`, docs/model.md); this script is the evidence that the
layout, not the bytes, sets the rate, and how much the cache state moves it.

Each product is timed (torch.mm, one thread by default, median of `--reps` calls) three ways:
- cold: cycling through copies of the operands that together exceed 128 MB (past this CPU's
  32 MiB L3), as gemm_context.py's "alone";
- calibrate: cycling through at most 8 copies, as `costsim calibrate` does (about 4 MB for a
  512 × 512 input: the operands stay in the L3);
- contiguous: the same shape with both operands row-major, cold (what costsim's skinny-GEMM
  bandwidth was fitted on before 2026-11-29g).

Output: one JSON record (schema costsim-narrow-gemms/1): provenance and per (dtype, shape, role)
m, n, k, layout and the three medians in µs.

    python3 scripts/trace/narrow_gemms.py --out docs/results/cpu/narrow-gemms/run.json
"""

import argparse
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import trace_step  # noqa: E402

SCHEMA = "costsim-narrow-gemms/1"
# At most this many copies for "cold" (calibrate's shapes need at most 316; tiny test shapes
# would otherwise allocate hundreds of thousands).
COLD_CAP = 4096
# (tokens m, rank r, in k, out n): the shapes of costsim calibrate's "gemm narrow" samples.
SHAPES = [(256, 8, 768, 768), (512, 8, 512, 1408), (1024, 16, 768, 768), (1024, 64, 512, 512),
          (2048, 8, 1024, 2816)]


def roles(m, r, k, n):
    """(role, m, n, k, layout) of LoRA's six products for a k → n linear over m tokens."""
    return [("A forward", m, r, k, "nt"), ("B forward", m, n, r, "nt"),
            ("B dX", m, r, n, "nn"), ("A dX", m, k, r, "nn"),
            ("A dW", r, k, m, "tn"), ("B dW", n, r, m, "tn")]


def operand(rows, cols, transposed, dtype):
    """A rows × cols operand, row-major or a transposed view of a cols × rows tensor."""
    if transposed:
        return torch.randn(cols, rows).to(dtype).t()
    return torch.randn(rows, cols).to(dtype)


def median_us(m, n, k, layout, dtype, copies_cap, reps):
    size = torch.tensor([], dtype=dtype).element_size()
    per = (m * k + k * n) * size
    copies = max(2, min(copies_cap, -(-int(128e6) // per)))
    sets = [(operand(m, k, layout[0] == "t", dtype), operand(k, n, layout[1] == "t", dtype))
            for _ in range(copies)]
    for i in range(2):
        torch.mm(*sets[i % copies])
    ts = []
    for i in range(reps):
        a, b = sets[i % copies]
        t = time.perf_counter()
        torch.mm(a, b)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=31)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", default=None,
                    help="m,r,k,n;... instead of calibrate's five (for a quick look)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.reps < 1:
        raise SystemExit("--reps must be at least 1")
    shapes = SHAPES
    if args.shapes:
        try:
            shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
        except ValueError:
            raise SystemExit("--shapes takes m,r,k,n groups separated by ';', e.g. 64,8,32,48")
        if any(len(s) != 4 or min(s) < 1 for s in shapes):
            raise SystemExit("--shapes takes four positive integers per group: m,r,k,n")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        for (m, r, k, n) in shapes:
            for role, gm, gn, gk, layout in roles(m, r, k, n):
                rows.append(dict(
                    dtype=name, shape=[m, r, k, n], role=role, m=gm, n=gn, k=gk, layout=layout,
                    cold_us=median_us(gm, gn, gk, layout, dtype, COLD_CAP, args.reps),
                    calibrate_us=median_us(gm, gn, gk, layout, dtype, 8, args.reps),
                    contiguous_us=median_us(gm, gn, gk, "nn", dtype, COLD_CAP, args.reps)))
    rec = dict(
        schema=SCHEMA,
        provenance=trace_step.provenance("narrow_gemms.py", argv, threads=args.threads),
        products=rows,
    )
    trace_step.write_json(args.out, rec)
    for r in rows:
        print(f"{r['dtype']} {r['role']:9} {r['m']:5}x{r['n']:<5}x{r['k']:<5} {r['layout']}  "
              f"cold {r['cold_us']:8.1f}  calibrate {r['calibrate_us']:8.1f}  "
              f"contiguous {r['contiguous_us']:8.1f} µs")


if __name__ == "__main__":
    main()
