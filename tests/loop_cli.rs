//! The training loop (`--loop trainer|bare`): a Trainer's own host work per micro-batch and per
//! step, worked by hand from a profile's `loop-*` values and the model's nn.Module count
//! (docs/model.md); `calibrate --loop` refits the committed measurements.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test, with its location

mod common;

use common::costsim;

use serde_json::Value;

fn json_of(args: &[&str]) -> Value {
    let o = costsim(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("json")
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("costsim-loop-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A100 with round loop costs: 200 µs per micro-batch, 3 µs per module per micro-batch, 300 µs
/// per step, 2 µs per module per step.
fn profile(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("a100-loop.toml");
    std::fs::write(
        &p,
        "base = \"a100\"\n[device]\nname = \"a100-loop\"\n[host]\nloop-micro-batch-us = 200\n\
         loop-module-us = 3\nloop-step-us = 300\nloop-step-module-us = 2\n",
    )
    .unwrap();
    p
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-9)
}

#[test]
fn trainer_loop_work_worked_by_hand() {
    let dir = tmp("hand");
    let hw = profile(&dir);
    let hw = hw.to_str().unwrap();
    let free = dir.join("a100-free-loop.toml");
    std::fs::write(
        &free,
        "base = \"a100\"\n[device]\nname = \"a100-free-loop\"\n[host]\nloop-micro-batch-us = 0\n\
         loop-module-us = 0\nloop-step-us = 0\nloop-step-module-us = 0\n",
    )
    .unwrap();
    let free = free.to_str().unwrap();
    // gpt2: 8 + 13 × 12 = 164 nn.Modules (full); LoRA on all four linears of 12 blocks adds
    // 2 + 10 × 48 = 482: 646.
    for (method, modules) in [("full", 164.0), ("lora", 646.0)] {
        for k in [1.0, 4.0] {
            let ks = format!("{k}");
            let args = |lp: &'static str, hw: &str| {
                vec![
                    "predict",
                    "--model",
                    "gpt2",
                    "--hw",
                    hw,
                    "--method",
                    method,
                    "--batch",
                    "1",
                    "--seq",
                    "128",
                    "--grad-accum",
                    &ks,
                    "--format",
                    "json",
                    "--loop",
                    lp,
                    // One optimizer for the three loops (a Trainer's default is the fused one,
                    // in two parameter groups).
                    "--optimizer",
                    "adamw",
                    "--param-groups",
                    "one",
                ]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
            };
            let run = |lp: &'static str, hw: &str| {
                let a = args(lp, hw);
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                json_of(&a)["predictions"][0].clone()
            };
            // The Trainer, the same Trainer with its own work free (what is left is its loss
            // check after each micro-batch), and a bare loop.
            let (t, z, b) = (run("trainer", hw), run("trainer", free), run("bare", hw));
            // K · (200 + 3 · M) + 300 + 2 · M µs of host work per step.
            let want_ms = (k * (200.0 + 3.0 * modules) + 300.0 + 2.0 * modules) / 1e3;
            let host = t["loop_host_ms"].as_f64().unwrap();
            assert!(
                close(host, want_ms, 1e-9),
                "{method} K={k}: {host} vs {want_ms}"
            );
            // The GPU time it adds: all of micro-batches 2..K's share, which follows a loss
            // check that drained the GPU; of the rest (the next step's fetch and the per-step
            // work, issued after the optimizer) only what outlasts the optimizer's kernels — on
            // an A100 full fine-tuning's AdamW over 124M parameters outlasts all of it. The step
            // grows by exactly that time over the Trainer whose work is free.
            let idle = t["loop_ms"].as_f64().unwrap();
            let between = (k - 1.0) * (200.0 + 3.0 * modules) / 1e3;
            assert!(
                idle >= between * (1.0 - 1e-9) && idle <= host * (1.0 + 1e-9),
                "{method} K={k}: {idle} vs {between}..{host}"
            );
            let grown = t["step_ms"].as_f64().unwrap() - z["step_ms"].as_f64().unwrap();
            assert!(
                close(grown, idle, 1e-6),
                "{method} K={k}: {grown} vs {idle}"
            );
            // Free loop work costs nothing, and its forward, backward and optimizer equal the
            // Trainer's (the loop's idle time is its own, not a phase's).
            assert_eq!(z["loop_ms"].as_f64(), Some(0.0));
            assert_eq!(z["loop_host_ms"].as_f64(), Some(0.0));
            for key in ["backward_ms", "optimizer_ms"] {
                assert!(close(
                    t[key].as_f64().unwrap(),
                    z[key].as_f64().unwrap(),
                    1e-9
                ));
            }
            // A bare loop has neither the work nor the loss checks: no slower than the free
            // Trainer.
            assert_eq!(b["loop_ms"].as_f64(), Some(0.0));
            assert_eq!(b["loop_host_ms"].as_f64(), Some(0.0));
            assert!(b["step_ms"].as_f64().unwrap() <= z["step_ms"].as_f64().unwrap());
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn per_layer_rows_sum_to_the_step_with_the_loop_row() {
    let dir = tmp("rows");
    let hw = profile(&dir);
    let p = &json_of(&[
        "predict",
        "--model",
        "gpt2",
        "--hw",
        hw.to_str().unwrap(),
        "--method",
        "lora",
        "--batch",
        "1",
        "--seq",
        "64",
        "--per-layer",
        "--format",
        "json",
    ])["predictions"][0];
    let rows = p["per_layer"].as_array().unwrap();
    let last = rows.last().unwrap();
    assert_eq!(last["scope"], "loop");
    assert_eq!(last["optimizer_ms"], p["loop_ms"]);
    let sum: f64 = rows
        .iter()
        .map(|r| {
            ["forward_ms", "backward_ms", "optimizer_ms"]
                .iter()
                .map(|k| r[k].as_f64().unwrap())
                .sum::<f64>()
        })
        .sum();
    assert!(close(sum, p["step_ms"].as_f64().unwrap(), 1e-9), "{sum}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_trainer_loop_under_libtorch_is_refused() {
    let o = costsim(&[
        "predict",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--runtime",
        "libtorch",
        "--loop",
        "trainer",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--loop") && e.contains("--loop bare") && !e.contains("panicked"),
        "{e}"
    );
    // Without --loop, libtorch runs its own (bare) loop.
    let p = &json_of(&[
        "predict",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--runtime",
        "libtorch",
        "--format",
        "json",
    ])["predictions"][0];
    assert_eq!(p["loop_ms"].as_f64(), Some(0.0));
}

#[test]
fn calibrate_loop_refits_the_committed_records() {
    let dir = tmp("fit");
    let out = dir.join("cpu-loop.toml");
    let root = env!("CARGO_MANIFEST_DIR");
    let runs: Vec<String> = (1..=2)
        .map(|i| format!("{root}/docs/results/cpu/step/run-{i}"))
        .collect();
    let o = costsim(&[
        "calibrate",
        "--loop",
        &runs.join(","),
        "--base",
        &format!("{root}/docs/results/cpu/host/cpu-eager.toml"),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The fit is the one committed in the CPU eager profile.
    let fitted = std::fs::read_to_string(&out).unwrap();
    let committed =
        std::fs::read_to_string(format!("{root}/docs/results/cpu/host/cpu-eager.toml")).unwrap();
    for key in [
        "loop-micro-batch-us",
        "loop-module-us",
        "loop-step-us",
        "loop-step-module-us",
    ] {
        let line = |t: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("{key} =")))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no {key}"))
        };
        assert_eq!(line(&fitted), line(&committed), "{key}");
    }
    // Each loop key's source ends with the day it was fitted, YYYY-MM-DD.
    let src = fitted
        .lines()
        .find(|l| l.starts_with("loop-step-source ="))
        .expect("a loop-step source");
    let date = src.trim_end_matches('"').rsplit(", ").next().unwrap();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3
            && parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [4, 2, 2]
            && parts.iter().all(|p| digits(p)),
        "{src}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The held-out Trainer steps (four models the fit never saw, batch 1 × 128, on this CPU):
/// every LoRA- and PaCA-vs-full direction of the measured Trainer steps is predicted right, and
/// the committed report is what the tool prints today.
#[test]
fn held_out_trainer_steps_directions_and_report() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = format!("{root}/docs/results/cpu/step/heldout");
    let hw = format!("{root}/docs/results/cpu/host/cpu-eager.toml");
    let v = json_of(&["validate", "--steps", &dir, "--hw", &hw, "--format", "json"]);
    let rows = v.as_array().expect("comparisons");
    assert_eq!(rows.len(), 16);
    let step = |model: &str, method: &str| {
        let r = rows
            .iter()
            .find(|r| {
                let n = r["name"].as_str().unwrap();
                n.starts_with(&format!("{model} {method} ")) && n.ends_with("×1")
            })
            .unwrap_or_else(|| panic!("{model} {method}"));
        (
            r["trainer_step"]["predicted"].as_f64().unwrap(),
            r["trainer_step"]["traced"].as_f64().unwrap(),
        )
    };
    for model in [
        "gpt2-tiny",
        "gpt2-narrow-deep",
        "llama-small",
        "llama-wide-shallow",
    ] {
        let full = step(model, "full");
        for method in ["lora", "paca"] {
            let m = step(model, method);
            assert_eq!(m.0 < full.0, m.1 < full.1, "{model} {method} vs full");
        }
    }
    let o = costsim(&["validate", "--steps", &dir, "--hw", &hw]);
    let committed = std::fs::read_to_string(format!("{root}/docs/results/cpu/step/heldout.txt"))
        .expect("heldout.txt");
    assert_eq!(String::from_utf8_lossy(&o.stdout), committed);
}

/// A profile without loop costs (the generic CPU) says the Trainer loop is not modelled, in
/// `predict`'s header and under `validate --steps`, rather than showing a 0 ms loop as a
/// prediction (an audit, 2026-11-30); a profile with them says nothing of the kind.
#[test]
fn a_profile_without_loop_costs_says_the_loop_is_not_modelled() {
    let said = "not modelled: this profile has no loop-* costs";
    let header = |hw: &str| {
        let o = common::costsim(&["predict", "--hw", hw, "--model", "gpt2", "--method", "lora"]);
        assert!(o.status.success(), "{}", common::stderr(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    assert!(header("cpu").contains(said), "{}", header("cpu"));
    assert!(!header("h200").contains(said), "{}", header("h200"));
    let bare = common::costsim(&[
        "predict", "--hw", "cpu", "--model", "gpt2", "--method", "lora", "--loop", "bare",
    ]);
    assert!(!String::from_utf8_lossy(&bare.stdout).contains(said));
    let steps = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/results/cpu/eager-2026-11-29q/host-here/step/run-2"
    );
    let o = common::costsim(&["validate", "--steps", steps, "--hw", "cpu"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("cpu-generic has no loop-* costs"));
}
