//! The validation page is generated from committed data: regenerating the held-out summary and
//! the calibrated profile from `docs/results/cpu` must give exactly the committed files, and the
//! page must quote the summary as generated.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test, with its location

mod common;

use common::stdout_ok;
use std::path::{Path, PathBuf};
use std::process::Command;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/results/cpu");

fn heldout_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("heldout-") && n.ends_with(".json"))
        })
        .collect();
    v.sort();
    v
}

/// [`heldout_files`] as `validate --from` takes them: comma-separated.
fn heldout_list(dir: &str) -> String {
    heldout_files(dir)
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `validate --from` over a run's held-out measurements with one of its profiles gives exactly
/// the committed summary; with `quoted`, docs/validation.md quotes every table line of it.
fn check_summary(dir: &str, profile: &str, summary_file: &str, quoted: bool) {
    let files = heldout_files(dir);
    assert!(files.len() >= 5, "{files:?}");
    let list = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let profile = format!("{dir}/{profile}");
    let summary = stdout_ok(&[
        "validate", "--from", &list, "--hw", &profile, "--format", "markdown",
    ]);
    let committed = read(&Path::new(dir).join(summary_file));
    assert_eq!(
        summary, committed,
        "{dir}/{summary_file}: regenerate with scripts/cpu-validate.sh's last steps"
    );
    if quoted {
        let page = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/validation.md"));
        for line in committed.lines().filter(|l| l.starts_with('|')) {
            assert!(page.contains(line), "docs/validation.md lacks: {line}");
        }
    }
}

#[test]
fn heldout_summary_regenerates_from_the_committed_measurements() {
    check_summary(DIR, "cpu-calibrated.toml", "heldout-summary.md", true);
}

/// A run of its own directory: its summary under its own calibration (quoted in
/// docs/validation.md) and under the calibration repeated after its held-out steps.
fn check_run(run: &str) {
    let dir = format!("{}/docs/results/{run}", env!("CARGO_MANIFEST_DIR"));
    check_summary(&dir, "cpu-calibrated.toml", "heldout-summary.md", true);
    check_summary(
        &dir,
        "cpu-recalibrated.toml",
        "heldout-recalibrated-summary.md",
        false,
    );
}

/// The second run (2026-11-29).
#[test]
fn second_heldout_run_regenerates() {
    check_run("cpu-2026-11-29");
}

/// The third run (2026-11-29c, PaCA's column write priced and written as the reference does).
#[test]
fn third_heldout_run_regenerates() {
    check_run("cpu-2026-11-29c");
}

/// The fourth run (2026-11-29d, attention's fixed time per tile calibrated).
#[test]
fn fourth_heldout_run_regenerates() {
    check_run("cpu-2026-11-29d");
}

/// The fifth run (2026-11-29e, the fourth run's model measured afresh).
#[test]
fn fifth_heldout_run_regenerates() {
    check_run("cpu-2026-11-29e");
}

/// The sixth run (2026-11-29f, CPU GEMMs priced with a per-call row fill).
#[test]
fn sixth_heldout_run_regenerates() {
    check_run("cpu-2026-11-29f");
}

/// A run's calibration refitted without the samples `drop` picks: the number dropped and the
/// profile written (into `tmp`) by `costsim calibrate --from`.
fn calibrate_without(
    dir: &str,
    tmp: &Path,
    drop: impl Fn(&serde_json::Value) -> bool,
) -> (usize, PathBuf) {
    calibrate_file_without(dir, "cpu-calibration.json", tmp, drop)
}

/// [`calibrate_without`] for the samples file `file` of `dir` (tmp must be its own folder).
fn calibrate_file_without(
    dir: &str,
    file: &str,
    tmp: &Path,
    drop: impl Fn(&serde_json::Value) -> bool,
) -> (usize, PathBuf) {
    let mut run: serde_json::Value =
        serde_json::from_str(&read(&Path::new(dir).join(file))).unwrap();
    let samples = run["samples"].as_array_mut().expect("samples");
    let before = samples.len();
    samples.retain(|s| !drop(s));
    let dropped = before - samples.len();
    let without = tmp.join("without.json");
    std::fs::write(&without, run.to_string()).unwrap();
    let profile = tmp.join("without.toml");
    stdout_ok(&[
        "calibrate",
        "--from",
        without.to_str().unwrap(),
        "--out",
        profile.to_str().unwrap(),
    ]);
    (dropped, profile)
}

/// The sixth run's comparison of the row fill with the tile model on the same samples: its
/// calibration refitted without the GEMMs of at most 4 rows (which then falls back to the tile
/// model) predicts the held-out steps and the small-token check as committed, and the row-fill
/// profile the small-token check; docs/validation.md quotes each step line.
#[test]
fn sixth_run_row_fill_and_tiles_regenerate() {
    let dir = format!(
        "{}/docs/results/cpu-2026-11-29f",
        env!("CARGO_MANIFEST_DIR")
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dropped, tiles) = calibrate_without(&dir, tmp.path(), |s| {
        let g: Vec<u64> = s["gemm"]
            .as_array()
            .map(|g| g.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default();
        g.len() == 4 && g[0] <= 4 && g[1].min(g[2]) > 64
    });
    // calibrate's "gemm rows" of 1 and 4 rows: two shapes × fp32 and bf16.
    assert_eq!(dropped, 8);
    assert!(!read(&tiles).contains("gemm-fill-rows"));
    let small =
        format!("{dir}/small-tokens-gpt2-narrow-deep.json,{dir}/small-tokens-llama-small.json");
    let held = heldout_list(&dir);
    let page = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/validation.md"));
    for (files, profile, file) in [
        (
            &held,
            tiles.display().to_string(),
            "heldout-summary-tiles.md",
        ),
        (
            &small,
            tiles.display().to_string(),
            "small-tokens-summary-tiles.md",
        ),
        (
            &small,
            format!("{dir}/cpu-calibrated.toml"),
            "small-tokens-summary.md",
        ),
    ] {
        let out = stdout_ok(&[
            "validate", "--from", files, "--hw", &profile, "--format", "markdown",
        ]);
        let committed = read(&Path::new(&dir).join(file));
        assert_eq!(out, committed, "{dir}/{file}");
        let step = committed
            .lines()
            .find(|l| l.starts_with("| costsim |"))
            .expect("a costsim line");
        assert!(
            page.contains(step),
            "docs/validation.md lacks {file}'s: {step}"
        );
    }
}

/// The seventh run (2026-11-29g, CPU skinny GEMMs priced per role with a narrow fill).
#[test]
fn seventh_heldout_run_regenerates() {
    check_run("cpu-2026-11-29g");
}

/// The eighth run (2026-11-29h, the seventh's model with its layout samples timed cold).
#[test]
fn eighth_heldout_run_regenerates() {
    check_run("cpu-2026-11-29h");
}

/// The ninth run (2026-11-29i, every CPU benchmark calibrated cold) and its repeat (29j).
#[test]
fn ninth_heldout_run_and_its_repeat_regenerate() {
    check_run("cpu-2026-11-29i");
    check_run("cpu-2026-11-29j");
}

/// A run's ablation on its own samples: without LoRA's products timed in nn.Linear's layouts
/// (calibrate's "gemm narrow", names ending in the layout) the same calibration has no narrow
/// fills and predicts the held-out steps as committed in `heldout-summary-no-narrow.md`;
/// docs/validation.md quotes its step line. Its profile differs from the run's only in the
/// narrow fills (and the sample counts).
fn check_without_narrow_fills(run: &str) {
    let dir = format!("{}/docs/results/{run}", env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dropped, plain) = calibrate_without(&dir, tmp.path(), |s| {
        let name = s["name"].as_str().unwrap_or_default();
        ["nt", "nn", "tn"].contains(&name.rsplit(' ').next().unwrap_or_default())
    });
    // Six products at five shapes, fp32 and bf16.
    assert_eq!(dropped, 60);
    let plain_toml = read(&plain);
    let full_toml = read(&Path::new(&dir).join("cpu-calibrated.toml"));
    assert!(!plain_toml.contains("gemm-narrow-fill"));
    assert!(full_toml.contains("gemm-narrow-fill = ["));
    let differing: Vec<&str> = full_toml
        .lines()
        .filter(|l| !plain_toml.lines().any(|p| p == *l))
        .collect();
    assert!(
        differing.iter().all(|l| l.starts_with("gemm-narrow-fill")
            || l.starts_with("# Calibrated")
            || l.starts_with("fit =")),
        "{differing:?}"
    );
    let held = heldout_list(&dir);
    let out = stdout_ok(&[
        "validate",
        "--from",
        &held,
        "--hw",
        plain.to_str().unwrap(),
        "--format",
        "markdown",
    ]);
    let committed = read(&Path::new(&dir).join("heldout-summary-no-narrow.md"));
    assert_eq!(out, committed, "{dir}/heldout-summary-no-narrow.md");
    let step = committed
        .lines()
        .find(|l| l.starts_with("| costsim |"))
        .expect("a costsim line");
    let page = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/validation.md"));
    assert!(page.contains(step), "docs/validation.md lacks: {step}");
}

#[test]
fn seventh_to_ninth_runs_without_narrow_fills_regenerate() {
    check_without_narrow_fills("cpu-2026-11-29g");
    check_without_narrow_fills("cpu-2026-11-29h");
    check_without_narrow_fills("cpu-2026-11-29i");
}

#[test]
fn calibrated_profile_regenerates_from_the_committed_samples() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cpu-calibrated-again.toml");
    let _ = std::fs::remove_file(&out);
    stdout_ok(&[
        "calibrate",
        "--from",
        &format!("{DIR}/cpu-calibration.json"),
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        read(&out),
        read(&Path::new(DIR).join("cpu-calibrated.toml"))
    );
}

fn drift(before: &Path, after: &Path) -> String {
    let o = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/calibration-drift.sh"
        ))
        .arg(before)
        .arg(after)
        .output()
        .expect("run calibration-drift.sh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).expect("utf-8")
}

/// The drift report of cpu-validate.sh and cpu-eager-validate.sh on two made-up reports: one-,
/// two- and three-word fit names, each fit's first coefficient and the ratio after / before
/// (2e-12 → 3e-12: 1.500; 4e-11 → 1e-11: 0.250; 8e-11 → 1e-10: 1.250), a fit missing from
/// the second report left out.
#[test]
fn calibration_drift_pairs_each_fit_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let line = |name: &str, coef: &str| {
        format!(
            "{name:<20} 13  0.9842     27%  {coef} ± 5.8e-13 s per tile-FLOP; 0.0000e0 s per op\n"
        )
    };
    let head =
        "calibrated x from 1 samples\nfit                   n      R²   worst  coefficients\n";
    let before = dir.path().join("before.txt");
    let after = dir.path().join("after.txt");
    std::fs::write(
        &before,
        format!(
            "{head}{}{}{}{}",
            line("gemm fp32", "2.0000e-12"),
            line("cast", "4.0000e-11"),
            line("attention backward bf16", "8.0000e-11"),
            line("norm fp32", "1.0000e-11")
        ),
    )
    .unwrap();
    std::fs::write(
        &after,
        format!(
            "{head}{}{}{}",
            line("attention backward bf16", "1.0000e-10"),
            line("gemm fp32", "3.0000e-12"),
            line("cast", "1.0000e-11")
        ),
    )
    .unwrap();
    let out = drift(&before, &after);
    let rows: Vec<(String, f64)> = out
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ratio: f64 = f[f.len() - 1].parse().expect("ratio");
            (f[..f.len() - 3].join(" "), ratio)
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("attention backward bf16".to_string(), 1.25),
            ("gemm fp32".to_string(), 1.5),
            ("cast".to_string(), 0.25),
        ]
    );
}

/// The committed drift between the 2026-11-28 calibration and the 2026-11-29 one regenerates.
#[test]
fn committed_drift_regenerates() {
    let out = drift(
        &Path::new(DIR).join("calibration.txt"),
        &Path::new(DIR).join("recal-2026-11-29/calibration.txt"),
    );
    assert_eq!(
        out,
        read(&Path::new(DIR).join("recal-2026-11-29/drift.txt"))
    );
}

/// The eager held-out checks of 2026-11-29c, 29d, 29f, 29g, 29h and 29i (transformers + peft
/// steps on
/// this CPU, profile calibrated in the same run, with PaCA's column write and attention's tile
/// time measured; 29d measured afresh with the final model; 29f with CPU GEMMs' row fill; 29g
/// with the narrow fills of LoRA's rank-r products, 29h with them calibrated cold, 29i with
/// every CPU benchmark cold, 29j and 29k the same again, 29k with the op ledger, 29l with
/// tanh, sin and cos priced at a calibrated transcendental rate, 29m the same measured afresh,
/// 29q on another CPU):
/// `validate --trace` over each run's
/// committed records gives exactly its committed comparisons, whose forward and backward MAPEs
/// docs/host.md quotes as printed.
#[test]
fn eager_checks_of_2026_11_29_regenerate() {
    for run in [
        "eager-2026-11-29c",
        "eager-2026-11-29d",
        "eager-2026-11-29f",
        "eager-2026-11-29g",
        "eager-2026-11-29h",
        "eager-2026-11-29i",
        "eager-2026-11-29j",
        "eager-2026-11-29k",
        "eager-2026-11-29l",
        "eager-2026-11-29m",
        "eager-2026-11-29q",
    ] {
        let dir = format!("{}/docs/results/cpu/{run}", env!("CARGO_MANIFEST_DIR"));
        for (profile, file) in [
            ("cpu-eager.toml", "comparison.txt"),
            ("cpu-eager-recalibrated.toml", "comparison-recalibrated.txt"),
        ] {
            let out = stdout_ok(&[
                "validate",
                "--trace",
                &format!("{dir}/eager"),
                "--hw",
                &format!("{dir}/{profile}"),
            ]);
            let committed = read(&Path::new(&dir).join(file));
            assert_eq!(out, committed, "{dir}/{file}");
        }
        // The op ledger, where the run recorded one (`--op-times`, from 29k).
        let ledger = Path::new(&dir).join("ledger.txt");
        if ledger.exists() {
            let out = stdout_ok(&[
                "validate",
                "--trace",
                &format!("{dir}/eager"),
                "--hw",
                &format!("{dir}/cpu-eager.toml"),
                "--ops",
            ]);
            assert_eq!(out, read(&ledger), "{}", ledger.display());
            // docs/host.md quotes 29k's sums over the grid as printed.
            if run == "eager-2026-11-29k" {
                let text = read(&ledger);
                let at = text
                    .find("op ledger summed over")
                    .expect("the ledger's sums over the grid");
                let sums: Vec<&str> = text[at..].lines().take_while(|l| !l.is_empty()).collect();
                let page = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/host.md"));
                assert!(
                    page.contains(&sums.join("\n")),
                    "docs/host.md's ledger block is not {}'s sums",
                    ledger.display()
                );
            }
        }
        let committed = read(&Path::new(&dir).join("comparison.txt"));
        let mape = committed
            .lines()
            .find_map(|l| l.strip_prefix("MAPE over 24 timed traces: "))
            .expect("a MAPE line over the 24 traces");
        let quoted = mape
            .split(", optimizer")
            .next()
            .expect("forward and backward");
        let page = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/host.md"));
        assert!(page.contains(quoted), "docs/host.md lacks: {quoted}");
    }
}

/// The tenth run (2026-11-29l: tanh, sin and cos at a calibrated transcendental rate), and the
/// same measurements without that kind: its calibration refitted without the tanh samples (the
/// other fits, the launch floor included, do not change) predicts the held-out steps with the
/// step MAPE and worst case docs/validation.md quotes, and the eager profile without its
/// transcendental keys the eager steps with the forward and backward MAPE it quotes.
#[test]
fn tenth_run_and_its_transcendental_ablation_regenerate() {
    check_run("cpu-2026-11-29l");
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = format!("{root}/docs/results/cpu-2026-11-29l");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dropped, without) =
        calibrate_without(&dir, tmp.path(), |s| s["bench"] == "transcendental");
    // tanh at four sizes × fp32 and bf16.
    assert_eq!(dropped, 8);
    let text = read(&without);
    assert!(!text.contains("transcendental"));
    // Nothing else moved: the committed profile is the refit plus the two transcendental keys.
    let committed: Vec<String> = read(&Path::new(&dir).join("cpu-calibrated.toml"))
        .lines()
        .filter(|l| !l.starts_with("transcendental") && !l.starts_with("fit = "))
        .map(str::to_string)
        .collect();
    let refit: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("fit = "))
        .map(str::to_string)
        .collect();
    assert_eq!(committed.len(), refit.len());
    let held = heldout_list(&dir);
    let summary = stdout_ok(&[
        "validate",
        "--from",
        &held,
        "--hw",
        without.to_str().unwrap(),
        "--format",
        "markdown",
    ]);
    let costsim: Vec<&str> = summary
        .lines()
        .find(|l| l.starts_with("| costsim |"))
        .expect("the costsim line")
        .split('|')
        .map(str::trim)
        .collect();
    let page = read(&Path::new(root).join("docs/validation.md"));
    let quoted = format!("{}, worst {}", costsim[2], costsim[3]);
    assert!(page.contains(&quoted), "docs/validation.md lacks: {quoted}");

    let eager = format!("{root}/docs/results/cpu/eager-2026-11-29l");
    let stripped: String = read(&Path::new(&eager).join("cpu-eager.toml"))
        .lines()
        .filter(|l| !l.starts_with("transcendental"))
        .map(|l| format!("{l}\n"))
        .collect();
    let profile = tmp.path().join("eager-without.toml");
    std::fs::write(&profile, stripped).unwrap();
    let out = stdout_ok(&[
        "validate",
        "--trace",
        &format!("{eager}/eager"),
        "--hw",
        profile.to_str().unwrap(),
    ]);
    let mape = out
        .lines()
        .find_map(|l| l.strip_prefix("MAPE over 24 timed traces: "))
        .expect("a MAPE line");
    let fb = mape
        .split(", optimizer")
        .next()
        .expect("forward and backward");
    let quoted = format!("without the keys: {fb}");
    assert!(page.contains(&quoted), "docs/validation.md lacks: {quoted}");
}

/// The op ledger of the tenth run's worst family (gpt2-narrow-deep in bf16) on the eager stack,
/// predicted with the 29l eager profile: `validate --trace --ops` gives exactly the committed
/// ledger, whose vocabulary-sized rows docs/validation.md quotes.
#[test]
fn worst_family_ledger_of_2026_11_29l_regenerates() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = format!("{root}/docs/results/cpu/ledger-2026-11-29l");
    let out = stdout_ok(&[
        "validate",
        "--trace",
        &format!("{dir}/gpt2-narrow-deep-paca-upper-half-bf16.json"),
        "--hw",
        &format!("{root}/docs/results/cpu/eager-2026-11-29l/cpu-eager.toml"),
        "--ops",
    ]);
    assert_eq!(out, read(&Path::new(&dir).join("ledger.txt")));
    let page = read(&Path::new(root).join("docs/validation.md"));
    for op in [
        "_log_softmax ",
        "_to_copy ",
        "_log_softmax_backward_data ",
        "nll_loss_backward ",
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(op))
            .unwrap_or_else(|| panic!("no {op} row"));
        let nums: Vec<&str> = line.split_whitespace().collect();
        // "op calls p/t predicted / measured diff": the predicted and measured ms.
        let quoted = format!("{} {} against {}", op.trim(), nums[3], nums[5]);
        assert!(page.contains(&quoted), "docs/validation.md lacks: {quoted}");
    }
}

/// The allocator A/B (2026-11-29m): each round's gpt2-narrow-deep measurements, with glibc's
/// defaults and with its thresholds fixed, predicted with the tenth run's profile, give the
/// MAPE row docs/validation.md quotes; so do the tenth run's own measurements of that model.
#[test]
fn allocator_ab_regenerates() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = format!("{root}/docs/results/cpu/allocator-ab");
    let profile = format!("{root}/docs/results/cpu-2026-11-29l/cpu-calibrated.toml");
    let page = read(&Path::new(root).join("docs/validation.md"));
    let rows = [
        ("heldout-default-1.json", "glibc's defaults, round 1"),
        ("heldout-no-trim-1.json", "thresholds fixed, round 1"),
        ("heldout-default-2.json", "glibc's defaults, round 2"),
        ("heldout-no-trim-2.json", "thresholds fixed, round 2"),
    ];
    let tenth = format!("{root}/docs/results/cpu-2026-11-29l/heldout-gpt2-narrow-deep.json");
    let files = rows
        .iter()
        .map(|(f, label)| (format!("{dir}/{f}"), *label))
        .chain([(tenth, "the tenth run's, same profile")]);
    for (file, label) in files {
        let out = stdout_ok(&["validate", "--from", &file, "--hw", &profile]);
        // "forward   MAPE   10.0%  worst   18.6%  (n = 10)" → ("10.0%", "18.6%").
        let mape = |phase: &str| -> (String, String) {
            let l = out
                .lines()
                .find(|l| l.starts_with(phase) && l.contains("MAPE"))
                .unwrap_or_else(|| panic!("{file}: no {phase} line"));
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w[5..], ["(n", "=", "10)"], "{l}");
            (w[2].to_string(), w[4].to_string())
        };
        let (f, _) = mape("forward ");
        let (b, _) = mape("backward ");
        let (s, worst) = mape("step ");
        let row = format!("| {label} | {f} | {b} | {s} | {worst} |");
        assert!(page.contains(&row), "docs/validation.md lacks: {row}");
    }
}

/// The H200 session's calibration (2026-11-28) refits from its committed samples: without
/// `--base`, calibrate picks the built-in profile the device name matches (`NVIDIA H200` →
/// h200), and every fitted line equals the committed profile's. Only the `[host]` table may
/// differ: calibrate keeps it from the built-in profile, whose host costs were measured since.
#[test]
fn gpu_calibration_refits_from_the_committed_samples() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = format!("{root}/docs/results/gpu");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("gpu.toml");
    stdout_ok(&[
        "calibrate",
        "--from",
        &format!("{dir}/gpu-calibration.json"),
        "--out",
        out.to_str().unwrap(),
    ]);
    let refit = read(&out);
    let committed = read(&Path::new(&dir).join("gpu-calibrated.toml"));
    assert!(refit.contains("kept from builtin:h200"), "{refit}");
    let (a, b): (Vec<&str>, Vec<&str>) = (refit.lines().collect(), committed.lines().collect());
    assert_eq!(a.len(), b.len());
    let mut table = "";
    let mut host_lines = 0;
    for (x, y) in a.iter().zip(&b) {
        if x.starts_with('[') {
            table = x;
        }
        if table == "[host]" {
            host_lines += 1;
        } else {
            assert_eq!(x, y, "outside [host]");
        }
    }
    assert!(host_lines > 0, "no [host] table");
}

/// The eleventh run (2026-11-29m, the tenth's model with single-tensor AdamW's division out of
/// place, measured afresh).
#[test]
fn eleventh_heldout_run_regenerates() {
    check_run("cpu-2026-11-29m");
}

/// A refit of a run's calibrations for [`check_optimizer_ab`]: the summaries' file suffix,
/// how its optimizer ops are priced (as docs/validation.md labels it), the sample-name
/// prefixes dropped and how many samples that drops per calibration.
struct Refit {
    suffix: &'static str,
    how: &'static str,
    drop: &'static [&'static str],
    dropped: usize,
}

const ADAPTER_LISTS: &str = "adamw-single adapters";
const SIZE_LISTS: &str = "adamw-single uniform";

/// A run's held-out steps predicted with its two calibrations as committed (optimizer ops
/// priced `how`) and refitted without some of the optimizer's samples (`refits`): each
/// refit's summaries regenerate, and docs/validation.md quotes every optimizer and step row
/// as `| TAG, CALIBRATION, HOW | optimizer MAPE | worst | step MAPE | worst |`.
fn check_optimizer_ab(run: &str, tag: &str, how: &str, refits: &[Refit]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = format!("{root}/docs/results/{run}");
    let page = read(&Path::new(root).join("docs/validation.md"));
    // "| optimizer | 70 | 17.1% | 42.7% |" → ("17.1%", "42.7%").
    let row = |summary: &str, phase: &str| -> (String, String) {
        let l = summary
            .lines()
            .find(|l| l.starts_with(&format!("| {phase} |")))
            .unwrap_or_else(|| panic!("no {phase} row"));
        let c: Vec<&str> = l.split('|').map(str::trim).collect();
        (c[3].to_string(), c[4].to_string())
    };
    let quoted = |text: &str, label: &str, how: &str| {
        let (o, ow) = row(text, "optimizer");
        let (s, sw) = row(text, "step");
        let line = format!("| {tag}, {label}, {how} | {o} | {ow} | {s} | {sw} |");
        assert!(page.contains(&line), "docs/validation.md lacks: {line}");
    };
    let held = heldout_list(&dir);
    for (samples, summary, label) in [
        (
            "cpu-calibration.json",
            "heldout-summary",
            "first calibration",
        ),
        (
            "cpu-recalibration.json",
            "heldout-recalibrated-summary",
            "second calibration",
        ),
    ] {
        quoted(
            &read(&Path::new(&dir).join(format!("{summary}.md"))),
            label,
            how,
        );
        for r in refits {
            let tmp = tempfile::tempdir().expect("tempdir");
            let (dropped, profile) = calibrate_file_without(&dir, samples, tmp.path(), |s| {
                s["name"]
                    .as_str()
                    .is_some_and(|n| r.drop.iter().any(|d| n.starts_with(d)))
            });
            assert_eq!(dropped, r.dropped, "{run} {samples} {}", r.suffix);
            let out = stdout_ok(&[
                "validate",
                "--from",
                &held,
                "--hw",
                profile.to_str().unwrap(),
                "--format",
                "markdown",
            ]);
            let file = format!("{summary}-{}.md", r.suffix);
            assert_eq!(out, read(&Path::new(&dir).join(&file)), "{run}/{file}");
            quoted(&out, label, r.how);
        }
    }
}

/// Without the adapter-sized lists: optimizer ops pay the launch floor, as before 2026-11-29n.
const WITHOUT_ADAPTERS: Refit = Refit {
    suffix: "no-adapters",
    how: "launch floor",
    // Six lists × fp32 and bf16.
    drop: &[ADAPTER_LISTS],
    dropped: 12,
};

/// The twelfth run (2026-11-29n), measured with the first variant of the optimizer's per-op
/// calibration (commit 99f615c, L2-sized tensors at their own rate); its profiles are refitted
/// from its samples by the final fit. Its summaries are not quoted whole (the A/B rows are).
#[test]
fn twelfth_run_with_and_without_adapter_lists_regenerates() {
    let dir = format!(
        "{}/docs/results/cpu-2026-11-29n",
        env!("CARGO_MANIFEST_DIR")
    );
    check_summary(&dir, "cpu-calibrated.toml", "heldout-summary.md", false);
    check_summary(
        &dir,
        "cpu-recalibrated.toml",
        "heldout-recalibrated-summary.md",
        false,
    );
    check_optimizer_ab(
        "cpu-2026-11-29n",
        "29n",
        "optimizer-op-us",
        &[WITHOUT_ADAPTERS],
    );
}

/// The thirteenth run (2026-11-29o): the optimizer's per-op time from adapter-sized lists,
/// measured afresh, and its A/B against the launch floor.
#[test]
fn thirteenth_heldout_run_regenerates() {
    check_run("cpu-2026-11-29o");
    check_optimizer_ab(
        "cpu-2026-11-29o",
        "29o",
        "optimizer-op-us",
        &[WITHOUT_ADAPTERS],
    );
}

/// The refits of a run with the optimizer's size lists: without them (the per-op time only),
/// and without the adapter lists too (the launch floor).
const SIZE_AB: [Refit; 2] = [
    Refit {
        suffix: "no-sizes",
        how: "optimizer-op-us",
        // Four sizes × fp32 and bf16.
        drop: &[SIZE_LISTS],
        dropped: 8,
    },
    Refit {
        suffix: "no-adapters",
        how: "launch floor",
        drop: &[ADAPTER_LISTS, SIZE_LISTS],
        dropped: 20,
    },
];

/// The fourteenth run (2026-11-29p): the optimizer's rate by tensor size too, measured afresh,
/// against the thirteenth run's model (no size lists) and the launch floor (neither list).
#[test]
fn fourteenth_heldout_run_regenerates() {
    check_run("cpu-2026-11-29p");
    check_optimizer_ab(
        "cpu-2026-11-29p",
        "29p",
        "optimizer-op-us and sizes",
        &SIZE_AB,
    );
}

/// The fifteenth run (2026-11-29q): the fourteenth run's model calibrated and checked on another
/// CPU (an Intel Xeon), with the same A/B refits.
#[test]
fn fifteenth_heldout_run_regenerates() {
    check_run("cpu-2026-11-29q");
    check_optimizer_ab(
        "cpu-2026-11-29q",
        "29q",
        "optimizer-op-us and sizes",
        &SIZE_AB,
    );
}

/// The fifteenth run's eager check with host costs measured on its own CPU (`host-here`: the 80
/// micro-width host traces and the two Trainer-loop runs, re-measured on the Intel Xeon): the
/// committed traces refit to the committed profile's host and loop costs, which predict the
/// run's eager steps as committed; docs/host.md quotes that forward and backward MAPE, and the
/// fitted costs beside the EPYC's.
#[test]
fn fifteenth_run_host_costs_measured_on_its_cpu_regenerate() {
    let root = env!("CARGO_MANIFEST_DIR");
    let run = format!("{root}/docs/results/cpu/eager-2026-11-29q");
    let here = format!("{run}/host-here");
    let tmp = tempfile::tempdir().expect("tempdir");
    let host = tmp.path().join("host.toml");
    let eager = tmp.path().join("eager.toml");
    stdout_ok(&[
        "calibrate",
        "--host",
        &format!("{here}/traces"),
        "--base",
        &format!("{run}/cpu-calibrated.toml"),
        "--out",
        host.to_str().unwrap(),
    ]);
    stdout_ok(&[
        "calibrate",
        "--loop",
        &format!("{here}/step/run-1,{here}/step/run-2"),
        "--base",
        host.to_str().unwrap(),
        "--out",
        eager.to_str().unwrap(),
    ]);
    // The fitted numbers (the sources carry the day of the fit).
    let numbers = |p: &Path| -> Vec<String> {
        read(p)
            .lines()
            .filter(|l| l.contains("-us = "))
            .map(str::to_string)
            .collect()
    };
    let committed = Path::new(&here).join("cpu-eager.toml");
    let fitted = numbers(&eager);
    assert!(fitted.len() >= 9, "{fitted:?}");
    assert_eq!(fitted, numbers(&committed));
    let out = stdout_ok(&[
        "validate",
        "--trace",
        &format!("{run}/eager"),
        "--hw",
        committed.to_str().unwrap(),
    ]);
    assert_eq!(out, read(&Path::new(&here).join("comparison.txt")));
    let mape = out
        .lines()
        .find_map(|l| l.strip_prefix("MAPE over 24 timed traces: "))
        .expect("a MAPE line");
    let quoted = mape.split(", optimizer").next().unwrap();
    let page = read(&Path::new(root).join("docs/host.md"));
    assert!(page.contains(quoted), "docs/host.md lacks: {quoted}");
    // The table beside the EPYC's quotes each fitted cost as the profile writes it.
    for key in [
        "python-op-us",
        "module-call-us",
        "autograd-node-us",
        "optimizer-tensor-us",
        "loop-micro-batch-us",
        "loop-step-us",
    ] {
        let line = fitted.iter().find(|l| l.starts_with(key)).unwrap();
        let v = line.split('=').nth(1).unwrap().trim();
        assert!(
            page.contains(&format!(" {v} µs |")),
            "docs/host.md lacks {key} {v} µs"
        );
    }
}
