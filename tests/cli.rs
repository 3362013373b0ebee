//! End-to-end tests of the costsim binary: bad input gives exit code 2 and a message naming the
//! problem and the fix; outputs carry the documented fields; the paper's memory facts hold.

use std::io::Write;
use std::process::{Command, Output};

fn costsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(args)
        .output()
        .expect("run costsim")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let o = costsim(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    for n in needles {
        assert!(e.contains(n), "{args:?}: missing '{n}' in: {e}");
    }
}

#[test]
fn unknown_model_lists_known_and_nearest() {
    assert_usage_error(
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
    assert_usage_error(
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
    assert_usage_error(
        &with(&["--method", "lora", "--rank", "0"]),
        &["--rank", "at least 1"],
    );
    assert_usage_error(
        &with(&["--method", "paca", "--rank", "5000"]),
        &["exceeds the input width 768"],
    );
    assert_usage_error(&with(&["--batch", "0"]), &["--batch", "at least 1"]);
    assert_usage_error(
        &with(&["--seq", "2048"]),
        &["exceeds gpt2's 1024 positions", "--seq 1024"],
    );
    assert_usage_error(
        &with(&["--train-layers", "last:99"]),
        &["last:99", "between 1 and 12"],
    );
    assert_usage_error(
        &with(&["--targets", "lm_head"]),
        &["unknown target 'lm_head'"],
    );
    assert_usage_error(
        &with(&["--method", "lora", "--dropout", "1.5"]),
        &["dropout 1.5"],
    );
    assert_usage_error(
        &with(&["--batch", "9223372036854775807", "--seq", "1000"]),
        &["2^40 tokens"],
    );
    assert_usage_error(&with(&["--train-layers", "upper:NaN"]), &["fraction"]);
    // clap's own errors also exit with 2
    assert_usage_error(&with(&["--batch", "-3"]), &["-3"]);
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
    assert_usage_error(
        &["predict", "--hw", "a100", "--model-config", cfg_s],
        &[cfg_s, "line 3"],
    );
    std::fs::write(&cfg, br#"{"model_type": "t5"}"#).unwrap();
    assert_usage_error(
        &["predict", "--hw", "a100", "--model-config", cfg_s],
        &["\"t5\" is not supported"],
    );
    let toml = dir.join("gpu.toml");
    std::fs::write(&toml, "[device]\nname = \"x\"\nsms = -\n").unwrap();
    let toml_s = toml.to_str().unwrap();
    assert_usage_error(
        &["predict", "--hw", toml_s, "--model", "gpt2"],
        &[toml_s, "line 3"],
    );
    assert_usage_error(
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
        assert_eq!(rows.len(), 22 + 3); // embedding, 22 blocks, head, optimizer
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

#[test]
fn paper_setup_is_one_command() {
    let o = costsim(&[
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
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    // 10,000 samples / (8 × 4) per step = 312.5 → 313 optimizer steps.
    assert!(s.contains("optimizer steps") && s.contains("313"), "{s}");
    let line = s.lines().find(|l| l.starts_with("training time")).unwrap();
    let hms = line.split_whitespace().last().unwrap();
    assert_eq!(hms.split(':').count(), 3, "{hms}");
}

#[test]
fn csv_and_markdown_have_one_row_per_method() {
    let o = costsim(&[
        "predict", "--hw", "l4", "--model", "gpt2", "--format", "csv",
    ]);
    let s = stdout(&o);
    assert_eq!(s.lines().count(), 6, "{s}");
    assert!(s.starts_with("method,rank,"));
    let o = costsim(&[
        "predict", "--hw", "l4", "--model", "gpt2", "--format", "markdown",
    ]);
    let s = stdout(&o);
    assert!(s.lines().any(|l| l.starts_with("| step ms |")), "{s}");
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
    let o = costsim(&[
        "validate",
        "--device",
        "cpu",
        "--model-config",
        cfg.to_str().unwrap(),
        "--seq",
        "16",
        "--reps",
        "2",
        "--warmup",
        "1",
        "--methods",
        "full,paca-upper-half",
        "--out",
        out.to_str().unwrap(),
    ]);
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
    // The per-layer microbenchmark times the top block (of 2) alone.
    let layer = &v["records"][1]["outcome"]["layer"];
    assert_eq!(layer["block"], 1);
    assert!(layer["forward"]["median_ms"].as_f64().unwrap() > 0.0);
    assert!(layer["backward"]["median_ms"].as_f64().unwrap() > 0.0);
    assert!(first.contains("layer fwd MAPE"), "{first}");
    // The comparison is redone from the file alone, to the same table.
    let again = costsim(&["validate", "--from", out.to_str().unwrap()]);
    assert_eq!(stdout(&again), first);
    // No GPU here: asking for CUDA is a clear error, not a CPU timing.
    if !std::path::Path::new("/dev/nvidia0").exists() {
        let o = costsim(&[
            "validate",
            "--device",
            "cuda",
            "--model-config",
            cfg.to_str().unwrap(),
            "--seq",
            "16",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("no CUDA device"), "{}", stderr(&o));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn calibrate_rejects_bad_output_and_missing_samples() {
    assert_usage_error(
        &["calibrate", "--device", "cpu", "--out", "profile.txt"],
        &["--out profile.txt", ".toml"],
    );
    assert_usage_error(
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
    assert!(v["predictions"][0]["step_ms"].as_f64().unwrap_or(0.0) > 0.0);
}
