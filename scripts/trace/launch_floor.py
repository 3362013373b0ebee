#!/usr/bin/env python3
"""How a queued kernel pays the launch floor: back-to-back elementwise kernels on a CUDA GPU.

For each tensor size, 200 identical `torch.add(a, b, out=c)` kernels are captured in a CUDA graph
(so the host issues nothing while they run) and replayed under torch.profiler. From the kernels'
device timestamps: each kernel's duration, the gap from the previous kernel's end to its start,
and the period (start to next start). If the floor were added to every kernel, the period would be
duration + floor at every size; if it is a minimum, the period is max(duration + small gap, floor).
The same sequence issued eagerly from Python is timed too (the host's issue rate).

    python3 scripts/trace/launch_floor.py OUT.json        (CUDA only)
"""

import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile


def main(out_path):
    dev = torch.device("cuda")
    rows = []
    n = 200
    for elems in [256, 4096, 65536, 262144, 1 << 20, 1 << 22, 1 << 24, 1 << 26]:
        a = torch.randn(elems, device=dev, dtype=torch.bfloat16)
        b = torch.randn(elems, device=dev, dtype=torch.bfloat16)
        c = torch.empty_like(a)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                torch.add(a, b, out=c)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                torch.add(a, b, out=c)
        for _ in range(3):
            g.replay()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            g.replay()
            torch.cuda.synchronize()
        ks = sorted(
            (e.time_range.start, e.time_range.end)
            for e in prof.events()
            if str(e.device_type).endswith("CUDA") and "add" in e.name.lower()
        )
        dur = [e - s for s, e in ks]
        gap = [ks[i + 1][0] - ks[i][1] for i in range(len(ks) - 1)]
        period = [ks[i + 1][0] - ks[i][0] for i in range(len(ks) - 1)]
        # Wall time of the replay, and of the same ops issued eagerly from Python.
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            g.replay()
        torch.cuda.synchronize()
        graph_us = (time.perf_counter() - t0) / (5 * n) * 1e6
        t0 = time.perf_counter()
        for _ in range(n):
            torch.add(a, b, out=c)
        torch.cuda.synchronize()
        eager_us = (time.perf_counter() - t0) / n * 1e6
        row = dict(
            elems=elems,
            bytes=3 * elems * 2,
            kernels=len(ks),
            duration_us=statistics.median(dur) if dur else None,
            gap_us=statistics.median(gap) if gap else None,
            period_us=statistics.median(period) if period else None,
            graph_wall_us_per_kernel=graph_us,
            eager_wall_us_per_kernel=eager_us,
        )
        rows.append(row)
        print(
            f"{row['bytes']:>12} B  kernels {len(ks):>3}  duration {row['duration_us']:.2f} µs  "
            f"gap {row['gap_us']:.2f} µs  period {row['period_us']:.2f} µs  graph {graph_us:.2f} µs  "
            f"eager {eager_us:.2f} µs",
            flush=True,
        )
    rec = dict(
        device=torch.cuda.get_device_name(dev),
        torch=torch.__version__,
        method=__doc__.split("\n\n")[1],
        rows=rows,
    )
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import trace_step  # noqa: E402  (torch, transformers: already importable where this runs)

    trace_step.write_json(out_path, rec)


if __name__ == "__main__":
    main(sys.argv[1])
