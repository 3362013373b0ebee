#!/usr/bin/env python3
"""CPU time per configuration of llm-analysis (https://github.com/cli99/llm-analysis), in-process.

The reference of the sweep engine's speed goal (issue 10: at least 100 times llm-analysis's
in-process time per configuration where only batch, sequence and rank change). Evaluates
llm-analysis's training estimate (closed-form FLOPs, memory and latency formulas) for
Llama-2-7B on each (batch, sequence length) of the `bsr` grid of
model/benches/common/mod.rs: batch 1, 2, 4, 8 and sequence 16..800 in steps of 16, 200
configurations a pass, and prints the CPU time (this process, one thread) per configuration
of each pass, as one JSON line.

llm-analysis models full fine-tuning only (no adapters, so no rank), checks that the model fits
in the GPU's memory (Llama-2-7B with fp32 master weights and Adam does not fit one 80 GB GPU, so
the states are sharded over 8 with ZeRO stage 3, which leaves the per-configuration work the
same kind), and has no H200 (an H100 SXM stands in: its formulas read a few numbers of it).
Logging is off, as a library caller would have it. `--construct` builds the `LLMAnalysis`
object for every configuration (what its `train` entry point does); by default it is built once
and only `training()` is timed, the faster of the two.

Run through scripts/bench-llm-analysis.sh, which installs the pinned llm-analysis into its own
virtualenv and alternates passes with costsim's `sweep_cpu`.
"""
import argparse
import json
import logging
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passes", type=int, default=1, help="timed passes over the 200 configurations")
    ap.add_argument("--construct", action="store_true",
                    help="build LLMAnalysis for every configuration (default: once)")
    args = ap.parse_args()

    logging.disable(logging.CRITICAL)
    from importlib.metadata import version
    from llm_analysis.analysis import DSZeRO, LLMAnalysis
    from llm_analysis.config import (ParallelismConfig, get_dtype_config_by_name,
                                     get_gpu_config_by_name, get_model_config_by_name)

    model = get_model_config_by_name("NousResearch_Llama-2-7b-hf")
    gpu = get_gpu_config_by_name("h100-sxm-80gb")
    dtype = get_dtype_config_by_name("w16a16e16")

    def build():
        return LLMAnalysis(model, gpu, dtype, ParallelismConfig(dp_size=8),
                           flops_efficiency=0.5, hbm_memory_efficiency=0.9)

    grid = [(b, 16 * i) for b in (1, 2, 4, 8) for i in range(1, 51)]
    held = build()

    def one(b, s):
        a = build() if args.construct else held
        return a.training(batch_size_per_gpu=b, seq_len=s, gradient_accumulation_steps=1,
                          ds_zero=DSZeRO.STAGE_3)

    # A warm pass (imports, caches), and a check that each call computed an estimate.
    latencies = [one(b, s)["latency_per_iter"] for b, s in grid]
    assert all(x > 0 for x in latencies), "llm-analysis returned no latency"
    per_pass = []
    for _ in range(args.passes):
        c0 = time.process_time()
        for b, s in grid:
            one(b, s)
        per_pass.append((time.process_time() - c0) / len(grid) * 1e6)
    print(json.dumps({
        "tool": "llm-analysis",
        "version": version("llm-analysis"),
        "configs": len(grid),
        "construct": args.construct,
        "cpu_us_per_config": [round(x, 2) for x in per_pass],
    }))


if __name__ == "__main__":
    main()
