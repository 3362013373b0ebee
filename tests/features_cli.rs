//! End-to-end tests of what issue 11 added to the CLI: `costsim hardware show`, profile files
//! that start from a built-in one (`base = "NAME"`), examples in every `--help`, `--format`
//! values a command cannot print refused with exit 2, run cost from a price, and charts that
//! mark what does not fit.

mod common;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn costsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(args)
        .output()
        .expect("run costsim")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = costsim(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).expect("JSON")
}

fn usage_error(args: &[&str], needles: &[&str]) {
    let o = costsim(args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
    assert!(!e.contains("panicked"), "{e}");
    for n in needles {
        assert!(e.contains(n), "{args:?}: missing '{n}' in: {e}");
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("features-cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
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
