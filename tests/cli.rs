//! End-to-end tests of the costsim binary: bad input gives exit code 2 and a message naming the
//! problem and the fix; outputs carry the documented fields and agree across formats; the
//! memory verdict is peak + the 1 GiB reserve against capacity, and the paper's memory facts hold
//! (full fine-tuning of llama2-7b does not fit an A6000; the paper's PaCA setup on it does).

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test, with its location

mod common;

use common::{costsim, csv_records, f, stderr, stdout, usage_error};
use serde_json::Value;
use std::io::Write;

#[test]
fn unknown_model_lists_known_and_nearest() {
    usage_error(
        &["predict", "--hw", "a100", "--model", "llama2-7"],
        &[
            "unknown model 'llama2-7'",
            "did you mean 'llama2-7b'",
            "mistral-7b",
            "--model-config",
        ],
    );
}

#[test]
fn unknown_gpu_lists_known_and_nearest() {
    usage_error(
        &["predict", "--hw", "a6001", "--model", "gpt2"],
        &[
            "unknown GPU 'a6001'",
            "did you mean 'a6000'",
            "h200",
            "--hw FILE.toml",
        ],
    );
}

#[test]
fn bad_numbers_are_rejected() {
    let base = ["predict", "--hw", "a100", "--model", "gpt2"];
    let with = |extra: &[&'static str]| [&base[..], extra].concat();
    usage_error(
        &with(&["--method", "lora", "--rank", "0"]),
        &["--rank", "at least 1"],
    );
    usage_error(
        &with(&["--method", "paca", "--rank", "5000"]),
        &["exceeds the input width 768"],
    );
    usage_error(&with(&["--batch", "0"]), &["--batch", "at least 1"]);
    usage_error(
        &with(&["--seq", "2048"]),
        &["exceeds gpt2's 1024 positions", "--seq 1024"],
    );
    usage_error(
        &with(&["--train-layers", "last:99"]),
        &["last:99", "between 1 and 12"],
    );
    usage_error(
        &with(&["--targets", "lm_head"]),
        &["unknown target 'lm_head'"],
    );
    usage_error(
        &with(&["--method", "lora", "--dropout", "1.5"]),
        &["dropout 1.5"],
    );
    usage_error(
        &with(&["--batch", "9223372036854775807", "--seq", "1000"]),
        &["2^40 tokens"],
    );
    usage_error(&with(&["--train-layers", "upper:NaN"]), &["fraction"]);
    // clap's own errors also exit with 2
    usage_error(&with(&["--batch", "-3"]), &["-3"]);
}

#[test]
fn malformed_files_name_path_and_line() {
    let dir = std::env::temp_dir().join(format!("costsim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.json");
    std::fs::File::create(&cfg)
        .unwrap()
        .write_all(b"{\n  \"model_type\": \"llama\",\n  oops\n}")
        .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    usage_error(
        &["predict", "--hw", "a100", "--model-config", cfg_s],
        &[cfg_s, "line 3"],
    );
    std::fs::write(&cfg, br#"{"model_type": "t5"}"#).unwrap();
    usage_error(
        &["predict", "--hw", "a100", "--model-config", cfg_s],
        &["\"t5\" is not supported"],
    );
    let toml = dir.join("gpu.toml");
    std::fs::write(&toml, "[device]\nname = \"x\"\nsms = -\n").unwrap();
    let toml_s = toml.to_str().unwrap();
    usage_error(
        &["predict", "--hw", toml_s, "--model", "gpt2"],
        &[toml_s, "line 3"],
    );
    usage_error(
        &["predict", "--hw", "/nonexistent/x.toml", "--model", "gpt2"],
        &["cannot read"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn custom_profile_and_config_are_used() {
    let dir = std::env::temp_dir().join(format!("costsim-cli-ok-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tiny")).unwrap();
    let prof = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/hardware/profiles/a100-80gb-sxm.toml"
    ))
    .unwrap();
    let half = prof
        .replace("bandwidth-gbps = 2039", "bandwidth-gbps = 1019.5")
        .replace("name = \"a100-80gb-sxm\"", "name = \"slow-a100\"");
    let toml = dir.join("slow.toml");
    std::fs::write(&toml, half).unwrap();
    let cfg = dir.join("tiny/config.json");
    std::fs::write(&cfg, r#"{"model_type":"gpt2","n_embd":768,"n_layer":12,"n_head":12,"vocab_size":50257,"n_positions":1024}"#).unwrap();
    let run = |hw: &str| {
        let o = costsim(&[
            "predict",
            "--hw",
            hw,
            "--model-config",
            cfg.to_str().unwrap(),
            "--method",
            "full",
            "--format",
            "json",
            // The foreach AdamW's twenty passes over the states: bandwidth-bound.
            "--optimizer",
            "adamw",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v
    };
    let fast = run("a100");
    let slow = run(toml.to_str().unwrap());
    assert_eq!(fast["model"]["name"], "tiny");
    assert_eq!(slow["hardware"]["name"], "slow-a100");
    let opt = |v: &serde_json::Value| v["predictions"][0]["optimizer_ms"].as_f64().unwrap();
    // The optimizer is bandwidth-bound: halving bandwidth must slow it down.
    assert!(
        opt(&slow) > 1.5 * opt(&fast),
        "{} vs {}",
        opt(&slow),
        opt(&fast)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A Mistral config.json with a sliding window of 16 (the one the committed traces ran): SDPA is
/// refused from seq 16 on (exit 2, naming the window, the longest modelled sequence and the ways
/// out), costed below it with the window in the JSON's model; eager attention is costed at any
/// length, with five more kernels a step than the same config without a window.
#[test]
fn a_sliding_window_is_read_and_sdpa_past_it_refused() {
    let cfg = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/results/models/mistral-tiny/config.json"
    );
    let base = [
        "predict",
        "--hw",
        "h200",
        "--model-config",
        cfg,
        "--method",
        "lora",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { [&base[..], extra].concat() };
    usage_error(
        &with(&["--seq", "16"]),
        &[
            "--seq",
            "sliding window of 16",
            "--seq 15 or less",
            "--attention eager",
        ],
    );
    let json = |args: Vec<&str>| -> Value {
        let o = costsim(&[&args[..], &["--format", "json"]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).expect("JSON")
    };
    let below = json(with(&["--seq", "15"]));
    assert_eq!(below["model"]["sliding_window"], 16);
    let eager = json(with(&["--seq", "64", "--attention", "eager"]));
    let dir = std::env::temp_dir().join(format!("costsim-window-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("mistral-tiny")).unwrap();
    let plain = dir.join("mistral-tiny/config.json");
    let text = std::fs::read_to_string(cfg).unwrap();
    std::fs::write(
        &plain,
        text.replace("\"sliding_window\": 16", "\"sliding_window\": null"),
    )
    .unwrap();
    let o = costsim(&[
        "predict",
        "--hw",
        "h200",
        "--model-config",
        plain.to_str().unwrap(),
        "--method",
        "lora",
        "--seq",
        "64",
        "--attention",
        "eager",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let causal: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(causal["model"].get("sliding_window").is_none());
    let kernels = |v: &Value, phase: &str| {
        v["predictions"][0]["kernels"][phase]
            .as_u64()
            .expect("kernels")
    };
    assert_eq!(kernels(&eager, "forward"), kernels(&causal, "forward") + 5);
    assert_eq!(kernels(&eager, "backward"), kernels(&causal, "backward"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn json_carries_the_documented_fields() {
    let o = costsim(&[
        "predict",
        "--hw",
        "a100",
        "--model",
        "tinyllama-1.1b",
        "--format",
        "json",
        "--per-layer",
        "--kernels",
        "--batch",
        "1",
        "--seq",
        "128",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        !text.contains("NaN") && !text.contains("inf"),
        "non-finite number in JSON"
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let preds = v["predictions"].as_array().unwrap();
    let methods: Vec<&str> = preds
        .iter()
        .map(|p| p["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "full",
            "lora",
            "paca",
            "paca-upper-half",
            "paca-three-quarters"
        ]
    );
    for p in preds {
        for key in [
            "method",
            "trainable_params",
            "kernels",
            "flops",
            "bytes",
            "forward_ms",
            "backward_ms",
            "optimizer_ms",
            "loop_ms",
            "loop_host_ms",
            "step_ms",
            "tokens_per_s",
            "peak_memory_bytes",
            "fits",
            "per_layer",
            "kernel_rows",
        ] {
            assert!(p.get(key).is_some(), "missing {key}");
        }
        for phase in ["forward", "backward", "optimizer"] {
            assert!(p["kernels"][phase].as_u64().is_some());
        }
        let rows = p["per_layer"].as_array().unwrap();
        // embedding, 22 blocks, head, optimizer, and the Trainer loop (pytorch-eager's default)
        assert_eq!(rows.len(), 22 + 4);
        assert_eq!(rows[25]["scope"], "loop");
        let k = &p["kernel_rows"][0];
        for key in [
            "name",
            "module",
            "kind",
            "flops",
            "bytes_read",
            "bytes_written",
            "dtype",
            "launches",
            "deps",
            "bound",
            "l2_reread_bytes",
            "l2_bound_us",
        ] {
            assert!(k.get(key).is_some(), "kernel row missing {key}");
        }
    }
    // Module paths join with PyTorch's names.
    assert!(text.contains("\"model.layers.3.self_attn.q_proj.lora_A\""));
}

#[test]
fn full_ft_llama2_7b_does_not_fit_an_a6000() {
    let o = costsim(&[
        "predict",
        "--hw",
        "a6000",
        "--model",
        "llama2-7b",
        "--method",
        "full",
        "--format",
        "json",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &v["predictions"][0];
    assert_eq!(p["fits"], false);
    // Weights + gradients + two AdamW states in fp32: 16 bytes × 6.74 B params alone exceed 48 GiB.
    let short = p["memory"]["shortfall_bytes"].as_f64().unwrap();
    assert!(short > 16.0 * 6.738e9 - 48.0 * 1073741824.0, "{short}");
    let t = costsim(&[
        "predict",
        "--hw",
        "a6000",
        "--model",
        "llama2-7b",
        "--method",
        "full",
    ]);
    assert!(stdout(&t).contains("no, short"));
}

const GIB: f64 = 1073741824.0;

fn json_of(args: &[&str]) -> Value {
    let o = costsim(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// The value column of a `predict` text table's line whose label is `label` (one method).
fn table_value(text: &str, label: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with(label) && l[label.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no line '{label}' in {text}"));
    line[label.len()..].trim().to_string()
}

#[test]
fn paper_setup_is_one_command() {
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
        "--seq",
        "512",
        "--samples",
        "10000",
        "--method",
        "paca-three-quarters",
    ];
    let o = costsim(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s = stdout(&o);
    // 10,000 samples / (8 × 4) per step = 312.5 → 313 optimizer steps.
    assert_eq!(table_value(&s, "optimizer steps"), "313", "{s}");
    // The paper ran this setup on an A6000: it must fit.
    assert_eq!(table_value(&s, "fits"), "yes", "{s}");
    let v = json_of(&[&args[..], &["--format", "json"]].concat());
    let p = &v["predictions"][0];
    let t = &p["training"];
    assert_eq!(t["optimizer_steps"], 313);
    // Training time = 313 × the step time, written h:mm:ss in the table.
    let step_ms = p["step_ms"].as_f64().unwrap();
    let seconds = t["seconds"].as_f64().unwrap();
    assert!(
        (seconds - 313.0 * step_ms / 1e3).abs() < 1e-6 * seconds,
        "{seconds}"
    );
    let secs = seconds.round() as u64;
    let hms = format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    assert_eq!(t["wall_clock"], hms.as_str());
    assert_eq!(table_value(&s, "training time"), hms);
    // Memory by hand: upper 3/4 = 24 of 32 layers at rank 3 × 8 = 24, Σ n over the seven
    // projections = 4·4096 + 2·11008 + 4096 = 42,496 → P = 24 × 24 × 42,496 = 24,477,696
    // trainable. fp32 weights 4 B × (6,738,415,616 + P); gradients 4 B × P; AdamW 8 B × P.
    let n = 24.0 * 24.0 * 42_496.0;
    assert_eq!(p["trainable_params"].as_f64(), Some(n));
    let m = &p["memory"];
    assert_eq!(
        m["weights_bytes"].as_f64(),
        Some(4.0 * (6_738_415_616.0 + n))
    );
    assert_eq!(m["gradients_bytes"].as_f64(), Some(4.0 * n));
    assert_eq!(m["optimizer_state_bytes"].as_f64(), Some(8.0 * n));
    let peak = p["peak_memory_bytes"].as_f64().unwrap();
    assert!(peak >= 4.0 * (6_738_415_616.0 + n) + 12.0 * n);
    // It fits because peak + 1 GiB ≤ 48 GiB.
    assert_eq!(m["capacity_bytes"].as_f64(), Some(48.0 * GIB));
    assert!(peak + GIB <= 48.0 * GIB, "{peak}");
    assert_eq!(p["fits"], true);
}

/// A copy of the a100-80gb profile with its memory set to `gib`.
fn profile_with_memory(dir: &std::path::Path, gib: f64) -> std::path::PathBuf {
    let prof = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/hardware/profiles/a100-80gb-sxm.toml"
    ))
    .unwrap();
    assert!(prof.contains("memory-gib = 80\n"));
    let text = prof
        // Shortest round-trip decimal: the file holds exactly this f64.
        .replace("memory-gib = 80\n", &format!("memory-gib = {gib:?}\n"))
        .replace("name = \"a100-80gb-sxm\"", "name = \"a100-resized\"");
    let path = dir.join(format!("a100-{gib:.6}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn fits_flips_exactly_at_capacity_minus_the_1_gib_reserve() {
    // One configuration, its peak P from the JSON; then the same prediction on profiles whose
    // memory puts capacity − 1 GiB just above P, just below P, and between P and P + 1 GiB.
    let dir = std::env::temp_dir().join(format!("costsim-cli-fits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = [
        "predict",
        "--model",
        "gpt2-medium",
        "--method",
        "lora",
        "--batch",
        "8",
        "--seq",
        "512",
        "--format",
        "json",
        "--hw",
    ];
    let v = json_of(&[&cfg[..], &["a100"]].concat());
    let peak = v["predictions"][0]["peak_memory_bytes"].as_f64().unwrap();
    assert!(peak > GIB, "{peak}");
    let mib = 1048576.0;
    for (capacity, fits, what) in [
        (peak + GIB + mib, true, "1 MiB to spare after the reserve"),
        (peak + GIB, true, "exactly peak + reserve"),
        (
            peak + GIB - mib,
            false,
            "1 MiB short once the reserve is taken",
        ),
        (
            peak + 0.5 * GIB,
            false,
            "the peak fits, but not with the reserve",
        ),
        (peak - mib, false, "the peak alone does not fit"),
    ] {
        let hw = profile_with_memory(&dir, capacity / GIB);
        let v = json_of(&[&cfg[..], &[hw.to_str().unwrap()]].concat());
        let p = &v["predictions"][0];
        let m = &p["memory"];
        // The peak does not depend on capacity.
        assert_eq!(p["peak_memory_bytes"].as_f64(), Some(peak), "{what}");
        let cap = m["capacity_bytes"].as_f64().unwrap();
        assert!(
            (cap - capacity).abs() < 1.0,
            "{what}: capacity {cap} vs {capacity}"
        );
        assert_eq!(m["reserved_bytes"].as_f64(), Some(GIB));
        assert_eq!(
            p["fits"].as_bool(),
            Some(fits),
            "{what}: peak {peak}, capacity {cap}"
        );
        assert_eq!(m["fits"].as_bool(), Some(fits), "{what}");
        let short = m["shortfall_bytes"].as_f64().unwrap();
        let want = if fits { 0.0 } else { peak + GIB - cap };
        assert!(
            (short - want).abs() < 1.0,
            "{what}: shortfall {short} vs {want}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fits_follows_peak_plus_reserve_across_batches_on_a_builtin_profile() {
    // llama2-7b PaCA on an A6000 (48 GiB), seq 512: the batch where the peak plus 1 GiB
    // crosses 48 GiB is where `fits` turns false, and at no other batch. The scan must include
    // a batch whose peak lies within 1 GiB below capacity (batch 10, about 47.6 GiB): it fits
    // the card only without the reserve, so the reserve decides its verdict.
    let mut flips = 0;
    let mut last = None;
    let mut in_reserve = 0;
    for batch in 1..=12 {
        let b = batch.to_string();
        let v = json_of(&[
            "predict",
            "--hw",
            "a6000",
            "--model",
            "llama2-7b",
            "--method",
            "paca",
            "--seq",
            "512",
            "--batch",
            &b,
            "--format",
            "json",
        ]);
        let p = &v["predictions"][0];
        let peak = p["peak_memory_bytes"].as_f64().unwrap();
        let fits = p["fits"].as_bool().unwrap();
        assert_eq!(fits, peak + GIB <= 48.0 * GIB, "batch {batch}: peak {peak}");
        if peak > 47.0 * GIB && peak <= 48.0 * GIB {
            in_reserve += 1;
            assert!(
                !fits,
                "batch {batch}: peak {peak} leaves less than the reserve"
            );
        }
        if last == Some(true) && !fits {
            flips += 1;
        }
        assert!(last != Some(false) || !fits, "fits again at batch {batch}");
        last = Some(fits);
    }
    assert_eq!(flips, 1, "the scan must cross capacity once");
    assert!(
        in_reserve >= 1,
        "no batch of the scan lands within the reserve"
    );
}

#[test]
fn csv_and_markdown_have_one_row_per_method() {
    let base = ["predict", "--hw", "l4", "--model", "gpt2"];
    let run = |extra: &[&str]| {
        let o = costsim(&[&base[..], extra].concat());
        assert_eq!(o.status.code(), Some(0), "{extra:?}: {}", stderr(&o));
        stdout(&o)
    };
    let v: Value = serde_json::from_str(&run(&["--format", "json", "--per-layer", "--kernels"]))
        .expect("json");
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 5);
    let close = |got: f64, want: f64, decimals: i32| {
        (got - want).abs() <= 0.5 * 10f64.powi(-decimals) + 1e-9 * want.abs()
    };
    // Summary CSV: one row per method, each column equal to the JSON field of that name.
    let csv = run(&["--format", "csv"]);
    assert!(csv.starts_with("method,rank,"));
    let recs = csv_records(&csv);
    assert_eq!(recs.len(), 5, "{csv}");
    for (r, p) in recs.iter().zip(preds) {
        let m = common::s(r, "method");
        assert_eq!(m, p["method"].as_str().unwrap());
        assert_eq!(
            common::s(r, "trained_layers"),
            p["trained_layers"].as_str().unwrap()
        );
        assert_eq!(
            common::s(r, "dominant_bound"),
            p["dominant_bound"].as_str().unwrap()
        );
        assert_eq!(
            common::s(r, "fits"),
            p["fits"].as_bool().unwrap().to_string()
        );
        for col in ["rank", "trainable_params"] {
            assert_eq!(f(r, col), p[col].as_f64().unwrap(), "{m} {col}");
        }
        for ph in ["forward", "backward", "optimizer"] {
            let col = format!("{ph}_kernels");
            assert_eq!(f(r, &col), p["kernels"][ph].as_f64().unwrap(), "{m} {col}");
        }
        for (col, decimals) in [
            ("flops", 0),
            ("bytes", 0),
            ("forward_ms", 4),
            ("backward_ms", 4),
            ("optimizer_ms", 4),
            ("step_ms", 4),
            ("tokens_per_s", 1),
            ("peak_memory_bytes", 0),
        ] {
            let (got, want) = (f(r, col), p[col].as_f64().unwrap());
            assert!(close(got, want, decimals), "{m} {col}: {got} vs {want}");
        }
    }
    // Per-layer CSV: one row per (method, scope), equal to the JSON's per_layer rows.
    let recs = csv_records(&run(&["--format", "csv", "--per-layer"]));
    let rows: Vec<(&str, &Value)> = preds
        .iter()
        .flat_map(|p| {
            let m = p["method"].as_str().unwrap();
            p["per_layer"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |r| (m, r))
        })
        .collect();
    assert_eq!(recs.len(), rows.len());
    assert_eq!(rows.len(), 5 * (12 + 4)); // embedding, 12 blocks, head, optimizer, loop
    for (r, (m, row)) in recs.iter().zip(&rows) {
        assert_eq!(common::s(r, "method"), *m);
        assert_eq!(common::s(r, "scope"), row["scope"].as_str().unwrap());
        assert_eq!(
            common::s(r, "trained"),
            row["trained"].as_bool().unwrap().to_string()
        );
        for (col, decimals) in [
            ("trainable_params", 0),
            ("forward_ms", 6),
            ("backward_ms", 6),
            ("optimizer_ms", 6),
            ("forward_kernels", 0),
            ("backward_kernels", 0),
            ("optimizer_kernels", 0),
            ("flops", 0),
            ("bytes", 0),
            ("saved_bytes", 0),
        ] {
            let (got, want) = (f(r, col), row[col].as_f64().unwrap());
            assert!(
                close(got, want, decimals),
                "{m} {} {col}: {got} vs {want}",
                row["scope"]
            );
        }
    }
    // Kernel CSV: one row per kernel, equal to the JSON's kernel rows.
    let recs = csv_records(&run(&["--format", "csv", "--kernels"]));
    let rows: Vec<(&str, &Value)> = preds
        .iter()
        .flat_map(|p| {
            let m = p["method"].as_str().unwrap();
            p["kernel_rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |r| (m, r))
        })
        .collect();
    assert_eq!(recs.len(), rows.len());
    for (r, (m, k)) in recs.iter().zip(&rows) {
        assert_eq!(common::s(r, "method"), *m);
        for col in ["phase", "name", "module", "kind", "dtype", "bound"] {
            assert_eq!(common::s(r, col), k[col].as_str().unwrap(), "{m} {col}");
        }
        assert_eq!(common::s(r, "shape"), k["shape"].as_str().unwrap_or(""));
        assert_eq!(
            common::s(r, "recompute"),
            k["recompute"].as_bool().unwrap().to_string()
        );
        let deps: Vec<String> = k["deps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(common::s(r, "deps"), deps.join(" "));
        for (col, decimals) in [
            ("index", 0),
            ("flops", 0),
            ("bytes_read", 0),
            ("bytes_written", 0),
            ("launches", 0),
            ("device_us", 3),
            ("host_us", 3),
            ("l2_reread_bytes", 0),
            ("l2_bound_us", 3),
        ] {
            let (got, want) = (f(r, col), k[col].as_f64().unwrap());
            assert!(close(got, want, decimals), "{m} {col}: {got} vs {want}");
        }
    }
    // Markdown: the step-time row holds each method's step time to two decimals.
    let md = run(&["--format", "markdown"]);
    let line = md
        .lines()
        .find(|l| l.starts_with("| step ms |"))
        .unwrap_or_else(|| panic!("{md}"));
    let cells: Vec<f64> = line
        .trim_matches('|')
        .split('|')
        .skip(1)
        .map(|c| c.trim().parse().unwrap())
        .collect();
    assert_eq!(cells.len(), 5);
    for (c, p) in cells.iter().zip(preds) {
        assert!(
            close(*c, p["step_ms"].as_f64().unwrap(), 2),
            "{c} vs {}",
            p["step_ms"]
        );
    }
}

#[test]
fn listings() {
    let s = stdout(&costsim(&["models"]));
    for m in [
        "gpt2",
        "gpt2-medium",
        "gpt2-large",
        "gpt2-xl",
        "tinyllama-1.1b",
        "llama2-7b",
        "llama2-13b",
        "llama2-70b",
        "llama3-8b",
        "mistral-7b",
    ] {
        assert!(
            s.lines().any(|l| l.split_whitespace().next() == Some(m)),
            "{m}"
        );
    }
    assert!(s.contains("6738415616"));
    let s = stdout(&costsim(&["hardware"]));
    assert_eq!(
        s.lines().filter(|l| l.contains("NVIDIA")).count(),
        13,
        "{s}"
    );
}

#[cfg(not(feature = "tch"))]
#[test]
fn validate_without_libtorch_says_how_to_build() {
    let o = costsim(&["validate", "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--features tch"), "{}", stderr(&o));
}

#[test]
fn validate_from_a_results_file_needs_no_libtorch() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/results-small.json");
    let o = costsim(&["validate", "--from", path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("MAPE") && s.contains("ranking"), "{s}");
    let o = costsim(&["validate", "--from", "/nonexistent.json"]);
    assert_eq!(o.status.code(), Some(2));
}

#[cfg(feature = "tch")]
#[test]
fn validate_measures_on_cpu_and_rereads_its_results() {
    let dir = std::env::temp_dir().join(format!("costsim-validate-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tiny")).unwrap();
    let cfg = dir.join("tiny/config.json");
    std::fs::write(&cfg, r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,"vocab_size":300,"max_position_embeddings":64}"#).unwrap();
    let out = dir.join("results.json");
    // `validate --device DEVICE --model-config (the tiny model) --seq 16 EXTRA…`.
    let validate_tiny = |device: &str, extra: &[&str]| {
        let head = [
            "validate",
            "--device",
            device,
            "--model-config",
            cfg.to_str().unwrap(),
            "--seq",
            "16",
        ];
        costsim(&[&head[..], extra].concat())
    };
    let o = validate_tiny(
        "cpu",
        &[
            "--reps",
            "2",
            "--warmup",
            "1",
            "--methods",
            "full,paca-upper-half",
            "--rank",
            "4",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let first = stdout(&o);
    assert!(
        first.contains("paca-upper-half") && first.contains("MAPE"),
        "{first}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["records"].as_array().unwrap().len(), 2);
    for key in [
        "device",
        "torch_version",
        "git_commit",
        "timestamp",
        "command",
    ] {
        assert!(v[key].is_string(), "{key}");
    }
    assert_eq!(v["records"][0]["outcome"]["status"], "measured");
    // The harness matches PaCA's rank to the LoRA rank asked for (upper-half PaCA: 4r, the
    // reference's pairing): --rank 4 gives 16 columns, the default rank 8 would give 32.
    assert_eq!(v["records"][1]["method"], "paca-upper-half");
    assert_eq!(v["records"][1]["rank"], 16);
    // The per-layer microbenchmark times the top block (of 2) alone.
    let layer = &v["records"][1]["outcome"]["layer"];
    assert_eq!(layer["block"], 1);
    assert!(layer["forward"]["median_ms"].as_f64().unwrap() > 0.0);
    assert!(layer["backward"]["median_ms"].as_f64().unwrap() > 0.0);
    assert!(first.contains("layer fwd MAPE"), "{first}");
    // The comparison is redone from the file alone, to the same table.
    let again = costsim(&["validate", "--from", out.to_str().unwrap()]);
    assert_eq!(stdout(&again), first);
    // An impossible batch is refused before anything is measured.
    let o = validate_tiny("cpu", &["--batch", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("batch size must be at least 1"),
        "{}",
        stderr(&o)
    );
    // No GPU here: asking for CUDA is a clear error, not a CPU timing.
    if !std::path::Path::new("/dev/nvidia0").exists() {
        let o = validate_tiny("cuda", &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("no CUDA device"), "{}", stderr(&o));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn calibrate_rejects_bad_output_and_missing_samples() {
    usage_error(
        &["calibrate", "--device", "cpu", "--out", "profile.txt"],
        &["--out profile.txt", ".toml"],
    );
    usage_error(
        &[
            "calibrate",
            "--from",
            "/nonexistent/samples.json",
            "--out",
            "p.toml",
        ],
        &["/nonexistent/samples.json"],
    );
    assert!(!std::path::Path::new("p.toml").exists());
}

#[test]
fn a_calibrated_profile_predicts_and_says_so() {
    let profile = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/results/cpu/cpu-calibrated.toml"
    );
    let o = costsim(&[
        "predict",
        "--hw",
        profile,
        "--model",
        "gpt2",
        "--method",
        "lora",
        "--batch",
        "1",
        "--seq",
        "128",
        "--precision",
        "fp32",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["hardware"]["calibrated"], true);
    assert_eq!(v["hardware"]["name"], "cpu-generic-calibrated");
    // The profile's 24 GiB.
    assert_eq!(v["hardware"]["memory_bytes"].as_f64(), Some(24.0 * GIB));
    // A CPU runs each op on the issuing thread, so host and device time add: the step is the
    // sum over every op (host-only ones included) of its host and device time, read here from
    // the kernel rows (grad_accum 1, so the first micro-batch is the whole step).
    let o = costsim(&[
        "predict",
        "--hw",
        profile,
        "--model",
        "gpt2",
        "--method",
        "lora",
        "--batch",
        "1",
        "--seq",
        "128",
        "--precision",
        "fp32",
        "--format",
        "json",
        "--kernels",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let k: Value = serde_json::from_slice(&o.stdout).expect("json");
    let p = &k["predictions"][0];
    let step_ms = p["step_ms"].as_f64().unwrap();
    let plain = v["predictions"][0]["step_ms"].as_f64().unwrap();
    assert!(
        (step_ms - plain).abs() < 1e-9 * plain,
        "{step_ms} vs {plain}"
    );
    let sum_us: f64 = p["kernel_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["host_us"].as_f64().unwrap() + r["device_us"].as_f64().unwrap())
        .sum();
    assert!(
        (sum_us / 1e3 - step_ms).abs() < 1e-9 * step_ms,
        "{} vs {step_ms}",
        sum_us / 1e3
    );
}

/// CSV holds one table: asking `predict` for two (kernels, per-layer rows, a run estimate) is
/// a usage error naming both and the format that holds them all, not one table with the
/// others silently dropped (an audit found that, 2026-11-30); each alone is written.
#[test]
fn csv_refuses_two_tables_and_writes_one() {
    let base = [
        "predict", "--hw", "a100", "--model", "gpt2", "--format", "csv",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { [&base[..], extra].concat() };
    for (extra, named) in [
        (
            &["--kernels", "--per-layer"][..],
            ["--kernels", "--per-layer"],
        ),
        (
            &["--per-layer", "--tokens", "1000000"][..],
            ["--per-layer", "--tokens"],
        ),
        (
            &["--kernels", "--samples", "1000"][..],
            ["--kernels", "--samples"],
        ),
    ] {
        usage_error(&with(extra), &[named[0], named[1], "--format json"]);
    }
    for extra in [
        &["--kernels"][..],
        &["--per-layer"][..],
        &["--tokens", "1000000"][..],
    ] {
        let o = costsim(&with(extra));
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        assert!(!csv_records(&stdout(&o)).is_empty(), "{extra:?}");
    }
    // Over the kernel-list limit (512 blocks of a layer's kernels), several methods are told to
    // list one at a time; one method, which cannot, only to use --per-layer.
    let cfg = common::tmp_in("cli-deep", "deep.json");
    std::fs::write(
        &cfg,
        br#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 600,
            "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 1000,
            "max_position_embeddings": 128}"#,
    )
    .expect("config");
    let cfg = cfg.to_str().expect("path");
    for (method, one_at_a_time) in [("all", true), ("lora", false)] {
        let args = [
            "predict",
            "--hw",
            "h100",
            "--model-config",
            cfg,
            "--seq",
            "64",
            "--method",
            method,
            "--kernels",
        ];
        usage_error(&args, &["--per-layer", "512"]);
        let said = stderr(&costsim(&args)).contains("list one --method at a time");
        assert_eq!(said, one_at_a_time, "--method {method}");
    }
}

/// The optimizer a run gets unless `--optimizer` names one is the one its loop builds: a
/// Trainer's fused AdamW (transformers 5.17's `TrainingArguments.optim` with torch ≥ 2.8,
/// `adamw_torch_fused`), a bare loop's foreach AdamW (torch.optim's default on CUDA); a named
/// one is used with either loop. The fused one's single pass reads and writes less than the
/// foreach one's twenty, so full fine-tuning's optimizer phase is shorter.
#[test]
fn the_default_optimizer_is_the_one_the_loop_builds() {
    let run = |extra: &[&str]| {
        let mut a = vec![
            "predict", "--model", "gpt2", "--hw", "a100", "--method", "full", "--format", "json",
        ];
        a.extend_from_slice(extra);
        let o = costsim(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            v["workload"]["optimizer"].as_str().unwrap().to_string(),
            v["workload"]["training_loop"].as_str().unwrap().to_string(),
            v["predictions"][0]["optimizer_ms"].as_f64().unwrap(),
        )
    };
    let (opt, lp, fused_ms) = run(&[]);
    assert_eq!((opt.as_str(), lp.as_str()), ("adamw-fused", "trainer"));
    let (opt, lp, _) = run(&["--loop", "bare"]);
    assert_eq!((opt.as_str(), lp.as_str()), ("adamw-foreach", "bare"));
    // libtorch's default loop is bare.
    let (opt, lp, _) = run(&["--runtime", "libtorch"]);
    assert_eq!((opt.as_str(), lp.as_str()), ("adamw-foreach", "bare"));
    let (opt, lp, foreach_ms) = run(&["--optimizer", "adamw"]);
    assert_eq!((opt.as_str(), lp.as_str()), ("adamw-foreach", "trainer"));
    let (opt, lp, _) = run(&["--loop", "bare", "--optimizer", "adamw-fused"]);
    assert_eq!((opt.as_str(), lp.as_str()), ("adamw-fused", "bare"));
    assert!(fused_ms < foreach_ms, "{fused_ms} vs {foreach_ms}");
}
