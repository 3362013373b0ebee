//! End-to-end tests of what issue 11 added to the CLI: `costsim hardware show`, profile files
//! that start from a built-in one (`base = "NAME"`), examples in every `--help`, `--format`
//! values a command cannot print refused with exit 2, run cost from a price, and charts that
//! mark what does not fit.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test, with its location

mod common;

use common::{costsim, stderr, stdout_ok as ok, tmp_in, usage_error};

use serde_json::Value;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    tmp_in("features-cli", name)
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("JSON")
}

const GIB: f64 = 1073741824.0;

#[test]
fn hardware_show_prints_the_builtin_file_which_loads_as_the_same_profile() {
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/hardware/profiles/a100-80gb-sxm.toml"
    ))
    .unwrap();
    // By alias and by name, case-insensitive: the file as compiled in.
    assert_eq!(ok(&["hardware", "show", "a100"]), file);
    assert_eq!(ok(&["hardware", "show", "A100-80GB-SXM"]), file);
    // The printed text, saved and loaded with --hw FILE, predicts what the built-in does.
    let path = tmp("shown-a100.toml");
    std::fs::write(&path, ok(&["hardware", "show", "a100"])).unwrap();
    let step = |hw: &str| {
        json(&[
            "predict", "--hw", hw, "--model", "gpt2", "--method", "lora", "--format", "json",
        ])["predictions"][0]["step_ms"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(step(path.to_str().unwrap()), step("a100"));
    usage_error(
        &["hardware", "show", "a10O"],
        &["unknown GPU 'a10O'", "did you mean 'a100'"],
    );
    // `show` takes built-in names only: no hint about --hw, and a file is named as one.
    let o = costsim(&["hardware", "show", "a10O"]);
    assert!(!stderr(&o).contains("--hw"), "{}", stderr(&o));
    usage_error(
        &["hardware", "show", path.to_str().unwrap()],
        &["`hardware show` prints a built-in profile", "is a file"],
    );
    // The listing still works, and `show` takes no --format.
    assert!(ok(&["hardware"]).contains("a6000"));
    usage_error(
        &["hardware", "show", "a100", "--format", "json"],
        &["--format"],
    );
}

#[test]
fn a_profile_file_can_start_from_a_builtin_one() {
    let path = tmp("a6000-96.toml");
    std::fs::write(
        &path,
        "base = \"a6000\"\n[device]\nmemory-gib = 96\n[peak]\nbandwidth-gbps = 1536\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let args = |hw: &str| {
        json(&[
            "predict",
            "--hw",
            hw,
            "--model",
            "llama2-7b",
            "--method",
            "full",
            "--format",
            "json",
        ])
    };
    let custom = args(p);
    let base = args("a6000");
    assert_eq!(custom["hardware"]["name"], "a6000-custom");
    assert_eq!(
        custom["hardware"]["memory_bytes"].as_f64(),
        Some(96.0 * GIB)
    );
    assert_eq!(base["hardware"]["memory_bytes"].as_f64(), Some(48.0 * GIB));
    // The verdict is peak + 1 GiB reserve against the capacity the file gives.
    let peak = base["predictions"][0]["peak_memory_bytes"]
        .as_f64()
        .unwrap();
    assert_eq!(
        custom["predictions"][0]["peak_memory_bytes"]
            .as_f64()
            .unwrap(),
        peak,
        "memory capacity does not change the peak"
    );
    assert_eq!(
        custom["predictions"][0]["fits"].as_bool().unwrap(),
        peak + GIB <= 96.0 * GIB
    );
    // Twice the bandwidth: no memory-bound time can grow.
    let ms = |v: &Value| v["predictions"][0]["step_ms"].as_f64().unwrap();
    assert!(ms(&custom) < ms(&base), "{} vs {}", ms(&custom), ms(&base));
    std::fs::write(&path, "base = \"b9000\"\n").unwrap();
    usage_error(
        &["predict", "--hw", p, "--model", "gpt2"],
        &[p, "names no built-in profile", "costsim hardware"],
    );
}

#[test]
fn every_subcommand_help_has_examples() {
    for cmd in [
        vec!["predict"],
        vec!["models"],
        vec!["hardware"],
        vec!["hardware", "show"],
        vec!["validate"],
        vec!["sweep"],
        vec!["crossover"],
        vec!["plot"],
        vec!["plot", "breakdown"],
        vec!["plot", "methods"],
        vec!["plot", "heatmap"],
        vec!["plot", "scatter"],
        vec!["calibrate"],
        vec!["fit"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let help = ok(&args);
        let want = format!("Examples:\n  costsim {}", cmd[0]);
        assert!(
            help.contains(&want),
            "{cmd:?} --help has no examples:\n{help}"
        );
    }
}

#[test]
fn a_format_a_command_cannot_print_is_refused() {
    usage_error(
        &[
            "crossover",
            "--model",
            "gpt2",
            "--hw",
            "a100",
            "--vary",
            "seq",
            "--format",
            "csv",
        ],
        &["crossover cannot print --format csv", "table or json"],
    );
    usage_error(
        &[
            "crossover",
            "--model",
            "gpt2",
            "--hw",
            "a100",
            "--vary",
            "seq",
            "--format",
            "markdown",
        ],
        &["crossover cannot print --format markdown"],
    );
    let results = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/results/cpu/heldout-gpt2.json"
    );
    usage_error(
        &["validate", "--from", results, "--format", "csv"],
        &[
            "validate cannot print --format csv",
            "table or json or markdown",
        ],
    );
    // The formats it can print still work.
    assert!(ok(&["validate", "--from", results, "--format", "markdown"]).contains('|'));
    let traces = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/results/traces/cpu");
    usage_error(
        &["validate", "--trace", traces, "--format", "markdown"],
        &["validate --trace cannot print --format markdown"],
    );
}

fn predict_one(args: &[&str]) -> Value {
    let mut a = vec!["predict", "--format", "json"];
    a.extend_from_slice(args);
    json(&a)["predictions"][0].clone()
}

#[test]
fn heatmap_marks_the_cells_that_do_not_fit() {
    let data = tmp("oom-heat.json");
    let svg = tmp("oom-heat.svg");
    let o = costsim(&[
        "plot",
        "heatmap",
        "--model",
        "llama2-7b",
        "--hw",
        "a6000",
        "--x",
        "seq",
        "--x-range",
        "512..4096:x8",
        "--y",
        "batch",
        "--y-range",
        "1..64:x64",
        "--out",
        svg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // plot says what it wrote.
    assert_eq!(
        stderr(&o).trim(),
        format!("wrote {} and {}", svg.display(), data.display())
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    // Batch is an axis, so the title names the fixed rank instead.
    assert!(
        v["title"].as_str().unwrap().contains("rank 8"),
        "{}",
        v["title"]
    );
    let listed = v["does_not_fit"].as_array().expect("some cells do not fit");
    // Every cell, checked against two `costsim predict` runs: listed exactly when LoRA or full
    // does not fit, with the methods that do not.
    for seq in [512u64, 4096] {
        for batch in [1u64, 64] {
            let (s, b) = (seq.to_string(), batch.to_string());
            let fits = |method: &str| {
                predict_one(&[
                    "--model",
                    "llama2-7b",
                    "--hw",
                    "a6000",
                    "--method",
                    method,
                    "--rank",
                    "8",
                    "--seq",
                    &s,
                    "--batch",
                    &b,
                ])["fits"]
                    .as_bool()
                    .unwrap()
            };
            let want: Vec<&str> = [("lora", fits("lora")), ("full", fits("full"))]
                .into_iter()
                .filter(|(_, f)| !f)
                .map(|(m, _)| m)
                .collect();
            let got: Vec<&str> = listed
                .iter()
                .find(|c| c["x"] == seq && c["y"] == batch)
                .map(|c| {
                    c["methods"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| m.as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(got, want, "seq {seq} batch {batch}");
        }
    }
    // The case: batch 64 x seq 4096 fits neither.
    assert!(listed
        .iter()
        .any(|c| c["x"] == 4096 && c["y"] == 64 && c["methods"].as_array().unwrap().len() == 2));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("OOM"), "the SVG labels the cells");
    assert!(
        text.contains("does not fit in memory"),
        "the SVG explains the hatching"
    );
}

#[test]
fn breakdown_marks_methods_that_do_not_fit_and_can_share_the_y_scale() {
    let data = tmp("oom-breakdown.json");
    let svg = tmp("oom-breakdown.svg");
    let args = [
        "--model",
        "llama2-7b",
        "--hw",
        "a6000",
        "--batch",
        "8",
        "--seq",
        "512",
    ];
    let mut a = vec!["plot", "breakdown"];
    a.extend_from_slice(&args);
    a.extend_from_slice(&["--method", "all", "--shared-y"]);
    a.extend_from_slice(&[
        "--out",
        svg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    ok(&a);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    let mut p = vec!["--method", "all"];
    p.extend_from_slice(&args);
    let mut pa = vec!["predict", "--format", "json"];
    pa.extend_from_slice(&p);
    let preds = json(&pa)["predictions"].as_array().unwrap().clone();
    let not_fitting: Vec<&Value> = preds.iter().filter(|p| p["fits"] == false).collect();
    assert!(
        !not_fitting.is_empty(),
        "full fine-tuning of llama2-7b does not fit an A6000"
    );
    let marked = v["does_not_fit"].as_array().unwrap();
    assert_eq!(marked.len(), not_fitting.len());
    for (m, p) in marked.iter().zip(&not_fitting) {
        assert_eq!(m["method"], p["method"]);
        let peak = p["peak_memory_bytes"].as_f64().unwrap() / GIB;
        assert!((m["peak_gib"].as_f64().unwrap() - peak).abs() < 1e-9);
        // 48 GiB less the 1 GiB reserve.
        assert_eq!(m["usable_gib"].as_f64(), Some(47.0));
    }
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(
        text.matches("DOES NOT FIT").count(),
        2 * not_fitting.len(),
        "both panels of each method that does not fit are marked"
    );
    // One y-scale: every one of the 10 panels carries the same top tick label.
    let top = |t: &str| {
        let ticks: Vec<f64> = t
            .split("<text")
            .filter_map(|e| e.split('>').nth(1)?.split('<').next()?.trim().parse().ok())
            .collect();
        let max = ticks.iter().cloned().fold(0.0f64, f64::max);
        (max, ticks.iter().filter(|x| **x == max).count())
    };
    let (max, panels) = top(&text);
    assert_eq!(panels, 10, "top tick {max} on every panel");
    // Without --shared-y each method has its own scale: the top tick appears on fewer panels.
    a.retain(|x| *x != "--shared-y");
    ok(&a);
    let (_, panels) = top(&std::fs::read_to_string(&svg).unwrap());
    assert!(panels < 10, "{panels}");
}

#[test]
fn chart_options_that_do_nothing_are_refused() {
    let out = tmp("never.svg");
    let o = out.to_str().unwrap();
    for (extra, name) in [
        (vec!["--tokens", "1e9"], "--tokens"),
        (vec!["--samples", "5"], "--samples"),
        (vec!["--per-layer"], "--per-layer"),
        (vec!["--kernels"], "--kernels"),
        (vec!["--price", "2"], "--price"),
        (vec!["--format", "json"], "--format"),
    ] {
        for chart in ["breakdown", "methods"] {
            let mut a = vec!["plot", chart, "--model", "gpt2", "--hw", "a100", "--out", o];
            a.extend_from_slice(&extra);
            usage_error(&a, &[&format!("{name} does nothing for `plot {chart}`")]);
        }
    }
    usage_error(
        &[
            "plot",
            "heatmap",
            "--model",
            "gpt2",
            "--hw",
            "a100",
            "--y",
            "batch",
            "--y-range",
            "1..8:x2",
            "--batch",
            "4",
            "--out",
            o,
        ],
        &["--batch does nothing here", "--y-range"],
    );
    usage_error(
        &[
            "plot", "heatmap", "--model", "gpt2", "--hw", "a100", "--seq", "256", "--out", o,
        ],
        &["--seq does nothing here", "--x-range"],
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn crossover_says_which_points_and_crossings_do_not_fit() {
    let args = [
        "crossover",
        "--model",
        "tinyllama-1.1b",
        "--hw",
        "l4",
        "--vary",
        "seq",
        "--optimizer",
        "adamw",
    ];
    let mut a = args.to_vec();
    a.extend_from_slice(&["--format", "json"]);
    let v = json(&a);
    // A second path for every verdict: `costsim predict` at batch 8 (crossover's default).
    let fits = |method: &str, seq: u64| {
        predict_one(&[
            "--model",
            "tinyllama-1.1b",
            "--hw",
            "l4",
            "--method",
            method,
            "--rank",
            "8",
            "--seq",
            &seq.to_string(),
            "--optimizer",
            "adamw",
        ])["fits"]
            .as_bool()
            .unwrap()
    };
    let listed = v["does_not_fit"]
        .as_array()
        .expect("some points do not fit");
    for p in v["comparisons"][0]["points"].as_array().unwrap() {
        let seq = p[0].as_u64().unwrap();
        let want: Vec<&str> = ["lora", "full", "paca"]
            .into_iter()
            .filter(|m| !fits(m, seq))
            .collect();
        let got: Vec<&str> = listed
            .iter()
            .find(|n| n["value"] == seq)
            .map(|n| {
                n["methods"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(got, want, "seq {seq}");
    }
    // The crossing against full: marked with the methods that do not fit on either side.
    let x = &v["comparisons"][0]["crossings"][0];
    let (before, after) = (x["before"].as_u64().unwrap(), x["after"].as_u64().unwrap());
    let want: Vec<&str> = ["lora", "full"]
        .into_iter()
        .filter(|m| !(fits(m, before) && fits(m, after)))
        .collect();
    assert!(
        !want.is_empty(),
        "full fine-tuning of tinyllama at seq ~700 overflows an L4"
    );
    assert_eq!(x["does_not_fit"], serde_json::json!(want));
    // The table says so in words.
    let text = ok(&args);
    assert!(text.contains("Does not fit in memory on l4"), "{text}");
    assert!(
        text.contains(&format!(
            "The crossover LoRA vs full between seq {before} and {after} is predicted for a \
             configuration that does not fit"
        )),
        "{text}"
    );
    // Where everything fits, nothing is added.
    let small = [
        "crossover",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--vary",
        "seq",
    ];
    assert!(!ok(&small).contains("Does not fit"));
    let mut a = small.to_vec();
    a.extend_from_slice(&["--format", "json"]);
    assert!(json(&a).get("does_not_fit").is_none());
}

/// The a100 profile's price, read from its file (a second path besides the tool's own).
fn a100_price() -> f64 {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/hardware/profiles/a100-80gb-sxm.toml"
    ))
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("usd-per-hour = "))
        .expect("a100-80gb-sxm.toml has a price")
        .parse()
        .unwrap()
}

#[test]
fn a_run_is_costed_at_the_profile_price_or_at_price() {
    let run = [
        "predict",
        "--hw",
        "a100",
        "--model",
        "gpt2",
        "--method",
        "lora",
        "--samples",
        "100000",
    ];
    fn with<'a>(run: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = run.to_vec();
        a.extend_from_slice(extra);
        a
    }
    let with = |extra: &[&'static str]| with(&run, extra);
    // The profile's price: cost = run seconds / 3600 × $/h.
    let v = json(&with(&["--format", "json"]));
    let seconds = v["predictions"][0]["training"]["seconds"].as_f64().unwrap();
    let price = a100_price();
    let cost = &v["run_cost"];
    assert_eq!(cost["price"]["usd_per_hour"].as_f64(), Some(price));
    assert_eq!(cost["price"]["date"], "2026-11-09");
    assert!(cost["price"]["source"].as_str().unwrap().contains("AWS"));
    let usd = cost["methods"][0]["usd"].as_f64().unwrap();
    assert!((usd - seconds / 3600.0 * price).abs() < 1e-9, "{usd}");
    // --price overrides it, in every format.
    let v = json(&with(&["--price", "2", "--format", "json"]));
    assert_eq!(v["run_cost"]["price"]["source"], "--price");
    let want = seconds / 3600.0 * 2.0;
    assert!((v["run_cost"]["methods"][0]["usd"].as_f64().unwrap() - want).abs() < 1e-9);
    let csv = common::csv_records(&ok(&with(&["--price", "2", "--format", "csv"])));
    assert_eq!(csv[0]["run_cost_usd"], format!("{want:.2}"));
    let table = ok(&with(&["--price", "2"]));
    let line = table.lines().find(|l| l.starts_with("run cost")).unwrap();
    assert_eq!(
        line.split_whitespace().last(),
        Some(format!("${want:.2}").as_str())
    );
    assert!(
        table.contains("price: $2 per GPU-hour (--price)"),
        "{table}"
    );
    // No price known (the L4 profile has none): the table says how to give one.
    let l4 = [
        "predict", "--hw", "l4", "--model", "gpt2", "--method", "lora", "--tokens", "1e8",
    ];
    let table = ok(&l4);
    let line = table.lines().find(|l| l.starts_with("run cost")).unwrap();
    assert!(line.ends_with("no price: pass --price"), "{line}");
    let mut a = l4.to_vec();
    a.extend_from_slice(&["--format", "json"]);
    let v = json(&a);
    assert!(v["run_cost"]["price"].is_null());
    assert_eq!(v["run_cost"]["note"], "no price: pass --price");
    assert!(v["run_cost"]["methods"][0]["usd"].is_null());
    a.truncate(l4.len());
    a.extend_from_slice(&["--format", "csv"]);
    assert_eq!(common::csv_records(&ok(&a))[0]["run_cost_usd"], "");
    // Without a run there is nothing to cost: no run_cost, and --price alone is refused.
    let one = json(&[
        "predict", "--hw", "a100", "--model", "gpt2", "--format", "json",
    ]);
    assert!(one.get("run_cost").is_none());
    usage_error(
        &["predict", "--hw", "a100", "--model", "gpt2", "--price", "2"],
        &["--price costs a whole run", "--tokens"],
    );
    // (`--price=-1`: clap reads a bare `-1` as an option.)
    for bad in ["-1", "abc", "nan", "1e9"] {
        let flag = format!("--price={bad}");
        usage_error(
            &[
                "predict",
                "--hw",
                "a100",
                "--model",
                "gpt2",
                "--samples",
                "5",
                &flag,
            ],
            &["invalid value", "--price"],
        );
    }
}

#[test]
fn fit_costs_a_million_tokens_at_the_answer() {
    let v = json(&[
        "fit", "--model", "gpt2", "--hw", "a100,l4", "--method", "lora", "--format", "json",
    ]);
    let rows = v.as_array().unwrap();
    // a100 has a price: $/h / 3600 / (tokens/s) × 10^6; l4 has none.
    let a100 = rows.iter().find(|r| r["hw"] == "a100-80gb-sxm").unwrap();
    let tps = a100["tokens_per_s"].as_f64().unwrap();
    let want = a100_price() / 3600.0 / tps * 1e6;
    assert!((a100["usd_per_million_tokens"].as_f64().unwrap() - want).abs() < 1e-9);
    let l4 = rows.iter().find(|r| r["hw"] == "l4").unwrap();
    assert!(l4.get("usd_per_million_tokens").is_none());
    // --price applies to every GPU listed.
    let v = json(&[
        "fit", "--model", "gpt2", "--hw", "l4", "--method", "lora", "--price", "0.8", "--format",
        "json",
    ]);
    let r = &v[0];
    let want = 0.8 / 3600.0 / r["tokens_per_s"].as_f64().unwrap() * 1e6;
    assert!((r["usd_per_million_tokens"].as_f64().unwrap() - want).abs() < 1e-9);
    let table = ok(&[
        "fit", "--model", "gpt2", "--hw", "l4", "--method", "lora", "--price", "0.8",
    ]);
    assert!(table.contains("usd_per_mtok"), "{table}");
}
