#!/usr/bin/env python3
"""Runs trace_step.py over a grid, in one process (imports and device start-up paid once).

    python3 scripts/trace/run_grid.py GRID_FILE OUT_DIR [--device cuda] [--only SUBSTR]

GRID_FILE: one trace per line, `NAME: trace_step.py arguments` (without --out and --device);
blank lines and # comments are skipped. Each trace is written to OUT_DIR/NAME.json. A failing
line (out of memory, say) is reported and the rest still run; the exit code is 1 if any failed.
"""

import argparse
import gc
import os
import shlex
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trace_step  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("grid")
    ap.add_argument("out_dir")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default=None, help="run only the lines whose name contains this")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    failed = 0
    for lineno, line in enumerate(open(a.grid), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, rest = line.partition(":")
        name = name.strip()
        if a.only and a.only not in name:
            continue
        argv = shlex.split(rest) + ["--device", a.device, "--out", os.path.join(a.out_dir, name + ".json")]
        t0 = time.perf_counter()
        try:
            trace_step.main(argv)
        except BaseException as e:  # noqa: BLE001 - report and go on (SystemExit included)
            if isinstance(e, KeyboardInterrupt):
                raise
            failed += 1
            print(f"{a.grid}:{lineno}: {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            traceback.print_exc(limit=3)
        finally:
            gc.collect()
            if a.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
        print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
