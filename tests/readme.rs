//! The README's worked crossover (gpt2-large on an A100, batch 8, along the sequence) quotes
//! the tool's own figures, under a Trainer and in a bare loop; this test recomputes them so the
//! page cannot drift from the model.

use serde_json::Value;
use std::process::Command;

#[test]
fn readme_crossover_figures_are_the_tools() {
    let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args([
            "crossover",
            "--model",
            "gpt2-large",
            "--hw",
            "a100",
            "--vary",
            "seq",
            "--loop",
            "bare",
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

fn json(args: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(args)
        .output()
        .expect("run costsim");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

#[test]
fn readme_trainer_figures_are_the_tools() {
    let v = json(&[
        "crossover",
        "--model",
        "gpt2-large",
        "--hw",
        "a100",
        "--vary",
        "seq",
        "--format",
        "json",
    ]);
    let full = v["comparisons"]
        .as_array()
        .expect("comparisons")
        .iter()
        .find(|c| c["other"] == "full")
        .expect("LoRA vs full");
    assert!(
        full["crossings"].as_array().expect("crossings").is_empty(),
        "LoRA is slower throughout under a Trainer"
    );
    let points = full["points"].as_array().expect("points");
    assert!(points.iter().all(|p| p[3].as_f64().unwrap() > 1.0));
    let at512 = points.iter().find(|p| p[0] == 512).expect("seq 512");
    let pred = |method: &str| {
        json(&[
            "predict",
            "--model",
            "gpt2-large",
            "--hw",
            "a100",
            "--batch",
            "8",
            "--seq",
            "512",
            "--method",
            method,
            "--format",
            "json",
        ])["predictions"][0]
            .clone()
    };
    let (lora, full) = (pred("lora"), pred("full"));
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let text = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let ms = |p: &Value, k: &str| p[k].as_f64().unwrap();
    for quoted in [
        format!("(ratio {:.2} at seq 512)", at512[3].as_f64().unwrap()),
        format!(
            "{} for LoRA against full's {}",
            lora["nn_modules"], full["nn_modules"]
        ),
        format!(
            "{:.2} ms of host work per LoRA step",
            ms(&lora, "loop_host_ms")
        ),
        format!("{:.2} ms of it with the GPU idle", ms(&lora, "loop_ms")),
        format!(
            "while full's {:.2} ms leave it idle for {:.2} ms",
            ms(&full, "loop_host_ms"),
            ms(&full, "loop_ms")
        ),
    ] {
        assert!(text.contains(&quoted), "README lacks: {quoted}");
    }
    // Part of full's loop work hides behind its optimizer's kernels.
    assert!(ms(&full, "loop_ms") > 0.0 && ms(&full, "loop_ms") < ms(&full, "loop_host_ms"));
}

/// The README's two example outputs are what `costsim predict` prints today: each fenced block
/// follows the command it quotes (found in the backticks before it).
#[test]
fn readme_example_outputs_are_the_tools() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let examples = [
        (
            "`costsim predict --hw a100 --model llama2-7b --method paca`:",
            vec!["--hw", "a100", "--model", "llama2-7b", "--method", "paca"],
        ),
        (
            "(`costsim predict\n--hw a100 --model gpt2-medium --batch 4 --seq 512`)",
            vec![
                "--hw",
                "a100",
                "--model",
                "gpt2-medium",
                "--batch",
                "4",
                "--seq",
                "512",
            ],
        ),
    ];
    for (quote, args) in examples {
        let at = readme
            .find(quote)
            .unwrap_or_else(|| panic!("README lacks {quote}"));
        let open = at + readme[at..].find("```\n").expect("a fenced block") + 4;
        let close = open + readme[open..].find("```").expect("its end");
        let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
            .arg("predict")
            .args(&args)
            .output()
            .expect("run costsim");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            &readme[open..close],
            String::from_utf8_lossy(&o.stdout),
            "README's output of {args:?}"
        );
    }
}
