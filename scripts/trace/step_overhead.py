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
Minimum and median over the timed steps; `trainer − bare` is the loop's fixed work per optimizer
step. Models come from configs with random weights (trace_step.py's presets); nothing is
downloaded. Output: one JSON record (schema costsim-step-overhead/1).

    python3 scripts/trace/step_overhead.py --family gpt2 --preset micro2 --method lora --out o.json
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import trace_step  # noqa: E402

SCHEMA = "costsim-step-overhead/1"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stats(xs):
    return dict(min_us=min(xs) * 1e6, median_us=statistics.median(xs) * 1e6, n=len(xs))


def build(args, device):
    model, cfg = trace_step.build_model(args, device)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=8,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules=trace_step.TARGETS[(args.family, "all")],
            fan_in_fan_out=args.family == "gpt2",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg)
    model.train()
    return model, cfg


def batch_of(cfg, args, device):
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=device)
    return dict(input_ids=ids, labels=ids.clone())


def time_phases(model, opt, batch, device, reps):
    params = [p for p in model.parameters() if p.requires_grad]
    fwd, bwd, step = [], [], []
    for i in range(reps + 3):
        sync(device)
        t0 = time.perf_counter()
        loss = model(**batch).loss
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        t3 = time.perf_counter()
        if i >= 3:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            step.append(t3 - t2)
    total = [a + b + c for a, b, c in zip(fwd, bwd, step)]
    return dict(forward=stats(fwd), backward=stats(bwd), optimizer=stats(step), sum=stats(total))


def time_bare(model, opt, batch, device, reps):
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    sync(device)
    for i in range(reps + 3):
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= 3:
            out.append(time.perf_counter() - t0)
    return stats(out)


def time_trainer(model, opt, cfg, args, device, reps):
    """Trainer with the same AdamW as the bare loop (and a cosine schedule), so that the
    difference is the loop, not the optimizer implementation Trainer would pick."""
    from transformers import Trainer, TrainerCallback, TrainingArguments, get_cosine_schedule_with_warmup

    class Clock(TrainerCallback):
        def __init__(self):
            self.begins = []

        def on_step_begin(self, a, state, control, **kw):
            sync(device)
            self.begins.append(time.perf_counter())

    n = reps + 4
    rows = [
        dict(input_ids=torch.randint(0, cfg.vocab_size, (args.seq,)).tolist()) for _ in range(n * args.batch)
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
        trainer = Trainer(
            model=model,
            args=ta,
            train_dataset=rows,
            data_collator=collate,
            callbacks=[clock],
            optimizers=(opt, sched),
        )
        trainer.train()
    b = clock.begins
    periods = [b[i + 1] - b[i] for i in range(2, len(b) - 1)]
    return stats(periods)


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
            t0 = time.perf_counter()
            fn()
            xs.append(time.perf_counter() - t0)
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
    ap.add_argument("--method", choices=["full", "lora"], required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    args.config = None
    if args.reps < 3:
        raise SystemExit("--reps must be at least 3")
    device = torch.device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, cfg = build(args, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    batch = batch_of(cfg, args, device)
    phases = time_phases(model, opt, batch, device, args.reps)
    bare = time_bare(model, opt, batch, device, args.reps)
    pieces = time_pieces(model, opt, batch, device, args.reps)
    trainer = time_trainer(model, opt, cfg, args, device, args.reps)
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
            command=" ".join([os.path.relpath(__file__, os.getcwd())] + (argv or sys.argv[1:])),
            utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        ),
        config=dict(family=args.family, preset=args.preset, method=args.method, batch=args.batch, seq=args.seq,
                     trainable_tensors=len(params)),
        phases=phases,
        bare=bare,
        trainer=trainer,
        pieces=pieces,
        fixed_work_us=dict(
            min=trainer["min_us"] - bare["min_us"],
            median=trainer["median_us"] - bare["median_us"],
        ),
    )
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=1)
    os.replace(tmp, args.out)
    print(
        f"{args.family}-{args.preset} {args.method}: phases {phases['sum']['median_us']:.0f} us, "
        f"bare {bare['median_us']:.0f} us, Trainer {trainer['median_us']:.0f} us per step "
        f"(fixed work {rec['fixed_work_us']['median']:.0f} us median, {rec['fixed_work_us']['min']:.0f} min); "
        f"scheduler.step {pieces['scheduler_step']['median_us']:.1f} us"
    )


if __name__ == "__main__":
    main()
