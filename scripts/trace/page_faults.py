#!/usr/bin/env python3
"""Page faults of every aten op in real training steps on a CPU.

costsim's CPU profile charges an op's fresh output at the first-touch rate when the output is at
least `first-touch-min-mib` (page faults as fresh pages are written; docs/model.md). Which
outputs are fresh pages depends on the C allocator's state: glibc serves a request at or above
its mmap threshold with a new mapping (faulted page by page as it is written) and raises the
threshold, up to 32 MiB, to the size of each mapped chunk it frees; heap memory it trims back to
the system faults again when reused. This script measures, in real steps, which ops' outputs
fault: a TorchDispatchMode reads the process's minor-fault count (getrusage) before and after
every aten op of `--steps` steps, after `--warmup` steps that bring the allocator to its steady
state.

Output: one JSON record (schema costsim-page-faults/1): provenance, the configuration, and per
op call of the last step its phase, name, output bytes (tensors the op returns that are not its
inputs) and minor faults (4 KiB pages); and a summary per phase and per output-size class of
how many of those bytes faulted. Models come from trace_step.py's presets or a config.json,
random weights, nothing downloaded.

    python3 scripts/trace/page_faults.py --family gpt2 --config docs/results/models/gpt2-tiny/config.json --out f.json
"""

import argparse
import os
import resource
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import trace_step  # noqa: E402

SCHEMA = "costsim-page-faults/1"
PAGE = resource.getpagesize()
# Output-size classes of the summary, in MiB: [lo, hi).
CLASSES = [(0, 1), (1, 4), (4, 16), (16, 32), (32, float("inf"))]


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def heap_range():
    """[start, end) of the process's brk heap, from /proc/self/maps ((0, 0) when it has none)."""
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("[heap]"):
                lo, hi = line.split()[0].split("-")
                return int(lo, 16), int(hi, 16)
    return 0, 0


class FaultRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.phase = "forward"
        self.rows = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ins = {id(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        f0 = faults()
        out = func(*args, **kwargs)
        f1 = faults()
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and id(t) not in ins]
        cpu = [t for t in outs if t.device.type == "cpu"]
        nbytes = sum(t.untyped_storage().nbytes() for t in cpu)
        lo, hi = heap_range()
        where = ""
        if cpu and nbytes > 0:
            big = max(cpu, key=lambda t: t.untyped_storage().nbytes())
            where = "heap" if lo <= big.untyped_storage().data_ptr() < hi else "mapping"
        self.rows.append(dict(phase=self.phase, op=str(func.overloadpacket.__name__),
                              out_bytes=nbytes, faults=f1 - f0, where=where, heap_bytes=hi - lo))
        return out


def summary(rows):
    out = []
    for phase in ("forward", "backward", "optimizer"):
        for lo, hi in CLASSES:
            sel = [r for r in rows if r["phase"] == phase and lo * 2**20 <= r["out_bytes"] < hi * 2**20
                   and r["out_bytes"] > 0]
            if not sel:
                continue
            b = sum(r["out_bytes"] for r in sel)
            fb = sum(min(r["faults"] * PAGE, r["out_bytes"]) for r in sel)
            out.append(dict(phase=phase, min_mib=lo, max_mib=None if hi == float("inf") else hi,
                            ops=len(sel), out_bytes=b, faulted_bytes=fb,
                            ops_faulting=sum(1 for r in sel if r["faults"] * PAGE >= r["out_bytes"] / 2)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=["gpt2", "llama"], required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--config", default=None, help="a Hugging Face config.json instead of --preset")
    ap.add_argument("--method", choices=["full", "lora"], default="full")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.config:
        args.preset = trace_step.preset_of_config(args.config)
    args.targets, args.rank, args.alpha, args.dropout = "all", 8, 32.0, 0.0
    args.adapter_dtype, args.model_dropout = "fp32", 0.0
    model, cfg, _ = trace_step.prepare_model(args, torch.device("cpu"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))

    def step(rec=None):
        if rec:
            rec.phase = "forward"
        loss = model(input_ids=ids, labels=ids).loss
        if rec:
            rec.phase = "backward"
        loss.backward()
        if rec:
            rec.phase = "optimizer"
        opt.step()
        opt.zero_grad(set_to_none=True)

    rec = FaultRecorder()
    # Warm-up steps run under the recorder too, so that the allocator sees the same pattern
    # (the recorder's own Python objects are small) before the recorded step.
    for _ in range(args.warmup):
        with rec:
            step(rec)
    rec.rows = []
    lo, hi = heap_range()
    heap0 = hi - lo
    with rec:
        step(rec)
    rows = rec.rows
    result = dict(
        schema=SCHEMA,
        provenance=trace_step.provenance("page_faults.py", argv, page_bytes=PAGE),
        model=dict(family=args.family, preset=args.preset,
                   hf_config=trace_step._hf_config(cfg, args.family)),
        workload=dict(method=args.method, precision=args.precision, batch=args.batch, seq=args.seq,
                      warmup=args.warmup),
        glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
        heap_bytes=dict(start=heap0, min=min([heap0] + [r["heap_bytes"] for r in rows]),
                        max=max([heap0] + [r["heap_bytes"] for r in rows]), end=rows[-1]["heap_bytes"]),
        summary=summary(rows),
        # Ops that output, fault, or move the heap's end (a trim or a growth).
        ops=[r for i, r in enumerate(rows) if r["out_bytes"] > 0 or r["faults"] > 0
             or r["heap_bytes"] != (rows[i - 1]["heap_bytes"] if i else heap0)],
    )
    trace_step.write_json(args.out, result)
    for s in result["summary"]:
        hi = "inf" if s["max_mib"] is None else s["max_mib"]
        print(f"{s['phase']:9s} [{s['min_mib']}, {hi}) MiB: {s['ops']:4d} ops, "
              f"{s['out_bytes'] / 2**20:8.1f} MiB out, {s['faulted_bytes'] / 2**20:8.1f} MiB faulted, "
              f"{s['ops_faulting']} ops mostly faulted")


if __name__ == "__main__":
    main()
