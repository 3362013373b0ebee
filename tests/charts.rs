//! `costsim plot` end to end: files are written and well-formed, the data behind each chart
//! agrees with `costsim predict` / `costsim validate`, and is snapshotted
//! (numbers rounded to 6 significant digits so the snapshots hold the model, not float noise).

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test, with its location

mod common;

use common::{costsim, predict_json, predict_point_with, stdout_ok as ok, tmp_in};
use serde_json::Value;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    tmp_in("charts", name)
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

/// An SVG element: its name, its attributes and the text directly inside it (trimmed, the
/// entities plotters writes unescaped).
struct El {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
}

impl El {
    fn num(&self, key: &str) -> f64 {
        attr(self, key)
            .parse()
            .unwrap_or_else(|_| panic!("<{}> {key} is not a number", self.name))
    }

    /// The points of a `<polyline>`.
    fn points(&self) -> Vec<(f64, f64)> {
        attr(self, "points")
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').expect("x,y");
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    fn is(&self, name: &str) -> bool {
        self.name == name
    }
}

/// The elements of an SVG document, in order. Panics unless every tag opened is closed in order
/// (an XML-ish well-formedness check: attribute values quoted, no stray `<` in text).
fn svg_elements(svg: &str) -> Vec<El> {
    let mut out: Vec<El> = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        assert!(!text.contains('>'), "stray '>' in text: {text}");
        if let (Some(e), Some(name)) = (out.last_mut(), open.last()) {
            if e.name == *name && !text.trim().is_empty() {
                e.text = text
                    .trim()
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&");
            }
        }
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
        out.push(El {
            name: name.to_string(),
            attrs,
            text: String::new(),
        });
    }
    assert!(rest.trim().is_empty(), "text after the root element");
    assert!(open.is_empty(), "unclosed elements: {open:?}");
    assert_eq!(
        out.first().map(|e| e.name.as_str()),
        Some("svg"),
        "root is not <svg>"
    );
    out
}

fn attr<'a>(e: &'a El, key: &str) -> &'a str {
    e.attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("<{}> has no {key}", e.name))
}

fn has_attr(e: &El, key: &str) -> bool {
    e.attrs.iter().any(|(k, _)| k == key)
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

/// The pixel rows of a stacked-bar panel's value axis, read off its tick labels (the texts
/// anchored at their end, left of the axis): px = a + b·value. Panics unless the labels are
/// numbers on one straight scale (to the 1 px the backend rounds to) that starts at a "0" tick.
fn value_axis(panel: &[El], what: &str) -> (f64, f64) {
    let ticks: Vec<(f64, f64)> = panel
        .iter()
        .filter(|e| e.is("text") && attr(e, "text-anchor") == "end")
        .map(|e| {
            let v = e.text.parse::<f64>();
            (
                v.unwrap_or_else(|_| panic!("{what}: tick label '{}'", e.text)),
                e.num("y"),
            )
        })
        .collect();
    assert!(ticks.len() >= 3, "{what}: tick labels {ticks:?}");
    assert!(
        ticks.iter().any(|t| t.0 == 0.0),
        "{what}: no 0 tick in {ticks:?}"
    );
    let lo = ticks
        .iter()
        .cloned()
        .fold((f64::MAX, 0.0), |m, t| if t.0 < m.0 { t } else { m });
    let hi = ticks
        .iter()
        .cloned()
        .fold((f64::MIN, 0.0), |m, t| if t.0 > m.0 { t } else { m });
    let b = (hi.1 - lo.1) / (hi.0 - lo.0);
    let a = lo.1 - b * lo.0;
    assert!(b < 0.0, "{what}: values grow upwards");
    for (v, px) in &ticks {
        assert!(
            (a + b * v - px).abs() <= 1.0,
            "{what}: tick {v} at {px} px is off the scale"
        );
    }
    (a, b)
}

/// A straight horizontal or vertical `<polyline>` longer than 50 px: an axis line.
fn axis_line(panel: &[El], vertical: bool) -> (f64, f64, f64) {
    panel
        .iter()
        .filter(|e| e.is("polyline"))
        .map(|e| e.points())
        .find_map(|p| {
            let ((x0, y0), (x1, y1)) = (p[0], p[p.len() - 1]);
            if p.len() == 2 && vertical && x0 == x1 && (y1 - y0).abs() > 50.0 {
                Some((x0, y0.min(y1), y0.max(y1)))
            } else if p.len() == 2 && !vertical && y0 == y1 && (x1 - x0).abs() > 50.0 {
                Some((y0, x0.min(x1), x0.max(x1)))
            } else {
                None
            }
        })
        .expect("an axis line")
}

/// One panel of stacked bars (`plot methods`, each half of a `plot breakdown` row) against the
/// numbers it draws: `cats` under the bars, left to right ("" for a category drawn without a
/// label); `stacks` (legend label, value per category) stacked from the axis up in order; the
/// value axis from 0 to a little above `tallest`, the tallest stack drawn on this scale (no bar
/// overflows, none is dwarfed). Each bar's top and bottom sit where the axis's own tick labels
/// put its values, centred on its category; each legend entry (one per series) is a swatch in
/// its series' colour (no two series share one) with its label beside it, the entries one per
/// row, top to bottom, in the column right of the plot.
fn assert_stacked_panel(
    panel: &[El],
    cats: &[String],
    stacks: &[(String, Vec<f64>)],
    tallest: f64,
    canvas: (f64, f64),
    what: &str,
) {
    let n = cats.len();
    let (a, b) = value_axis(panel, what);
    let px = |v: f64| a + b * v;
    let (axis_x, plot_top, plot_bottom) = axis_line(panel, true);
    let (x_axis_y, plot_left, plot_right) = axis_line(panel, false);
    assert!(
        (px(0.0) - plot_bottom).abs() <= 1.5,
        "{what}: 0 at the bottom"
    );
    let top = (plot_top - a) / b;
    assert!(
        top >= tallest && top <= 1.25 * tallest,
        "{what}: the axis ends at {top}, the tallest stack is {tallest}"
    );
    assert!(axis_x <= plot_left);
    // The categories labelled, in order, under the axis: those of `cats` not empty.
    let mut labels: Vec<&El> = panel
        .iter()
        .filter(|e| {
            e.is("text")
                && attr(e, "text-anchor") == "middle"
                && !has_attr(e, "transform")
                && e.num("y") > x_axis_y
                && !e.text.is_empty()
        })
        .collect();
    labels.sort_by(|p, q| p.num("x").total_cmp(&q.num("x")));
    let texts: Vec<&str> = labels.iter().map(|e| e.text.as_str()).collect();
    let named: Vec<usize> = (0..n).filter(|i| !cats[*i].is_empty()).collect();
    let want: Vec<&str> = named.iter().map(|i| cats[*i].as_str()).collect();
    assert_eq!(texts, want, "{what}: category labels");
    // Categories evenly spaced: category i's centre on the line through the labelled ones.
    let (i0, i1) = (named[0], named[named.len() - 1]);
    let (x0, x1) = (labels[0].num("x"), labels[labels.len() - 1].num("x"));
    let centre: Vec<f64> = (0..n)
        .map(|i| x0 + (x1 - x0) * (i as f64 - i0 as f64) / (i1 - i0) as f64)
        .collect();
    for (l, i) in labels.iter().zip(&named) {
        assert!(
            (l.num("x") - centre[*i]).abs() <= 1.0,
            "{what}: label {}",
            l.text
        );
    }
    // One legend entry per series, no more.
    let entries = panel
        .iter()
        .filter(|e| e.is("text") && attr(e, "text-anchor") == "start")
        .count();
    assert_eq!(entries, stacks.len(), "{what}: legend entries");
    let mut base = vec![0.0; n];
    let mut fills: Vec<String> = Vec::new();
    let mut swatches: Vec<(f64, f64, f64)> = Vec::new();
    let mut bar_width = None;
    for (label, values) in stacks {
        let k = panel
            .iter()
            .position(|e| e.is("text") && attr(e, "text-anchor") == "start" && e.text == *label)
            .unwrap_or_else(|| panic!("{what}: no legend entry '{label}'"));
        let swatch = &panel[k - 1];
        let fill = attr(swatch, "fill").to_string();
        assert!(
            !fills.contains(&fill),
            "{what}: {label} shares colour {fill}"
        );
        let bars = &panel[k - 1 - n..k - 1];
        for (i, bar) in bars.iter().enumerate() {
            assert!(
                bar.is("rect") && attr(bar, "fill") == fill,
                "{what}: {label} bar {i}"
            );
            let (x, w) = (bar.num("x"), bar.num("width"));
            let (y, h) = (bar.num("y"), bar.num("height"));
            let (y0, y1) = (base[i], base[i] + values[i]);
            base[i] = y1;
            assert!(
                (px(y1) - y).abs() <= 1.5 && (px(y0) - (y + h)).abs() <= 1.5,
                "{what}: {label} at {} spans {y0}..{y1}, drawn at px {y}..{}",
                cats[i],
                y + h
            );
            assert!(
                w > 0.0 && (x + w / 2.0 - centre[i]).abs() <= 1.0,
                "{what}: {label} {i}"
            );
            assert!((bar_width.get_or_insert(w).to_owned() - w).abs() <= 1.0);
            assert!(x >= plot_left - 0.5 && x + w <= plot_right + 0.5);
        }
        // The categories sit evenly: as much room before the first bar as after the last.
        let first = bars[0].num("x") - plot_left;
        let last = plot_right - bars[n - 1].num("x") - bars[n - 1].num("width");
        assert!(
            (first - last).abs() <= 1.5,
            "{what}: margins {first} and {last} px"
        );
        let (sx, sy, sw, sh) = (
            swatch.num("x"),
            swatch.num("y"),
            swatch.num("width"),
            swatch.num("height"),
        );
        assert!(sw > 0.0 && sh > 0.0, "{what}: {label}'s swatch is drawn");
        assert!(sx > plot_right && sx + sw <= canvas.0 && sy >= 0.0 && sy + sh <= canvas.1);
        let text = &panel[k];
        assert!(
            text.num("x") > sx + sw,
            "{what}: {label} right of its swatch"
        );
        swatches.push((sy, sh, text.num("y")));
        fills.push(fill);
    }
    // Legend rows top to bottom in series order, each label on its own swatch's row, no two
    // rows overlapping.
    for pair in swatches.windows(2) {
        let row = pair[1].0 - pair[0].0;
        assert!(
            row >= 12.0 && pair[0].1 < row,
            "{what}: legend rows {swatches:?}"
        );
        for (sy, _, ty) in pair {
            assert!(
                (ty - sy).abs() < row / 2.0,
                "{what}: legend rows {swatches:?}"
            );
        }
    }
}

/// The tallest stack of a panel's series.
fn tallest(stacks: &[(String, Vec<f64>)]) -> f64 {
    let n = stacks.first().map_or(0, |s| s.1.len());
    (0..n)
        .map(|i| stacks.iter().map(|s| s.1[i]).sum::<f64>())
        .fold(0.0, f64::max)
}

/// A breakdown panel's stacks by bound (compute, memory, launch, host wait), per scope, from
/// the chart's data.
fn bound_stacks(scopes: &[Value]) -> Vec<(String, Vec<f64>)> {
    [
        ("compute", "compute_ms"),
        ("memory", "memory_ms"),
        ("launch", "launch_ms"),
        ("host wait", "host_wait_ms"),
    ]
    .iter()
    .map(|(label, key)| {
        let values = scopes.iter().map(|s| s[key].as_f64().unwrap()).collect();
        (label.to_string(), values)
    })
    .collect()
}

#[test]
fn breakdown_chart() {
    let (svg, data) = (tmp("breakdown.svg"), tmp("breakdown.json"));
    let args = [
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--method",
        "lora",
        "--batch",
        "4",
        "--seq",
        "256",
        "--optimizer",
        "adamw",
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
        "--optimizer",
        "adamw",
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
    // The SVG draws those numbers: a bar per method (marked when it does not fit), stacked
    // forward, backward, optimizer, training loop.
    let bars = v["bars"].as_array().unwrap();
    let cats: Vec<String> = bars
        .iter()
        .map(|b| {
            let m = b["method"].as_str().unwrap();
            match b["fits"].as_bool().unwrap() {
                true => m.to_string(),
                false => format!("{m} (OOM)"),
            }
        })
        .collect();
    let stacks: Vec<(String, Vec<f64>)> = [
        ("forward", "forward_ms"),
        ("backward", "backward_ms"),
        ("optimizer", "optimizer_ms"),
        ("training loop", "loop_ms"),
    ]
    .iter()
    .map(|(label, key)| {
        let values = bars.iter().map(|b| b[key].as_f64().unwrap()).collect();
        (label.to_string(), values)
    })
    .collect();
    let els = svg_elements(&std::fs::read_to_string(&svg).unwrap());
    let tall = tallest(&stacks);
    assert_stacked_panel(&els, &cats, &stacks, tall, (900.0, 520.0), "methods");
}

#[test]
fn breakdown_of_a_deep_model_labels_every_other_scope() {
    // llama2-7b's 32 layers make 36 scopes: past 16 a label every other one, from the first, so
    // they do not run into each other; every scope still has its bar.
    let (svg, data) = (tmp("breakdown-deep.svg"), tmp("breakdown-deep.json"));
    ok(&[
        "plot",
        "breakdown",
        "--model",
        "llama2-7b",
        "--hw",
        "h100",
        "--method",
        "lora",
        "--batch",
        "1",
        "--seq",
        "256",
        "--out",
        svg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    let scopes = v["methods"][0][1].as_array().unwrap();
    assert_eq!(scopes.len(), 36);
    let bounds = bound_stacks(scopes);
    let cats: Vec<String> = scopes
        .iter()
        .enumerate()
        .map(|(i, s)| match (i % 2, s["scope"].as_str().unwrap()) {
            (1, _) => String::new(),
            (_, "embedding") => "emb".to_string(),
            (_, "optimizer") => "opt".to_string(),
            (_, other) => other.strip_prefix("layer.").unwrap_or(other).to_string(),
        })
        .collect();
    assert_eq!(&cats[..4], ["emb", "", "1", ""]);
    let els = svg_elements(&std::fs::read_to_string(&svg).unwrap());
    let b = els
        .iter()
        .position(|e| e.is("text") && e.text == "lora: step time by bound")
        .unwrap();
    let tall = tallest(&bounds);
    assert_stacked_panel(
        &els[b..],
        &cats,
        &bounds,
        tall,
        (1400.0, 340.0),
        "llama2-7b bounds",
    );
}

#[test]
fn breakdown_panels_draw_each_method_s_scopes_on_their_own_scale() {
    // Small steps (fractions of a millisecond a layer) so the tick labels need two decimals.
    let (svg, png, data) = (
        tmp("breakdown-all.svg"),
        tmp("breakdown-all.png"),
        tmp("breakdown-all.json"),
    );
    let args = [
        "--model", "gpt2", "--hw", "h100", "--method", "all", "--batch", "1", "--seq", "16",
        "--loop", "bare",
    ];
    for out in [&svg, &png] {
        let mut a = vec!["plot", "breakdown"];
        a.extend_from_slice(&args);
        a.extend_from_slice(&[
            "--out",
            out.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ]);
        ok(&a);
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    let preds = predict_json(&args)["predictions"]
        .as_array()
        .unwrap()
        .clone();
    let methods = v["methods"].as_array().unwrap();
    assert_eq!(methods.len(), preds.len());
    // A 60 px title band and a 280 px row (two panels) per method.
    let canvas = (1400.0, 60.0 + 280.0 * methods.len() as f64);
    assert_png(&png, 1400, canvas.1 as u32);
    let els = svg_elements(&std::fs::read_to_string(&svg).unwrap());
    let caption = |m: &str, which: &str| {
        els.iter()
            .position(|e| e.is("text") && e.text == format!("{m}: {which}"))
            .unwrap_or_else(|| panic!("no panel '{m}: {which}'"))
    };
    let mut row_y = f64::MIN;
    for (method, pred) in methods.iter().zip(&preds) {
        let name = method[0].as_str().unwrap();
        assert_eq!(name, pred["method"].as_str().unwrap());
        let scopes = method[1].as_array().unwrap();
        // The short names under the bars: layers by number, embedding and optimizer shortened.
        let cats: Vec<String> = scopes
            .iter()
            .map(|s| match s["scope"].as_str().unwrap() {
                "embedding" => "emb".to_string(),
                "optimizer" => "opt".to_string(),
                other => other.strip_prefix("layer.").unwrap_or(other).to_string(),
            })
            .collect();
        assert!(cats.len() >= 14 && cats[1] == "0", "{cats:?}");
        // Kernel kinds in their fixed order, those with some time in this method.
        let kinds: Vec<(String, Vec<f64>)> = scopes[0]["by_kind_ms"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(k, kind)| {
                let values: Vec<f64> = scopes
                    .iter()
                    .map(|s| s["by_kind_ms"][k][1].as_f64().unwrap())
                    .collect();
                (kind[0].as_str().unwrap().to_string(), values)
            })
            .filter(|(_, v)| v.iter().any(|x| *x > 0.0))
            .collect();
        assert!(
            kinds.len() >= 3 && kinds.len() < scopes[0]["by_kind_ms"].as_array().unwrap().len()
        );
        let bounds = bound_stacks(scopes);
        // The bounds add up to predict's step time.
        let total: f64 = bounds.iter().flat_map(|b| &b.1).sum();
        let step = pred["step_ms"].as_f64().unwrap();
        assert!(
            (total - step).abs() <= 1e-6 * step,
            "{name}: {total} vs {step}"
        );
        // Kinds on the left, bounds on the right, one row per method, top to bottom.
        let (k, b) = (
            caption(name, "device time by kernel kind"),
            caption(name, "step time by bound"),
        );
        assert!(
            els[k].num("x") < els[b].num("x"),
            "{name}: kinds left of bounds"
        );
        assert!(els[k].num("y") > row_y && els[k].num("y") == els[b].num("y"));
        row_y = els[k].num("y");
        let end = els[b + 1..]
            .iter()
            .position(|e| e.is("text") && e.text.contains(": device time by kernel kind"))
            .map_or(els.len(), |i| b + 1 + i);
        let what = format!("{name} kinds");
        assert_stacked_panel(&els[k..b], &cats, &kinds, tallest(&kinds), canvas, &what);
        let what = format!("{name} bounds");
        assert_stacked_panel(
            &els[b..end],
            &cats,
            &bounds,
            tallest(&bounds),
            canvas,
            &what,
        );
    }
}

#[test]
fn methods_chart_scales_the_micro_batch_phases_by_grad_accum() {
    // `predict` reports forward and backward per micro-batch; a bar shows the whole optimizer
    // step, so with 3 micro-batches a step its forward and backward are 3 times predict's, the
    // optimizer and the Trainer loop once, and the four still add up to predict's step time.
    let data = tmp("methods-accum.json");
    let out = tmp("methods-accum.svg");
    let args = [
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--batch",
        "2",
        "--seq",
        "256",
        "--grad-accum",
        "3",
    ];
    let mut a = vec!["plot", "methods"];
    a.extend_from_slice(&args);
    a.extend_from_slice(&[
        "--out",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    ok(&a);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    let p = predict_json(&args);
    let (bars, preds) = (
        v["bars"].as_array().unwrap(),
        p["predictions"].as_array().unwrap(),
    );
    assert_eq!(bars.len(), preds.len());
    assert!(bars.len() >= 2, "every method");
    let num = |x: &Value, k: &str| x[k].as_f64().unwrap_or_else(|| panic!("{k} in {x}"));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
    for (bar, pred) in bars.iter().zip(preds) {
        let m = &bar["method"];
        assert_eq!(m, &pred["method"]);
        for (k, times) in [
            ("forward_ms", 3.0),
            ("backward_ms", 3.0),
            ("optimizer_ms", 1.0),
            ("loop_ms", 1.0),
        ] {
            let (got, want) = (num(bar, k), times * num(pred, k));
            assert!(close(got, want), "{m} {k}: {got} vs {times} x predict's");
        }
        let sum: f64 = ["forward_ms", "backward_ms", "optimizer_ms", "loop_ms"]
            .iter()
            .map(|k| num(bar, k))
            .sum();
        let step = num(pred, "step_ms");
        assert!((sum - step).abs() <= 1e-9 * step, "{m}: {sum} vs {step}");
        assert_eq!(num(bar, "step_ms"), step, "{m}");
    }
}

#[test]
fn heatmap_chart_with_contour() {
    let (svg, data) = (tmp("heatmap.svg"), tmp("heatmap.json"));
    ok(&[
        "plot",
        "heatmap",
        "--model",
        "gpt2-large",
        "--hw",
        "a100",
        "--x-range",
        "128..1024:x2",
        "--y-range",
        "4..64:x4",
        // A hand-written loop: under a Trainer LoRA is slower everywhere here (no contour), as it
        // is for gpt2-medium in any loop since the forward counts every module call.
        "--loop",
        "bare",
        "--out",
        svg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_svg(&svg, 4 * 3);
    let v = snapshot("heatmap_gpt2-large_a100_seq_rank", &data);
    assert_eq!(v["xs"], serde_json::json!([128, 256, 512, 1024]));
    assert_eq!(v["ys"], serde_json::json!([4, 16, 64]));
    // One cell against two predictions: seq 512, rank 16.
    let lora = predict_json(&[
        "--model",
        "gpt2-large",
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
        "gpt2-large",
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
    assert!(!v["contour"].as_array().unwrap().is_empty());
    assert_contour_interpolates(&v);
}

/// Marching squares, checked point by point: every contour point of a heatmap's data lies on the
/// segment between two neighbouring cell centres (centres at index + 0.5) whose ratios straddle
/// 1, at the linearly interpolated position.
fn assert_contour_interpolates(v: &Value) {
    let r = |j: usize, i: usize| v["ratio"][j][i].as_f64().unwrap();
    for s in v["contour"].as_array().unwrap() {
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

/// `#RRGGBB` as three channels.
fn rgb(fill: &str) -> (i32, i32, i32) {
    let h = |i: usize| i32::from_str_radix(&fill[i..i + 2], 16).expect("a #RRGGBB colour");
    assert!(fill.starts_with('#') && fill.len() == 7, "{fill}");
    (h(1), h(3), h(5))
}

#[test]
fn heatmap_svg_draws_each_cell_where_its_data_says() {
    // tinyllama-1.1b on an L4 over seq x batch: seq 4096 is past the model's 2048 positions
    // (invalid, grey), the larger steps do not fit in 24 GB (hatched, "OOM"), LoRA is more than
    // twice as fast at the smallest step and slower at the largest that fits, and the 1.0 contour
    // crosses both a row and a column of cell centres.
    let (svg, data) = (tmp("heatmap-cells.svg"), tmp("heatmap-cells.json"));
    let (model, hw) = ("tinyllama-1.1b", "l4");
    ok(&[
        "plot",
        "heatmap",
        "--model",
        model,
        "--hw",
        hw,
        "--x",
        "seq",
        "--x-range",
        "256..4096:x4",
        "--y",
        "batch",
        "--y-range",
        "1..16:x4",
        "--optimizer",
        "adamw",
        "--out",
        svg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    let xs: Vec<u64> = v["xs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let ys: Vec<u64> = v["ys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|y| y.as_u64().unwrap())
        .collect();
    assert_eq!(
        (xs.as_slice(), ys.as_slice()),
        (&[256, 1024, 4096][..], &[1, 4, 16][..])
    );
    let (nx, ny) = (xs.len(), ys.len());
    // The title names what is held fixed (the LoRA rank, 8 unless given: batch and seq are the
    // axes), the names and precision `predict` reports, the two methods and the axes.
    let p = predict_json(&["--model", model, "--hw", hw, "--method", "lora"]);
    let title = format!(
        "{} on {}, rank 8, {}: LoRA / full step time over seq x batch",
        p["model"]["name"].as_str().unwrap(),
        p["hardware"]["name"].as_str().unwrap(),
        p["workload"]["precision"].as_str().unwrap()
    );
    assert_eq!(v["title"], title);
    let listed = |x: u64, y: u64| {
        v["does_not_fit"]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["x"] == x && c["y"] == y))
    };
    // Every cell against `costsim predict` of LoRA (rank 8) and full fine-tuning at its point.
    let mut ratio = vec![vec![f64::NAN; nx]; ny];
    for (j, &batch) in ys.iter().enumerate() {
        for (i, &seq) in xs.iter().enumerate() {
            let cell = &v["ratio"][j][i];
            if seq > 2048 {
                let (b, s) = (batch.to_string(), seq.to_string());
                let o = costsim(&[
                    "predict", "--model", model, "--hw", hw, "--batch", &b, "--seq", &s,
                ]);
                assert_eq!(
                    o.status.code(),
                    Some(2),
                    "seq {seq} is past the model's positions"
                );
                assert!(cell.is_null(), "{cell}");
                continue;
            }
            let foreach = ["--optimizer", "adamw"];
            let lora = predict_point_with(model, hw, "lora", 8, batch, seq, &foreach);
            let full = predict_point_with(model, hw, "full", 8, batch, seq, &foreach);
            let want = lora["step_ms"].as_f64().unwrap() / full["step_ms"].as_f64().unwrap();
            let got = cell.as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-12 * want,
                "seq {seq} batch {batch}: {got} vs {want}"
            );
            let fits = lora["fits"].as_bool().unwrap() && full["fits"].as_bool().unwrap();
            assert_eq!(listed(seq, batch), !fits, "seq {seq} batch {batch}");
            ratio[j][i] = got;
        }
    }
    let finite: Vec<f64> = ratio
        .iter()
        .flatten()
        .copied()
        .filter(|r| r.is_finite())
        .collect();
    assert!(finite.iter().any(|r| *r < 0.5) && finite.iter().any(|r| *r > 1.0));
    assert!((0..ny).any(|j| (0..nx).any(|i| listed(xs[i], ys[j]) && ratio[j][i].is_finite())));
    assert_contour_interpolates(&v);
    let segs = v["contour"].as_array().unwrap();
    let on_column = |p: &Value| (p[0].as_f64().unwrap() - 0.5).fract() == 0.0;
    assert!(segs
        .iter()
        .flat_map(|s| s.as_array().unwrap())
        .any(on_column));

    let els = svg_elements(&std::fs::read_to_string(&svg).unwrap());
    assert!(els.iter().any(|e| e.is("text") && e.text == title));
    let (x_axis_y, _, _) = axis_line(&els, false);
    // The axes name the cells' values, in order: xs left to right, ys bottom to top.
    let numbers = |anchor: &str| {
        let mut t: Vec<(f64, f64, u64)> = els
            .iter()
            .filter(|e| e.is("text") && attr(e, "text-anchor") == anchor)
            .filter(|e| anchor == "end" || e.num("y") > x_axis_y)
            .filter_map(|e| Some((e.num("x"), e.num("y"), e.text.parse().ok()?)))
            .collect();
        t.sort_by(|p, q| p.0.total_cmp(&q.0).then(q.1.total_cmp(&p.1)));
        t
    };
    let (x_labels, y_labels) = (numbers("middle"), numbers("end"));
    assert_eq!(x_labels.iter().map(|l| l.2).collect::<Vec<_>>(), xs);
    assert_eq!(y_labels.iter().map(|l| l.2).collect::<Vec<_>>(), ys);
    // The cells, row by row from the bottom: each under its x label and beside its y label,
    // tiling the plot.
    let rects: Vec<&El> = els.iter().filter(|e| e.is("rect")).skip(1).collect();
    assert!(rects.len() >= nx * ny);
    let cell = |i: usize, j: usize| {
        let r = rects[j * nx + i];
        (
            r.num("x"),
            r.num("y"),
            r.num("width"),
            r.num("height"),
            attr(r, "fill"),
        )
    };
    for j in 0..ny {
        for i in 0..nx {
            let (x, y, w, h, _) = cell(i, j);
            assert!(w > 20.0 && h > 20.0, "cell {i},{j}: {w} x {h}");
            assert!(
                (x + w / 2.0 - x_labels[i].0).abs() <= 1.0,
                "cell {i},{j} under {}",
                xs[i]
            );
            assert!(
                (y + h / 2.0 - y_labels[j].1).abs() <= 1.0,
                "cell {i},{j} beside {}",
                ys[j]
            );
            if i + 1 < nx {
                assert!(
                    (cell(i + 1, j).0 - (x + w)).abs() <= 1.0,
                    "cells {i},{j} tile"
                );
            }
            if j + 1 < ny {
                assert!((cell(i, j + 1).1 + cell(i, j + 1).3 - y).abs() <= 1.0);
            }
        }
    }
    // Colours as the chart's key says: grey where invalid, blue where LoRA is faster, red where
    // slower, the deeper the further the ratio is from 1 (saturating at 2x).
    let mut depth: Vec<(f64, i32)> = Vec::new();
    for (j, row) in ratio.iter().enumerate() {
        for (i, &q) in row.iter().enumerate() {
            let (r, g, b) = rgb(cell(i, j).4);
            if !q.is_finite() {
                assert!(
                    r == g && g == b && r < 250,
                    "invalid cell {i},{j}: {r},{g},{b}"
                );
            } else if q < 1.0 {
                assert!(b > r, "cell {i},{j} ratio {q}: {r},{g},{b} is not blue");
            } else {
                assert!(r > b, "cell {i},{j} ratio {q}: {r},{g},{b} is not red");
            }
            if q.is_finite() {
                depth.push((q.log2().abs().min(1.0), 255 - r.min(g).min(b)));
            }
        }
    }
    depth.sort_by(|p, q| p.0.total_cmp(&q.0));
    for pair in depth.windows(2) {
        assert!(
            pair[1].1 >= pair[0].1,
            "deeper colour further from 1: {depth:?}"
        );
    }
    assert!(
        depth[0].1 < 40 && depth.last().unwrap().1 > 120,
        "{depth:?}"
    );
    // Each cell's label at its centre: the ratio to two decimals, "OOM" where it does not fit,
    // "-" where invalid.
    let labels: Vec<&El> = els
        .iter()
        .filter(|e| {
            e.is("text")
                && attr(e, "text-anchor") == "middle"
                && !has_attr(e, "transform")
                && e.num("y") < x_axis_y
        })
        .collect();
    assert_eq!(labels.len(), nx * ny);
    for j in 0..ny {
        for i in 0..nx {
            let (x, y, w, h, _) = cell(i, j);
            let l = labels[j * nx + i];
            let q = ratio[j][i];
            let want = match (q.is_finite(), listed(xs[i], ys[j])) {
                (false, _) => "-".to_string(),
                (true, false) => format!("{q:.2}"),
                (true, true) => format!("{q:.2} OOM"),
            };
            assert_eq!(l.text, want, "cell {i},{j}");
            assert!(
                (l.num("x") - (x + w / 2.0)).abs() <= 1.0
                    && (l.num("y") - (y + h / 2.0)).abs() <= 1.0
            );
        }
    }
    // Hatching over exactly the cells that do not fit, each stroke inside its cell.
    let mut hatched = vec![vec![false; nx]; ny];
    for e in els
        .iter()
        .filter(|e| e.is("polyline") && attr(e, "stroke") == "#464646")
    {
        let p = e.points();
        let inside = |i: usize, j: usize| {
            let (x, y, w, h, _) = cell(i, j);
            p.iter().all(|(px, py)| {
                *px >= x - 1.0 && *px <= x + w + 1.0 && *py >= y - 1.0 && *py <= y + h + 1.0
            })
        };
        let (i, j) = (0..ny)
            .flat_map(|j| (0..nx).map(move |i| (i, j)))
            .find(|&(i, j)| inside(i, j))
            .unwrap_or_else(|| panic!("hatch stroke {p:?} crosses cells"));
        hatched[j][i] = true;
    }
    for j in 0..ny {
        for i in 0..nx {
            assert_eq!(
                hatched[j][i],
                listed(xs[i], ys[j]),
                "hatching of cell {i},{j}"
            );
        }
    }
    // The contour drawn where the data puts it: cell coordinates scaled to the cells' pixels.
    let (x0, y0, w, h, _) = cell(0, 0);
    let to_px = |p: &Value| {
        (
            x0 + p[0].as_f64().unwrap() * w,
            y0 + h - p[1].as_f64().unwrap() * h,
        )
    };
    let drawn: Vec<Vec<(f64, f64)>> = els
        .iter()
        .filter(|e| e.is("polyline") && attr(e, "stroke-width") == "3")
        .map(|e| e.points())
        .collect();
    assert_eq!(drawn.len(), segs.len());
    for (d, s) in drawn.iter().zip(segs) {
        for (q, p) in d.iter().zip(s.as_array().unwrap()) {
            let (x, y) = to_px(p);
            assert!(
                (q.0 - x).abs() <= 1.5 && (q.1 - y).abs() <= 1.5,
                "contour {p} drawn at {q:?}"
            );
        }
    }
}

#[test]
fn heatmap_cell_limit_is_4096() {
    // 64 x 64 seq x batch cells all past gpt2's 1024 positions: within the limit, so refused for
    // having no valid cell; 65 x 64 is refused for its size before anything is predicted.
    let out = tmp("heatmap-limit.svg");
    let heat = |x_range: &str| {
        costsim(&[
            "plot",
            "heatmap",
            "--model",
            "gpt2",
            "--hw",
            "a100",
            "--x",
            "seq",
            "--x-range",
            x_range,
            "--y",
            "batch",
            "--y-range",
            "1..64:+1",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = heat("1025..1088:+1");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no cell of the heatmap") && !err.contains("too large"),
        "{err}"
    );
    let o = heat("1025..1089:+1");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("65 x 64 cells is too large") && err.contains("4096"),
        "{err}"
    );
    assert!(!out.exists());
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
    let circles: Vec<_> = elements.iter().filter(|e| e.is("circle")).collect();
    assert_eq!(circles.len(), want.len() + 4, "points + 4 legend markers");
    let mut drawn = Vec::new();
    for phase in ["forward", "backward", "optimizer", "step"] {
        drawn.extend(want.iter().filter(|w| w.2 == phase));
    }
    let num = |c: &El, k: &str| -> f64 { c.num(k) };
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
    let (ax, bx, worst_x) = fit(&xs);
    let (ay, by, worst_y) = fit(&ys);
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
    // Both axes run from the smallest time / 1.5 to the largest x 1.5: the identity line goes
    // corner to corner, (lo, lo) to (hi, hi); each ±25% line is cut where it meets the frame,
    // from (lo / 0.75, lo) to (hi, 0.75·hi) and from (lo, 1.25·lo) to (hi / 1.25, hi), so both
    // of its ends lie at its ratio (plotters would move an end outside the plot onto the frame,
    // bending the line toward the identity line).
    let lo = want.iter().map(|w| w.3.min(w.4)).fold(f64::MAX, f64::min) / 1.5;
    let hi = want.iter().map(|w| w.3.max(w.4)).fold(0.0, f64::max) * 1.5;
    let (px, py) = (|ms: f64| ax + bx * ms.ln(), |ms: f64| ay + by * ms.ln());
    let diagonals = |stroke: &str| -> Vec<Vec<(f64, f64)>> {
        elements
            .iter()
            .filter(|e| e.is("polyline") && attr(e, "stroke") == stroke)
            .map(|e| e.points())
            .filter(|p| p.len() == 2 && p[0].0 != p[1].0 && p[0].1 != p[1].1)
            .collect()
    };
    let identity = diagonals("#000000");
    assert_eq!(identity.len(), 1);
    for (q, ms) in identity[0].iter().zip([lo, hi]) {
        assert!(
            (q.0 - px(ms)).abs() <= 2.0 && (q.1 - py(ms)).abs() <= 2.0,
            "identity line ends at {q:?}, not at {ms} ms ({}, {})",
            px(ms),
            py(ms)
        );
    }
    let mut factors: Vec<f64> = diagonals("#969696")
        .iter()
        .map(|line| {
            // predicted / measured at each end: the same at both.
            let ratio = |q: &(f64, f64)| ((q.1 - ay) / by - (q.0 - ax) / bx).exp();
            let (f0, f1) = (ratio(&line[0]), ratio(&line[1]));
            assert!(
                (f0 / f1 - 1.0).abs() < 0.02,
                "a band line bends: {f0} to {f1}"
            );
            f0
        })
        .collect();
    factors.sort_by(f64::total_cmp);
    assert_eq!(factors.len(), 2);
    assert!(
        (factors[0] - 0.75).abs() < 0.02 && (factors[1] - 1.25).abs() < 0.02,
        "{factors:?}"
    );
    // The ends lie on the frame: the lower line from the bottom edge to the right edge, the
    // upper from the left edge to the top edge.
    let band = diagonals("#969696");
    let on = |q: &(f64, f64), x: Option<f64>, y: Option<f64>| {
        x.is_none_or(|ms| (q.0 - px(ms)).abs() <= 2.0)
            && y.is_none_or(|ms| (q.1 - py(ms)).abs() <= 2.0)
    };
    for line in &band {
        let lower = ((line[0].1 - ay) / by - (line[0].0 - ax) / bx) < 0.0;
        let (a, b) = if lower {
            ((None, Some(lo)), (Some(hi), None))
        } else {
            ((Some(lo), None), (None, Some(hi)))
        };
        let ends_ok = |p: &(f64, f64), q: &(f64, f64)| on(p, a.0, a.1) && on(q, b.0, b.1);
        assert!(
            ends_ok(&line[0], &line[1]) || ends_ok(&line[1], &line[0]),
            "band line {line:?} does not end on the frame (lo {lo}, hi {hi} ms)"
        );
    }
    // The legend: each entry once, each phase's marker inside the legend box, left of its name.
    let texts: Vec<&El> = elements.iter().filter(|e| e.is("text")).collect();
    let frame = elements
        .iter()
        .find(|e| e.is("rect") && attr(e, "fill") == "none")
        .expect("the legend's frame");
    let (fx, fw) = (frame.num("x"), frame.num("width"));
    for entry in ["predicted = measured", "predicted = measured ±25%"] {
        assert_eq!(
            texts.iter().filter(|t| t.text == entry).count(),
            1,
            "{entry}"
        );
    }
    for (marker, phase) in
        circles[want.len()..]
            .iter()
            .zip(["forward", "backward", "optimizer", "step"])
    {
        let named: Vec<_> = texts.iter().filter(|t| t.text == phase).collect();
        assert_eq!(named.len(), 1, "{phase} in the legend");
        let (cx, r) = (marker.num("cx"), marker.num("r"));
        assert!(
            cx - r >= fx && cx + r < named[0].num("x") && named[0].num("x") < fx + fw,
            "{phase}'s marker at {cx}, the frame from {fx}"
        );
        assert!(
            (marker.num("cy") - named[0].num("y")).abs() < 10.0,
            "{phase}'s row"
        );
    }
}

#[test]
fn plot_errors_are_usage_errors() {
    // Outputs in the test's own directory, removed first: a run that wrongly writes one cannot
    // leave it behind for the next run (or a later mutant) to trip over.
    let (gif, svg) = (tmp("refused.gif"), tmp("refused.svg"));
    let (gif_s, svg_s) = (gif.to_str().unwrap(), svg.to_str().unwrap());
    let o = costsim(&[
        "plot", "methods", "--model", "gpt2", "--hw", "a100", "--out", gif_s,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(".svg or .png"));
    let o = costsim(&[
        "plot", "heatmap", "--model", "gpt2", "--hw", "a100", "--x", "seq", "--y", "seq", "--out",
        svg_s,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = costsim(&[
        "plot",
        "scatter",
        "--from",
        "/nonexistent.json",
        "--out",
        svg_s,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!svg.exists() && !gif.exists());
}

/// `--out` must end in .svg or .png; a bare `.svg` (a hidden file's name, with no extension) is
/// told to name the chart rather than to end with .svg, which it does (an audit, 2026-11-30).
#[test]
fn the_chart_format_comes_from_a_named_file() {
    for (name, said) in [
        ("chart.txt", "cannot tell the image format"),
        (".svg", "names no file before its extension"),
        (".PNG", "name the chart, e.g. chart.png"),
    ] {
        let out = tmp(name);
        common::usage_error(
            &[
                "plot",
                "breakdown",
                "--model",
                "gpt2",
                "--hw",
                "a100",
                "--out",
                out.to_str().unwrap(),
            ],
            &[said],
        );
        assert!(!out.exists(), "{name}");
    }
}
