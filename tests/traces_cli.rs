//! `costsim validate --trace` and `costsim calibrate --host` end to end: outputs read back field by
//! field against the trace files themselves, and bad input answered with exit code 2 and a
//! message that names the problem and the fix.

mod common;

use common::{costsim, tmp_in, usage_error};

use std::path::PathBuf;

use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    tmp_in("traces_cli", name)
}

fn repo(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn trace_comparison_reports_the_trace_s_own_numbers() {
    let path = repo("docs/results/traces/cpu/llama-lora-qv-bf16mixed.json");
    let o = costsim(&["validate", "--trace", &path, "--format", "json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let trace: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("trace")).expect("trace");
    let c = &out[0];
    // The traced side is read from the file, untouched: saved bytes, peaks and FLOPs per phase.
    assert_eq!(
        c["saved_bytes"]["traced"].as_f64(),
        trace["totals"]["saved_activation_bytes"].as_f64()
    );
    for p in c["phases"].as_array().expect("phases") {
        let name = p["phase"].as_str().expect("name");
        assert_eq!(
            p["peak_bytes"]["traced"].as_f64(),
            trace["phases"][name]["peak_bytes"].as_f64(),
            "{name}"
        );
        assert_eq!(
            p["flops"]["traced"].as_f64(),
            trace["phases"][name]["flops"].as_f64(),
            "{name}"
        );
    }
    // Forward launching ops: the file's non-foreach launches (no foreach op runs in forward).
    let fwd: u64 = trace["ops"]
        .as_array()
        .expect("ops")
        .iter()
        .filter(|r| r["phase"] == "forward")
        .map(|r| r["launches"].as_u64().expect("launches"))
        .sum();
    assert_eq!(
        c["phases"][0]["launches"]["traced"].as_f64(),
        Some(fwd as f64)
    );
}

#[test]
fn bad_traces_are_clear_errors() {
    usage_error(
        &["validate", "--trace", "no/such/trace.json"],
        &["no/such/trace.json"],
    );
    let wrong = tmp("wrong-schema.json");
    let text = std::fs::read_to_string(repo("docs/results/traces/cpu/gpt2-full-fp32.json"))
        .expect("trace")
        .replace("costsim-trace/1", "costsim-trace/0");
    std::fs::write(&wrong, text).expect("write");
    usage_error(
        &["validate", "--trace", wrong.to_str().expect("utf-8")],
        &["costsim-trace/0", "trace_step.py"],
    );
    let empty = tmp("empty-dir");
    std::fs::create_dir_all(&empty).expect("dir");
    usage_error(
        &["validate", "--trace", empty.to_str().expect("utf-8")],
        &["no .json trace"],
    );
}

#[test]
fn host_calibration_needs_a_base_and_timed_traces() {
    let out = tmp("host.toml");
    let out = out.to_str().expect("utf-8");
    usage_error(
        &[
            "calibrate",
            "--host",
            &repo("docs/results/gpu/host/traces"),
            "--out",
            out,
        ],
        &["--base"],
    );
    // The tiny CI traces carry no timings.
    usage_error(
        &[
            "calibrate",
            "--host",
            &repo("docs/results/traces/cpu"),
            "--base",
            "h200",
            "--out",
            out,
        ],
        &["--time-reps"],
    );
}

#[test]
fn host_calibration_writes_a_loadable_profile_with_the_fit() {
    let out = tmp("h200-host.toml");
    let o = costsim(&[
        "calibrate",
        "--host",
        &repo("docs/results/gpu/host/traces"),
        "--base",
        "h200",
        "--name",
        "h200-again",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The profile loads under its new name and predicts; its host values are the built-in
    // h200's (which were written from the same traces), its device values untouched.
    let text = std::fs::read_to_string(&out).expect("profile");
    assert!(text.contains("name = \"h200-again\""), "{text}");
    let p = costsim(&[
        "predict",
        "--hw",
        out.to_str().expect("utf-8"),
        "--model",
        "gpt2",
        "--method",
        "lora",
        "--format",
        "json",
    ]);
    let q = costsim(&[
        "predict", "--hw", "h200", "--model", "gpt2", "--method", "lora", "--format", "json",
    ]);
    let a: Value = serde_json::from_slice(&p.stdout).expect("JSON");
    let b: Value = serde_json::from_slice(&q.stdout).expect("JSON");
    assert_eq!(
        a["predictions"][0]["step_ms"], b["predictions"][0]["step_ms"],
        "same host costs and device: same prediction"
    );
}

/// A trace profiled on this CPU (`--profile-kernels`), compared on a profile: time per kernel
/// class, each class's traced ops counted from the trace's own profile.
#[test]
fn profiled_trace_gives_time_per_kernel_kind() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/profiled-cpu-trace.json"
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args([
            "validate",
            "--trace",
            path,
            "--hw",
            "cpu-generic",
            "--format",
            "json",
        ])
        .output()
        .expect("run costsim");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let kinds = v[0]["kinds"].as_array().expect("kinds");
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("trace")).expect("trace JSON");
    for phase in ["forward", "backward"] {
        let gemm = kinds
            .iter()
            .find(|k| k["phase"] == phase && k["kind"] == "gemm")
            .unwrap_or_else(|| panic!("{phase}: no gemm row"));
        assert!(gemm["time_ms"]["predicted"].as_f64().expect("p") > 0.0);
        assert!(gemm["time_ms"]["traced"].as_f64().expect("t") > 0.0);
        // The profiler's matrix-product calls in this phase, counted from the file itself.
        let calls: u64 = raw["cuda_kernels"][phase]["by_op"]
            .as_object()
            .expect("by_op")
            .iter()
            .filter(|(op, _)| ["aten::mm", "aten::addmm", "aten::bmm"].contains(&op.as_str()))
            .map(|(_, r)| r["calls"].as_u64().expect("calls"))
            .sum();
        assert_eq!(gemm["traced_ops"].as_u64(), Some(calls), "{phase}");
    }
}

/// `--ops` on traces that were not timed op by op is a usage error naming the recording options;
/// without `--hw` it has nothing to predict with; on a timed trace it prints the ledger.
#[test]
fn op_ledger_needs_timed_traces_and_a_profile() {
    let untimed = repo("docs/results/traces/cpu/llama-lora-qv-bf16mixed.json");
    usage_error(
        &["validate", "--trace", &untimed, "--hw", "cpu", "--ops"],
        &["--ops", "--op-times N", "--profile-kernels"],
    );
    usage_error(&["validate", "--trace", &untimed, "--ops"], &["--hw"]);
    let timed =
        repo("docs/results/cpu/ledger-2026-11-29l/gpt2-narrow-deep-paca-upper-half-bf16.json");
    let o = costsim(&["validate", "--trace", &timed, "--hw", "cpu", "--ops"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("op ledger over 3 steps"), "{out}");
    for phase in ["forward ", "backward ", "optimizer "] {
        assert!(out.lines().any(|l| l.starts_with(phase)), "{phase}: {out}");
    }
}

/// `--base` takes what `--hw` takes: a built-in alias (`a100`, `cpu`), and a profile file that
/// starts from a built-in (`base = "h200"`), merged into a whole profile before its host
/// section is replaced (an audit found both refused, 2026-11-30). The file's own name is kept,
/// and with the built-in h200's device and the same traces it predicts what h200 does.
#[test]
fn host_calibration_takes_aliases_and_profiles_with_a_base() {
    let traces = repo("docs/results/gpu/host/traces");
    for alias in ["a100", "cpu"] {
        let out = tmp(&format!("alias-{alias}.toml"));
        let o = costsim(&[
            "calibrate",
            "--host",
            &traces,
            "--base",
            alias,
            "--out",
            out.to_str().expect("utf-8"),
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "--base {alias}: {}",
            common::stderr(&o)
        );
    }
    let user = tmp("lab-h200.toml");
    std::fs::write(&user, "base = \"h200\"\n[device]\nname = \"lab-h200\"\n").expect("write");
    let out = tmp("lab-h200-host.toml");
    let o = costsim(&[
        "calibrate",
        "--host",
        &traces,
        "--base",
        user.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let text = std::fs::read_to_string(&out).expect("profile");
    assert!(text.contains("name = \"lab-h200-host\""), "{text}");
    assert!(!text.contains("base ="), "a whole profile: {text}");
    let step = |hw: &str| {
        let o = costsim(&[
            "predict", "--hw", hw, "--model", "gpt2", "--method", "lora", "--format", "json",
        ]);
        let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
        v["predictions"][0]["step_ms"].clone()
    };
    assert_eq!(step(out.to_str().expect("utf-8")), step("h200"));
}

/// A trace whose numbers are not physical (negative bytes, FLOPs past 10^24, a negative
/// clipping norm, an op count past 10^9) is a usage error naming the key, not a comparison
/// (an audit got −150 630 500% from `peak_bytes = -1`, exit 0, 2026-11-30).
#[test]
fn a_trace_with_impossible_numbers_is_refused_naming_the_key() {
    let src = repo("docs/results/traces/cpu/gpt2-lora-qv-fp32.json");
    let good: Value =
        serde_json::from_str(&std::fs::read_to_string(&src).expect("trace")).expect("JSON");
    type Case = (&'static str, fn(&mut Value), &'static str);
    let cases: [Case; 6] = [
        (
            "peak",
            |v| v["phases"]["forward"]["peak_bytes"] = (-1).into(),
            "phases.forward.peak_bytes",
        ),
        (
            "flops",
            |v| v["phases"]["backward"]["flops"] = 1e308.into(),
            "phases.backward.flops",
        ),
        (
            "clip",
            |v| v["workload"]["clip_grad_norm"] = (-1.0).into(),
            "workload.clip_grad_norm",
        ),
        (
            "ops",
            |v| v["phases"]["forward"]["ops"] = u64::MAX.into(),
            "phases.forward.ops",
        ),
        (
            "saved",
            |v| v["totals"]["saved_activation_bytes"] = (-5.0).into(),
            "totals.saved_activation_bytes",
        ),
        (
            // Found in review: the optimizer's launch count overflowed on these (a panic in a
            // debug build).
            "numels",
            |v| v["foreach"][0]["numels"] = vec![1u64 << 62; 8].into(),
            "numels holds 4611686018427387904 elements",
        ),
    ];
    for (name, mutate, key) in cases {
        let mut v = good.clone();
        mutate(&mut v);
        let path = tmp(&format!("bad-{name}.json"));
        std::fs::write(&path, v.to_string()).expect("write");
        usage_error(
            &[
                "validate",
                "--trace",
                path.to_str().expect("utf-8"),
                "--hw",
                "cpu",
            ],
            &[key, "bad-"],
        );
    }
    // The trace as committed compares.
    let o = costsim(&["validate", "--trace", &src, "--hw", "cpu"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
}

/// A JSON file of another kind that costsim reads is named as that kind, with the command that
/// reads it, instead of "malformed results file" with a parser's complaint (an audit,
/// 2026-11-30).
#[test]
fn a_file_of_another_kind_is_named_with_its_command() {
    let results = repo("tests/data/results-small.json");
    let trace = repo("docs/results/traces/cpu/gpt2-lora-qv-fp32.json");
    let step =
        repo("docs/results/cpu/eager-2026-11-29q/host-here/step/run-2/gpt2-micro1-lora-all.json");
    let samples = repo("docs/results/cpu/cpu-calibration.json");
    let out = tmp("kind.toml");
    let out = out.to_str().expect("utf-8");
    for (args, said) in [
        (vec!["validate", "--trace", &results, "--hw", "cpu"], "a results file, not a trace; read it with `costsim validate --from`"),
        (vec!["validate", "--from", &trace], "a trace, not a results file; read it with `costsim validate --trace`"),
        (vec!["validate", "--steps", &trace, "--hw", "cpu"], "a trace, not a Trainer step record"),
        (vec!["calibrate", "--from", &step, "--out", out], "a Trainer step record, not calibration samples; read it with `costsim validate --steps`"),
        (vec!["validate", "--from", &samples], "calibration samples, not a results file; read it with `costsim calibrate --from`"),
    ] {
        usage_error(&args, &[said]);
    }
    // A file of no known kind keeps the parser's message, under the kind it was read as.
    let odd = tmp("odd.json");
    std::fs::write(&odd, r#"{"schema": 1, "x": 2}"#).expect("write");
    usage_error(
        &["validate", "--from", odd.to_str().expect("utf-8")],
        &["malformed results file", "missing field"],
    );
}

/// A trace named twice (twice over, or by name and in its folder) is compared once: it would
/// count twice in every mean.
#[test]
fn a_trace_named_twice_counts_once() {
    let t = repo("docs/results/traces/cpu/gpt2-lora-qv-fp32.json");
    let dir = repo("docs/results/traces/cpu");
    let rows = |args: &[&str]| {
        let o = costsim(args);
        assert!(o.status.success(), "{}", common::stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
        v.as_array().map_or(0, Vec::len)
    };
    let once = rows(&["validate", "--trace", &t, "--hw", "cpu", "--format", "json"]);
    let twice = format!("{t},{t}");
    assert_eq!(
        rows(&["validate", "--trace", &twice, "--hw", "cpu", "--format", "json"]),
        once
    );
    let folder = rows(&[
        "validate", "--trace", &dir, "--hw", "cpu", "--format", "json",
    ]);
    let both = format!("{t},{dir}");
    assert_eq!(
        rows(&["validate", "--trace", &both, "--hw", "cpu", "--format", "json"]),
        folder
    );
    assert!(once >= 1 && folder > once);
}
