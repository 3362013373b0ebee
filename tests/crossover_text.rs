//! `costsim crossover`'s text report read back line by line and set against the same run's
//! `--format json` (the second code path: the numbers the text is formatted from, each rounded
//! here to the text's decimals), with the verdict of a comparison without a crossing worked from
//! the JSON ratios by the rule docs/sweeps.md states (below 1 throughout: faster; at least 1
//! throughout: slower). Nothing is compared with a golden file.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test, with its location

mod common;

use common::stdout_ok;
use serde_json::Value;
use std::process::Command;

/// The cells of a text-table line (runs of two or more spaces separate them).
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

/// Checks the text of one crossover run against its JSON; returns the verdicts seen.
fn check(args: &[&str]) -> Vec<String> {
    let text = stdout_ok(args);
    let mut jargs = args.to_vec();
    jargs.extend(["--format", "json"]);
    let json: Value = serde_json::from_str(&stdout_ok(&jargs)).expect("JSON");
    let axis = json["axis"].as_str().expect("axis");
    let mut sections = text.split("\nLoRA vs ");
    let title = sections.next().expect("title");
    assert!(
        title.starts_with(&format!(
            "{} on {}",
            json["model"].as_str().unwrap(),
            json["hw"].as_str().unwrap()
        )),
        "{title}"
    );
    assert!(title.contains(&format!("along {axis}")), "{title}");
    let comparisons = json["comparisons"].as_array().expect("comparisons");
    let sections: Vec<&str> = sections.collect();
    assert_eq!(sections.len(), comparisons.len());
    let mut verdicts = Vec::new();
    for (sec, c) in sections.iter().zip(comparisons) {
        let other = c["other"].as_str().expect("other");
        let lines: Vec<&str> = sec.lines().collect();
        assert_eq!(lines[0], other);
        assert_eq!(cells(lines[1]), [axis, "lora ms", "other ms", "lora/other"]);
        let points = c["points"].as_array().expect("points");
        // Each point: the axis value, both step times at 2 decimals, their ratio at 3.
        for (i, p) in points.iter().enumerate() {
            let want = vec![
                p[0].as_u64().expect("value").to_string(),
                format!("{:.2}", f(&p[1])),
                format!("{:.2}", f(&p[2])),
                format!("{:.3}", f(&p[3])),
            ];
            assert_eq!(cells(lines[3 + i]), want, "{other} point {i}");
        }
        let rest = &lines[3 + points.len()..];
        let crossings = c["crossings"].as_array().expect("crossings");
        if crossings.is_empty() {
            let ratios: Vec<f64> = points.iter().map(|p| f(&p[3])).collect();
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            let verdict = if hi < 1.0 {
                "LoRA is faster throughout"
            } else if lo >= 1.0 {
                "LoRA is slower throughout"
            } else {
                "no crossing"
            };
            assert_eq!(
                rest[0],
                format!("No crossover in this range: {verdict} (ratio {lo:.3}..{hi:.3}).")
            );
            verdicts.push(verdict.to_string());
            continue;
        }
        let mut at = 0;
        for x in crossings {
            let faster = x["lora_becomes_faster"].as_bool().expect("bool");
            // The ratios move across 1 in the direction the sentence names.
            assert_eq!(faster, f(&x["ratio_after"]) < f(&x["ratio_before"]));
            assert_eq!(
                rest[at],
                format!(
                    "Crossover between {axis} {} (ratio {:.4}) and {} (ratio {:.4}): LoRA becomes {} than {other}.",
                    x["before"],
                    f(&x["ratio_before"]),
                    x["after"],
                    f(&x["ratio_after"]),
                    if faster { "faster" } else { "slower" },
                )
            );
            let (gb, ga) = (&x["grid_before"], &x["grid_after"]);
            let change = f(&x["driver_change_ms"]);
            assert_eq!(
                rest[at + 1],
                format!(
                    "Driven by {} ({}{change:.3} ms per step from {axis} {} to {}).",
                    x["driver"].as_str().unwrap(),
                    if change >= 0.0 { "+" } else { "" },
                    gb["value"],
                    ga["value"]
                )
            );
            assert_eq!(
                cells(rest[at + 2]),
                [
                    "T_lora - T_other (ms)".to_string(),
                    format!("{axis} {}", gb["value"]),
                    format!("{axis} {}", ga["value"])
                ]
            );
            let parts_b = gb["parts"].as_array().unwrap();
            let parts_a = ga["parts"].as_array().unwrap();
            for (j, (pb, pa)) in parts_b.iter().zip(parts_a).enumerate() {
                assert_eq!(
                    cells(rest[at + 4 + j]),
                    [
                        pb["name"].as_str().unwrap().to_string(),
                        format!("{:.3}", f(&pb["ms"])),
                        format!("{:.3}", f(&pa["ms"]))
                    ]
                );
            }
            // The total row is the difference of the two step times at each grid point.
            let total = cells(rest[at + 4 + parts_b.len()]);
            assert_eq!(
                total,
                [
                    "total".to_string(),
                    format!("{:.3}", f(&gb["lora_ms"]) - f(&gb["other_ms"])),
                    format!("{:.3}", f(&ga["lora_ms"]) - f(&ga["other_ms"]))
                ]
            );
            at += 5 + parts_b.len();
        }
    }
    verdicts
}

/// gpt2-large on an A100 along seq at batch 4, bare loop: LoRA crosses full fine-tuning (a
/// crossing with its parts table) and stays slower than PaCA throughout. (gpt2-medium, used
/// before the forward counted every module call, is now slower with LoRA against both.)
#[test]
fn crossing_and_slower_throughout_match_the_json() {
    let v = check(&[
        "crossover",
        "--model",
        "gpt2-large",
        "--hw",
        "a100",
        "--vary",
        "seq",
        "--batch",
        "4",
        "--loop",
        "bare",
    ]);
    assert_eq!(v, ["LoRA is slower throughout"]);
}

/// llama2-7b on an H200 at batch 1, bare loop: LoRA faster than full fine-tuning throughout and
/// slower than PaCA throughout (both verdicts without a crossing).
#[test]
fn faster_and_slower_throughout_match_the_json() {
    let v = check(&[
        "crossover",
        "--model",
        "llama2-7b",
        "--hw",
        "h200",
        "--vary",
        "seq",
        "--range",
        "128,256,512",
        "--batch",
        "1",
        "--loop",
        "bare",
    ]);
    assert_eq!(
        v,
        ["LoRA is faster throughout", "LoRA is slower throughout"]
    );
}

fn status_and_stderr(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(args)
        .output()
        .expect("run costsim");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `--range` needs two values at least and takes 1000 at most: one value and 1001 values are
/// usage errors naming the rule (exit 2), two values (the smallest search) run.
#[test]
fn range_lengths_at_their_limits() {
    let base = [
        "crossover",
        "--model",
        "gpt2",
        "--hw",
        "a100",
        "--vary",
        "batch",
        "--range",
    ];
    let (code, err) = status_and_stderr(&[&base[..], &["4"]].concat());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at least two values"), "{err}");
    let (code, err) = status_and_stderr(&[&base[..], &["1..1001"]].concat());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("has 1001 values") && err.contains("at most 1000"),
        "{err}"
    );
    let text = stdout_ok(&[&base[..], &["2,4", "--seq", "128"]].concat());
    // Both comparisons list exactly the two batch sizes.
    assert_eq!(text.matches("\n2 ").count(), 2, "{text}");
    assert_eq!(text.matches("\n4 ").count(), 2, "{text}");
}
