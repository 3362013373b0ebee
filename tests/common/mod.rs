//! Helpers shared by the end-to-end tests.
// Each test binary uses only some of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Run the costsim binary under test with `args`.
pub fn costsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(args)
        .output()
        .expect("run costsim")
}

/// A run's stderr as text (lossy).
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A run's stdout as text (lossy).
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run the costsim binary under test with `args`; its stdout, after asserting exit 0 (the
/// assertion shows the arguments and stderr).
pub fn stdout_ok(args: &[&str]) -> String {
    let o = costsim(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    String::from_utf8(o.stdout).expect("utf-8")
}

/// `costsim predict --format json` with `args`, parsed (asserting exit 0).
pub fn predict_json(args: &[&str]) -> serde_json::Value {
    let mut a = vec!["predict", "--format", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&stdout_ok(&a)).expect("json")
}

/// `costsim predict --format json` of one sweep or chart point (rank passed except to full
/// fine-tuning); its single prediction.
pub fn predict_point(
    model: &str,
    hw: &str,
    method: &str,
    rank: u64,
    batch: u64,
    seq: u64,
) -> serde_json::Value {
    predict_point_with(model, hw, method, rank, batch, seq, &[])
}

/// [`predict_point`] with `extra` options.
pub fn predict_point_with(
    model: &str,
    hw: &str,
    method: &str,
    rank: u64,
    batch: u64,
    seq: u64,
    extra: &[&str],
) -> serde_json::Value {
    let (rank, batch, seq) = (rank.to_string(), batch.to_string(), seq.to_string());
    let mut a = vec![
        "--model", model, "--hw", hw, "--method", method, "--batch", &batch, "--seq", &seq,
    ];
    if method != "full" {
        a.extend_from_slice(&["--rank", &rank]);
    }
    a.extend_from_slice(extra);
    let v = predict_json(&a);
    let preds = v["predictions"].as_array().expect("predictions");
    assert_eq!(preds.len(), 1, "{a:?}");
    preds[0].clone()
}

/// Assert that `args` is refused as a usage error: exit 2, no panic, and stderr naming every
/// one of `needles` (the problem and its fix).
pub fn usage_error(args: &[&str], needles: &[&str]) {
    let o = costsim(args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
    assert!(!e.contains("panicked"), "{e}");
    for n in needles {
        assert!(e.contains(n), "{args:?}: missing '{n}' in: {e}");
    }
}

/// A path `name` in the folder `dir` under the tests' scratch directory (created), with no file
/// left there by an earlier run, so a test that asserts a file was (or was not) written sees
/// only what this run did.
pub fn tmp_in(dir: &str, name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&d).expect("tmp dir");
    let p = d.join(name);
    if p.is_dir() {
        std::fs::remove_dir_all(&p).expect("remove an earlier run's folder");
    } else if p.exists() {
        std::fs::remove_file(&p).expect("remove an earlier run's file");
    }
    p
}

/// A small Llama config.json (512 wide, 8 layers) with `positions` positions, written as
/// `name` in the tests' scratch folder `dir`; its path.
pub fn short_llama_config(dir: &str, name: &str, positions: u64) -> String {
    let p = tmp_in(dir, name);
    std::fs::write(
        &p,
        format!(
            r#"{{"model_type": "llama", "hidden_size": 512, "num_hidden_layers": 8,
                "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 1408,
                "vocab_size": 8000, "max_position_embeddings": {positions}}}"#
        ),
    )
    .expect("write config.json");
    p.to_str().expect("utf-8 path").to_string()
}

/// Parse CSV (RFC 4180: quoted fields, doubled quotes, commas and newlines inside quotes) into
/// records keyed by the header's column names. Panics on a ragged row or a duplicate column.
pub fn csv_records(text: &str) -> Vec<HashMap<String, String>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cell.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut cell)),
            ('\n', false) => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            ('\r', false) => {}
            (c, _) => cell.push(c),
        }
    }
    assert!(!quoted, "unterminated quoted field");
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    let mut rows = rows.into_iter();
    let head = rows.next().expect("a header line");
    for (i, h) in head.iter().enumerate() {
        assert!(!head[..i].contains(h), "duplicate column {h}");
    }
    rows.map(|r| {
        assert_eq!(r.len(), head.len(), "ragged row {r:?}");
        head.iter().cloned().zip(r).collect()
    })
    .collect()
}

/// A CSV cell as a number.
pub fn f(rec: &HashMap<String, String>, col: &str) -> f64 {
    let v = rec
        .get(col)
        .unwrap_or_else(|| panic!("no column {col} in {rec:?}"));
    v.parse()
        .unwrap_or_else(|_| panic!("column {col} = '{v}' is not a number"))
}

/// A CSV cell as text.
pub fn s<'a>(rec: &'a HashMap<String, String>, col: &str) -> &'a str {
    rec.get(col)
        .unwrap_or_else(|| panic!("no column {col} in {rec:?}"))
}
