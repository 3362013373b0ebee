//! insta snapshots of predicted tables: {a100, a6000} × {gpt2-medium, gpt2-xl, tinyllama-1.1b,
//! llama2-7b} × {full, lora, paca, paca-upper-half, paca-three-quarters}, each at batch 4 and 8,
//! seq 512 and 1024. Each snapshot was checked by hand against docs/model.md before acceptance
//! (docs/snapshot-checks.md records the checks).

use std::process::Command;

fn predict(hw: &str, model: &str, method: &str, batch: u32, seq: u32) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(["predict", "--hw", hw, "--model", model, "--method", method])
        .args(["--batch", &batch.to_string(), "--seq", &seq.to_string()])
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
    for hw in ["a100", "a6000"] {
        for model in ["gpt2-medium", "gpt2-xl", "tinyllama-1.1b", "llama2-7b"] {
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
