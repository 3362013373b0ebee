//! The README's worked crossover (gpt2-medium on an A100, batch 8, along the sequence) quotes
//! the tool's own figures; this test recomputes them so the page cannot drift from the model.

use serde_json::Value;
use std::process::Command;

#[test]
fn readme_crossover_figures_are_the_tools() {
    let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args([
            "crossover",
            "--model",
            "gpt2-medium",
            "--hw",
            "a100",
            "--vary",
            "seq",
            "--format",
            "json",
        ])
        .output()
        .expect("run costsim");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let full = v["comparisons"]
        .as_array()
        .expect("comparisons")
        .iter()
        .find(|c| c["other"] == "full")
        .expect("LoRA vs full");
    let crossings = full["crossings"].as_array().expect("crossings");
    assert_eq!(crossings.len(), 2, "LoRA wins, then loses again");
    let part = |grid: &Value, name: &str| -> f64 {
        grid["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["ms"].as_f64())
            .unwrap_or_else(|| panic!("no part {name}"))
    };
    let (win, lose) = (&crossings[0], &crossings[1]);
    assert_eq!(win["lora_becomes_faster"], true);
    assert_eq!(lose["lora_becomes_faster"], false);
    let at512 = &lose["grid_before"];
    let at1024 = &lose["grid_after"];
    assert_eq!(
        (at512["value"].as_u64(), at1024["value"].as_u64()),
        (Some(512), Some(1024))
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let text = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let bytes = "adapter kernels: bytes (memory-bound)";
    for quoted in [
        format!("From seq {} full", win["after"]),
        format!("{:.1} ms more than LoRA's", -part(at512, "optimizer")),
        format!(
            "({:.1} ms at seq 512, {:.1} ms at 1024)",
            part(at512, bytes),
            part(at1024, bytes)
        ),
        format!(
            "({:.1} → {:.1} ms)",
            -part(at512, "kernels LoRA avoids"),
            -part(at1024, "kernels LoRA avoids")
        ),
        format!("from seq {} LoRA is slower again", lose["after"]),
    ] {
        assert!(text.contains(&quoted), "README lacks: {quoted}");
    }
}
