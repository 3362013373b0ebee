//! `costsim sweep` and `costsim crossover` end to end: every sweep row equals `costsim predict`
//! of its point, files are written atomically, bad ranges are usage errors, and a crossover is
//! found and explained where single predictions put it.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test, with its location

mod common;

use common::{costsim, csv_records, f, predict_json, predict_point, stdout_ok as ok, tmp_in};
use serde_json::Value;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    tmp_in("sweep-cli", name)
}

/// A sweep row (CSV cells or JSON fields, read by name through `num` / `text`) against
/// `costsim predict` of the same point, field by field. `tol` is the absolute tolerance of the
/// millisecond columns (CSV keeps 6 decimals), relative where `None`.
fn assert_row_matches_predict(
    num: &dyn Fn(&str) -> f64,
    text: &dyn Fn(&str) -> String,
    tol: Option<f64>,
) {
    let p = predict_point(
        &text("model"),
        &text("hw"),
        &text("method"),
        num("rank") as u64,
        num("batch") as u64,
        num("seq") as u64,
    );
    let id = format!(
        "{} {} {} r{} {}x{}",
        text("model"),
        text("hw"),
        text("method"),
        text("rank"),
        text("batch"),
        text("seq")
    );
    for col in ["step_ms", "forward_ms", "backward_ms", "optimizer_ms"] {
        let (got, want) = (num(col), p[col].as_f64().unwrap());
        let ok = match tol {
            Some(t) => (got - want).abs() <= t,
            None => (got - want).abs() <= 1e-9 * want.abs(),
        };
        assert!(ok, "{id}: {col} {got} vs predict {want}");
    }
    let tps = p["tokens_per_s"].as_f64().unwrap();
    assert!(
        (num("tokens_per_s") - tps).abs() <= 0.5 + 1e-9 * tps,
        "{id}: tokens_per_s"
    );
    let gib = p["peak_memory_bytes"].as_f64().unwrap() / 1073741824.0;
    assert!(
        (num("peak_memory_gib") - gib).abs() <= 0.005 + 1e-9 * gib,
        "{id}: peak"
    );
    assert_eq!(
        num("trainable_params"),
        p["trainable_params"].as_f64().unwrap(),
        "{id}"
    );
    assert_eq!(num("rank"), p["rank"].as_f64().unwrap(), "{id}");
    assert_eq!(
        text("train_layers"),
        p["trained_layers"].as_str().unwrap(),
        "{id}"
    );
    assert_eq!(
        text("dominant_bound"),
        p["dominant_bound"].as_str().unwrap(),
        "{id}"
    );
    // grad_accum 1: forward + backward + optimizer launches.
    let k = &p["kernels"];
    let launches = ["forward", "backward", "optimizer"]
        .iter()
        .map(|ph| k[ph].as_f64().unwrap())
        .sum::<f64>();
    assert_eq!(num("kernels_per_step"), launches, "{id}");
    let status = if p["fits"].as_bool().unwrap() {
        "ok"
    } else {
        "out-of-memory"
    };
    assert_eq!(text("status"), status, "{id}");
}

#[test]
fn sweep_csv_has_one_row_per_point() {
    let csv = ok(&[
        "sweep",
        "--model",
        "gpt2,tinyllama-1.1b",
        "--hw",
        "a100,l4",
        "--method",
        "full,lora",
        "--seq",
        "512..2048:x2",
        "--batch",
        "1,4",
        "--rank",
        "8,16",
        "--format",
        "csv",
    ]);
    assert!(csv.starts_with("model,hw,method,batch,seq,rank,"));
    let recs = csv_records(&csv);
    // full: 1 rank, lora: 2 → 3 × 2 models × 2 hw × 3 seq × 2 batch = 72 points, each once.
    assert_eq!(recs.len(), 72);
    let mut points: Vec<String> = recs
        .iter()
        .map(|r| {
            ["model", "hw", "method", "batch", "seq", "rank"]
                .map(|c| common::s(r, c).to_string())
                .join(" ")
        })
        .collect();
    points.sort();
    points.dedup();
    assert_eq!(points.len(), 72);
    // gpt2 has 1024 positions: seq 2048 rows are invalid and say why; every other row is a
    // prediction.
    for r in &recs {
        let seq = f(r, "seq");
        let gpt2 = common::s(r, "model") == "gpt2";
        if gpt2 && seq == 2048.0 {
            assert_eq!(common::s(r, "status"), "invalid", "{r:?}");
            assert!(common::s(r, "message").contains("positions"), "{r:?}");
            assert_eq!(common::s(r, "step_ms"), "", "an empty field, not \"-\"");
        } else {
            assert_ne!(common::s(r, "status"), "invalid", "{r:?}");
            assert_eq!(common::s(r, "message"), "");
        }
        assert_eq!(common::s(r, "precision"), "bf16-mixed");
        let rank = f(r, "rank");
        match common::s(r, "method") {
            "full" => assert_eq!(rank, 0.0),
            "lora" => assert!(rank == 8.0 || rank == 16.0),
            m => panic!("unexpected method {m}"),
        }
    }
    assert_eq!(
        recs.iter()
            .filter(|r| common::s(r, "status") == "invalid")
            .count(),
        3 * 2 * 2
    );
    // Every valid point agrees with `costsim predict`, column by column (six decimals).
    for r in recs.iter().filter(|r| common::s(r, "status") != "invalid") {
        assert_row_matches_predict(
            &|c| f(r, c),
            &|c| common::s(r, c).to_string(),
            Some(5e-7 + 1e-6),
        );
    }
}

#[test]
fn sweep_writes_json_atomically_and_rejects_bad_ranges() {
    let out = tmp("sweep.json");
    let o = costsim(&[
        "sweep",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--seq",
        "128..512:+128",
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut t = out.as_os_str().to_owned();
    t.push(".tmp");
    assert!(!PathBuf::from(t).exists(), "no temporary file left");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = v.as_array().unwrap();
    // 4 seq values × (full + 4 ranked methods with one rank each).
    assert_eq!(rows.len(), 4 * 5);
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    for s in [128, 256, 384, 512] {
        assert_eq!(seqs.iter().filter(|&&x| x == s).count(), 5, "seq {s}");
    }
    // Every row agrees with `costsim predict` of its point, field by field.
    for r in rows {
        assert_eq!(r["precision"], "bf16-mixed");
        assert_row_matches_predict(
            &|c| r[c].as_f64().unwrap_or_else(|| panic!("{c} in {r}")),
            &|c| match &r[c] {
                Value::String(s) => s.clone(),
                x => x.to_string(),
            },
            None,
        );
    }
    for bad in ["4..1", "1..8:x1", "a"] {
        let o = costsim(&["sweep", "--model", "gpt2", "--hw", "a100", "--seq", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--seq"));
    }
}

#[test]
fn sweep_hw_all_is_every_built_in_gpu() {
    // The GPUs `costsim hardware` lists (every profile with SMs, not the CPU), in its order.
    let listed = ok(&["hardware"]);
    let gpus: Vec<&str> = listed
        .lines()
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.contains("NVIDIA"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(gpus.len(), 13, "{listed}");
    let csv = ok(&[
        "sweep", "--model", "gpt2", "--hw", "all", "--method", "lora", "--seq", "256", "--batch",
        "2", "--rank", "8", "--format", "csv",
    ]);
    let recs = csv_records(&csv);
    let hws: Vec<&str> = recs.iter().map(|r| common::s(r, "hw")).collect();
    assert_eq!(hws, gpus);
    for r in &recs {
        assert_row_matches_predict(
            &|c| f(r, c),
            &|c| common::s(r, c).to_string(),
            Some(5e-7 + 1e-6),
        );
    }
    // `all` is the whole list or nothing.
    let o = costsim(&[
        "sweep", "--model", "gpt2", "--hw", "all,h200", "--seq", "256",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--hw all"));
}

#[test]
fn crossover_finds_and_explains_the_seq_crossing() {
    // gpt2-large in a hand-written loop: under a Trainer LoRA is slower throughout (README).
    let text = ok(&[
        "crossover",
        "--model",
        "gpt2-large",
        "--hw",
        "a100",
        "--vary",
        "seq",
        "--loop",
        "bare",
    ]);
    assert!(text.contains("LoRA vs full"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("Crossover between seq") && l.contains("slower than full"))
        .expect("a crossing where LoRA becomes slower than full");
    assert!(line.contains("LoRA becomes slower than full"), "{line}");
    assert!(text.contains("Driven by adapter kernels"), "{text}");
    let v: Value = serde_json::from_str(&ok(&[
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
    ]))
    .unwrap();
    // The crossing where LoRA becomes slower than full fine-tuning (ratio rises through 1).
    let x = v["comparisons"][0]["crossings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["ratio_before"].as_f64().unwrap() < 1.0)
        .expect("a crossing where LoRA becomes slower");
    let (before, after) = (x["before"].as_u64().unwrap(), x["after"].as_u64().unwrap());
    assert_eq!(after, before + 1);
    // Check the bracket with two direct predictions on either side.
    let ratio = |seq: u64| {
        let s = seq.to_string();
        let l = predict_json(&[
            "--model",
            "gpt2-large",
            "--hw",
            "a100",
            "--method",
            "lora",
            "--seq",
            &s,
            "--loop",
            "bare",
        ]);
        let f = predict_json(&[
            "--model",
            "gpt2-large",
            "--hw",
            "a100",
            "--method",
            "full",
            "--seq",
            &s,
            "--loop",
            "bare",
        ]);
        l["predictions"][0]["step_ms"].as_f64().unwrap()
            / f["predictions"][0]["step_ms"].as_f64().unwrap()
    };
    assert!(ratio(before) < 1.0 && ratio(after) >= 1.0);
}

/// A model named twice counts once (`--model gpt2,gpt2` gives gpt2's rows once); two different
/// models under one name, a preset and a config.json named after it, are a usage error naming
/// both (an audit found their rows printed under one name, 2026-11-30).
#[test]
fn models_are_distinct_by_name() {
    let rows = |models: &str| {
        csv_records(&ok(&[
            "sweep", "--model", models, "--hw", "a100", "--method", "lora", "--format", "csv",
        ]))
        .len()
    };
    assert_eq!(rows("gpt2,gpt2"), rows("gpt2"));
    assert_eq!(rows("gpt2,gpt2-medium"), 2 * rows("gpt2"));
    let cfg = tmp("gpt2.json");
    std::fs::write(
        &cfg,
        br#"{"model_type": "gpt2", "n_embd": 256, "n_layer": 4, "n_head": 4,
            "vocab_size": 50257, "n_positions": 1024}"#,
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    common::usage_error(
        &[
            "sweep",
            "--model",
            "gpt2",
            "--model-config",
            cfg,
            "--hw",
            "a100",
            "--method",
            "lora",
        ],
        &["--model gpt2", cfg, "'gpt2'"],
    );
    // The config alone is fine.
    assert_eq!(
        csv_records(&ok(&[
            "sweep",
            "--model-config",
            cfg,
            "--hw",
            "a100",
            "--method",
            "lora",
            "--format",
            "csv",
        ]))[0]["model"],
        "gpt2"
    );
}

/// A crossover whose PaCA comparison has no two valid values (gpt2's width 768 holds at most
/// 384 ranks' 2r columns) still reports LoRA against full fine-tuning, and says of PaCA how
/// many values were skipped and why; where PaCA loses one value, the table says so instead of
/// dropping the row silently (an audit found both, 2026-11-30).
#[test]
fn crossover_says_what_paca_skipped() {
    let args = [
        "crossover",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--vary",
        "rank",
    ];
    let with = |range: &'static str| -> Vec<&'static str> {
        let mut a = args.to_vec();
        a.extend(["--range", range]);
        a
    };
    let text = ok(&with("500..768"));
    assert!(text.contains("LoRA vs full"), "{text}");
    assert!(
        text.contains("skipped 269 values of rank from 500 to 768 for paca; at 500:"),
        "{text}"
    );
    assert!(
        text.contains("No comparison: 0 of the 269 values"),
        "{text}"
    );
    let text = ok(&with("128..512:x2"));
    assert!(text.contains("skipped rank 512 for paca: "), "{text}");
    let mut json = with("128..512:x2");
    json.extend(["--format", "json"]);
    let v: Value = serde_json::from_str(&ok(&json)).unwrap();
    assert_eq!(v["comparisons"][1]["other"], "paca");
    assert_eq!(v["comparisons"][1]["skipped"][0][0], 512);
    assert_eq!(v["comparisons"][1]["points"].as_array().unwrap().len(), 2);
    assert_eq!(v["skipped"].as_array().unwrap().len(), 0);
}

/// The rank column is the rank the method trains on every row, valid or not: PaCA's matched
/// column count 2r (an audit found invalid rows holding the LoRA reference rank, 2026-11-30).
#[test]
fn the_rank_column_is_the_trained_rank_on_invalid_rows_too() {
    let rows = csv_records(&ok(&[
        "sweep",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--method",
        "paca,lora",
        "--rank",
        "383..386",
        "--format",
        "csv",
    ]));
    let got: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["method"].as_str(),
                r["rank"].as_str(),
                r["status"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("paca", "766", "ok"),
            ("paca", "768", "ok"),
            ("paca", "770", "invalid"),
            ("paca", "772", "invalid"),
            ("lora", "383", "ok"),
            ("lora", "384", "ok"),
            ("lora", "385", "ok"),
            ("lora", "386", "ok"),
        ]
    );
}

/// `crossover --vary seq` without --range on a model of fewer than 128 positions runs from half
/// its positions (16 and 32 for 32 positions), where the default 64.. ran backwards and blamed
/// a --range never given (an audit, 2026-11-30).
#[test]
fn crossover_default_seq_range_fits_a_short_model() {
    let cfg = common::short_llama_config("sweep-cli", "pos32.json", 32);
    let v: Value = serde_json::from_str(&ok(&[
        "crossover",
        "--model-config",
        &cfg,
        "--hw",
        "a100",
        "--vary",
        "seq",
        "--format",
        "json",
    ]))
    .unwrap();
    let seqs: Vec<u64> = v["comparisons"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [16, 32]);
}

/// A layer selection given twice counts once, as a value of any other axis does.
#[test]
fn layer_selections_are_distinct() {
    let rows = |sel: &str| {
        csv_records(&ok(&[
            "sweep",
            "--model",
            "gpt2",
            "--hw",
            "a100",
            "--method",
            "lora",
            "--train-layers",
            sel,
            "--format",
            "csv",
        ]))
        .len()
    };
    assert_eq!(rows("all;all;upper:0.5"), 2);
    assert_eq!(rows("all;upper:0.5"), 2);
}
