//! Figures the docs quote in prose as what `costsim predict` prints, recomputed from the binary:
//! a model change that moves one fails here until the sentence is updated (a docs audit of
//! 2026-12-02 found thirteen such figures stale). Each figure is formatted as the sentence
//! writes it and looked up verbatim in its page.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test, with its location

mod common;

use common::predict_json;
use serde_json::Value;

fn page(name: &str) -> String {
    let path = format!("{}/docs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap()
}

/// The only prediction of a `predict --format json` run.
fn one(args: &[&str]) -> Value {
    let mut v = predict_json(args);
    v["predictions"][0].take()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// Every phrase must stand in the page, as written there.
fn quoted(page_name: &str, phrases: &[String]) {
    let text = page(page_name)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for p in phrases {
        assert!(text.contains(p.as_str()), "docs/{page_name} lacks: {p}");
    }
}

/// docs/model.md, "What the model does not capture": the skinny-GEMM step at 64 tokens.
#[test]
fn the_skinny_gemm_step_figures() {
    let step = |hw: &str, method: &str, seq: &str| {
        let p = one(&[
            "--hw",
            hw,
            "--model",
            "llama2-7b",
            "--method",
            method,
            "--batch",
            "1",
            "--seq",
            seq,
        ]);
        num(&p, "step_ms")
    };
    let (l4_64, l4_65) = (step("l4", "lora", "64"), step("l4", "lora", "65"));
    let (r_64, r_65) = (step("rtx4090", "full", "64"), step("rtx4090", "full", "65"));
    let pct = |a: f64, b: f64| format!("{:.1}%", (a / b - 1.0) * 100.0);
    quoted(
        "model.md",
        &[
            format!(
                "comes out {} slower than at 1 × 65 ({l4_64:.1} against {l4_65:.1} ms)",
                pct(l4_64, l4_65)
            ),
            format!(
                "full fine-tuning on an RTX 4090 {} slower ({r_64:.1} against {r_65:.1} ms)",
                pct(r_64, r_65)
            ),
        ],
    );
}

/// docs/model.md, "L2: what re-reads could save": two host-bound LoRA steps on the H100.
#[test]
fn the_host_bound_steps_the_l2_bound_cannot_shorten() {
    let figures = |model: &str| {
        let v = predict_json(&["--hw", "h100", "--model", model, "--method", "lora"]);
        let p = &v["predictions"][0];
        let busy: f64 = p["phases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|ph| ph["phase"] != "optimizer")
            .map(|ph| num(ph, "gpu_busy_ms"))
            .sum();
        (num(p, "step_ms"), busy)
    };
    let (t_step, t_busy) = figures("tinyllama-1.1b");
    let (g_step, g_busy) = figures("gpt2-medium");
    quoted(
        "model.md",
        &[
            format!("LoRA step on the H100 ({t_step:.0} ms predicted, {t_busy:.0} ms of it forward and backward device time)"),
            format!("gpt2-medium's ({g_step:.0} ms, {g_busy:.0} ms)"),
        ],
    );
}

/// docs/host.md, "GPU servers": the Trainer loop's work on gpt2-medium at 8 × 512 on an A100.
#[test]
fn the_trainer_loop_figures_of_gpt2_medium() {
    let loop_ms = |method: &str, optimizer: Option<&str>| {
        let mut args = vec!["--hw", "a100", "--model", "gpt2-medium", "--method", method];
        if let Some(o) = optimizer {
            args.extend(["--optimizer", o]);
        }
        let p = one(&args);
        (num(&p, "loop_ms"), num(&p, "loop_host_ms"))
    };
    let (lora, _) = loop_ms("lora", None);
    let (full, full_host) = loop_ms("full", None);
    let (lora_foreach, _) = loop_ms("lora", Some("adamw"));
    let (full_foreach, _) = loop_ms("full", Some("adamw"));
    quoted(
        "host.md",
        &[
            format!("gains {lora:.2} ms per step"),
            format!("full fine-tuning {full:.2} of its {full_host:.2} ms"),
            format!("{lora_foreach:.2} and {full_foreach:.0} ms"),
        ],
    );
}

/// docs/json-schema.md: every key of the JSON `workload` object is listed.
#[test]
fn the_json_workload_keys_are_documented() {
    let v = predict_json(&["--hw", "a100", "--model", "gpt2"]);
    let text = page("json-schema.md");
    let at = text.find("\"workload\":").unwrap();
    let listed = &text[at..at + text[at..].find('}').unwrap()];
    for key in v["workload"].as_object().unwrap().keys() {
        assert!(
            listed.contains(key.as_str()),
            "docs/json-schema.md's workload lacks {key}"
        );
    }
}

fn validate(args: &[&str]) -> String {
    let mut a = vec!["validate"];
    a.extend_from_slice(args);
    common::stdout_ok(&a)
}

/// "NAME MAPE x%  worst y%" of a `validate --from` report, as printed.
fn mape(report: &str, name: &str) -> (String, String) {
    let line = report
        .lines()
        .find(|l| l.starts_with(name) && l.contains("MAPE"))
        .unwrap_or_else(|| panic!("no {name} MAPE in {report}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[2].to_string(), words[4].to_string())
}

/// docs/validation.md, "GPU: one H200 session": the libtorch harness's records re-predicted with
/// today's model and `h200` profile.
#[test]
fn the_h200_libtorch_figures() {
    let root = env!("CARGO_MANIFEST_DIR");
    let report = |m: &str| {
        validate(&[
            "--from",
            &format!("{root}/docs/results/gpu/results-{m}.json"),
            "--hw",
            "h200",
        ])
    };
    let (g, t) = (report("gpt2-medium"), report("tinyllama"));
    let ((gs, gw), (ts, tw)) = (mape(&g, "step "), mape(&t, "step "));
    let ((gb, _), (tb, _)) = (mape(&g, "backward "), mape(&t, "backward "));
    let ((gf, _), (tf, _)) = (mape(&g, "forward "), mape(&t, "forward "));
    quoted(
        "validation.md",
        &[
            format!("Step MAPE {gs} (gpt2-medium; worst {gw}) and {ts} (tinyllama; worst {tw})"),
            format!("backward {gb} and {tb}"),
            format!("forward {gf} and {tf}, unchanged"),
        ],
    );
}

/// docs/host.md's table of the H200's eager MAPEs, today's row, from the 25 timed traces.
#[test]
fn the_h200_eager_timing_figures() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join(format!("costsim-doc-figures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = std::process::Command::new("tar")
        .arg("xzf")
        .arg(format!("{root}/docs/results/gpu/eager-timing-traces.tgz"))
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar xzf");
    let out = validate(&[
        "--trace",
        dir.join("timing").to_str().unwrap(),
        "--hw",
        "h200",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("MAPE over 25 timed traces: "))
        .unwrap_or_else(|| panic!("no MAPE line in {out}"));
    // "forward 20.0%, backward 21.2%, optimizer 19.0%"
    let p: Vec<&str> = line
        .split(", ")
        .map(|s| s.split_whitespace().last().unwrap())
        .collect();
    quoted(
        "host.md",
        &[format!(
            "the device synchronised around it (docs/model.md, \"Timed phase by phase\"; today) | {} | {} | {} |",
            p[0], p[1], p[2]
        )],
    );
}
