//! `costsim plot`, `sweep` and `crossover` end to end: files are written and well-formed, the
//! data behind each chart agrees with `costsim predict` / `costsim validate`, and is snapshotted
//! (numbers rounded to 6 significant digits so the snapshots hold the model, not float noise).

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn costsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(args)
        .output()
        .expect("run costsim")
}

fn ok(args: &[&str]) -> String {
    let o = costsim(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("charts");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

fn round(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(0.0);
            if x != 0.0 {
                let digits = 6 - (x.abs().log10().floor() as i32 + 1);
                let f = 10f64.powi(digits);
                *v = serde_json::json!((x * f).round() / f);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(round),
        Value::Object(o) => o.values_mut().for_each(round),
        _ => {}
    }
}

fn snapshot(name: &str, path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).expect("chart data");
    let mut v: Value = serde_json::from_str(&text).expect("chart data is JSON");
    let raw = v.clone();
    round(&mut v);
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_snapshot_path("snapshots/charts");
    settings.bind(|| insta::assert_json_snapshot!(name, v));
    raw
}

fn assert_svg(path: &PathBuf, min_rects: usize) {
    let svg = std::fs::read_to_string(path).expect("svg written");
    assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<text"), "labels are drawn");
    let rects = svg.matches("<rect").count();
    assert!(rects >= min_rects, "{rects} rects");
    // Balanced elements: every opened <g> is closed.
    assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
    // No temporary file is left beside it.
    let mut t = path.as_os_str().to_owned();
    t.push(".tmp");
    assert!(!PathBuf::from(t).exists());
}

fn assert_png(path: &PathBuf, w: u32, h: u32) {
    let b = std::fs::read(path).expect("png written");
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&b[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    assert_eq!((be(16), be(20)), (w, h));
}

fn predict_json(args: &[&str]) -> Value {
    let mut a = vec!["predict", "--format", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(&a)).expect("json")
}

#[test]
fn breakdown_chart() {
    let (svg, data) = (tmp("breakdown.svg"), tmp("breakdown.json"));
    let args = [
        "--model", "gpt2", "--hw", "a100", "--method", "lora", "--batch", "4", "--seq", "256",
    ];
    let mut a = vec!["plot", "breakdown"];
    a.extend_from_slice(&args);
    a.extend_from_slice(&[
        "--out",
        svg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    ok(&a);
    // 12 layers + embedding, head, optimizer; 2 panels of stacked bars.
    assert_svg(&svg, 2 * 15);
    let v = snapshot("breakdown_gpt2_lora_a100", &data);
    let scopes = v["methods"][0][1].as_array().expect("scopes");
    assert_eq!(scopes.len(), 15);
    let total: f64 = scopes
        .iter()
        .map(|s| {
            ["compute_ms", "memory_ms", "launch_ms", "host_wait_ms"]
                .iter()
                .map(|k| s[k].as_f64().unwrap())
                .sum::<f64>()
        })
        .sum();
    let p = predict_json(&args);
    let step = p["predictions"][0]["step_ms"].as_f64().unwrap();
    assert!((total - step).abs() < 1e-6 * step, "{total} vs {step}");
}

#[test]
fn methods_chart_svg_and_png() {
    let (svg, png, data) = (tmp("methods.svg"), tmp("methods.png"), tmp("methods.json"));
    let args = [
        "--model",
        "tinyllama-1.1b",
        "--hw",
        "l4",
        "--batch",
        "2",
        "--seq",
        "512",
    ];
    for out in [&svg, &png] {
        let mut a = vec!["plot", "methods"];
        a.extend_from_slice(&args);
        a.extend_from_slice(&[
            "--out",
            out.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]);
        ok(&a);
    }
    assert_svg(&svg, 15);
    assert_png(&png, 900, 520);
    let v = snapshot("methods_tinyllama_l4", &data);
    let p = predict_json(&args);
    for (bar, pred) in v["bars"]
        .as_array()
        .unwrap()
        .iter()
        .zip(p["predictions"].as_array().unwrap())
    {
        assert_eq!(bar["method"], pred["method"]);
        assert_eq!(bar["step_ms"], pred["step_ms"]);
        let sum: f64 = ["forward_ms", "backward_ms", "optimizer_ms"]
            .iter()
            .map(|k| bar[k].as_f64().unwrap())
            .sum();
        // grad_accum 1 and one stream: the phases add up to the step.
        assert!((sum - pred["step_ms"].as_f64().unwrap()).abs() < 1e-6);
    }
}

#[test]
fn heatmap_chart_with_contour() {
    let (svg, data) = (tmp("heatmap.svg"), tmp("heatmap.json"));
    ok(&[
        "plot",
        "heatmap",
        "--model",
        "gpt2-medium",
        "--hw",
        "a100",
        "--x-range",
        "128..1024:x2",
        "--y-range",
        "4..64:x4",
        "--out",
        svg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_svg(&svg, 4 * 3);
    let v = snapshot("heatmap_gpt2-medium_a100_seq_rank", &data);
    assert_eq!(v["xs"], serde_json::json!([128, 256, 512, 1024]));
    assert_eq!(v["ys"], serde_json::json!([4, 16, 64]));
    // One cell against two predictions: seq 512, rank 16.
    let lora = predict_json(&[
        "--model",
        "gpt2-medium",
        "--hw",
        "a100",
        "--method",
        "lora",
        "--rank",
        "16",
        "--seq",
        "512",
    ]);
    let full = predict_json(&[
        "--model",
        "gpt2-medium",
        "--hw",
        "a100",
        "--method",
        "full",
        "--seq",
        "512",
    ]);
    let ratio = lora["predictions"][0]["step_ms"].as_f64().unwrap()
        / full["predictions"][0]["step_ms"].as_f64().unwrap();
    // The heatmap's sweep path and two single predictions sum in different orders: equal to
    // rounding.
    let cell = v["ratio"][1][2].as_f64().unwrap();
    assert!((cell - ratio).abs() <= 1e-12 * ratio, "{cell} vs {ratio}");
    // Marching squares, checked point by point: every contour point lies on the segment between
    // two neighbouring cell centres (centres at index + 0.5) whose ratios straddle 1, at the
    // linearly interpolated position.
    let r = |j: usize, i: usize| v["ratio"][j][i].as_f64().unwrap();
    let segs = v["contour"].as_array().unwrap();
    assert!(!segs.is_empty());
    for s in segs {
        for p in s.as_array().unwrap() {
            let (x, y) = (p[0].as_f64().unwrap() - 0.5, p[1].as_f64().unwrap() - 0.5);
            let on = |a: f64, b: f64| (a - b).abs() < 1e-9;
            let ok = if on(y, y.round()) {
                let (j, i) = (y.round() as usize, x.floor() as usize);
                let (a, b) = (r(j, i), r(j, i + 1));
                (a - 1.0) * (b - 1.0) <= 0.0 && on(x, i as f64 + (1.0 - a) / (b - a))
            } else {
                let (i, j) = (x.round() as usize, y.floor() as usize);
                let (a, b) = (r(j, i), r(j + 1, i));
                on(x, x.round())
                    && (a - 1.0) * (b - 1.0) <= 0.0
                    && on(y, j as f64 + (1.0 - a) / (b - a))
            };
            assert!(ok, "contour point {p} is not an interpolated crossing");
        }
    }
}

#[test]
fn scatter_chart_from_validation_results() {
    let (svg, data) = (tmp("scatter.svg"), tmp("scatter.json"));
    let results = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/results-small.json");
    ok(&[
        "plot",
        "scatter",
        "--from",
        results,
        "--out",
        svg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_svg(&svg, 1);
    let v = snapshot("scatter_results_small", &data);
    let report: Value =
        serde_json::from_str(&ok(&["validate", "--from", results, "--format", "json"])).unwrap();
    let measured: usize = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["phases"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| !p.is_null())
                .count()
        })
        .sum();
    assert_eq!(v["points"].as_array().unwrap().len(), measured);
    assert!(svg.exists());
}

#[test]
fn plot_errors_are_usage_errors() {
    let o = costsim(&[
        "plot", "methods", "--model", "gpt2", "--hw", "a100", "--out", "x.gif",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(".svg or .png"));
    let o = costsim(&[
        "plot", "heatmap", "--model", "gpt2", "--hw", "a100", "--x", "seq", "--y", "seq", "--out",
        "x.svg",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = costsim(&[
        "plot",
        "scatter",
        "--from",
        "/nonexistent.json",
        "--out",
        "x.svg",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!PathBuf::from("x.svg").exists() && !PathBuf::from("x.gif").exists());
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
    let lines: Vec<&str> = csv.lines().collect();
    // full: 1 rank, lora: 2 → 3 × 2 models × 2 hw × 3 seq × 2 batch = 72 points.
    assert_eq!(lines.len(), 1 + 72);
    assert!(lines[0].starts_with("model,hw,method,batch,seq,rank,"));
    // gpt2 has 1024 positions: seq 2048 rows are invalid and say why.
    let invalid: Vec<_> = lines.iter().filter(|l| l.contains(",invalid,")).collect();
    assert_eq!(invalid.len(), 3 * 2 * 2);
    assert!(invalid
        .iter()
        .all(|l| l.starts_with("gpt2,") && l.contains("positions")));
    // A point agrees with `costsim predict`.
    let p = predict_json(&[
        "--model",
        "tinyllama-1.1b",
        "--hw",
        "l4",
        "--method",
        "lora",
        "--rank",
        "16",
        "--seq",
        "1024",
        "--batch",
        "4",
    ]);
    let row = lines
        .iter()
        .find(|l| l.starts_with("tinyllama-1.1b,l4,lora,4,1024,16,"))
        .expect("row");
    let step: f64 = row.split(',').nth(9).unwrap().parse().unwrap();
    let want = p["predictions"][0]["step_ms"].as_f64().unwrap();
    assert!((step - want).abs() < 1e-6, "{step} vs {want}");
}

#[test]
fn sweep_writes_json_atomically_and_rejects_bad_ranges() {
    let out = tmp("sweep.json");
    ok(&[
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
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // 4 seq values × (full + 4 ranked methods with one rank each).
    assert_eq!(v.as_array().unwrap().len(), 4 * 5);
    for bad in ["4..1", "1..8:x1", "a"] {
        let o = costsim(&["sweep", "--model", "gpt2", "--hw", "a100", "--seq", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--seq"));
    }
}

#[test]
fn crossover_finds_and_explains_the_seq_crossing() {
    let text = ok(&[
        "crossover",
        "--model",
        "gpt2-medium",
        "--hw",
        "a100",
        "--vary",
        "seq",
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
        "gpt2-medium",
        "--hw",
        "a100",
        "--vary",
        "seq",
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
            "gpt2-medium",
            "--hw",
            "a100",
            "--method",
            "lora",
            "--seq",
            &s,
        ]);
        let f = predict_json(&[
            "--model",
            "gpt2-medium",
            "--hw",
            "a100",
            "--method",
            "full",
            "--seq",
            &s,
        ]);
        l["predictions"][0]["step_ms"].as_f64().unwrap()
            / f["predictions"][0]["step_ms"].as_f64().unwrap()
    };
    assert!(ratio(before) < 1.0 && ratio(after) >= 1.0);
}
