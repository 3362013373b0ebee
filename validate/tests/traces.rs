//! costsim against committed ground-truth traces of the real stack (docs/traces.md).
//!
//! The traces were recorded by scripts/trace/trace_step.py from transformers + peft (and the PaCA
//! reference layer) on this CPU (tiny configs, docs/results/traces/cpu) and on an H200
//! (docs/results/gpu/traces). Their numbers come from PyTorch itself, never from costsim, so each
//! assertion below can fail when a modelling rule drifts from what the libraries do.

use std::path::{Path, PathBuf};

use costsim_validate::trace::{compare_trace, read_trace, TraceComparison};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(dir: &str) -> Vec<TraceComparison> {
    let dir = root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()).unwrap_or_default())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no traces in {}", dir.display());
    files
        .iter()
        .map(|f| {
            let t = read_trace(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            compare_trace(&t, &f.display().to_string())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        })
        .collect()
}

fn file_name(c: &TraceComparison) -> String {
    Path::new(&c.source)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Saved-activation bytes: the rule "save an operand only for a gradient that is computed" and
/// PaCA keeping the fp32 parameter put every Llama trace within 6% and every GPT-2 trace without
/// autocast within 1% (GPT-2 under autocast is an open gap, docs/traces.md).
#[test]
fn saved_bytes_agree_with_the_real_stack() {
    let cmps = load("docs/results/traces/cpu");
    assert_eq!(cmps.len(), 36, "the CI grid has 36 traces");
    let mut checked = 0;
    for c in &cmps {
        let name = file_name(c);
        let e = c.saved_bytes.error();
        if name.starts_with("llama") {
            assert!(e.abs() <= 0.06, "{name}: saved {:+.1}%", 100.0 * e);
            checked += 1;
        } else if !name.contains("bf16mixed") {
            assert!(e.abs() <= 0.01, "{name}: saved {:+.1}%", 100.0 * e);
            checked += 1;
        }
    }
    assert_eq!(checked, 30);
}

/// The headline case, measured on an H200 with the real libraries: llama2-7b at batch
/// 8 × 512, bf16-mixed. Saved bytes within 2% and each phase's peak within 3% of the live bytes
/// the tracer followed (which sit within 0.2% of the CUDA caching allocator's own peak).
#[test]
fn llama2_7b_memory_agrees_with_the_gpu_trace() {
    let cmps = load("docs/results/gpu/traces");
    let big: Vec<_> = cmps
        .iter()
        .filter(|c| file_name(c).starts_with("llama7b"))
        .collect();
    assert_eq!(big.len(), 2, "PaCA and LoRA on llama2-7b");
    for c in big {
        let e = c.saved_bytes.error();
        assert!(e.abs() <= 0.02, "{}: saved {:+.2}%", c.name, 100.0 * e);
        for p in &c.phases {
            let e = p.peak_bytes.error();
            assert!(
                e.abs() <= 0.03,
                "{} {}: peak {:+.2}%",
                c.name,
                p.phase,
                100.0 * e
            );
        }
    }
}

/// FLOPs: matrix products and attention, counted from the traced shapes (a multiply-add is 2).
#[test]
fn flops_agree_within_five_percent() {
    for c in load("docs/results/traces/cpu") {
        let (p, t): (f64, f64) = c.phases.iter().fold((0.0, 0.0), |(p, t), ph| {
            (p + ph.flops.predicted, t + ph.flops.traced)
        });
        let e = (p - t) / t;
        assert!(
            e.abs() <= 0.05,
            "{}: flops {:+.1}%",
            file_name(&c),
            100.0 * e
        );
    }
}

/// Regression guard, not an accuracy claim: launches per phase are still 5–30% off the trace
/// (docs/traces.md lists why); this bound only catches a rule change that makes them worse.
#[test]
fn launch_counts_do_not_drift_further() {
    for c in load("docs/results/traces/cpu") {
        for p in &c.phases {
            let e = p.launches.error();
            assert!(
                e.abs() <= 0.30,
                "{} {}: launches {:+.1}%",
                file_name(&c),
                p.phase,
                100.0 * e
            );
        }
    }
}
