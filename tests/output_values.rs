//! `costsim predict` and `costsim sweep` output read back by column, row label or field name and
//! compared with numbers this test derives itself. The second code path is the library:
//! `costsim_model::predict` on the configuration the command line describes gives the numbers the
//! formatting code is handed, and the conversions the output applies are worked here from their
//! documented definitions (docs/json-schema.md, docs/model.md): GiB = 2^30 bytes, GB = 10^9
//! bytes, TFLOP = 10^12 FLOP, percentages of a share, optimizer steps = ⌈tokens / tokens per
//! step⌉, run seconds = steps × step time, run cost = seconds / 3600 × $/h, h:mm:ss of the
//! rounded seconds. No expected value is copied from costsim's output, and nothing here is a
//! golden file.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test, with its location

mod common;

use common::{csv_records, f, s, stdout_ok};
use costsim_hardware::{resolve_device, Profile};
use costsim_model::predict::{KernelRow, LayerRow};
use costsim_model::{
    predict, preset, Amount, Config, Detail, MethodName, MethodOptions, MethodSpec, Prediction,
    Runtime, TrainingLoop, Workload,
};
use serde_json::Value;
use std::collections::HashMap;

const GIB: f64 = 1073741824.0;

/// The library's prediction of `methods` for `model` on `hw` with workload `w` — what
/// `costsim predict` resolves its flags into (`--method all` resolves each method with `all`).
fn library(
    model: &str,
    hw: &str,
    methods: &[MethodName],
    w: &Workload,
    detail: Detail,
    amount: Option<Amount>,
) -> (Profile, Vec<Prediction>) {
    let m = preset(model).unwrap();
    let hw = resolve_device(hw).unwrap();
    let all = methods.len() > 1;
    let preds = methods
        .iter()
        .map(|&name| {
            let method = MethodSpec::resolve(name, &MethodOptions::default(), &m, all).unwrap();
            let cfg = Config {
                model: m.clone(),
                method,
                workload: w.clone(),
                hw: hw.clone(),
            };
            predict(&cfg, detail, amount)
        })
        .collect();
    (hw, preds)
}

/// `got` is `want` printed with `decimals` decimals.
fn near(got: f64, want: f64, decimals: i32) -> bool {
    (got - want).abs() <= 0.5 * 10f64.powi(-decimals) + 1e-9 * want.abs()
}

fn assert_near(what: &str, got: f64, want: f64, decimals: i32) {
    assert!(
        near(got, want, decimals),
        "{what}: printed {got}, want {want} to {decimals} decimals"
    );
}

/// "12.34 <unit>" read back as a number of `scale`s, with its decimals.
fn with_unit(cell: &str, unit: &str) -> (f64, i32) {
    let v = cell
        .strip_suffix(unit)
        .unwrap_or_else(|| panic!("'{cell}' does not end with '{unit}'"))
        .trim();
    let decimals = v.split_once('.').map_or(0, |(_, d)| d.len() as i32);
    (v.parse().unwrap_or_else(|_| panic!("'{cell}'")), decimals)
}

/// A human count ("3.15 M", "124.44 M", "12.3 K", "912") read back: the value and the size of
/// half its last printed digit. Thresholds: B from 10^9, M from 10^6, K from 10^3.
fn human_count(cell: &str) -> (f64, f64) {
    let (num, scale) = match cell.rsplit_once(' ') {
        Some((n, "B")) => (n, 1e9),
        Some((n, "M")) => (n, 1e6),
        Some((n, "K")) => (n, 1e3),
        None => (cell, 1.0),
        _ => panic!("not a count: '{cell}'"),
    };
    let decimals = num.split_once('.').map_or(0, |(_, d)| d.len() as i32);
    let v: f64 = num.parse().unwrap_or_else(|_| panic!("'{cell}'"));
    (v * scale, 0.5 * 10f64.powi(-decimals) * scale + 1e-9)
}

fn assert_count(what: &str, cell: &str, want: f64) {
    let (v, half) = human_count(cell);
    assert!((v - want).abs() <= half, "{what}: '{cell}' for {want}");
    // The unit is the largest that keeps the number at least 1.
    let unit = cell.rsplit_once(' ').map(|(_, u)| u);
    let want_unit = if want >= 1e9 {
        Some("B")
    } else if want >= 1e6 {
        Some("M")
    } else if want >= 1e3 {
        Some("K")
    } else {
        None
    };
    assert_eq!(unit, want_unit, "{what}: '{cell}' for {want}");
}

/// Dollars "$1,234,567.89" read back; the grouping is checked digit by digit.
fn dollars(cell: &str) -> f64 {
    let body = cell
        .strip_prefix('$')
        .unwrap_or_else(|| panic!("'{cell}' is not dollars"));
    let (int, cents) = body.split_once('.').expect("cents");
    assert_eq!(cents.len(), 2, "{cell}");
    let groups: Vec<&str> = int.split(',').collect();
    assert!(
        groups[0].len() <= 3 && !groups[0].is_empty(),
        "{cell}: first group"
    );
    assert!(groups[1..].iter().all(|g| g.len() == 3), "{cell}: groups");
    format!("{}.{cents}", groups.concat()).parse().unwrap()
}

/// h:mm:ss of a number of seconds, rounded to the second.
fn hms(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The summary of a text table: row label → cells, one per method column. Cells are right-aligned
/// under the method names, which end where their column ends; the label column is left-aligned.
fn text_summary(text: &str, methods: &[&str]) -> HashMap<String, Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let head_at = lines
        .iter()
        .position(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w == methods
        })
        .unwrap_or_else(|| panic!("no header of {methods:?} in:\n{text}"));
    let head: Vec<char> = lines[head_at].chars().collect();
    // End of each method name in the header, in characters.
    let mut ends = Vec::new();
    let mut from = 0;
    for m in methods {
        let s: String = head[from..].iter().collect();
        let at = from + s.find(m).unwrap() + m.chars().count();
        ends.push(at);
        from = at;
    }
    // The rule under the header spans the table: the header's last name ends at its right edge.
    assert!(lines[head_at + 1].chars().all(|c| c == '-'), "rule");
    assert_eq!(
        lines[head_at + 1].chars().count(),
        head.len(),
        "rule width in:\n{text}"
    );
    let mut rows = HashMap::new();
    // The rows run to a blank line or the price line under the table.
    for l in &lines[head_at + 2..] {
        if l.is_empty() || l.starts_with("price: ") {
            break;
        }
        // Labels have single spaces; two or more separate the label from the first cell.
        let label = l.split("  ").next().unwrap();
        let c: Vec<char> = l.chars().collect();
        let mut begin = label.chars().count();
        let mut cells = Vec::new();
        for &e in &ends {
            assert!(
                begin <= e && e <= c.len(),
                "row '{l}' is not aligned with the header"
            );
            cells.push(c[begin..e].iter().collect::<String>().trim().to_string());
            begin = e;
        }
        assert!(c[begin..].is_empty(), "row '{l}' runs past the last column");
        rows.insert(label.to_string(), cells);
    }
    rows
}

/// A Markdown table that follows the line `title` (the first table when `title` is empty): its
/// header and rows of cells (`\|` unescaped).
fn md_after(text: &str, title: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let skip = if title.is_empty() {
        0
    } else {
        1 + text
            .lines()
            .position(|l| l == title)
            .unwrap_or_else(|| panic!("no line '{title}' in:\n{text}"))
    };
    let mut lines = text.lines().skip(skip);
    let split = |l: &str| -> Vec<String> {
        let inner = l
            .strip_prefix("| ")
            .and_then(|l| l.strip_suffix(" |"))
            .unwrap_or_else(|| panic!("not a table row: {l}"));
        inner
            .replace("\\|", "\u{1}")
            .split(" | ")
            .map(|c| c.replace('\u{1}', "|"))
            .collect()
    };
    let head_line = lines
        .find(|l| l.starts_with('|'))
        .unwrap_or_else(|| panic!("no table after '{title}'"));
    let head = split(head_line);
    let rule = lines.next().unwrap();
    let want_rule: Vec<&str> = (0..head.len())
        .map(|i| if i == 0 { "---" } else { "---:" })
        .collect();
    assert_eq!(rule, format!("|{}|", want_rule.join("|")));
    let rows = lines
        .take_while(|l| l.starts_with('|'))
        .map(split)
        .collect::<Vec<_>>();
    for r in &rows {
        assert_eq!(r.len(), head.len(), "{r:?}");
    }
    (head, rows)
}

fn workload(batch: u64, seq: u64) -> Workload {
    Workload {
        batch,
        seq,
        ..Workload::default()
    }
}

#[test]
fn summary_csv_columns_are_the_library_prediction_and_the_run_is_worked_out() {
    // gpt2 LoRA on an L4, batch 2 × seq 128 = 256 tokens per step. A run of 10^6 tokens takes
    // ⌈10^6 / 256⌉ = ⌈3906.25⌉ = 3907 optimizer steps.
    let args = [
        "predict", "--model", "gpt2", "--hw", "l4", "--method", "lora", "--batch", "2", "--seq",
        "128", "--tokens", "1000000", "--price", "2.5", "--format", "csv",
    ];
    let (_, preds) = library(
        "gpt2",
        "l4",
        &[MethodName::Lora],
        &workload(2, 128),
        Detail::default(),
        None,
    );
    let p = &preds[0];
    let recs = csv_records(&stdout_ok(&args));
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(s(r, "method"), "lora");
    assert_eq!(f(r, "rank"), p.rank as f64);
    assert_eq!(s(r, "trained_layers"), p.trained_layers);
    assert_eq!(f(r, "trainable_params"), p.trainable_params as f64);
    assert_eq!(f(r, "forward_kernels"), p.kernels.forward as f64);
    assert_eq!(f(r, "backward_kernels"), p.kernels.backward as f64);
    assert_eq!(f(r, "optimizer_kernels"), p.kernels.optimizer as f64);
    for (col, want, d) in [
        ("flops", p.flops, 0),
        ("bytes", p.bytes, 0),
        ("forward_ms", p.forward_ms, 4),
        ("backward_ms", p.backward_ms, 4),
        ("optimizer_ms", p.optimizer_ms, 4),
        ("loop_ms", p.loop_ms, 4),
        ("step_ms", p.step_ms, 4),
        ("tokens_per_s", p.tokens_per_s, 1),
        ("peak_memory_bytes", p.peak_memory_bytes, 0),
    ] {
        assert_near(col, f(r, col), want, d);
    }
    // tokens/s is the step's tokens over its time: 256 / step s.
    assert_near(
        "tokens_per_s",
        f(r, "tokens_per_s"),
        256.0 / (p.step_ms / 1e3),
        1,
    );
    assert_eq!(s(r, "fits"), p.fits.to_string());
    assert_eq!(s(r, "dominant_bound"), p.dominant_bound.as_str());
    // The run: 3907 steps of step_ms each, at $2.5 per hour.
    assert_eq!(f(r, "optimizer_steps"), 3907.0);
    let seconds = 3907.0 * p.step_ms / 1e3;
    assert_near("run_seconds", f(r, "run_seconds"), seconds, 3);
    assert_near(
        "run_cost_usd",
        f(r, "run_cost_usd"),
        seconds / 3600.0 * 2.5,
        2,
    );
    // Without a run there are no run columns; a run without a price has an empty cost.
    let one = csv_records(&stdout_ok(
        &args[..11]
            .iter()
            .chain(&["--format", "csv"])
            .copied()
            .collect::<Vec<_>>(),
    ));
    assert!(!one[0].contains_key("optimizer_steps"), "{:?}", one[0]);
    assert_eq!(one[0].len(), 18);
    assert_near("step_ms", f(&one[0], "step_ms"), p.step_ms, 4);
    let unpriced: Vec<&str> = args[..13]
        .iter()
        .chain(&["--format", "csv"])
        .copied()
        .collect();
    let r = &csv_records(&stdout_ok(&unpriced))[0];
    assert_eq!(s(r, "run_cost_usd"), "");
    assert_eq!(f(r, "optimizer_steps"), 3907.0);
}

#[test]
fn json_run_cost_and_hardware_are_the_profiles_and_the_arithmetic() {
    // gpt2 on an A100 (its profile has a price), batch 1 × seq 128: 10^9 tokens are
    // 10^9 / 128 = 7 812 500 steps exactly.
    let base = [
        "predict", "--model", "gpt2", "--hw", "a100", "--method", "all", "--batch", "1", "--seq",
        "128", "--tokens", "1e9", "--format", "json",
    ];
    let (hw, preds) = library(
        "gpt2",
        "a100",
        &MethodName::ALL,
        &workload(1, 128),
        Detail::default(),
        None,
    );
    let price = hw.price.clone().expect("the a100 profile has a price");
    let v: Value = serde_json::from_str(&stdout_ok(&base)).unwrap();
    let h = &v["hardware"];
    assert_eq!(h["name"], hw.name.as_str());
    assert_eq!(h["display_name"], hw.display_name.as_str());
    assert_eq!(h["calibrated"], false);
    assert_eq!(h["origin"], hw.origin.as_str());
    assert_eq!(h["memory_bytes"].as_f64(), Some(hw.memory_bytes));
    let rc = &v["run_cost"];
    assert_eq!(
        rc["price"]["usd_per_hour"].as_f64(),
        Some(price.usd_per_hour)
    );
    assert_eq!(rc["price"]["source"], price.source.as_str());
    assert_eq!(rc["price"]["date"].as_str(), price.date.as_deref());
    assert!(rc.get("note").is_none(), "{rc}");
    let methods = rc["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 5);
    for (m, p) in methods.iter().zip(&preds) {
        assert_eq!(m["method"], p.method.as_str());
        assert_eq!(m["fits"], p.fits);
        let want = 7_812_500.0 * p.step_ms / 1e3 / 3600.0 * price.usd_per_hour;
        let got = m["usd"].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-9 * want,
            "{}: {got} vs {want}",
            p.method
        );
    }
    for (j, p) in v["predictions"].as_array().unwrap().iter().zip(&preds) {
        assert_eq!(j["training"]["optimizer_steps"], 7_812_500);
        // JSON prints milliseconds to 6 decimals (1 ns).
        assert_near("step_ms", j["step_ms"].as_f64().unwrap(), p.step_ms, 6);
    }
    // --price: its own source and no date.
    let mut a = base.to_vec();
    a.extend_from_slice(&["--price", "1.5"]);
    let v: Value = serde_json::from_str(&stdout_ok(&a)).unwrap();
    assert_eq!(v["run_cost"]["price"]["usd_per_hour"].as_f64(), Some(1.5));
    assert_eq!(v["run_cost"]["price"]["source"], "--price");
    assert!(v["run_cost"]["price"]["date"].is_null());
    let want = 7_812_500.0 * preds[1].step_ms / 1e3 / 3600.0 * 1.5;
    let got = v["run_cost"]["methods"][1]["usd"].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
}

#[test]
fn the_summary_table_reads_back_as_the_library_prediction() {
    // llama2-7b on an 80 GB A100, batch 1 × seq 256: full fine-tuning does not fit (6.74 B
    // parameters at 16 bytes each for fp32 weights, gradients and Adam's two moments are already
    // 100 GiB); LoRA does. 10^12 tokens at $1250 per hour makes costs of hundreds of millions of
    // dollars: two thousands separators.
    let args = [
        "predict",
        "--model",
        "llama2-7b",
        "--hw",
        "a100",
        "--method",
        "all",
        "--batch",
        "1",
        "--seq",
        "256",
        "--tokens",
        "1e12",
        "--price",
        "1250",
    ];
    let (hw, preds) = library(
        "llama2-7b",
        "a100",
        &MethodName::ALL,
        &workload(1, 256),
        Detail::default(),
        None,
    );
    assert!(!preds[0].fits && preds[1].fits, "the premise of this test");
    let text = stdout_ok(&args);
    let names: Vec<&str> = MethodName::ALL.iter().map(|m| m.as_str()).collect();
    let t = text_summary(&text, &names);
    let row = |label: &str| {
        t.get(label)
            .unwrap_or_else(|| panic!("no row '{label}' in:\n{text}"))
    };
    // The two header lines, from the arguments and the profile.
    let mut lines = text.lines();
    let first = lines.next().unwrap();
    let (name, rest) = first.split_once(" (").unwrap();
    assert_eq!(name, "llama2-7b");
    let (params, rest) = rest.split_once(" params) on ").unwrap();
    let model = preset("llama2-7b").unwrap();
    assert_count("params", params, model.total_params() as f64);
    assert_eq!(
        rest,
        format!(
            "{} [{}; datasheet profile, uncalibrated efficiencies]",
            hw.display_name, hw.name
        )
    );
    assert_eq!(
        lines.next().unwrap(),
        "batch 1 x seq 256 = 256 tokens, grad-accum 1, bf16-mixed, attention sdpa, adamw \
         (fused), grad clip, runtime pytorch-eager, trainer loop"
    );
    // ⌈10^12 / 256⌉ = 3 906 250 000 steps.
    let steps = 3_906_250_000.0;
    for (i, p) in preds.iter().enumerate() {
        let m = &p.method;
        let cell = |label: &str| row(label)[i].as_str();
        let num = |label: &str| -> f64 {
            cell(label)
                .parse()
                .unwrap_or_else(|_| panic!("{m} {label}: '{}'", cell(label)))
        };
        let want_rank = if p.rank == 0 {
            "-".to_string()
        } else {
            p.rank.to_string()
        };
        assert_eq!(cell("rank"), want_rank, "{m}");
        assert_eq!(cell("trained layers"), p.trained_layers, "{m}");
        assert_count(m, cell("trainable params"), p.trainable_params as f64);
        assert_eq!(
            cell("kernels fwd/bwd/opt"),
            format!(
                "{}/{}/{}",
                p.kernels.forward, p.kernels.backward, p.kernels.optimizer
            )
        );
        let (v, d) = with_unit(cell("FLOPs per step"), "TFLOP");
        assert_near("TFLOP", v, p.flops / 1e12, d);
        let (v, d) = with_unit(cell("bytes per step"), "GB");
        assert_near("GB", v, p.bytes / 1e9, d);
        for (label, want) in [
            ("forward ms", p.forward_ms),
            ("backward ms", p.backward_ms),
            ("optimizer ms", p.optimizer_ms),
            ("loop ms", p.loop_ms),
            ("step ms", p.step_ms),
        ] {
            assert_near(label, num(label), want, 2);
        }
        assert_near("tokens/s", num("tokens/s"), 256.0 / (p.step_ms / 1e3), 0);
        let (fw, bw) = cell("host wait fwd/bwd").split_once('/').unwrap();
        for (c, share) in [
            (fw, p.phases[0].host_wait_share),
            (bw, p.phases[1].host_wait_share),
        ] {
            let (v, d) = with_unit(c, "%");
            assert_eq!(d, 1, "{c}");
            assert_near("host wait %", v, share * 100.0, 1);
        }
        assert_eq!(cell("dominant bound"), p.dominant_bound.as_str());
        let (v, d) = with_unit(cell("activations"), "GiB");
        assert_near("activations", v, p.memory.activations_bytes / GIB, d);
        let (v, d) = with_unit(cell("peak memory"), "GiB");
        assert_near("peak", v, p.peak_memory_bytes / GIB, d);
        assert_eq!(cell("optimizer steps"), "3906250000");
        let seconds = steps * p.step_ms / 1e3;
        if p.fits {
            assert_eq!(cell("fits"), "yes");
            assert_eq!(cell("training time"), hms(seconds), "{m}");
            let usd = dollars(cell("run cost"));
            let want = seconds / 3600.0 * 1250.0;
            assert!(want > 1e8, "two separators: {want}");
            assert!(
                (usd - want).abs() <= 0.005 + 1e-12 * want,
                "{m}: {usd} vs {want}"
            );
        } else {
            let (v, d) = with_unit(cell("fits").strip_prefix("no, short ").unwrap(), "GiB");
            assert_near("shortfall", v, p.memory.shortfall_bytes / GIB, d);
            assert!(p.memory.shortfall_bytes > 0.0);
            assert_eq!(cell("training time"), "- (does not fit)");
            assert_eq!(cell("run cost"), "- (does not fit)");
        }
    }
    assert!(
        text.lines()
            .any(|l| l == "price: $1250 per GPU-hour (--price)"),
        "{text}"
    );
}

#[test]
fn the_summary_table_names_a_profile_price_or_its_absence() {
    // A100: the profile's price, its source and the date it was read.
    let run = [
        "predict",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--method",
        "lora",
        "--batch",
        "1",
        "--seq",
        "64",
        "--samples",
        "10",
    ];
    let hw = resolve_device("a100").unwrap();
    let price = hw.price.expect("a100 has a price");
    let text = stdout_ok(&run);
    let want = format!(
        "price: ${} per GPU-hour, {} (read {}); --price overrides it",
        price.usd_per_hour,
        price.source,
        price.date.as_deref().unwrap()
    );
    assert!(text.lines().any(|l| l == want), "{want}\nin:\n{text}");
    // 10 samples of batch 1: 10 steps.
    let (_, preds) = library(
        "gpt2",
        "a100",
        &[MethodName::Lora],
        &workload(1, 64),
        Detail::default(),
        None,
    );
    let t = text_summary(&text, &["lora"]);
    assert_eq!(t["optimizer steps"], ["10"]);
    let cost = dollars(&t["run cost"][0]);
    let want_cost = 10.0 * preds[0].step_ms / 1e3 / 3600.0 * price.usd_per_hour;
    assert!((cost - want_cost).abs() <= 0.005, "{cost} vs {want_cost}");
    // Markdown: the same line, after a blank line, and the header quoted.
    let mut a = run.to_vec();
    a.extend_from_slice(&["--format", "markdown"]);
    let md = stdout_ok(&a);
    assert!(md.contains(&format!("\n\n{want}\n")), "{md}");
    assert!(md.starts_with("> gpt2 ("), "{md}");
    assert!(
        md.lines()
            .nth(1)
            .unwrap()
            .starts_with("> batch 1 x seq 64 = 64 tokens,"),
        "{md}"
    );
    // L4: no price; the run cost says how to give one, and no price line.
    let l4: Vec<&str> = run
        .iter()
        .map(|&a| if a == "a100" { "l4" } else { a })
        .collect();
    let text = stdout_ok(&l4);
    assert!(!text.contains("price: $"), "{text}");
    let t = text_summary(&text, &["lora"]);
    assert_eq!(t["run cost"], ["no price: pass --price"]);
    // Without a run: no run rows.
    let text = stdout_ok(&run[..11]);
    let t = text_summary(&text, &["lora"]);
    assert!(!t.contains_key("optimizer steps") && !t.contains_key("run cost"));
    assert!(t.contains_key("fits"));
}

#[test]
fn the_header_names_every_workload_option() {
    let text = stdout_ok(&[
        "predict",
        "--model",
        "gpt2",
        "--hw",
        "l4",
        "--method",
        "lora",
        "--batch",
        "3",
        "--seq",
        "100",
        "--grad-accum",
        "2",
        "--precision",
        "fp32",
        "--attention",
        "eager",
        "--optimizer",
        "sgd",
        "--no-grad-clip",
        "--grad-checkpointing",
        "--runtime",
        "libtorch",
    ]);
    assert_eq!(
        text.lines().nth(1).unwrap(),
        "batch 3 x seq 100 = 300 tokens, grad-accum 2, fp32, attention eager, sgd, grad \
         checkpointing, runtime libtorch, bare loop"
    );
    for (opt, words) in [
        ("adamw-fused", "adamw (fused)"),
        ("adamw-single", "adamw (single-tensor)"),
    ] {
        let text = stdout_ok(&[
            "predict",
            "--model",
            "gpt2",
            "--hw",
            "l4",
            "--method",
            "lora",
            "--optimizer",
            opt,
            "--runtime",
            "cuda-graph",
            "--loop",
            "trainer",
        ]);
        let second = text.lines().nth(1).unwrap();
        assert!(
            second.ends_with(&format!(
                ", {words}, grad clip, runtime cuda-graph, trainer loop"
            )),
            "{second}"
        );
    }
}

fn check_layer_cells(m: &str, cells: &[String], r: &LayerRow) {
    let what = format!("{m} {}", r.scope);
    assert_eq!(cells[0], r.scope);
    assert_count(&what, &cells[1], r.trainable_params as f64);
    let num = |i: usize| -> f64 { cells[i].parse().unwrap() };
    assert_near(&what, num(2), r.forward_ms, 3);
    assert_near(&what, num(3), r.backward_ms, 3);
    assert_near(&what, num(4), r.optimizer_ms, 3);
    assert_eq!(
        cells[5],
        format!(
            "{}/{}/{}",
            r.forward_kernels, r.backward_kernels, r.optimizer_kernels
        )
    );
    assert_near(&what, num(6), r.flops / 1e9, 1);
    assert_near(&what, num(7), r.bytes / 1e6, 1);
    assert_near(&what, num(8), r.saved_bytes / 1e6, 1);
}

fn check_kernel_cells(cells: &[String], k: &KernelRow) {
    let what = format!("{} #{} {}", k.phase.as_str(), k.index, k.name);
    assert_eq!(cells[0], k.phase.as_str());
    assert_eq!(cells[1], k.index.to_string());
    let name = if k.recompute {
        format!("{} (recompute)", k.name)
    } else {
        k.name.to_string()
    };
    assert_eq!(cells[2], name);
    assert_eq!(cells[3], k.module);
    assert_eq!(cells[4], k.kind.as_str());
    assert_eq!(cells[5], k.dtype);
    assert_eq!(
        cells[6],
        k.shape.clone().unwrap_or_else(|| "-".into()),
        "{what}"
    );
    let num = |i: usize| -> f64 { cells[i].parse().unwrap() };
    assert_near(&what, num(7), k.flops / 1e6, 3);
    assert_near(&what, num(8), k.bytes_read / 1e3, 1);
    assert_near(&what, num(9), k.bytes_written / 1e3, 1);
    assert_eq!(cells[10], k.launches.to_string());
    assert_near(&what, num(11), k.device_us, 2);
    assert_near(&what, num(12), k.host_us, 2);
    assert_eq!(cells[13], k.bound.as_str());
    let deps: Vec<String> = k.deps.iter().map(|d| d.to_string()).collect();
    assert_eq!(cells[14], deps.join(","), "{what}");
    assert_near(&what, num(15), k.l2_reread_bytes / 1e3, 1);
    assert_near(&what, num(16), k.l2_bound_us, 2);
}

#[test]
fn per_layer_and_kernel_tables_read_back_as_the_library_rows() {
    // gpt2 LoRA with gradient checkpointing (recomputed forward kernels in backward), batch 1 ×
    // seq 64, under a Trainer: the loop's host work is reported under the kernels.
    let w = Workload {
        grad_checkpointing: true,
        ..workload(1, 64)
    };
    let detail = Detail {
        per_layer: true,
        kernels: true,
    };
    let (_, preds) = library("gpt2", "l4", &[MethodName::Lora], &w, detail, None);
    let p = &preds[0];
    let md = stdout_ok(&[
        "predict",
        "--model",
        "gpt2",
        "--hw",
        "l4",
        "--method",
        "lora",
        "--batch",
        "1",
        "--seq",
        "64",
        "--grad-checkpointing",
        "--per-layer",
        "--kernels",
        "--format",
        "markdown",
    ]);
    let (head, rows) = md_after(&md, "### per layer: lora");
    assert_eq!(head.len(), 9);
    assert_eq!(head[0], "scope");
    let layers = p.per_layer.as_ref().unwrap();
    assert_eq!(rows.len(), layers.len());
    for (cells, r) in rows.iter().zip(layers) {
        check_layer_cells("lora", cells, r);
    }
    let (head, rows) = md_after(&md, "### kernels: lora");
    assert_eq!(head.len(), 17);
    let kernels = p.kernel_rows.as_ref().unwrap();
    assert_eq!(rows.len(), kernels.len());
    assert!(
        kernels.iter().any(|k| k.recompute),
        "checkpointing recomputes"
    );
    assert!(
        kernels.iter().any(|k| k.deps.len() > 1),
        "some kernel has two deps"
    );
    for (cells, k) in rows.iter().zip(kernels) {
        check_kernel_cells(cells, k);
    }
    // The L2 line, after the kernel table: the forward and backward rows' re-reads summed.
    let fb: Vec<_> = kernels
        .iter()
        .filter(|k| k.phase != costsim_model::graph::Phase::Optimizer)
        .collect();
    assert!(
        fb.len() < kernels.len(),
        "the optimizer's rows are left out"
    );
    let line = md
        .lines()
        .find(|l| l.starts_with("L2 (columns L2 KB, L2 us): "))
        .unwrap_or_else(|| panic!("{md}"));
    let nums: Vec<f64> = line
        .split([' ', '('])
        .filter_map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(nums.len(), 5, "{line}");
    let reread = fb.iter().filter(|k| k.l2_reread_bytes > 0.0).count();
    assert!(reread > 0, "gpt2 LoRA re-reads recent outputs");
    assert_eq!(nums[0], reread as f64, "{line}");
    let sum = |f: fn(&KernelRow) -> f64| fb.iter().map(|k| f(k)).sum::<f64>();
    assert_near("L2 MB", nums[1], sum(|k| k.l2_reread_bytes) / 1e6, 1);
    let (bound, device) = (sum(|k| k.l2_bound_us) / 1e3, sum(|k| k.device_us) / 1e3);
    assert_near("L2 bound ms", nums[2], bound, 3);
    assert_near("device ms", nums[3], device, 3);
    assert_near("L2 share", nums[4], 100.0 * bound / device, 1);
    // The loop line, after the kernel table: host work and GPU idle per step, ms.
    assert!(p.loop_host_ms > 0.0);
    let line = md
        .lines()
        .find(|l| l.starts_with("training loop, outside the kernels: "))
        .unwrap_or_else(|| panic!("{md}"));
    let nums: Vec<f64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    assert_eq!(nums.len(), 2, "{line}");
    assert_near("loop host", nums[0], p.loop_host_ms, 3);
    assert_near("loop idle", nums[1], p.loop_ms, 3);
    // A bare loop has no host work of its own and no such line.
    let w = Workload {
        training_loop: TrainingLoop::Bare,
        runtime: Runtime::PytorchEager,
        ..workload(1, 64)
    };
    let (_, bare) = library("gpt2", "l4", &[MethodName::Lora], &w, detail, None);
    assert_eq!(bare[0].loop_host_ms, 0.0);
    let text = stdout_ok(&[
        "predict",
        "--model",
        "gpt2",
        "--hw",
        "l4",
        "--method",
        "lora",
        "--batch",
        "1",
        "--seq",
        "64",
        "--loop",
        "bare",
        "--kernels",
    ]);
    assert!(text.contains("kernels: lora"), "{text}");
    assert!(!text.contains("training loop, outside"), "{text}");
}

/// One sweep point through the library: the row `costsim sweep` should print for it.
fn sweep_point(
    model: &str,
    hw: &str,
    method: MethodName,
    batch: u64,
    seq: u64,
) -> Option<Prediction> {
    let m = preset(model).unwrap();
    let w = workload(batch, seq);
    w.validate(&m).ok()?;
    let (_, preds) = library(model, hw, &[method], &w, Detail::default(), None);
    preds.into_iter().next()
}

/// The sweep grid of the tests below: gpt2's seq 2048 is beyond its 1024 positions (invalid);
/// llama2-7b full fine-tuning does not fit an L4 (out of memory).
const SWEEP: [&str; 13] = [
    "sweep",
    "--model",
    "gpt2,llama2-7b",
    "--hw",
    "l4",
    "--method",
    "full,lora",
    "--batch",
    "1,2",
    "--seq",
    "128,2048",
    "--quiet",
    "--format",
];

/// The grid's points in the order the sweep writes them (model, hw, method, batch, seq — the
/// order of its columns, the last varying fastest).
fn sweep_points() -> Vec<(&'static str, MethodName, u64, u64)> {
    let mut v = Vec::new();
    for model in ["gpt2", "llama2-7b"] {
        for method in [MethodName::Full, MethodName::Lora] {
            for batch in [1, 2] {
                for seq in [128, 2048] {
                    v.push((model, method, batch, seq));
                }
            }
        }
    }
    v
}

#[test]
fn sweep_csv_and_json_rows_are_the_library_predictions() {
    let l4 = resolve_device("l4").unwrap();
    let csv = csv_records(&stdout_ok(&[&SWEEP[..], &["csv"]].concat()));
    let json: Value = serde_json::from_str(&stdout_ok(&[&SWEEP[..], &["json"]].concat())).unwrap();
    let json = json.as_array().unwrap();
    let points = sweep_points();
    assert_eq!(csv.len(), points.len());
    assert_eq!(json.len(), points.len());
    let mut seen = HashMap::new();
    for ((r, j), &(model, method, batch, seq)) in csv.iter().zip(json).zip(&points) {
        let what = format!("{model} {method} {batch}x{seq}");
        assert_eq!(s(r, "model"), model, "{what}");
        assert_eq!(j["model"], model);
        assert_eq!(s(r, "hw"), l4.name);
        assert_eq!(j["hw"], l4.name.as_str());
        assert_eq!(s(r, "method"), method.as_str());
        assert_eq!(j["method"], method.as_str());
        assert_eq!(f(r, "batch"), batch as f64);
        assert_eq!(f(r, "seq"), seq as f64);
        assert_eq!(j["batch"], batch);
        assert_eq!(j["seq"], seq);
        assert_eq!(s(r, "precision"), "bf16-mixed");
        match sweep_point(model, "l4", method, batch, seq) {
            None => {
                // Invalid: no numbers (empty CSV fields, JSON nulls), a message saying why.
                *seen.entry("invalid").or_insert(0) += 1;
                assert_eq!(s(r, "status"), "invalid", "{what}");
                assert_eq!(j["status"], "invalid");
                assert!(s(r, "message").contains("2048"), "{what}: {r:?}");
                assert_eq!(j["message"].as_str(), Some(s(r, "message")));
                for col in [
                    "step_ms",
                    "forward_ms",
                    "backward_ms",
                    "optimizer_ms",
                    "loop_ms",
                    "tokens_per_s",
                    "peak_memory_gib",
                    "trainable_params",
                    "kernels_per_step",
                    "dominant_bound",
                ] {
                    assert_eq!(s(r, col), "", "{what} {col}");
                }
                for col in ["step_ms", "tokens_per_s", "peak_memory_gib"] {
                    assert!(j[col].is_null(), "{what} {col}");
                }
            }
            Some(p) => {
                let status = if p.fits { "ok" } else { "out-of-memory" };
                *seen.entry(status).or_insert(0) += 1;
                assert_eq!(s(r, "status"), status, "{what}");
                assert_eq!(j["status"], status);
                assert_eq!(s(r, "message"), "");
                assert_eq!(f(r, "rank"), p.rank as f64);
                assert_eq!(j["rank"], p.rank);
                assert_eq!(s(r, "train_layers"), p.trained_layers, "{what}");
                for (col, want, d) in [
                    ("step_ms", p.step_ms, 6),
                    ("forward_ms", p.forward_ms, 6),
                    ("backward_ms", p.backward_ms, 6),
                    ("optimizer_ms", p.optimizer_ms, 6),
                    ("loop_ms", p.loop_ms, 6),
                    ("tokens_per_s", p.tokens_per_s, 0),
                    ("peak_memory_gib", p.peak_memory_bytes / GIB, 2),
                ] {
                    assert_near(&format!("{what} {col}"), f(r, col), want, d);
                    let got = j[col].as_f64().unwrap();
                    assert!(
                        (got - want).abs() <= 1e-9 * want.abs(),
                        "{what} json {col}: {got} vs {want}"
                    );
                }
                assert_eq!(f(r, "trainable_params"), p.trainable_params as f64);
                let kernels = p.kernels.forward + p.kernels.backward + p.kernels.optimizer;
                assert_eq!(f(r, "kernels_per_step"), kernels as f64, "{what}");
                assert_eq!(j["kernels_per_step"], kernels);
                assert_eq!(s(r, "dominant_bound"), p.dominant_bound.as_str());
                assert_eq!(j["dominant_bound"], p.dominant_bound.as_str());
            }
        }
    }
    assert_eq!(seen.get("invalid"), Some(&4), "{seen:?}");
    assert!(
        seen.get("out-of-memory").is_some_and(|&n| n >= 2),
        "{seen:?}"
    );
    assert!(seen.get("ok").is_some_and(|&n| n >= 4), "{seen:?}");
}

#[test]
fn sweep_tables_read_back_as_the_library_predictions_to_two_decimals() {
    let text = stdout_ok(&[&SWEEP[..], &["table"]].concat());
    let md = stdout_ok(&[&SWEEP[..], &["markdown"]].concat());
    let (head, md_rows) = md_after(&md, "");
    assert_eq!(head.len(), 20);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        head,
        "the same columns"
    );
    assert!(lines[1].chars().all(|c| c == '-'));
    assert_eq!(lines[1].len(), lines[0].len(), "the rule spans the table");
    let points = sweep_points();
    assert_eq!(md_rows.len(), points.len());
    assert_eq!(lines.len(), 2 + points.len());
    let col = |name: &str| head.iter().position(|h| h == name).unwrap();
    for ((cells, line), &(model, method, batch, seq)) in
        md_rows.iter().zip(&lines[2..]).zip(&points)
    {
        let what = format!("{model} {method} {batch}x{seq}");
        // Every cell but an invalid point's message is one word: the text table splits on
        // whitespace into the Markdown table's cells.
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words[..19],
            cells[..19].iter().map(|c| c.as_str()).collect::<Vec<_>>()[..],
            "{what}"
        );
        assert_eq!(words[19..].join(" "), cells[19], "{what}");
        assert_eq!(cells[col("model")], model);
        assert_eq!(cells[col("method")], method.as_str());
        assert_eq!(cells[col("batch")], batch.to_string());
        assert_eq!(cells[col("seq")], seq.to_string());
        match sweep_point(model, "l4", method, batch, seq) {
            None => {
                assert_eq!(cells[col("status")], "invalid");
                for c in [
                    "step_ms",
                    "tokens_per_s",
                    "peak_memory_gib",
                    "kernels_per_step",
                ] {
                    assert_eq!(cells[col(c)], "-", "{what} {c}");
                }
                assert!(cells[col("message")].contains("2048"));
            }
            Some(p) => {
                let num = |c: &str| -> f64 { cells[col(c)].parse().unwrap() };
                for (c, want, d) in [
                    ("step_ms", p.step_ms, 2),
                    ("forward_ms", p.forward_ms, 2),
                    ("backward_ms", p.backward_ms, 2),
                    ("optimizer_ms", p.optimizer_ms, 2),
                    ("loop_ms", p.loop_ms, 2),
                    ("tokens_per_s", p.tokens_per_s, 0),
                    ("peak_memory_gib", p.peak_memory_bytes / GIB, 2),
                ] {
                    assert_near(&format!("{what} {c}"), num(c), want, d);
                    // Two decimals exactly (none for tokens/s).
                    let printed = &cells[col(c)];
                    assert_eq!(
                        printed.split_once('.').map_or(0, |(_, f)| f.len()),
                        d as usize,
                        "{what} {c}: {printed}"
                    );
                }
                assert_eq!(num("trainable_params"), p.trainable_params as f64);
                assert_eq!(cells[col("dominant_bound")], p.dominant_bound.as_str());
                let status = if p.fits { "ok" } else { "out-of-memory" };
                assert_eq!(cells[col("status")], status);
            }
        }
    }
}

/// docs/model.md's table of L2 bounds ("L2: what re-reads could save"): each cell is the sum of
/// `l2_bound_us` over one micro-batch's forward and backward kernel rows, as a share of their
/// `device_us`, for that GPU and configuration at batch 8 × 512, recomputed here from
/// `costsim predict --kernels --format json`.
#[test]
fn the_l2_bound_table_in_the_model_docs_regenerates() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/model.md"))
        .expect("docs/model.md");
    let sec = doc
        .split("## L2: what re-reads could save")
        .nth(1)
        .expect("the L2 section");
    let configs: [(&str, &str); 5] = [
        ("llama2-7b", "lora"),
        ("llama2-7b", "full"),
        ("llama2-7b", "paca"),
        ("tinyllama-1.1b", "lora"),
        ("gpt2-medium", "lora"),
    ];
    let head = sec
        .lines()
        .find(|l| l.starts_with("| GPU (L2) |"))
        .expect("the table's head");
    let cols: Vec<&str> = head
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    for ((model, method), col) in configs.iter().zip(&cols[1..]) {
        assert_eq!(
            col.to_lowercase(),
            format!("{model} {method}"),
            "column order"
        );
    }
    let mut rows = 0;
    for hw in ["h100-sxm", "a100-80gb-sxm", "l40s"] {
        let line = sec
            .lines()
            .find(|l| l.starts_with(&format!("| {hw} (")))
            .unwrap_or_else(|| panic!("no row for {hw}"));
        let cells: Vec<&str> = line
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cells.len(), configs.len() + 1, "{line}");
        let l2_mib = resolve_device(hw).expect("profile").l2_bytes / 1048576.0;
        assert_eq!(cells[0], format!("{hw} ({l2_mib} MiB)"));
        for ((model, method), cell) in configs.iter().zip(&cells[1..]) {
            let out = stdout_ok(&[
                "predict",
                "--model",
                model,
                "--hw",
                hw,
                "--method",
                method,
                "--batch",
                "8",
                "--seq",
                "512",
                "--kernels",
                "--format",
                "json",
            ]);
            let v: Value = serde_json::from_str(&out).expect("json");
            let (mut bound, mut device) = (0.0, 0.0);
            for k in v["predictions"][0]["kernel_rows"].as_array().expect("rows") {
                if k["phase"] != "optimizer" {
                    bound += k["l2_bound_us"].as_f64().expect("l2_bound_us");
                    device += k["device_us"].as_f64().expect("device_us");
                }
            }
            assert_eq!(
                *cell,
                format!("{:.1}%", 100.0 * bound / device),
                "{hw} {model} {method}"
            );
            rows += 1;
        }
    }
    assert_eq!(rows, 15);
}
