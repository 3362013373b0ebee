//! insta snapshots of predicted tables: {a100, a6000} × {gpt2-medium, gpt2-xl, tinyllama-1.1b,
//! llama2-7b} × {full, lora, paca, paca-upper-half, paca-three-quarters}, each at batch 4 and 8,
//! seq 512 and 1024. The snapshots are golden files: they catch a change, not an error. Some of
//! their numbers were worked by hand against docs/model.md — docs/snapshot-checks.md lists
//! exactly which files and which numbers (two configurations from the formulas, seven files for
//! single numbers or changes; not the other 31, and no activation figure). The shape claims that
//! doc makes about every snapshot configuration are asserted below. Every configuration names
//! the foreach AdamW (`--optimizer adamw`), with which they were worked out: a Trainer's
//! default became the fused one on 2026-12-01 (tests/cli.rs checks the defaults).

use serde_json::Value;
use std::process::Command;

const HWS: [&str; 2] = ["a100", "a6000"];
const MODELS: [&str; 4] = ["gpt2-medium", "gpt2-xl", "tinyllama-1.1b", "llama2-7b"];

fn predict(hw: &str, model: &str, method: &str, batch: u32, seq: u32) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(["predict", "--hw", hw, "--model", model, "--method", method])
        .args(["--batch", &batch.to_string(), "--seq", &seq.to_string()])
        .args(["--optimizer", "adamw"])
        .output()
        .expect("run costsim");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn predicted_tables() {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots");
    let _guard = settings.bind_to_scope();
    let mut names = Vec::new();
    for hw in HWS {
        for model in MODELS {
            for method in [
                "full",
                "lora",
                "paca",
                "paca-upper-half",
                "paca-three-quarters",
            ] {
                let mut text = String::new();
                for batch in [4, 8] {
                    for seq in [512, 1024] {
                        text.push_str(&predict(hw, model, method, batch, seq));
                        text.push('\n');
                    }
                }
                let name = format!("{hw}__{model}__{method}");
                insta::assert_snapshot!(name.clone(), text);
                names.push(format!("{name}.snap"));
            }
        }
    }
    // No stale snapshot may linger (what `cargo insta test --unreferenced reject` checks).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots");
    for entry in std::fs::read_dir(dir).expect("snapshot dir") {
        let file = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if file.ends_with(".snap") {
            assert!(
                names.contains(&file),
                "unreferenced snapshot {file}: delete it"
            );
        }
    }
}

/// All five methods of one snapshot configuration, by method name.
fn predict_all(hw: &str, model: &str, batch: u32, seq: u32) -> Vec<(String, Value)> {
    let out = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(["predict", "--hw", hw, "--model", model, "--format", "json"])
        .args(["--batch", &batch.to_string(), "--seq", &seq.to_string()])
        .args(["--optimizer", "adamw"])
        .output()
        .expect("run costsim");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| (p["method"].as_str().expect("method").to_string(), p.clone()))
        .collect()
}

/// docs/snapshot-checks.md "Shape checks across the grid", on every snapshot configuration.
#[test]
fn shape_claims_hold_in_every_snapshot_configuration() {
    let mut checked = 0;
    for hw in HWS {
        for model in MODELS {
            let at = |b, s| predict_all(hw, model, b, s);
            let grid = [
                ((4, 512), at(4, 512)),
                ((4, 1024), at(4, 1024)),
                ((8, 512), at(8, 512)),
                ((8, 1024), at(8, 1024)),
            ];
            for ((b, s), preds) in &grid {
                let id = format!("{hw} {model} {b}x{s}");
                let get = |m: &str, field: &str| -> f64 {
                    let p = &preds.iter().find(|(n, _)| n == m).expect(m).1;
                    p[field].as_f64().expect(field)
                };
                assert!(
                    get("lora", "forward_ms") > get("full", "forward_ms"),
                    "{id}: LoRA's forward is slower than full's"
                );
                assert!(
                    get("paca", "backward_ms") < get("full", "backward_ms"),
                    "{id}: PaCA's backward is faster than full's"
                );
                for sel in ["paca-upper-half", "paca-three-quarters"] {
                    assert!(
                        get(sel, "backward_ms") < get("paca", "backward_ms"),
                        "{id}: {sel}'s backward is faster than PaCA's"
                    );
                }
                // Doubling the batch or the sequence raises FLOPs, bytes and step time.
                for (b2, s2) in [(2 * b, *s), (*b, 2 * s)] {
                    let Some((_, bigger)) = grid.iter().find(|(k, _)| *k == (b2, s2)) else {
                        continue;
                    };
                    for (m, p) in preds {
                        let q = &bigger.iter().find(|(n, _)| n == m).expect("method").1;
                        for field in ["flops", "bytes", "step_ms"] {
                            let (x, y) = (p[field].as_f64().unwrap(), q[field].as_f64().unwrap());
                            assert!(y > x, "{id} → {b2}x{s2} {m}: {field} {x} → {y}");
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    // 2 GPUs × 4 models × 4 doublings (4×512 → 8×512 and 4×1024; 4×1024 → 8×1024;
    // 8×512 → 8×1024) × 5 methods.
    assert_eq!(checked, 2 * 4 * 4 * 5);
}
