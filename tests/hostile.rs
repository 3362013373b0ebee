//! Hostile inputs, one or more per cause of issue 9: each runs the binary under a 20 s wall-clock
//! limit and a 4 GiB address-space limit (`ulimit -v`), and asserts exit code 2, a message that
//! names the problem, and no panic. The few inputs that are valid but extreme (a huge
//! gradient-accumulation count, a GEMM past 2^64 elements) must answer, quickly and finitely.
//! docs/reliability.md lists the causes and what now handles each.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// Run costsim with the limits; panics (fails the test) if it overruns them.
fn run(args: &[&str]) -> Output {
    let start = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304 2>/dev/null; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_costsim"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run costsim");
    // Read the pipes on threads so a large output cannot stall the child.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut v);
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} ran past {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().expect("stdout thread"),
        stderr: err_t.join().expect("stderr thread"),
    }
}

/// Exit code 2, every needle in stderr, no panic.
fn refused(args: &[&str], needles: &[&str]) {
    let o = run(args);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!e.contains("panicked"), "{args:?} panicked: {e}");
    assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
    for n in needles {
        assert!(e.contains(n), "{args:?}: missing '{n}' in: {e}");
    }
}

/// Run costsim with the limits ([`run`]) on input it must answer: exit 0.
fn answered(args: &[&str]) -> Output {
    let o = run(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("costsim-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn write(d: &Path, name: &str, text: &str) -> String {
    let p = d.join(name);
    std::fs::write(&p, text).expect("write input");
    p.display().to_string()
}

fn results() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/results-small.json"
    ))
    .expect("results fixture");
    serde_json::from_str(&text).expect("fixture parses")
}

/// The fixture with record 1 edited; returns its path.
fn results_with(d: &Path, name: &str, edit: impl Fn(&mut Value)) -> String {
    let mut v = results();
    edit(&mut v["records"][1]);
    write(d, name, &v.to_string())
}

// ---- Results records (validate --from, plot scatter) ------------------------------------------

#[test]
fn results_records_with_impossible_models_are_refused() {
    let d = dir("models");
    let cases: [(&str, &str, &str, Value); 6] = [
        ("heads", "heads0.json", "must all be positive", 0.into()),
        ("layers", "layers0.json", "must all be positive", 0.into()),
        (
            "heads",
            "heads7.json",
            "not divisible by the 7 attention heads",
            7.into(),
        ),
        (
            "vocab",
            "vocab.json",
            "vocabulary 1099511627776 is above",
            (1u64 << 40).into(),
        ),
        ("hidden", "hidden.json", "must all be positive", 0.into()),
        (
            "layers",
            "layersmax.json",
            "layers 4294967295 is above",
            u32::MAX.into(),
        ),
    ];
    for (key, file, want, value) in cases {
        let p = results_with(&d, file, |r| r["model"][key] = value.clone());
        refused(
            &["validate", "--from", &p],
            &[&p, "record 1", want, "correct or remove the record"],
        );
    }
}

#[test]
fn results_records_with_impossible_workloads_are_refused() {
    let d = dir("workloads");
    for (key, want) in [
        ("batch", "batch size must be at least 1"),
        ("seq", "sequence length"),
    ] {
        let p = results_with(&d, &format!("{key}.json"), |r| r[key] = 0.into());
        refused(&["validate", "--from", &p], &[&p, "record 1", want]);
    }
    let p = results_with(&d, "rank.json", |r| {
        r["method"] = "lora".into();
        r["rank"] = u64::MAX.into();
    });
    refused(
        &["validate", "--from", &p],
        &["record 1", "exceeds the input width"],
    );
}

#[test]
fn results_with_unreal_times_are_refused() {
    let d = dir("times");
    for (i, ms) in [1e-320, 1e308, -5.0, 0.0].into_iter().enumerate() {
        let p = results_with(&d, &format!("t{i}.json"), |r| {
            r["outcome"]["step"]["median_ms"] = ms.into();
        });
        refused(
            &["validate", "--from", &p],
            &[
                "record 1",
                "outcome.step.median_ms must be in ms between 0.000001 and 1000000000",
            ],
        );
        // The scatter plot reads the same records through the same check.
        let out = d.join(format!("s{i}.svg")).display().to_string();
        refused(
            &["plot", "scatter", "--from", &p, "--out", &out],
            &["outcome.step.median_ms"],
        );
        assert!(!Path::new(&out).exists(), "no chart is written");
    }
}

#[test]
fn an_empty_or_all_failed_record_set_is_not_a_perfect_score() {
    let d = dir("empty");
    let mut v = results();
    v["records"] = Value::Array(vec![]);
    let p = write(&d, "empty.json", &v.to_string());
    refused(&["validate", "--from", &p], &[&p, "holds no records"]);
    let mut v = results();
    for r in v["records"].as_array_mut().expect("records") {
        r["outcome"] = serde_json::json!({"status": "failed", "message": "boom"});
    }
    let p = write(&d, "failed.json", &v.to_string());
    refused(&["validate", "--from", &p], &["nothing to compare"]);
}

// ---- Profiles ----------------------------------------------------------------------------------

fn profile_with(d: &Path, name: &str, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/hardware/profiles/a100-80gb-sxm.toml"
    ))
    .expect("profile");
    assert!(text.contains(from), "the profile has {from}");
    write(d, name, &text.replacen(from, to, 1))
}

#[test]
fn profiles_with_subnormal_or_huge_values_are_refused() {
    let d = dir("profiles");
    let cases = [
        (
            "bandwidth-gbps = 2039",
            "bandwidth-gbps = 5e-324",
            "peak.bandwidth-gbps must be in GB/s between 1 and 100000",
        ),
        (
            "bf16-tflops = 312",
            "bf16-tflops = 1e-310",
            "peak.bf16-tflops",
        ),
        ("memory-gib = 80", "memory-gib = 1e308", "device.memory-gib"),
        (
            "gemm = 0.83",
            "gemm = 5e-324",
            "efficiency.gemm must be a fraction between 0.001 and 1",
        ),
        (
            "launch-floor-us = ",
            "launch-floor-us = 1e300 #",
            "overheads.launch-floor-us",
        ),
        ("sms = 108", "sms = 0", "device.sms"),
    ];
    for (i, (from, to, want)) in cases.into_iter().enumerate() {
        let p = profile_with(&d, &format!("p{i}.toml"), from, to);
        refused(
            &["predict", "--hw", &p, "--model", "gpt2"],
            &[&p, want, "set it within that range"],
        );
        // The breakdown chart (whose axis code looped on such values) reads it the same way.
        let out = d.join(format!("b{i}.svg")).display().to_string();
        refused(
            &[
                "plot",
                "breakdown",
                "--hw",
                &p,
                "--model",
                "gpt2",
                "--out",
                &out,
            ],
            &[want],
        );
    }
    let p = profile_with(
        &d,
        "touch.toml",
        "\n[host]\n",
        "\nfirst-touch-gbps = 3\nfirst-touch-min-mib = -1\nfirst-touch-source = \"x\"\n\n[host]\n",
    );
    refused(
        &["predict", "--hw", &p, "--model", "gpt2"],
        &["overheads.first-touch-min-mib"],
    );
}

// ---- Unbounded work ---------------------------------------------------------------------------

#[test]
fn a_huge_gradient_accumulation_is_answered_quickly() {
    let step = |accum: &str| -> f64 {
        let o = run(&[
            "predict",
            "--hw",
            "a100",
            "--model",
            "gpt2",
            "--method",
            "lora",
            "--batch",
            "1",
            "--seq",
            "1",
            "--grad-accum",
            accum,
            "--format",
            "json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).expect("json");
        v["predictions"][0]["step_ms"]
            .as_f64()
            .or_else(|| v[0]["step_ms"].as_f64())
            .unwrap_or_else(|| panic!("step_ms in {v}"))
    };
    let (a, b, huge) = (step("1000"), step("2000"), step("4294967295"));
    // Beyond the first micro-batches each one adds the same time.
    let per = (b - a) / 1000.0;
    assert!(per > 0.0);
    let want = a + per * (4294967295.0 - 1000.0);
    assert!((huge - want).abs() <= 1e-6 * want, "{huge} vs {want}");
}

#[test]
fn a_kernel_listing_of_thousands_of_layers_is_refused_not_gigabytes() {
    let d = dir("kernels");
    let p = write(
        &d,
        "deep.json",
        r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":4096,
        "num_attention_heads":1,"intermediate_size":64,"vocab_size":100,
        "max_position_embeddings":64}"#,
    );
    refused(
        &[
            "predict",
            "--hw",
            "a100",
            "--model-config",
            &p,
            "--seq",
            "64",
            "--kernels",
        ],
        &["4096 layers × 5 methods = 20480 blocks", "--per-layer"],
    );
    // Per layer (one row per layer and method) is answered.
    let o = run(&[
        "predict",
        "--hw",
        "a100",
        "--model-config",
        &p,
        "--seq",
        "64",
        "--per-layer",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

// ---- Integer wrap -----------------------------------------------------------------------------

#[test]
fn products_past_64_bits_are_errors_or_exact_not_wrapped() {
    let d = dir("wrap");
    // head_dim × heads = 2^64 wraps to 0 = hidden_size.
    let p = write(
        &d,
        "headdim.json",
        r#"{"model_type":"llama","hidden_size":0,"num_hidden_layers":2,
        "num_attention_heads":4294967296,"head_dim":4294967296,"intermediate_size":8,
        "vocab_size":8,"max_position_embeddings":8}"#,
    );
    refused(
        &["predict", "--hw", "a100", "--model-config", &p],
        &["head_dim 4294967296"],
    );
    // PaCA's matched rank 2r of a huge LoRA rank, on the heatmap's PaCA side alone.
    let out = d.join("h.svg").display().to_string();
    refused(
        &[
            "plot",
            "heatmap",
            "--model",
            "gpt2",
            "--hw",
            "a100",
            "--against",
            "paca",
            "--x",
            "seq",
            "--x-range",
            "128..256:x2",
            "--y",
            "batch",
            "--y-range",
            "1..2:x2",
            "--rank",
            "9223372036854775809",
            "--out",
            &out,
        ],
        &["no cell of the heatmap"],
    );
    // The LM head's GEMM at 2^40 tokens × a 2^24 vocabulary has 2^64 outputs: answered.
    let p = write(
        &d,
        "wide.json",
        r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":1,
        "num_attention_heads":1,"intermediate_size":64,"vocab_size":16777216,
        "max_position_embeddings":16777216}"#,
    );
    let o = run(&[
        "predict",
        "--hw",
        "h100",
        "--model-config",
        &p,
        "--method",
        "lora",
        "--batch",
        "65536",
        "--seq",
        "16777216",
        "--format",
        "json",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("null") && !text.contains("inf"), "{text}");
}

// ---- Empty answers ------------------------------------------------------------------------------

#[test]
fn empty_answers_are_errors() {
    refused(
        &[
            "crossover",
            "--model",
            "gpt2",
            "--hw",
            "a100",
            "--vary",
            "seq",
            "--range",
            "2048..8192:x2",
        ],
        &["give a valid configuration", "positions"],
    );
    let d = dir("empty-answers");
    let out = d.join("h.svg").display().to_string();
    refused(
        &[
            "plot",
            "heatmap",
            "--model",
            "gpt2",
            "--hw",
            "a100",
            "--x",
            "seq",
            "--x-range",
            "2048..4096:x2",
            "--out",
            &out,
        ],
        &["no cell of the heatmap"],
    );
    assert!(!Path::new(&out).exists());
    refused(
        &[
            "predict", "--hw", "a100", "--model", "gpt2", "--tokens", "0",
        ],
        &["--tokens and --samples"],
    );
}

// ---- Written files ----------------------------------------------------------------------------

#[test]
fn a_calibrated_profile_name_cannot_inject_keys() {
    let d = dir("calibrate");
    let samples = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/results/cpu/cpu-calibration.json"
    );
    let out = d.join("p.toml").display().to_string();
    refused(
        &[
            "calibrate",
            "--from",
            samples,
            "--out",
            &out,
            "--name",
            "x\"\n[host]\nextra = 1",
        ],
        &["device.name must be one line"],
    );
    assert!(!Path::new(&out).exists());
    // Quotes on one line are kept as written, and the profile loads under that name.
    let o = run(&[
        "calibrate",
        "--from",
        samples,
        "--out",
        &out,
        "--name",
        "my \"q\" cpu",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[
        "predict", "--hw", &out, "--model", "gpt2", "--format", "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("my \\\"q\\\" cpu"));
    // An empty name, and a built-in's name or alias (which `--hw a100,p.toml` would then list
    // twice under one name), are refused naming --name (an audit, 2026-11-30).
    for (name, said) in [
        ("", "--name is empty"),
        ("a100", "built-in profile's name or alias"),
        ("CPU", "built-in"),
    ] {
        refused(
            &[
                "calibrate",
                "--from",
                samples,
                "--out",
                &out,
                "--name",
                name,
            ],
            &[said],
        );
    }
}

// ---- Unbounded reads ---------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn fifos_are_refused_without_blocking() {
    let d = dir("fifo");
    let fifo = d.join("in.json");
    let made = Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let f = fifo.display().to_string();
    let toml = d.join("in.toml");
    assert!(Command::new("mkfifo")
        .arg(&toml)
        .status()
        .is_ok_and(|s| s.success()));
    let t = toml.display().to_string();
    let out = d.join("o.toml").display().to_string();
    for args in [
        vec!["predict", "--hw", &t, "--model", "gpt2"],
        vec!["predict", "--hw", "a100", "--model-config", &f],
        vec!["validate", "--from", &f],
        vec!["calibrate", "--from", &f, "--out", &out],
        vec!["validate", "--trace", &f],
    ] {
        refused(&args, &["special file", "not a regular file"]);
    }
}

#[test]
fn oversized_directory_and_binary_inputs_are_refused() {
    let d = dir("big");
    // A sparse file one byte over 64 MiB: nothing is read.
    let big = d.join("big.json");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len((64 << 20) + 1).expect("sparse size");
    let b = big.display().to_string();
    refused(
        &["predict", "--hw", "a100", "--model-config", &b],
        &[&b, "67108865 bytes, above the 64 MiB"],
    );
    refused(&["validate", "--from", &b], &["above the 64 MiB"]);
    let dd = d.display().to_string();
    refused(
        &["predict", "--hw", "a100", "--model-config", &dd],
        &["is a directory"],
    );
    let bin = write(&d, "bin.json", "");
    std::fs::write(&bin, [b'{', 0xff, 0xfe, b'}']).expect("write");
    refused(
        &["predict", "--hw", "a100", "--model-config", &bin],
        &["not UTF-8"],
    );
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let d = dir("nested");
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let p = write(&d, "deep.json", &deep);
    refused(
        &["predict", "--hw", "a100", "--model-config", &p],
        &["malformed config"],
    );
    refused(&["validate", "--from", &p], &["malformed results"]);
}

#[test]
fn hostile_calibration_samples_are_refused() {
    let d = dir("samples");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/results/cpu/cpu-calibration.json"
    ))
    .expect("samples");
    let mut v: Value = serde_json::from_str(&text).expect("parses");
    v["samples"][0]["stats"]["median_ms"] = 1e308.into();
    let p = write(&d, "s.json", &v.to_string());
    let out = d.join("o.toml").display().to_string();
    refused(
        &["calibrate", "--from", &p, "--out", &out],
        &["sample 0", "stats.median_ms must be in ms"],
    );
    v["samples"] = Value::Array(vec![]);
    let p = write(&d, "e.json", &v.to_string());
    refused(
        &["calibrate", "--from", &p, "--out", &out],
        &["holds no samples"],
    );
}

#[test]
fn a_trace_with_an_impossible_dropout_is_refused() {
    let d = dir("trace");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/results/traces/cpu/gpt2-full-fp32.json"
    ))
    .expect("trace");
    let mut v: Value = serde_json::from_str(&text).expect("parses");
    v["workload"]["model_dropout"] = 5.into();
    let p = write(&d, "t.json", &v.to_string());
    refused(
        &["validate", "--trace", &p],
        &["dropout 5 is not in [0, 1)"],
    );
}

#[test]
fn more_records_than_one_comparison_reads_are_refused() {
    let d = dir("many");
    let mut v = results();
    let recs = v["records"].as_array().expect("records").clone();
    // n records of distinct configurations (batch sizes `from`, `from + 1`, ...).
    let distinct = |n: usize, from: usize| -> Value {
        Value::Array(
            recs.iter()
                .cycle()
                .take(n)
                .enumerate()
                .map(|(i, r)| {
                    let mut r = r.clone();
                    r["batch"] = (from + i).into();
                    r
                })
                .collect(),
        )
    };
    v["records"] = distinct(2001, 1);
    let p = write(&d, "many.json", &v.to_string());
    refused(
        &["validate", "--from", &p],
        &["2001 records, more than the 2000"],
    );
    // Two files under the cap each, over it together.
    v["records"] = distinct(1500, 1);
    let a = write(&d, "a.json", &v.to_string());
    v["records"] = distinct(1500, 2001);
    let a2 = write(&d, "a2.json", &v.to_string());
    refused(
        &["validate", "--from", &format!("{a},{a2}")],
        &["more than 2000 records together"],
    );
    // The same configurations twice: refused, within a file and across files.
    refused(
        &["validate", "--from", &format!("{a},{a}")],
        &["measures gpt2", "again, as an earlier --from file does"],
    );
    v["records"] = Value::Array(recs.iter().cycle().take(recs.len() + 1).cloned().collect());
    let twice = write(&d, "twice.json", &v.to_string());
    refused(
        &["validate", "--from", &twice],
        &[
            &format!("record {}", recs.len()),
            "repeats record 0's configuration",
        ],
    );
    // Exactly at the cap together: compared.
    v["records"] = distinct(1000, 1);
    let b = write(&d, "b.json", &v.to_string());
    v["records"] = distinct(1000, 1001);
    let c = write(&d, "c.json", &v.to_string());
    answered(&["validate", "--from", &format!("{b},{c}")]);
}

/// `--out` and `--data` naming one file (directly, or through `..`): the data would replace the
/// chart. Refused before anything is written.
#[test]
fn a_chart_and_its_data_in_one_file_are_refused() {
    let d = dir("same-target");
    std::fs::create_dir_all(d.join("plots")).unwrap();
    let out = d.join("plots/m.svg").display().to_string();
    for data in [
        out.clone(),
        d.join("plots/../plots/m.svg").display().to_string(),
    ] {
        refused(
            &[
                "plot", "methods", "--hw", "a100", "--model", "gpt2", "--out", &out, "--data",
                &data,
            ],
            &["--out and --data both name", "m.json"],
        );
        assert!(!d.join("plots/m.svg").exists(), "nothing written");
    }
}

/// `--hw` naming one profile twice counts it once (sweep and fit); two different profiles under
/// one name (a file keeping a built-in's `[device] name`) are refused, naming both.
#[test]
fn devices_named_twice_count_once_and_namesakes_are_refused() {
    let rows = |hw: &str| -> usize {
        let o = answered(&[
            "sweep", "--model", "gpt2", "--hw", hw, "--method", "full", "--format", "csv",
        ]);
        String::from_utf8_lossy(&o.stdout).lines().count() - 1
    };
    assert_eq!(rows("a100"), 1);
    assert_eq!(rows("a100,a100-80gb-sxm,a100"), 1);
    assert_eq!(rows("a100,h100"), 2);
    let d = dir("namesake");
    let p = write(
        &d,
        "fake.toml",
        "base = \"a100\"\n[device]\nname = \"h100-sxm\"\n",
    );
    for cmd in ["sweep", "fit"] {
        refused(
            &[cmd, "--model", "gpt2", "--hw", &format!("h100,{p}")],
            &[
                "--hw h100 and",
                "fake.toml",
                "both named 'h100-sxm'",
                "[device] name",
            ],
        );
    }
}

/// Negative values written with a space (`--alpha -1`) reach the range checks, which name the
/// problem, instead of clap's "unexpected argument '-1'"; a search's --max beyond what the
/// workload allows stops there (2^40 tokens a micro-batch), and the PaCA variants' matched rank
/// under --method all names the LoRA rank it came from.
#[test]
fn negative_values_huge_maxima_and_matched_ranks_get_their_own_messages() {
    for (flag, value, want) in [
        ("--alpha", "-1", "alpha must be positive, got -1"),
        ("--dropout", "-0.1", "dropout -0.1 is not in [0, 1)"),
        ("--tokens", "-5", "'-5' is not a whole number"),
        ("--price", "-2", "--price must be in US dollars per hour"),
    ] {
        refused(
            &["predict", "--model", "gpt2", "--hw", "a100", flag, value],
            &[want],
        );
    }
    answered(&[
        "fit",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--max",
        "18446744073709551615",
        "--format",
        "json",
    ]);
    refused(
        &[
            "predict", "--model", "gpt2", "--hw", "a100", "--rank", "512",
        ],
        &[
            "paca trains 2 × 512 = 1024 columns for --rank 512",
            "choose --rank ≤ 384",
        ],
    );
}

/// `crossover` takes the varied axis's values from --range only: a fixed --batch, --seq or
/// --rank for that axis is refused, naming it, instead of silently ignored; for the other axes
/// it applies.
#[test]
fn a_fixed_value_for_the_varied_axis_is_refused() {
    for (axis, flag) in [("batch", "--batch"), ("seq", "--seq"), ("rank", "--rank")] {
        refused(
            &[
                "crossover",
                "--model",
                "gpt2",
                "--hw",
                "a100",
                "--vary",
                axis,
                flag,
                "4",
            ],
            &[
                &format!("{flag} 4 fixes the axis --vary {axis} varies"),
                "--range",
            ],
        );
    }
    let o = answered(&[
        "crossover",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--vary",
        "seq",
        "--batch",
        "128",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let first = &v["comparisons"][0]["points"][0];
    assert_eq!(first[0], 64);
    // Its LoRA time at seq 64 is that of batch 128, not of the default 8.
    let lora = |batch: &str| -> f64 {
        let o = answered(&[
            "predict", "--model", "gpt2", "--hw", "a100", "--method", "lora", "--batch", batch,
            "--seq", "64", "--format", "json",
        ]);
        let p: Value = serde_json::from_slice(&o.stdout).expect("json");
        p["predictions"][0]["step_ms"].as_f64().expect("step_ms")
    };
    let got = first[1].as_f64().expect("lora ms");
    let want = lora("128");
    assert!((got - want).abs() <= 1e-9 * got, "{got} vs {want}");
    assert_ne!(want, lora("8"));
}

/// A results file records its profile as given where it was measured, often a path relative to
/// the repository (`docs/results/cpu/cpu-calibrated.toml`). Read from elsewhere, that path is
/// found from the results file's folders; a profile that cannot be resolved is named with the
/// results file and the fix.
#[test]
fn a_recorded_profile_path_is_found_from_the_results_file() {
    let d = dir("recorded-profile");
    std::fs::create_dir_all(d.join("repo/profiles")).unwrap();
    std::fs::create_dir_all(d.join("repo/runs/today")).unwrap();
    std::fs::create_dir_all(d.join("elsewhere")).unwrap();
    std::fs::write(
        d.join("repo/profiles/mine.toml"),
        "base = \"a100\"\n[device]\nname = \"mine\"\n",
    )
    .unwrap();
    let mut v = results();
    v["profile"] = "profiles/mine.toml".into();
    let p = write(&d.join("repo/runs/today"), "r.json", &v.to_string());
    let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(["validate", "--from", &p])
        .current_dir(d.join("elsewhere"))
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("profile mine"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    v["profile"] = "a1000".into();
    let q = write(&d, "bad.json", &v.to_string());
    refused(
        &["validate", "--from", &q],
        &[
            "the profile 'a1000' recorded in",
            "bad.json",
            "did you mean 'a100'",
            "--hw NAME|FILE",
        ],
    );
}

/// A layer-selective preset's layers are what it means: `--train-layers` with paca-upper-half
/// or paca-three-quarters alone is refused (it silently trained the layers given); with
/// `--method all` the presets keep theirs and the other methods take the choice.
#[test]
fn a_preset_s_own_layers_cannot_be_replaced() {
    for (method, layers) in [
        ("paca-upper-half", "upper:0.5"),
        ("paca-three-quarters", "upper:0.75"),
    ] {
        refused(
            &[
                "predict",
                "--model",
                "gpt2",
                "--hw",
                "a100",
                "--method",
                method,
                "--train-layers",
                "0..5",
            ],
            &[
                &format!("{method} trains its own layers ({layers})"),
                "--method paca --train-layers",
            ],
        );
    }
    answered(&[
        "predict",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--method",
        "all",
        "--train-layers",
        "0..5",
        "--format",
        "json",
    ]);
}

/// Text from a results file reaches the terminal printable: a device with a terminal's escape
/// sequences, a model name with a line break and a failure message over two lines print with
/// no control character and one row per record (an audit's file cleared the screen, 2026-11-30).
#[test]
fn results_text_with_control_characters_prints_clean() {
    let d = dir("control");
    let mut v = results();
    v["device"] = "\u{1b}[2J\u{1b}[31mevil".into();
    v["records"][0]["model"]["name"] = "x\u{1b}[31m\n|evil|".into();
    v["records"][1]["outcome"] = serde_json::json!({
        "status": "failed", "message": "\u{1b}[31mboom\nline2"
    });
    let path = write(&d, "control.json", &v.to_string());
    for format in ["table", "markdown", "json"] {
        let o = answered(&["validate", "--from", &path, "--format", format]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(!out.contains('\u{1b}'), "--format {format}: {out}");
        assert!(
            out.contains("evil"),
            "--format {format}: the text is kept: {out}"
        );
        if format == "table" {
            // Every record's row starts on its own line: the name's line break is a space.
            assert!(out.lines().any(|l| l.starts_with("x[31m |evil|")), "{out}");
            assert!(out.contains("boom line2"), "{out}");
        }
    }
}

/// A record's model name or failure message longer than a format width can be (65 535) is
/// printed whole, not a panic of the table's padding.
#[test]
fn results_with_very_long_names_are_tabulated() {
    let d = dir("longname");
    let name = "y".repeat(70_000);
    let p = results_with(&d, "long.json", |r| {
        r["model"]["name"] = name.clone().into()
    });
    let o = answered(&["validate", "--from", &p]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&name));
    let p =
        results_with(
            &d,
            "longmsg.json",
            |r| {
                r["outcome"] =
                    serde_json::json!({"status": "failed", "message": "M".repeat(70_000)})
            },
        );
    answered(&["validate", "--from", &p]);
}

/// A message to a stderr that cannot take it (a full disk) is dropped: the exit code is the
/// command's own (2 for bad input, 0 for a written sweep), not a panic's 101.
#[cfg(target_os = "linux")]
#[test]
fn an_unwritable_stderr_keeps_the_exit_code() {
    let d = dir("devfull");
    let out = d.join("s.csv");
    let status = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_costsim"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create("/dev/full").expect("/dev/full"))
            .status()
            .expect("run costsim")
            .code()
    };
    assert_eq!(
        status(&["predict", "--hw", "a1000", "--model", "gpt2"]),
        Some(2)
    );
    let o = out.display().to_string();
    let args = [
        "sweep", "--hw", "a100", "--model", "gpt2", "--batch", "1..3",
    ];
    let args: Vec<&str> = args
        .into_iter()
        .chain(["--format", "csv", "--out", &o])
        .collect();
    assert_eq!(status(&args), Some(0));
    assert!(out.exists());
}

/// A negative number after an option (`--batch -1`) is named as the option's value, not as an
/// unknown flag `-1` (clap's reading), in every form clap splits: `-1e-3`, `-.5`, `-inf`.
#[test]
fn negative_values_are_named_with_their_option() {
    for (args, option) in [
        (
            &[
                "predict", "--hw", "a100", "--model", "gpt2", "--batch", "-1",
            ][..],
            "--batch -1",
        ),
        (
            &[
                "predict", "--hw", "a100", "--model", "gpt2", "--alpha", "-1e-3",
            ],
            "--alpha -1e-3",
        ),
        (
            &[
                "predict",
                "--hw",
                "a100",
                "--model",
                "gpt2",
                "--dropout",
                "-inf",
            ],
            "--dropout -inf",
        ),
        (
            &[
                "predict", "--hw", "a100", "--model", "gpt2", "--alpha", "-.5",
            ],
            "--alpha -.5",
        ),
        (
            &["sweep", "--hw", "a100", "--model", "gpt2", "--seq", "-1..4"],
            "--seq -1..4",
        ),
        (
            &["fit", "--hw", "a100", "--model", "gpt2", "--max", "-1"],
            "--max -1",
        ),
    ] {
        refused(args, &[option, "takes no negative value"]);
    }
    // Any other unknown flag is still clap's to report.
    refused(
        &["predict", "--hw", "a100", "-x"],
        &["unexpected argument '-x'"],
    );
}

/// Names read from a trace or a Trainer step record are printed without a terminal's escape
/// sequences (as results records' are), and a step record's subnormal median is refused, not
/// compared as "+inf%".
#[test]
fn traces_and_step_records_print_no_escapes_and_refuse_subnormal_times() {
    let d = dir("escapes");
    let fixture = |path: &str| -> Value {
        let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
            .expect("fixture");
        serde_json::from_str(&text).expect("parses")
    };
    let mut v = fixture("docs/results/traces/cpu/gpt2-full-fp32.json");
    v["model"]["preset"] = "\u{1b}[2J\u{1b}[31mX".into();
    let p = write(&d, "t.json", &v.to_string());
    let o = answered(&["validate", "--trace", &p]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains('\u{1b}') && out.contains("[2J[31mX"), "{out}");
    let mut v = fixture("docs/results/cpu/step/heldout/gpt2-narrow-deep-full.json");
    v["config"]["preset"] = "\u{1b}[2Jdeep".into();
    let p = write(&d, "s.json", &v.to_string());
    let o = answered(&["validate", "--steps", &p, "--hw", "cpu"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains('\u{1b}'));
    v["bare"]["median_us"] = 5e-324.into();
    let p = write(&d, "sub.json", &v.to_string());
    refused(
        &["validate", "--steps", &p, "--hw", "cpu"],
        &["bare.median_us must be 1 ns"],
    );
}

/// Settings every point of a sweep shares are refused as `predict` refuses them, not printed as
/// a grid of invalid rows with exit code 0; `--alpha` only where an adapter method is swept.
#[test]
fn a_sweep_refuses_shared_settings_no_point_can_use() {
    let sweep = ["sweep", "--hw", "a100", "--model", "gpt2", "--quiet"];
    for (flag, value, want) in [
        (
            "--grad-accum",
            "0",
            "gradient accumulation must be at least 1",
        ),
        ("--alpha", "0", "alpha must be positive, got 0"),
        ("--alpha", "nan", "alpha must be positive, got NaN"),
        ("--dropout", "1", "dropout 1 is not in [0, 1)"),
    ] {
        let args: Vec<&str> = sweep.iter().copied().chain([flag, value]).collect();
        refused(&args, &[want]);
    }
    let args: Vec<&str> = sweep
        .iter()
        .copied()
        .chain(["--method", "full", "--alpha", "0"])
        .collect();
    answered(&args);
}

/// An empty item in a comma-separated list is named as such for every list flag, not as a
/// missing value (clap's reading of `--from a.json,`) or an unknown model ''.
#[test]
fn empty_list_items_are_named_for_every_list_flag() {
    let results = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/results-small.json");
    let from = format!("{results},");
    let from_eq = format!("--from={results},");
    let sweep = ["sweep", "--hw", "a100", "--model"];
    for (args, flag) in [
        (vec!["validate", "--from", &from], "--from"),
        (vec!["validate", &from_eq], "--from"),
        (
            [&sweep[..], &["gpt2", "--method", ",lora"]].concat(),
            "--method",
        ),
        ([&sweep[..], &["gpt2,"]].concat(), "--model"),
        (
            [&sweep[..], &["gpt2", "--precision", "bf16-mixed,,fp32"]].concat(),
            "--precision",
        ),
    ] {
        refused(&args, &[flag, "has an empty item", "remove it"]);
    }
    // A value that is simply missing is still clap's to report.
    refused(
        &["validate", "--from"],
        &["a value is required for '--from"],
    );
}

/// Huge and tiny numbers are echoed short in errors and in the price line, not as hundreds of
/// digits.
#[test]
fn extreme_numbers_are_echoed_short() {
    let p = ["predict", "--hw", "a100", "--model", "gpt2"];
    for (extra, want) in [
        (["--dropout", "1e300"], "dropout 1e300 is not in [0, 1)"),
        (
            ["--train-layers", "upper:1e300"],
            "upper:1e300 must be a fraction",
        ),
    ] {
        let args: Vec<&str> = p.iter().copied().chain(extra).collect();
        refused(&args, &[want]);
        let e = String::from_utf8_lossy(&run(&args).stderr).into_owned();
        assert!(e.len() < 300, "{args:?}: {e}");
    }
    // A config.json's dropout, checked where the model is read.
    let d = dir("bigdropout");
    let cfg = write(
        &d,
        "c.json",
        r#"{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100,
            "n_positions": 64, "resid_pdrop": 1e308, "embd_pdrop": 1e308, "attn_pdrop": 1e308}"#,
    );
    refused(
        &["predict", "--hw", "a100", "--model-config", &cfg],
        &["\"resid_pdrop\" is 1e308: a dropout probability is in [0, 1)"],
    );
    let args: Vec<&str> = p
        .iter()
        .copied()
        .chain(["--tokens", "2e9", "--price", "1e-320"])
        .collect();
    let o = answered(&args);
    assert!(String::from_utf8_lossy(&o.stdout).contains("price: $1e-320 per GPU-hour"));
}
