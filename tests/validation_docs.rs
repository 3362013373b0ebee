//! The validation page is generated from committed data: regenerating the held-out summary and
//! the calibrated profile from `docs/results/cpu` must give exactly the committed files, and the
//! page must quote the summary as generated.

use std::path::{Path, PathBuf};
use std::process::Command;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/results/cpu");

fn costsim(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(args)
        .output()
        .expect("run costsim");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

fn heldout_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(DIR)
        .expect("docs/results/cpu")
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

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn heldout_summary_regenerates_from_the_committed_measurements() {
    let files = heldout_files();
    assert!(files.len() >= 5, "{files:?}");
    let list = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let profile = format!("{DIR}/cpu-calibrated.toml");
    let summary = costsim(&[
        "validate", "--from", &list, "--hw", &profile, "--format", "markdown",
    ]);
    let committed = read(&Path::new(DIR).join("heldout-summary.md"));
    assert_eq!(
        summary, committed,
        "regenerate with scripts/cpu-validate.sh's last steps"
    );
    // docs/validation.md quotes every table line as generated.
    let page = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/validation.md"));
    for line in committed.lines().filter(|l| l.starts_with('|')) {
        assert!(page.contains(line), "docs/validation.md lacks: {line}");
    }
}

#[test]
fn calibrated_profile_regenerates_from_the_committed_samples() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cpu-calibrated-again.toml");
    let _ = std::fs::remove_file(&out);
    costsim(&[
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
