//! `costsim fit` end to end. Each answer is checked through a second path, `costsim predict`'s
//! memory verdict at the answer and one step past it, not against the search itself; the CSV is
//! read back by column name and compared with the JSON.

mod common;

use common::csv_records;
use serde_json::Value;
use std::process::{Command, Output};

fn costsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(args)
        .output()
        .expect("run costsim")
}

fn json(args: &[&str]) -> Value {
    let o = costsim(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON")
}

/// `predict`'s verdict for one method at one size: (fits, peak GiB).
fn predicted_fit(model: &str, hw: &str, method: &str, batch: u64, seq: u64) -> (bool, f64) {
    let v = json(&[
        "predict",
        "--model",
        model,
        "--hw",
        hw,
        "--method",
        method,
        "--batch",
        &batch.to_string(),
        "--seq",
        &seq.to_string(),
        "--format",
        "json",
    ]);
    let p = &v["predictions"][0];
    (
        p["fits"].as_bool().expect("fits"),
        p["peak_memory_bytes"].as_f64().expect("peak") / (1u64 << 30) as f64,
    )
}

#[test]
fn largest_batch_fits_and_the_next_does_not() {
    let rows = json(&[
        "fit",
        "--model",
        "llama2-7b",
        "--hw",
        "a6000",
        "--method",
        "lora",
        "--format",
        "json",
    ]);
    let r = &rows.as_array().expect("rows")[0];
    let b = r["batch"]
        .as_u64()
        .expect("LoRA of llama2-7b fits some batch on an A6000");
    assert_eq!(r["seq"], 512);
    let (fits, peak) = predicted_fit("llama2-7b", "a6000", "lora", b, 512);
    assert!(fits);
    assert!((peak - r["peak_memory_gib"].as_f64().expect("peak")).abs() < 1e-9);
    assert!(!predicted_fit("llama2-7b", "a6000", "lora", b + 1, 512).0);
    // Headroom: 48 GiB − 1 GiB reserve − peak.
    let headroom = r["headroom_gib"].as_f64().expect("headroom");
    assert!(
        (headroom - (48.0 - 1.0 - peak)).abs() < 1e-9,
        "{headroom} {peak}"
    );
}

#[test]
fn longest_sequence_fits_and_the_next_does_not() {
    let rows = json(&[
        "fit",
        "--model",
        "llama2-7b",
        "--hw",
        "a100-80gb-sxm",
        "--method",
        "paca",
        "--find",
        "seq",
        "--batch",
        "16",
        "--format",
        "json",
    ]);
    let r = &rows.as_array().expect("rows")[0];
    let s = r["seq"].as_u64().expect("a sequence fits");
    assert!(s < 4096, "memory, not the 4096 positions, bounds this: {s}");
    assert!(predicted_fit("llama2-7b", "a100-80gb-sxm", "paca", 16, s).0);
    assert!(!predicted_fit("llama2-7b", "a100-80gb-sxm", "paca", 16, s + 1).0);
}

#[test]
fn nothing_fits_is_said_not_hidden() {
    // Full fine-tuning of llama2-7b: 16 B per parameter before activations, over 48 GiB.
    let rows = json(&[
        "fit",
        "--model",
        "llama2-7b",
        "--hw",
        "a6000",
        "--method",
        "full",
        "--format",
        "json",
    ]);
    let r = &rows.as_array().expect("rows")[0];
    assert_eq!(r["fits"], false);
    assert!(r["batch"].is_null());
    assert!(r["step_ms"].is_null());
    assert!(r["headroom_gib"].as_f64().expect("headroom") < 0.0);
}

#[test]
fn smallest_gpu_first_and_every_verdict_matches_predict() {
    let args = [
        "fit",
        "--model",
        "llama2-7b",
        "--find",
        "gpu",
        "--method",
        "lora",
        "--batch",
        "4",
        "--seq",
        "512",
        "--hw",
        "h200,t4,a6000,a100-80gb-sxm",
    ];
    let mut with_json = args.to_vec();
    with_json.extend(["--format", "json"]);
    let rows = json(&with_json);
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 4);
    let caps: Vec<f64> = rows
        .iter()
        .map(|r| r["capacity_gib"].as_f64().expect("capacity"))
        .collect();
    assert!(caps.windows(2).all(|w| w[0] <= w[1]), "{caps:?}");
    assert_eq!(rows[0]["hw"], "t4");
    for r in rows {
        let hw = r["hw"].as_str().expect("hw");
        assert_eq!(
            r["fits"].as_bool(),
            Some(predicted_fit("llama2-7b", hw, "lora", 4, 512).0),
            "{hw}"
        );
    }
    // The same rows as CSV, read back by column name.
    let mut with_csv = args.to_vec();
    with_csv.extend(["--format", "csv"]);
    let o = costsim(&with_csv);
    assert!(o.status.success());
    let csv = csv_records(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(csv.len(), rows.len());
    for (c, j) in csv.iter().zip(rows) {
        assert_eq!(c["hw"], j["hw"].as_str().expect("hw"));
        assert_eq!(c["fits"] == "yes", j["fits"].as_bool().expect("fits"));
        let peak: f64 = c["peak_gib"].parse().expect("peak");
        assert!((peak - j["peak_memory_gib"].as_f64().expect("peak")).abs() < 0.005);
    }
    // The table names the smallest fitting GPU.
    let o = costsim(&args);
    let text = String::from_utf8_lossy(&o.stdout);
    let first_fit = rows
        .iter()
        .find(|r| r["fits"] == true)
        .map(|r| r["hw"].as_str().expect("hw").to_string());
    match first_fit {
        Some(hw) => assert!(
            text.contains(&format!("lora: smallest GPU that fits is {hw}")),
            "{text}"
        ),
        None => assert!(text.contains("lora: fits none"), "{text}"),
    }
}

#[test]
fn options_that_would_do_nothing_are_refused() {
    for (args, needle) in [
        (
            vec!["fit", "--model", "gpt2", "--hw", "t4", "--batch", "4"],
            "--batch is what --find batch searches for",
        ),
        (
            vec!["fit", "--model", "gpt2", "--find", "seq", "--seq", "4"],
            "--seq is what --find seq searches for",
        ),
        (
            vec!["fit", "--model", "gpt2", "--find", "gpu", "--max", "4"],
            "drop --max",
        ),
        (
            vec!["fit", "--model", "gpt2", "--hw", "all,t4"],
            "either all or a list",
        ),
        (
            vec!["fit", "--model", "gpt2", "--hw", "t4", "--max", "0"],
            "at least 1",
        ),
    ] {
        let o = costsim(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}

/// A whole run (--samples) in CSV carries its steps and seconds; the table shows no duration for
/// a method that does not fit. Steps worked by hand: ⌈10,001 / (8 × 4)⌉ = 313; seconds = steps ×
/// step time.
#[test]
fn whole_run_columns_and_no_time_for_what_does_not_fit() {
    let args = [
        "predict",
        "--hw",
        "a6000",
        "--model",
        "llama2-7b",
        "--batch",
        "8",
        "--grad-accum",
        "4",
        "--samples",
        "10001",
    ];
    let mut csv_args = args.to_vec();
    csv_args.extend(["--format", "csv"]);
    let o = costsim(&csv_args);
    assert!(o.status.success());
    let recs = csv_records(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(recs.len(), 5);
    for r in &recs {
        assert_eq!(r["optimizer_steps"], "313", "{}", r["method"]);
        let step_ms: f64 = r["step_ms"].parse().expect("step_ms");
        let secs: f64 = r["run_seconds"].parse().expect("run_seconds");
        assert!(
            (secs - 313.0 * step_ms / 1e3).abs() <= 1e-3 * secs,
            "{secs} {step_ms}"
        );
    }
    let full = recs.iter().find(|r| r["method"] == "full").expect("full");
    assert_eq!(full["fits"], "false");
    let table = String::from_utf8_lossy(&costsim(&args).stdout).into_owned();
    let line = table
        .lines()
        .find(|l| l.starts_with("training time"))
        .expect("a training time line");
    // full (first column) does not fit: no duration; PaCA does: h:mm:ss.
    let cells: Vec<&str> = line["training time".len()..]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells.len(), 5, "{line}");
    assert_eq!(cells[0], "- (does not fit)");
    assert!(cells[2].split(':').count() == 3, "{line}");
    // Scientific notation is a count too.
    let mut sci = args.to_vec();
    let last = sci.len() - 1;
    sci[last] = "1.0001e4";
    sci.extend(["--format", "csv"]);
    let o = costsim(&sci);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        csv_records(&String::from_utf8_lossy(&o.stdout))[0]["optimizer_steps"],
        "313"
    );
}

/// With one price for every GPU, the cheapest per token is the fastest that fits: the table's
/// summary names the GPU with the most tokens per second among the fitting JSON rows, and its
/// cost is price / 3600 / tokens_per_s × 10⁶.
#[test]
fn cheapest_gpu_per_token_at_one_price_is_the_fastest_that_fits() {
    let base = [
        "fit",
        "--model",
        "llama2-7b",
        "--find",
        "gpu",
        "--method",
        "lora",
        "--batch",
        "8",
        "--hw",
        "a100,h100,h200,a6000",
        "--price",
        "2",
    ];
    let mut with_json = base.to_vec();
    with_json.extend(["--format", "json"]);
    let rows = json(&with_json);
    let fastest = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["fits"] == true)
        .max_by(|a, b| {
            a["tokens_per_s"]
                .as_f64()
                .expect("tps")
                .total_cmp(&b["tokens_per_s"].as_f64().expect("tps"))
        })
        .expect("LoRA of llama2-7b fits some of these at batch 8");
    let tps = fastest["tokens_per_s"].as_f64().expect("tps");
    let usd = 2.0 / 3600.0 / tps * 1e6;
    let o = costsim(&base);
    let text = String::from_utf8_lossy(&o.stdout);
    let want = format!(
        "cheapest per token is {} (${:.2} per million tokens)",
        fastest["hw"].as_str().expect("hw"),
        usd
    );
    assert!(text.contains(&want), "{want}\n{text}");
}
