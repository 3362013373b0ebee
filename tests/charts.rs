//! `costsim plot`, `sweep` and `crossover` end to end: files are written and well-formed, the
//! data behind each chart agrees with `costsim predict` / `costsim validate`, and is snapshotted
//! (numbers rounded to 6 significant digits so the snapshots hold the model, not float noise).

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test, with its location

mod common;

use common::{csv_records, f};
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

/// The elements of an SVG document, in order: (name, attributes). Panics unless every tag
/// opened is closed in order (an XML-ish well-formedness check: attribute values quoted, no
/// stray `<` in text).
fn svg_elements(svg: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        assert!(!text.contains('>'), "stray '>' in text: {text}");
        let end = rest[i..].find('>').expect("unterminated tag") + i;
        let tag = &rest[i + 1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                open.pop().as_deref(),
                Some(name.trim()),
                "misnested </{name}>"
            );
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, mut attrs_text) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "bad element name '{name}'"
        );
        let mut attrs = Vec::new();
        loop {
            attrs_text = attrs_text.trim_start();
            if attrs_text.is_empty() {
                break;
            }
            let (key, after) = attrs_text
                .split_once("=\"")
                .expect("attribute without a quoted value");
            let (value, after) = after.split_once('"').expect("unterminated attribute value");
            attrs.push((key.trim().to_string(), value.to_string()));
            attrs_text = after;
        }
        if !self_closing {
            open.push(name.to_string());
        }
        out.push((name.to_string(), attrs));
    }
    assert!(rest.trim().is_empty(), "text after the root element");
    assert!(open.is_empty(), "unclosed elements: {open:?}");
    assert_eq!(
        out.first().map(|e| e.0.as_str()),
        Some("svg"),
        "root is not <svg>"
    );
    out
}

fn attr<'a>(e: &'a (String, Vec<(String, String)>), key: &str) -> &'a str {
    e.1.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("<{}> has no {key}", e.0))
}

fn assert_svg(path: &PathBuf, min_rects: usize) {
    let svg = std::fs::read_to_string(path).expect("svg written");
    assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
    svg_elements(&svg);
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
    // 12 layers + embedding, head, optimizer and the Trainer loop; 2 panels of stacked bars.
    assert_svg(&svg, 2 * 16);
    let v = snapshot("breakdown_gpt2_lora_a100", &data);
    let scopes = v["methods"][0][1].as_array().expect("scopes");
    assert_eq!(scopes.len(), 16);
    assert_eq!(scopes[15]["scope"], "loop");
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
        assert_eq!(bar["loop_ms"], pred["loop_ms"]);
        let sum: f64 = ["forward_ms", "backward_ms", "optimizer_ms", "loop_ms"]
            .iter()
            .map(|k| bar[k].as_f64().unwrap())
            .sum();
        // grad_accum 1 and one stream: the phases and the Trainer loop add up to the step.
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
        // A hand-written loop: under a Trainer LoRA is slower everywhere here (no contour).
        "--loop",
        "bare",
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
        "--loop",
        "bare",
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
        "--loop",
        "bare",
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
    // The points are exactly the (predicted, measured) pairs `costsim validate` reports, row by
    // row and phase by phase, identified by config, method and phase name.
    let report: Value =
        serde_json::from_str(&ok(&["validate", "--from", results, "--format", "json"])).unwrap();
    let mut want = Vec::new();
    for r in report["rows"].as_array().unwrap() {
        for (phase, pm) in ["forward", "backward", "optimizer", "step"]
            .iter()
            .zip(r["phases"].as_array().unwrap())
        {
            if !pm.is_null() {
                want.push((
                    r["config"].as_str().unwrap().to_string(),
                    r["method"].as_str().unwrap().to_string(),
                    phase.to_string(),
                    pm[0].as_f64().unwrap(),
                    pm[1].as_f64().unwrap(),
                ));
            }
        }
    }
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), want.len());
    assert!(want.len() >= 8, "the results file has measured phases");
    for (p, (config, method, phase, pred, meas)) in points.iter().zip(&want) {
        assert_eq!(p["config"].as_str(), Some(config.as_str()));
        assert_eq!(p["method"].as_str(), Some(method.as_str()));
        assert_eq!(p["phase"].as_str(), Some(phase.as_str()));
        assert_eq!(p["predicted_ms"].as_f64(), Some(*pred), "{p}");
        assert_eq!(p["measured_ms"].as_f64(), Some(*meas), "{p}");
    }
    // The SVG: one circle per point, drawn phase by phase in one colour each, then one legend
    // marker per phase. Each point sits at (measured, predicted) on log axes: pixel x is an
    // affine function of ln(measured) with a positive slope, pixel y of ln(predicted) with a
    // negative one (SVG y grows downwards), to within the 1 px the backend rounds to.
    let text = std::fs::read_to_string(&svg).unwrap();
    let elements = svg_elements(&text);
    let circles: Vec<_> = elements.iter().filter(|e| e.0 == "circle").collect();
    assert_eq!(circles.len(), want.len() + 4, "points + 4 legend markers");
    let mut drawn = Vec::new();
    for phase in ["forward", "backward", "optimizer", "step"] {
        drawn.extend(want.iter().filter(|w| w.2 == phase));
    }
    let num = |c: &(String, Vec<(String, String)>), k: &str| -> f64 {
        attr(c, k).parse().expect("numeric attribute")
    };
    let mut fill_of_phase: Vec<(String, String)> = Vec::new();
    for (c, w) in circles.iter().zip(&drawn) {
        let fill = attr(c, "fill").to_string();
        match fill_of_phase.iter().find(|(p, _)| *p == w.2) {
            Some((_, f)) => assert_eq!(*f, fill, "{} points share one colour", w.2),
            None => {
                assert!(
                    fill_of_phase.iter().all(|(_, f)| *f != fill),
                    "{fill} reused"
                );
                fill_of_phase.push((w.2.clone(), fill));
            }
        }
    }
    assert_eq!(fill_of_phase.len(), 4);
    // Legend markers in phase order, in the phases' colours.
    for (c, (_, fill)) in circles[want.len()..].iter().zip(&fill_of_phase) {
        assert_eq!(attr(c, "fill"), fill);
    }
    let fit = |pairs: &[(f64, f64)]| -> (f64, f64, f64) {
        // Least squares px = a + b·ln(ms); returns (a, b, worst residual).
        let n = pairs.len() as f64;
        let (sx, sy) = pairs
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x.ln(), b + y));
        let (mx, my) = (sx / n, sy / n);
        let sxx: f64 = pairs.iter().map(|(x, _)| (x.ln() - mx).powi(2)).sum();
        let sxy: f64 = pairs.iter().map(|(x, y)| (x.ln() - mx) * (y - my)).sum();
        let b = sxy / sxx;
        let a = my - b * mx;
        let worst = pairs
            .iter()
            .map(|(x, y)| (a + b * x.ln() - y).abs())
            .fold(0.0, f64::max);
        (a, b, worst)
    };
    let xs: Vec<(f64, f64)> = circles
        .iter()
        .zip(&drawn)
        .map(|(c, w)| (w.4, num(c, "cx")))
        .collect();
    let ys: Vec<(f64, f64)> = circles
        .iter()
        .zip(&drawn)
        .map(|(c, w)| (w.3, num(c, "cy")))
        .collect();
    let (_, bx, worst_x) = fit(&xs);
    let (_, by, worst_y) = fit(&ys);
    assert!(
        bx > 0.0 && worst_x <= 1.0,
        "x: slope {bx}, worst {worst_x} px"
    );
    assert!(
        by < 0.0 && worst_y <= 1.0,
        "y: slope {by}, worst {worst_y} px"
    );
    // Both axes span the same range (lo..hi) on a square-ish plot: the slopes agree in size
    // to within the plot's aspect (760 × 700 canvas).
    assert!((bx / -by - 1.0).abs() < 0.25, "{bx} vs {by}");
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

/// `costsim predict --format json` of one sweep point; its prediction.
fn predict_point(model: &str, hw: &str, method: &str, rank: u64, batch: u64, seq: u64) -> Value {
    let (rank, batch, seq) = (rank.to_string(), batch.to_string(), seq.to_string());
    let mut a = vec![
        "--model", model, "--hw", hw, "--method", method, "--batch", &batch, "--seq", &seq,
    ];
    if method != "full" {
        a.extend_from_slice(&["--rank", &rank]);
    }
    let v = predict_json(&a);
    assert_eq!(v["predictions"].as_array().unwrap().len(), 1);
    v["predictions"][0].clone()
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
fn crossover_finds_and_explains_the_seq_crossing() {
    // A hand-written loop: under a Trainer LoRA is slower throughout (README).
    let text = ok(&[
        "crossover",
        "--model",
        "gpt2-medium",
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
        "gpt2-medium",
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
            "gpt2-medium",
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
            "gpt2-medium",
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
