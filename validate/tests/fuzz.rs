//! In-process mutation fuzzing of the five input parsers, on stable Rust: config.json
//! (`costsim_model::arch::parse_hf_config`), profile TOML (`costsim_hardware::parse_profile`),
//! results records (`ResultsFile::parse`), calibration samples (`CalibrationRun::parse`) and
//! Trainer step records (`steploop::parse_step_record`).
//!
//! Each execution takes a real seed file, applies one to three mutations (a number replaced by
//! an edge value such as 0, -1, 5e-324, 1e308, 2^32 or 2^64; a byte replaced; a span deleted or
//! duplicated; a delimiter inserted), parses it, and when the parser accepts it runs what
//! consumes it (predict, compare, calibrate). A finding is a panic (overflow checks are on in
//! test builds) or a non-finite or non-positive time in the result. Parser errors are the
//! expected outcome of most mutants.
//!
//! `cargo test -p costsim-validate --test fuzz` runs a short smoke pass (a few hundred
//! executions per parser). The long run is by hand:
//! `FUZZ_EXECS=20000 cargo test -p costsim-validate --test fuzz -- --ignored --nocapture`;
//! findings are written to target/fuzz-findings/ to be minimised into regression tests.
//! docs/reliability.md records the runs.

use costsim_hardware::Profile;
use costsim_model::{Config, Detail, MethodName, MethodOptions, MethodSpec, Workload};
use costsim_validate::fit::CalibrationRun;
use costsim_validate::record::ResultsFile;
use std::panic::AssertUnwindSafe;

/// A small, seeded generator (xorshift64*): reproducible runs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const EDGE_NUMBERS: [&str; 22] = [
    "0",
    "-0",
    "-1",
    "1",
    "5e-324",
    "1e-310",
    "1e-320",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "1e19",
    "65536",
    "0.5",
    "nan",
    "inf",
    "1e400",
    "2",
];

const INSERTS: [&str; 10] = ["\"", "{", "}", "[", "]", ",", "\n", "=", "-", "\\u0000"];

/// Byte ranges of the numbers in `text` (a digit run with sign, point and exponent).
fn numbers(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphabetic() || b[i] == b'_' {
            // A name (fp32, a100, model_type): skip it whole.
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            continue;
        }
        let starts =
            b[i].is_ascii_digit() || (b[i] == b'-' && i + 1 < b.len() && b[i + 1].is_ascii_digit());
        if starts {
            let s = i;
            i += 1;
            while i < b.len()
                && (b[i].is_ascii_digit() || matches!(b[i], b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(seed: &str, rng: &mut Rng) -> String {
    let mut s = seed.to_string();
    for _ in 0..1 + rng.below(3) {
        match rng.below(6) {
            0..=2 => {
                let nums = numbers(&s);
                if nums.is_empty() {
                    continue;
                }
                let (a, b) = nums[rng.below(nums.len())];
                let v = EDGE_NUMBERS[rng.below(EDGE_NUMBERS.len())];
                s.replace_range(a..b, v);
            }
            3 => {
                let i = floor_char(&s, rng.below(s.len()));
                let ins = INSERTS[rng.below(INSERTS.len())];
                s.insert_str(i, ins);
            }
            4 => {
                let a = floor_char(&s, rng.below(s.len()));
                let b = floor_char(&s, (a + 1 + rng.below(64)).min(s.len()));
                s.replace_range(a..b, "");
            }
            _ => {
                let a = floor_char(&s, rng.below(s.len()));
                let b = floor_char(&s, (a + 1 + rng.below(128)).min(s.len()));
                let chunk = s[a..b].to_string();
                s.insert_str(b, &chunk);
            }
        }
    }
    s
}

fn finite_positive(what: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{what} = {v}"))
    }
}

/// Every time and error of a comparison finite (absent phases and layer benchmarks are `None`
/// by design, so the report is checked field by field rather than through its JSON).
fn report_finite(r: &costsim_validate::compare::Report) -> Result<(), String> {
    let check = |what: String, v: f64| {
        if v.is_finite() {
            Ok(())
        } else {
            Err(format!("{what} = {v}"))
        }
    };
    for (i, row) in r.rows.iter().enumerate() {
        for (p, m) in row.phases.iter().flatten() {
            check(format!("rows.{i} predicted"), *p)?;
            check(format!("rows.{i} measured"), *m)?;
        }
        if let Some((_, f, b)) = row.layer {
            for v in [f.0, f.1, b.0, b.1] {
                check(format!("rows.{i} layer"), v)?;
            }
        }
    }
    for p in &r.phases {
        check(format!("{} MAPE", p.phase), p.mape)?;
        check(format!("{} worst", p.phase), p.worst)?;
    }
    for m in &r.methods {
        check(format!("{} MAPE", m.method), m.mape)?;
        check(format!("{} worst", m.method), m.worst)?;
    }
    for a in &r.ablations {
        check(format!("ablation {} MAPE", a.model), a.mape)?;
        check(format!("ablation {} worst", a.model), a.worst)?;
    }
    Ok(())
}

fn predict_ok(model: &costsim_model::ModelConfig, hw: &Profile) -> Result<bool, String> {
    let w = Workload {
        batch: 1,
        seq: model.max_positions.min(128),
        ..Workload::default()
    };
    if w.validate(model).is_err() {
        return Ok(true);
    }
    for name in [MethodName::Full, MethodName::Lora, MethodName::Paca] {
        let Ok(method) = MethodSpec::resolve(name, &MethodOptions::default(), model, true) else {
            continue;
        };
        let cfg = Config {
            model: model.clone(),
            method,
            workload: w.clone(),
            hw: hw.clone(),
        };
        let p = costsim_model::predict(&cfg, Detail::default(), None);
        finite_positive("step_ms", p.step_ms)?;
        finite_positive("tokens/s", p.tokens_per_s)?;
        finite_positive("peak memory", p.memory.peak_bytes)?;
    }
    Ok(true)
}

/// One parser and what consumes its output.
struct Target {
    name: &'static str,
    seeds: Vec<String>,
    /// Ok(true) when the parser accepted the input and its consumers ran clean.
    run: fn(&str) -> Result<bool, String>,
}

fn read(rel: &str) -> String {
    let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("seed {path}: {e}"))
}

fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "config.json",
            seeds: vec![
                r#"{"model_type":"llama","hidden_size":256,"num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":2,"intermediate_size":688,"vocab_size":1000,"max_position_embeddings":256,"tie_word_embeddings":false,"head_dim":32}"#.into(),
                r#"{"model_type":"gpt2","n_embd":128,"n_layer":2,"n_head":4,"n_inner":512,"vocab_size":1000,"n_positions":128,"resid_pdrop":0.1}"#.into(),
                r#"{"model_type":"qwen2","hidden_size":64,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":1,"intermediate_size":128,"vocab_size":500,"max_position_embeddings":64,"tie_word_embeddings":true}"#.into(),
            ],
            run: |text| {
                let Ok(model) = costsim_model::arch::parse_hf_config(text, "fuzz/config.json")
                else {
                    return Ok(false);
                };
                let hw = costsim_hardware::resolve_device("a100").map_err(|e| e.to_string())?;
                predict_ok(&model, &hw)
            },
        },
        Target {
            name: "profile.toml",
            seeds: costsim_hardware::BUILTIN
                .iter()
                .map(|(_, t)| t.to_string())
                .chain([read("docs/results/cpu/cpu-calibrated.toml")])
                .collect(),
            run: |text| {
                let Ok(hw) = costsim_hardware::parse_profile(text, "fuzz.toml") else {
                    return Ok(false);
                };
                let model = costsim_model::preset("gpt2").map_err(|e| e.to_string())?;
                predict_ok(&model, &hw)
            },
        },
        Target {
            name: "results.json",
            seeds: vec![read("tests/data/results-small.json")],
            run: |text| {
                let Ok(file) = ResultsFile::parse(text, "fuzz.json") else {
                    return Ok(false);
                };
                let hw = costsim_hardware::resolve_device("cpu-generic")
                    .map_err(|e| e.to_string())?;
                let Ok(report) = costsim_validate::compare::compare(&file, &hw) else {
                    return Ok(false);
                };
                let _ = costsim_validate::compare::render(&report);
                report_finite(&report).map(|()| true)
            },
        },
        Target {
            name: "samples.json",
            seeds: vec![read("docs/results/cpu/cpu-calibration.json")],
            run: |text| {
                let Ok(run) = CalibrationRun::parse(text, "fuzz.json") else {
                    return Ok(false);
                };
                let base = costsim_hardware::resolve_device("cpu-generic")
                    .map_err(|e| e.to_string())?;
                let Ok(cal) = costsim_validate::fit::calibrate(&run, &base, "fuzz") else {
                    return Ok(false);
                };
                let _ = costsim_validate::fit::render(&cal);
                costsim_hardware::parse_profile(&cal.profile_toml, "fuzz calibrated")
                    .map(|_| true)
                    .map_err(|e| format!("calibrate wrote a profile that does not load: {e}"))
            },
        },
        Target {
            name: "step.json",
            seeds: vec![
                read("docs/results/cpu/step/heldout/llama-small-lora-all-accum2.json"),
                read("docs/results/cpu/step/heldout/gpt2-tiny-paca-all.json"),
            ],
            run: |text| {
                use costsim_validate::steploop;
                let Ok(r) = steploop::parse_step_record(text, "fuzz.json") else {
                    return Ok(false);
                };
                let hw = costsim_hardware::parse_profile(
                    &read("docs/results/cpu/host/cpu-eager.toml"),
                    "cpu-eager",
                )
                .map_err(|e| e.to_string())?;
                // The fit over four copies (a degenerate but legal input) must not panic.
                let recs: Vec<_> = (0..4).map(|i| (r.clone(), format!("{i}"))).collect();
                let _ = steploop::fit_loop(&recs);
                let Ok(c) = steploop::compare_step(&r, "fuzz.json", &hw) else {
                    return Ok(false);
                };
                let _ = steploop::render_steps(std::slice::from_ref(&c));
                finite_positive("Trainer step", c.trainer_step.predicted)?;
                finite_positive("bare step", c.bare_step.predicted)?;
                Ok(true)
            },
        },
    ]
}

/// Run `execs` mutants per target; returns (target, execs, accepted, findings).
fn campaign(execs: usize, seed: u64, keep: bool) -> Vec<(&'static str, usize, usize, Vec<String>)> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(seed);
    let dir = format!("{}/../target/fuzz-findings", env!("CARGO_MANIFEST_DIR"));
    let mut summary = Vec::new();
    for t in targets() {
        let mut findings = Vec::new();
        let mut accepted = 0;
        for i in 0..execs {
            let seed_text = &t.seeds[rng.below(t.seeds.len())];
            let input = mutate(seed_text, &mut rng);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (t.run)(&input)));
            let problem = match outcome {
                Ok(Ok(ran)) => {
                    accepted += usize::from(ran && input != *seed_text);
                    None
                }
                Ok(Err(m)) => Some(format!("bad output: {m}")),
                Err(p) => Some(format!(
                    "panic: {}",
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            };
            if let Some(m) = problem {
                if keep {
                    let _ = std::fs::create_dir_all(&dir);
                    let _ = std::fs::write(format!("{dir}/{}-{i}.txt", t.name), &input);
                }
                findings.push(m);
            }
        }
        summary.push((t.name, execs, accepted, findings));
    }
    std::panic::set_hook(previous);
    summary
}

fn report(summary: &[(&'static str, usize, usize, Vec<String>)]) -> usize {
    let mut total = 0;
    for (name, execs, accepted, findings) in summary {
        eprintln!(
            "{name}: {execs} executions, {accepted} mutants accepted and consumed, {} findings",
            findings.len()
        );
        for f in findings.iter().take(5) {
            eprintln!("  {f}");
        }
        total += findings.len();
    }
    total
}

#[test]
fn mutation_smoke_run_finds_nothing() {
    let summary = campaign(150, 0x5eed, false);
    assert_eq!(report(&summary), 0, "see the findings above");
    // The harness really exercises the consumers: some mutants parse and run through.
    for (name, execs, accepted, _) in &summary {
        assert!(
            *accepted > 0 && accepted < execs,
            "{name}: {accepted} of {execs} accepted"
        );
    }
}

#[test]
#[ignore = "long run, by hand: FUZZ_EXECS=20000 cargo test -p costsim-validate --test fuzz -- --ignored --nocapture"]
fn mutation_long_run() {
    let execs = std::env::var("FUZZ_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0c05_751e);
    let summary = campaign(execs, seed, true);
    assert_eq!(report(&summary), 0, "findings in target/fuzz-findings/");
}

#[test]
fn number_edits_target_values_not_names() {
    let text = r#"{"a100": 12, "fp32-tflops": -1.5e3, "x": [3]}"#;
    let spans: Vec<&str> = numbers(text).iter().map(|&(a, b)| &text[a..b]).collect();
    assert_eq!(spans, ["12", "-1.5e3", "3"]);
}
