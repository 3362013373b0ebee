#!/usr/bin/env python3
"""How the state a real step leaves behind changes op costs on a CPU (issue 12).

The host-cost fit (docs/host.md) times steps at micro widths, where the host's code and data stay
in cache and the C allocator never changes state. A real-size step on a CPU is different: the
device work is done by the same core and sweeps megabytes through the same caches, and glibc's
allocator raises its mmap threshold and trims its heap as large tensors come and go. This script
measures both effects with the real libraries, one thread, nothing downloaded:

* optimizer: the optimizer phase of a model (clip_grad_norm_, AdamW foreach, zero_grad), timed
  piece by piece in three states: right after the model's own forward and backward
  ("after_step", what a training step sees), with fresh gradients and nothing else run in
  between ("warm"), and with fresh gradients after an in-place sweep of `--flush-mib` MiB
  ("flushed": the caches evicted, nothing else changed).
* eviction: a chain of six small ops (Linear, GELU, LayerNorm, add, mul, softmax on 1 × 8 × 16)
  timed after an in-place sweep of each size in `--sweep-mib`: the host's cost per op when the
  work before it evicted its code and data.
* history: log_softmax of a fresh `--rows` × `--vocab` fp32 tensor (the loss's shape), its time
  and the minor page faults per call, then again after a larger tensor (`--raise-mib`) was
  allocated and freed, which raises glibc's dynamic mmap threshold past the output's size. It
  runs first, while the process has allocated nothing large: the allocator's history is what it
  measures, and a different history (another model loaded first) gives other faults.

Output: one JSON record (schema costsim-host-state/1) with every sample, its median, and the
provenance. Models come from trace_step.py's presets or a config.json, random weights.

    python3 scripts/trace/host_state.py --family gpt2 --config docs/results/models/gpt2-tiny/config.json --out s.json
"""

import argparse
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import trace_step  # noqa: E402

SCHEMA = "costsim-host-state/1"
PAGE = resource.getpagesize()


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def optimizer_states(args, reps):
    """Clip, AdamW step and zero_grad times (s) in the three states, `reps` samples each."""
    model, cfg, _ = trace_step.prepare_model(args, torch.device("cpu"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, foreach=True)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    sweep = torch.zeros(int(args.flush_mib * 2**20) // 4)
    autocast = args.precision == "bf16-mixed"

    def phase():
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0, foreach=True)
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    def prepare(state):
        if state == "after_step":
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        else:
            for p in trainable:
                p.grad = torch.randn_like(p)
            if state == "flushed":
                sweep.add_(1.0)

    out = {}
    for state in ("after_step", "warm", "flushed"):
        for _ in range(2):  # AdamW's states exist and the allocator has settled
            prepare(state)
            phase()
        samples = []
        for _ in range(reps):
            prepare(state)
            samples.append(phase())
        out[state] = {
            piece: dict(samples_s=[s[i] for s in samples], median_s=median([s[i] for s in samples]))
            for i, piece in enumerate(("clip", "step", "zero_grad"))
        }
    shapes = [list(p.shape) for p in trainable]
    return dict(tensors=len(trainable), elements=sum(p.numel() for p in trainable),
                shapes=shapes, states=out)


def eviction(sweeps_mib, reps):
    """Seconds for a chain of six small ops after an in-place sweep of each size."""
    lin = torch.nn.Linear(16, 16)
    ln = torch.nn.LayerNorm(16)
    x = torch.randn(1, 8, 16, requires_grad=True)

    def chain():
        y = lin(x)
        y = F.gelu(y)
        y = ln(y)
        y = y + x
        y = y * 0.5
        return torch.softmax(y, -1)

    rows = []
    for mib in sweeps_mib:
        buf = torch.zeros(int(mib * 2**20) // 4) if mib > 0 else None
        samples = []
        for i in range(reps + 5):
            if buf is not None:
                buf.add_(1.0)
            t0 = time.perf_counter()
            chain()
            if i >= 5:
                samples.append(time.perf_counter() - t0)
        rows.append(dict(sweep_mib=mib, ops=6, samples_s=samples, median_s=median(samples)))
    return rows


def history(rows, vocab, raise_mib, reps):
    """log_softmax of a fresh rows × vocab fp32 tensor, before and after a larger allocation."""
    x = torch.randn(rows, vocab)

    def timed():
        samples, pages = [], []
        for i in range(reps + 3):
            f0, t0 = faults(), time.perf_counter()
            torch.log_softmax(x, -1)
            if i >= 3:
                samples.append(time.perf_counter() - t0)
                pages.append(faults() - f0)
        return dict(samples_s=samples, median_s=median(samples), faults=pages,
                    median_faulted_bytes=median(pages) * PAGE)

    before = timed()
    big = torch.empty(int(raise_mib * 2**20) // 4)
    big.fill_(0.0)
    del big
    after = timed()
    return dict(rows=rows, vocab=vocab, out_bytes=rows * vocab * 4, raise_mib=raise_mib,
                before=before, after=after)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=["gpt2", "llama"], required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--config", default=None, help="a Hugging Face config.json instead of --preset")
    ap.add_argument("--method", choices=["full", "lora", "paca"], default="lora")
    ap.add_argument("--targets", choices=["qv", "all"], default="qv")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--precision", choices=["fp32", "bf16", "bf16-mixed"], default="bf16-mixed")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=8)
    ap.add_argument("--reps", type=int, default=35)
    ap.add_argument("--flush-mib", type=float, default=64.0)
    ap.add_argument("--sweep-mib", default="0,1,4,16,32,64", help="comma-separated MiB")
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--raise-mib", type=float, default=31.25)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.config:
        args.preset = trace_step.preset_of_config(args.config)
    args.alpha = 32.0 if args.method == "lora" else 64.0
    args.dropout, args.adapter_dtype, args.model_dropout = 0.0, "fp32", 0.0
    args.attention = "sdpa"
    sweeps = [float(s) for s in args.sweep_mib.split(",") if s.strip()]
    # First, while the allocator has seen nothing but the import: its history is the experiment.
    hist = history(args.rows, args.vocab, args.raise_mib, max(3, args.reps // 5))
    opt = optimizer_states(args, args.reps)
    result = dict(
        schema=SCHEMA,
        provenance=trace_step.provenance("host_state.py", argv, threads=1),
        model=dict(family=args.family, preset=args.preset),
        workload=dict(method=args.method, targets=args.targets, rank=args.rank,
                      precision=args.precision, batch=args.batch, seq=args.seq),
        optimizer=opt,
        eviction=eviction(sweeps, args.reps),
        history=hist,
    )
    trace_step.write_json(args.out, result)
    o = result["optimizer"]
    print(f"{args.preset} {args.method}: {o['tensors']} trainable tensors, {o['elements']} elements")
    for state, pieces in o["states"].items():
        print(f"  optimizer {state:10s} " + "  ".join(
            f"{k} {v['median_s'] * 1e6:7.1f} us" for k, v in pieces.items()))
    for r in result["eviction"]:
        print(f"  chain of {r['ops']} ops after a {r['sweep_mib']:6.2f} MiB sweep: {r['median_s'] * 1e6:7.1f} us")
    h = result["history"]
    for when in ("before", "after"):
        print(f"  log_softmax {h['rows']}x{h['vocab']} {when:6s}: {h[when]['median_s'] * 1e3:6.2f} ms, "
              f"{h[when]['median_faulted_bytes'] / 2**20:5.1f} MiB faulted a call")


if __name__ == "__main__":
    main()
