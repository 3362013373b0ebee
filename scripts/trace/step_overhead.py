#!/usr/bin/env python3
"""Per-step fixed work of a Trainer-style loop, measured against the bare phases.

The per-phase timings of trace_step.py (forward with the loss; backward; clip + AdamW step +
zero_grad) leave out what a real training loop adds once per micro-batch or per optimizer step:
fetching and collating the batch, moving it to the device, Trainer's bookkeeping around
`training_step` (input preparation, the loss's NaN/Inf check — a host–device synchronisation on a
GPU — FLOP counting), the learning-rate scheduler's step, the callbacks. This script measures
that difference on one model at micro width (device work negligible, so what is timed is host
work), three ways in one process:

- phases: the three phases timed one by one, the device synchronised around each (trace_step.py's
  method), summed;
- bare: the same step as one uninterrupted loop (no synchronisation inside the step);
- trainer: transformers.Trainer itself (no logging, saving or evaluation within the timed steps),
  the period between consecutive `on_step_begin` callbacks;

plus the pieces alone (scheduler.step, the NaN/Inf check, the batch to the device, loss.item()).
With `--grad-accum K` each optimizer step runs K micro-batches in all three (the loss divided by
K, as Trainer does). Minimum and median over the timed steps; `trainer − bare` is the loop's fixed
work per optimizer step. The record also holds the model's structure (nn.Modules and parameter
tensors, what `model.train()` and Trainer's FLOP count walk every micro-batch), the predictors
the loop model is fitted on (`costsim calibrate --loop`, docs/host.md). Models come from configs with random weights (trace_step.py's presets); nothing is
downloaded. Output: one JSON record (schema costsim-step-overhead/2).

    python3 scripts/trace/step_overhead.py --family gpt2 --preset micro2 --method lora --out o.json
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import trace_step  # noqa: E402

SCHEMA = "costsim-step-overhead/2"


# The clock every timing reads: wall time (time.perf_counter), or with --clock cpu the process's
# CPU time (time.process_time), which on one thread leaves out the time other processes held
# the core, so that a busy machine (a parallel build) does not inflate the host work measured.
now = time.perf_counter


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stats(xs):
    return dict(min_us=min(xs) * 1e6, median_us=statistics.median(xs) * 1e6, n=len(xs))


def build(args, device):
    """The configuration's model, built exactly as trace_step.py builds it."""
    model, cfg, lowest = trace_step.prepare_model(args, device)
    args.lowest_trained_layer = lowest
    model.train()
    return model, cfg


def batch_of(cfg, args, device):
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=device)
    return dict(input_ids=ids, labels=ids.clone())


def time_phases(model, opt, batch, device, reps, accum):
    params = [p for p in model.parameters() if p.requires_grad]
    fwd, bwd, step = [], [], []
    for i in range(reps + 3):
        t_f = t_b = 0.0
        for _ in range(accum):
            sync(device)
            t0 = now()
            loss = model(**batch).loss / accum
            sync(device)
            t1 = now()
            loss.backward()
            sync(device)
            t2 = now()
            t_f += t1 - t0
            t_b += t2 - t1
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        t3 = now()
        if i >= 3:
            fwd.append(t_f)
            bwd.append(t_b)
            step.append(t3 - t2)
    total = [a + b + c for a, b, c in zip(fwd, bwd, step)]
    return dict(forward=stats(fwd), backward=stats(bwd), optimizer=stats(step), sum=stats(total))


def time_bare(model, opt, batch, device, reps, accum):
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    sync(device)
    for i in range(reps + 3):
        t0 = now()
        for _ in range(accum):
            loss = model(**batch).loss / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= 3:
            out.append(now() - t0)
    return stats(out)


class _Timed:
    """Accumulates the time spent inside the wrapped calls (the step's own work)."""

    def __init__(self, device):
        self.device = device
        self.total = 0.0

    def wrap(self, fn):
        def timed(*a, **k):
            sync(self.device)
            t0 = now()
            out = fn(*a, **k)
            sync(self.device)
            self.total += now() - t0
            return out

        return timed


def time_trainer(model, opt, cfg, args, device, reps):
    """Trainer with the same AdamW as the bare loop (and a cosine schedule), so that the
    difference is the loop, not the optimizer implementation Trainer would pick.

    Returns the period between consecutive `on_step_begin` calls, and the same period less the
    time spent inside the step's own work — the model's forward with the loss, `Tensor.backward`,
    `clip_grad_norm_` and `optimizer.step`, each wrapped and timed — which is the loop's own work
    (data fetch and collation, `model.train()`, FLOP count, accelerate's wrappers,
    `model.zero_grad()`, scheduler, callbacks). That one is measured within each step, so a busy
    machine disturbs it far less than a difference of two separately timed loops."""
    from transformers import Trainer, TrainerCallback, TrainingArguments, get_cosine_schedule_with_warmup

    inside = _Timed(device)

    class Clock(TrainerCallback):
        def __init__(self):
            self.begins = []
            self.inside = []

        def on_step_begin(self, a, state, control, **kw):
            sync(device)
            self.begins.append(now())
            self.inside.append(inside.total)

    n = reps + 4
    rows = [
        dict(input_ids=torch.randint(0, cfg.vocab_size, (args.seq,)).tolist())
        for _ in range(n * args.batch * args.grad_accum)
    ]
    for r in rows:
        r["labels"] = list(r["input_ids"])

    def collate(items):
        ids = torch.tensor([it["input_ids"] for it in items])
        return dict(input_ids=ids, labels=torch.tensor([it["labels"] for it in items]))

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        ta = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=args.batch,
            gradient_accumulation_steps=args.grad_accum,
            max_steps=n,
            learning_rate=1e-4,
            lr_scheduler_type="cosine",
            warmup_steps=2,
            max_grad_norm=1.0,
            logging_steps=10**9,
            logging_first_step=False,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=device.type == "cpu",
            seed=0,
        )
        sched = get_cosine_schedule_with_warmup(opt, 2, n)
        hook_pre = model.register_forward_pre_hook(lambda m, a: _enter(inside))
        hook_post = model.register_forward_hook(lambda m, a, o: _leave(inside))
        saved = (torch.Tensor.backward, torch.nn.utils.clip_grad_norm_, opt.step)
        torch.Tensor.backward = inside.wrap(torch.Tensor.backward)
        torch.nn.utils.clip_grad_norm_ = inside.wrap(torch.nn.utils.clip_grad_norm_)
        opt.step = inside.wrap(opt.step)
        trainer = Trainer(
            model=model,
            args=ta,
            train_dataset=rows,
            data_collator=collate,
            callbacks=[clock],
            optimizers=(opt, sched),
        )
        try:
            trainer.train()
        finally:
            hook_pre.remove()
            hook_post.remove()
            torch.Tensor.backward, torch.nn.utils.clip_grad_norm_ = saved[0], saved[1]
            del opt.step
    b, c = clock.begins, clock.inside
    periods = [b[i + 1] - b[i] for i in range(2, len(b) - 1)]
    loop = [b[i + 1] - b[i] - (c[i + 1] - c[i]) for i in range(2, len(b) - 1)]
    return stats(periods), stats(loop)


def _enter(t):
    sync(t.device)
    t.start = now()


def _leave(t):
    sync(t.device)
    t.total += now() - t.start


def time_pieces(model, opt, batch, device, reps):
    from transformers import get_cosine_schedule_with_warmup

    sched = get_cosine_schedule_with_warmup(opt, 100, 10**6)
    loss = model(**batch).loss.detach()
    cpu_batch = {k: v.to("cpu") for k, v in batch.items()}

    def bench(fn, n=max(200, reps * 10)):
        for _ in range(10):
            fn()
        xs = []
        for _ in range(n):
            t0 = now()
            fn()
            xs.append(now() - t0)
        return stats(xs)

    return dict(
        scheduler_step=bench(sched.step),
        nan_inf_check=bench(lambda: bool(torch.isnan(loss) or torch.isinf(loss))),
        loss_item=bench(loss.item),
        batch_to_device=bench(lambda: {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=["gpt2", "llama"], required=True)
    ap.add_argument("--preset", default="micro2")
    ap.add_argument("--method", choices=["full", "lora", "paca", "paca-upper-half", "paca-three-quarters"],
                    required=True)
    ap.add_argument("--targets", choices=["qv", "all"], default="all")
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank or PaCA column count")
    ap.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    ap.add_argument("--config", default=None, help="a Hugging Face config.json instead of --preset")
    ap.add_argument("--foreach", action="store_true",
                    help="AdamW and clipping with foreach=True (CUDA's default; trace_step.py's); "
                         "default: torch's default for the device")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time, or the process's CPU time (CPU device, one thread: immune to "
                         "other processes' load)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    global now
    if args.clock == "cpu":
        if args.device != "cpu" or args.threads != 1:
            raise SystemExit("--clock cpu needs --device cpu --threads 1 (CPU time of one thread)")
        now = time.process_time
    else:
        now = time.perf_counter
    if args.config:
        args.preset = trace_step.preset_of_config(args.config)
    # trace_step.prepare_model's other options, at trace_step.py's defaults.
    args.alpha = 32.0 if args.method == "lora" else 64.0
    args.dropout = 0.0
    args.adapter_dtype = "fp32"
    args.precision = "fp32"
    args.model_dropout = 0.0
    if args.reps < 3:
        raise SystemExit("--reps must be at least 3")
    if args.grad_accum < 1:
        raise SystemExit("--grad-accum must be at least 1")
    device = torch.device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, cfg = build(args, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, foreach=True if args.foreach else None)
    batch = batch_of(cfg, args, device)
    phases = time_phases(model, opt, batch, device, args.reps, args.grad_accum)
    bare = time_bare(model, opt, batch, device, args.reps, args.grad_accum)
    pieces = time_pieces(model, opt, batch, device, args.reps)
    trainer, loop = time_trainer(model, opt, cfg, args, device, args.reps)
    import peft
    import transformers

    rec = dict(
        schema=SCHEMA,
        provenance=dict(
            torch=torch.__version__,
            transformers=transformers.__version__,
            peft=peft.__version__,
            device=str(device),
            threads=torch.get_num_threads(),
            clock=args.clock,
            command=" ".join([os.path.relpath(__file__, os.getcwd())] + (argv or sys.argv[1:])),
            utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        ),
        config=dict(family=args.family, preset=args.preset, method=args.method, targets=args.targets,
                     rank=args.rank, lowest_trained_layer=args.lowest_trained_layer,
                     batch=args.batch, seq=args.seq, grad_accum=args.grad_accum,
                     trainable_tensors=len(params)),
        structure=trace_step.structure_of(model),
        model=dict(family=args.family, preset=args.preset, hf_config=trace_step._hf_config(cfg, args.family)),
        optimizer="adamw-foreach" if args.foreach or device.type == "cuda" else "adamw-single",
        phases=phases,
        bare=bare,
        trainer=trainer,
        loop=loop,
        pieces=pieces,
        fixed_work_us=dict(
            min=trainer["min_us"] - bare["min_us"],
            median=trainer["median_us"] - bare["median_us"],
        ),
    )
    trace_step.write_json(args.out, rec)
    print(
        f"{args.family}-{args.preset} {args.method} {args.targets} x{args.grad_accum}: "
        f"phases {phases['sum']['median_us']:.0f} us, bare {bare['median_us']:.0f} us, "
        f"Trainer {trainer['median_us']:.0f} us per step (fixed work "
        f"{rec['fixed_work_us']['median']:.0f} us median, {rec['fixed_work_us']['min']:.0f} min; "
        f"loop within steps {loop['median_us']:.0f} us median); "
        f"scheduler.step {pieces['scheduler_step']['median_us']:.1f} us"
    )


if __name__ == "__main__":
    main()
